"""`trustchain drill failover`, its verdict, and the epoch file a failover writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trustchain.consensus.core import Anchor
from trustchain.ct.checkpoint import Checkpoint
from trustchain.ct.note import NoteSignature, format_note
from trustchain.node.cli import main
from trustchain.node.config import ConfigError
from trustchain.node.drill import Acknowledged, judge
from trustchain.node.epoch import (
    check_epoch_state,
    epoch_chain_id,
    load_epoch,
    write_epoch,
)

ORIGIN = "drill.ct.trustchain"


def _root(size: int, fork: str = "") -> bytes:
    return hashlib.sha256(f"{fork}root of {size}".encode()).digest()


def _note(size: int, fork: str = "") -> str:
    text = Checkpoint(ORIGIN, size, _root(size, fork)).text()
    return format_note(text, [NoteSignature(ORIGIN, 1, b"sig")]).decode()


def _ack(serial: str, index: int, size: int, fork: str = "") -> Acknowledged:
    return Acknowledged(serial, index, _note(size, fork))


def test_judge_passes_a_restored_log_holding_everything() -> None:
    acks = [_ack("a1", 0, 1), _ack("a2", 1, 3), _ack("a3", 2, 3)]
    leaves = {"a1": 0, "a2": 1, "a3": 2}
    missing, forks, checked = judge(acks, leaves.get, lambda n: _root(n) if n <= 5 else None)
    assert (missing, forks, checked) == ([], [], 2)


def test_judge_names_lost_and_moved_certificates() -> None:
    acks = [_ack("a1", 0, 1), _ack("a2", 1, 2), _ack("a3", 2, 3)]
    leaves = {"a1": 0, "a3": 7}  # a2 unknown, a3 at another leaf
    missing, _, _ = judge(acks, leaves.get, _root)
    assert missing == ["a2", "a3"]


def test_judge_names_forked_and_lost_checkpoints() -> None:
    acks = [_ack("a1", 0, 1), _ack("a2", 1, 2, fork="other "), _ack("a3", 2, 9)]
    leaves = {"a1": 0, "a2": 1, "a3": 2}
    _, forks, checked = judge(acks, leaves.get, lambda n: _root(n) if n <= 5 else None)
    assert checked == 3
    assert [f.split("/")[0] for f in forks] == ["2", "9"]  # another root; a shorter log


def test_epoch_file_round_trip_and_chain_id(tmp_path: Path) -> None:
    anchor = Anchor(105, 1_700_000_000_000, bytes(8) + b"r" * 32)
    write_epoch(tmp_path, anchor)
    epoch = load_epoch(tmp_path, "chain-a")
    assert epoch is not None and epoch.anchor == anchor
    assert epoch.chain_id == epoch_chain_id("chain-a", anchor)
    assert epoch.chain_id.startswith("chain-a/epoch-105-")
    other = epoch_chain_id("chain-a", Anchor(105, anchor.timestamp, bytes(40)))
    assert other != epoch.chain_id
    assert load_epoch(tmp_path / "nothing-here", "chain-a") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('height = 1\ntimestamp = 2\nstate = "zz"\n', "expected a hex string"),
        ('height = 1\ntimestamp = 2\nstate = "00"\n', "expected 40 bytes"),
        ('height = -1\ntimestamp = 2\nstate = "00"\n', "non-negative integer"),
        ("height = 1\ntimestamp = 2\n", "state"),
        (f'height = 1\ntimestamp = 2\nstate = "{"00" * 40}"\nextra = 1\n', "unknown key"),
        ("height = ", "not valid TOML"),
    ],
)
def test_a_damaged_epoch_file_is_named(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "epoch.toml").write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_epoch(tmp_path, "chain-a")
    assert "epoch.toml" in str(info.value)


def test_state_behind_the_anchor_is_refused(tmp_path: Path) -> None:
    anchor = Anchor(10, 5, b"s" * 40)
    write_epoch(tmp_path, anchor)
    epoch = load_epoch(tmp_path, "c")
    assert epoch is not None
    check_epoch_state(epoch, 10, b"s" * 40, tmp_path)
    check_epoch_state(epoch, 12, b"t" * 40, tmp_path)  # the epoch went on
    for height, state in ((9, b"s" * 40), (10, b"t" * 40)):
        with pytest.raises(ConfigError, match="restore the directory again"):
            check_epoch_state(epoch, height, state, tmp_path)


@pytest.mark.slow
def test_failover_drill_loses_no_acknowledged_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "drill"
    status = main(
        ["drill", "failover", "--dir", str(directory), "--seconds", "3", "--clients", "2", "--json"]
    )
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert status == 0, err
    assert doc["ok"] and doc["mode"] == "both"
    assert doc["acknowledged"] > 0 and doc["missing"] == 0 and doc["forked_checkpoints"] == []
    assert doc["checkpoints_checked"] >= 1
    assert doc["rto_seconds"] > 0 and doc["issued_after_failover"] >= 1
    assert doc["restored_entries"] >= doc["acknowledged"]
    assert json.loads((directory / "drill.json").read_text()) == doc
    # The restored validators started a new consensus epoch at the same anchor.
    anchors = {(directory / "us-east-1" / v / "epoch.toml").read_text() for v in ("v1", "v4")}
    assert len(anchors) == 1
    assert "outage: SIGKILL every us-west-2 node" in err
    # A second drill in the same directory starts over; another directory is refused.
    assert main(["drill", "failover", "--dir", str(tmp_path), "--seconds", "1"]) == 2


@pytest.mark.slow
def test_a_bad_archive_table_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    from trustchain.node.localcluster import create_full_cluster

    cluster = create_full_cluster(tmp_path / "c", 1)
    node = cluster.nodes[0]
    with open(node.config, "a") as fh:
        fh.write('[archive]\nmode = "sometimes"\n[[archive.regions]]\nname = "us-west-2"\n'
                 'bucket = "b"\n')  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", "node", "run", "--config", str(node.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "key 'archive.mode'" in out.stderr and "sometimes" in out.stderr
    assert "Traceback" not in out.stderr
