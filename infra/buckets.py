"""S3 bucket provisioning for TrustChain's archive (DESIGN.md section 8).

Each region has two buckets, named by :func:`bucket_names`:

- ``PREFIX-ct-logs-ENV-REGION``: the CT log (checkpoints, tiles, issuers, state
  snapshots), with the spec's retention lifecycle: Standard-IA after 30 days,
  Glacier (Instant Retrieval) after 90, expiry after 7 years;
- ``PREFIX-certificates-ENV-REGION``: issued certificates; every overwritten
  or deleted object is kept as a noncurrent version for 7 years (the spec's
  "backup: enabled").

Both are versioned, encrypted with SSE-KMS under the deployment's storage key,
have every public access block set, ACLs disabled, and a policy that refuses
plain-HTTP requests.  ``infra/cloudformation/storage.yaml`` creates the same
buckets; the tests check that the two agree.

Contract of :func:`ensure_buckets`: afterwards every named bucket exists in
the given region with exactly these settings; a second call with the same
arguments changes nothing and reports every setting as ``unchanged``.  It never
deletes a bucket or an object and never touches a setting it does not own
(replication, tags, notifications).  Errors from S3 propagate as
:class:`ProvisioningError` with a message that says what to do; a failure part
way leaves the settings already applied in place, and running again finishes
the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

BucketKind = Literal["ct-logs", "certificates"]
KINDS: tuple[BucketKind, ...] = ("ct-logs", "certificates")

# 7 years of days, counting the two leap days any 7 consecutive years contain,
# so that "expiry after 7 years" never deletes an object a day early.
RETENTION_DAYS = 2557
INFREQUENT_ACCESS_AFTER_DAYS = 30
GLACIER_AFTER_DAYS = 90
# Glacier Instant Retrieval rather than Glacier Flexible Retrieval: archived
# tiles and checkpoints must stay readable in milliseconds for monitors and
# for `trustchain restore`; Flexible Retrieval needs an hours-long restore.
GLACIER_STORAGE_CLASS = "GLACIER_IR"
# Noncurrent versions in the CT bucket exist only for the `checkpoint`
# pointer, whose every value is also stored under checkpoints/<size>.
CT_NONCURRENT_DAYS = 30
ABORT_MULTIPART_AFTER_DAYS = 7

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}

Action = Literal["created", "updated", "unchanged"]


class ProvisioningError(Exception):
    """AWS refused a provisioning step; the message says what to do next."""


@dataclass(frozen=True)
class Change:
    """One setting of one bucket, as :func:`ensure_buckets` left it."""

    bucket: str
    """The bucket's name."""
    setting: str
    """``bucket``, ``versioning``, ``encryption``, ``public-access-block``,
    ``ownership``, ``lifecycle`` or ``policy``."""
    action: Action
    """What this call did to the setting."""


def bucket_names(prefix: str, environment: str, region: str) -> dict[BucketKind, str]:
    """The two bucket names of one region, as storage.yaml names them."""
    return {
        "ct-logs": f"{prefix}-ct-logs-{environment}-{region}",
        "certificates": f"{prefix}-certificates-{environment}-{region}",
    }


def storage_key_alias(environment: str) -> str:
    """The KMS alias of the deployment's storage key in each region."""
    return f"alias/trustchain-storage-{environment}"


# The storage key's policy lets the account administer the key and delegate
# its use to IAM policies.  Listed one by one instead of kms:*.
KEY_POLICY_ACTIONS = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:ListResourceTags",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateKeyDescription",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:CreateGrant",
    "kms:ListGrants",
    "kms:RevokeGrant",
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
)


