"""Genesis [policy] and [[accounts]]: defaults, validation, and the node's genesis loader."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.proofs.errors import GenesisSectionError
from trustchain.consensus.proofs.hashing import account_id
from trustchain.consensus.proofs.ledger import raw_public_key
from trustchain.consensus.proofs.policy import (
    MAX_AMOUNT,
    AccountEntry,
    Policy,
    account_entry_toml,
    parse_accounts,
    parse_policy,
    policy_toml,
)
from trustchain.node.config import ConfigError, load_genesis

SRC = "genesis.toml"


def _key() -> tuple[str, str]:
    pk = raw_public_key(Ed25519PrivateKey.generate())
    return account_id(pk).hex(), base64.b64encode(pk).decode()


def _account(**overrides: Any) -> dict[str, Any]:
    aid, pk = _key()
    entry: dict[str, Any] = {"id": aid, "public_key": pk, "bonded": 500}
    entry.update(overrides)
    return entry


def test_policy_defaults_are_the_documented_ones() -> None:
    p = parse_policy(SRC, {})
    assert p == Policy()
    assert (p.min_stake, p.work_bits, p.min_k, p.space_index_limit) == (100, 20, 22, 16)
    assert (p.vdf_iterations, p.epoch_length, p.unbonding_delay) == (1_000_000, 1000, 2000)
    assert p.epoch_of(1999) == 1 and p.epoch_of(2000) == 2 and p.boundary_height(3) == 3000


def test_policy_values_are_read_and_round_trip_through_toml() -> None:
    import tomllib

    p = parse_policy(SRC, {"min_k": 18, "work_bits": 8, "vdf_iterations": 5000})
    assert (p.min_k, p.work_bits, p.vdf_iterations) == (18, 8, 5000)
    assert parse_policy(SRC, tomllib.loads(policy_toml(p))["policy"]) == p


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"work_bits": 0}, "policy.work_bits", "expected an integer in 1..40, got 0"),
        ({"work_bits": 41}, "policy.work_bits", "expected an integer in 1..40, got 41"),
        ({"work_bits": "20"}, "policy.work_bits", "got str '20'"),
        ({"work_bits": True}, "policy.work_bits", "got bool True"),
        ({"work_bits": 20.0}, "policy.work_bits", "got float 20.0"),
        ({"min_k": 17}, "policy.min_k", "expected an integer in 18..50, got 17"),
        ({"min_k": 51}, "policy.min_k", "expected an integer in 18..50, got 51"),
        ({"min_stake": 0}, "policy.min_stake", "got 0"),
        ({"vdf_iterations": 0}, "policy.vdf_iterations", "got 0"),
        ({"epoch_length": 0}, "policy.epoch_length", "got 0"),
        ({"space_index_limit": 0}, "policy.space_index_limit", "got 0"),
        ({"unbonding_delay": 1999}, "policy.unbonding_delay", "at least 2 * epoch_length"),
        ({"epoch_length": 50, "unbonding_delay": 99}, "policy.unbonding_delay", "= 100 blocks"),
        ({"work_bit": 20}, "policy.work_bit", "unknown key (known keys: epoch_length,"),
    ],
)
def test_bad_policy_values_name_the_key(table: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(GenesisSectionError) as info:
        parse_policy(SRC, table)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{SRC}: key '{key}': ")


def test_policy_must_be_a_table() -> None:
    with pytest.raises(GenesisSectionError, match="expected a table"):
        parse_policy(SRC, [1, 2])


def test_accounts_are_parsed_and_checked_against_their_keys() -> None:
    a, b = _account(bonded=10), _account(bonded=0, balance=7)
    parsed = parse_accounts(SRC, [a, b])
    assert [x.account_id.hex() for x in parsed] == [a["id"], b["id"]]
    assert (parsed[0].bonded, parsed[0].balance, parsed[1].balance) == (10, 0, 7)
    assert parsed[0].public_key == base64.b64decode(a["public_key"])
    assert parse_accounts(SRC, []) == ()


@pytest.mark.parametrize(
    ("mutate", "key", "reason"),
    [
        (lambda e: e.update(id="00" * 20), "accounts[0].id", "is not the id of public_key"),
        (lambda e: e.update(id="zz"), "accounts[0].id", "expected an account id"),
        (lambda e: e.update(id="ab" * 21), "accounts[0].id", "40 hex digits, got 42"),
        (lambda e: e.update(id=5), "accounts[0].id", "got int"),
        (lambda e: e.update(public_key="!!"), "accounts[0].public_key", "base64"),
        (
            lambda e: e.update(public_key=base64.b64encode(b"x" * 31).decode()),
            "accounts[0].public_key",
            "32-byte",
        ),
        (lambda e: e.update(bonded=-1), "accounts[0].bonded", "got -1"),
        (lambda e: e.update(bonded=MAX_AMOUNT + 1), "accounts[0].bonded", "expected an integer"),
        (lambda e: e.update(balance="7"), "accounts[0].balance", "got str"),
        (lambda e: e.pop("bonded"), "accounts[0].bonded", "missing required key"),
        (lambda e: e.pop("public_key"), "accounts[0].public_key", "missing required key"),
        (lambda e: e.update(stake=1), "accounts[0].stake", "unknown key"),
    ],
)
def test_bad_accounts_name_the_key(mutate: Any, key: str, reason: str) -> None:
    entry = _account()
    mutate(entry)
    with pytest.raises(GenesisSectionError) as info:
        parse_accounts(SRC, [entry])
    assert (info.value.key, reason in info.value.reason) == (key, True), info.value


def test_duplicate_accounts_and_oversupply_are_refused() -> None:
    a = _account()
    with pytest.raises(GenesisSectionError, match=r"accounts\[1\].id': duplicate of accounts\[0\]"):
        parse_accounts(SRC, [a, dict(a)])
    big = [_account(bonded=MAX_AMOUNT), _account(bonded=1)]
    with pytest.raises(GenesisSectionError, match=r"accounts\[1\].bonded': total supply"):
        parse_accounts(SRC, big)
    with pytest.raises(GenesisSectionError, match="expected \\[\\[accounts\\]\\] tables"):
        parse_accounts(SRC, {"id": "x"})


def test_account_entry_toml_parses_back() -> None:
    import tomllib

    pk = raw_public_key(Ed25519PrivateKey.generate())
    entry = AccountEntry(account_id(pk), pk, bonded=42, balance=3)
    assert parse_accounts(SRC, tomllib.loads(account_entry_toml(entry))["accounts"]) == (entry,)


# --- the node's genesis loader -------------------------------------------------------------

_VALIDATORS = """
chain_id = "tc-test"

