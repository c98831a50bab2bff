"""The API contract, fuzzed: schemathesis generates requests from infra/openapi/openapi.json (valid ones and,
for every operation with inputs, schema-violating ones) and sends them to the local stack: the local API with
the Claude proxy on, against moto, the fake Bedrock and the fake Anthropic, over real connections.

Every answer must be:
- never a 5xx (a 502/503/504 from a healthy fake is a gateway defect too), never a dropped connection or a
  hang (30 s read timeout);
- a status the document lists for the operation, with the documented content type, headers and body schema
  (schemathesis' conformance checks);
- on an error, exactly the route's envelope: `{"error": {"type", "message"}}` on the Cognito routes, Anthropic's
  `{"type": "error", "error": {"type", "message"}, ...}` on the proxy's function (`/v1/messages*`, `/v1/keys*`);
- from a handler: with `x-request-id`.

The callers hold real credentials: an IdToken from the local Cognito for a member of the admin group (so the
admin-only reports run, not only their 403), and a gateway key of another user (so the fuzzed `DELETE
/v1/keys/{id}` and the key limit cannot take it away).

Deterministic: Hypothesis runs derandomized (a fixed seed per test) with no example database, so CI sees the
same cases on every run. The total of cases sent is checked at the end (at least MIN_TOTAL_CASES).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import schemathesis  # scripts/requirements-fuzz.txt, installed into .venv by scripts/test

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import load_all_checks  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic  # noqa: E402
from provision import generate_password  # noqa: E402

SPEC_PATH = Path(__file__).resolve().parents[2] / "infra" / "openapi" / "openapi.json"
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]

# Cases per operation and mode. Hypothesis stops early when an operation has fewer distinct inputs (GET /ui has
# one); the total over the module is what MIN_TOTAL_CASES bounds.
POSITIVE_CASES = 180
NEGATIVE_CASES = 120
MIN_TOTAL_CASES = 2000
READ_TIMEOUT_SECONDS = 30

PROXY_FUNCTION_PREFIXES = ("/v1/messages", "/v1/keys", "/v1/gateway-key")
SCHEMA_CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]

_cases_sent: dict[str, int] = {}


def has_inputs(operation) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def fuzz_runs():
    for operation in OPERATIONS:
        yield pytest.param(operation, GenerationMode.POSITIVE, id=f"{operation.label}-positive")
        if has_inputs(operation):
            yield pytest.param(operation, GenerationMode.NEGATIVE, id=f"{operation.label}-negative")


@dataclass
class FuzzTarget:
    url: str
    id_token: str
    gateway_key: str


@pytest.fixture(scope="module")
def fuzz_target(stack, user_factory) -> FuzzTarget:
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake_anthropic = start_fake_anthropic(stack.run_dir, name="fake-anthropic-fuzz")
    stack.extra_apis.append(fake_anthropic)  # stopped with the stack
    api = stack.start_api("api-fuzz", **proxy_env(key_table, limit_table, fake_anthropic.url, RUST_LOG="info"))

    users = user_factory.users
    tenant_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    admin_name, admin_password = f"fuzz-admin-{uuid.uuid4().hex[:8]}", generate_password()
    users.create_tenant_user(admin_name, f"{admin_name}@example.com", tenant_id, admin_password, admin=True)
    key_owner = user_factory.create(tenant_id, prefix="fuzz-key-owner")
    created = requests.post(f"{api.url}/v1/keys", json={"name": "fuzz"}, timeout=30,
                            headers={"Authorization": f"Bearer {key_owner.token}"})
    assert created.status_code == 201, created.text
    return FuzzTarget(api.url, users.get_id_token(admin_name, admin_password), created.json()["key"])


def credentials(operation, target: FuzzTarget) -> dict[str, str]:
    path = operation.path
    if path.startswith("/v1/messages"):
        return {"x-api-key": target.gateway_key, "anthropic-version": "2023-06-01"}
    if path.startswith("/v1/gateway-key"):
        return {"x-api-key": target.gateway_key}
    if path.startswith("/ui"):
        return {}
    return {"Authorization": f"Bearer {target.id_token}"}


def envelope_problem(path: str, body) -> str | None:
    """What is wrong with an error body for this route's envelope, or None."""
    if path.startswith(PROXY_FUNCTION_PREFIXES):
        if not isinstance(body, dict) or body.get("type") != "error":
            return 'not Anthropic\'s envelope {"type": "error", "error": {...}}'
    elif not isinstance(body, dict) or set(body) != {"error"}:
        return 'not exactly {"error": {...}}'
    error = body.get("error")
    if not isinstance(error, dict):
        return "error is not an object"
    if not isinstance(error.get("type"), str) or not error["type"]:
        return "error.type is not a non-empty string"
    if not isinstance(error.get("message"), str) or not error["message"]:
        return "error.message is not a non-empty string"
    return None


def problems_of(operation, case, response) -> list[str]:
    found = []
    if response.status_code >= 500:
        found.append(f"server error {response.status_code}")
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        problem = envelope_problem(operation.path, body)
        if problem:
            found.append(f"error body {problem}")
    if not operation.path.startswith("/ui") and not response.headers.get("x-request-id"):
        found.append("no x-request-id header")
    try:
        case.validate_response(response, checks=SCHEMA_CHECKS)
    except FailureGroup as failure:
        found.append(f"does not conform to the document: {str(failure).strip().splitlines()[0]}")
    return found


@pytest.mark.parametrize(("operation", "mode"), list(fuzz_runs()))
def test_generated_requests_get_documented_answers(fuzz_target: FuzzTarget, operation, mode) -> None:
    load_all_checks()
    session = requests.Session()
    headers = credentials(operation, fuzz_target)
    findings: dict[str, str] = {}  # one example per kind of problem
    sent = 0

    @settings(
        max_examples=POSITIVE_CASES if mode == GenerationMode.POSITIVE else NEGATIVE_CASES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case) -> None:
        nonlocal sent
        sent += 1
        try:
            response = case.call(base_url=fuzz_target.url, session=session, headers=headers, timeout=READ_TIMEOUT_SECONDS)
        except requests.RequestException as error:  # refused, reset, hung up, timed out
            findings.setdefault(f"no answer: {type(error).__name__}", case.as_curl_command(headers=headers))
            session.close()
            return
        for problem in problems_of(operation, case, response):
            key = f"{response.status_code} {problem}"
            findings.setdefault(key, f"{case.as_curl_command(headers=headers)}\n    -> {response.content[:300]!r}")

    send()
    _cases_sent[f"{operation.label} {mode.value}"] = sent
    assert not findings, f"{operation.label} ({mode.value}, {sent} cases):\n" + "\n".join(
        f"- {kind}\n    {example}" for kind, example in sorted(findings.items())
    )


def test_enough_cases_were_sent() -> None:
    """At least MIN_TOTAL_CASES requests over every operation and mode (run the whole file)."""
    expected_runs = {f"{param.values[0].label} {param.values[1].value}" for param in fuzz_runs()}
    missing = expected_runs - set(_cases_sent)
    assert not missing, f"these fuzz runs did not run in this session: {sorted(missing)}"
    total = sum(_cases_sent.values())
    print(f"fuzz cases sent: {total} {_cases_sent}")
    assert total >= MIN_TOTAL_CASES, f"only {total} cases sent: {_cases_sent}"
