"""Local stand-ins for the two AWS regions, for the tests and `trustchain drill`.

Each region is its own moto S3 server *process* on ::1 (so that "the region
goes down" is a real SIGKILL), and its archive bucket is created by the same
provisioning code that creates the real ones (`trustchain.infra.buckets`:
versioning, SSE-KMS, public access block, lifecycle).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustchain.ct.devcerts import make_tls_server
from trustchain.infra import buckets
from trustchain.infra.s3archive import S3Archive, s3_client
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