def key_policy(account_id: str, partition: str = "aws") -> dict[str, Any]:
    """The storage key's policy (the same as storage.yaml's)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersAndDelegates",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": list(KEY_POLICY_ACTIONS),
                "Resource": "*",
            }
        ],
    }


def lifecycle_rules(kind: BucketKind) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules in the shape PutBucketLifecycleConfiguration takes."""
    transitions = [
        {"Days": INFREQUENT_ACCESS_AFTER_DAYS, "StorageClass": "STANDARD_IA"},
        {"Days": GLACIER_AFTER_DAYS, "StorageClass": GLACIER_STORAGE_CLASS},
    ]
    abort = {"DaysAfterInitiation": ABORT_MULTIPART_AFTER_DAYS}
    if kind == "ct-logs":
        return [
            {
                "ID": "ct-data-retention",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "Transitions": transitions,
                "Expiration": {"Days": RETENTION_DAYS},
                "NoncurrentVersionExpiration": {"NoncurrentDays": CT_NONCURRENT_DAYS},
                "AbortIncompleteMultipartUpload": abort,
            }
        ]
    return [
        {
            "ID": "certificate-backups",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionTransitions": [
                {"NoncurrentDays": t["Days"], "StorageClass": t["StorageClass"]}
                for t in transitions
            ],
            "NoncurrentVersionExpiration": {"NoncurrentDays": RETENTION_DAYS},
            "AbortIncompleteMultipartUpload": abort,
        }
    ]


