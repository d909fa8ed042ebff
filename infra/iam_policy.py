"""Least-privilege checks for the IAM policies in our CloudFormation templates.

The deployment spec granted ``acm:*`` and ``kms:Sign`` on ``Resource: "*"``;
DESIGN.md section 10 requires IAM without wildcard actions, KMS only on named
keys, S3 only on named buckets and PutMetricData only for TrustChain's
namespaces.  :func:`check_template` finds every policy document in a parsed
template and :func:`check_policy` reports, for each ``Allow`` statement:

- a wildcard in an action (``*``, ``s3:*``, ``kms:Get*``) or a ``NotAction``;
- ``NotResource``;
- ``Resource: "*"`` in an identity policy, unless every action of the
  statement is one AWS cannot scope to a resource and the statement carries
  the condition key that does scope it (PutMetricData and
  ``cloudwatch:namespace``);
- an ARN that names every resource of its kind: a ``*`` account or region,
  an empty or ``*`` resource part, or ``TYPE/*`` (``key/*``, ``role/*``).
  Objects under one named bucket (``arn:aws:s3:::NAME/*``) are scoped;
- in a trust or resource policy, an ``Allow`` to ``Principal: "*"``.

``Deny`` statements may be as broad as they like: breadth only makes them
safer.  Template intrinsics are understood: ``Ref``, ``Fn::GetAtt`` and
``Fn::ImportValue`` name one resource; ``Fn::Sub`` and ``Fn::Join`` are checked
as ARNs with their substitutions treated as names; both branches of
``Fn::If`` are checked.  Pure functions over parsed templates; no AWS calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

PolicyKind = Literal["identity", "resource", "trust"]

# Actions AWS cannot restrict by resource, with the condition key that
# restricts them instead (None: nothing can; the action must still be named).
UNSCOPABLE_ACTIONS: dict[str, str | None] = {
    "cloudwatch:putmetricdata": "cloudwatch:namespace",
}

# Global services whose ARNs have no region (and S3 none of either).
_NO_REGION = {"iam", "s3", "route53", "cloudfront", "sts"}
_NO_ACCOUNT = {"s3", "route53"}


@dataclass(frozen=True)
class Finding:
    """One least-privilege violation."""

    where: str
    """Template resource and statement, e.g. ``iam.yaml NodeRole Statement[2]``."""
    message: str
    """What is wrong and what to write instead."""


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _strings(value: Any) -> Iterator[str | None]:
    """The possible values of a template expression as strings; None if opaque.

    Fn::Sub's ``${Name}`` references and Ref/GetAtt/ImportValue become ``{Name}``,
    a concrete name.
    """
    if isinstance(value, str):
        yield re.sub(r"\$\{([^}!][^}]*)\}", r"{\1}", value)
    elif isinstance(value, dict) and len(value) == 1:
        (fn, arg), *_ = value.items()
        if fn == "Ref" and arg == "AWS::NoValue":
            return
        if fn in ("Ref", "Fn::GetAtt", "Fn::ImportValue"):
            yield "{" + (arg if isinstance(arg, str) else ".".join(map(str, arg))) + "}"
        elif fn == "Fn::Sub":
            yield from _strings(arg[0] if isinstance(arg, list) else arg)
        elif fn == "Fn::If":
            for branch in arg[1:]:
                for item in _as_list(branch):
                    yield from _strings(item)
        elif fn == "Fn::Join":
            sep, parts = arg
            pieces: list[str] = []
            for part in parts:
                alts = list(_strings(part))
                if len(alts) != 1 or alts[0] is None:
                    yield None
                    return
                pieces.append(alts[0])
            yield sep.join(pieces)
        else:
            yield None
    else:
        yield None


def _values(value: Any) -> Iterator[str | None]:
    for item in _as_list(value):
        yield from _strings(item)


def _arn_problem(arn: str) -> str | None:
    if arn.startswith("{"):
        # A reference to one named resource's ARN, perhaps with a path under
        # it (`${Bucket.Arn}/*`: the objects of that one bucket).
        rest = arn[arn.index("}") + 1 :]
        if rest == "" or (rest.startswith("/") and not rest.startswith("/*/")):
            return None
        return f"{arn!r} is not a resource ARN"
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return f"{arn!r} is not an ARN"
    _, _, service, region, account, resource = parts
    if region == "*" and service not in _NO_REGION:
        return f"{arn!r} matches every region"
    if account == "*" and service not in _NO_ACCOUNT:
        return f"{arn!r} matches every account"
    if resource in ("", "*"):
        return f"{arn!r} matches every {service} resource"
    if resource.startswith("*"):
        return f"{arn!r} matches every {service} resource"
    if service == "s3":
        bucket = resource.split("/", 1)[0]
        if "*" in bucket:
            return f"{arn!r} matches more than one bucket"
        return None
    head, _, tail = resource.partition("/")
    if tail == "*" and head and "{" not in head:
        return f"{arn!r} matches every {head} in the account"
    return None


def _has_condition_key(statement: dict[str, Any], key: str) -> bool:
    conditions = statement.get("Condition", {})
    if not isinstance(conditions, dict):
        return False
    return any(
        isinstance(block, dict) and any(k.lower() == key for k in block)
        for block in conditions.values()
    )


def check_policy(document: Any, where: str, kind: PolicyKind = "identity") -> list[Finding]:
    """Least-privilege findings for one policy document (see the module docstring)."""
    findings: list[Finding] = []
    if not isinstance(document, dict) or "Statement" not in document:
        return [Finding(where, "not a policy document (no Statement)")]
    for index, statement in enumerate(_as_list(document["Statement"])):
        at = f"{where} Statement[{index}]"
        if not isinstance(statement, dict):
            findings.append(Finding(at, "a statement must be a mapping"))
            continue
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            findings.append(
                Finding(at, "NotAction in an Allow grants everything else; list actions")
            )
        if "NotResource" in statement:
            findings.append(
                Finding(at, "NotResource in an Allow grants everything else; list resources")
            )
        actions = [a for a in _values(statement.get("Action", [])) if a is not None]
        for action in actions:
            if "*" in action or "?" in action:
                findings.append(
                    Finding(at, f"wildcard action {action!r}; name each action the service needs")
                )
        if kind in ("trust", "resource"):
            principal = statement.get("Principal")
            if principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*"):
                findings.append(Finding(at, "Allow to Principal '*' (anyone); name the principal"))
            if kind == "trust":
                continue
        resources = list(_values(statement.get("Resource", [])))
        if kind == "resource":
            # In a key or bucket policy "*" means the resource the policy is on.
            resources = [r for r in resources if r != "*"]
        for resource in resources:
            if resource is None:
                continue
            if resource == "*":
                unscoped = [a for a in actions if a.lower() not in UNSCOPABLE_ACTIONS]
                if unscoped:
                    findings.append(
                        Finding(
                            at,
                            f"Resource '*' for {', '.join(unscoped)}; these actions can be "
                            "limited to named resources (bucket, key, log group ARNs)",
                        )
                    )
                for action in actions:
                    key = UNSCOPABLE_ACTIONS.get(action.lower())
                    if key and not _has_condition_key(statement, key):
                        findings.append(
                            Finding(at, f"{action} on '*' needs a {key} condition to scope it")
                        )
                continue
            problem = _arn_problem(resource)
            if problem:
                findings.append(Finding(at, f"unscoped resource: {problem}; name the resource"))
    return findings


def policies_in_template(template: dict[str, Any]) -> Iterator[tuple[str, PolicyKind, Any]]:
    """Every policy document in a parsed template: (where, kind, document)."""
    for name, resource in (template.get("Resources") or {}).items():
        kind = resource.get("Type", "")
        props = resource.get("Properties", {}) or {}
        if kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            yield f"{name}", "identity", props.get("PolicyDocument")
        elif kind in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            if "AssumeRolePolicyDocument" in props:
                yield f"{name} trust policy", "trust", props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []) or []:
                yield f"{name} {policy.get('PolicyName')}", "identity", policy.get("PolicyDocument")
        elif kind == "AWS::KMS::Key":
            yield f"{name} key policy", "resource", props.get("KeyPolicy")
        elif kind in ("AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
            yield f"{name}", "resource", props.get("PolicyDocument")


def check_template(template: dict[str, Any], name: str) -> list[Finding]:
    """Findings for every policy document of a parsed template."""
    findings: list[Finding] = []
    for where, kind, document in policies_in_template(template):
        findings.extend(check_policy(document, f"{name} {where}", kind))
    return findings
