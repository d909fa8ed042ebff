"""A 4-validator cluster archiving to two moto regions; restore and its refusals."""

from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustchain.ct.checkpoint import RFC6962NoteVerifier, Voter, parse_checkpoint, verify_cosigned
from trustchain.ct.note import format_note, parse_note
from trustchain.ct.precert import embedded_sct_entry
from trustchain.ct.store import TreeReader, open_store, read_entries
from trustchain.ct.tiles import DATA, TileID, parse_data_tile
from trustchain.node.archive import state_key
from trustchain.node.ca.genesis import load_ca_genesis
from trustchain.node.cli import main
from trustchain.node.cli_cert import (
    cluster_client,
    load_account,
    make_key_and_csr,
    request_certificate,
)
from trustchain.node.config import load_genesis
from trustchain.node.drill import LocalRegion
from trustchain.node.localcluster import LocalCluster, create_full_cluster

pytestmark = pytest.mark.slow
PREFIX = "chain"


@dataclass
class Archived:
    dir: Path
    cluster: LocalCluster
    regions: dict[str, LocalRegion]
    docs: list[dict[str, Any]]
    """Issuance answers (acknowledged certificates)."""


def archive_table(regions: dict[str, LocalRegion], mode: str = "both") -> str:
    text = f'[archive]\nprefix = "{PREFIX}"\nmode = "{mode}"\nwait_timeout = 20\n'
    text += "snapshot_every = 40\n"
    for r in regions.values():
        text += (
            f'[[archive.regions]]\nname = "{r.name}"\nbucket = "{r.bucket}"\n'
            f'endpoint = "{r.endpoint}"\nca_bundle = "{r.ca_bundle}"\n'
        )
    return text


@pytest.fixture(scope="module")
def archived(
    tmp_path_factory: pytest.TempPathFactory, regions: dict[str, LocalRegion]
) -> Iterator[Archived]:
    directory = tmp_path_factory.mktemp("archive") / "c"
    # Blocks every 50 ms (not the default 250) so that the archive soon holds the
    # twenty-odd blocks the state-segment tests cut up.
    cluster = create_full_cluster(directory, 4, consensus="min_block_interval = 0.05")
    west = regions["us-west-2"]
    for node in cluster.nodes:
        with open(node.config, "a") as fh:
            fh.write(archive_table(regions))
            fh.write(
                f'[cloudwatch]\nregion = "{west.name}"\nendpoint = "{west.endpoint}"\n'
                f'ca_bundle = "{west.ca_bundle}"\ninterval = 0.5\n'
            )
    cluster.start()
    try:
        assert cluster.wait(
            lambda ev: all(any(e.get("event") == "node.ready" for e in ev[n]) for n in ev), 60
        )
        client = cluster_client(directory, "v1")
        account = load_account(directory / "accounts" / "demo.key")
        docs = []
        for i in range(3):
            _, csr = make_key_and_csr([f"a{i}.trust.hypermesh.online"])
            docs.append(request_certificate(client, account, directory / "accounts/demo.plot", csr))
        yield Archived(directory, cluster, regions, docs)
    finally:
        cluster.stop()


def test_acknowledged_certificates_are_in_both_regions(archived: Archived) -> None:
    last = max(d["leaf_index"] for d in archived.docs)
    for region in archived.regions.values():
        a = region.archive(PREFIX)
        # Acknowledged once a cosigned history checkpoint covers it...
        sizes = [int(k.split("/")[1]) for k in a.keys("checkpoints/")]
        assert max(sizes) > last
        assert any(k.startswith("tile/data/") for k in a.keys("tile/"))
        assert list(a.keys("state/"))
        # ... and the latest pointer follows.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            note = a.get("checkpoint")
            if note is not None and parse_checkpoint(parse_note(note).text).size > last:
                break
            time.sleep(0.1)
        assert note is not None and parse_checkpoint(parse_note(note).text).size > last


