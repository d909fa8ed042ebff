"""The proof policy and the genesis stake allocation.

Both live in the genesis file every validator shares::

    [policy]                      # every key optional; defaults below
    min_stake = 100               # bonded stake an account needs to request
    work_bits = 20                # hashcash difficulty, leading zero bits
    min_k = 22                    # smallest accepted chiapos plot size
    space_index_limit = 16        # space challenge indices 0..limit-1
    vdf_iterations = 1000000      # VDF squarings per account per epoch
    epoch_length = 1000           # committed blocks per epoch
    unbonding_delay = 2000        # blocks before unbonded stake is spendable

    [[accounts]]
    id = "5c0f...40 hex digits"   # account_id(public_key), checked
    public_key = "base64 of the raw 32-byte Ed25519 key"
    bonded = 5000                 # bonded stake at genesis
    balance = 0                   # optional liquid balance at genesis

This module does not import the node package (dependency direction
node -> consensus); the node's genesis loader calls `parse_policy` and
`parse_accounts` and reports their `GenesisSectionError` as a ConfigError.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from trustchain.consensus.proofs.errors import GenesisSectionError
from trustchain.consensus.proofs.hashing import ACCOUNT_ID_BYTES, PUBLIC_KEY_BYTES, account_id

MAX_AMOUNT = 2**63 - 1
"""Upper bound of any stake amount and of the total supply (fits msgpack's int64)."""

CHIAPOS_MIN_K = 18
"""chiapos refuses to plot below k=18."""
CHIAPOS_MAX_K = 50
"""chiapos's largest plot size."""


@dataclass(frozen=True)
class Policy:
    """What every validator demands of a certificate request's proofs."""

    min_stake: int = 100
    """Bonded stake (ledger units) an account needs for its stake proof to count."""
    work_bits: int = 20
    """Hashcash difficulty: leading zero bits of the work hash (about 2**20
    SHA-256 evaluations, a second of Python on one core, per request)."""
    min_k: int = 22
    """Smallest chiapos plot size accepted (a k=22 plot is about 60 MB; each +1
    doubles it).  Tests use 18, chiapos's minimum."""
    space_index_limit: int = 16
    """Space challenge indices 0..limit-1 are accepted; with 16, a plot fails to
    answer all of them with probability about e**-16."""
    vdf_iterations: int = 1_000_000
    """Sequential squarings in the account's class group per epoch (several
    seconds on one core); must be well below an epoch's duration."""
    epoch_length: int = 1000
    """Committed blocks per epoch; the beacon of epoch e is the log root
    committed at height e * epoch_length."""
    unbonding_delay: int = 2000
    """Blocks between an unbond and the stake becoming spendable.  At least two
    epochs, so stake that backed a bundle stays slashable while the bundle's
    space and time proofs are accepted."""

    def epoch_of(self, height: int) -> int:
        """The epoch a block at `height` belongs to."""
        return height // self.epoch_length

    def boundary_height(self, epoch: int) -> int:
        """The height whose committed log root is `epoch`'s beacon."""
        return epoch * self.epoch_length


@dataclass(frozen=True)
class AccountEntry:
    """One ``[[accounts]]`` entry: a genesis allocation."""

    account_id: bytes
    """20-byte account id, `account_id(public_key)`."""
    public_key: bytes
    """Raw 32-byte Ed25519 public key; signs stake proofs and ledger operations."""
    bonded: int
    """Bonded stake at genesis."""
    balance: int = 0
    """Liquid (transferable, unbonded) balance at genesis."""


# --- checking raw TOML values ----------------------------------------------------

_Check = Callable[[Any], Any]


def _integer(low: int, high: int) -> _Check:
    def check(value: Any) -> int:
        # A TOML boolean is a Python int; it is never a valid number here.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(
                f"expected an integer in {low}..{high}, got {type(value).__name__} {value!r}"
            )
        if not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {value}")
        return value

    return check


def _public_key(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a base64 Ed25519 public key, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"expected a base64 Ed25519 public key, got {value!r}") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"expected a 32-byte Ed25519 public key, got {len(raw)} bytes")
    return raw


