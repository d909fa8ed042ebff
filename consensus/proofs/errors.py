"""Errors of the proof layer, each saying who is at fault.

* `ProofRejected`: a requester's bundle failed a check.  Per-request: the
  validator refuses that request and keeps running.  It names the proof and the
  check, e.g. ``space: plot id not bound to account``.
* `LedgerError`: a stake-ledger operation breaks a rule (not enough balance, a
  wrong sequence number...).  The operation is refused and the ledger is left
  exactly as it was.
* `GenesisSectionError`: the ``[policy]`` or ``[[accounts]]`` section of a
  genesis file is invalid; it names the file and the key.
* `ProverError`: the client cannot make a proof (no plot answer in range, a
  plot made for another account, a cancelled VDF).
"""

from __future__ import annotations

from typing import Literal

ProofKind = Literal["bundle", "request", "epoch", "stake", "work", "space", "time"]
"""Which part of a bundle a rejection is about.

``bundle`` is the encoding itself, ``request`` the binding to the certificate
request (and replays), ``epoch`` the epoch the space and time proofs answer;
the other four are the proofs of DESIGN.md section 5.
"""


class ProofRejected(Exception):
    """A bundle failed one check; `str()` is ``"<proof>: <check>"``."""

    def __init__(self, proof: ProofKind, reason: str) -> None:
        super().__init__(f"{proof}: {reason}")
        self.proof: ProofKind = proof
        """The proof (or bundle part) that failed."""
        self.reason: str = reason
        """What was wrong, in words a requester can act on."""


class LedgerError(Exception):
    """A stake-ledger operation was refused; the ledger is unchanged."""


class GenesisSectionError(ValueError):
    """An invalid ``[policy]`` or ``[[accounts]]`` entry in a genesis file.

    `str()` reads ``"<source>: key '<key>': <reason>"``, the format of the
    node's ConfigError, so the node can pass it on unchanged.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: key '{key}': {reason}")
        self.source = source
        """The file (or other source) the section was read from."""
        self.key = key
        """The offending key, e.g. ``policy.work_bits`` or ``accounts[1].id``."""
        self.reason = reason
        """What was expected."""


class ProverError(Exception):
    """The client could not make a proof; the message says what to do."""
