"""`trustchain account new`, `trustchain proof make|check` and `trustchain bench proofs`.

`proof plot` itself runs once per session in the fixture (conftest.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import stat
from pathlib import Path

import pytest
from proofs_support import TEST_POLICY, PlotEnv

from trustchain.consensus.proofs.codec import decode_bundle
from trustchain.consensus.proofs.policy import policy_toml
from trustchain.consensus.proofs.vdf import verify_time
from trustchain.node.cli import main
from trustchain.node.cli_proofs import prove_time


def _genesis(folder: Path, plot_env: PlotEnv, *, bonded: int = 1000) -> Path:
    owner = plot_env.owner
    validator_key = base64.b64encode(secrets.token_bytes(32)).decode()
    path = folder / f"genesis-{bonded}.toml"
    path.write_text(
        'chain_id = "cli-test"\n\n'
        f"{policy_toml(TEST_POLICY)}\n"
        "[[validators]]\n"
        'name = "v1"\naddress = "[::1]:7001"\n'
        f'public_key = "{validator_key}"\n\n'
        "[[accounts]]\n"
        f'id = "{owner.id.hex()}"\n'
        f'public_key = "{base64.b64encode(owner.public_key).decode()}"\n'
        f"bonded = {bonded}\n"
    )
    return path


@pytest.fixture(scope="module")
def bundle_file(plot_env: PlotEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cli")
    genesis = _genesis(folder, plot_env)
    beacon, request = secrets.token_hex(32), secrets.token_hex(32)
    out = folder / "req.bundle"
    status = main(
        [
            "proof",
            "make",
            "--genesis",
            str(genesis),
            "--account",
            str(plot_env.owner.key_path),
            "--plot",
            str(plot_env.plot_path),
            "--beacon",
            beacon,
            "--request",
            request,
            "--epoch",
            "7",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    return {
        "genesis": str(genesis),
        "beacon": beacon,
        "request": request,
        "bundle": str(out),
        "folder": str(folder),
    }


def _check(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], *extra: str, **override: str
) -> tuple[int, dict[str, object]]:
    args = {**files, **override}
    status = main(
        [
            "proof",
            "check",
            "--genesis",
            args["genesis"],
            "--beacon",
            args["beacon"],
            "--request",
            args["request"],
            *extra,
            args["bundle"],
        ]
    )
    out = capsys.readouterr().out
    return status, json.loads(out)


def test_account_new_prints_the_id_and_writes_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "a.key"
    assert main(["account", "new", "--out", str(key), "--bonded", "77"]) == 0
    captured = capsys.readouterr()
    account = captured.out.strip()
    assert len(bytes.fromhex(account)) == 20
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f'id = "{account}"' in captured.err and "bonded = 77" in captured.err
    assert main(["account", "new", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_proof_make_then_check_accepts(
    bundle_file: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(capsys, bundle_file) == (0, {"ok": True})
    bundle = decode_bundle(Path(bundle_file["bundle"]).read_bytes())
    assert bundle.epoch == 7 and bundle.time.iterations == TEST_POLICY.vdf_iterations
    # Accepted in the next epoch too, not after.
    assert _check(capsys, bundle_file, "--epoch", "8")[0] == 0
    status, verdict = _check(capsys, bundle_file, "--epoch", "9")
    assert (status, verdict["ok"], verdict["proof"]) == (1, False, "epoch")


def test_proof_check_rejects_with_a_json_reason(
    bundle_file: dict[str, str], plot_env: PlotEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    status, verdict = _check(capsys, bundle_file, request=secrets.token_hex(32))
    assert (status, verdict) == (
        1,
        {
            "ok": False,
            "proof": "request",
            "reason": "bundle was made for another certificate request",
        },
    )
    # Another beacon: the signature still holds, the space proof does not.
    status, verdict = _check(capsys, bundle_file, beacon=secrets.token_hex(32))
    assert (status, verdict["proof"]) == (1, "space")
    # Not enough stake in this genesis.
    poor = _genesis(Path(bundle_file["folder"]), plot_env, bonded=TEST_POLICY.min_stake - 1)
    status, verdict = _check(capsys, bundle_file, genesis=str(poor))
    assert (status, verdict["proof"]) == (1, "stake")
    # A tampered file.
    tampered = Path(bundle_file["folder"]) / "tampered.bundle"
    data = bytearray(Path(bundle_file["bundle"]).read_bytes())
    data[-1] ^= 0x40
    tampered.write_bytes(bytes(data))
    status, verdict = _check(capsys, bundle_file, bundle=str(tampered))
    assert (status, verdict["proof"]) == (1, "stake")
    tampered.write_bytes(b"not msgpack at all")
    status, verdict = _check(capsys, bundle_file, bundle=str(tampered))
    assert (status, verdict["proof"]) == (1, "bundle")


def test_proof_commands_report_user_errors(
    bundle_file: dict[str, str], plot_env: PlotEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Path(bundle_file["folder"])
    base = ["proof", "check", "--genesis", bundle_file["genesis"]]
    assert main([*base, "--beacon", "xyz", "--request", bundle_file["request"], "b"]) == 2
    assert "--beacon: expected 64 hex digits" in capsys.readouterr().err
    args = ["--beacon", bundle_file["beacon"], "--request", bundle_file["request"]]
    assert main([*base, *args, str(folder / "missing.bundle")]) == 2
    assert "bundle not found" in capsys.readouterr().err
    make = [
        "proof",
        "make",
        "--genesis",
        bundle_file["genesis"],
        "--plot",
        str(plot_env.plot_path),
        *args,
        "--out",
        str(folder / "x.bundle"),
    ]
    assert main([*make, "--account", str(plot_env.other.key_path)]) == 2
    assert "made for another account" in capsys.readouterr().err
    assert main([*make, "--account", str(folder / "nokey")]) == 2
    assert "account key not found" in capsys.readouterr().err
    exists = ["--out", bundle_file["bundle"], "--account", str(plot_env.owner.key_path)]
    assert main([*make[:-2], *exists]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    plot = ["proof", "plot", "--account", str(plot_env.owner.key_path), "--k", "18"]
    assert main([*plot, "--out", str(plot_env.plot_path)]) == 2
    assert "refusing to overwrite a plot" in capsys.readouterr().err


def test_proof_make_shows_progress(
    bundle_file: dict[str, str], plot_env: PlotEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(bundle_file["folder"]) / "progress.bundle"
    args = ["--beacon", bundle_file["beacon"], "--request", bundle_file["request"]]
    status = main(
        [
            "proof",
            "make",
            "--genesis",
            bundle_file["genesis"],
            "--account",
            str(plot_env.owner.key_path),
            "--plot",
            str(plot_env.plot_path),
            *args,
            "--out",
            str(out),
        ]
    )
    assert status == 0
    err = capsys.readouterr().err
    assert "space: plot k=18 answered challenge" in err
    assert f"time: {TEST_POLICY.vdf_iterations} VDF squarings: done in" in err
    assert f"work: {TEST_POLICY.work_bits} bits: done in" in err
    assert f"wrote {out}" in err


def test_vdf_progress_is_an_estimate_capped_until_done() -> None:
    seen: list[tuple[float, str]] = []
    beacon, account = secrets.token_bytes(32), secrets.token_bytes(20)
    proof = prove_time(beacon, account, 120_000, on_progress=lambda f, d: seen.append((f, d)))
    verify_time(proof, beacon, account)
    assert seen and all(0 <= f <= 0.99 for f, _ in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert "squarings/s" in seen[-1][1]


@pytest.mark.slow
def test_bench_proofs_prints_every_figure(
    plot_env: PlotEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs the benchmark in a small configuration; asserts the figures exist, not their size."""
    status = main(
        [
            "bench",
            "proofs",
            "--runs",
            "10",
            "--beacons",
            "2",
            "--vdf-iterations",
            "1000",
            "--plot",
            str(plot_env.plot_path),
            "--account",
            str(plot_env.owner.key_path),
            "--json",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    figures = json.loads(out[out.index("{") :])
    assert set(figures["verify_us"]) == {
        "decode",
        "stake",
        "work",
        "space",
        "time",
        "time_discriminant",
        "time_wesolowski",
        "time_wesolowski_default_iterations",
        "bundle_warm",
        "bundle_cold",
        "bundle_cold_precomputed",
    }
    assert all(v > 0 for v in figures["verify_us"].values())
    assert figures["client_plot_k18_s"] is None and figures["client_vdf_s"] > 0
