"""The PKCS#11 Signer on SoftHSM2: signing, one worker thread, and each failure."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import pytest
import trio
from cakit import Token, make_softhsm_token
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass

from trustchain.ct.sct import EntryType, LogEntry, issue_sct, issue_scts, verify_sct
from trustchain.ct.signer import SoftwareSigner, sign_all, verify_signature
from trustchain.node.ca import hsm
from trustchain.node.ca.schemes import SignatureScheme


async def test_p384_and_p256_signatures_verify(token: Token) -> None:
    p384 = await hsm.Pkcs11Signer.open(token.settings, "int")
    p256 = await hsm.Pkcs11Signer.open(token.settings, "log")
    assert p384.scheme is SignatureScheme.ECDSA_SHA384
    assert isinstance(p384.public_key(), ec.EllipticCurvePublicKey)
    assert p384.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    for signer in (p384, p256):
        sig = await signer.sign(b"to be signed")
        # DER Ecdsa-Sig-Value, checked by the same code the CT log uses.
        assert verify_signature(signer.public_key(), sig, b"to be signed")
        assert not verify_signature(signer.public_key(), sig, b"something else")
    # The CT code path: an RFC 6962 SCT signed in the HSM verifies.
    entry = LogEntry(EntryType.X509, b"\x30\x03\x02\x01\x01")
    sct = await issue_sct(p256, entry, 1_700_000_000_000, b"")
    verify_sct(sct, entry, p256.public_key())


async def test_a_block_of_scts_is_one_hsm_job_and_each_sct_verifies(token: Token) -> None:
    signer = await hsm.Pkcs11Signer.open(token.settings, "log")
    entries = [LogEntry(EntryType.X509, b"\x30\x03\x02\x01" + bytes([i])) for i in range(5)]
    requests = [(e, 1_700_000_000_000 + i, bytes([0, i])) for i, e in enumerate(entries)]
    jobs = sum(hsm.worker().calls_by_thread.values())
    scts = await issue_scts(signer, requests)
    assert sum(hsm.worker().calls_by_thread.values()) == jobs + 1
    for (entry, timestamp, ext), sct in zip(requests, scts, strict=True):
        assert (sct.timestamp, sct.extensions) == (timestamp, ext)
        verify_sct(sct, entry, signer.public_key())
    # Each signature is bound to its own entry: swapped, none verifies.
    with pytest.raises(ValueError, match="does not verify"):
        verify_sct(scts[0], entries[1], signer.public_key())
    assert await sign_all(signer, []) == []


async def test_sign_all_without_a_batch_call_signs_in_turn() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signatures = await sign_all(SoftwareSigner(key), [b"a", b"b"])
    assert verify_signature(key.public_key(), signatures[0], b"a")
    assert verify_signature(key.public_key(), signatures[1], b"b")
    assert not verify_signature(key.public_key(), signatures[0], b"b")


async def test_many_tasks_sign_at_once_through_one_thread(token: Token) -> None:
    signer = await hsm.Pkcs11Signer.open(token.settings, "log")
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        results[i] = await signer.sign(b"message %d" % i)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert len(results) == 200
    for i, sig in results.items():
        assert verify_signature(signer.public_key(), sig, b"message %d" % i)
    threads = set(hsm.worker().calls_by_thread)
    assert len(threads) == 1, "every PKCS#11 call must come from one thread"
    assert threading.get_ident() not in threads


async def test_generated_keys_are_sensitive_and_never_extractable(token: Token) -> None:
    def attrs(state: hsm._WorkerState) -> dict[Attribute, object]:
        key = state.private_key(token.settings, "int")
        return dict(
            key.get_attributes(
                [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE]
            )
        )

    got = await hsm.worker().run(attrs, what="read attributes", timeout=10)
    assert got == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.NEVER_EXTRACTABLE: True,
    }


async def test_key_labels_are_never_reused(token: Token) -> None:
    with pytest.raises(hsm.HsmError, match="already holds an object labelled 'int'"):
        await hsm.generate_key(token.settings, "int", "p384")


async def test_wrong_pin_is_refused_and_never_printed(tmp_path: Path) -> None:
    # A fresh token: PKCS#11 logins are per process and token, so the PIN is
    # checked when the process first logs in.
    tok = await make_softhsm_token(tmp_path, "tc-wrongpin")
    wrong = tmp_path / "wrong-pin"
    hsm.write_pin_file(wrong, "not-the-pin-123")
    settings = dataclasses.replace(tok.settings, pin_file=wrong)
    with pytest.raises(hsm.HsmPinError) as caught:
        await hsm.Pkcs11Signer.open(settings, "int")
    message = str(caught.value)
    assert "refused the PIN" in message and str(wrong) in message
    assert "not-the-pin-123" not in message


async def test_pin_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = await make_softhsm_token(tmp_path, "tc-envpin")
    assert tok.settings.pin_file is not None
    monkeypatch.setenv("TC_TEST_PIN", tok.settings.pin_file.read_text().strip())
    settings = dataclasses.replace(tok.settings, pin_file=None, pin_env="TC_TEST_PIN")
    await hsm.generate_key(settings, "k", "p256")
    signer = await hsm.Pkcs11Signer.open(settings, "k")
    assert verify_signature(signer.public_key(), await signer.sign(b"x"), b"x")

    monkeypatch.delenv("TC_TEST_PIN")
    with pytest.raises(hsm.HsmPinError, match="TC_TEST_PIN is not set"):
        settings.read_pin()


def test_pin_file_must_be_private(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("123456\n")
    pin.chmod(0o644)
    settings = hsm.softhsm_settings(tmp_path / "conf", "t", pin)
    with pytest.raises(hsm.HsmPinError, match="chmod 600"):
        settings.read_pin()
    with pytest.raises(hsm.HsmPinError, match="cannot read PIN file"):
        dataclasses.replace(settings, pin_file=tmp_path / "absent").read_pin()


def test_settings_never_hold_a_pin(tmp_path: Path) -> None:
    table = {"module": "/x.so", "token_label": "t", "pin": "1234"}
    with pytest.raises(hsm.ConfigError, match="PINs are never stored"):
        hsm.parse_pkcs11_table("hsm.toml", table, tmp_path)
    with pytest.raises(hsm.ConfigError, match="exactly one of pin_file and pin_env"):
        hsm.parse_pkcs11_table("hsm.toml", {"module": "/x.so", "token_label": "t"}, tmp_path)
    ok = hsm.parse_pkcs11_table(
        "hsm.toml",
        {"module": "/x.so", "token_label": "t", "pin_file": "pin", "softhsm2_conf": "c.conf"},
        tmp_path,
    )
    assert ok.pin_file == tmp_path / "pin"
    assert dict(ok.env) == {"SOFTHSM2_CONF": str(tmp_path / "c.conf")}


async def test_missing_token_names_the_tokens_present(token: Token) -> None:
    settings = dataclasses.replace(token.settings, token_label="no-such-token")
    with pytest.raises(hsm.HsmTokenNotFoundError) as caught:
        await hsm.Pkcs11Signer.open(settings, "int")
    assert "'no-such-token'" in str(caught.value) and "'tc-test'" in str(caught.value)


async def test_missing_key_names_the_keys_present(token: Token) -> None:
    with pytest.raises(hsm.HsmKeyNotFoundError) as caught:
        await hsm.Pkcs11Signer.open(token.settings, "no-such-key")
    assert "'no-such-key'" in str(caught.value) and "'int'" in str(caught.value)


async def test_missing_module_is_a_clear_error(token: Token, tmp_path: Path) -> None:
    settings = dataclasses.replace(token.settings, module=tmp_path / "libnothing.so")
    with pytest.raises(hsm.HsmModuleError, match="does not exist"):
        await hsm.Pkcs11Signer.open(settings, "int")
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not a shared object")
    with pytest.raises(hsm.HsmModuleError, match="cannot load PKCS#11 module"):
        await hsm.Pkcs11Signer.open(dataclasses.replace(settings, module=bogus), "int")


async def test_lost_session_logs_in_again_and_retries_once(
    token: Token, caplog: pytest.LogCaptureFixture
) -> None:
    signer = await hsm.Pkcs11Signer.open(token.settings, "int")
    assert verify_signature(signer.public_key(), await signer.sign(b"before"), b"before")
    # What an HSM failover does: every session and login of the slot ends.
    await hsm.close_all_sessions(token.settings)
    with caplog.at_level(logging.WARNING, logger="trustchain"):
        sig = await signer.sign(b"after")
    assert verify_signature(signer.public_key(), sig, b"after")
    assert any(r.getMessage() == "hsm.session_lost" for r in caplog.records)


async def test_lost_session_with_a_changed_pin_fails_clearly(
    tmp_path: Path,
) -> None:
    tok = await make_softhsm_token(tmp_path, "tc-pinchange")
    await hsm.generate_key(tok.settings, "k", "p256")
    signer = await hsm.Pkcs11Signer.open(tok.settings, "k")
    await hsm.close_all_sessions(tok.settings)
    assert tok.settings.pin_file is not None
    tok.settings.pin_file.write_text("changed-pin-999\n")
    with pytest.raises(hsm.HsmPinError, match="refused the PIN"):
        await signer.sign(b"x")


async def test_session_lost_twice_gives_up(token: Token) -> None:
    s = token.settings

    def job(state: hsm._WorkerState) -> bytes:
        def op() -> bytes:
            # The session disappears every time, retry included.
            key = state.private_key(s, "int")
            close = hsm._C_CloseAllSessions(state.functions(s).f14)
            close(state.token(s).slot.slot_id)
            return bytes(key.sign(b"\x00" * 48, mechanism=hsm.Mechanism.ECDSA))

        return state.with_session(s, "sign twice", op)

    with pytest.raises(hsm.HsmSessionLostError, match="twice"):
        await hsm.worker().run(job, what="sign twice", timeout=10)
    # The signer recovers once the HSM behaves again.
    signer = await hsm.Pkcs11Signer.open(s, "int")
    assert verify_signature(signer.public_key(), await signer.sign(b"ok"), b"ok")


async def test_hung_hsm_times_out_and_recovers(token: Token) -> None:
    pool = hsm.worker()
    signer = await hsm.Pkcs11Signer.open(dataclasses.replace(token.settings, timeout=0.5), "log")
    release = threading.Event()
    # A call that does not return, as a hung HSM's C_Sign would.
    stuck = pool.submit(lambda state: release.wait(30), "wait for the HSM")
    try:
        with trio.fail_after(5):
            with pytest.raises(hsm.HsmTimeoutError) as caught:
                await signer.sign(b"x")
        message = str(caught.value)
        assert "within 0.5 s" in message and "'wait for the HSM'" in message
    finally:
        release.set()
    await trio.to_thread.run_sync(stuck.result)
    # Once the HSM answers again, signing works; the abandoned call never ran.
    assert verify_signature(signer.public_key(), await signer.sign(b"y"), b"y")


async def test_keys_that_could_leave_the_token_are_refused(tmp_path: Path) -> None:
    tok = await make_softhsm_token(tmp_path, "tc-unsafe")
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def import_key(state: hsm._WorkerState) -> None:
        # An imported, extractable key: exactly what a CA must never use.
        session = state.session(tok.settings).session
        params = bytes.fromhex("06082a8648ce3d030107")
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: hsm.KeyType.EC,
                Attribute.TOKEN: True,
                Attribute.LABEL: "imported",
                Attribute.SIGN: True,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.EC_PARAMS: params,
                Attribute.VALUE: numbers.private_value.to_bytes(32, "big"),
            }
        )
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: hsm.KeyType.EC,
                Attribute.TOKEN: True,
                Attribute.LABEL: "imported",
                Attribute.EC_PARAMS: params,
                Attribute.EC_POINT: b"\x04" + bytes([len(point)]) + point,
            }
        )

    await hsm.worker().run(import_key, what="import", timeout=10)
    with pytest.raises(hsm.HsmKeyUnsafeError, match="never extractable"):
        await hsm.Pkcs11Signer.open(tok.settings, "imported")


async def test_other_pkcs11_errors_name_the_operation(token: Token) -> None:
    def job(state: hsm._WorkerState) -> object:
        # python-pkcs11 refuses a key search without any attribute (ArgumentsBad).
        return state.session(token.settings).session.get_key()

    with pytest.raises(hsm.HsmError, match="the HSM failed to find a key: ArgumentsBad"):
        await hsm.worker().run(job, what="find a key", timeout=10)
