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


def test_client_addresses_outside_ipv6_or_the_allowlist_are_refused_every_time() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from trustchain.node.api import ApiApp
    from trustchain.node.log import get_logger

    node = cast(Any, SimpleNamespace(ctlog=None))  # the address check needs no node
    api = ApiApp(node, allow=("2001:db8::/32",), rate_limit=10, log=get_logger("test"))
    for _ in range(2):  # the verdict is remembered per host: the second time too
        assert api._address_refusal("2001:db8::7") is None
        assert api._address_refusal("2001:db8::7%lo") is None
        assert "not in the API allowlist" in (api._address_refusal("::1") or "")
        assert "IPv4" in (api._address_refusal("::ffff:127.0.0.1") or "")
        assert "IPv4" in (api._address_refusal("127.0.0.1") or "")
        assert api._address_refusal("not an address") == "unknown client address"
