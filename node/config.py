"""Node configuration and the genesis file, both TOML, validated on load.

Every error names the file, the key and what was expected, e.g.::

    node.toml: key 'listen': expected an IPv6 address like "[::1]:7001", got "127.0.0.1:7001"

Addresses are IPv6 only (DESIGN.md section 3): IPv4 and IPv4-mapped IPv6
addresses are refused wherever an address is configured.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trustchain.consensus.proofs.errors import GenesisSectionError
from trustchain.consensus.proofs.policy import AccountEntry, Policy, parse_accounts, parse_policy
from trustchain.node.errors import UserError


class ConfigError(UserError):
    """A configuration or genesis file is missing or invalid."""


# --- addresses ---------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """An IPv6 UDP/TCP endpoint."""

    host: str
    """The IPv6 address in compressed form, without brackets."""
    port: int
    """The port, 1..65535 (0 only where a config allows "any free port")."""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}"

    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)


def parse_address(text: str, *, allow_port_zero: bool = False) -> Address:
    """Parse ``[ADDR]:PORT`` with an IPv6 ADDR; raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith("[") or "]:" not in text:
        raise ValueError(f'expected an IPv6 address like "[::1]:7001", got {text!r}')
    host_text, _, port_text = text[1:].partition("]:")
    try:
        ip = ipaddress.ip_address(host_text)
    except ValueError:
        raise ValueError(f"{host_text!r} is not an IP address") from None
    if not isinstance(ip, ipaddress.IPv6Address):
        raise ValueError(f"{host_text!r} is IPv4; TrustChain is IPv6 only")
    if ip.ipv4_mapped is not None:
        raise ValueError(f"{host_text!r} is an IPv4-mapped address; TrustChain is IPv6 only")
    if ip.scope_id:
        raise ValueError(f"{host_text!r} has a scope id; use a global or loopback address")
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range {low}..65535")
    return Address(host=ip.compressed, port=port)


# --- generic table checking ----------------------------------------------------

Checker = Callable[[Any], Any]
"""Turns a raw TOML value into the config value, or raises ValueError saying what it expected."""


@dataclass(frozen=True)
class Key:
    check: Checker
    required: bool = False
    default: Any = None


def _typed(kind: type, description: str) -> Checker:
    def check(value: Any) -> Any:
        # bool is an int in Python; a TOML boolean is never a valid number here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"expected {description}, got {type(value).__name__} {value!r}")
        return value

    return check


def _string(value: Any) -> str:
    result: str = _typed(str, "a string")(value)
    if not result:
        raise ValueError("expected a non-empty string")
    return result


def _int_range(low: int, high: int) -> Checker:
    def check(value: Any) -> int:
        number: int = _typed(int, f"an integer in {low}..{high}")(value)
        if not low <= number <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {number}")
        return number

    return check


def _address(value: Any) -> Address:
    return parse_address(_typed(str, 'an address string like "[::1]:7001"')(value))


def _address_or_any_port(value: Any) -> Address:
    text = _typed(str, 'an address string like "[::1]:7001"')(value)
    return parse_address(text, allow_port_zero=True)


def _one_of(*choices: str) -> Checker:
    def check(value: Any) -> str:
        text = _typed(str, "a string")(value)
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return str(text)

    return check


def _name(value: Any) -> str:
    text = _string(value)
    if len(text) > 64 or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError(
            f"expected a name of at most 64 letters, digits, '-', '_' or '.', got {text!r}"
        )
    return text


def _ed25519_public_key(value: Any) -> bytes:
    text = _typed(str, "a base64 Ed25519 public key")(value)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"expected a base64 Ed25519 public key, got {text!r}") from None
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte Ed25519 public key, got {len(raw)} bytes")
    return raw


