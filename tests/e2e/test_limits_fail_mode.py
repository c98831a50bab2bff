"""LIMITS_FAIL_MODE against the local stack (README "Budgets and quotas", "When DynamoDB cannot be read or
written"): when the limits store does not answer within LIMITS_STORE_TIMEOUT_MS (frozen) or cannot be reached
at all, `open` admits the request unlimited (its usage line written, a `limits_unavailable` warning logged) and
`closed` refuses it (503 `overloaded_error` on /bedrock/chat, 529 in Anthropic's envelope on /v1/messages,
`Retry-After: 5`, nothing metered), on both routes and in both phases: the limits' read and the reservation.

The fault is a pass-through proxy in front of moto's DynamoDB that fails only the limits' calls of one tenant
(bodies naming its `LIMITS#` or `BUDGET#` items): the key table, the tenant registry and the usage counters of
the same API keep working, as they would when only the limits' calls fail. Each case uses a tenant of its own.
Two API processes, one per fail mode; each case waits
one LIMITS_STORE_TIMEOUT_MS at most, so the file runs in seconds.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from dynamodb_tap import answer, forward_to, serve
from support import assert_error_body, chat, new_tenant_id, poll

STORE_TIMEOUT_MS = 1000
# The SDK's own bound of a DynamoDB call is 8 s (metering_core::counters::dynamodb_client): a client that
# waits less than that sees the answer only if the gateway stopped waiting at LIMITS_STORE_TIMEOUT_MS.
CLIENT_TIMEOUT_SECONDS = 6
FAIL_CLOSED_RETRY_AFTER = "5"
# Read: the GetItem/BatchGetItem of the limits items. Reserve: the TransactWriteItems on the use counters.
PHASE_MARKERS = {"read": "LIMITS#", "reserve": "BUDGET#"}


class LimitsStoreFault:
    """A pass-through proxy in front of moto's DynamoDB. A call whose body names a faulted tenant's item of the
    faulted phase is either held until `release()` (frozen: the table accepted the call and does not answer)
    or cut without an answer (unreachable: the connection closes). Every other call is forwarded at once.
    Counts, per faulted tenant and phase, the calls it saw, so a test knows its fault was met."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self._lock = threading.Lock()
        # tenant -> (phase, "frozen" | "unreachable", set when its frozen calls may go on)
        self._faults: dict[str, tuple[str, str, threading.Event]] = {}
        self.seen: Counter[tuple[str, str]] = Counter()  # (tenant, phase) -> calls
        fault = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                how, released = fault._classify(body.decode("utf-8", "replace"))
                if how == "unreachable":
                    self.close_connection = True
                    self.connection.close()
                    return
                if how == "frozen":
                    released.wait()
                status, headers, data = forward_to(fault.upstream, self, body, 60)
                try:
                    answer(self, status, headers, data)
                except OSError:
                    pass  # the gateway stopped waiting (LIMITS_STORE_TIMEOUT_MS); moto applied the call anyway

            def log_message(self, *args):
                pass

        self.server, self.url = serve(Handler)

    def fail(self, tenant_id: str, phase: str, how: str) -> None:
        with self._lock:
            self._faults[tenant_id] = (phase, how, threading.Event())

    def _classify(self, body: str) -> tuple[str | None, threading.Event | None]:
        with self._lock:
            for tenant_id, (phase, how, released) in self._faults.items():
                for seen_phase, marker in PHASE_MARKERS.items():
                    if f'"{marker}{tenant_id}"' in body or f'"{marker}{tenant_id}#' in body:
                        self.seen[(tenant_id, seen_phase)] += 1
                        if seen_phase == phase and not released.is_set():
                            return how, released
        return None, None

    def calls(self, tenant_id: str, phase: str) -> int:
        with self._lock:
            return self.seen[(tenant_id, phase)]

    def release(self, tenant_id: str) -> None:
        """The tenant's frozen calls go on to moto, and its later calls pass."""
        with self._lock:
            self._faults[tenant_id][2].set()

    def close(self) -> None:
        with self._lock:
            for _, _, released in self._faults.values():
                released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fault(resources):
    tap = LimitsStoreFault(resources.endpoint_url)
    yield tap
    tap.close()


