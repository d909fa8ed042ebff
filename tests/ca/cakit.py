"""Helpers for the CA tests (tests/ca/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from trustchain.node.ca import hsm


@dataclass(frozen=True)
class Token:
    settings: hsm.Pkcs11Settings
    so_pin: str


async def make_softhsm_token(root: Path, label: str) -> Token:
    """A fresh SoftHSM2 token directory with one initialised token (no keys)."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    hsm.write_softhsm_conf(conf, root / "tokens")
    pin_file = root / "pin"
    hsm.write_pin_file(pin_file, hsm.new_pin())
    settings = hsm.softhsm_settings(conf, label, pin_file)
    so_pin = hsm.new_pin()
    await hsm.init_softhsm_token(settings, so_pin)
    return Token(settings, so_pin)


def require_softhsm() -> None:
    if not hsm.SOFTHSM2_MODULE.exists():
        pytest.fail(
            f"{hsm.SOFTHSM2_MODULE} is missing: run infra/scripts/ensure-debs (installs softhsm2)"
        )
