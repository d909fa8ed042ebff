"""Pure parts of the node API: the per-identity rate limiter and refusal codes."""

from __future__ import annotations

import pytest

from trustchain.node.api import RateLimiter, _error_code


def test_rate_limit_per_identity_refills_over_the_minute() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [None, None, None]
    wait = limiter.take("a", 0.0)
    assert wait == pytest.approx(20.0)  # one request every 20 s at 3 per minute
    assert limiter.take("b", 0.0) is None  # another client is not affected
    assert limiter.take("a", 10.0) == pytest.approx(10.0)
    assert limiter.take("a", 20.0) is None
    assert limiter.take("a", 20.0) is not None
    # A long pause refills to the limit, not beyond it.
    assert [limiter.take("a", 1000.0) for _ in range(4)][-1] is not None


@pytest.mark.parametrize(
    "reason, code",
    [
        ("request: replayed: this request was already committed", "replay"),
        ("stake: unknown account 00ff", "unknown_account"),
        ("space: proof does not verify for this plot", "bad_proof"),
        ("work: hash has 3 leading zero bits, the policy requires 20", "bad_proof"),
        ("names: www.example.org is not under an allowed zone", "name_outside_policy"),
        ("csr: the CSR's signature does not verify with its own key", "bad_csr"),
        ("serial: 1a was already issued", "serial"),
    ],
)
def test_refusals_have_stable_codes(reason: str, code: str) -> None:
    assert _error_code(reason) == code
