"""A bundle through the validator's checks: acceptance, tampering, bit flips, epochs, replays."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from proofs_support import CHAIN, EPOCH, TEST_POLICY, Made, redo_work

from trustchain.consensus.proofs.bundle import ProofBundle, SpaceProof, TimeProof, WorkProof
from trustchain.consensus.proofs.cache import EpochCache, ReplayGuard
from trustchain.consensus.proofs.codec import MAX_BUNDLE_BYTES, decode_bundle, encode_bundle
from trustchain.consensus.proofs.errors import ProofRejected
from trustchain.consensus.proofs.hashing import request_digest
from trustchain.consensus.proofs.ledger import AccountState, Unbond, sign_operation
from trustchain.consensus.proofs.space import make_space_proof
from trustchain.consensus.proofs.vdf import make_time_proof
from trustchain.consensus.proofs.verifier import BundleVerifier, StakeView
from trustchain.consensus.proofs.work import make_work, work_hash

INTERNAL = "could not be checked"


def check(
    made: Made,
    data: bytes,
    *,
    verifier: BundleVerifier | None = None,
    now: int = EPOCH,
    stake: StakeView | None = None,
    replay: ReplayGuard | None = None,
    beacons: dict[int, bytes] | None = None,
) -> Any:
    v = verifier or BundleVerifier(CHAIN, TEST_POLICY)
    return v.check(
        data,
        request=made.request,
        now_epoch=now,
        beacons=made.beacons if beacons is None else beacons,
        stake=stake or made.ledger(),
        replay=replay,
    )


def rejected(made: Made, data: bytes, **kwargs: Any) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        check(made, data, **kwargs)
    assert not info.value.reason.startswith(INTERNAL), info.value
    return info.value


# --- acceptance -------------------------------------------------------------------------


def test_valid_bundle_is_accepted_and_then_served_from_the_epoch_cache(made: Made) -> None:
    verifier = BundleVerifier(CHAIN, TEST_POLICY)
    first = check(made, made.data, verifier=verifier)
    assert first.digest == made.bundle.digest(CHAIN)
    assert (first.space_cached, first.time_cached) == (False, False)
    again = check(made, made.data, verifier=verifier)
    assert (again.space_cached, again.time_cached) == (True, True)


def test_space_and_time_proofs_are_accepted_in_the_next_epoch_but_not_after(made: Made) -> None:
    verifier = BundleVerifier(CHAIN, TEST_POLICY)
    check(made, made.data, verifier=verifier, now=EPOCH)
    assert check(made, made.data, verifier=verifier, now=EPOCH + 1).time_cached
    err = rejected(made, made.data, verifier=verifier, now=EPOCH + 2)
    assert err.proof == "epoch" and f"epoch {EPOCH}" in err.reason
    err = rejected(made, made.data, now=EPOCH - 1)
    assert err.proof == "epoch" and "has not begun" in err.reason


def test_epoch_cache_forgets_proofs_older_than_the_previous_epoch(made: Made) -> None:
    verifier = BundleVerifier(CHAIN, TEST_POLICY)
    check(made, made.data, verifier=verifier)
    assert len(verifier.cache) == 2
    verifier.cache.advance(EPOCH + 1)
    assert len(verifier.cache) == 2
    verifier.cache.advance(EPOCH + 2)
    assert len(verifier.cache) == 0


def test_epoch_cache_is_bounded() -> None:
    cache = EpochCache(max_entries=3)
    for i in range(5):
        cache.add(bytes([i]) * 32, 1)
    assert len(cache) == 3
    assert not cache.hit(bytes([0]) * 32, 1) and cache.hit(bytes([4]) * 32, 1)


def test_a_committed_request_is_refused_as_a_replay(made: Made) -> None:
    replay = ReplayGuard()
    checked = check(made, made.data, replay=replay)
    replay.record(checked.digest, EPOCH)
    err = rejected(made, made.data, replay=replay)
    assert (err.proof, err.reason) == ("request", "replayed: this request was already committed")
    # Forgotten only once the bundle's epoch is no longer accepted anyway.
    replay.advance(EPOCH + 1)
    assert replay.seen(checked.digest)
    replay.advance(EPOCH + 2)
    assert not replay.seen(checked.digest)
    assert rejected(made, made.data, now=EPOCH + 2).proof == "epoch"


def test_bundle_cannot_be_moved_to_another_request(made: Made) -> None:
    verifier = BundleVerifier(CHAIN, TEST_POLICY)
    with pytest.raises(ProofRejected) as info:
        verifier.check(
            made.data,
            request=secrets.token_bytes(32),
            now_epoch=EPOCH,
            beacons=made.beacons,
            stake=made.ledger(),
        )
    assert info.value.proof == "request"


def test_bundle_cannot_be_moved_to_another_chain(made: Made) -> None:
    """The digest covers the chain id, so both work and signature belong to one chain."""
    other = BundleVerifier("another-chain", TEST_POLICY)
    assert rejected(made, made.data, verifier=other).proof in {"work", "stake"}
    # Even with work done for the other chain's digest, the signature is this chain's.
    other_digest = request_digest("another-chain", made.bundle.account, EPOCH, made.request)
    moved = replace(made.bundle, work=make_work(other_digest, TEST_POLICY.work_bits))
    err = rejected(made, made.resign(moved), verifier=other)
    assert (err.proof, err.reason) == ("stake", "signature does not verify with the account key")


def test_stake_below_the_minimum_is_refused(made: Made) -> None:
    err = rejected(made, made.data, stake=made.ledger(bonded=TEST_POLICY.min_stake - 1))
    assert err.proof == "stake"
    assert err.reason == "bonded stake 99 is below the policy minimum 100"
    check(made, made.data, stake=made.ledger(bonded=TEST_POLICY.min_stake))


def test_stake_proof_stops_counting_once_the_account_unbonds(made: Made) -> None:
    ledger = made.ledger(bonded=150)
    owner = made.env.owner
    ledger.advance_to(1)
    ledger.apply(sign_operation(owner.key, CHAIN, Unbond(owner.id, 1, 60)))
    assert rejected(made, made.data, stake=ledger).proof == "stake"


def test_unknown_account_is_refused(made: Made) -> None:
    class Empty:
        def account(self, account: bytes) -> AccountState | None:
            return None

    err = rejected(made, made.data, stake=Empty())
    assert err.proof == "stake" and err.reason.startswith("unknown account")


def test_missing_beacon_is_refused(made: Made) -> None:
    err = rejected(made, made.data, beacons={})
    assert (err.proof, err.reason) == ("epoch", f"no beacon is known for epoch {EPOCH}")


def test_a_broken_stake_view_is_a_rejection_not_a_crash(made: Made) -> None:
    class Broken:
        def account(self, account: bytes) -> AccountState | None:
            raise RuntimeError("disk on fire")

    with pytest.raises(ProofRejected) as info:
        check(made, made.data, stake=Broken())
    assert info.value.proof == "bundle" and info.value.reason.startswith(INTERNAL)


# --- tampering by a third party (no account key): every field -----------------------------


def _flip(value: bytes, at: int = 0) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


def _third_party_tampers(made: Made) -> list[tuple[str, ProofBundle, set[str]]]:
    """(what, tampered bundle, proofs a sensible rejection may name)."""
    b = made.bundle
    s, t = b.space, b.time
    other = made.env.other.id
    return [
        ("version", replace(b, version=2), {"bundle"}),
        ("account: another staked account", replace(b, account=other), {"space"}),
        ("account: unknown", replace(b, account=secrets.token_bytes(20)), {"stake"}),
        ("epoch: next", replace(b, epoch=EPOCH + 1), {"epoch"}),
        ("epoch: previous", replace(b, epoch=EPOCH - 1), {"epoch"}),
        ("request", replace(b, request=secrets.token_bytes(32)), {"request"}),
        ("work.nonce", replace(b, work=WorkProof(_flip(b.work.nonce, 7))), {"work", "stake"}),
        ("space.salt", replace(b, space=replace(s, salt=_flip(s.salt))), {"space"}),
        ("space.plot_id", replace(b, space=replace(s, plot_id=_flip(s.plot_id))), {"space"}),
        ("space.k: smaller", replace(b, space=replace(s, k=s.k - 1)), {"space"}),
        ("space.k: larger", replace(b, space=replace(s, k=s.k + 1)), {"space"}),
        ("space.k: huge", replace(b, space=replace(s, k=200)), {"space"}),
        ("space.index: out of range", replace(b, space=replace(s, index=16)), {"space"}),
        (
            "space.index: in range",
            replace(b, space=replace(s, index=(s.index + 1) % 16)),
            {"stake"},
        ),
        ("space.proof", replace(b, space=replace(s, proof=_flip(s.proof, 50))), {"stake"}),
        ("space.proof: short", replace(b, space=replace(s, proof=s.proof[:-8])), {"space"}),
        ("time.iterations", replace(b, time=replace(t, iterations=t.iterations + 1)), {"time"}),
        ("time.output", replace(b, time=replace(t, output=_flip(t.output, 40))), {"stake"}),
        ("time.proof", replace(b, time=replace(t, proof=_flip(t.proof, 40))), {"stake"}),
        (
            "stake.signature",
            replace(b, stake=replace(b.stake, signature=_flip(b.stake.signature))),
            {"stake"},
        ),
    ]


def test_every_field_tampered_by_a_third_party_is_rejected_naming_the_proof(made: Made) -> None:
    seen: set[str] = set()
    for what, bundle, allowed in _third_party_tampers(made):
        err = rejected(made, encode_bundle(bundle))
        assert err.proof in allowed, f"{what}: {err}"
        seen.add(what.split(":")[0].split(".")[0])
    # Every top-level field of the bundle was tampered with at least once.
    assert seen == {"version", "account", "epoch", "request", "work", "space", "time", "stake"}


def test_specific_reasons_for_claims_checked_before_the_signature(made: Made) -> None:
    b, s, t = made.bundle, made.bundle.space, made.bundle.time
    reasons = {
        replace(
            b, space=replace(s, plot_id=_flip(s.plot_id))
        ): "space: plot id not bound to account",
        replace(b, space=replace(s, k=17)): "space: plot size k=17 is below the policy minimum 18",
        replace(b, space=replace(s, index=16)): (
            "space: challenge index 16 is not below the policy limit 16"
        ),
        replace(b, time=replace(t, iterations=1999)): (
            "time: wrong iteration count 1999; the policy requires 2000"
        ),
    }
    for bundle, reason in reasons.items():
        assert str(rejected(made, encode_bundle(bundle))) == reason


# --- an evil client: the account holder signs bad proofs ---------------------------------


def test_account_holder_cannot_pass_bad_proofs(made: Made) -> None:
    b, s, t = made.bundle, made.bundle.space, made.bundle.time
    env = made.env
    other_beacon = secrets.token_bytes(32)
    space_for_other_epoch = make_space_proof(
        env.plot, env.owner.public_key, env.owner.id, other_beacon, TEST_POLICY
    )
    time_for_other_epoch = make_time_proof(other_beacon, env.owner.id, TEST_POLICY.vdf_iterations)
    time_for_other_account = make_time_proof(made.beacon, env.other.id, TEST_POLICY.vdf_iterations)
    identity = bytes([0x04]) + bytes(99)  # BQFC flag for the identity form
    failing_nonce = next(
        n
        for n in (i.to_bytes(8, "big") for i in range(1000))
        if work_hash(b.digest(CHAIN), n)[0] != 0
    )
    cases: list[tuple[ProofBundle, str]] = [
        (
            replace(b, space=replace(s, proof=secrets.token_bytes(len(s.proof)))),
            "space: proof does not verify",
        ),
        (replace(b, space=replace(s, index=(s.index + 1) % 16)), "space: proof does not verify"),
        (replace(b, space=space_for_other_epoch), "space: proof does not verify"),
        (replace(b, space=replace(s, plot_id=secrets.token_bytes(32))), "space: plot id not bound"),
        (replace(b, time=replace(t, iterations=t.iterations * 2)), "time: wrong iteration count"),
        # Another group's elements usually do not even decompress in this one.
        (replace(b, time=time_for_other_epoch), "time:"),
        (replace(b, time=time_for_other_account), "time:"),
        (replace(b, time=TimeProof(t.iterations, t.proof, t.output)), "time:"),
        (
            replace(b, time=TimeProof(t.iterations, identity, identity)),
            "time: VDF proof does not verify",
        ),
        (replace(b, time=replace(t, output=secrets.token_bytes(100))), "time:"),
        (replace(b, time=replace(t, output=bytes(100))), "time:"),
    ]
    for bundle, reason in cases:
        # Re-signed by the owner (work redone), so only the bad proof is wrong.
        err = rejected(made, made.resign(redo_work(bundle)))
        assert str(err).startswith(reason), (bundle, err)
    # Without redoing the work, the work check names itself.
    bad_work = replace(b, work=WorkProof(failing_nonce))
    assert str(rejected(made, made.resign(bad_work))).startswith("work: hash has")


def test_a_plot_of_another_account_cannot_be_used(made: Made) -> None:
    """The second account signs a bundle with the owner's space proof."""
    env = made.env
    b = made.bundle
    time_proof = make_time_proof(made.beacon, env.other.id, TEST_POLICY.vdf_iterations)
    stolen = replace(b, account=env.other.id, time=time_proof)
    data = made.resign(redo_work(stolen), env.other.key)
    assert str(rejected(made, data)) == "space: plot id not bound to account"


