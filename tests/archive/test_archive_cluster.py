"""A 4-validator cluster archiving to two moto regions; restore and its refusals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trustchain.ct.checkpoint import parse_checkpoint
from trustchain.ct.note import parse_note
from trustchain.node.cli_cert import (
    cluster_client,
    load_account,
    make_key_and_csr,
    request_certificate,
)
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
    cluster = create_full_cluster(directory, 4)
    for node in cluster.nodes:
        with open(node.config, "a") as fh:
            fh.write(archive_table(regions))
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
        note = a.get("checkpoint")
        assert note is not None
        assert parse_checkpoint(parse_note(note).text).size > last
        assert a.get(f"checkpoints/{parse_checkpoint(parse_note(note).text).size}") is not None
        assert any(k.startswith("tile/data/") for k in a.keys("tile/"))
        assert list(a.keys("state/"))