def parse_account_id(value: Any) -> bytes:
    """Parse an account id written as 40 hex digits; raise ValueError if it is not."""
    if not isinstance(value, str):
        raise ValueError(f"expected an account id (40 hex digits), got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"expected an account id (40 hex digits), got {value!r}") from None
    if len(raw) != ACCOUNT_ID_BYTES:
        raise ValueError(f"expected an account id of 40 hex digits, got {len(value)} characters")
    return raw


_POLICY_CHECKS: dict[str, _Check] = {
    "min_stake": _integer(1, MAX_AMOUNT),
    # Beyond 40 bits a request costs days of hashing; 0 would switch the check off.
    "work_bits": _integer(1, 40),
    "min_k": _integer(CHIAPOS_MIN_K, CHIAPOS_MAX_K),
    "space_index_limit": _integer(1, 1024),
    "vdf_iterations": _integer(1, 10**12),
    "epoch_length": _integer(1, 10**9),
    "unbonding_delay": _integer(1, 10**12),
}


def _check_keys(source: str, where: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            names = ", ".join(sorted(known))
            raise GenesisSectionError(
                source, f"{where}.{key}", f"unknown key (known keys: {names})"
            )


def parse_policy(source: str, table: Any) -> Policy:
    """Build the `Policy` from a genesis ``[policy]`` table (missing keys take defaults).

    Raises GenesisSectionError naming `source` and the key.
    """
    if not isinstance(table, dict):
        raise GenesisSectionError(source, "policy", "expected a table [policy]")
    _check_keys(source, "policy", table, set(_POLICY_CHECKS))
    values: dict[str, int] = {}
    for key, check in _POLICY_CHECKS.items():
        if key in table:
            try:
                values[key] = check(table[key])
            except ValueError as exc:
                raise GenesisSectionError(source, f"policy.{key}", str(exc)) from None
    policy = Policy(**values)
    if policy.unbonding_delay < 2 * policy.epoch_length:
        raise GenesisSectionError(
            source,
            "policy.unbonding_delay",
            f"must be at least 2 * epoch_length = {2 * policy.epoch_length} blocks, so that "
            f"stake behind a bundle stays slashable while its proofs are accepted; "
            f"got {policy.unbonding_delay}",
        )
    return policy


_ACCOUNT_CHECKS: dict[str, _Check] = {
    "id": parse_account_id,
    "public_key": _public_key,
    "bonded": _integer(0, MAX_AMOUNT),
    "balance": _integer(0, MAX_AMOUNT),
}
_ACCOUNT_REQUIRED = ("id", "public_key", "bonded")


def parse_accounts(source: str, entries: Any) -> tuple[AccountEntry, ...]:
    """Build the genesis allocation from ``[[accounts]]`` tables.

    Each id must be the id of its public key, ids are unique, and the total
    supply fits `MAX_AMOUNT`.  Raises GenesisSectionError naming the key.
    """
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise GenesisSectionError(source, "accounts", "expected [[accounts]] tables")
    result: list[AccountEntry] = []
    seen: dict[bytes, int] = {}
    supply = 0
    for i, entry in enumerate(entries):
        where = f"accounts[{i}]"
        _check_keys(source, where, entry, set(_ACCOUNT_CHECKS))
        for key in _ACCOUNT_REQUIRED:
            if key not in entry:
                raise GenesisSectionError(source, f"{where}.{key}", "missing required key")
        values: dict[str, Any] = {"balance": 0}
        for key, check in _ACCOUNT_CHECKS.items():
            if key in entry:
                try:
                    values[key] = check(entry[key])
                except ValueError as exc:
                    raise GenesisSectionError(source, f"{where}.{key}", str(exc)) from None
        expected = account_id(values["public_key"])
        if values["id"] != expected:
            raise GenesisSectionError(
                source,
                f"{where}.id",
                f"is not the id of public_key (expected {expected.hex()}); "
                "copy both from `trustchain account new`",
            )
        if expected in seen:
            raise GenesisSectionError(
                source, f"{where}.id", f"duplicate of accounts[{seen[expected]}]"
            )
        seen[expected] = i
        supply += values["bonded"] + values["balance"]
        if supply > MAX_AMOUNT:
            raise GenesisSectionError(
                source, f"{where}.bonded", f"total supply exceeds the maximum {MAX_AMOUNT}"
            )
        result.append(
            AccountEntry(expected, values["public_key"], values["bonded"], values["balance"])
        )
    return tuple(result)


def account_entry_toml(entry: AccountEntry) -> str:
    """The ``[[accounts]]`` table for `entry`, as `trustchain account new` prints it."""
    return (
        "[[accounts]]\n"
        f'id = "{entry.account_id.hex()}"\n'
        f'public_key = "{base64.b64encode(entry.public_key).decode()}"\n'
        f"bonded = {entry.bonded}\n"
        f"balance = {entry.balance}\n"
    )


def policy_toml(policy: Policy) -> str:
    """A ``[policy]`` table stating every value of `policy`."""
    lines = ["[policy]"]
    lines += [f"{f.name} = {getattr(policy, f.name)}" for f in fields(policy)]
    return "\n".join(lines) + "\n"