def test_cloudwatch_and_prometheus_show_operations_and_archive_lag(archived: Archived) -> None:
    west = archived.regions["us-west-2"]
    cw = boto3.client(
        "cloudwatch", region_name=west.name, endpoint_url=west.endpoint, verify=west.ca_bundle
    )
    now = dt.datetime.now(dt.UTC)

    def issued() -> float:
        points = cw.get_metric_statistics(
            Namespace="TrustChain/CA", MetricName="TrustChainCertificateOperations",
            Dimensions=[{"Name": "OperationType", "Value": "issue"}],
            StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(hours=1),
            Period=60, Statistics=["Sum"],
        )["Datapoints"]  # fmt: skip
        return float(sum(p["Sum"] for p in points))

    deadline = time.monotonic() + 20
    while issued() < len(archived.docs) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert issued() == len(archived.docs)
    lag = cw.list_metrics(Namespace="TrustChain/CA", MetricName="ArchiveLag")["Metrics"]
    assert {d["Value"] for m in lag for d in m["Dimensions"]} == {"us-west-2", "us-east-1"}
    names = {
        m["MetricName"] for m in cw.list_metrics(Namespace="TrustChain/Performance")["Metrics"]
    }
    assert {"ResponseTime", "Throughput"} <= names

    client = cluster_client(archived.dir, "v1")
    conn = http.client.HTTPSConnection(
        "::1", int(client.url.rsplit(":", 1)[1]), context=client.context()
    )
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert (
        f'trustchain_certificate_operations_total{{operation="issue"}} {len(archived.docs)}' in text
    )
    assert 'trustchain_archive_lag_entries{region="us-east-1"}' in text
    assert 'trustchain_archive_region_up{region="us-west-2"} 1' in text


# --- restore ---------------------------------------------------------------------------------

_copies = itertools.count()


def snapshot(region: LocalRegion) -> str:
    """A copy of the cluster's archive under a fresh prefix (boto3, server-side copies), so
    that each test may damage its own copy; returns the prefix."""
    s3: Any = region.s3()
    prefix = f"restore{next(_copies)}"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=region.bucket, Prefix=PREFIX + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            key = prefix + obj["Key"][len(PREFIX) :]
            source = {"Bucket": region.bucket, "Key": obj["Key"]}
            s3.copy_object(Bucket=region.bucket, Key=key, CopySource=source)
    return prefix


