"""The cloud specialist against moto's server: instances made and stopped with boto3,
CloudWatch data put with boto3, and the specialist's own boto3 clients reading them over
HTTP. Status checks that moto cannot fail come from a recorded EC2 answer, served in
front of moto by a small proxy of ours."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from episteme.diagnose.findings import Finding, SpecialistContext
from episteme.diagnose.specialists import cloud
from episteme.diagnose.specialists.cloud import SpecialistError
from tests.integration.processes import free_port
from tests.integration.server import live_server

REGION = "us-east-1"
EC2_KEY_REF = "op://Infrastructure/aws-ec2/access-key"
EC2_SECRET_REF = "op://Infrastructure/aws-ec2/secret-key"
CW_KEY_REF = "op://Infrastructure/aws-cloudwatch/access-key"
CW_SECRET_REF = "op://Infrastructure/aws-cloudwatch/secret-key"
KEY_REF = "op://Infrastructure/aws/access-key"
SECRET_REF = "op://Infrastructure/aws/secret-key"
SECRETS = {
    EC2_KEY_REF: "AKIAEC2CANARY0000001",
    EC2_SECRET_REF: "ec2-secret-canary-7f1d",
    CW_KEY_REF: "AKIACWCANARY00000002",
    CW_SECRET_REF: "cloudwatch-secret-canary-2b9e",
    KEY_REF: "AKIAPLAINCANARY00003",
    SECRET_REF: "plain-secret-canary-c04a",
}
SPLIT = {
    "ec2-access-key": EC2_KEY_REF,
    "ec2-secret-key": EC2_SECRET_REF,
    "cloudwatch-access-key": CW_KEY_REF,
    "cloudwatch-secret-key": CW_SECRET_REF,
}
PLAIN = {"access-key": KEY_REF, "secret-key": SECRET_REF}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: str) -> str:
    """moto's server with nothing in it."""
    httpx.post(f"{moto_server}/moto-api/reset", timeout=5).raise_for_status()
    return moto_server


def client(url: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIASETUP00000000000",
        aws_secret_access_key="setup",
    )


def context(credentials: dict[str, str] | None = None, **settings: Any) -> SpecialistContext:
    return SpecialistContext(
        problem="checkout is slow, cpu alarms on the api instances",
        environment="prod",
        settings={"region": REGION, **settings},
        secret=SECRETS.__getitem__,
        credentials=SPLIT if credentials is None else credentials,
        timeout_s=30,  # a budget, not an expectation: moto on a loaded 2-core runner has
        # taken over 7 s for one GetMetricData
    )


def launch(url: str, count: int) -> list[str]:
    ec2 = client(url, "ec2")
    reservation = ec2.run_instances(
        ImageId="ami-0abcdef1234567890", MinCount=count, MaxCount=count, InstanceType="t3.small"
    )
    return [i["InstanceId"] for i in reservation["Instances"]]