# --- bit flips and truncation across the whole encoding ----------------------------------


def test_every_bit_flip_of_the_encoding_is_rejected(made: Made) -> None:
    verifier = BundleVerifier(CHAIN, TEST_POLICY)
    ledger = made.ledger()
    check(made, made.data, verifier=verifier, stake=ledger)  # warm: flips cannot hide behind cost
    proofs: set[str] = set()
    for bit in range(8 * len(made.data)):
        data = bytearray(made.data)
        data[bit // 8] ^= 1 << (bit % 8)
        err = rejected(made, bytes(data), verifier=verifier, stake=ledger)
        proofs.add(err.proof)
    assert {"bundle", "request", "epoch", "stake", "space", "time"} <= proofs


def test_every_truncation_and_extension_is_rejected(made: Made) -> None:
    for end in range(len(made.data)):
        assert rejected(made, made.data[:end]).proof == "bundle"
    err = rejected(made, made.data + b"\x00")
    assert err.reason == "trailing bytes after the encoded object"


# --- strict decoding -------------------------------------------------------------------------


def _obj(made: Made) -> dict[str, Any]:
    obj: dict[str, Any] = msgpack.unpackb(made.data, raw=False)
    return obj


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def test_codec_round_trips(made: Made) -> None:
    assert decode_bundle(made.data) == made.bundle
    assert encode_bundle(decode_bundle(made.data)) == made.data


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda o: o.update(extra=1), "field 'bundle': unknown key 'extra'"),
        (lambda o: o["space"].update(quality=b"x"), "field 'space': unknown key 'quality'"),
        (lambda o: o.pop("work"), "field 'bundle': missing key 'work'"),
        (lambda o: o["time"].pop("proof"), "field 'time': missing key 'proof'"),
        (lambda o: o.update(epoch="5"), "field 'epoch': expected an integer, got str"),
        (lambda o: o.update(epoch=True), "field 'epoch': expected an integer, got bool"),
        (lambda o: o.update(epoch=5.0), "field 'epoch': expected an integer, got float"),
        (lambda o: o.update(epoch=-1), "field 'epoch': expected an integer in"),
        (lambda o: o.update(account="ab" * 20), "field 'account': expected bytes, got str"),
        (lambda o: o.update(account=b"x" * 21), "field 'account': expected 20 bytes, got 21"),
        (lambda o: o.update(request=b""), "field 'request': expected 32 bytes, got 0"),
        (lambda o: o["space"].update(k=0), "field 'space.k': expected an integer in 1..255"),
        (lambda o: o["space"].update(proof=b""), "field 'space.proof': expected 1..400 bytes"),
        (lambda o: o["time"].update(iterations=0), "field 'time.iterations': expected an integer"),
        (lambda o: o["time"].update(output=b"\x08" * 99), "field 'time.output': expected 100"),
        (lambda o: o["stake"].update(signature=[1, 2]), "field 'stake.signature': expected bytes"),
        (lambda o: o.update(work=[b"12345678"]), "field 'work': expected a map, got list"),
        (lambda o: o.update(v=2), "unsupported version 2 (this node reads version 1)"),
    ],
)
def test_strict_decoding_names_the_field(made: Made, mutate: Any, reason: str) -> None:
    obj = _obj(made)
    mutate(obj)
    err = rejected(made, _pack(obj))
    assert err.proof == "bundle" and reason in err.reason, err


