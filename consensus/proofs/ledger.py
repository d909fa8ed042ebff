"""The stake ledger: every rule about balances, bonds and slashing lives here.

The ledger is part of the replicated state: every validator applies the same
committed operations in the same order and must reach the same state, so
nothing here reads a clock, iterates an unordered collection into a result, or
uses floating point.  Time is the committed block height, passed in.

Transitions, per account (all amounts are whole ledger units):

* genesis allocation: liquid balance and bonded stake from ``[[accounts]]``;
* ``Transfer`` (signed): balance -> another account's balance; creates the
  recipient account (named by its public key) if it does not exist yet;
* ``Bond`` (signed): balance -> bonded;
* ``Unbond`` (signed): bonded -> unbonding, released to the balance at
  ``height + unbonding_delay`` by `StakeLedger.advance_to`;
* ``Slash`` (consensus evidence, not signed by the account): removes stake,
  bonded first and then unbonding (unbonding stake stays slashable; that is
  what the delay is for).  Each piece of evidence is used at most once.

Invariant: the total supply (balances + bonded + unbonding of all accounts)
changes only by slashing.  Signed operations carry the account's next sequence
number, so a committed operation can never be replayed.  An operation that
breaks a rule raises LedgerError and leaves the ledger exactly as it was: each
transition computes the new account records first and commits them last.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustchain.consensus.proofs.errors import LedgerError
from trustchain.consensus.proofs.hashing import (
    DIGEST_BYTES,
    TAG_LEDGER_OP,
    TAG_LEDGER_STATE,
    account_id,
    tagged_hash,
    tagged_prefix,
    u64,
)
from trustchain.consensus.proofs.policy import MAX_AMOUNT, AccountEntry, Policy

# --- operations (messages) ----------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """Move liquid balance to another account."""

    account: bytes
    """Sender's account id."""
    seq: int
    """The sender's next sequence number (its current `AccountState.seq` + 1)."""
    recipient_key: bytes
    """Recipient's raw Ed25519 public key (its account is created if new)."""
    amount: int
    """Ledger units, at least 1."""


@dataclass(frozen=True)
class Bond:
    """Move liquid balance into bonded stake."""

    account: bytes
    """The bonding account's id."""
    seq: int
    """The account's next sequence number."""
    amount: int
    """Ledger units, at least 1."""


@dataclass(frozen=True)
class Unbond:
    """Start releasing bonded stake; it becomes liquid after the unbonding delay."""

    account: bytes
    """The unbonding account's id."""
    seq: int
    """The account's next sequence number."""
    amount: int
    """Ledger units, at least 1."""


Operation = Transfer | Bond | Unbond
"""An account operation; it takes effect only with the account's signature."""


@dataclass(frozen=True)
class SignedOperation:
    """An operation with the account's Ed25519 signature over `operation_message`."""

    operation: Operation
    """What the account asks for."""
    signature: bytes
    """64-byte Ed25519 signature."""


@dataclass(frozen=True)
class Slash:
    """Remove stake from an account that equivocated (consensus evidence)."""

    account: bytes
    """The offender's account id."""
    amount: int
    """Ledger units to remove (at most what the account has bonded or unbonding)."""
    evidence: bytes
    """32-byte hash of the evidence; the same evidence never slashes twice."""


# --- state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unbonding:
    """Stake on its way out of the bond."""

    release_height: int
    """First height at which it is added to the balance."""
    amount: int
    """Ledger units."""


@dataclass(frozen=True)
class AccountState:
    """One account as the ledger holds it."""

    account_id: bytes
    """20-byte id, `account_id(public_key)`."""
    public_key: bytes
    """Raw Ed25519 public key; signs operations and stake proofs."""
    balance: int = 0
    """Liquid units (transferable, bondable)."""
    bonded: int = 0
    """Bonded units; what a stake proof counts, and what slashing takes first."""
    unbonding: tuple[Unbonding, ...] = ()
    """Pending releases, in the order they were made (release heights ascending)."""
    seq: int = 0
    """Sequence number of the last applied signed operation."""

    @property
    def total(self) -> int:
        return self.balance + self.bonded + sum(u.amount for u in self.unbonding)


