"""The S3 adapter of TrustChain's two-region archive (DESIGN.md section 8).

One :class:`S3Archive` is one bucket (under a key prefix) in one region.  The
interface is narrow on purpose, so that the node's archiver and
``trustchain restore`` cannot do anything else to a bucket:

- :meth:`S3Archive.put_immutable` writes an object that never changes (tiles,
  entry bundles, issuer certificates, state segments, ``checkpoints/<size>``)
  with ``If-None-Match: *`` (S3 conditional writes): a second upload of the same
  bytes is a no-op (``"exists"``), an upload of *other* bytes under the same key
  raises :class:`ArchiveConflict` and leaves the stored object alone.
- :meth:`S3Archive.put_latest` replaces the ``checkpoint`` object only by a
  newer one that the caller's ``check`` accepts as consistent with what is
  stored (a conditional write with ``If-Match`` on the ETag it checked, so a
  concurrent writer cannot slip an older checkpoint in between); an older or
  inconsistent checkpoint is never written.
- :meth:`S3Archive.get` and :meth:`S3Archive.keys` read.

Every call is retried with exponential backoff (with jitter) on errors that
may pass: connection failures, timeouts, 5xx, throttling.  Errors that will not
pass (access denied, no such bucket) raise :class:`ArchiveError` at once with a
message that says what to do.  This module does no cryptography and knows no
log format (infra/ depends on boto3 only): what "newer" and "consistent" mean is
the caller's ``check``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

T = TypeVar("T")
Put = Literal["created", "exists"]
Latest = Literal["replaced", "created", "kept"]

RETRYABLE_CODES = frozenset(
    {
        "500",
        "502",
        "503",
        "504",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestTimeTooSkewed",
    }
)
# A concurrent conditional write to the same key (S3 answers 409 while another
# conditional PUT of that key is in flight): try again.
CONFLICT_CODES = frozenset({"409", "ConditionalRequestConflict", "OperationAborted"})


class ArchiveError(Exception):
    """S3 refused or could not be reached; the message names the bucket, key and what to do."""


class ArchiveConflict(ArchiveError):
    """An immutable object already holds other bytes, or a checkpoint is older or inconsistent."""


@dataclass(frozen=True)
class Retry:
    """How a call is retried."""

    attempts: int = 6
    """Tries in all (the first included)."""
    base_delay: float = 0.05
    """Seconds before the second try; doubled each time, with up to 50% jitter."""
    max_delay: float = 2.0
    """Cap on one wait."""


def s3_client(
    region: str,
    endpoint: str | None = None,
    *,
    ca_bundle: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """A boto3 S3 client for `region` (and `endpoint`, e.g. a moto server; `ca_bundle`
    is the PEM file its TLS certificate chains to) with short timeouts and botocore's
    own retries off: :class:`S3Archive` retries itself."""
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        verify=ca_bundle,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            max_pool_connections=32,
        ),
    )


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class S3Archive:
    """One bucket under one prefix; see the module docstring for the contract.

    Thread-safe as far as boto3 clients are (the node calls it from worker threads).
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        prefix: str = "",
        *,
        region: str = "",
        retry: Retry = Retry(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.region = region or str(getattr(getattr(s3, "meta", None), "region_name", ""))
        self.retry = retry
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"S3Archive({self.region}: s3://{self.bucket}/{self.prefix})"

    # --- retry --------------------------------------------------------------------------

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        delay = self.retry.base_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                code = _code(exc)
                last: Exception = exc
                if code not in RETRYABLE_CODES and code not in CONFLICT_CODES:
                    raise
            except ParamValidationError as exc:  # e.g. a bucket name S3 cannot have
                raise ArchiveError(
                    f"{self.region}: s3://{self.bucket}/{self.prefix}{key}: {what}: {exc}"
                ) from None
            except BotoCoreError as exc:  # connection refused, timeouts, DNS
                last = exc
            if attempt == self.retry.attempts:
                break
            self._sleep(min(self.retry.max_delay, delay) * (1 + random.random() / 2))
            delay *= 2
        raise ArchiveError(
            f"{self.region}: s3://{self.bucket}/{self.prefix}{key}: {what} failed after "
            f"{self.retry.attempts} tries: {last}; check that the region's S3 endpoint is "
            "reachable and the credentials allow it"
        )

    def _fail(self, what: str, key: str, exc: ClientError) -> ArchiveError:
        err = exc.response.get("Error", {})
        return ArchiveError(
            f"{self.region}: s3://{self.bucket}/{self.prefix}{key}: {what} refused: "
            f"{err.get('Code', '?')}: {err.get('Message', exc)}; check the bucket name, "
            "region and the credentials' S3 permissions"
        )

    # --- reads ----------------------------------------------------------------------------

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if there is none."""

        def get() -> tuple[bytes, str] | None:
            try:
                r = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    return None
                raise
            return bytes(r["Body"].read()), str(r["ETag"])

        try:
            return self._call("GET", key, get)
        except ClientError as exc:
            raise self._fail("GET", key, exc) from None

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        got = self.get_with_etag(key)
        return None if got is None else got[0]

    def keys(self, under: str = "") -> Iterator[str]:
        """Every key below `under` (relative to the prefix), in S3's (lexical) order."""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + under}
            if token:
                args["ContinuationToken"] = token
            try:
                page = self._call("LIST", under, partial(self.s3.list_objects_v2, **args))
            except ClientError as exc:
                raise self._fail("LIST", under, exc) from None
            for item in page.get("Contents", []):
                yield str(item["Key"])[len(self.prefix) :]
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    # --- writes ---------------------------------------------------------------------------

    def put_immutable(
        self, key: str, data: bytes, *, same: Callable[[bytes], bool] | None = None
    ) -> Put:
        """Write `data` under `key` unless it exists; see the module contract.

        `same(stored)` decides whether an existing object is this one (default:
        byte equality); a checkpoint with more cosignatures over the same text
        is "the same" checkpoint.
        """

        def put() -> Put:
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*"
                )
            except ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "412"):
                    return "exists"
                raise
            return "created"

        try:
            result = self._call("PUT", key, put)
        except ClientError as exc:
            raise self._fail("PUT", key, exc) from None
        if result == "exists":
            stored = self.get(key)
            if stored is None or not (same(stored) if same else stored == data):
                raise ArchiveConflict(
                    f"{self.region}: s3://{self.bucket}/{self.prefix}{key} already holds "
                    "other data; an immutable object was not replaced (investigate: another "
                    "log writes to this bucket, or the log forked)"
                )
        return result

    def put_over(self, key: str, data: bytes) -> None:
        """Write `data` under `key` whatever is there (the bucket's versioning keeps the
        old object).  Only for what a previous consensus epoch archived beyond the
        point a restored cluster started from (trustchain.node.archive)."""

        def put() -> None:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

        try:
            self._call("PUT", key, put)
        except ClientError as exc:
            raise self._fail("PUT", key, exc) from None

    def put_latest(self, key: str, data: bytes, check: Callable[[bytes], Latest]) -> Latest:
        """Replace the mutable pointer `key` (``checkpoint``) by `data` if `check` says so.

        `check(stored)` returns ``"replaced"`` if `data` is newer and consistent with
        the stored object, ``"kept"`` if the stored one is as new or newer (nothing is
        written), and raises :class:`ArchiveConflict` if they are inconsistent.  The
        write is conditional on the ETag that was checked; if another writer got
        there first, the new stored object is checked again.
        """
        for _ in range(self.retry.attempts * 2):
            current = self.get_with_etag(key)
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key, "Body": data}
            if current is None:
                args["IfNoneMatch"] = "*"
                outcome: Latest = "created"
            else:
                outcome = check(current[0])
                if outcome == "kept":
                    return "kept"
                args["IfMatch"] = current[1]

            def put(args: dict[str, Any] = args) -> bool:
                try:
                    self.s3.put_object(**args)
                except ClientError as exc:
                    if _code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                        return False  # someone else wrote it meanwhile: look again
                    raise
                return True

            try:
                if self._call("PUT", key, put):
                    return outcome
            except ClientError as exc:
                raise self._fail("PUT", key, exc) from None
        raise ArchiveError(
            f"{self.region}: s3://{self.bucket}/{self.prefix}{key}: kept changing under "
            "concurrent writers; try again"
        )