@pytest.fixture(scope="module")
def apis(stack, fault):
    """One API per fail mode, both with the proxy on and their DynamoDB calls through the fault."""
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-fail-mode")
    stack.extra_apis.append(fake)
    common = dict(
        AWS_ENDPOINT_URL_DYNAMODB=fault.url,
        LIMITS_STORE_TIMEOUT_MS=str(STORE_TIMEOUT_MS),
        # Every request reads its limits: a warm-up that met a slow moto can simply be asked again.
        LIMITS_CACHE_SECONDS="0",
        LIMITS_EVENT_BUS_NAME="none",
        **proxy_env(key_table, limit_table, fake.url, RATE_LIMIT_TABLE_NAME=None),
    )
    return {
        # LIMITS_FAIL_MODE unset: open is the default.
        "open": stack.start_api("api-limits-fail-open", LIMITS_FAIL_MODE=None, **common),
        "closed": stack.start_api("api-limits-fail-closed", LIMITS_FAIL_MODE="closed", **common),
    }


@pytest.fixture(scope="module")
def usage_table(resources):
    return boto3.resource(
        "dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).Table(resources.usage_table)


class Caller:
    """A tenant with limits (written straight into moto, not through the fault), its user and gateway key."""

    def __init__(self, api, user_factory, usage_table):
        self.user = user_factory.create(new_tenant_id("failmode"))
        self.tenant_id = self.user.tenant_id
        usage_table.put_item(Item={"pk": f"LIMITS#{self.tenant_id}", "sk": "CONFIG",
                                   "tokens_per_month": 1_000_000, "requests_per_minute": 1000})
        response = requests.post(f"{api.url}/v1/keys", json={"name": "fail-mode"},
                                 headers={"Authorization": f"Bearer {self.user.token}"}, timeout=30)
        assert response.status_code == 201, response.text
        self.key = response.json()["key"]

    def ask(self, api, route: str) -> requests.Response:
        if route == "/bedrock/chat":
            return chat(api.url, self.user.token, {"prompt": "fail mode " + uuid.uuid4().hex[:6], "max_tokens": 8},
                        timeout=CLIENT_TIMEOUT_SECONDS)
        body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "fail mode"}]}
        return requests.post(f"{api.url}/v1/messages", json=body, timeout=CLIENT_TIMEOUT_SECONDS,
                             headers={"x-api-key": self.key, "anthropic-version": "2023-06-01"})


def warnings_of(api, request_id: str) -> list[dict]:
    """The `limits_unavailable` log events (JSON on stderr) of one request."""
    found = []
    for line in api.stderr_path.read_text(errors="replace").splitlines():
        if '"limits_unavailable"' not in line:
            continue
        fields = json.loads(line).get("fields", {})
        if fields.get("event") == "limits_unavailable" and fields.get("request_id") == request_id:
            found.append(json.loads(line))
    return found


def usage_lines_of(api, request_id: str) -> list[dict]:
    return [line for line in api.usage_lines() if line.get("request_id") == request_id]


# (route, phase, how): each route meets each phase and each kind of fault once per mode.
CASES = [
    ("/bedrock/chat", "read", "frozen"),
    ("/v1/messages", "read", "unreachable"),
    ("/v1/messages", "reserve", "frozen"),
    ("/bedrock/chat", "reserve", "unreachable"),
]


def month_counter(usage_table, tenant_id: str) -> dict:
    """The tenant's tokens_per_month use counter (read from moto directly), 0s when absent."""
    items = usage_table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"BUDGET#{tenant_id}"},
                              ConsistentRead=True)["Items"]
    months = [item for item in items if item["sk"].startswith("MONTH#")]
    assert len(months) <= 1, months
    return {name: int(months[0].get(name, 0)) if months else 0 for name in ("admitted", "settled")}