def tls_only_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    """A bucket policy refusing every request not made over TLS."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def canonical_lifecycle(rules: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Lifecycle rules reduced to what we set, for comparing with what S3 returns.

    S3 may return a rule's prefix as ``Prefix`` or ``Filter.Prefix``, numbers
    as strings, and fields we never set; none of that is a difference.
    """

    def days(items: Sequence[dict[str, Any]], key: str) -> tuple[tuple[int, str], ...]:
        return tuple(sorted((int(i[key]), str(i["StorageClass"])) for i in items))

    out = []
    for r in rules:
        prefix = r.get("Filter", {}).get("Prefix", r.get("Prefix", ""))
        out.append(
            (
                r.get("ID", ""),
                r.get("Status", ""),
                prefix or "",
                days(r.get("Transitions", []), "Days"),
                int(r["Expiration"]["Days"]) if "Days" in r.get("Expiration", {}) else None,
                days(r.get("NoncurrentVersionTransitions", []), "NoncurrentDays"),
                int(r["NoncurrentVersionExpiration"]["NoncurrentDays"])
                if "NoncurrentVersionExpiration" in r
                else None,
                int(r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
                if "AbortIncompleteMultipartUpload" in r
                else None,
            )
        )
    return sorted(out, key=lambda t: str(t[0]))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _fail(bucket: str, step: str, exc: ClientError) -> ProvisioningError:
    err = exc.response.get("Error", {})
    return ProvisioningError(
        f"bucket {bucket}: {step} failed: {err.get('Code', '?')}: {err.get('Message', exc)}; "
        "check the credentials' S3 permissions and the region, then run the command again"
    )


def ensure_storage_key(kms: Any, environment: str, account_id: str) -> str:
    """The ARN of the deployment's storage key in the client's region, created if missing.

    The key is found by its alias (:func:`storage_key_alias`), so calling this
    again returns the same key.  New keys get automatic rotation and
    :func:`key_policy`.
    """
    alias = storage_key_alias(environment)
    try:
        return str(kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise ProvisioningError(
                f"KMS key {alias}: lookup failed: {exc}; check the credentials' KMS permissions"
            ) from None
    try:
        meta = kms.create_key(
            Description=f"TrustChain {environment} storage encryption (S3 SSE-KMS)",
            KeySpec="SYMMETRIC_DEFAULT",
            KeyUsage="ENCRYPT_DECRYPT",
            Policy=json.dumps(key_policy(account_id)),
        )["KeyMetadata"]
        kms.enable_key_rotation(KeyId=meta["KeyId"])
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    except ClientError as exc:
        raise ProvisioningError(
            f"KMS key {alias}: creation failed: {exc}; check the credentials' KMS permissions"
        ) from None
    return str(meta["Arn"])


def _ensure_exists(s3: Any, bucket: str, region: str) -> Action:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = _code(exc)
        if code in ("403", "AccessDenied"):
            raise ProvisioningError(
                f"bucket {bucket} exists but these credentials may not use it (bucket names "
                "are global: another account may own it); choose another --prefix"
            ) from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise _fail(bucket, "lookup", exc) from None
    else:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location != region:
            raise ProvisioningError(
                f"bucket {bucket} already exists in {location}, not in {region}; "
                "use that region or another --prefix"
            )
        return "unchanged"
    args: dict[str, Any] = {"Bucket": bucket}
    # us-east-1 is the one region that must not be named as a location (S3 API).
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**args)
    except ClientError as exc:
        raise _fail(bucket, "creation", exc) from None
    return "created"


def _get(s3: Any, method: str, bucket: str, missing: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = getattr(s3, method)(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) in missing:
            return None
        raise _fail(bucket, method, exc) from None
    return result


def ensure_bucket(
    s3: Any,
    bucket: str,
    kind: BucketKind,
    region: str,
    kms_key_arn: str,
    progress: Callable[[Change], None] = lambda change: None,
) -> list[Change]:
    """One bucket of :func:`ensure_buckets`; see the module docstring for the contract."""
    changes: list[Change] = []

    def record(change: Change) -> None:
        changes.append(change)
        progress(change)

    record(Change(bucket, "bucket", _ensure_exists(s3, bucket, region)))

    def step(setting: str, current_ok: bool, existed: bool, apply: Callable[[], Any]) -> None:
        if current_ok:
            record(Change(bucket, setting, "unchanged"))
            return
        try:
            apply()
        except ClientError as exc:
            raise _fail(bucket, setting, exc) from None
        record(Change(bucket, setting, "updated" if existed else "created"))

    versioning = s3.get_bucket_versioning(Bucket=bucket)
    step(
        "versioning",
        versioning.get("Status") == "Enabled",
        "Status" in versioning,
        lambda: s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        ),
    )

    want_sse = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_arn}
    enc = _get(
        s3, "get_bucket_encryption", bucket, ("ServerSideEncryptionConfigurationNotFoundError",)
    )
    rules = (enc or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    enc_ok = len(rules) == 1 and rules[0].get("ApplyServerSideEncryptionByDefault") == want_sse
    enc_ok = enc_ok and bool(rules[0].get("BucketKeyEnabled"))
    step(
        "encryption",
        enc_ok,
        bool(rules),
        lambda: s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": want_sse, "BucketKeyEnabled": True}
                ]
            },
        ),
    )

    pab = _get(s3, "get_public_access_block", bucket, ("NoSuchPublicAccessBlockConfiguration",))
    current_pab = (pab or {}).get("PublicAccessBlockConfiguration")
    step(
        "public-access-block",
        current_pab == PUBLIC_ACCESS_BLOCK,
        current_pab is not None,
        lambda: s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=dict(PUBLIC_ACCESS_BLOCK)
        ),
    )

    own = _get(s3, "get_bucket_ownership_controls", bucket, ("OwnershipControlsNotFoundError",))
    own_rules = (own or {}).get("OwnershipControls", {}).get("Rules", [])
    want_own = [{"ObjectOwnership": "BucketOwnerEnforced"}]
    step(
        "ownership",
        own_rules == want_own,
        bool(own_rules),
        lambda: s3.put_bucket_ownership_controls(
            Bucket=bucket, OwnershipControls={"Rules": want_own}
        ),
    )

    want_rules = lifecycle_rules(kind)
    life = _get(s3, "get_bucket_lifecycle_configuration", bucket, ("NoSuchLifecycleConfiguration",))
    have_rules = (life or {}).get("Rules", [])
    step(
        "lifecycle",
        canonical_lifecycle(have_rules) == canonical_lifecycle(want_rules),
        bool(have_rules),
        lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": want_rules}
        ),
    )

    want_policy = tls_only_policy(bucket)
    pol = _get(s3, "get_bucket_policy", bucket, ("NoSuchBucketPolicy",))
    have_policy = json.loads(pol["Policy"]) if pol and pol.get("Policy") else None
    step(
        "policy",
        have_policy == want_policy,
        have_policy is not None,
        lambda: s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(want_policy)),
    )
    return changes


def ensure_buckets(
    s3: Any,
    buckets: Sequence[tuple[BucketKind, str]],
    region: str,
    kms_key_arn: str,
    progress: Callable[[Change], None] = lambda change: None,
) -> list[Change]:
    """Create or fix the buckets; see the module docstring for the contract.

    `s3` is a boto3 S3 client for `region`; `buckets` pairs each bucket's kind
    with its name; `kms_key_arn` is the storage key (see
    :func:`ensure_storage_key`).  `progress` is called once per setting as it
    is settled.
    """
    changes: list[Change] = []
    for kind, name in buckets:
        changes.extend(ensure_bucket(s3, name, kind, region, kms_key_arn, progress))
    return changes
