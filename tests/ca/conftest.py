"""Fixtures for the CA tests: SoftHSM2 tokens under a temporary directory.

Token and key generation happen once per session (RSA-4096 in SoftHSM takes
seconds); the tests then sign through the process's one PKCS#11 worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cakit import Ceremony, Token, make_softhsm_token, require_softhsm, validators_toml

from trustchain.node.ca import hsm
from trustchain.node.cli import main


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Token:
    """A token with an ECDSA P-384 key "int" and an ECDSA P-256 key "log"."""
    require_softhsm()

    async def setup() -> Token:
        tok = await make_softhsm_token(tmp_path_factory.mktemp("hsm"), "tc-test")
        await hsm.generate_key(tok.settings, "int", "p384")
        await hsm.generate_key(tok.settings, "log", "p256")
        return tok

    return trio.run(setup)


@pytest.fixture(scope="session")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> Ceremony:
    """`trustchain ca init` once per session: RSA-4096 root and four validators on SoftHSM2."""
    require_softhsm()
    base = tmp_path_factory.mktemp("ceremony")
    plain = base / "genesis-plain.toml"
    plain.write_text(validators_toml({"v1": 1, "v2": 1, "v3": 1, "v4": 1}))
    directory = base / "ca"
    status = main(
        [
            "ca",
            "init",
            "--dir",
            str(directory),
            "--validators",
            "v1,v2,v3,v4",
            "--zones",
            "trust.example,other.example",
            "--genesis",
            str(plain),
        ]
    )
    assert status == 0
    return Ceremony(directory, directory / "genesis.toml")
