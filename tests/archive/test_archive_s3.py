"""trustchain.infra.s3archive against moto S3 servers on ::1."""

from __future__ import annotations

import itertools
from typing import Any

import boto3
import pytest

from trustchain.infra.s3archive import ArchiveConflict, ArchiveError, Retry, S3Archive, s3_client
from trustchain.node.drill import LocalRegion

pytestmark = pytest.mark.slow
_n = itertools.count()


def fresh(region: LocalRegion) -> S3Archive:
    return region.archive(f"t{next(_n)}")


def test_buckets_are_provisioned_like_real_ones(regions: dict[str, LocalRegion]) -> None:
    for region in regions.values():
        s3: Any = region.s3()
        assert s3.get_bucket_versioning(Bucket=region.bucket)["Status"] == "Enabled"
        enc = s3.get_bucket_encryption(Bucket=region.bucket)["ServerSideEncryptionConfiguration"]
        assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        pab = s3.get_public_access_block(Bucket=region.bucket)["PublicAccessBlockConfiguration"]
        assert all(pab.values())
        assert s3.get_bucket_lifecycle_configuration(Bucket=region.bucket)["Rules"]


def test_immutable_upload_is_idempotent_and_never_replaced(
    regions: dict[str, LocalRegion],
) -> None:
    a = fresh(regions["us-west-2"])
    assert a.put_immutable("tile/0/000", b"x" * 32) == "created"
    assert a.put_immutable("tile/0/000", b"x" * 32) == "exists"
    with pytest.raises(ArchiveConflict, match="already holds other data"):
        a.put_immutable("tile/0/000", b"y" * 32)
    assert a.get("tile/0/000") == b"x" * 32
    assert a.get("tile/0/001") is None
    assert list(a.keys("tile/")) == ["tile/0/000"]


def test_latest_pointer_is_only_replaced_when_check_says_newer(
    regions: dict[str, LocalRegion],
) -> None:
    a = fresh(regions["us-east-1"])
    order = {b"one": 1, b"two": 2, b"three": 3}

    def check_for(new: bytes) -> Any:
        def check(stored: bytes) -> str:
            if stored == b"fork":
                raise ArchiveConflict("inconsistent")
            return "replaced" if order[new] > order[stored] else "kept"

        return check

    assert a.put_latest("checkpoint", b"two", check_for(b"two")) == "created"
    assert a.put_latest("checkpoint", b"one", check_for(b"one")) == "kept"
    assert a.get("checkpoint") == b"two"
    assert a.put_latest("checkpoint", b"three", check_for(b"three")) == "replaced"
    assert a.get("checkpoint") == b"three"
    a.s3.put_object(Bucket=a.bucket, Key=a.prefix + "checkpoint", Body=b"fork")
    with pytest.raises(ArchiveConflict):
        a.put_latest("checkpoint", b"three", check_for(b"three"))


def test_unreachable_region_is_retried_then_reported() -> None:
    sleeps: list[float] = []
    # A port nothing listens on: connection refused every time.
    dead = s3_client("us-west-2", "http://[::1]:9", timeout=0.5)
    a = S3Archive(dead, "b", "p", region="us-west-2", retry=Retry(attempts=4), sleep=sleeps.append)
    with pytest.raises(ArchiveError, match=r"us-west-2: s3://b/p/tile/0/000: PUT failed after 4"):
        a.put_immutable("tile/0/000", b"x")
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]


def test_missing_bucket_is_refused_at_once(regions: dict[str, LocalRegion]) -> None:
    region = regions["us-west-2"]
    sleeps: list[float] = []
    a = S3Archive(region.s3(), "no-such-bucket", region="us-west-2", sleep=sleeps.append)
    with pytest.raises(ArchiveError, match="NoSuchBucket"):
        a.put_immutable("k", b"x")
    assert sleeps == []
    # A name S3 cannot have is refused by botocore before any request: no retries.
    bad = S3Archive(region.s3(), "Bad Name!", region="us-west-2", sleep=sleeps.append)
    with pytest.raises(ArchiveError, match="Invalid bucket name"):
        bad.get("checkpoint")
    assert sleeps == []
    assert boto3  # the same client library the real deployment uses
