"""Local stand-ins for the two AWS regions, and `trustchain drill failover`.

Each region is its own moto S3 server *process* on ::1 (so that "the region
goes down" is a real SIGKILL), and its archive bucket is created by the same
provisioning code that creates the real ones (`trustchain.infra.buckets`:
versioning, SSE-KMS, public access block, lifecycle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustchain.ct.devcerts import make_tls_server
from trustchain.infra import buckets
from trustchain.infra.s3archive import S3Archive, s3_client
from trustchain.node.archive import note_checkpoint, read_tile, tree_root
from trustchain.node.cli_cert import ApiError
from trustchain.node.errors import UserError
from trustchain.node.localcluster import free_ports

REGIONS = ("us-west-2", "us-east-1")
"""The primary region and the failover region of aws-requirements.md."""
FAKE_ACCOUNT = "123456789012"


def _free_port() -> int:
    return free_ports(1, socket.SOCK_STREAM)[0]


def _moto_env() -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    }


@dataclass
class LocalRegion:
    """One region: a moto S3 server process on ::1 and its provisioned archive bucket."""

    name: str
    """The AWS region name (us-west-2, us-east-1)."""
    bucket: str
    """The CT archive bucket (``PREFIX-ct-logs-ENV-REGION``)."""
    endpoint: str = ""
    """``https://[::1]:PORT`` once started."""
    ca_bundle: str | None = None
    """PEM file of the CA of the server's TLS certificate (the buckets refuse plain HTTP)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    """The moto server (None once killed)."""

    @classmethod
    def start(
        cls, name: str, workdir: Path, prefix: str = "trustchain", environment: str = "drill"
    ) -> LocalRegion:
        """Start the server in `workdir` (TLS certificate files), wait until it answers,
        and provision the bucket."""
        workdir.mkdir(parents=True, exist_ok=True)
        ca, server = make_tls_server(("::1",))
        (workdir / "ca.pem").write_bytes(ca.pem)
        (workdir / "server.pem").write_bytes(server.pem)
        (workdir / "server.key").write_bytes(server.key_pem)
        (workdir / "server.key").chmod(0o600)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        port = _free_port()
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        proc = subprocess.Popen(
            [
                exe,
                "-H",
                "::1",
                "-p",
                str(port),
                "-s",
                "-c",
                str(workdir / "server.pem"),
                "-k",
                str(workdir / "server.key"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_moto_env(),
            start_new_session=True,
        )
        region = cls(name, buckets.bucket_names(prefix, environment, name)["ct-logs"])
        region.endpoint = f"https://[::1]:{port}"
        region.ca_bundle = str(workdir / "ca.pem")
        region.process = proc
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("::1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    region.kill()
                    raise RuntimeError(f"moto server for {name} did not start") from None
                time.sleep(0.05)
        region.provision(environment)
        return region

    def provision(self, environment: str) -> None:
        import boto3

        kms = boto3.client(
            "kms", region_name=self.name, endpoint_url=self.endpoint, verify=self.ca_bundle
        )
        key = buckets.ensure_storage_key(kms, environment, FAKE_ACCOUNT)
        s3: Any = self.s3()
        buckets.ensure_buckets(s3, [("ct-logs", self.bucket)], self.name, key)
        # moto evaluates bucket policies but not the aws:SecureTransport condition: it
        # denies HTTPS requests too.  The policy was set (and checked) by the real
        # provisioning code above; only here, against moto, is it taken off again.
        s3.delete_bucket_policy(Bucket=self.bucket)

    def s3(self) -> Any:
        return s3_client(self.name, self.endpoint, ca_bundle=self.ca_bundle, timeout=2.0)

    def archive(self, prefix: str = "") -> S3Archive:
        return S3Archive(self.s3(), self.bucket, prefix, region=self.name)

    def kill(self) -> None:
        """SIGKILL the server: the region is gone, with everything in it."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


