"""The systemd units pass `systemd-analyze verify` and carry the promised hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "infra" / "systemd"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
TRUSTCHAIN = Path(sys.executable).parent / "trustchain"

pytestmark = pytest.mark.skipif(
    not Path(ANALYZE).exists(), reason="systemd-analyze missing: run infra/scripts/ensure-debs"
)


def _install(tmp_path: Path, unit: str, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart is this venv's trustchain (verify checks it exists)."""
    body = (UNITS / unit).read_text() if text is None else text
    body = body.replace("/usr/local/bin/trustchain", str(TRUSTCHAIN))
    path = tmp_path / unit
    path.write_text(body)
    return path


def _verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=paths[0].parent,
    )


def _service(unit: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_verify_passes_on_both_units(tmp_path: Path) -> None:
    single = _install(tmp_path, "trustchain.service")
    template = _install(tmp_path, "trustchain@.service")
    instance = tmp_path / "trustchain@v1.service"
    instance.symlink_to(template.name)
    result = _verify(single, instance)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    text = (UNITS / "trustchain.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    result = _verify(_install(tmp_path, "trustchain.service", text))
    assert "Unknown key 'WatchdogSecs'" in result.stderr


@pytest.mark.parametrize("unit", ["trustchain.service", "trustchain@.service"])
def test_hardening_settings(unit: str) -> None:
    s = _service(unit)
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert s["WatchdogSec"] == ["30s"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["RestrictAddressFamilies"] == ["AF_INET6 AF_UNIX AF_NETLINK"]
    assert "ReadWritePaths" not in s  # the state directory is the only writable path
    name = "trustchain/%i" if "@" in unit else "trustchain"
    assert s["StateDirectory"] == [name]
    config = "/etc/trustchain/%i/node.toml" if "@" in unit else "/etc/trustchain/node.toml"
    assert s["ExecStart"] == [f"/usr/local/bin/trustchain node run --config {config}"]


@pytest.mark.parametrize("unit", ["trustchain.service", "trustchain@v1.service"])
def test_exposure_is_low(tmp_path: Path, unit: str) -> None:
    _install(tmp_path, "trustchain.service")
    _install(tmp_path, "trustchain@.service")
    if "@" in unit:
        (tmp_path / unit).symlink_to("trustchain@.service")
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