def test_non_canonical_encodings_are_rejected(made: Made) -> None:
    obj = _obj(made)
    reordered = {"account": obj["account"], **{k: v for k, v in obj.items() if k != "account"}}
    assert decode_bundle(_pack(obj)) == made.bundle
    assert "canonical" in rejected(made, _pack(reordered)).reason
    # epoch 5 written as a uint64 (0xcf + 8 bytes) instead of a positive fixint.
    short = _pack(EPOCH)
    assert short == b"\x05"
    marker = b"\xa5epoch" + short
    wide = made.data.replace(marker, b"\xa5epoch\xcf" + EPOCH.to_bytes(8, "big"))
    assert wide != made.data
    assert "canonical" in rejected(made, wide).reason
    # A duplicated key: the second value would silently win in a plain decoder.
    dup = made.data[:1] + made.data[1:].replace(marker, marker + marker, 1)
    dup = bytes([made.data[0] + 1]) + dup[1:]
    assert rejected(made, dup).proof == "bundle"


def test_other_malformed_inputs_are_rejected(made: Made) -> None:
    cases: list[Any] = [
        b"",
        b"\xc1",  # never used in msgpack
        _pack([1, 2, 3]),
        _pack(None),
        _pack({1: 2}),
        msgpack.packb(msgpack.ExtType(5, b"x")),
        b"\x91" * 5000,  # deeply nested arrays, over the size limit
        b"\x91" * 1000 + b"\xc0",  # deeply nested arrays, within it
        made.data + bytes(MAX_BUNDLE_BYTES),
        "not bytes",
    ]
    for data in cases:
        assert rejected(made, data).proof == "bundle", data
    # The message says what is wrong in words, not a Python exception's name.
    words = {
        b"\xc1": "not valid msgpack: a byte that starts no msgpack object",
        b"\x92\x01": "not valid msgpack: Unpack failed: incomplete input",
        b"\x91" * 2040 + b"\xc0": "not valid msgpack: nested too deeply",
        b"\xa2\xff\xfe": "not valid msgpack: a string that is not UTF-8",
    }
    for data, message in words.items():
        assert str(rejected(made, data)) == f"bundle: {message}"


