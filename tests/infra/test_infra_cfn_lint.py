"""cfn-lint passes on every CloudFormation template, and fails on a broken one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "infra" / "cloudformation").glob("*.yaml"))
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CFN_LINT), "--regions", "us-west-2", "us-east-1", "--", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cfn_lint_passes_on_every_template() -> None:
    assert len(TEMPLATES) >= 8
    result = _lint(*TEMPLATES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_cfn_lint_rejects_a_wrong_property(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n"
        "  Bucket:\n"
        "    Type: AWS::S3::Bucket\n"
        "    Properties:\n"
        "      Versioning: Enabled\n"
    )
    result = _lint(bad)
    assert result.returncode != 0
    assert "Versioning" in result.stdout
