"""`trustchain infra buckets` and trustchain.infra.buckets against moto on [::1]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trustchain.infra import buckets as b
from trustchain.node.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_cli_creates_buckets_and_a_second_run_changes_nothing(
    aws: Any, moto_endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    argv = ["infra", "buckets", "--region", "eu-west-1", "--endpoint", moto_endpoint]
    argv += ["--prefix", "clitest", "--environment", "dev"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    names = b.bucket_names("clitest", "dev", "eu-west-1")
    assert out.split() == [names["ct-logs"], names["certificates"]]
    assert f"{names['ct-logs']}: bucket created" in err
    assert f"{names['ct-logs']}: lifecycle created" in err
    assert "14 settings changed" in err

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "0 settings changed" in err
    assert "created" not in err and "updated" not in err

    s3 = aws("s3", "eu-west-1")
    key = aws("kms", "eu-west-1").describe_key(KeyId=b.storage_key_alias("dev"))["KeyMetadata"]
    for kind, bucket in names.items():
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        default = enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["Arn"]}
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert b.canonical_lifecycle(rules) == b.canonical_lifecycle(b.lifecycle_rules(kind))


def test_drift_is_repaired_and_only_drift_is_reported(aws: Any) -> None:
    s3, kms = aws("s3", "us-east-2"), aws("kms", "us-east-2")
    key = b.ensure_storage_key(kms, "drift", "123456789012")
    assert b.ensure_storage_key(kms, "drift", "123456789012") == key
    pairs: list[tuple[b.BucketKind, str]] = [("ct-logs", "drift-ct-logs")]
    b.ensure_buckets(s3, pairs, "us-east-2", key)
    s3.put_bucket_versioning(
        Bucket="drift-ct-logs", VersioningConfiguration={"Status": "Suspended"}
    )
    s3.delete_bucket_lifecycle(Bucket="drift-ct-logs")
    s3.delete_public_access_block(Bucket="drift-ct-logs")
    seen: list[b.Change] = []
    changes = b.ensure_buckets(s3, pairs, "us-east-2", key, seen.append)
    assert seen == changes
    changed = {(c.setting, c.action) for c in changes if c.action != "unchanged"}
    assert changed == {
        ("versioning", "updated"),
        ("lifecycle", "created"),
        ("public-access-block", "created"),
    }
    assert s3.get_bucket_versioning(Bucket="drift-ct-logs")["Status"] == "Enabled"


def test_bucket_in_another_region_is_refused_not_touched(aws: Any) -> None:
    aws("s3", "us-west-1").create_bucket(
        Bucket="elsewhere-ct", CreateBucketConfiguration={"LocationConstraint": "us-west-1"}
    )
    with pytest.raises(b.ProvisioningError, match="already exists in us-west-1"):
        b.ensure_buckets(aws("s3", "us-east-2"), [("ct-logs", "elsewhere-ct")], "us-east-2", "k")
    with pytest.raises(Exception, match=r"NoSuchLifecycle|lifecycle"):
        aws("s3", "us-west-1").get_bucket_lifecycle_configuration(Bucket="elsewhere-ct")


def test_bad_names_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["infra", "buckets", "--region", "us-west-2", "--names", "ct=Bad_Name,certificates=x"]
    assert main(argv) == 2
    assert "not a valid S3 bucket name" in capsys.readouterr().err
    assert main(["infra", "buckets", "--region", "us-west-2", "--names", "logs=x"]) == 2
    assert "ct=NAME,certificates=NAME" in capsys.readouterr().err
    same = ["infra", "buckets", "--region", "us-west-2", "--names", "ct=one-b,certificates=one-b"]
    assert main(same) == 2
    assert "give each kind its own bucket" in capsys.readouterr().err


def test_template_and_module_agree(cfn_template: Any) -> None:
    resources = cfn_template("storage")["Resources"]
    for logical, kind in (("CtLogsBucket", "ct-logs"), ("CertificatesBucket", "certificates")):
        props = resources[logical]["Properties"]
        cfn_rules = []
        for r in props["LifecycleConfiguration"]["Rules"]:
            cfn_rules.append(
                {
                    "ID": r["Id"],
                    "Status": r["Status"],
                    "Transitions": [
                        {"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]}
                        for t in r.get("Transitions", [])
                    ],
                    **(
                        {"Expiration": {"Days": r["ExpirationInDays"]}}
                        if "ExpirationInDays" in r
                        else {}
                    ),
                    "NoncurrentVersionTransitions": [
                        {"NoncurrentDays": t["TransitionInDays"], "StorageClass": t["StorageClass"]}
                        for t in r.get("NoncurrentVersionTransitions", [])
                    ],
                    "NoncurrentVersionExpiration": r["NoncurrentVersionExpiration"],
                    "AbortIncompleteMultipartUpload": r["AbortIncompleteMultipartUpload"],
                }
            )
        assert b.canonical_lifecycle(cfn_rules) == b.canonical_lifecycle(b.lifecycle_rules(kind))
        assert props["PublicAccessBlockConfiguration"] == b.PUBLIC_ACCESS_BLOCK
    key_actions = resources["StorageKey"]["Properties"]["KeyPolicy"]["Statement"][0]["Action"]
    assert key_actions == list(b.KEY_POLICY_ACTIONS)
    policy = resources["CtLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Condition"] == b.tls_only_policy("x")["Statement"][0]["Condition"]
    assert json.dumps(b.tls_only_policy("x"))  # serialisable as a bucket policy
