"""Every CloudFormation template deploys to moto, and boto3 finds what it promises.

The stacks are deployed in the order of docs/deploy-aws.md, with the primary
region us-west-2 and the storage stack in us-east-1 too, then the storage
stacks are updated to replicate to each other.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from trustchain.infra import buckets as b
from trustchain.infra import iam_policy, metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PRIMARY, SECONDARY = "us-west-2", "us-east-1"


def _deploy(aws: Any, name: str, params: dict[str, str], region: str = PRIMARY) -> dict[str, str]:
    cf = aws("cloudformation", region)
    stack = f"trustchain-{name}"
    cf.create_stack(
        StackName=stack,
        TemplateBody=(REPO / "infra" / "cloudformation" / f"{name}.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    desc = cf.describe_stacks(StackName=stack)["Stacks"][0]
    assert desc["StackStatus"] == "CREATE_COMPLETE", desc.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}


@pytest.fixture(scope="module")
def stacks(aws: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["network"] = _deploy(aws, "network", {})
    out["storage"] = _deploy(aws, "storage", {})
    out["storage-secondary"] = _deploy(aws, "storage", {"ReplicaRegion": PRIMARY}, SECONDARY)
    out["iam"] = _deploy(
        aws,
        "iam",
        {
            "PrimaryStorageKeyArn": out["storage"]["StorageKeyArn"],
            "SecondaryStorageKeyArn": out["storage-secondary"]["StorageKeyArn"],
            "ArtifactBucket": "example-artifacts",
        },
    )
    out["hsm"] = _deploy(aws, "hsm", {})
    ec2 = aws("ec2")
    net = out["network"]
    subnets = ec2.describe_subnets(SubnetIds=[net["PrivateSubnetA"], net["PrivateSubnetB"]])
    blocks = {
        s["SubnetId"]: ipaddress.ip_network(s["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"])
        for s in subnets["Subnets"]
    }
    a, b_ = blocks[net["PrivateSubnetA"]], blocks[net["PrivateSubnetB"]]
    addresses = [str(a[0x10]), str(b_[0x10]), str(a[0x11]), str(b_[0x11])]
    out["addresses"] = addresses
    out["compute"] = _deploy(
        aws,
        "compute",
        {
            "ValidatorAddresses": ",".join(addresses),
            # moto does not split a CommaDelimitedList's default, so pass it.
            "ValidatorNames": "v1,v2,v3,v4",
            "ArtifactBucket": "example-artifacts",
            "ImageId": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
        },
    )
    cert = aws("acm").request_certificate(DomainName="ct.trust.hypermesh.online")
    out["loadbalancer"] = _deploy(
        aws,
        "loadbalancer",
        {"CertificateArn": cert["CertificateArn"], "ValidatorAddresses": ",".join(addresses)},
    )
    out["monitoring"] = _deploy(aws, "monitoring", {"AlarmEmail": "ops@example.org"})
    lb = out["loadbalancer"]
    out["dns"] = _deploy(
        aws,
        "dns",
        {
            "PrimaryLoadBalancerDnsName": lb["LoadBalancerDnsName"],
            "PrimaryLoadBalancerZoneId": lb["LoadBalancerHostedZoneId"],
            "SecondaryLoadBalancerDnsName": "trustchain-prod-east.elb.us-east-1.amazonaws.com",
            "SecondaryLoadBalancerZoneId": "Z26RNL4JYFTOTI",
        },
    )
    return out


def test_every_template_is_deployed(stacks: dict[str, Any]) -> None:
    deployed = {name.split("-")[0] for name in stacks if name != "addresses"}
    on_disk = {p.stem for p in (REPO / "infra" / "cloudformation").glob("*.yaml")}
    assert on_disk == deployed


def test_vpc_is_ipv6_with_two_zones_of_subnets(aws: Any, stacks: dict[str, Any]) -> None:
    ec2 = aws("ec2")
    net = stacks["network"]
    vpc = ec2.describe_vpcs(VpcIds=[net["VpcId"]])["Vpcs"][0]
    v6 = [a["Ipv6CidrBlock"] for a in vpc["Ipv6CidrBlockAssociationSet"]]
    assert v6 == [net["VpcIpv6Cidr"]]
    block = ipaddress.ip_network(v6[0])
    assert block.prefixlen == 56
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [net["VpcId"]]}])
    by_id = {s["SubnetId"]: s for s in subnets["Subnets"]}
    assert len(by_id) == 6
    for s in by_id.values():
        six = ipaddress.ip_network(s["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"])
        assert six.prefixlen == 64 and six.subnet_of(block)  # type: ignore[arg-type]
        assert s["AvailabilityZone"].startswith(PRIMARY)
        assert s["AssignIpv6AddressOnCreation"] is True
    private = [by_id[net["PrivateSubnetA"]], by_id[net["PrivateSubnetB"]]]
    for s in private:
        assert s["Ipv6Native"] is True
        assert not s.get("CidrBlock")  # no IPv4 at all on the validators' subnets
    assert len({s["AvailabilityZone"] for s in private}) == 2
    public = [by_id[i] for i in net["PublicSubnetIds"].split(",")]
    assert len({s["AvailabilityZone"] for s in public}) == 2
    assert all(s["MapPublicIpOnLaunch"] is False for s in public)


def test_only_ipv6_is_routed(aws: Any, stacks: dict[str, Any]) -> None:
    ec2 = aws("ec2")
    net = stacks["network"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [net["VpcId"]]}])
    defaults = []
    for table in tables["RouteTables"]:
        for route in table["Routes"]:
            assert route.get("DestinationCidrBlock") in (None, "10.42.0.0/16")
            if route.get("DestinationIpv6CidrBlock") == "::/0":
                defaults.append(route.get("GatewayId") or route.get("EgressOnlyInternetGatewayId"))
    assert sorted(d[:4] for d in defaults) == ["eigw", "igw-"]


def _rules(perms: list[dict[str, Any]]) -> set[tuple[str, int, int, str]]:
    out = set()
    for p in perms:
        assert not p.get("IpRanges"), f"IPv4 rule {p}"
        for r in p.get("Ipv6Ranges", []):
            out.add((p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIpv6"]))
        for g in p.get("UserIdGroupPairs", []):
            out.add((p["IpProtocol"], p["FromPort"], p["ToPort"], g["GroupId"]))
    return out


def test_security_groups_open_the_three_ports_to_ipv6_only(
    aws: Any, stacks: dict[str, Any]
) -> None:
    ec2 = aws("ec2")
    net = stacks["network"]
    vpc6 = net["VpcIpv6Cidr"]
    lb_sg, node_sg = net["LoadBalancerSecurityGroup"], net["NodeSecurityGroup"]
    groups = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(GroupIds=[lb_sg, node_sg])["SecurityGroups"]
    }
    assert _rules(groups[lb_sg]["IpPermissions"]) == {
        ("tcp", 8443, 8443, "::/0"),
        ("tcp", 6962, 6962, "::/0"),
        ("udp", 8853, 8853, "::/0"),
    }
    assert _rules(groups[lb_sg]["IpPermissionsEgress"]) == {
        ("tcp", 8443, 8443, vpc6),
        ("tcp", 6962, 6962, vpc6),
        ("udp", 8853, 8853, vpc6),
    }
    assert _rules(groups[node_sg]["IpPermissions"]) == {
        ("tcp", 8443, 8443, lb_sg),
        ("tcp", 6962, 6962, lb_sg),
        ("udp", 8853, 8853, "::/0"),
        ("udp", 7000, 7000, vpc6),
    }
    assert ("tcp", 443, 443, "::/0") in _rules(groups[node_sg]["IpPermissionsEgress"])


@pytest.mark.parametrize("region", [PRIMARY, SECONDARY])
def test_buckets_have_the_promised_settings(aws: Any, stacks: dict[str, Any], region: str) -> None:
    s3 = aws("s3", region)
    storage = stacks["storage" if region == PRIMARY else "storage-secondary"]
    names = b.bucket_names("trustchain", "prod", region)
    assert (storage["CtLogsBucket"], storage["CertificatesBucket"]) == (
        names["ct-logs"],
        names["certificates"],
    )
    for kind, bucket in names.items():
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        sse = rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        assert sse == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": storage["StorageKeyArn"]}
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert pab == b.PUBLIC_ACCESS_BLOCK
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert b.canonical_lifecycle(rules) == b.canonical_lifecycle(b.lifecycle_rules(kind))
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert policy == b.tls_only_policy(bucket)
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        assert (location or "us-east-1") == region
    ct_rules = s3.get_bucket_lifecycle_configuration(Bucket=names["ct-logs"])["Rules"]
    (ct,) = ct_rules
    assert [(int(t["Days"]), t["StorageClass"]) for t in ct["Transitions"]] == [
        (30, "STANDARD_IA"),
        (90, "GLACIER_IR"),
    ]
    assert int(ct["Expiration"]["Days"]) == 2557


def test_storage_key_rotates_and_has_no_wildcard_actions(aws: Any, stacks: dict[str, Any]) -> None:
    kms = aws("kms")
    key = stacks["storage"]["StorageKeyArn"]
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is True
    policy = _doc(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert iam_policy.check_policy(policy, "storage key", "resource") == []
    assert policy["Statement"][0]["Action"] == list(b.KEY_POLICY_ACTIONS)
    alias = kms.describe_key(KeyId=b.storage_key_alias("prod"))["KeyMetadata"]["Arn"]
    assert alias == key


def test_replication_to_the_other_region_once_both_exist(aws: Any, stacks: dict[str, Any]) -> None:
    keys = {PRIMARY: stacks["storage"]["StorageKeyArn"]}
    keys[SECONDARY] = stacks["storage-secondary"]["StorageKeyArn"]
    body = (REPO / "infra" / "cloudformation" / "storage.yaml").read_text()
    for region, other in ((PRIMARY, SECONDARY), (SECONDARY, PRIMARY)):
        aws("cloudformation", region).update_stack(
            StackName="trustchain-storage",
            TemplateBody=body,
            Parameters=[
                {"ParameterKey": "ReplicaRegion", "ParameterValue": other},
                {"ParameterKey": "ReplicaKmsKeyArn", "ParameterValue": keys[other]},
            ],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
    for region, other in ((PRIMARY, SECONDARY), (SECONDARY, PRIMARY)):
        s3 = aws("s3", region)
        names, remote = (
            b.bucket_names("trustchain", "prod", region),
            b.bucket_names("trustchain", "prod", other),
        )
        ct = s3.get_bucket_replication(Bucket=names["ct-logs"])["ReplicationConfiguration"]
        # moto reports every rule's filter as "" (its response is fixed), so the
        # prefixes are checked in the template below and the rules by ID here.
        assert sorted(r["ID"] for r in ct["Rules"]) == ["checkpoints", "issuers", "state", "tiles"]
        for rule in ct["Rules"]:
            assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{remote['ct-logs']}"
            enc = rule["Destination"]["EncryptionConfiguration"]
            assert enc["ReplicaKmsKeyID"] == keys[other]
        certs = s3.get_bucket_replication(Bucket=names["certificates"])
        (rule,) = certs["ReplicationConfiguration"]["Rules"]
        assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{remote['certificates']}"
        role = ct["Role"].rsplit("/", 1)[1]
        iam = aws("iam", region)
        (pol,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        doc = _doc(iam.get_role_policy(RoleName=role, PolicyName=pol)["PolicyDocument"])
        assert iam_policy.check_policy(doc, "replication role") == []


def test_replication_skips_the_mutable_checkpoint_pointer(cfn_template: Any) -> None:
    bucket = cfn_template("storage")["Resources"]["CtLogsBucket"]["Properties"]
    rules = bucket["ReplicationConfiguration"]["Fn::If"][1]["Rules"]
    prefixes = sorted(r["Filter"]["Prefix"] for r in rules)
    # Only immutable objects: replicating `checkpoint` could overwrite the other
    # region's newer checkpoint with an older one.
    assert prefixes == ["checkpoints/", "issuer/", "state/", "tile/"]


def _doc(value: Any) -> Any:
    # AWS returns policies as JSON text; moto sometimes returns the document itself.
    return json.loads(value) if isinstance(value, str) else value


def _managed_policies(aws: Any, role: str) -> dict[str, dict[str, Any]]:
    iam = aws("iam")
    out = {}
    for att in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        pol = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]
        ver = iam.get_policy_version(PolicyArn=att["PolicyArn"], VersionId=pol["DefaultVersionId"])
        doc = ver["PolicyVersion"]["Document"]
        out[att["PolicyName"]] = _doc(doc)
    return out


def test_node_role_is_least_privilege(aws: Any, stacks: dict[str, Any]) -> None:
    role_arn = stacks["iam"]["NodeRoleArn"]
    role = role_arn.rsplit("/", 1)[1]
    trust = aws("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    docs = _managed_policies(aws, role)
    assert sorted(name.split("-")[0] for name in docs) == [
        "TrustChainCTLogging",
        "TrustChainCertificateManagement",
        "TrustChainCloudWatchMetrics",
        "TrustChainS3CertificateStorage",
    ]
    actions: set[str] = set()
    for name, doc in docs.items():
        assert iam_policy.check_policy(doc, name) == []
        for st in doc["Statement"]:
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            actions.update(acts)
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if any(a.startswith("kms:") for a in acts):
                assert sorted(res) == sorted(
                    [
                        stacks["storage"]["StorageKeyArn"],
                        stacks["storage-secondary"]["StorageKeyArn"],
                    ]
                )
            if any(a.startswith("s3:") for a in acts):
                for r in res:
                    bucket = r.split(":::", 1)[1].split("/", 1)[0]
                    assert bucket == "example-artifacts" or bucket.startswith("trustchain-")
            if "cloudwatch:PutMetricData" in acts:
                ns = st["Condition"]["StringEquals"]["cloudwatch:namespace"]
                assert sorted(ns) == sorted(metrics.NAMESPACES)
    assert not any(a.startswith("acm:") for a in actions)
    assert "kms:Sign" not in actions


def test_validators_launch_from_the_template_with_fixed_ipv6(
    aws: Any, stacks: dict[str, Any]
) -> None:
    ec2 = aws("ec2")
    ids = stacks["compute"]["ValidatorInstanceIds"].split(",")
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert len(instances) == 4
    seen = {}
    for inst in instances:
        assert inst["InstanceType"] == "c6g.large"
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        eni = inst["NetworkInterfaces"][0]
        seen[tags["trustchain-validator"]] = eni["Ipv6Addresses"][0]["Ipv6Address"]
    assert seen == dict(zip(["v1", "v2", "v3", "v4"], stacks["addresses"], strict=True))
    lt_id = stacks["compute"]["LaunchTemplateId"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"][
        0
    ]["LaunchTemplateData"]
    opts = data["MetadataOptions"]
    assert (opts["HttpTokens"], opts["HttpProtocolIpv6"]) == ("required", "enabled")
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    user_data = base64.b64decode(data["UserData"]).decode()
    unit = (REPO / "infra" / "systemd" / "trustchain@.service").read_text()
    assert unit in user_data, "the launch template must install infra/systemd/trustchain@.service"
    assert 'systemctl enable --now "trustchain@$name"' in user_data
    assert "${" not in user_data  # every Fn::Sub variable was substituted


def test_network_load_balancer_carries_udp(aws: Any, stacks: dict[str, Any]) -> None:
    elb = aws("elbv2")
    arn = stacks["loadbalancer"]["LoadBalancerArn"]
    lb = elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]
    assert (lb["Type"], lb["Scheme"], lb["IpAddressType"]) == (
        "network",
        "internet-facing",
        "dualstack",
    )
    listeners = elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    by_port = {(li["Port"], li["Protocol"]): li for li in listeners}
    assert set(by_port) == {(8443, "TCP"), (6962, "TLS"), (8853, "UDP")}
    assert by_port[(6962, "TLS")]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    for li in listeners:
        tg_arn = li["DefaultActions"][0]["TargetGroupArn"]
        tg = elb.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"][0]
        assert (tg["TargetType"], tg["IpAddressType"], tg["Port"]) == ("ip", "ipv6", li["Port"])
        health = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        assert sorted(h["Target"]["Id"] for h in health) == sorted(stacks["addresses"])


def test_hsm_cluster_is_reachable_from_validators_only(aws: Any, stacks: dict[str, Any]) -> None:
    hsm = stacks["hsm"]
    clusters = aws("cloudhsmv2").describe_clusters()["Clusters"]
    (cluster,) = [c for c in clusters if c["ClusterId"] == hsm["ClusterId"]]
    assert cluster["HsmType"] == "hsm2m.medium"
    assert cluster["BackupRetentionPolicy"] == {"Type": "DAYS", "Value": "90"}
    hsm_subnets = set(stacks["network"]["HsmSubnetIds"].split(","))
    # moto keys SubnetMapping by region rather than by zone, so it keeps one.
    assert set(cluster["SubnetMapping"].values()) <= hsm_subnets
    sg = aws("ec2").describe_security_groups(GroupIds=[hsm["ClusterSecurityGroup"]])
    assert _rules(sg["SecurityGroups"][0]["IpPermissions"]) == {
        ("tcp", 2223, 2225, stacks["network"]["NodeSecurityGroup"])
    }
    param = aws("ssm").get_parameter(Name="/trustchain/prod/cloudhsm-cluster-id")
    assert param["Parameter"]["Value"] == hsm["ClusterId"]


def test_alarms_for_latency_and_lost_quorum(aws: Any, stacks: dict[str, Any]) -> None:
    cw = aws("cloudwatch")
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    latency = alarms["TrustChainHighLatency-prod"]
    assert (latency["Namespace"], latency["MetricName"]) == (
        metrics.NAMESPACE_PERFORMANCE,
        metrics.METRIC_RESPONSE_TIME,
    )
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p99", 1.0)
    assert latency["ComparisonOperator"] == "GreaterThanThreshold"
    down = alarms["TrustChainServiceDown-prod"]
    assert (down["Namespace"], down["MetricName"], down["Threshold"]) == (
        "AWS/NetworkELB",
        "HealthyHostCount",
        3.0,
    )
    dims = {d["Name"]: d["Value"] for d in down["Dimensions"]}
    assert dims == {
        "LoadBalancer": stacks["loadbalancer"]["LoadBalancerFullName"],
        "TargetGroup": stacks["loadbalancer"]["CaTargetGroupFullName"],
    }
    topic = stacks["monitoring"]["AlarmTopicArn"]
    assert latency["AlarmActions"] == [topic] and down["AlarmActions"] == [topic]
    subs = aws("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [s["Endpoint"] for s in subs] == ["ops@example.org"]
    groups = aws("logs").describe_log_groups(logGroupNamePrefix="/trustchain/prod")["logGroups"]
    assert groups[0]["retentionInDays"] == 400


def test_dns_is_aaaa_with_failover_and_two_cnames(aws: Any, stacks: dict[str, Any]) -> None:
    r53 = aws("route53")
    zone = stacks["dns"]["HostedZoneId"]
    records = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    mine = [r for r in records if r["Type"] not in ("NS", "SOA")]
    assert not [r for r in mine if r["Type"] == "A"], "IPv6 only: no A records"
    aaaa = {r["Failover"]: r for r in mine if r["Type"] == "AAAA"}
    assert set(aaaa) == {"PRIMARY", "SECONDARY"}
    primary = aaaa["PRIMARY"]["AliasTarget"]
    assert primary["DNSName"].rstrip(".") == stacks["loadbalancer"]["LoadBalancerDnsName"]
    assert primary["EvaluateTargetHealth"] is True
    cnames = {r["Name"]: r["ResourceRecords"][0]["Value"] for r in mine if r["Type"] == "CNAME"}
    assert cnames == {
        "ca.trust.hypermesh.online.": "trust.hypermesh.online",
        "ct.trust.hypermesh.online.": "trust.hypermesh.online",
    }