def check_table(
    source: str, table: Mapping[str, Any], spec: Mapping[str, Key], where: str = ""
) -> dict[str, Any]:
    """Validate `table` against `spec`; return the checked values with defaults filled in."""
    prefix = f"{where}." if where else ""
    for key in table:
        if key not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known keys: {known})")
    result: dict[str, Any] = {}
    for key, rule in spec.items():
        if key not in table:
            if rule.required:
                raise ConfigError(f"{source}: missing required key '{prefix}{key}'")
            result[key] = rule.default
            continue
        try:
            result[key] = rule.check(table[key])
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{prefix}{key}': {exc}") from None
    return result


def _subtable(source: str, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: key '{key}': expected a table [{key}]")
    return value


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Read a TOML file; a missing or unparsable file is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: expected a {what}, found a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def http_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host (botocore and urllib would fail
    later, with a traceback)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL; write e.g. https://[::1]:8443"
        )
    return text


# --- node config ------------------------------------------------------------------


@dataclass(frozen=True)
class PeerSettings:
    """Tuning of the QUIC peer network."""

    max_frame_bytes: int = 4 * 1024 * 1024
    """Largest accepted frame; a larger one closes that peer link."""
    send_queue: int = 4096
    """Messages queued per peer while it is slow or away; further ones are dropped."""
    idle_timeout: float = 5.0
    """Seconds of silence after which a link is declared dead and redialled."""


@dataclass(frozen=True)
class ConsensusSettings:
    """Tuning of the consensus core ([consensus] in node.toml)."""

    round_timeout: float = 1.0
    """Seconds before a round without progress times out (doubles per timeout)."""
    max_batch: int = 1000
    """Operations per block."""
    min_block_interval: float = 0.25
    """Seconds a leader waits before proposing an empty block."""
    keep_committed: int = 1024
    """Committed blocks kept in memory for laggards (older ones are read from disk)."""


@dataclass(frozen=True)
class NodeConfig:
    """One node's configuration file (node.toml)."""

    path: Path
    """Where the config was read from; relative paths in it are relative to its folder."""
    name: str
    """This validator's name in the genesis file."""
    listen: Address
    """UDP address of the QUIC peer endpoint."""
    data_dir: Path
    """Keys, certificates and state live here."""
    genesis: Path
    """The cluster's genesis file."""
    log_level: str = "info"
    peer: PeerSettings = field(default_factory=PeerSettings)
    client_listen: Address | None = None
    """Local TCP endpoint where clients submit operations (loopback only); None: off."""
    consensus: ConsensusSettings = field(default_factory=ConsensusSettings)
    hsm: Path | None = None
    """The validator's hsm.toml (intermediate and CT log keys); None: consensus only."""
    ct_listen: Address | None = None
    """HTTPS address of the CT log and the certificate status API (port 6962)."""
    server_tls_cert: Path | None = None
    """PEM certificate (chain) of the node's HTTPS and DoQ servers."""
    server_tls_key: Path | None = None
    """Its PEM private key."""
    dns: dict[str, Any] | None = None
    """The [dns] table (checked by trustchain.node.doq.parse_dns_section); None: no DoQ."""
    archive: dict[str, Any] | None = None
    """The [archive] table (checked by trustchain.node.archive.parse_archive_section);
    None: no S3 archive."""
    cloudwatch: dict[str, Any] | None = None
    """The [cloudwatch] table (checked by trustchain.node.cloudwatch); None: no CloudWatch."""
    validity_days: int = 30
    """Validity of the certificates this node issues (at most the [ca] policy's maximum)."""
    api_listen: Address | None = None
    """HTTPS API with mutual TLS (port 8443); None: off."""
    api_client_ca: Path | None = None
    """PEM root(s) client certificates must chain to (the TrustChain root)."""
    api_allow: tuple[str, ...] = ("::1/128",)
    """IPv6 networks allowed to use the API; others get 403."""
    api_rate_limit: int = 1000
    """Requests per minute per client identity; past it, 429 with Retry-After."""

    @property
    def consensus_key(self) -> Path:
        return self.data_dir / "consensus.key"

    @property
    def tls_certificate(self) -> Path:
        return self.data_dir / "tls.pem"


