"""Fixtures for infra/ tests: a moto server process on [::1] and a CloudFormation YAML loader."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "infra" / "cloudformation"
UNITS = REPO / "infra" / "systemd"
SERVER = Path(__file__).resolve().parent / "moto_cfn_server.py"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short intrinsic tags (!Ref, !Sub, !GetAtt, ...)."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(name: str) -> dict[str, Any]:
    """A template of infra/cloudformation parsed to plain data."""
    data: dict[str, Any] = yaml.load((TEMPLATES / f"{name}.yaml").read_text(), _CfnLoader)
    return data


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server (with CloudFormation completed by moto_cfn_server.py) on [::1]."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"moto server did not start: {line!r}")
    try:
        yield f"http://[::1]:{int(line.split()[1])}"
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Client = Callable[..., Any]


@pytest.fixture(scope="session")
def aws(moto_endpoint: str) -> Client:
    """aws("s3", "us-east-1") -> a boto3 client for the moto server."""

    def make(service: str, region: str = "us-west-2") -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    return make


@pytest.fixture(scope="session")
def cfn_template() -> Callable[[str], dict[str, Any]]:
    """cfn_template("network") -> infra/cloudformation/network.yaml parsed."""
    return load_template
