"""Helpers of the end-to-end tests: tenants and users, chat calls, usage lines, counters, the fake's rules."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import boto3
import requests
from boto3.dynamodb.conditions import Key

from processes import ManagedProcess
from provision import DEFAULT_MODEL_ID, CognitoUsers, LocalResources, generate_password

T = TypeVar("T")

USAGE_FIELDS = {
    "event", "timestamp", "request_id", "tenant_id", "user_id", "model_id", "request_type",
    "input_tokens", "output_tokens", "total_tokens", "latency_ms",
}
OPTIONAL_USAGE_FIELDS = {"metering_error", "cache_creation_input_tokens", "cache_read_input_tokens"}
COUNTER_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "request_count")


# ------------------------------------------------------------------ the fake Bedrock's rules (contract)

def fake_reply(prompt: str, max_tokens: int | None = None) -> str:
    words = ["fake-bedrock", "says:", *prompt.split()[:32]]
    if max_tokens is not None:
        words = words[:max_tokens]
    return " ".join(words)


def fake_tokens(prompt: str, max_tokens: int | None = None) -> tuple[int, int]:
    """(input_tokens, output_tokens) the fake Bedrock reports for a one-block user prompt."""
    input_tokens = max(1, len(prompt.split()))
    output_tokens = len(fake_reply(prompt).split())
    if max_tokens is not None and max_tokens < output_tokens:
        output_tokens = max_tokens
    return input_tokens, output_tokens


# ------------------------------------------------------------------ polling

def poll(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0, interval: float = 0.1) -> T:
    """Calls probe until done(value) or timeout; returns the last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


# ------------------------------------------------------------------ tenants and users

@dataclass
class TenantUser:
    username: str
    tenant_id: str | None
    password: str
    sub: str
    token: str


class UserFactory:
    def __init__(self, resources: LocalResources):
        self.resources = resources
        self.users = CognitoUsers(resources.client("cognito-idp"), resources.user_pool_id, resources.user_pool_client_id)

    def create(self, tenant_id: str | None, prefix: str = "user") -> TenantUser:
        username = f"{prefix}-{uuid.uuid4().hex[:10]}"
        password = generate_password()
        sub = self.users.create_tenant_user(username, f"{username}@example.com", tenant_id, password)
        return TenantUser(username, tenant_id, password, sub, self.users.get_id_token(username, password))


def new_tenant_id(label: str = "t") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ the API

def chat(api_url: str, token: str | None, body=None, *, raw: bytes | str | None = None, headers: dict | None = None,
         timeout: float = 60) -> requests.Response:
    all_headers = {"content-type": "application/json"}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    data = raw if raw is not None else json.dumps(body)
    return requests.post(f"{api_url}/bedrock/chat", data=data, headers=all_headers, timeout=timeout)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table(heading: str, first_column: str) -> list[list[str]]:
    """The rows of the first Markdown table under README `heading` whose header starts with `first_column`,
    each cell stripped of its surrounding backticks. The README is the contract: tests read it, not a copy."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    in_table = False
    for line in lines[start + 1:]:
        if line.startswith("#") and not in_table:
            break
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not in_table:
                if cells[0] != first_column:
                    continue
                in_table = True
                continue
            if set(cells[0]) <= {"-", " ", ":"}:
                continue
            rows.append([cell[1:-1] if cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2 else cell
                         for cell in cells])
        elif in_table:
            break
    assert rows, f"no table starting with {first_column!r} under {heading!r} in {README}"
    return rows


def readme_error_types() -> dict[int, str]:
    """status -> `error.type`, from the README's error table of `POST /bedrock/chat` (every API of the
    gateway answers with the same mapping: `metering_core::ApiError`)."""
    types: dict[int, str] = {}
    for status, error_type, _ in readme_table("## `POST /bedrock/chat`", "status"):
        assert types.setdefault(int(status), error_type) == error_type, f"README: two types for {status}"
    return types


def assert_error_body(response: requests.Response, status: int) -> dict:
    """The response has `status` and the error JSON `{"error": {"type": ..., "message": str}}` whose type is
    exactly the one the README's error table gives for that status."""
    context = f"{response.request.method} {response.url} -> {response.status_code} {response.text[:500]!r}"
    assert response.status_code == status, context
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {context}") from None
    assert set(body) == {"error"}, context
    error = body["error"]
    assert set(error) == {"type", "message"}, context
    documented = readme_error_types()
    assert status in documented, f"README's error table has no row for {status}: {context}"
    assert error["type"] == documented[status], f"README says {documented[status]!r} for {status}: {context}"
    assert isinstance(error.get("message"), str) and error["message"], context
    return error


def request_id_of(response: requests.Response) -> str:
    request_id = response.headers.get("x-request-id")
    assert request_id, f"no x-request-id header in {response.status_code} {dict(response.headers)}"
    return request_id


# ------------------------------------------------------------------ usage lines

def usage_lines_for(api: ManagedProcess, request_id: str) -> list[dict]:
    return [line for line in api.usage_lines() if line.get("request_id") == request_id]


def wait_usage_line(api: ManagedProcess, request_id: str, timeout: float = 10.0) -> dict:
    """The one usage line of request_id on the API's stdout (metering runs after the answer: poll)."""
    lines = poll("usage line", lambda: usage_lines_for(api, request_id), bool, timeout)
    assert lines, f"no usage line for request {request_id} on {api.stdout_path} within {timeout}s"
    time.sleep(0.2)  # a duplicate would be written right after the first
    lines = usage_lines_for(api, request_id)
    assert len(lines) == 1, f"expected exactly one usage line for {request_id}, got {lines}"
    return lines[0]