def run_restore(
    archived: Archived, prefix: str, target: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    region = archived.regions["us-east-1"]
    argv = [
        "restore", "--region", region.name, "--bucket", region.bucket,
        "--endpoint", region.endpoint, "--ca-bundle", str(region.ca_bundle),
        "--prefix", prefix, "--genesis", str(archived.dir / "genesis.toml"),
        "--dir", str(target), "--json",
    ]  # fmt: skip
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def voters(genesis: Path) -> list[Voter]:
    ca = load_ca_genesis(genesis)
    origin = f"{load_genesis(genesis).chain_id}.ct.trustchain"
    return [
        Voter(v.name, RFC6962NoteVerifier(origin, v.log_key), v.power)
        for v in ca.validators
        if v.log_key is not None
    ]


def test_restore_from_us_east_1_rebuilds_a_verifiable_log(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genesis = archived.dir / "genesis.toml"
    target = tmp_path / "v1"
    prefix = snapshot(archived.regions["us-east-1"])
    status, out, err = run_restore(archived, prefix, target, capsys)
    assert status == 0, err
    report = json.loads(out)
    last = max(d["leaf_index"] for d in archived.docs)
    assert report["entries"] > last
    assert report["height"] > 0

    # The checkpoint written to DIR carries a verified quorum of the genesis validators.
    note = (target / "ct" / "cosigned-checkpoint").read_bytes()
    origin = f"{load_genesis(genesis).chain_id}.ct.trustchain"
    cosigned = verify_cosigned(note, voters(genesis), origin=origin)
    assert cosigned.checkpoint.size == report["entries"]
    assert sorted(cosigned.signers) == sorted(report["signers"])
    assert len(cosigned.signers) >= 3

    # The restored directory is a CT store that verifies completely (every tile against
    # the root, every entry against its leaf hash) under a signer's own key.
    signer = next(v for v in voters(genesis) if v.label == cosigned.signers[0])
    assert isinstance(signer.verifier, RFC6962NoteVerifier)
    store = open_store(target / "ct", signer.verifier, check="full")
    try:
        assert store.edge.size == report["entries"]
        assert store.edge.root() == cosigned.checkpoint.root_hash
        leaves = {
            index: leaf
            for index, leaf in read_entries(
                store.files, TreeReader(store.files, store.edge), 0, report["entries"] - 1
            )
        }
    finally:
        store.close()

    # Every acknowledged certificate is logged at its leaf index.
    for doc in archived.docs:
        chain = x509.load_pem_x509_certificates(doc["certificate"].encode())
        der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
        assert leaves[doc["leaf_index"]].entry.entry == embedded_sct_entry(der[0], der[1])

    # The replayed blocks are in state.db.
    db = sqlite3.connect(target / "state.db")
    try:
        assert db.execute("SELECT max(height) FROM blocks").fetchone()[0] == report["height"]
    finally:
        db.close()


def damage(region: LocalRegion, key: str, change: Callable[[bytes], bytes | None]) -> None:
    """Rewrite (or, when `change` returns None, delete) one object, as an attacker or a
    broken disk would, with boto3."""
    s3: Any = region.s3()
    body = s3.get_object(Bucket=region.bucket, Key=key)["Body"].read()
    new = change(body)
    if new is None:
        s3.delete_object(Bucket=region.bucket, Key=key)
    else:
        s3.put_object(Bucket=region.bucket, Key=key, Body=new)


def flip(offset: int) -> Callable[[bytes], bytes]:
    return lambda b: b[:offset] + bytes([b[offset] ^ 1]) + b[offset + 1 :]


def archived_size(region: LocalRegion, prefix: str) -> int:
    note = region.archive(prefix).get("checkpoint")
    assert note is not None
    return parse_checkpoint(parse_note(note).text).size


def one_signature(note: bytes) -> bytes:
    parsed = parse_note(note)
    return format_note(parsed.text, parsed.signatures[:1])


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("hash tile corrupted", r"tile/0/000\.p/\d+: these edge tiles do not hash"),
        ("entry bundle corrupted", r"tile/data/000\.p/\d+: entry 0 does not match its leaf hash"),
        ("precertificate corrupted", r"tile/data/000\.p/\d+: entry 0: its pre_certificate"),
        ("tile missing", r"tile/0/000\.p/\d+: tile is missing"),
        ("too few signatures", r"checkpoint: .*1 of 4"),
        (
            "rolled back, newer history forged",
            r"checkpoint: rolled back: it has \d+ entries but checkpoints/\d+ was archived and "
            r"does not verify",
        ),
        ("history tampered", r"checkpoints/\d+: its root is not this tree's and .* tampered"),
        ("block parent forged", r"state/\d+-\d+ \(block 3\): block 3 does not follow block 2"),
    ],
)
def test_restore_refuses_a_damaged_archive_and_writes_nothing(
    archived: Archived,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    expect: str,
) -> None:
    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    size = archived_size(region, prefix)
    hashes = f"{prefix}/{TileID(0, 0, size).path()}"
    bundle = f"{prefix}/{TileID(DATA, 0, size).path()}"
    if case == "hash tile corrupted":
        damage(region, hashes, flip(5))
    elif case == "entry bundle corrupted":
        damage(region, bundle, flip(60))  # inside entry 0's TBSCertificate
    elif case == "precertificate corrupted":
        # pre_certificate is not under the leaf hash; it follows entry 0's
        # TimestampedEntry and its own 3-byte length.  Byte 100 is inside its TBS.
        data = region.archive(prefix).get(bundle[len(prefix) + 1 :])
        assert data is not None
        entry = parse_data_tile(data, size)[0].entry.encode()
        damage(region, bundle, flip(len(entry) + 3 + 100))
    elif case == "tile missing":
        damage(region, hashes, lambda b: None)
    elif case == "too few signatures":
        damage(region, f"{prefix}/checkpoint", one_signature)
    elif case == "history tampered":
        damage(region, f"{prefix}/checkpoints/{size - 1}", other_root)
    elif case == "block parent forged":
        # Block 3 of every segment holding it names another parent (its state and
        # operations untouched): only the chain of block ids shows it.
        def other_parent(body: bytes) -> bytes:
            rows = msgpack.unpackb(body, raw=False)
            for row in rows:
                if row[0] == 3:
                    block = msgpack.unpackb(row[1], raw=False)
                    block[5] = bytes(32)
                    row[1] = msgpack.packb(block, use_bin_type=True)
            return bytes(msgpack.packb(rows, use_bin_type=True))

        for key in list(region.archive(prefix).keys("state/")):
            damage(region, f"{prefix}/{key}", other_parent)
        for key in list(region.archive(prefix).keys("snapshots/")):
            damage(region, f"{prefix}/{key}", lambda b: None)  # replay from genesis
    else:  # the latest pointer replaced by an older one, the newer history entry forged
        old = region.archive(prefix).get(f"checkpoints/{size - 1}")
        assert old is not None
        damage(region, f"{prefix}/checkpoint", lambda b: old)
        damage(region, f"{prefix}/checkpoints/{size}", other_root)
    target = tmp_path / "v1"
    status, out, err = run_restore(archived, prefix, target, capsys)
    assert status == 2
    assert out == ""
    assert re.search(r"trustchain: error: restore refused: us-east-1: s3://", err)
    assert re.search(expect, err), err
    assert f"nothing was written to {target}" in err
    assert "Traceback" not in err
    assert not target.exists()