_NODE_KEYS = {
    "name": Key(_name, required=True),
    "listen": Key(_address, required=True),
    "data_dir": Key(_string, default="."),
    "genesis": Key(_string, default="genesis.toml"),
    "log_level": Key(_one_of("debug", "info", "warning", "error"), default="info"),
    "peer": Key(lambda v: v, default={}),
    "client_listen": Key(lambda v: _loopback(_address(v)), default=None),
    "consensus": Key(lambda v: v, default={}),
    "hsm": Key(_string, default=None),
    "ct_listen": Key(_address, default=None),
    "server_tls_cert": Key(_string, default=None),
    "server_tls_key": Key(_string, default=None),
    "dns": Key(_typed(dict, "a table [dns]"), default=None),
    "archive": Key(_typed(dict, "a table [archive]"), default=None),
    "cloudwatch": Key(_typed(dict, "a table [cloudwatch]"), default=None),
    "validity_days": Key(_int_range(1, 398), default=30),
    "api_listen": Key(_address, default=None),
    "api_client_ca": Key(_string, default=None),
    "api_allow": Key(lambda v: _ipv6_networks(v), default=("::1/128",)),
    "api_rate_limit": Key(_int_range(1, 10_000_000), default=1000),
}


def _ipv6_networks(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'expected a list of IPv6 networks like ["::1/128"], got {value!r}')
    out = []
    for text in value:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network") from None
        if not isinstance(net, ipaddress.IPv6Network):
            raise ValueError(f"{text!r} is IPv4; TrustChain is IPv6 only")
        if net.network_address.ipv4_mapped is not None:
            raise ValueError(f"{text!r} is IPv4-mapped; TrustChain is IPv6 only")
        out.append(net.compressed)
    return tuple(out)


def _loopback(address: Address) -> Address:
    if address.host != "::1":
        raise ValueError(f"the client endpoint must listen on [::1], not {address.host}")
    return address


def _seconds(low: float, high: float) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number of seconds, got {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"expected {low:g}..{high:g} seconds, got {value}")
        return float(value)

    return check


_CONSENSUS_KEYS = {
    "round_timeout": Key(_seconds(0.05, 600), default=1.0),
    "max_batch": Key(_int_range(1, 10_000), default=1000),
    "min_block_interval": Key(_seconds(0, 60), default=0.25),
    "keep_committed": Key(_int_range(16, 10_000_000), default=1024),
}

_PEER_KEYS = {
    "max_frame_bytes": Key(_int_range(1024, 64 * 1024 * 1024), default=4 * 1024 * 1024),
    "send_queue": Key(_int_range(1, 1_000_000), default=4096),
    "idle_timeout": Key(_int_range(1, 3600), default=5),
}


def load_node_config(path: str | Path) -> NodeConfig:
    path = Path(path)
    doc = read_toml(path, "node config file")
    values = check_table(str(path), doc, _NODE_KEYS)
    peer = check_table(str(path), _subtable(str(path), doc, "peer"), _PEER_KEYS, "peer")
    consensus = check_table(
        str(path), _subtable(str(path), doc, "consensus"), _CONSENSUS_KEYS, "consensus"
    )
    base = path.parent
    return NodeConfig(
        path=path,
        name=values["name"],
        listen=values["listen"],
        data_dir=(base / values["data_dir"]).resolve(),
        genesis=(base / values["genesis"]).resolve(),
        log_level=values["log_level"],
        peer=PeerSettings(
            max_frame_bytes=peer["max_frame_bytes"],
            send_queue=peer["send_queue"],
            idle_timeout=float(peer["idle_timeout"]),
        ),
        client_listen=values["client_listen"],
        consensus=ConsensusSettings(**consensus),
        hsm=None if values["hsm"] is None else (base / values["hsm"]).resolve(),
        ct_listen=values["ct_listen"],
        server_tls_cert=_optional_path(base, values["server_tls_cert"]),
        server_tls_key=_optional_path(base, values["server_tls_key"]),
        dns=values["dns"],
        archive=values["archive"],
        cloudwatch=values["cloudwatch"],
        validity_days=values["validity_days"],
        api_listen=values["api_listen"],
        api_client_ca=_optional_path(base, values["api_client_ca"]),
        api_allow=values["api_allow"],
        api_rate_limit=values["api_rate_limit"],
    )


