"""Every IAM policy in the templates is least privilege; the checker rejects what is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trustchain.infra.iam_policy import check_policy, check_template, policies_in_template

REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(p.stem for p in (REPO / "infra" / "cloudformation").glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_template_policies_are_least_privilege(name: str, cfn_template: Any) -> None:
    assert check_template(cfn_template(name), name) == []


def test_templates_hold_the_expected_policies(cfn_template: Any) -> None:
    found = {
        (name, where) for name in NAMES for where, _, _ in policies_in_template(cfn_template(name))
    }
    assert ("iam", "CtLoggingPolicy") in found
    assert ("iam", "CloudWatchMetricsPolicy") in found
    assert ("iam", "NodeRole trust policy") in found
    assert ("storage", "StorageKey key policy") in found
    assert ("storage", "ReplicationRole TrustChainReplication") in found
    assert ("storage", "CtLogsBucketPolicy") in found


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_the_specs_policies_are_rejected() -> None:
    # TrustChainCertificateManagement from ../shared/aws-requirements.md.
    spec = _doc(_allow(["acm:*", "kms:Decrypt", "kms:Sign", "kms:GetPublicKey"], "*"))
    messages = [f.message for f in check_policy(spec, "spec")]
    assert any("wildcard action 'acm:*'" in m for m in messages)
    assert any("Resource '*' for" in m and "kms:Sign" in m for m in messages)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (_allow("*", "arn:aws:s3:::b/*"), "wildcard action '*'"),
        (_allow("s3:Get*", "arn:aws:s3:::b/*"), "wildcard action 's3:Get*'"),
        (_allow("s3:GetObject", "*"), "Resource '*' for s3:GetObject"),
        (_allow("s3:GetObject", "arn:aws:s3:::*"), "matches every s3 resource"),
        (_allow("s3:GetObject", "arn:aws:s3:::trustchain-*/*"), "more than one bucket"),
        (_allow("kms:Decrypt", "arn:aws:kms:us-west-2:1:key/*"), "every key"),
        (_allow("kms:Decrypt", "arn:aws:kms:*:1:key/k"), "every region"),
        (_allow("kms:Decrypt", "arn:aws:kms:us-west-2:*:key/k"), "every account"),
        (_allow("cloudwatch:PutMetricData", "*"), "needs a cloudwatch:namespace condition"),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "NotAction"),
        ({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "x"}, "NotResource"),
        (_allow("s3:GetObject", {"Fn::Sub": "arn:aws:s3:::${AWS::NoSuch}*"}), "more than one"),
        (
            _allow("kms:Decrypt", {"Fn::If": ["C", "arn:aws:kms:r:1:key/k", "*"]}),
            "Resource '*'",
        ),
    ],
)
def test_checker_rejects(statement: dict[str, Any], expected: str) -> None:
    findings = check_policy(_doc(statement), "t")
    assert any(expected in f.message for f in findings), findings


@pytest.mark.parametrize(
    "statement",
    [
        _allow("s3:GetObject", "arn:aws:s3:::bucket/*"),
        _allow("s3:ListBucket", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Prefix}-ct-logs"}),
        _allow("kms:Decrypt", {"Fn::GetAtt": ["Key", "Arn"]}),
        _allow("kms:Decrypt", {"Ref": "KeyArn"}),
        _allow("s3:GetObject", {"Fn::Sub": "${Bucket.Arn}/*"}),
        _allow(
            "cloudwatch:PutMetricData",
            "*",
            Condition={"StringEquals": {"cloudwatch:namespace": "TrustChain/CA"}},
        ),
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"},
    ],
)
def test_checker_accepts_scoped_statements(statement: dict[str, Any]) -> None:
    assert check_policy(_doc(statement), "t") == []


def test_resource_policies_may_say_star_but_not_allow_anyone() -> None:
    key_policy = _doc(_allow("kms:Decrypt", "*", Principal={"AWS": "arn:aws:iam::1:root"}))
    assert check_policy(key_policy, "key", "resource") == []
    public = _doc(_allow("s3:GetObject", "*", Principal="*"))
    assert any("Principal '*'" in f.message for f in check_policy(public, "b", "resource"))


def test_not_a_policy_is_reported() -> None:
    assert check_policy({"Version": "2012-10-17"}, "t")[0].message.startswith("not a policy")