# --- snapshots ----------------------------------------------------------------------------


def snapshot_signers(region: LocalRegion, prefix: str) -> dict[int, set[str]]:
    """Archived snapshot heights -> validators whose signature is there."""
    found: dict[int, set[str]] = {}
    for key in region.archive(prefix).keys("snapshots/"):
        parts = key.split("/")
        if parts[2] == "sig":
            found.setdefault(int(parts[1]), set()).add(parts[3])
    return found


def newest_snapshot(region: LocalRegion, prefix: str) -> int:
    """The newest snapshot signed by a quorum (three of the four validators)."""
    return max(h for h, names in snapshot_signers(region, prefix).items() if len(names) >= 3)


def test_every_validator_archives_the_same_snapshot_and_restore_starts_from_it(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = archived.regions["us-east-1"]
    # Run alone, the cluster may not have reached a snapshot height yet.
    deadline = time.monotonic() + 60
    while not any(len(n) == 4 for n in snapshot_signers(region, PREFIX).values()):
        assert time.monotonic() < deadline, "no snapshot signed by all four validators"
        time.sleep(0.5)
    prefix = snapshot(region)
    a = region.archive(prefix)
    height = newest_snapshot(region, prefix)
    # One state object per height, signed by all four: their bytes were equal.
    assert {"v1", "v2", "v3", "v4"} in snapshot_signers(region, prefix).values()
    for node in archived.cluster.nodes:
        assert not [e for e in node.events() if e.get("event") == "archive.conflict"]
    target = tmp_path / "v1"
    status, out, err = run_restore(archived, prefix, target, capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report["snapshot"] == height
    # The copy may catch a newer snapshot that only some validators had uploaded yet:
    # restore passes over it with a warning, and over nothing else.
    for warning in report["warnings"]:
        found = re.fullmatch(
            r"snapshots/(\d+)/state: signed by [12] of 4 voting power, not more than 2/3; "
            r"not used",
            warning,
        )
        assert found and int(found.group(1)) > height, warning
    assert (target / "snapshot").read_bytes() == a.get(f"snapshots/{height:020d}/state")
    db = sqlite3.connect(target / "state.db")
    try:
        assert db.execute("SELECT min(height) FROM blocks").fetchone()[0] == height
    finally:
        db.close()


def test_a_snapshot_without_a_quorum_of_signatures_is_not_used(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    height = newest_snapshot(region, prefix)
    first, *others = sorted(snapshot_signers(region, prefix)[height])
    damage(region, f"{prefix}/snapshots/{height:020d}/sig/{first}", lambda b: None)
    for name in others[1:]:
        damage(region, f"{prefix}/snapshots/{height:020d}/sig/{name}", lambda b: b[:-1] + b"x")
    status, out, err = run_restore(archived, prefix, tmp_path / "v1", capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report["snapshot"] < height
    assert any("not more than 2/3; not used" in w for w in report["warnings"])


def test_a_signed_snapshot_of_another_log_is_refused(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even with every validator's signature, a state whose log is not the archived tree
    is refused (the keys come from the cluster directory: a forgery by all of them)."""
    from trustchain.node import identity
    from trustchain.node.snapshot import sign as sign_snapshot

    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    height = newest_snapshot(region, prefix)
    body = region.archive(prefix).get(f"snapshots/{height:020d}/state")
    assert body is not None
    fields = msgpack.unpackb(body, raw=False)
    fields[2] = height + 1
    fields[5] = [fields[5][0], [bytes(32)] * len(fields[5][1])]  # another log edge
    forged = msgpack.packb(fields, use_bin_type=True)
    chain = load_genesis(archived.dir / "genesis.toml").chain_id
    s3: Any = region.s3()
    base = f"{prefix}/snapshots/{height + 1:020d}"
    s3.put_object(Bucket=region.bucket, Key=f"{base}/state", Body=forged)
    for node in archived.cluster.nodes:
        me = identity.load(node.name, node.directory / "consensus.key", node.directory / "tls.pem")
        signature = sign_snapshot(me.key, chain, height + 1, forged)
        s3.put_object(Bucket=region.bucket, Key=f"{base}/sig/{node.name}", Body=signature)
    status, _, err = run_restore(archived, prefix, tmp_path / "v1", capsys)
    assert status == 2
    assert re.search(r"snapshots/\d+/state: signed by v1, v2, v3, v4, but its log", err)
    assert not (tmp_path / "v1").exists()


def other_root(note: bytes) -> bytes:
    """The checkpoint with another root under the same signatures (which then fail)."""
    parsed = parse_note(note)
    fake = replace(parse_checkpoint(parsed.text), root_hash=bytes(32))
    return format_note(fake.text(), parsed.signatures)


def test_a_rolled_back_pointer_restores_the_newest_cosigned_checkpoint(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a node that died between writing checkpoints/N and the pointer leaves (or an
    attacker who put an old version back): the newer cosigned history entry is used."""
    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    size = archived_size(region, prefix)
    old = region.archive(prefix).get(f"checkpoints/{size - 1}")
    assert old is not None
    damage(region, f"{prefix}/checkpoint", lambda b: old)
    status, out, err = run_restore(archived, prefix, tmp_path / "v1", capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report["entries"] == size
    # The cluster keeps running while the archive is copied, so the copy may also hold a
    # snapshot that only some validators had signed yet; restore says it skipped it.
    checkpoint = [w for w in report["warnings"] if w.startswith("checkpoint:")]
    others = [w for w in report["warnings"] if not w.startswith("checkpoint:")]
    (warning,) = checkpoint
    assert f"pointer has {size - 1} entries but checkpoints/{size} is archived" in warning
    assert all(re.fullmatch(r"snapshots/\d+/state: signed by .* not used", w) for w in others)


def test_restore_from_a_bucket_that_is_not_there_says_so(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = archived.regions["us-east-1"]
    target = tmp_path / "v1"
    argv = [
        "restore", "--region", region.name, "--bucket", "no-such-bucket",
        "--endpoint", region.endpoint, "--ca-bundle", str(region.ca_bundle),
        "--genesis", str(archived.dir / "genesis.toml"), "--dir", str(target),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "restore failed: us-east-1: s3://no-such-bucket/" in err
    assert "NoSuchBucket" in err
    assert "Traceback" not in err
    assert not target.exists()
    # A genesis without the [ca] section names no log keys to check the archive with.
    bare = tmp_path / "bare.toml"
    text = (archived.dir / "genesis.toml").read_text()
    bare.write_text(text[: text.index("\n[ca]\n")] + text[text.index("\n[policy]\n") :])
    argv[argv.index("--genesis") + 1] = str(bare)
    argv[argv.index("--bucket") + 1] = region.bucket
    assert main(argv) == 2
    assert "no validator with a CT log key" in capsys.readouterr().err
    assert not target.exists()
    # A CA bundle that is not there (botocore said "Could not connect to the endpoint").
    argv[argv.index("--ca-bundle") + 1] = str(tmp_path / "none.pem")
    assert main(argv) == 2
    assert f"--ca-bundle {tmp_path / 'none.pem'}: no such file" in capsys.readouterr().err
    # An endpoint that is not a URL.
    argv[argv.index("--endpoint") + 1] = "notaurl"
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "argument --endpoint: 'notaurl' is not an http(s) URL" in capsys.readouterr().err


def test_restore_refuses_a_checkpoint_older_than_the_one_in_dir(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rolled back with its history too: DIR's own checkpoint still shows it."""
    region = archived.regions["us-east-1"]
    target = tmp_path / "v1"
    status, _, err = run_restore(archived, snapshot(region), target, capsys)
    assert status == 0, err
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    prefix = snapshot(region)
    size = archived_size(region, prefix)
    old = region.archive(prefix).get(f"checkpoints/{size - 1}")
    assert old is not None
    damage(region, f"{prefix}/checkpoint", lambda b: old)
    damage(region, f"{prefix}/checkpoints/{size}", lambda b: None)
    status, _, err = run_restore(archived, prefix, target, capsys)
    assert status == 2
    assert re.search(rf"checkpoint: rolled back: it has {size - 1} entries, .* has {size}", err)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def resegment(region: LocalRegion, prefix: str, bounds: list[tuple[int, int]]) -> None:
    """Replace the copy's state segments by segments with the given bounds (as validators
    archiving at different moments, or one that stopped, leave them), and drop the
    snapshots so that restore replays them all."""
    s3: Any = region.s3()
    a = region.archive(prefix)
    for key in list(a.keys("snapshots/")):
        s3.delete_object(Bucket=region.bucket, Key=f"{prefix}/{key}")
    rows: dict[int, bytes] = {}
    for key in list(a.keys("state/")):
        body = a.get(key)
        assert body is not None
        rows.update((int(h), bytes(b)) for h, b in msgpack.unpackb(body, raw=False))
        s3.delete_object(Bucket=region.bucket, Key=f"{prefix}/{key}")
    for first, last in bounds:
        body = msgpack.packb([[h, rows[h]] for h in range(first, last + 1)], use_bin_type=True)
        s3.put_object(Bucket=region.bucket, Key=f"{prefix}/{state_key(first, last)}", Body=body)


def archived_height(region: LocalRegion, prefix: str) -> int:
    return max(int(k.rsplit("-", 1)[1]) for k in region.archive(prefix).keys("state/"))


def test_restore_joins_overlapping_state_segments_of_several_validators(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The longest first segment (1-20) leads nowhere: nothing starts at 21; 5-H does."""
    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    top = archived_height(region, prefix)
    assert top > 20
    resegment(region, prefix, [(1, 10), (1, 20), (5, top)])
    status, out, err = run_restore(archived, prefix, tmp_path / "v1", capsys)
    assert status == 0, err
    assert json.loads(out)["height"] == top


def test_restore_refuses_a_gap_in_the_state_segments(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = archived.regions["us-east-1"]
    prefix = snapshot(region)
    top = archived_height(region, prefix)
    # The first issuance is in some block; a gap before the last one loses log entries.
    resegment(region, prefix, [(1, 1), (3, top)])
    status, _, err = run_restore(archived, prefix, tmp_path / "v1", capsys)
    assert status == 2
    assert "no archived state segment holds block 2" in err, err
    assert not (tmp_path / "v1").exists()


def test_restore_replaces_what_dir_held(
    archived: Archived, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old tiles, an old state.db and its write-ahead log must not survive into the result."""
    target = tmp_path / "v1"
    (target / "ct" / "tile" / "0").mkdir(parents=True)
    (target / "ct" / "tile" / "0" / "999").write_bytes(b"old")
    old = sqlite3.connect(target / "state.db")
    old.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, b BLOB)")
    old.execute("INSERT INTO blocks VALUES (1000000, x'00')")
    old.commit()
    old.close()
    (target / "state.db-wal").write_bytes(b"stale")
    (target / "node.toml").write_text("# the node's own files stay\n")
    prefix = snapshot(archived.regions["us-east-1"])
    status, out, err = run_restore(archived, prefix, target, capsys)
    assert status == 0, err
    assert not (target / "ct" / "tile" / "0" / "999").exists()
    assert not (target / "state.db-wal").exists()
    assert not (target / ".restore").exists()
    assert (target / "node.toml").read_text() == "# the node's own files stay\n"
    db = sqlite3.connect(target / "state.db")
    try:
        top = db.execute("SELECT max(height) FROM blocks").fetchone()[0]
        assert top == json.loads(out)["height"]
    finally:
        db.close()


# --- a validator that lost its disk (last: it restarts a node of the shared cluster) ---------


def test_a_validator_restored_from_the_archive_rejoins_its_cluster(
    archived: Archived, capsys: pytest.CaptureFixture[str]
) -> None:
    v4 = archived.cluster.node("v4")
    v4.stop()
    for name in ("ct", "state.db", "state.db-wal", "consensus.db", "consensus.db-wal"):
        path = v4.directory / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    region = archived.regions["us-east-1"]
    status, out, err = run_restore(archived, PREFIX, v4.directory, capsys)
    assert status == 0, err
    restored = json.loads(out)["entries"]
    v4.start()
    client = cluster_client(archived.dir, "v1")
    account = load_account(archived.dir / "accounts" / "demo.key")
    for i in range(2):
        _, csr = make_key_and_csr([f"r{i}.trust.hypermesh.online"])
        archived.docs.append(
            request_certificate(client, account, archived.dir / "accounts/demo.plot", csr)
        )
    size = max(d["leaf_index"] for d in archived.docs) + 1
    assert size > restored

    def caught_up(events: dict[str, list[dict[str, Any]]]) -> bool:
        return any(
            e.get("event") == "app.logged" and e.get("log_size", 0) >= size for e in events["v4"]
        )

    assert archived.cluster.wait(caught_up, 60), f"v4 did not catch up; see {v4.log_path}"
    events = v4.events()
    assert any(e.get("event") == "consensus.rejoining" for e in events)
    # Once the grace period is over it votes again: its SCTs are in new certificates.
    deadline = time.monotonic() + 30
    signers: set[str] = set()
    while "v4" not in signers and time.monotonic() < deadline:
        time.sleep(1)
        _, csr = make_key_and_csr([f"r{time.monotonic_ns()}.trust.hypermesh.online"])
        doc = request_certificate(client, account, archived.dir / "accounts/demo.plot", csr)
        signers = set(doc["signers"])
    assert "v4" in signers
    assert region.archive(PREFIX).get("checkpoint") is not None
