"""Safety rules of 2-chain HotStuff (Jolteon / DiemBFT v4), in one place.

Everything that decides whether this validator may sign a vote or a timeout
lives here, with the state those decisions depend on.  The state must be
durable before any vote or timeout it allowed leaves the node (see
`trustchain.consensus.core.Output`): a restarted validator that forgot it
could vote twice in one round.

Rules (Gelashvili et al., "Jolteon and Ditto", FC 2022, section 4; DiemBFT v4):

- vote for block B of round r only if r > highest_vote_round, and either
  B.qc.round + 1 == r (B extends the previous round's certificate), or the
  proposal carries a TC for round r - 1 and B.qc.round >= the highest QC round
  any signer of that TC reported (B extends the newest certificate a quorum
  could have locked on);
- never time out in a round below one we voted or timed out in, never report
  a QC older than our lock in a timeout, and never vote in a round we timed
  out in;
- remember the highest QC round seen (the 2-chain lock): timeouts report it,
  and the TC rule above is what makes votes respect it.

Mutants (`MUTANTS`) are deliberately broken copies used by `trustchain sim` to
prove that its checkers catch unsafe code.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustchain.consensus.messages import Block, TimeoutCert


@dataclass(frozen=True)
class SafetyState:
    """What a validator must never forget about what it signed."""

    highest_vote_round: int = 0
    """Highest round this validator voted or timed out in."""
    highest_qc_round: int = 0
    """Highest round of a QC this validator has seen (its lock)."""


class SafetyRules:
    """Honest rules.  Pure: each method takes state and returns a decision or a new state."""

    name = "honest"

    def vote_refusal(self, state: SafetyState, block: Block, tc: TimeoutCert | None) -> str | None:
        """None if voting for `block` is safe, else why not."""
        if block.round <= state.highest_vote_round:
            return f"already voted or timed out in round {state.highest_vote_round}"
        if block.qc.round + 1 == block.round:
            return None
        if tc is not None and tc.round + 1 == block.round:
            if block.qc.round >= tc.max_high_qc_round:
                return None
            return (
                f"block extends a qc of round {block.qc.round}, below the tc's highest "
                f"reported qc round {tc.max_high_qc_round}"
            )
        return f"round {block.round} neither follows its qc round {block.qc.round} nor a tc"

    def after_vote(self, state: SafetyState, block: Block) -> SafetyState:
        return SafetyState(
            highest_vote_round=block.round,
            highest_qc_round=max(state.highest_qc_round, block.qc.round),
        )

    def timeout_refusal(self, state: SafetyState, round: int, high_qc_round: int) -> str | None:
        if round < state.highest_vote_round:
            return (
                f"round {round} is below our highest vote/timeout round {state.highest_vote_round}"
            )
        if high_qc_round < state.highest_qc_round:
            return "timeout would report a qc older than our lock"
        return None

    def after_timeout(self, state: SafetyState, round: int) -> SafetyState:
        return SafetyState(max(state.highest_vote_round, round), state.highest_qc_round)

    def observe_qc(self, state: SafetyState, qc_round: int) -> SafetyState:
        if qc_round <= state.highest_qc_round:
            return state
        return SafetyState(state.highest_vote_round, qc_round)

    # Hooks the mutants below override.
    def counts_repeated_signers(self) -> bool:
        return False

    def persists_before_sending(self) -> bool:
        return True


class NoLockMutant(SafetyRules):
    """Votes for any block of a new round: skips the QC-round / TC lock rule."""

    name = "no-lock"

    def vote_refusal(self, state: SafetyState, block: Block, tc: TimeoutCert | None) -> str | None:
        if block.round <= state.highest_vote_round:
            return "already voted"
        return None


class DoubleVoteMutant(SafetyRules):
    """Votes again in a round it already voted in (for a different block)."""

    name = "double-vote"

    def vote_refusal(self, state: SafetyState, block: Block, tc: TimeoutCert | None) -> str | None:
        relaxed = SafetyState(state.highest_vote_round - 1, state.highest_qc_round)
        return super().vote_refusal(relaxed, block, tc)


class WeakQuorumMutant(SafetyRules):
    """Accepts a QC whose signatures, counted with repeats, add up to a quorum:
    a certificate with 2/3 of the distinct power or less passes."""

    name = "weak-quorum"

    def counts_repeated_signers(self) -> bool:
        return True


class UnpersistedMutant(SafetyRules):
    """Sends votes before its safety state is durable; a crash right after forgets them."""

    name = "unpersisted"

    def persists_before_sending(self) -> bool:
        return False


MUTANTS: dict[str, type[SafetyRules]] = {
    m.name: m for m in (NoLockMutant, DoubleVoteMutant, WeakQuorumMutant, UnpersistedMutant)
}