def operation_message(chain_id: str, op: Operation) -> bytes:
    """The bytes an account signs for `op` (fixed layout, chain-bound)."""
    if isinstance(op, Transfer):
        kind, extra = b"transfer", op.recipient_key
    elif isinstance(op, Bond):
        kind, extra = b"bond", b""
    else:
        kind, extra = b"unbond", b""
    return tagged_prefix(
        TAG_LEDGER_OP, chain_id.encode(), kind, op.account, u64(op.seq), extra, u64(op.amount)
    )


def sign_operation(key: Ed25519PrivateKey, chain_id: str, op: Operation) -> SignedOperation:
    return SignedOperation(op, key.sign(operation_message(chain_id, op)))


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature (RFC 8032) of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class StakeLedger:
    """The replicated stake state and its transitions (see the module docstring).

    Driven by the consensus layer in commit order: `advance_to(height)` once per
    committed block, then `apply` / `slash` for the block's operations.
    """

    def __init__(self, chain_id: str, policy: Policy, genesis: Iterable[AccountEntry]) -> None:
        self.chain_id = chain_id
        self.policy = policy
        # Owned by this object; AccountState records are immutable and replaced whole.
        self._accounts: dict[bytes, AccountState] = {}
        self._evidence: set[bytes] = set()
        self._height = 0
        supply = 0
        for entry in genesis:
            if entry.account_id in self._accounts:
                raise LedgerError(f"genesis: account {entry.account_id.hex()} listed twice")
            if account_id(entry.public_key) != entry.account_id:
                raise LedgerError(f"genesis: account {entry.account_id.hex()} is not its key's id")
            self._accounts[entry.account_id] = AccountState(
                entry.account_id, entry.public_key, balance=entry.balance, bonded=entry.bonded
            )
            supply += entry.balance + entry.bonded
        if supply > MAX_AMOUNT:
            raise LedgerError(f"genesis: total supply {supply} exceeds {MAX_AMOUNT}")
        self._supply = supply

    # --- reading ---------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The height of the block being applied (0 before the first)."""
        return self._height

    @property
    def supply(self) -> int:
        """Total units in existence; falls only by slashing."""
        return self._supply

    def account(self, account: bytes) -> AccountState | None:
        return self._accounts.get(account)

    def accounts(self) -> Iterator[AccountState]:
        """All accounts, ordered by id."""
        for key in sorted(self._accounts):
            yield self._accounts[key]

    def bonded(self, account: bytes) -> int:
        state = self._accounts.get(account)
        return state.bonded if state else 0

    def digest(self) -> bytes:
        """A hash of the whole state; equal on every validator after the same blocks."""
        parts = [u64(self._height), u64(self._supply)]
        for a in self.accounts():
            parts += [a.account_id, a.public_key, u64(a.balance), u64(a.bonded), u64(a.seq)]
            parts += [u64(len(a.unbonding))]
            for u in a.unbonding:
                parts += [u64(u.release_height), u64(u.amount)]
        parts += [u64(len(self._evidence)), *sorted(self._evidence)]
        return tagged_hash(TAG_LEDGER_STATE, *parts)

    def export(self) -> tuple[int, int, list[AccountState], list[bytes]]:
        """(height, supply, accounts by id, evidence seen): the whole state, for snapshots."""
        return self._height, self._supply, list(self.accounts()), sorted(self._evidence)

    def load(
        self, height: int, supply: int, accounts: Iterable[AccountState], evidence: Iterable[bytes]
    ) -> None:
        """Replace the whole state by an `export` (a verified snapshot's)."""
        self._height, self._supply = height, supply
        self._accounts = {a.account_id: a for a in accounts}
        self._evidence = set(evidence)

    # --- transitions -------------------------------------------------------------------

    def advance_to(self, height: int) -> None:
        """Enter block `height`: release every unbonding whose release height has come."""
        if height < self._height:
            raise LedgerError(f"height {height} is before the current height {self._height}")
        self._height = height
        for key in sorted(self._accounts):
            state = self._accounts[key]
            due = [u for u in state.unbonding if u.release_height <= height]
            if due:
                self._accounts[key] = replace(
                    state,
                    balance=state.balance + sum(u.amount for u in due),
                    unbonding=tuple(u for u in state.unbonding if u.release_height > height),
                )

    def apply(self, signed: SignedOperation) -> None:
        """Apply one signed account operation at the current height, or raise LedgerError."""
        op = signed.operation
        kind = type(op).__name__.lower()
        sender = self._accounts.get(op.account)
        if sender is None:
            raise LedgerError(f"{kind}: unknown account {op.account.hex()}")
        if not verify_ed25519(
            sender.public_key, signed.signature, operation_message(self.chain_id, op)
        ):
            raise LedgerError(f"{kind}: signature does not verify with the account key")
        if op.seq != sender.seq + 1:
            raise LedgerError(
                f"{kind}: sequence number {op.seq}, expected {sender.seq + 1} "
                "(a replayed or out-of-order operation)"
            )
        if not 1 <= op.amount <= MAX_AMOUNT:
            raise LedgerError(f"{kind}: amount must be in 1..{MAX_AMOUNT}, got {op.amount}")
        updates: dict[bytes, AccountState]
        if isinstance(op, Transfer):
            updates = self._transfer(sender, op)
        elif isinstance(op, Bond):
            if op.amount > sender.balance:
                raise LedgerError(f"bond: amount {op.amount} exceeds the balance {sender.balance}")
            updates = {
                sender.account_id: replace(
                    sender,
                    balance=sender.balance - op.amount,
                    bonded=sender.bonded + op.amount,
                    seq=op.seq,
                )
            }
        else:
            if op.amount > sender.bonded:
                raise LedgerError(
                    f"unbond: amount {op.amount} exceeds the bonded stake {sender.bonded}"
                )
            release = Unbonding(self._height + self.policy.unbonding_delay, op.amount)
            updates = {
                sender.account_id: replace(
                    sender,
                    bonded=sender.bonded - op.amount,
                    unbonding=(*sender.unbonding, release),
                    seq=op.seq,
                )
            }
        # Commit point: every check has passed.
        self._accounts.update(updates)

    def _transfer(self, sender: AccountState, op: Transfer) -> dict[bytes, AccountState]:
        if len(op.recipient_key) != 32:
            raise LedgerError("transfer: recipient key must be a 32-byte Ed25519 key")
        recipient_id = account_id(op.recipient_key)
        if recipient_id == sender.account_id:
            raise LedgerError("transfer: sender and recipient are the same account")
        if op.amount > sender.balance:
            raise LedgerError(f"transfer: amount {op.amount} exceeds the balance {sender.balance}")
        recipient = self._accounts.get(recipient_id) or AccountState(recipient_id, op.recipient_key)
        return {
            sender.account_id: replace(sender, balance=sender.balance - op.amount, seq=op.seq),
            recipient_id: replace(recipient, balance=recipient.balance + op.amount),
        }

    def slash(self, slash: Slash) -> int:
        """Remove up to `slash.amount` of the account's stake; return what was removed."""
        if len(slash.evidence) != DIGEST_BYTES:
            raise LedgerError("slash: evidence must be a 32-byte hash")
        if slash.evidence in self._evidence:
            raise LedgerError(f"slash: evidence {slash.evidence.hex()} was already applied")
        state = self._accounts.get(slash.account)
        if state is None:
            raise LedgerError(f"slash: unknown account {slash.account.hex()}")
        if not 1 <= slash.amount <= MAX_AMOUNT:
            raise LedgerError(f"slash: amount must be in 1..{MAX_AMOUNT}, got {slash.amount}")
        remaining = slash.amount
        from_bond = min(remaining, state.bonded)
        remaining -= from_bond
        unbonding: list[Unbonding] = []
        for u in state.unbonding:  # earliest release first
            take = min(remaining, u.amount)
            remaining -= take
            if u.amount > take:
                unbonding.append(Unbonding(u.release_height, u.amount - take))
        removed = slash.amount - remaining
        # Commit point.
        self._accounts[state.account_id] = replace(
            state, bonded=state.bonded - from_bond, unbonding=tuple(unbonding)
        )
        self._evidence.add(slash.evidence)
        self._supply -= removed
        return removed
