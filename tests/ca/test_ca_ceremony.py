"""`trustchain ca init` / rotate / the one-by-one steps / issue, revoke, crl; `cert verify`."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import stat
from pathlib import Path

import pytest
import trio
from cakit import Ceremony, make_csr, make_softhsm_token
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trustchain.node.ca import ceremony as cer
from trustchain.node.ca import hsm
from trustchain.node.ca.genesis import load_ca_genesis
from trustchain.node.cli import main
from trustchain.node.config import ConfigError


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_root_and_intermediates_follow_the_profiles(ceremony: Ceremony) -> None:
    root = _cert(ceremony.dir / "root.pem")
    key = root.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    assert root.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.12"  # sha384WithRSA
    root.verify_directly_issued_by(root)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for name in ("v1", "v2", "v3", "v4"):
        inter = _cert(ceremony.dir / name / "intermediate.pem")
        inter.verify_directly_issued_by(root)
        ikey = inter.public_key()
        assert isinstance(ikey, ec.EllipticCurvePublicKey) and ikey.curve.name == "secp384r1"
        bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        nc = inter.extensions.get_extension_for_class(x509.NameConstraints)
        assert nc.critical
        permitted = [g.value for g in nc.value.permitted_subtrees or []]
        assert permitted == ["trust.example", "other.example"]
        assert len(nc.value.excluded_subtrees or []) == 2  # every IPv4 and IPv6 address
        aki = inter.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski
        assert inter.not_valid_after_utc <= root.not_valid_after_utc
        log_key = serialization.load_pem_public_key(
            (ceremony.dir / name / "ct-log-key.pub.pem").read_bytes()
        )
        assert isinstance(log_key, ec.EllipticCurvePublicKey) and log_key.curve.name == "secp256r1"


def test_pins_are_private_and_settings_hold_none(ceremony: Ceremony) -> None:
    for folder in ("root", "v1", "v4"):
        for pin in ("pin", "so-pin"):
            mode = (ceremony.dir / folder / pin).stat().st_mode
            assert stat.S_IMODE(mode) == 0o600
        text = (ceremony.dir / folder / "hsm.toml").read_text()
        secret = (ceremony.dir / folder / "pin").read_text().strip()
        assert secret not in text
    config = cer.load_hsm_config(ceremony.dir / "v1" / "hsm.toml")
    assert config.label("intermediate") == "intermediate-1"
    assert config.label("ct_log") == "ct-log"
    assert config.intermediate_certificate == ceremony.dir / "v1" / "intermediate.pem"


async def test_tokens_hold_the_keys_the_files_describe(ceremony: Ceremony) -> None:
    config = cer.load_hsm_config(ceremony.dir / "v2" / "hsm.toml")
    assert await hsm.list_keys(config.settings) == ["ct-log", "intermediate-1"]
    log = await hsm.Pkcs11Signer.open(config.settings, "ct-log")
    exported = serialization.load_pem_public_key(
        (ceremony.dir / "v2" / "ct-log-key.pub.pem").read_bytes()
    )
    assert log.public_key() == exported
    signer, issuer = await cer.open_issuer(config)
    assert signer.public_key() == issuer.public_key()


def test_genesis_section(ceremony: Ceremony) -> None:
    genesis = load_ca_genesis(ceremony.genesis)
    root_der = (_cert(ceremony.dir / "root.pem")).public_bytes(serialization.Encoding.DER)
    assert genesis.root_sha256 == hashlib.sha256(root_der).digest()
    assert genesis.policy.zones == ("trust.example", "other.example")
    for v in genesis.validators:
        inter = _cert(ceremony.dir / v.name / "intermediate.pem")
        assert [c.cert for c in v.intermediates] == [inter]
    text = ceremony.genesis.read_text()
    assert text.count("[[validators]]") == 4 and text.count("[ca]") == 1


def test_a_ceremony_never_overwrites_keys(
    ceremony: Ceremony, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["ca", "init", "--dir", str(ceremony.dir), "--validators", "v1"])
    assert status == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["ca", "init", "--dir", "x", "--validators", "v 1"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--root-days", "0"], "--root-days: 1..9132"),
        (["--root-days", "99999999"], "--root-days: 1..9132"),
        (["--intermediate-days", "0"], "--intermediate-days: 1..3650"),
        (["--root-days", "100", "--intermediate-days", "365"], "cannot outlive its root"),
    ],
)
def test_ceremony_arguments_are_checked_before_any_key_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    target = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(target), "--validators", "v1", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not target.exists()
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["ca", "init", "--dir", str(afile), "--validators", "v1"]) == 2
    assert "is a file" in capsys.readouterr().err


def _issue(ceremony: Ceremony, tmp_path: Path, name: str, *extra: str) -> Path:
    csr, _ = make_csr([name])
    (tmp_path / f"{name}.csr").write_bytes(csr)
    out = tmp_path / f"{name}.pem"
    args = ["ca", "issue", "--dir", str(ceremony.dir), "--csr", str(tmp_path / f"{name}.csr")]
    assert main([*args, "--out", str(out), "--validator", "v1", *extra]) == 0
    return out


def _verify(ceremony: Ceremony, cert: Path, *extra: str) -> int:
    return main(
        [
            "cert",
            "verify",
            str(cert),
            "--genesis",
            str(ceremony.genesis),
            "--root",
            str(ceremony.dir / "root.pem"),
            *extra,
        ]
    )


def test_issue_on_hsm_keys_and_verify(
    ceremony: Ceremony, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _issue(ceremony, tmp_path, "www.trust.example")
    capsys.readouterr()
    assert _verify(ceremony, cert) == 0
    out = capsys.readouterr().out
    assert "ok    quorum" in out and "4 of 4 voting power" in out and "verified offline" in out

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=120)).isoformat()
    assert _verify(ceremony, cert, "--at", later) == 1
    out = capsys.readouterr().out
    assert "FAIL  validity" in out and "verification FAILED at validity" in out


def test_three_of_four_scts_suffice_two_do_not(
    ceremony: Ceremony, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _issue(ceremony, tmp_path, "a.trust.example", "--signers", "v2,v3,v4")
    assert _verify(ceremony, cert) == 0
    capsys.readouterr()
    csr, _ = make_csr(["b.trust.example"])
    (tmp_path / "b.csr").write_bytes(csr)
    args = ["ca", "issue", "--dir", str(ceremony.dir), "--validator", "v1"]
    args += ["--csr", str(tmp_path / "b.csr"), "--out", str(tmp_path / "b.pem")]
    assert main([*args, "--signers", "v1,v2"]) == 2
    assert "2 of 4 voting power" in capsys.readouterr().err


def test_wrong_root_is_refused(
    ceremony: Ceremony, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _issue(ceremony, tmp_path, "c.trust.example")
    other = tmp_path / "other-root.pem"
    # A root made by the one-by-one step with the same key but PSS: still not the pinned root.
    assert (
        main(
            [
                "ca",
                "root-cert",
                "--hsm",
                str(ceremony.dir / "root" / "hsm.toml"),
                "--out",
                str(other),
                "--scheme",
                "rsa-pss-sha384",
                "--cn",
                "Another Root",
            ]
        )
        == 0
    )
    pss = _cert(other)
    assert pss.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
    key = pss.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    params = pss.signature_algorithm_parameters
    assert isinstance(params, padding.PSS)
    pss.verify_directly_issued_by(pss)
    capsys.readouterr()
    status = main(
        ["cert", "verify", str(cert), "--genesis", str(ceremony.genesis), "--root", str(other)]
    )
    assert status == 1
    assert "FAIL  root" in capsys.readouterr().out
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for args, named in (
        ((str(text), "--root", str(other)), str(text)),
        ((str(cert), "--root", str(text)), f"--root {text}"),
    ):
        status = main(["cert", "verify", args[0], "--genesis", str(ceremony.genesis), *args[1:]])
        err = capsys.readouterr().err
        assert status == 2
        assert f"{named}: not a certificate: neither PEM" in err and "Traceback" not in err


def test_revoke_and_crl(
    ceremony: Ceremony, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _issue(ceremony, tmp_path, "revoked.trust.example")
    good = _issue(ceremony, tmp_path, "fine.trust.example")
    hsm_toml = str(ceremony.dir / "v1" / "hsm.toml")
    log = tmp_path / "revocations.jsonl"
    crls = tmp_path / "crl"
    revoke = ["ca", "revoke", "--hsm", hsm_toml, "--log", str(log), "--cert", str(cert)]
    assert main([*revoke, "--reason", "keyCompromise"]) == 0
    assert main([*revoke, "--reason", "superseded"]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert (
        main(
            ["ca", "revoke", "--hsm", hsm_toml, "--cert", str(good), "--reason", "certificateHold"]
        )
        == 2
    )
    crl_args = ["ca", "crl", "--hsm", hsm_toml, "--log", str(log), "--out-dir", str(crls)]
    typo = ["ca", "crl", "--hsm", hsm_toml, "--log", f"{log}x", "--out-dir", str(crls)]
    assert main(typo) == 2  # not an empty CRL that un-revokes the certificate
    assert "no such file" in capsys.readouterr().err
    assert not list(crls.glob("*.crl"))
    assert main(crl_args) == 0
    files = sorted(crls.glob("*.crl"))
    assert len(files) == 1
    crl = x509.load_der_x509_crl(files[0].read_bytes())
    inter = _cert(ceremony.dir / "v1" / "intermediate.pem")
    assert crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert main(crl_args) == 0
    crl = x509.load_der_x509_crl(files[0].read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    capsys.readouterr()
    assert _verify(ceremony, cert, "--crl", str(files[0])) == 1
    out = capsys.readouterr().out
    assert "FAIL  revocation" in out and "keyCompromise" in out
    assert _verify(ceremony, good, "--crl", str(files[0])) == 0


async def test_one_by_one_steps_for_a_real_hsm(ceremony: Ceremony, tmp_path: Path) -> None:
    # A token made by "the vendor's tools", then the steps an operator runs.
    token = await make_softhsm_token(tmp_path / "vendor", "tc-vendor")
    settings = token.settings
    assert settings.pin_file is not None
    conf = dict(settings.env)["SOFTHSM2_CONF"]
    hsm_toml = tmp_path / "vendor" / "hsm.toml"
    cer.write_hsm_config(
        hsm_toml, module=settings.module, token_label="tc-vendor", softhsm2_conf=conf, keys={}
    )

    def run(*args: str) -> int:
        return main(list(args))

    assert (
        await trio.to_thread.run_sync(
            run, "ca", "keygen", "--hsm", str(hsm_toml), "--label", "int-7", "--kind", "p384"
        )
        == 0
    )
    csr = tmp_path / "int-7.csr"
    assert (
        await trio.to_thread.run_sync(
            run,
            "ca",
            "csr",
            "--hsm",
            str(hsm_toml),
            "--label",
            "int-7",
            "--cn",
            "Vendor Intermediate",
            "--out",
            str(csr),
        )
        == 0
    )
    out = tmp_path / "int-7.pem"
    args = ["ca", "certify", "--hsm", str(ceremony.dir / "root" / "hsm.toml")]
    args += ["--root", str(ceremony.dir / "root.pem"), "--csr", str(csr)]
    args += ["--zones", "trust.example", "--days", "30", "--out", str(out)]
    assert await trio.to_thread.run_sync(run, *args) == 0
    inter = _cert(out)
    inter.verify_directly_issued_by(_cert(ceremony.dir / "root.pem"))
    assert inter.subject.rfc4514_string() == "CN=Vendor Intermediate,O=TrustChain"
    pub = tmp_path / "int-7.pub.pem"
    assert (
        await trio.to_thread.run_sync(
            run, "ca", "pubkey", "--hsm", str(hsm_toml), "--label", "int-7", "--out", str(pub)
        )
        == 0
    )
    assert serialization.load_pem_public_key(pub.read_bytes()) == inter.public_key()
    # The root refuses a CSR for a key type an intermediate may not have.
    bad, _ = make_csr(["x.trust.example"])
    (tmp_path / "bad.csr").write_bytes(bad)
    args[args.index(str(csr))] = str(tmp_path / "bad.csr")
    args[-1] = str(tmp_path / "bad.pem")
    assert await trio.to_thread.run_sync(run, *args) == 2


async def test_rotation_switches_issuing_and_keeps_the_old_intermediate(
    ceremony: Ceremony, tmp_path: Path
) -> None:
    # Rotate in a copy: the validator folders (tokens included) move with it.
    copy = tmp_path / "ca"
    await trio.to_thread.run_sync(shutil.copytree, ceremony.dir, copy)
    genesis = copy / "genesis.toml"
    before = cer.load_hsm_config(copy / "v1" / "hsm.toml")
    assert dict(before.settings.env)["SOFTHSM2_CONF"] == str(copy / "v1" / "softhsm2.conf")
    assert str(copy / "v1" / "tokens") in (copy / "v1" / "softhsm2.conf").read_text()
    old_cert = _cert(copy / "v1" / "intermediate.pem")

    def run(*args: str) -> int:
        return main(list(args))

    old_leaf = tmp_path / "old.pem"
    csr, _ = make_csr(["old.trust.example"])
    (tmp_path / "old.csr").write_bytes(csr)
    issue = ["ca", "issue", "--dir", str(copy), "--validator", "v1"]
    assert (
        await trio.to_thread.run_sync(
            run, *issue, "--csr", str(tmp_path / "old.csr"), "--out", str(old_leaf)
        )
        == 0
    )

    assert (
        await trio.to_thread.run_sync(
            run, "ca", "rotate", "--dir", str(copy), "--validator", "v1", "--genesis", str(genesis)
        )
        == 0
    )
    config = cer.load_hsm_config(copy / "v1" / "hsm.toml")
    assert config.label("intermediate") == "intermediate-2"
    assert await hsm.list_keys(config.settings) == ["ct-log", "intermediate-1", "intermediate-2"]
    new_cert = _cert(copy / "v1" / "intermediate.pem")
    assert new_cert.public_key() != old_cert.public_key()
    g = load_ca_genesis(genesis)
    v1 = next(v for v in g.validators if v.name == "v1")
    assert [c.cert for c in v1.intermediates] == [old_cert, new_cert]
    text = genesis.read_text()
    assert text.count("[ca]") == 1 and text.count("[[validators]]") == 4
    # Rebuilding the section later keeps both while neither has expired.
    assert (
        await trio.to_thread.run_sync(
            run, "ca", "genesis", "--dir", str(copy), "--genesis", str(genesis)
        )
        == 0
    )
    assert load_ca_genesis(genesis) == g

    new_leaf = tmp_path / "new.pem"
    assert (
        await trio.to_thread.run_sync(
            run, *issue, "--csr", str(tmp_path / "old.csr"), "--out", str(new_leaf)
        )
        == 0
    )
    aki = _cert(new_leaf).extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = new_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    root = str(copy / "root.pem")
    for leaf in (old_leaf, new_leaf):
        # Only the leaf: the issuer is found among the genesis intermediates.
        only_leaf = tmp_path / f"only-{leaf.name}"
        only_leaf.write_bytes(
            leaf.read_bytes().split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n"
        )
        status = await trio.to_thread.run_sync(
            run, "cert", "verify", str(only_leaf), "--genesis", str(genesis), "--root", root
        )
        assert status == 0
    # The original ceremony was not touched.
    assert (
        cer.load_hsm_config(ceremony.dir / "v1" / "hsm.toml").label("intermediate")
        == "intermediate-1"
    )


def test_hsm_settings_files_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "hsm.toml"
    bad.write_text('[pkcs11]\nmodule = "/x.so"\ntoken_label = "t"\npin = "1234"\n')
    with pytest.raises(ConfigError, match="PINs are never stored"):
        cer.load_hsm_config(bad)
    bad.write_text(
        '[pkcs11]\nmodule = "/x.so"\ntoken_label = "t"\npin_env = "P"\n[keys]\nfoo = "x"\n'
    )
    with pytest.raises(ConfigError, match=r"unknown key 'keys\.foo'"):
        cer.load_hsm_config(bad)