# --- the failover drill -----------------------------------------------------------------------

PREFIX = "log"
"""Key prefix of the drill's archive in both buckets."""


@dataclass
class Acknowledged:
    """A certificate the west cluster answered (the drill's record of what must survive)."""

    serial: str
    leaf_index: int
    checkpoint: str
    """The cosigned checkpoint the answer carried (signed note text)."""


@dataclass(frozen=True)
class DrillReport:
    mode: str
    """Durability mode of the cluster that failed (`both` or `local`)."""
    acknowledged: int
    """Certificates answered before the outage."""
    missing: list[str]
    """Serials of acknowledged certificates the restored cluster does not know (RPO)."""
    checkpoints: int
    """Distinct checkpoints seen before the outage and checked after it."""
    forks: list[str]
    """Checkpoints seen before the outage that the restored log contradicts."""
    restore_seconds: float
    """Wall time of the restores (four validators, in parallel)."""
    restored_entries: int
    rto_seconds: float | None
    """From the outage to the first certificate issued by the restored cluster."""
    issued_after: int
    """Certificates issued after the failover (the first one and any after it)."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.forks and self.rto_seconds is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "mode": self.mode, "acknowledged": self.acknowledged,
            "missing": len(self.missing), "missing_serials": self.missing[:20],
            "rpo_certificates": len(self.missing), "checkpoints_checked": self.checkpoints,
            "forked_checkpoints": self.forks[:20],
            "restore_seconds": round(self.restore_seconds, 2),
            "restored_entries": self.restored_entries,
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 2),
            "issued_after_failover": self.issued_after,
        }  # fmt: skip


def judge(
    acknowledged: list[Acknowledged],
    status: Callable[[str], int | None],
    root_at: Callable[[int], bytes | None],
) -> tuple[list[str], list[str], int]:
    """Compare what was acknowledged before the outage with the restored log.

    `status(serial)` is the leaf index the restored cluster has for a serial
    (None if unknown); `root_at(size)` is the restored log's root at that size
    (None if it is smaller).  Returns (missing serials, forked checkpoints,
    checkpoints checked).  A certificate is missing if it is unknown or at
    another leaf; a checkpoint is forked if the restored tree of its size has
    another root (or the log is shorter: it lost acknowledged entries).
    """
    from trustchain.node.archive import note_checkpoint

    missing = [a.serial for a in acknowledged if status(a.serial) != a.leaf_index]
    seen: dict[tuple[int, bytes], str] = {}
    for a in acknowledged:
        cp = note_checkpoint(a.checkpoint.encode())
        seen.setdefault((cp.size, cp.root_hash), f"{cp.size}/{cp.root_hash.hex()[:16]}")
    forks = [label for (size, root), label in sorted(seen.items()) if root_at(size) != root]
    return missing, forks, len(seen)


def failover_drill(
    directory: Path,
    *,
    seconds: float = 10.0,
    clients: int = 4,
    mode: str = "both",
    timeout: float = 180.0,
    progress: Callable[[str], None] = lambda text: None,
) -> DrillReport:
    """Run the whole drill of docs/durability.md in `directory` (emptied first).

    Two moto S3 servers stand for the regions.  A 4-validator cluster "in
    us-west-2" archives to both with durability `mode` while `clients`
    threads issue certificates for `seconds`; then every us-west-2 node and the
    us-west-2 S3 server are SIGKILLed.  A cluster "in us-east-1" is rebuilt
    from the us-east-1 bucket (`trustchain restore --new-cluster` for each
    validator), the HSM token backups taken after the key ceremony and the
    nodes' configuration, with durability `local` (its other region is down),
    and issues again.  Everything the drill started is stopped at the end.
    """
    from trustchain.node.cli_cert import cluster_client, epoch_proofs, load_account
    from trustchain.node.localcluster import LocalCluster, NodeProcess, create_full_cluster
    from trustchain.node.restore import restore

    if directory.exists() and not directory.is_dir():
        raise UserError(f"--dir {directory}: is a file; give an empty or new folder")
    if directory.exists():
        if any(directory.iterdir()) and not (directory / "drill.json").exists():
            raise UserError(
                f"{directory} exists and is not a drill directory; give an empty or new --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / "drill.json").write_text(json.dumps({"state": "running"}) + "\n")
    west_dir, east_dir = directory / "us-west-2", directory / "us-east-1"
    regions: dict[str, LocalRegion] = {}
    clusters: list[LocalCluster] = []
    try:
        for name in REGIONS:
            progress(f"{name}: S3 server (moto) on ::1 and the archive bucket")
            regions[name] = LocalRegion.start(name, directory / "s3" / name)
        progress("us-west-2: key ceremony on SoftHSM2, genesis, account plot")
        with contextlib.redirect_stdout(sys.stderr):  # the ceremony's report; --json is stdout
            west = create_full_cluster(west_dir, 4, progress=progress)
        clusters.append(west)
        backup = directory / "hsm-backup"
        shutil.copytree(west_dir / "ca", backup)
        base = {n.name: n.config.read_text() for n in west.nodes}
        west_regions = [regions["us-west-2"], regions["us-east-1"]]
        for n in west.nodes:
            n.config.write_text(base[n.name] + archive_table(west_regions, mode))
        west.start()
        wait_ready(west, timeout)
        account = load_account(west_dir / "accounts" / "demo.key")
        proofs = epoch_proofs(
            cluster_client(west_dir, "v1"), account, west_dir / "accounts" / "demo.plot"
        )
        progress(f"us-west-2: issuing for {seconds:g} s with {clients} clients (mode {mode})")
        load = IssuingLoad(west_dir, [n.name for n in west.nodes], proofs, clients)
        load.start()
        time.sleep(seconds)
        progress(
            f"outage: SIGKILL every us-west-2 node and the us-west-2 S3 server "
            f"({len(load.acknowledged)} certificates acknowledged so far)"
        )
        outage = time.monotonic()
        for n in west.nodes:
            n.kill()
        regions["us-west-2"].kill()
        acknowledged = load.stop()

        progress("us-east-1: HSM tokens from the backups, node configuration, restore")
        east_dir.mkdir()
        for name in ("genesis.toml", "endpoints.json"):
            shutil.copy2(west_dir / name, east_dir / name)
        for name in ("tls", "client"):
            shutil.copytree(west_dir / name, east_dir / name)
        shutil.copytree(backup, east_dir / "ca")
        east_regions = [regions["us-east-1"], regions["us-west-2"]]
        east = LocalCluster(east_dir, [NodeProcess(n.name, east_dir / n.name) for n in west.nodes])
        clusters.append(east)
        for n in east.nodes:
            n.directory.mkdir()
            for name in ("consensus.key", "tls.pem"):
                shutil.copy2(west_dir / n.name / name, n.directory / name)
            n.config.write_text(base[n.name] + archive_table(east_regions, "local"))
        started = time.monotonic()
        with ThreadPoolExecutor(len(east.nodes)) as pool:
            reports = list(
                pool.map(
                    lambda n: restore(
                        regions["us-east-1"].archive(PREFIX), east_dir / "genesis.toml",
                        n.directory, new_cluster=True,
                    ),
                    east.nodes,
                )
            )  # fmt: skip
        restore_seconds = time.monotonic() - started
        progress(
            f"us-east-1: restored {reports[0].size} entries, {reports[0].height} blocks "
            f"per validator in {restore_seconds:.1f} s; starting the cluster"
        )
        east.start()
        after = IssuingLoad(east_dir, [n.name for n in east.nodes], proofs, 1)
        after.start()
        deadline = time.monotonic() + timeout
        while not after.acknowledged and time.monotonic() < deadline:
            for n in east.nodes:
                if not n.running():
                    raise UserError(f"us-east-1: {n.name} exited; see {n.log_path}")
            time.sleep(0.05)
        rto = time.monotonic() - outage if after.acknowledged else None
        if rto is not None:
            progress(f"us-east-1: first certificate issued {rto:.1f} s after the outage")
            time.sleep(min(seconds, 3.0))
        issued_after = after.stop()

        client = cluster_client(east_dir, "v1")

        def status(serial: str) -> int | None:
            try:
                return int(client.call("GET", f"/v1/status/{serial}")["leaf_index"])
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise UserError(f"us-east-1: status of {serial}: {exc}") from None

        progress(f"checking {len(acknowledged)} acknowledged certificates on us-east-1")
        missing_status = {a.serial: status(a.serial) for a in acknowledged}
        east.stop()
        ct_dir = east_dir / "v1" / "ct"
        size = note_checkpoint((ct_dir / "checkpoint").read_bytes()).size

        def root_at(n: int) -> bytes | None:
            return tree_root(n, lambda t: read_tile(ct_dir, t)) if n <= size else None

        missing, forks, checked = judge(acknowledged, missing_status.get, root_at)
        report = DrillReport(
            mode, len(acknowledged), missing, checked, forks, restore_seconds,
            reports[0].size, rto, len(issued_after),
        )  # fmt: skip
        (directory / "drill.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
        return report
    finally:
        for cluster in clusters:
            cluster.stop()
        for region in regions.values():
            region.kill()


def archive_table(regions: list[LocalRegion], mode: str) -> str:
    text = f'\n[archive]\nprefix = "{PREFIX}"\nmode = "{mode}"\nwait_timeout = 30\n'
    for r in regions:
        text += (
            f'[[archive.regions]]\nname = "{r.name}"\nbucket = "{r.bucket}"\n'
            f'endpoint = "{r.endpoint}"\nca_bundle = "{r.ca_bundle}"\n'
        )
    return text


def wait_ready(cluster: Any, timeout: float) -> None:
    if not cluster.wait(
        lambda ev: all(any(e.get("event") == "node.ready" for e in ev[n]) for n in ev), timeout
    ):
        raise UserError(f"{cluster.directory}: the nodes were not ready within {timeout:g} s")


class IssuingLoad:
    """Client threads issuing certificates round-robin over the nodes until stopped
    (`proofs`: the account's `trustchain.node.cli_cert.EpochProofs`)."""

    def __init__(self, directory: Path, nodes: list[str], proofs: Any, clients: int) -> None:
        self.directory, self.nodes, self.proofs = directory, nodes, proofs
        self.acknowledged: list[Acknowledged] = []
        self.latencies: list[float] = []
        """Seconds from request to answer of each acknowledged certificate."""
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]
        self._count = itertools.count()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> list[Acknowledged]:
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.acknowledged

    def _run(self, worker: int) -> None:
        from trustchain.node.cli_cert import cluster_client, issue_body, make_key_and_csr

        clients = [
            dataclasses.replace(cluster_client(self.directory, n), timeout=10.0) for n in self.nodes
        ]
        while not self._stop.is_set():
            i = next(self._count)
            _, csr = make_key_and_csr([f"d{i}.drill.trust.hypermesh.online"])
            body = issue_body(self.proofs.account, csr, self.proofs.bundle(csr))
            started = time.monotonic()
            try:
                doc = clients[(worker + i) % len(clients)].call("POST", "/v1/issue", body)
            except ApiError as exc:
                with self._lock:
                    self.errors[exc.code] = self.errors.get(exc.code, 0) + 1
                self._stop.wait(0.1)
                continue
            with self._lock:
                self.latencies.append(time.monotonic() - started)
                self.acknowledged.append(
                    Acknowledged(doc["serial"], int(doc["leaf_index"]), doc["checkpoint"])
                )