[[validators]]
name = "v1"
address = "[::1]:7001"
public_key = "{pk}"
power = 1
"""


def _genesis(tmp_path: Path, extra: str) -> Path:
    _, pk = _key()
    path = tmp_path / "genesis.toml"
    path.write_text(_VALIDATORS.format(pk=pk) + extra)
    return path


def test_genesis_without_the_sections_gets_default_policy_and_no_accounts(tmp_path: Path) -> None:
    genesis = load_genesis(_genesis(tmp_path, ""))
    assert genesis.policy == Policy() and genesis.accounts == ()
    assert [v.name for v in genesis.validators] == ["v1"]


def test_genesis_with_policy_and_accounts(tmp_path: Path) -> None:
    a = _account(bonded=5000)
    extra = (
        "\n[policy]\nmin_k = 18\nwork_bits = 12\n\n"
        f'[[accounts]]\nid = "{a["id"]}"\npublic_key = "{a["public_key"]}"\nbonded = 5000\n'
    )
    genesis = load_genesis(_genesis(tmp_path, extra))
    assert (genesis.policy.min_k, genesis.policy.work_bits) == (18, 12)
    assert genesis.policy.vdf_iterations == Policy().vdf_iterations
    assert [(x.account_id.hex(), x.bonded) for x in genesis.accounts] == [(a["id"], 5000)]


def test_genesis_errors_in_the_sections_are_config_errors_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = _genesis(tmp_path, "\n[policy]\nwork_bits = 99\n")
    with pytest.raises(ConfigError) as info:
        load_genesis(path)
    assert str(info.value) == (
        f"{path}: key 'policy.work_bits': expected an integer in 1..40, got 99"
    )
    path = _genesis(tmp_path, '\n[[accounts]]\nid = "00"\npublic_key = "AA=="\nbonded = 1\n')
    with pytest.raises(ConfigError, match=r"key 'accounts\[0\]\.id'"):
        load_genesis(path)
    path.write_text("policy = 3\n" + path.read_text())  # a top-level key, not a table
    with pytest.raises(ConfigError, match="key 'policy': expected a table"):
        load_genesis(path)
