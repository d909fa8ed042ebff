"""`trustchain.dns` is a namespace portion that never hides dnspython (DESIGN.md section 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IMPORTS = "import dns.message, dns.rdatatype, trustchain.dns, trustchain.node.cli\n"
PROBE = (
    IMPORTS
    + "assert 'site-packages' in dns.message.__file__, dns.message.__file__\n"
    + "assert dns.message.make_query('example.', 'AAAA').question\n"
)


def test_no_init_in_dns_folder() -> None:
    assert not (REPO_ROOT / "dns" / "__init__.py").exists()


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
def test_python_c_imports_both(tmp_path: Path, cwd: str) -> None:
    where = REPO_ROOT if cwd == "root" else tmp_path
    subprocess.run([sys.executable, "-c", PROBE], cwd=where, check=True)


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
@pytest.mark.parametrize("runner", ["pytest", "python -m pytest"])
def test_pytest_imports_both(tmp_path: Path, cwd: str, runner: str) -> None:
    test_file = tmp_path / "probe" / "test_probe.py"
    test_file.parent.mkdir()
    test_file.write_text("def test_probe():\n" + textwrap.indent(PROBE, "    "))
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "pytest")] if runner == "pytest" else [sys.executable, "-m", "pytest"]
    command += ["-q", "-p", "no:cacheprovider", "--rootdir", str(test_file.parent), str(test_file)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        command,
        cwd=REPO_ROOT if cwd == "root" else tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