def _optional_path(base: Path, value: str | None) -> Path | None:
    return None if value is None else (base / value).resolve()


# --- genesis --------------------------------------------------------------------------


@dataclass(frozen=True)
class Validator:
    """One member of the validator set, as the genesis file lists it."""

    name: str
    """Unique name; also the peer's identity in logs and messages."""
    address: Address
    """The validator's QUIC peer endpoint."""
    public_key: bytes
    """Raw 32-byte Ed25519 consensus key; also pins the peer's TLS certificate."""
    power: int
    """Voting power (stake-weighted)."""


@dataclass(frozen=True)
class Genesis:
    """The file every validator shares: who is in the cluster and with what power."""

    path: Path
    chain_id: str
    validators: tuple[Validator, ...]
    policy: Policy = field(default_factory=Policy)
    """The proof policy, from [policy] (DESIGN.md section 5; defaults in Policy)."""
    accounts: tuple[AccountEntry, ...] = ()
    """The genesis stake allocation, from [[accounts]]."""

    def validator(self, name: str) -> Validator:
        for v in self.validators:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)


_GENESIS_KEYS = {
    "chain_id": Key(_name, required=True),
    "validators": Key(lambda v: v, required=True),
    "policy": Key(lambda v: v, default={}),
    "accounts": Key(lambda v: v, default=[]),
    # Validated by trustchain.node.ca.genesis.parse_ca_section when the CA loads it.
    "ca": Key(lambda v: v, default={}),
}

_VALIDATOR_KEYS = {
    "name": Key(_name, required=True),
    "address": Key(_address, required=True),
    "public_key": Key(_ed25519_public_key, required=True),
    "power": Key(_int_range(1, 2**53), default=1),
}


def load_genesis(path: str | Path) -> Genesis:
    path = Path(path)
    source = str(path)
    doc = read_toml(path, "genesis file")
    values = check_table(source, doc, _GENESIS_KEYS)
    entries = values["validators"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: key 'validators': expected [[validators]] tables")
    if not entries:
        raise ConfigError(f"{source}: key 'validators': the validator set is empty")
    validators: list[Validator] = []
    seen: dict[str, dict[Any, str]] = {"name": {}, "address": {}, "public_key": {}}
    for i, entry in enumerate(entries):
        v = check_table(source, entry, _VALIDATOR_KEYS, f"validators[{i}]")
        for key, owners in seen.items():
            if v[key] in owners:
                raise ConfigError(
                    f"{source}: key 'validators[{i}].{key}': duplicate of "
                    f"validator '{owners[v[key]]}'"
                )
            owners[v[key]] = v["name"]
        validators.append(Validator(v["name"], v["address"], v["public_key"], v["power"]))
    try:
        policy = parse_policy(source, values["policy"])
        accounts = parse_accounts(source, values["accounts"])
    except GenesisSectionError as exc:
        raise ConfigError(str(exc)) from None
    return Genesis(
        path=path,
        chain_id=values["chain_id"],
        validators=tuple(validators),
        policy=policy,
        accounts=accounts,
    )


def genesis_entry_toml(v: Validator) -> str:
    """The ``[[validators]]`` table for `v`, as `trustchain node init` prints it."""
    key = base64.b64encode(v.public_key).decode()
    return (
        "[[validators]]\n"
        f'name = "{v.name}"\n'
        f'address = "{v.address}"\n'
        f'public_key = "{key}"\n'
        f"power = {v.power}\n"
    )