def put_cpu(url: str, instance: str, values: list[float]) -> None:
    now = datetime.now(UTC)
    client(url, "cloudwatch").put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": instance}],
                "Timestamp": now - timedelta(minutes=1 + 2 * i),
                "Value": value,
                "Unit": "Percent",
            }
            for i, value in enumerate(values)
        ],
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def no_secret_in(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text


# -- instances and CPU on moto ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stopped_instance_and_a_hot_cpu(moto: str) -> None:
    hot, calm, stopped = launch(moto, 3)
    client(moto, "ec2").stop_instances(InstanceIds=[stopped])
    put_cpu(moto, hot, [97.5, 99.0, 93.0, 88.5])  # newest first
    put_cpu(moto, calm, [35.0, 41.0])

    found = await cloud.run(context(endpoint_url=moto, instance_ids=[hot, calm, stopped]))

    assert sorted(codes(found)) == ["cloud.cpu_high", "cloud.instance_stopped"]
    assert all(f.specialist == "cloud" for f in found)
    by_code = {f.code: f for f in found}
    halted = by_code["cloud.instance_stopped"]
    assert halted.severity == "warning"
    assert halted.evidence == {
        "instance": stopped,
        "availability_zone": f"{REGION}a",
        "state": "stopped",
    }
    assert halted.tool == "boto3:ec2"
    assert halted.credential_ref == EC2_KEY_REF
    assert halted.query is not None
    assert halted.query.startswith("DescribeInstanceStatus(IncludeAllInstances=True")
    assert stopped in halted.query
    assert f"region {REGION}" in halted.query

    cpu = by_code["cloud.cpu_high"]
    assert cpu.severity == "critical"  # the average too is above 90
    assert cpu.evidence == {
        "instance": hot,
        "max": 99,
        "avg": 94.5,
        "latest": 97.5,
        "datapoints": 4,
        "threshold": 90.0,
        "window_minutes": 15.0,
    }
    assert hot in cpu.claim
    assert cpu.tool == "boto3:cloudwatch"
    assert cpu.credential_ref == CW_KEY_REF
    assert cpu.query is not None
    assert "CPUUtilization" in cpu.query
    assert f"InstanceId={hot}" in cpu.query
    no_secret_in(repr(found))


@pytest.mark.anyio
async def test_a_peak_alone_is_a_warning_and_the_threshold_is_a_setting(moto: str) -> None:
    (spiky,) = launch(moto, 1)
    put_cpu(moto, spiky, [40.0, 85.0, 30.0])

    assert await cloud.run(context(endpoint_url=moto)) == []
    found = await cloud.run(context(endpoint_url=moto, cpu_threshold=80))

    assert codes(found) == ["cloud.cpu_high"]
    assert found[0].severity == "warning"
    assert found[0].evidence["max"] == 85
    assert found[0].evidence["threshold"] == 80.0


@pytest.mark.anyio
async def test_without_instance_ids_stopped_instances_are_listed_as_info(moto: str) -> None:
    _, stopped = launch(moto, 2)
    client(moto, "ec2").stop_instances(InstanceIds=[stopped])

    found = await cloud.run(context(PLAIN, endpoint_url=moto))

    assert codes(found) == ["cloud.instance_stopped"]
    assert found[0].severity == "info"
    assert found[0].evidence == {"instances": [{"instance": stopped, "state": "stopped"}]}
    assert found[0].credential_ref == KEY_REF  # the plain roles when no ec2-* ones


@pytest.mark.anyio
async def test_moto_reports_running_instances_healthy(moto: str) -> None:
    launch(moto, 2)

    assert await cloud.run(context(endpoint_url=moto)) == []


@pytest.mark.anyio
async def test_configured_metrics_are_checked_against_their_thresholds(moto: str) -> None:
    now = datetime.now(UTC)
    client(moto, "cloudwatch").put_metric_data(
        Namespace="Shop/Queues",
        MetricData=[
            {
                "MetricName": "Depth",
                "Dimensions": [{"Name": "Queue", "Value": "orders"}],
                "Timestamp": now - timedelta(minutes=m),
                "Value": v,
            }
            for m, v in [(1, 1200.0), (4, 800.0), (7, 400.0)]
        ]
        + [
            {
                "MetricName": "Consumers",
                "Dimensions": [{"Name": "Queue", "Value": "orders"}],
                "Timestamp": now - timedelta(minutes=m),
                "Value": v,
            }
            for m, v in [(2, 4.0), (6, 3.0)]
        ],
    )
    metrics = [
        {
            "name": "order backlog",
            "namespace": "Shop/Queues",
            "metric": "Depth",
            "dimensions": {"Queue": "orders"},
            "stat": "Maximum",
            "threshold": 1000,
            "window_minutes": 10,
            "severity": "critical",
        },
        {
            "namespace": "Shop/Queues",
            "metric": "Consumers",
            "dimensions": [{"Name": "Queue", "Value": "orders"}],
            "threshold": 2,
            "comparison": "below",
        },
    ]

    found = await cloud.run(context(endpoint_url=moto, metrics=metrics))

    assert codes(found) == ["cloud.metric_threshold"]
    backlog = found[0]
    assert backlog.severity == "critical"
    assert backlog.tool == "boto3:cloudwatch"
    assert backlog.credential_ref == CW_KEY_REF
    assert backlog.evidence == {
        "name": "order backlog",
        "namespace": "Shop/Queues",
        "metric": "Depth",
        "dimensions": {"Queue": "orders"},
        "stat": "Maximum",
        "comparison": "above",
        "threshold": 1000.0,
        "worst": 1200,
        "avg": 800,
        "datapoints": 3,
        "window_minutes": 10.0,
    }
    assert backlog.query is not None
    assert "Shop/Queues Depth {Queue=orders} Maximum" in backlog.query


@pytest.mark.anyio
async def test_an_error_answer_to_one_call_is_an_info_finding(moto: str) -> None:
    found = await cloud.run(context(endpoint_url=moto, instance_ids=["i-0123456789abcdef0"]))

    assert codes(found) == ["cloud.check_failed"]
    assert found[0].severity == "info"
    assert "InvalidInstanceID.NotFound" in str(found[0].evidence["error"])


# -- status checks and events as EC2 reports them -----------------------------------------

# DescribeInstanceStatus's answer in EC2's XML, for two impaired instances and one with
# a scheduled reboot (and a maintenance that is over, which must not count)
RECORDED_STATUS = """<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstanceStatusResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>3be1508e-c444-4fef-89cc-0b1223c4f02f</requestId>
    <instanceStatusSet>
        <item>
            <instanceId>i-0a1b2c3d4e5f60718</instanceId>
            <availabilityZone>us-east-1b</availabilityZone>
            <instanceState><code>16</code><name>running</name></instanceState>
            <systemStatus>
                <status>impaired</status>
                <details>
                    <item>
                        <name>reachability</name>
                        <status>failed</status>
                        <impairedSince>2026-11-21T08:41:00.000Z</impairedSince>
                    </item>
                </details>
            </systemStatus>
            <instanceStatus>
                <status>ok</status>
                <details><item><name>reachability</name><status>passed</status></item></details>
            </instanceStatus>
            <eventsSet>
                <item>
                    <instanceEventId>instance-event-0d59937288b749b32</instanceEventId>
                    <code>instance-retirement</code>
                    <description>The instance is running on degraded hardware</description>
                    <notBefore>2026-11-28T00:00:00.000Z</notBefore>
                </item>
            </eventsSet>
        </item>
        <item>
            <instanceId>i-0f9e8d7c6b5a49382</instanceId>
            <availabilityZone>us-east-1c</availabilityZone>
            <instanceState><code>16</code><name>running</name></instanceState>
            <systemStatus>
                <status>ok</status>
                <details><item><name>reachability</name><status>passed</status></item></details>
            </systemStatus>
            <instanceStatus>
                <status>impaired</status>
                <details>
                    <item>
                        <name>reachability</name>
                        <status>failed</status>
                        <impairedSince>2026-11-21T08:52:00.000Z</impairedSince>
                    </item>
                </details>
            </instanceStatus>
        </item>
        <item>
            <instanceId>i-07a6b5c4d3e2f1009</instanceId>
            <availabilityZone>us-east-1b</availabilityZone>
            <instanceState><code>16</code><name>running</name></instanceState>
            <systemStatus><status>ok</status></systemStatus>
            <instanceStatus><status>ok</status></instanceStatus>
            <eventsSet>
                <item>
                    <instanceEventId>instance-event-01234567890abcdef</instanceEventId>
                    <code>system-reboot</code>
                    <description>scheduled reboot</description>
                    <notBefore>2026-11-25T03:00:00.000Z</notBefore>
                    <notAfter>2026-11-25T05:00:00.000Z</notAfter>
                </item>
                <item>
                    <instanceEventId>instance-event-0fedcba9876543210</instanceEventId>
                    <code>system-maintenance</code>
                    <description>[Completed] network maintenance</description>
                    <notBefore>2026-11-02T03:00:00.000Z</notBefore>
                </item>
            </eventsSet>
        </item>
    </instanceStatusSet>
</DescribeInstanceStatusResponse>
"""
_HOP = {"content-length", "transfer-encoding", "connection", "host", "date", "server"}


@pytest.fixture
def recorded_ec2(moto: str) -> Iterator[str]:
    """EC2's recorded answer to DescribeInstanceStatus; every other call goes to moto."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if b"Action=DescribeInstanceStatus" in body:
            return Response(RECORDED_STATUS, media_type="text/xml;charset=UTF-8")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with httpx.AsyncClient() as upstream:
            answer = await upstream.post(f"{moto}{request.url.path}", content=body, headers=headers)
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    with live_server(app) as url:
        yield url


@pytest.mark.anyio
async def test_impaired_instances_and_scheduled_events(moto: str, recorded_ec2: str) -> None:
    put_cpu(moto, "i-0f9e8d7c6b5a49382", [99.0, 98.0])  # the instance whose OS hangs

    found = await cloud.run(context(endpoint_url=recorded_ec2))

    assert codes(found) == [
        "cloud.instance_impaired",
        "cloud.scheduled_event",
        "cloud.instance_impaired",
        "cloud.scheduled_event",
        "cloud.cpu_high",
    ]
    hardware, retirement, hung, reboot, cpu = found
    assert hardware.severity == "critical"
    assert hardware.evidence == {
        "instance": "i-0a1b2c3d4e5f60718",
        "availability_zone": "us-east-1b",
        "state": "running",
        "system_status": "impaired",
        "instance_status": "ok",
        "failed_checks": [{"check": "system reachability", "since": "2026-11-21T08:41:00Z"}],
    }
    assert "stop and start" in hardware.claim
    assert hung.evidence["instance_status"] == "impaired"
    assert hung.evidence["failed_checks"] == [
        {"check": "instance reachability", "since": "2026-11-21T08:52:00Z"}
    ]
    assert retirement.severity == "warning"
    assert retirement.evidence == {
        "instance": "i-0a1b2c3d4e5f60718",
        "event": "instance-retirement",
        "event_id": "instance-event-0d59937288b749b32",
        "description": "The instance is running on degraded hardware",
        "not_before": "2026-11-28T00:00:00Z",
        "not_after": None,
    }
    assert reboot.evidence["instance"] == "i-07a6b5c4d3e2f1009"
    assert reboot.evidence["not_after"] == "2026-11-25T05:00:00Z"
    assert cpu.evidence["instance"] == "i-0f9e8d7c6b5a49382"
    assert {f.tool for f in found} == {"boto3:ec2", "boto3:cloudwatch"}


# -- failures ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unreachable_endpoint_fails_fast_without_the_keys() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()

    with pytest.raises(SpecialistError) as caught:
        await cloud.run(context(endpoint_url=endpoint))

    assert time.monotonic() - start < 5
    message = caught.value.message
    assert "cannot reach AWS EC2" in message
    assert endpoint in message
    assert f"region {REGION}" in message
    no_secret_in(message)
    no_secret_in(repr(caught.value))


@contextmanager
def iam_enforced(moto: str, free_requests: int = 0) -> Iterator[None]:
    """moto checking signatures and IAM policies of every request after the first
    `free_requests` (which set the scene)."""
    count = str(free_requests).encode()
    httpx.post(f"{moto}/moto-api/reset-auth", content=count, timeout=5).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{moto}/moto-api/reset-auth", content=b"inf", timeout=5).raise_for_status()


@pytest.mark.anyio
async def test_refused_credentials_name_the_reference_never_the_key(moto: str) -> None:
    with iam_enforced(moto), pytest.raises(SpecialistError) as caught:
        await cloud.run(context(endpoint_url=moto))

    message = caught.value.message
    assert "AWS EC2" in message
    assert "refused the access key" in message
    assert EC2_KEY_REF in message
    assert "AuthFailure" in message
    assert moto in message
    no_secret_in(message)


@pytest.mark.anyio
async def test_a_permission_the_key_lacks_is_an_info_finding(moto: str) -> None:
    with iam_enforced(moto, free_requests=5):
        (instance,) = launch(moto, 1)
        put_cpu(moto, instance, [99.0])
        iam = client(moto, "iam")
        iam.create_user(UserName="ec2-reader")
        key = iam.create_access_key(UserName="ec2-reader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="ec2-reader", PolicyName="describe", PolicyDocument=json.dumps(policy)
        )
        secrets = {KEY_REF: key["AccessKeyId"], SECRET_REF: key["SecretAccessKey"]}
        ctx = context(PLAIN, endpoint_url=moto)
        ctx.secret = secrets.__getitem__

        found = await cloud.run(ctx)

    assert codes(found) == ["cloud.check_failed"]
    denied = found[0]
    assert denied.tool == "boto3:cloudwatch"
    assert denied.credential_ref == KEY_REF
    error = str(denied.evidence["error"])
    assert error.startswith("AccessDenied: User: arn:aws:iam::")
    assert "not authorized to perform: monitoring:GetMetricData" in error
    assert error.endswith("(the key lacks this permission)")
    assert str(denied.evidence["call"]).startswith("GetMetricData(")
    assert key["SecretAccessKey"] not in repr(found)


# -- settings ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "credentials", "expected"),
    [
        ({"metrics": [{"namespace": "AWS/RDS", "metric": "CPU"}]}, SPLIT, "threshold"),
        ({"metrics": [{"metric": "CPU", "threshold": 1}]}, SPLIT, "namespace"),
        ({"metrics": {"namespace": "x"}}, SPLIT, "must be a list"),
        ({"period_s": 45}, SPLIT, "multiple of 60"),
        ({"cpu_threshold": "hot"}, SPLIT, "cpu_threshold"),
        ({}, {"ec2-access-key": EC2_KEY_REF}, "'ec2-secret-key'"),
    ],
)
async def test_malformed_settings_are_named(
    settings: dict[str, Any], credentials: dict[str, str], expected: str
) -> None:
    with pytest.raises(SpecialistError, match=expected) as caught:
        await cloud.run(context(credentials, **settings))
    no_secret_in(caught.value.message)
