"""Node config and genesis loading: every mistake is named with file, key and expectation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trustchain.node.config import (
    ConfigError,
    http_url,
    load_genesis,
    load_node_config,
    parse_address,
)

KEY_A = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
KEY_B = "IKJ9x7ZtWjqIbUM3JdvZo1JZNhbZ+Q3WbO5AkGJ2DlM="


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_node_config_resolves_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node.toml",
        'name = "v1"\nlisten = "[::1]:7001"\ndata_dir = "data"\n[peer]\nsend_queue = 10\n',
    )
    config = load_node_config(path)
    assert config.name == "v1"
    assert str(config.listen) == "[::1]:7001"
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.genesis == (tmp_path / "genesis.toml").resolve()
    assert config.peer.send_queue == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "v1"\nlisten = "[::1]:7001"\ncolour = "red"\n', "unknown key 'colour'"),
        ('name = "v1"\nlisten = 7001\n', "key 'listen': expected an address string"),
        ('name = "v1"\nlisten = "127.0.0.1:7001"\n', "key 'listen': expected an IPv6 address"),
        ('name = "v1"\nlisten = "[127.0.0.1]:7001"\n', "is IPv4; TrustChain is IPv6 only"),
        ('name = "v1"\nlisten = "[::ffff:127.0.0.1]:7001"\n', "IPv4-mapped"),
        ('name = "v1"\nlisten = "[::1]:99999"\n', "port 99999 is out of range"),
        ('listen = "[::1]:7001"\n', "missing required key 'name'"),
        (
            'name = "v1"\nlisten = "[::1]:7001"\n[peer]\nsend_queue = "many"\n',
            "key 'peer.send_queue'",
        ),
        ('name = "v1"\nlisten = "[::1]:7001"\n[peer]\nsend_queue = true\n', "got bool"),
        ('name = "v1"\nlisten = "[::1]:7001"\n[peer]\nwindow = 3\n', "unknown key 'peer.window'"),
        ('name = "v1"\nlisten = "[::1]:7001"\npeer = 3\n', "expected a table [peer]"),
        ('name = "v1"\nlisten = [\n', "not valid TOML"),
    ],
)
def test_bad_node_config_names_file_key_and_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "node.toml", text)
    with pytest.raises(ConfigError) as excinfo:
        load_node_config(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: node config file not found"):
        load_node_config(tmp_path / "nope.toml")


def genesis_text(*validators: tuple[str, str, str]) -> str:
    text = 'chain_id = "test"\n'
    for name, address, key in validators:
        text += f'[[validators]]\nname = "{name}"\naddress = "{address}"\npublic_key = "{key}"\n'
    return text


def test_valid_genesis(tmp_path: Path) -> None:
    path = write(tmp_path, "g.toml", genesis_text(("a", "[::1]:1", KEY_A), ("b", "[::1]:2", KEY_B)))
    genesis = load_genesis(path)
    assert [v.name for v in genesis.validators] == ["a", "b"]
    assert genesis.total_power == 2
    assert len(genesis.validator("b").public_key) == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            genesis_text(("a", "[::1]:1", KEY_A), ("a", "[::1]:2", KEY_B)),
            "validators[1].name': duplicate",
        ),
        (
            genesis_text(("a", "[::1]:1", KEY_A), ("b", "[::1]:1", KEY_B)),
            "validators[1].address': duplicate",
        ),
        (
            genesis_text(("a", "[::1]:1", KEY_A), ("b", "[::1]:2", KEY_A)),
            "validators[1].public_key': duplicate",
        ),
        ('chain_id = "test"\nvalidators = []\n', "the validator set is empty"),
        ("validators = []\n", "missing required key 'chain_id'"),
        (
            genesis_text(("a", "[::1]:1", KEY_A)) + "colour = 1\n",
            "unknown key 'validators[0].colour'",
        ),
        ("extra = 1\n" + genesis_text(("a", "[::1]:1", KEY_A)), "unknown key 'extra'"),
        (genesis_text(("a", "[::1]:1", "bm90IGEga2V5")), "32-byte Ed25519 public key"),
        (genesis_text(("a", "[::1]:1", "***")), "base64 Ed25519 public key"),
        (genesis_text(("a", "[10.0.0.1]:1", KEY_A)), "IPv6 only"),
        (genesis_text(("a b", "[::1]:1", KEY_A)), "expected a name"),
    ],
)
def test_bad_genesis_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "g.toml", text)
    with pytest.raises(ConfigError) as excinfo:
        load_genesis(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


@pytest.mark.parametrize("text", ["[::1]:7001", "[2001:db8::1]:443", "[::]:0"])
def test_ipv6_addresses_parse(text: str) -> None:
    assert str(parse_address(text, allow_port_zero=True)) == text


@pytest.mark.parametrize("text", ["::1:7001", "[::1]", "[fe80::1%eth0]:1", "[::1]:x", "[v6]:1"])
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize("text", ["notaurl", "ftp://[::1]:21", "http://", "[::1]:8443"])
def test_url_options_must_be_http_urls(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not an http"):
        http_url(text)
    assert http_url("https://[::1]:8443") == "https://[::1]:8443"