def prepare(api, fault, caller, usage_table, phase: str, how: str) -> None:
    if phase == "reserve":
        # A first request reads the limits, reserves and settles normally; then the reservations fail.
        for _ in range(3):  # a busy machine's moto may once take longer than LIMITS_STORE_TIMEOUT_MS
            warm = caller.ask(api, "/v1/messages")
            if warm.status_code == 200 and not warnings_of(api, warm.headers["x-request-id"]):
                break
        assert warm.status_code == 200, warm.text
        assert warnings_of(api, warm.headers["x-request-id"]) == [], "the first request was checked against its limits"
        settled = poll("warm-up settled", lambda: month_counter(usage_table, caller.tenant_id),
                       lambda c: c["admitted"] == c["settled"] > 0)
        assert settled["admitted"] == settled["settled"] > 0, settled
    fault.fail(caller.tenant_id, phase, how)


@pytest.mark.parametrize("route,phase,how", CASES)
def test_fail_open_admits_meters_and_warns(apis, fault, user_factory, usage_table, route, phase, how):
    api = apis["open"]
    caller = Caller(api, user_factory, usage_table)
    prepare(api, fault, caller, usage_table, phase, how)

    response = caller.ask(api, route)

    assert response.status_code == 200, response.text
    assert fault.calls(caller.tenant_id, phase) >= 1, "the request met the fault"
    request_id = response.headers["x-request-id"]
    lines = poll("usage line", lambda: usage_lines_of(api, request_id), bool)
    assert len(lines) == 1 and lines[0]["tenant_id"] == caller.tenant_id, "admitted unlimited, and metered"
    warnings = poll("warning", lambda: warnings_of(api, request_id), bool)
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "WARN"
    assert warnings[0]["fields"]["fail_mode"] == "open" and warnings[0]["fields"]["tenant_id"] == caller.tenant_id


@pytest.mark.parametrize("route,phase,how", CASES)
def test_fail_closed_refuses_with_overloaded_and_retry_after_5(apis, fault, user_factory, usage_table, route, phase, how):
    api = apis["closed"]
    caller = Caller(api, user_factory, usage_table)
    prepare(api, fault, caller, usage_table, phase, how)

    response = caller.ask(api, route)

    assert fault.calls(caller.tenant_id, phase) >= 1, "the request met the fault"
    assert response.headers["Retry-After"] == FAIL_CLOSED_RETRY_AFTER
    if route == "/bedrock/chat":
        error = assert_error_body(response, 503)
    else:
        # Anthropic's envelope and its overloaded status, which the SDKs retry.
        assert response.status_code == 529, response.text
        body = response.json()
        assert body["type"] == "error" and body["request_id"] == response.headers["x-request-id"], body
        error = body["error"]
    assert error["type"] == "overloaded_error" and "limits could not be checked" in error["message"], error
    request_id = response.headers["x-request-id"]
    assert usage_lines_of(api, request_id) == [], "a refused request is not metered"
    warnings = poll("warning", lambda: warnings_of(api, request_id), bool)
    assert len(warnings) == 1 and warnings[0]["fields"]["fail_mode"] == "closed", warnings
    assert not [line for line in api.json_lines() if line.get("event") == "limit_refused"
                and line.get("request_id") == request_id], "not a limit's refusal"


def test_a_reservation_that_lands_late_only_makes_the_budget_stricter(apis, fault, user_factory, usage_table, resources):
    """Fail open on a frozen reservation: the request is admitted; when the table comes back, the late
    reservation lands and stays counted (never settled), so the budget is under-used, never overshot."""
    api = apis["open"]
    caller = Caller(api, user_factory, usage_table)
    prepare(api, fault, caller, usage_table, "reserve", "frozen")
    before = month_counter(usage_table, caller.tenant_id)
    response = caller.ask(api, "/v1/messages")
    assert response.status_code == 200, response.text
    assert poll("usage line", lambda: usage_lines_of(api, response.headers["x-request-id"]), bool), "admitted, metered"
    fault.release(caller.tenant_id)  # the table answers again: the frozen reservation lands
    after = poll("late reservation", lambda: month_counter(usage_table, caller.tenant_id), lambda c: c["admitted"] > before["admitted"])
    # The late worst case stays counted (admitted) and is never settled: stricter, never looser.
    assert after["admitted"] > before["admitted"] and after["settled"] == before["settled"], (before, after)
