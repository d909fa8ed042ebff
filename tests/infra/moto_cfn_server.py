"""A moto server whose CloudFormation engine understands everything our templates use.

moto 5 emulates the AWS *APIs* the templates need (EC2 with IPv6, S3 bucket
settings, CloudWatch alarms, CloudHSM clusters), but its CloudFormation engine
only implements some resource types and, for several of those, ignores the
properties we care about (a subnet's IPv6 block, a bucket's versioning,
lifecycle and public access block, a security group's IPv6 rules), and it
has no `Fn::Cidr`.

This module teaches it, the way AWS CloudFormation itself works: each provider
below turns a resource's CloudFormation properties into the AWS API calls
CloudFormation makes, and sends them with boto3 to this same server, so that
moto's API layer validates every request and boto3 later reads back real state.
Everything else (IAM, KMS, ELBv2, EC2 instances and launch templates, Route 53,
CloudWatch Logs, SNS, SSM) is moto's own CloudFormation implementation.

cfn-lint checks every property name and value against the real CloudFormation
schemas; this server checks that the templates wire together (references,
imports, conditions, `Fn::Cidr` arithmetic) and produce the promised state.
Not emulated: subnet DNS-name options and DNS64 (moto has no API for them).

Run as a process (the tests do):  python moto_cfn_server.py
It binds [::1] on a free port and prints ``READY <port>`` once it serves.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any, ClassVar

import boto3

# Importing the backends first matters: moto picks, for each resource type, the
# last CloudFormationModel subclass defined, so ours must come after moto's.
import moto.cloudhsmv2.models
import moto.cloudwatch.models
import moto.ec2.models
import moto.elbv2.models
import moto.iam.models
import moto.kms.models
import moto.s3.models
import moto.sns.models  # noqa: F401
from botocore.config import Config
from moto.cloudformation import parsing
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.core.common_models import CloudFormationModel

_ENDPOINT: list[str] = []  # set once the server is bound

# moto files every model class under the second component of its module name.
_MODEL_MODULE = "moto.cloudformation_plus"


def _client(service: str, region: str) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=_ENDPOINT[0],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def _tags(props: dict[str, Any]) -> list[dict[str, str]]:
    return [{"Key": t["Key"], "Value": str(t["Value"])} for t in props.get("Tags", [])]


def _tag_spec(kind: str, props: dict[str, Any]) -> list[dict[str, Any]]:
    tags = _tags(props)
    return [{"ResourceType": kind, "Tags": tags}] if tags else []


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class _Provider(CloudFormationModel):
    """A resource created through the AWS API of this server."""

    __module__ = _MODEL_MODULE

    TYPE: ClassVar[str] = ""

    def __init__(self, physical_id: str, region: str, attrs: dict[str, Any]) -> None:
        self.physical_id = physical_id
        self.region = region
        self.attrs = attrs

    @property
    def physical_resource_id(self) -> str:
        return self.physical_id

    @classmethod
    def cloudformation_type(cls) -> str:  # type: ignore[override]
        return cls.TYPE

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True

    def is_created(self) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        live = self.live_attribute(attribute_name)
        if live is not None:
            return live
        if attribute_name in self.attrs:
            return self.attrs[attribute_name]
        raise UnformattedGetAttTemplateException()

    def live_attribute(self, name: str) -> Any:
        return None

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> _Provider:
        props = cloudformation_json.get("Properties", {})
        return cls.create(resource_name, props, region_name)

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        raise NotImplementedError

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[override]
        cls,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> _Provider:
        # Updates are modelled as "apply the new properties"; the create
        # calls are all idempotent puts for the types that can change in place.
        return cls.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> None:
        return None


class Vpc(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::VPC"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        ec2 = _client("ec2", region)
        vpc = ec2.create_vpc(
            CidrBlock=props["CidrBlock"],
            InstanceTenancy=props.get("InstanceTenancy", "default"),
            TagSpecifications=_tag_spec("vpc", props),
        )["Vpc"]
        for attr in ("EnableDnsSupport", "EnableDnsHostnames"):
            if attr in props:
                ec2.modify_vpc_attribute(
                    VpcId=vpc["VpcId"], **{attr: {"Value": _bool(props[attr])}}
                )
        return cls(vpc["VpcId"], region, {"VpcId": vpc["VpcId"], "CidrBlock": props["CidrBlock"]})

    def live_attribute(self, name: str) -> Any:
        if name == "Ipv6CidrBlocks":
            vpc = _client("ec2", self.region).describe_vpcs(VpcIds=[self.physical_id])["Vpcs"][0]
            return [
                a["Ipv6CidrBlock"]
                for a in vpc.get("Ipv6CidrBlockAssociationSet", [])
                if a["Ipv6CidrBlockState"]["State"] == "associated"
            ]
        if name == "DefaultSecurityGroup":
            groups = _client("ec2", self.region).describe_security_groups(
                Filters=[
                    {"Name": "vpc-id", "Values": [self.physical_id]},
                    {"Name": "group-name", "Values": ["default"]},
                ]
            )["SecurityGroups"]
            return groups[0]["GroupId"]
        return None


class VpcCidrBlock(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::VPCCidrBlock"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args: dict[str, Any] = {"VpcId": props["VpcId"]}
        if _bool(props.get("AmazonProvidedIpv6CidrBlock", False)):
            args["AmazonProvidedIpv6CidrBlock"] = True
        for key in ("CidrBlock", "Ipv6CidrBlock", "Ipv6Pool"):
            if key in props:
                args[key] = props[key]
        out = _client("ec2", region).associate_vpc_cidr_block(**args)
        assoc = out.get("Ipv6CidrBlockAssociation") or out["CidrBlockAssociation"]
        return cls(assoc["AssociationId"], region, {"Id": assoc["AssociationId"]})


class Subnet(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::Subnet"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        ec2 = _client("ec2", region)
        args: dict[str, Any] = {"VpcId": props["VpcId"]}
        for key in ("CidrBlock", "Ipv6CidrBlock", "AvailabilityZone"):
            if key in props:
                args[key] = props[key]
        if _bool(props.get("Ipv6Native", False)):
            args["Ipv6Native"] = True
        spec = _tag_spec("subnet", props)
        if spec:
            args["TagSpecifications"] = spec
        subnet = ec2.create_subnet(**args)["Subnet"]
        sid = subnet["SubnetId"]
        for attr in ("AssignIpv6AddressOnCreation", "MapPublicIpOnLaunch"):
            if attr in props:
                ec2.modify_subnet_attribute(SubnetId=sid, **{attr: {"Value": _bool(props[attr])}})
        return cls(
            sid,
            region,
            {
                "SubnetId": sid,
                "VpcId": props["VpcId"],
                "AvailabilityZone": subnet["AvailabilityZone"],
                "CidrBlock": props.get("CidrBlock", ""),
                "Ipv6CidrBlocks": [props["Ipv6CidrBlock"]] if "Ipv6CidrBlock" in props else [],
            },
        )


class EgressOnlyInternetGateway(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::EgressOnlyInternetGateway"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        gw = _client("ec2", region).create_egress_only_internet_gateway(VpcId=props["VpcId"])
        gid = gw["EgressOnlyInternetGateway"]["EgressOnlyInternetGatewayId"]
        return cls(gid, region, {"Id": gid})


class Route(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::Route"
    _TARGETS = (
        "GatewayId",
        "EgressOnlyInternetGatewayId",
        "NatGatewayId",
        "InstanceId",
        "NetworkInterfaceId",
        "TransitGatewayId",
        "VpcPeeringConnectionId",
    )

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args = {"RouteTableId": props["RouteTableId"]}
        for key in ("DestinationCidrBlock", "DestinationIpv6CidrBlock", *cls._TARGETS):
            if key in props:
                args[key] = props[key]
        _client("ec2", region).create_route(**args)
        dest = props.get("DestinationIpv6CidrBlock") or props.get("DestinationCidrBlock", "")
        return cls(f"{props['RouteTableId']}|{dest}", region, {})


def _permission(rule: dict[str, Any], peer_key: str) -> dict[str, Any]:
    """A CloudFormation security group rule as an EC2 API IpPermission."""
    perm: dict[str, Any] = {"IpProtocol": str(rule["IpProtocol"])}
    if "FromPort" in rule:
        perm["FromPort"] = int(rule["FromPort"])
        perm["ToPort"] = int(rule["ToPort"])
    desc = {"Description": rule["Description"]} if "Description" in rule else {}
    if "CidrIp" in rule:
        perm["IpRanges"] = [{"CidrIp": rule["CidrIp"], **desc}]
    if "CidrIpv6" in rule:
        perm["Ipv6Ranges"] = [{"CidrIpv6": rule["CidrIpv6"], **desc}]
    if peer_key in rule:
        perm["UserIdGroupPairs"] = [{"GroupId": rule[peer_key], **desc}]
    return perm


class SecurityGroup(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::SecurityGroup"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        ec2 = _client("ec2", region)
        args: dict[str, Any] = {
            "GroupName": props.get("GroupName", name),
            "Description": props["GroupDescription"],
        }
        if "VpcId" in props:
            args["VpcId"] = props["VpcId"]
        spec = _tag_spec("security-group", props)
        if spec:
            args["TagSpecifications"] = spec
        gid = ec2.create_security_group(**args)["GroupId"]
        ingress = props.get("SecurityGroupIngress", [])
        if ingress:
            perms = [_permission(r, "SourceSecurityGroupId") for r in ingress]
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
        egress = props.get("SecurityGroupEgress")
        if egress is not None:
            # As in CloudFormation: explicit egress rules replace the default
            # allow-all rule(s).
            group = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
            default = group.get("IpPermissionsEgress", [])
            if default:
                ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=default)
            perms = [_permission(r, "DestinationSecurityGroupId") for r in egress]
            if perms:
                ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=perms)
        return cls(gid, region, {"GroupId": gid, "VpcId": props.get("VpcId", "")})


class SecurityGroupIngress(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::EC2::SecurityGroupIngress"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        perm = _permission(props, "SourceSecurityGroupId")
        _client("ec2", region).authorize_security_group_ingress(
            GroupId=props["GroupId"], IpPermissions=[perm]
        )
        return cls(f"{props['GroupId']}|{name}", region, {})


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """An AWS::S3::Bucket lifecycle Rule as a PutBucketLifecycleConfiguration rule."""
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
    out["Filter"] = {"Prefix": rule["Prefix"]} if "Prefix" in rule else {"Prefix": ""}
    transitions = [
        {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
        for t in rule.get("Transitions", [])
    ]
    if transitions:
        out["Transitions"] = transitions
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    nct = [
        {"NoncurrentDays": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
        for t in rule.get("NoncurrentVersionTransitions", [])
    ]
    if nct:
        out["NoncurrentVersionTransitions"] = nct
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(days)}
    return out


def _replication_rule(rule: dict[str, Any]) -> dict[str, Any]:
    dest = rule["Destination"]
    out_dest: dict[str, Any] = {"Bucket": dest["Bucket"]}
    if "StorageClass" in dest:
        out_dest["StorageClass"] = dest["StorageClass"]
    if "EncryptionConfiguration" in dest:
        out_dest["EncryptionConfiguration"] = {
            "ReplicaKmsKeyID": dest["EncryptionConfiguration"]["ReplicaKmsKeyID"]
        }
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Destination": out_dest}
    if "Priority" in rule:
        out["Priority"] = int(rule["Priority"])
    if "Filter" in rule:
        out["Filter"] = {"Prefix": rule["Filter"].get("Prefix", "")}
    if "DeleteMarkerReplication" in rule:
        out["DeleteMarkerReplication"] = rule["DeleteMarkerReplication"]
    if "SourceSelectionCriteria" in rule:
        out["SourceSelectionCriteria"] = rule["SourceSelectionCriteria"]
    return out


class Bucket(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::S3::Bucket"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        s3 = _client("s3", region)
        bucket = props.get("BucketName", name.lower())
        args: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        if bucket not in existing:  # an update applies the new settings in place
            s3.create_bucket(**args)
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(
                Bucket=bucket,
                VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
            )
        if "BucketEncryption" in props:
            rules = []
            for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]:
                rule: dict[str, Any] = {
                    "ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"]
                }
                if "BucketKeyEnabled" in r:
                    rule["BucketKeyEnabled"] = _bool(r["BucketKeyEnabled"])
                rules.append(rule)
            s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules}
            )
        if "PublicAccessBlockConfiguration" in props:
            pab = {k: _bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()}
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=pab)
        if "OwnershipControls" in props:
            s3.put_bucket_ownership_controls(
                Bucket=bucket, OwnershipControls=props["OwnershipControls"]
            )
        if "LifecycleConfiguration" in props:
            rules = [_lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": rules}
            )
        if "ReplicationConfiguration" in props:
            conf = props["ReplicationConfiguration"]
            s3.put_bucket_replication(
                Bucket=bucket,
                ReplicationConfiguration={
                    "Role": conf["Role"],
                    "Rules": [_replication_rule(r) for r in conf["Rules"]],
                },
            )
        if props.get("Tags"):
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tags(props)})
        return cls(
            bucket,
            region,
            {
                "Arn": f"arn:aws:s3:::{bucket}",
                "DomainName": f"{bucket}.s3.amazonaws.com",
                "RegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
            },
        )


class BucketPolicy(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::S3::BucketPolicy"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        _client("s3", region).put_bucket_policy(
            Bucket=props["Bucket"], Policy=json.dumps(props["PolicyDocument"])
        )
        return cls(props["Bucket"], region, {})


class Alarm(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::CloudWatch::Alarm"
    _PASS = (
        "AlarmDescription",
        "Namespace",
        "MetricName",
        "Statistic",
        "ExtendedStatistic",
        "ComparisonOperator",
        "TreatMissingData",
        "Unit",
        "AlarmActions",
        "OKActions",
        "InsufficientDataActions",
    )

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        alarm = props.get("AlarmName", name)
        args: dict[str, Any] = {"AlarmName": alarm}
        for key in cls._PASS:
            if key in props:
                args[key] = props[key]
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in props:
                args[key] = int(props[key])
        args["Threshold"] = float(props["Threshold"])
        if "Dimensions" in props:
            args["Dimensions"] = [
                {"Name": d["Name"], "Value": str(d["Value"])} for d in props["Dimensions"]
            ]
        if "ActionsEnabled" in props:
            args["ActionsEnabled"] = _bool(props["ActionsEnabled"])
        _client("cloudwatch", region).put_metric_alarm(**args)
        arn = f"arn:aws:cloudwatch:{region}:123456789012:alarm:{alarm}"
        return cls(alarm, region, {"Arn": arn})


class HsmCluster(_Provider):
    __module__ = _MODEL_MODULE
    TYPE = "AWS::CloudHSM::Cluster"

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args: dict[str, Any] = {"HsmType": props["HsmType"], "SubnetIds": props["SubnetIds"]}
        for key in ("NetworkType", "Mode"):
            if key in props:
                args[key] = props[key]
        if "BackupRetentionPolicy" in props:
            policy = props["BackupRetentionPolicy"]
            args["BackupRetentionPolicy"] = {"Type": policy["Type"], "Value": str(policy["Value"])}
        if props.get("Tags"):
            args["TagList"] = _tags(props)
        cluster = _client("cloudhsmv2", region).create_cluster(**args)["Cluster"]
        cid = cluster["ClusterId"]
        group = cluster.get("SecurityGroup", "")
        if not group:
            # AWS creates the cluster's security group in the subnets' VPC;
            # moto does not, so do what AWS does.
            ec2 = _client("ec2", region)
            subnet = ec2.describe_subnets(SubnetIds=[props["SubnetIds"][0]])["Subnets"][0]
            group = ec2.create_security_group(
                GroupName=f"cloudhsm-{cid}-sg",
                Description=f"Security group for the CloudHSM cluster {cid}",
                VpcId=subnet["VpcId"],
            )["GroupId"]
        return cls(
            cid,
            region,
            {
                "ClusterId": cid,
                "SecurityGroup": group,
                "State": cluster.get("State", ""),
            },
        )


class LaunchTemplate(_Provider):
    TYPE = "AWS::EC2::LaunchTemplate"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        data = dict(props["LaunchTemplateData"])
        if "Monitoring" in data:
            data["Monitoring"] = {"Enabled": _bool(data["Monitoring"]["Enabled"])}
        if "EbsOptimized" in data:
            data["EbsOptimized"] = _bool(data["EbsOptimized"])
        for mapping in data.get("BlockDeviceMappings", []):
            ebs = mapping.get("Ebs", {})
            for key in ("Encrypted", "DeleteOnTermination"):
                if key in ebs:
                    ebs[key] = _bool(ebs[key])
            if "VolumeSize" in ebs:
                ebs["VolumeSize"] = int(ebs["VolumeSize"])
        if "MetadataOptions" in data:
            opts = dict(data["MetadataOptions"])
            if "HttpPutResponseHopLimit" in opts:
                opts["HttpPutResponseHopLimit"] = int(opts["HttpPutResponseHopLimit"])
            data["MetadataOptions"] = opts
        args: dict[str, Any] = {
            "LaunchTemplateName": props.get("LaunchTemplateName", name),
            "LaunchTemplateData": data,
        }
        if props.get("TagSpecifications"):
            args["TagSpecifications"] = props["TagSpecifications"]
        lt = _client("ec2", region).create_launch_template(**args)["LaunchTemplate"]
        return cls(
            lt["LaunchTemplateId"],
            region,
            {
                "LaunchTemplateId": lt["LaunchTemplateId"],
                "LatestVersionNumber": str(lt["LatestVersionNumber"]),
                "DefaultVersionNumber": str(lt["DefaultVersionNumber"]),
            },
        )


class NetworkInterface(_Provider):
    TYPE = "AWS::EC2::NetworkInterface"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args: dict[str, Any] = {"SubnetId": props["SubnetId"]}
        if "Description" in props:
            args["Description"] = props["Description"]
        if "GroupSet" in props:
            args["Groups"] = props["GroupSet"]
        if "Ipv6Addresses" in props:
            args["Ipv6Addresses"] = [
                {"Ipv6Address": a["Ipv6Address"]} for a in props["Ipv6Addresses"]
            ]
        if "Ipv6AddressCount" in props:
            args["Ipv6AddressCount"] = int(props["Ipv6AddressCount"])
        spec = _tag_spec("network-interface", props)
        if spec:
            args["TagSpecifications"] = spec
        eni = _client("ec2", region).create_network_interface(**args)["NetworkInterface"]
        return cls(eni["NetworkInterfaceId"], region, {"Id": eni["NetworkInterfaceId"]})


class Instance(_Provider):
    TYPE = "AWS::EC2::Instance"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args: dict[str, Any] = {"MinCount": 1, "MaxCount": 1}
        if "LaunchTemplate" in props:
            lt = props["LaunchTemplate"]
            spec = {"Version": str(lt.get("Version", "$Default"))}
            if "LaunchTemplateId" in lt:
                spec["LaunchTemplateId"] = lt["LaunchTemplateId"]
            else:
                spec["LaunchTemplateName"] = lt["LaunchTemplateName"]
            args["LaunchTemplate"] = spec
        for key in ("ImageId", "InstanceType", "SubnetId", "UserData"):
            if key in props:
                args[key] = props[key]
        if "NetworkInterfaces" in props:
            args["NetworkInterfaces"] = [
                {
                    "DeviceIndex": int(n["DeviceIndex"]),
                    "NetworkInterfaceId": n["NetworkInterfaceId"],
                }
                for n in props["NetworkInterfaces"]
            ]
        spec_tags = _tag_spec("instance", props)
        if spec_tags:
            args["TagSpecifications"] = spec_tags
        inst = _client("ec2", region).run_instances(**args)["Instances"][0]
        return cls(inst["InstanceId"], region, {"InstanceId": inst["InstanceId"]})


class LoadBalancer(_Provider):
    TYPE = "AWS::ElasticLoadBalancingV2::LoadBalancer"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        elb = _client("elbv2", region)
        args: dict[str, Any] = {"Name": props.get("Name", name[:32])}
        for key in ("Subnets", "SecurityGroups", "Scheme", "Type", "IpAddressType"):
            if key in props:
                args[key] = props[key]
        if props.get("Tags"):
            args["Tags"] = _tags(props)
        lb = elb.create_load_balancer(**args)["LoadBalancers"][0]
        arn = lb["LoadBalancerArn"]
        if props.get("LoadBalancerAttributes"):
            elb.modify_load_balancer_attributes(
                LoadBalancerArn=arn,
                Attributes=[
                    {"Key": a["Key"], "Value": str(a["Value"])}
                    for a in props["LoadBalancerAttributes"]
                ],
            )
        return cls(
            arn,
            region,
            {
                "LoadBalancerArn": arn,
                "DNSName": lb["DNSName"],
                "CanonicalHostedZoneID": lb["CanonicalHostedZoneId"],
                "LoadBalancerFullName": arn.split(":loadbalancer/", 1)[1],
                "LoadBalancerName": lb["LoadBalancerName"],
            },
        )


class TargetGroup(_Provider):
    TYPE = "AWS::ElasticLoadBalancingV2::TargetGroup"
    __module__ = _MODEL_MODULE
    _INTS = (
        "Port",
        "HealthCheckIntervalSeconds",
        "HealthCheckTimeoutSeconds",
        "HealthyThresholdCount",
        "UnhealthyThresholdCount",
    )

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        elb = _client("elbv2", region)
        args: dict[str, Any] = {"Name": props.get("Name", name[:32])}
        for key in ("Protocol", "VpcId", "TargetType", "IpAddressType", "HealthCheckProtocol"):
            if key in props:
                args[key] = props[key]
        if "HealthCheckPort" in props:
            args["HealthCheckPort"] = str(props["HealthCheckPort"])
        for key in cls._INTS:
            if key in props:
                args[key] = int(props[key])
        tg = elb.create_target_group(**args)["TargetGroups"][0]
        arn = tg["TargetGroupArn"]
        if props.get("Targets"):
            elb.register_targets(
                TargetGroupArn=arn,
                Targets=[
                    {"Id": t["Id"], **({"Port": int(t["Port"])} if "Port" in t else {})}
                    for t in props["Targets"]
                ],
            )
        return cls(
            arn,
            region,
            {
                "TargetGroupArn": arn,
                "TargetGroupFullName": arn.rsplit(":", 1)[1],
                "TargetGroupName": tg["TargetGroupName"],
            },
        )


class Listener(_Provider):
    TYPE = "AWS::ElasticLoadBalancingV2::Listener"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        args: dict[str, Any] = {
            "LoadBalancerArn": props["LoadBalancerArn"],
            "Protocol": props["Protocol"],
            "Port": int(props["Port"]),
            "DefaultActions": [
                {"Type": a["Type"], "TargetGroupArn": a["TargetGroupArn"]}
                for a in props["DefaultActions"]
            ],
        }
        if "SslPolicy" in props:
            args["SslPolicy"] = props["SslPolicy"]
        if "Certificates" in props:
            args["Certificates"] = [
                {"CertificateArn": c["CertificateArn"]} for c in props["Certificates"]
            ]
        listener = _client("elbv2", region).create_listener(**args)["Listeners"][0]
        return cls(listener["ListenerArn"], region, {"ListenerArn": listener["ListenerArn"]})


class Subscription(_Provider):
    TYPE = "AWS::SNS::Subscription"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        out = _client("sns", region).subscribe(
            TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
        )
        return cls(out["SubscriptionArn"], region, {})


class KmsKey(_Provider):
    TYPE = "AWS::KMS::Key"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        kms = _client("kms", region)
        args: dict[str, Any] = {}
        if "KeyPolicy" in props:
            args["Policy"] = json.dumps(props["KeyPolicy"])
        for key in ("Description", "KeySpec", "KeyUsage"):
            if key in props:
                args[key] = props[key]
        if props.get("Tags"):
            args["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in _tags(props)]
        meta = kms.create_key(**args)["KeyMetadata"]
        if _bool(props.get("EnableKeyRotation", False)):
            kms.enable_key_rotation(KeyId=meta["KeyId"])
        return cls(meta["KeyId"], region, {"Arn": meta["Arn"], "KeyId": meta["KeyId"]})


class IamRole(_Provider):
    TYPE = "AWS::IAM::Role"
    __module__ = _MODEL_MODULE

    @classmethod
    def create(cls, name: str, props: dict[str, Any], region: str) -> _Provider:
        iam = _client("iam", region)
        role_name = props.get("RoleName", name[:64])
        args: dict[str, Any] = {
            "RoleName": role_name,
            "AssumeRolePolicyDocument": json.dumps(props["AssumeRolePolicyDocument"]),
        }
        for key in ("Path", "Description"):
            if key in props:
                args[key] = props[key]
        role = iam.create_role(**args)["Role"]
        for arn in props.get("ManagedPolicyArns", []):
            iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
        for policy in props.get("Policies", []):
            iam.put_role_policy(
                RoleName=role_name,
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(policy["PolicyDocument"]),
            )
        return cls(role_name, region, {"Arn": role["Arn"], "RoleId": role["RoleId"]})


def _fn_cidr(args: list[Any]) -> list[str]:
    """Fn::Cidr: the first `count` subnets with `bits` host bits of `block`."""
    block, count, bits = args
    net = ipaddress.ip_network(str(block))
    new_prefix = net.max_prefixlen - int(bits)
    out: list[str] = []
    for sub in net.subnets(new_prefix=new_prefix):
        if len(out) == int(count):
            break
        out.append(str(sub))
    return out


_original_clean_json = parsing.clean_json


def _clean_json(resource_json: Any, resources_map: Any) -> Any:
    if isinstance(resource_json, dict) and "Fn::Cidr" in resource_json:
        args = _original_clean_json(resource_json["Fn::Cidr"], resources_map)
        return _fn_cidr(args)
    if isinstance(resource_json, dict) and resource_json.get("Fn::GetAZs", None) in ("", None):
        if "Fn::GetAZs" in resource_json:
            # moto answers `!GetAZs ""` with us-east-1's zones whatever the
            # stack's region; CloudFormation means the stack's own region.
            zones = _client("ec2", resources_map._region_name).describe_availability_zones()
            return sorted(z["ZoneName"] for z in zones["AvailabilityZones"])
    return _original_clean_json(resource_json, resources_map)


_original_exports = parsing.OutputMap.exports


def _exports_after_resources(self: Any) -> Any:
    # moto computes a new stack's exports (to check they are unique) before it
    # creates the stack's resources, and creates only what the outputs refer
    # to.  CloudFormation evaluates outputs after every resource exists, so an
    # output such as the VPC's IPv6 block (set by a resource that no output
    # names) needs every resource created first, in dependency order.
    resources = self._resource_map
    for name in resources._ResourceMap__get_resources_in_dependency_order():
        resources[name]
    return _original_exports.fget(self)


def install() -> None:
    """Activate the providers above and Fn::Cidr in this process's moto."""
    parsing.clean_json = _clean_json
    parsing.OutputMap.exports = property(_exports_after_resources)
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    providers = {cls.TYPE for cls in _Provider.__subclasses__()}
    model_map = parsing.get_model_map()
    for kind in providers:
        # CloudFormationModel.__subclasses__ lists direct subclasses only;
        # ours derive from _Provider, so register them explicitly.
        model_map[kind] = next(c for c in _Provider.__subclasses__() if c.TYPE == kind)


def main() -> int:
    import logging
    import warnings

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    server = ThreadedMotoServer(ip_address="::1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    _ENDPOINT.append(f"http://[::1]:{port}")
    install()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