def assert_usage_schema(line: dict) -> None:
    missing = USAGE_FIELDS - set(line)
    unexpected = set(line) - USAGE_FIELDS - OPTIONAL_USAGE_FIELDS
    assert not missing, f"usage line lacks {missing}: {line}"
    assert not unexpected, f"usage line has unexpected fields {unexpected}: {line}"
    assert line["event"] == "token_usage"
    assert line["request_type"] == "bedrock"
    assert line["model_id"] == DEFAULT_MODEL_ID
    for name in ("input_tokens", "output_tokens", "total_tokens", "latency_ms"):
        assert isinstance(line[name], int) and not isinstance(line[name], bool) and line[name] >= 0, (name, line)
    cache_tokens = line.get("cache_creation_input_tokens", 0) + line.get("cache_read_input_tokens", 0)
    assert line["total_tokens"] == line["input_tokens"] + line["output_tokens"] + cache_tokens, line
    stamp = line["timestamp"]
    assert isinstance(stamp, str) and len(stamp) == 24 and stamp.endswith("Z") and stamp[19] == ".", (
        f"timestamp {stamp!r} is not RFC 3339 UTC with milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ)"
    )
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    age = abs((dt.datetime.now(dt.timezone.utc) - parsed).total_seconds())
    assert age < 300, f"timestamp {stamp} is {age:.0f}s away from now"


def periods_of(line: dict) -> tuple[str, str]:
    """('YYYY-MM-DD', 'YYYY-Www') of a usage line's timestamp (UTC), the counter periods it lands in."""
    day = dt.datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").date()
    year, week, _ = day.isocalendar()
    return day.isoformat(), f"{year}-W{week:02d}"


def cloudwatch_usage_lines(resources: LocalResources, request_id: str) -> list[dict]:
    """Usage lines of request_id in the usage log group (moto ignores JSON filter patterns: filter here)."""
    logs = resources.client("logs")
    found = []
    for page in logs.get_paginator("filter_log_events").paginate(logGroupName=resources.usage_log_group):
        for event in page["events"]:
            try:
                record = json.loads(event["message"])
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "token_usage" and record.get("request_id") == request_id:
                found.append(record)
    return found


# ------------------------------------------------------------------ counters in DynamoDB

def counter_items(resources: LocalResources, tenant_id: str, sk_prefix: str) -> list[dict]:
    table = boto3.resource(
        "dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).Table(resources.usage_table)
    response = table.query(
        KeyConditionExpression=Key("pk").eq(f"TENANT#{tenant_id}") & Key("sk").begins_with(sk_prefix),
        ConsistentRead=True,
    )
    return response["Items"]


def counter_sums(resources: LocalResources, tenant_id: str, sk_prefix: str) -> dict[str, int]:
    sums = dict.fromkeys(COUNTER_FIELDS, 0)
    for item in counter_items(resources, tenant_id, sk_prefix):
        for name in COUNTER_FIELDS:
            sums[name] += int(item.get(name, 0))
    return sums


def wait_counters(resources: LocalResources, tenant_id: str, sk_prefix: str, expected: dict[str, int],
                  timeout: float = 10.0) -> dict[str, int]:
    return poll("counters", lambda: counter_sums(resources, tenant_id, sk_prefix), lambda s: s == expected, timeout)


def expected_sums(lines: list[dict]) -> dict[str, int]:
    return {
        "input_tokens": sum(line["input_tokens"] for line in lines),
        "output_tokens": sum(line["output_tokens"] for line in lines),
        "total_tokens": sum(line["total_tokens"] for line in lines),
        "request_count": len(lines),
    }


REPO_ROOT = Path(__file__).resolve().parents[2]


def operator_environment(stack, local_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator whose .local/stack.env (under `local_dir`) points at this session's stack."""
    import os
    import sys

    sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))
    import stack_state

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"BM_LOCAL_DIR": str(local_dir), "BM_STACK": "local", **extra})
    previous = os.environ.get("BM_LOCAL_DIR")
    os.environ["BM_LOCAL_DIR"] = str(local_dir)
    try:
        stack_state.write_state(stack.state())
    finally:
        if previous is None:
            os.environ.pop("BM_LOCAL_DIR", None)
        else:
            os.environ["BM_LOCAL_DIR"] = previous
    return env


def run_script(env: dict[str, str], name: str, *args: str, timeout: float = 300):
    """Runs `scripts/<name>` as an operator would; returns the completed process (output captured)."""
    import subprocess

    return subprocess.run([str(REPO_ROOT / "scripts" / name), *args], env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ gateway-key holders

class Holder:
    """A Cognito user of a fresh tenant and one gateway key of theirs."""

    def __init__(self, user, key: dict):
        self.user, self.tenant_id, self.key, self.key_id = user, user.tenant_id, key["key"], key["id"]


def new_holder(proxy, user_factory, label: str) -> Holder:
    """A user of a new tenant (`label` in its id) and the gateway key they create on `proxy`."""
    user = user_factory.create(new_tenant_id(label))
    response = requests.post(f"{proxy.url}/v1/keys", json={"name": label},
                             headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return Holder(user, response.json())