def test_decode_of_valid_shape_keeps_policy_checks_for_the_proofs(made: Made) -> None:
    """k=50 with a 400-byte proof decodes; the checks after decoding refuse it by name."""
    s = made.bundle.space
    big = replace(made.bundle, space=SpaceProof(s.salt, s.plot_id, 50, s.index, bytes(400)))
    assert decode_bundle(encode_bundle(big)).space.k == 50
    assert rejected(made, encode_bundle(big)).proof == "stake"  # not what the owner signed
    err = rejected(made, made.resign(redo_work(big)))  # what an evil owner could sign
    assert str(err) == "space: proof does not verify for this plot, k=50 and challenge " + str(
        s.index
    )


def test_precomputed_discriminants_are_used_and_forgotten_with_their_epoch(made: Made) -> None:
    from trustchain.consensus.proofs.vdf import discriminant

    account = made.bundle.account
    cache = EpochCache()
    # A discriminant of another group, stored for this account: the check must use it, and fail.
    cache.add_discriminant(made.beacon, account, EPOCH, discriminant(bytes(32), account))
    err = rejected(made, made.data, verifier=BundleVerifier(CHAIN, TEST_POLICY, cache=cache))
    assert err.proof == "time"
    cache = EpochCache()
    cache.add_discriminant(made.beacon, account, EPOCH, discriminant(made.beacon, account))
    assert check(made, made.data, verifier=BundleVerifier(CHAIN, TEST_POLICY, cache=cache))
    # A stale (here: bogus) entry is dropped two epochs on, and recomputed if asked for.
    bogus = discriminant(bytes(32), account)
    cache = EpochCache()
    cache.add_discriminant(made.beacon, account, EPOCH, bogus)
    cache.advance(EPOCH + 1)
    assert cache.discriminant(made.beacon, account, EPOCH) == bogus
    cache.advance(EPOCH + 2)
    assert cache.discriminant(made.beacon, account, EPOCH) == discriminant(made.beacon, account)
