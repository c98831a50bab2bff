"""Bedrock's own record (README "Bedrock invocation logs"): every Bedrock call of the gateway carries the
verified tenant, user, request id and request type as request metadata; the fake Bedrock checks it as Bedrock
does and writes a model invocation log record of every served call to the local bucket (moto); and
`scripts/reconcile --with-bedrock-logs` compares lines, counters, export and Bedrock's record.

Calls: /bedrock/chat (Converse) and the Claude proxy's fallback (InvokeModel, InvokeModelWithResponseStream)
over three tenants, on one API process in forced-fallback mode (every proxy call goes to Bedrock).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

anthropic = pytest.importorskip("anthropic", reason="pip install -r scripts/requirements-proxy.txt")

from localstack import BEDROCK_LOGS_PREFIX  # noqa: E402
from provision import DEFAULT_MODEL_ID  # noqa: E402
from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic  # noqa: E402
from support import chat, new_tenant_id, poll, wait_usage_line  # noqa: E402
from test_export import export, log_processor_bin, operator_env, run_script, usage_lines_of_day  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def audit_api(stack):
    """/bedrock/chat and /v1/messages; every proxy call is served by Bedrock (forced fallback)."""
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-audit")
    stack.extra_apis.append(fake)  # stopped with the stack
    key_table, _ = create_proxy_tables(stack.resources)
    return stack.start_api("api-bedrock-audit", **proxy_env(
        key_table, None, fake.url, FORCE_RATE_LIMIT_TEST="true", RATE_LIMIT_TRACKING="false"))


def gateway_key(api_url: str, id_token: str) -> str:
    response = requests.post(f"{api_url}/v1/keys", json={"name": "audit"},
                             headers={"Authorization": f"Bearer {id_token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def invocation_records(fake_url: str) -> list[dict]:
    response = requests.get(f"{fake_url}/fake/invocation-logs", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["records"]


def records_in_bucket(resources) -> list[dict]:
    s3 = resources.client("s3")
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=resources.analytics_bucket, Prefix=BEDROCK_LOGS_PREFIX):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=resources.analytics_bucket, Key=item["Key"])["Body"].read().decode()
            records += [json.loads(line) for line in body.splitlines() if line.strip()]
    return records


def by_request_id(records: list[dict]) -> dict[str, dict]:
    return {r["requestMetadata"]["request_id"]: r for r in records if "request_id" in r.get("requestMetadata", {})}


@pytest.fixture(scope="module")
def traffic(stack, audit_api, user_factory):
    """Three tenants, each: one chat, one plain and one streamed proxy call. -> [(tenant, user, request_id, operation)]."""
    calls = []
    for index in range(3):
        user = user_factory.create(new_tenant_id(f"audit{index}"))
        response = chat(audit_api.url, user.token, {"prompt": f"audit chat {index} {uuid.uuid4().hex[:6]}"})
        assert response.status_code == 200, response.text
        calls.append((user.tenant_id, user.sub, response.headers["x-request-id"], "Converse"))
        client = anthropic.Anthropic(base_url=audit_api.url, api_key=gateway_key(audit_api.url, user.token), max_retries=0)
        plain = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": f"audit plain {index}"}])
        assert plain.headers["x-gateway-upstream"] == "bedrock"
        calls.append((user.tenant_id, user.sub, plain.headers["x-request-id"], "InvokeModel"))
        with client.messages.with_streaming_response.create(
                model=MODEL, max_tokens=64, stream=True, messages=[{"role": "user", "content": f"audit stream {index}"}]) as streamed:
            request_id = streamed.headers["x-request-id"]
            assert streamed.headers["x-gateway-upstream"] == "bedrock"
            for _ in streamed.iter_lines():
                pass
        calls.append((user.tenant_id, user.sub, request_id, "InvokeModelWithResponseStream"))
    for _, _, request_id, _ in calls:
        wait_usage_line(audit_api, request_id)
    return calls


def test_every_bedrock_call_carries_the_verified_tenant_user_and_request_in_its_metadata(stack, audit_api, traffic):
    # GIVEN chats and proxy fallbacks (plain and streamed) of three tenants
    # WHEN the fake Bedrock's invocation records are read (its listing and the bucket, as Bedrock delivers them)
    listed = by_request_id(invocation_records(stack.fake_bedrock.url))
    delivered = by_request_id(poll("records in S3", lambda: records_in_bucket(stack.resources),
                                   lambda records: all(c[2] in by_request_id(records) for c in traffic)))
    # THEN every call is recorded once, with the operation it used and exactly the gateway's identity
    for tenant_id, user_id, request_id, operation in traffic:
        for records in (listed, delivered):
            assert request_id in records, f"no invocation record of {operation} {request_id}"
            record = records[request_id]
            assert record["schemaType"] == "ModelInvocationLog"
            assert record["operation"] == operation
            assert record["requestMetadata"] == {
                "tenant_id": tenant_id, "user_id": user_id, "request_id": request_id, "request_type": "bedrock"}
            line = wait_usage_line(audit_api, request_id)
            assert (record["input"]["inputTokenCount"], record["output"]["outputTokenCount"]) == (
                line["input_tokens"], line["output_tokens"])
    assert len({c[0] for c in traffic}) == 3


def fake_bedrock_client(stack):
    return boto3.client("bedrock-runtime", endpoint_url=stack.fake_bedrock.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}))


@pytest.mark.parametrize("metadata", [
    {"tenant_id": "acme#eu"},  # a character outside Bedrock's set
    {"tenant_id": "x" * 257},  # too long
    {f"k{i}": "v" for i in range(17)},  # too many pairs
])
def test_the_fake_refuses_metadata_bedrock_refuses_and_records_nothing(stack, metadata):
    before = len(invocation_records(stack.fake_bedrock.url))
    with pytest.raises(ClientError) as refused:
        fake_bedrock_client(stack).converse(
            modelId=DEFAULT_MODEL_ID, messages=[{"role": "user", "content": [{"text": "hi"}]}], requestMetadata=metadata)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "requestMetadata" in refused.value.response["Error"]["Message"], refused.value.response["Error"]
    assert len(invocation_records(stack.fake_bedrock.url)) == before


def test_the_reconcile_maps_ids_as_the_gateway_does():
    """The Python mapping (scripts/lib/bedrock_logs.py) and the Rust one (metering_core::bedrock_metadata)
    agree on the same vectors: verbatim when Bedrock accepts the id, else sha256: + hex digest."""
    import bedrock_logs

    assert bedrock_logs.metadata_value("acme-corp_01") == "acme-corp_01"
    assert bedrock_logs.metadata_value("acme#eu") == "sha256:" + hashlib.sha256(b"acme#eu").hexdigest()
    assert bedrock_logs.metadata_value("acme#eu") == "sha256:073da5bae4746924b0b1ef31e822a8ef50d94cf6f5686af830d0d771855f638d"
    assert bedrock_logs.metadata_value("x" * 257).startswith("sha256:")
    assert bedrock_logs.metadata_value("sha256:abc").startswith("sha256:") and bedrock_logs.metadata_value("sha256:abc") != "sha256:abc"


# ------------------------------------------------------------------ the four-way reconcile

def reconcile(operator_env, traffic, *extra: str):
    tenants = sorted({c[0] for c in traffic})
    args = ["--date", dt.datetime.now(dt.timezone.utc).date().isoformat(), "--no-week", "--with-bedrock-logs"]
    for tenant in tenants:
        args += ["--tenant", tenant]
    return run_script(operator_env, "reconcile", *args, *extra)


def test_the_four_way_reconcile_agrees_and_catches_an_unmetered_call_and_an_unrecorded_line(
        stack, audit_api, traffic, operator_env, tmp_path):
    lines_file = str(audit_api.stdout_path)
    poll("every record in S3", lambda: by_request_id(records_in_bucket(stack.resources)),
         lambda records: all(c[2] in records for c in traffic))
    # GIVEN the traffic above, its lines in the usage log group and exported
    today = dt.datetime.now(dt.timezone.utc).date()
    request_ids = {c[2] for c in traffic}
    poll("usage lines in CloudWatch Logs",
         lambda: {l["request_id"] for l in usage_lines_of_day(stack.resources, stack.resources.usage_log_group, today)},
         lambda found: request_ids <= found, timeout=20)
    export(operator_env)
    # WHEN reconciled with Bedrock's record THEN lines, counters, export and record agree
    agreed = reconcile(operator_env, traffic, "--lines-file", lines_file)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "bedrock record" in agreed.stdout and "| export" in agreed.stdout, agreed.stdout
    requests_row = [row for row in agreed.stdout.splitlines() if row.startswith(traffic[0][0]) and " export " in f" {row} "]
    assert requests_row, agreed.stdout
    # WHEN a call reaches Bedrock without the gateway (no usage line) for one of the tenants
    tenant, user_id = traffic[0][0], traffic[0][1]
    unmetered_id = str(uuid.uuid4())
    fake_bedrock_client(stack).converse(
        modelId=DEFAULT_MODEL_ID, messages=[{"role": "user", "content": [{"text": "a call nobody metered"}]}],
        requestMetadata={"tenant_id": tenant, "user_id": user_id, "request_id": unmetered_id, "request_type": "bedrock"})
    poll("the unmetered record in S3", lambda: by_request_id(records_in_bucket(stack.resources)),
         lambda records: unmetered_id in records)
    # AND a usage line exists that Bedrock never recorded
    unrecorded_id = str(uuid.uuid4())
    injected = tmp_path / "lines.log"
    template = wait_usage_line(audit_api, traffic[0][2])
    injected.write_text(open(lines_file).read() + json.dumps({**template, "request_id": unrecorded_id}) + "\n")
    report = reconcile(operator_env, traffic, "--lines-file", str(injected))
    # THEN both are reported by request id, with the tenant and the token difference
    assert report.returncode == 1, report.stdout + report.stderr
    assert f"MISSING-LINE {tenant} {unmetered_id}" in report.stdout, report.stdout
    assert f"MISSING-RECORD {tenant} {unrecorded_id}" in report.stdout, report.stdout
    assert f"{tenant}: bedrock requests differs: log lines" in report.stdout, report.stdout
