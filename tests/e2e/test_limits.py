"""Tenant budgets and quotas against the local stack (README "Budgets and quotas"): the limits API and who may
use it, token budgets under concurrency (never overshot), requests per minute, period rollover on a moved
clock, /v1/messages (Anthropic, Bedrock fallback, streamed, disconnect), and alerts exactly once.

One API process of its own (proxy on, limits' clock movable through LOCAL_LIMITS_CLOCK_OFFSET_FILE); prompts
are small and nothing is delayed, so the whole file runs in seconds.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests

from dynamodb_tap import DynamoDbTap
from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from provision import generate_password
from support import assert_error_body, chat, new_tenant_id, poll

PROMPT = "a b c d e f g h i j"  # the fake Bedrock: 10 input tokens; with max_tokens 8, 8 output tokens
MAX_TOKENS = 8
ACTUAL_TOKENS = 18
# The chat's reservation: prompt bytes + 16 + max_tokens (crates/metering-core/src/chat.rs).
RESERVED_TOKENS = len(PROMPT.encode()) + 16 + MAX_TOKENS


@pytest.fixture(scope="module")
def clock_file(stack):
    path = stack.run_dir / f"limits-clock-{uuid.uuid4().hex[:6]}"
    path.write_text("0")
    return path


def set_clock(clock_file, at: dt.datetime) -> None:
    """Moves the limits' clock of the API so that now is `at` (it keeps running from there)."""
    offset = (at - dt.datetime.now(dt.timezone.utc)).total_seconds()
    clock_file.write_text(f"{offset:.3f}")


@pytest.fixture(scope="module")
def api(stack, clock_file):
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-limits")
    stack.extra_apis.append(fake)
    return stack.start_api(
        "api-limits",
        LOCAL_LIMITS_CLOCK_OFFSET_FILE=str(clock_file),
        # moto answers one call at a time: under 60 concurrent requests on a shared machine a call can wait
        # longer than the 1.5 s default, and these tests must see enforcement, not the fail-open path.
        LIMITS_STORE_TIMEOUT_MS="20000",
        **proxy_env(key_table, limit_table, fake.url, RATE_LIMIT_TABLE_NAME=None),
    )


@pytest.fixture(scope="module")
def admin(user_factory):
    username = f"admin-{uuid.uuid4().hex[:8]}"
    password = generate_password()
    user_factory.users.create_tenant_user(username, f"{username}@example.com", new_tenant_id("ops"), password, admin=True)
    return user_factory.users.get_id_token(username, password)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def put_limits(api, admin_token: str, tenant_id: str, limits: dict) -> dict:
    response = requests.put(f"{api.url}/v1/limits/{tenant_id}", json=limits, headers=auth(admin_token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def my_limits(api, token: str) -> dict:
    response = requests.get(f"{api.url}/v1/limits/me", headers=auth(token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_settled(api, token: str, kind: str) -> dict:
    """The caller's `kind` once no reservation is in flight (settling runs right after each answer)."""
    return poll("settled", lambda: my_limits(api, token)["limits"][kind], lambda seen: seen["in_flight"] == 0)


def small_chat(api, token: str) -> requests.Response:
    return chat(api.url, token, {"prompt": PROMPT, "max_tokens": MAX_TOKENS})


def refused_lines(api, tenant_id: str) -> list[dict]:
    return [line for line in api.json_lines() if line.get("event") == "limit_refused" and line.get("tenant_id") == tenant_id]


def tenant_usage_lines(api, tenant_id: str) -> list[dict]:
    return [line for line in api.usage_lines() if line.get("tenant_id") == tenant_id]


def budget_counter(resources, tenant_id: str, sk: str) -> dict:
    table = boto3.resource(
        "dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).Table(resources.usage_table)
    item = table.get_item(Key={"pk": f"BUDGET#{tenant_id}", "sk": sk}, ConsistentRead=True).get("Item", {})
    return {name: int(item.get(name, 0)) for name in ("admitted", "settled")}


def assert_budget_exceeded(response: requests.Response) -> dict:
    """A 429 of a token or USD budget: the error envelope with type budget_exceeded (README "Budgets and quotas";
    the README's error table keeps one type per status, rate_limit_error, for the other 429s)."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == "budget_exceeded" and body["error"]["message"], body
    assert int(response.headers["Retry-After"]) >= 1
    return body["error"]


def seconds_until(clock_now: dt.datetime, reset: dt.datetime) -> float:
    return (reset - clock_now).total_seconds()


# ------------------------------------------------------------------ the API and who may use it

def test_a_tenant_reads_only_its_own_limits_and_only_admins_change_them(api, admin, user_factory):
    alice = user_factory.create(new_tenant_id("alice"))
    bob = user_factory.create(new_tenant_id("bob"))
    clean = my_limits(api, alice.token)
    assert clean["tenant_id"] == alice.tenant_id
    assert clean["limits"] == {kind: None for kind in ("requests_per_minute", "tokens_per_day", "tokens_per_month", "usd_per_month")}
    # Not another tenant's, not even her own through the admin route, and no change without the admin group.
    for method in ("GET", "PUT", "DELETE"):
        for tenant in (bob.tenant_id, alice.tenant_id):
            response = requests.request(method, f"{api.url}/v1/limits/{tenant}", json={"tokens_per_day": 1},
                                        headers=auth(alice.token), timeout=30)
            assert_error_body(response, 403)
    assert requests.get(f"{api.url}/v1/limits/me", timeout=30).status_code == 401
    # Bad values are 400 with the field named; nothing is stored.
    for body in ({"tokens_per_day": -1}, {"tokens_per_day": 1.5}, {"usd_per_month": "5"}, {"tokens": 5}, [1]):
        response = requests.put(f"{api.url}/v1/limits/{bob.tenant_id}", json=body, headers=auth(admin), timeout=30)
        assert_error_body(response, 400)
    assert my_limits(api, bob.token)["limits"]["tokens_per_day"] is None
    assert_error_body(requests.post(f"{api.url}/v1/limits/{bob.tenant_id}", json={}, headers=auth(admin), timeout=30), 405)
    # The tenant segment is percent-decoded exactly once: `%62ob` is `bob`, `%2562ob` is `%62ob`, no tenant id.
    first = f"%{ord(bob.tenant_id[0]):02X}{bob.tenant_id[1:]}"
    once = requests.get(f"{api.url}/v1/limits/{first}", headers=auth(admin), timeout=30)
    assert once.status_code == 200 and once.json()["tenant_id"] == bob.tenant_id, once.text
    assert_error_body(requests.get(f"{api.url}/v1/limits/%25{first[1:]}", headers=auth(admin), timeout=30), 400)
    # An admin sets Bob's limits; Bob sees them, with use, remaining and reset times; the admin clears them.
    answer = put_limits(api, admin, bob.tenant_id, {"tokens_per_month": 1000, "usd_per_month": 12.5, "requests_per_minute": 5})
    assert answer["limits"]["tokens_per_month"]["limit"] == 1000
    seen = my_limits(api, bob.token)
    assert seen["limits"]["usd_per_month"]["limit"] == 12.5
    assert seen["limits"]["tokens_per_month"]["used"] == 0 and seen["limits"]["tokens_per_month"]["remaining"] == 1000
    assert seen["limits"]["tokens_per_day"] is None
    assert seen["updated_by"]
    cleared = requests.delete(f"{api.url}/v1/limits/{bob.tenant_id}", headers=auth(admin), timeout=30)
    assert cleared.status_code == 200 and cleared.json()["limits"]["tokens_per_month"] is None
    assert my_limits(api, alice.token)["limits"] == clean["limits"], "Alice's limits never changed"


# ------------------------------------------------------------------ token budget under concurrency

def test_sixty_concurrent_chats_never_overshoot_the_token_budget(api, admin, user_factory, resources, clock_file):
    clock_file.write_text("0")
    user = user_factory.create(new_tenant_id("budget"))
    limit = 30 * ACTUAL_TOKENS  # about 30 of the 60 fit
    put_limits(api, admin, user.tenant_id, {"tokens_per_day": limit})
    sent_at = dt.datetime.now(dt.timezone.utc)
    with ThreadPoolExecutor(max_workers=60) as pool:
        responses = list(pool.map(lambda _: small_chat(api, user.token), range(60)))
    now = dt.datetime.now(dt.timezone.utc)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok and refused, [r.status_code for r in responses]
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    for response in refused:
        assert_budget_exceeded(response)
        # Refused at some moment between the first request and the last answer (however slow the machine).
        retry_after = int(response.headers["Retry-After"])
        assert seconds_until(now, midnight) - 1 <= retry_after <= seconds_until(sent_at, midnight) + 1, response.headers
    # The bill: every answered request has its line, no refused one has any, and the sum stays within the limit.
    lines = poll("usage lines", lambda: tenant_usage_lines(api, user.tenant_id), lambda found: len(found) >= len(ok))
    assert len(lines) == len(ok)
    metered = sum(line["total_tokens"] for line in lines)
    assert metered <= limit, f"metered {metered} tokens over the limit {limit}"
    refused_ids = {r.headers["x-request-id"] for r in refused}
    assert not refused_ids & {line["request_id"] for line in lines}
    events = poll("limit_refused lines", lambda: refused_lines(api, user.tenant_id), lambda found: len(found) >= len(refused))
    assert {line["request_id"] for line in events} == refused_ids
    assert all(line["limit"] == "tokens_per_day" and line["route"] == "/bedrock/chat" and line["user_id"] == user.sub
               for line in events)
    # Every reservation settled to the metered use: nothing held, nothing lost.
    counter = poll("settled counter", lambda: budget_counter(resources, user.tenant_id, f"DAY#{now.date().isoformat()}"),
                   lambda c: c == {"admitted": metered, "settled": metered})
    assert counter == {"admitted": metered, "settled": metered}
    assert my_limits(api, user.token)["limits"]["tokens_per_day"]["used"] == metered


# ------------------------------------------------------------------ requests per minute

def test_the_eleventh_request_of_a_minute_is_refused_and_the_next_minute_admits(api, admin, user_factory, clock_file):
    user = user_factory.create(new_tenant_id("rpm"))
    put_limits(api, admin, user.tenant_id, {"requests_per_minute": 10})
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(minute=7, second=5, microsecond=0)
    set_clock(clock_file, start)
    assert [small_chat(api, user.token).status_code for _ in range(10)] == [200] * 10
    eleventh = small_chat(api, user.token)
    error = assert_error_body(eleventh, 429)
    assert error["type"] == "rate_limit_error"
    assert 45 <= int(eleventh.headers["Retry-After"]) <= 55, eleventh.headers
    assert refused_lines(api, user.tenant_id)[-1]["limit"] == "requests_per_minute"
    set_clock(clock_file, start + dt.timedelta(minutes=1))
    assert small_chat(api, user.token).status_code == 200


# ------------------------------------------------------------------ period rollover

def test_day_and_month_budgets_reset_at_utc_boundaries(api, admin, user_factory, clock_file):
    user = user_factory.create(new_tenant_id("rollover"))
    year = dt.datetime.now(dt.timezone.utc).year + 1
    # A day budget of one request: full on Jan 15th just before midnight, free again just after.
    put_limits(api, admin, user.tenant_id, {"tokens_per_day": RESERVED_TOKENS})
    before = dt.datetime(year, 1, 15, 23, 59, 57, tzinfo=dt.timezone.utc)
    set_clock(clock_file, before)
    assert small_chat(api, user.token).status_code == 200
    refused = small_chat(api, user.token)
    assert_budget_exceeded(refused)
    assert 1 <= int(refused.headers["Retry-After"]) <= 4
    assert my_limits(api, user.token)["limits"]["tokens_per_day"]["period"] == f"{year}-01-15"
    set_clock(clock_file, before + dt.timedelta(seconds=4))
    assert small_chat(api, user.token).status_code == 200
    seen = my_limits(api, user.token)["limits"]["tokens_per_day"]
    assert seen["period"] == f"{year}-01-16" and seen["resets_at"] == f"{year}-01-17T00:00:00Z"
    # A month budget of two requests (two metered ones leave less than a reservation): full at the end of
    # January, free again on February 1st.
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": 2 * ACTUAL_TOKENS + RESERVED_TOKENS - 1})
    end_of_month = dt.datetime(year, 1, 31, 23, 59, 55, tzinfo=dt.timezone.utc)
    set_clock(clock_file, end_of_month)
    for _ in range(2):
        assert small_chat(api, user.token).status_code == 200
        wait_settled(api, user.token, "tokens_per_month")
    refused = small_chat(api, user.token)
    assert_budget_exceeded(refused)
    assert refused_lines(api, user.tenant_id)[-1]["period"] == f"{year}-01"
    set_clock(clock_file, end_of_month + dt.timedelta(seconds=6))
    assert small_chat(api, user.token).status_code == 200
    month = wait_settled(api, user.token, "tokens_per_month")
    assert month["period"] == f"{year}-02" and month["resets_at"] == f"{year}-03-01T00:00:00Z"
    assert month["used"] == ACTUAL_TOKENS
    clock_file.write_text("0")


# ------------------------------------------------------------------ /v1/messages

def create_key(api, token: str) -> dict:
    response = requests.post(f"{api.url}/v1/keys", json={"name": "limits"}, headers=auth(token), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def messages(api, key: str, text: str, streamed: bool = False, max_tokens: int = 16, **kwargs) -> requests.Response:
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}], "stream": streamed}
    return requests.post(f"{api.url}/v1/messages", json=body, headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                         timeout=30, **kwargs)


def test_messages_are_held_to_the_same_budgets_on_every_upstream(api, admin, user_factory, resources, clock_file):
    clock_file.write_text("0")
    user = user_factory.create(new_tenant_id("proxy-budget"))
    key = create_key(api, user.token)
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": 100_000, "requests_per_minute": 1000})
    month_sk = f"MONTH#{dt.datetime.now(dt.timezone.utc):%Y-%m}"
    answers = {
        "anthropic": messages(api, key["key"], "hello there"),
        "bedrock": messages(api, key["key"], "hello there [fake:rate-limit]"),
        "stream": messages(api, key["key"], "hello there streamed", streamed=True),
    }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        assert int(response.headers["anthropic-ratelimit-tokens-limit"]) == 100_000, name
        assert int(response.headers["anthropic-ratelimit-tokens-remaining"]) < 100_000, name
        assert int(response.headers["anthropic-ratelimit-requests-limit"]) == 1000, name
        assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z"), name
    assert answers["bedrock"].headers["x-gateway-upstream"] == "bedrock"
    # A client that hangs up mid-stream: the stream is read to its end (ON_CLIENT_DISCONNECT=finish) and settles.
    with messages(api, key["key"], " ".join(["word"] * 30) + " [fake:stream-delay=20]", streamed=True, stream=True) as cut:
        assert cut.status_code == 200
        next(cut.iter_content(64))
    expected_requests = 4
    lines = poll("usage lines", lambda: tenant_usage_lines(api, user.tenant_id), lambda found: len(found) >= expected_requests)
    assert len(lines) == expected_requests
    metered = sum(line["total_tokens"] for line in lines)
    counter = poll("settled", lambda: budget_counter(resources, user.tenant_id, month_sk),
                   lambda c: c == {"admitted": metered, "settled": metered})
    assert counter == {"admitted": metered, "settled": metered}, "each reservation settled to its usage line"
    # Exhausted: 429 in Anthropic's envelope, rate_limit_error, retry-after and the headers; not metered.
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": metered + 10})
    refused = messages(api, key["key"], "one more")
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert len(tenant_usage_lines(api, user.tenant_id)) == expected_requests
    assert refused_lines(api, user.tenant_id)[-1]["route"] == "/v1/messages"


def test_a_gateway_key_can_be_narrowed_below_its_tenant(api, admin, user_factory, resources):
    user = user_factory.create(new_tenant_id("narrow"))
    key = create_key(api, user.token)
    table = boto3.resource(
        "dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).Table(resources.usage_table)
    table.put_item(Item={"pk": f"LIMITS#{user.tenant_id}", "sk": f"KEY#{key['id']}", "requests_per_minute": 2})
    statuses = [messages(api, key["key"], "hi").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    line = refused_lines(api, user.tenant_id)[-1]
    assert line["scope"] == "key" and line["key_id"] == key["id"]


RATE_LIMIT_HEADERS = [f"anthropic-ratelimit-{group}-{part}" for group in ("requests", "tokens")
                      for part in ("limit", "remaining", "reset")]


def count_tokens(api, key: str, text: str) -> requests.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return requests.post(f"{api.url}/v1/messages/count_tokens", json=body, timeout=30,
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01"})


def test_every_proxy_answer_under_a_limit_carries_the_rate_limit_headers(api, admin, user_factory, clock_file):
    """count_tokens (Anthropic, Bedrock fallback, upstream 4xx) and the error answers of /v1/messages (upstream
    4xx, a failed Bedrock fallback, a body the gateway refuses before admission) say where the caller stands;
    count_tokens reserves nothing and counts toward no limit. A tenant without limits gets none of the headers
    (managed mode drops the provider's own)."""
    clock_file.write_text("0")
    user = user_factory.create(new_tenant_id("headers"))
    key = create_key(api, user.token)["key"]
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": 100_000, "requests_per_minute": 1000})

    counted = count_tokens(api, key, "how many tokens is this")
    assert counted.status_code == 200 and counted.json()["input_tokens"] >= 1, counted.text
    assert counted.headers["x-gateway-upstream"] == "anthropic"
    # Nothing used yet, and counting tokens uses nothing.
    assert counted.headers["anthropic-ratelimit-tokens-limit"] == counted.headers["anthropic-ratelimit-tokens-remaining"] == "100000"
    assert counted.headers["anthropic-ratelimit-requests-limit"] == counted.headers["anthropic-ratelimit-requests-remaining"] == "1000"
    reset = dt.datetime.fromisoformat(counted.headers["anthropic-ratelimit-tokens-reset"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.timezone.utc)
    assert reset.day == 1 and reset > now, "the month's budget resets on the first of next month (UTC)"

    answers = {
        "count_tokens, Bedrock fallback": count_tokens(api, key, "count me [fake:rate-limit]"),
        "count_tokens, upstream 400": count_tokens(api, key, "count me [fake:invalid]"),
        "messages, upstream 400": messages(api, key, "refuse me [fake:invalid]"),
        "messages, Bedrock fallback failed": messages(api, key, "fail twice [fake:rate-limit] [fake:unavailable]"),
        "messages, body refused by the gateway": requests.post(
            f"{api.url}/v1/messages", data=b'{"model": 5}', timeout=30,
            headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}),
    }
    expected_status = {"count_tokens, Bedrock fallback": 200, "count_tokens, upstream 400": 400,
                       "messages, upstream 400": 400, "messages, Bedrock fallback failed": 429,
                       "messages, body refused by the gateway": 400}
    for name, response in answers.items():
        assert response.status_code == expected_status[name], (name, response.status_code, response.text)
        missing = [header for header in RATE_LIMIT_HEADERS if header not in response.headers]
        assert not missing, (name, missing)
        assert response.headers["anthropic-ratelimit-tokens-limit"] == "100000", name
        assert response.headers["anthropic-ratelimit-requests-limit"] == "1000", name
        assert int(response.headers["anthropic-ratelimit-tokens-remaining"]) <= 100_000, name
        assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z"), name
    assert answers["count_tokens, Bedrock fallback"].headers["x-gateway-upstream"] == "bedrock"
    assert answers["messages, Bedrock fallback failed"].headers["x-gateway-upstream"] == "bedrock"
    assert answers["messages, body refused by the gateway"].json()["error"]["type"] == "invalid_request_error"

    unlimited = user_factory.create(new_tenant_id("no-limits"))
    unlimited_key = create_key(api, unlimited.token)["key"]
    for response in (count_tokens(api, unlimited_key, "count me"), messages(api, unlimited_key, "hello [fake:invalid]")):
        assert response.status_code in (200, 400), response.text
        assert not [header for header in response.headers if header.lower().startswith("anthropic-ratelimit-")]


# ------------------------------------------------------------------ alerts

def test_each_threshold_raises_exactly_one_event_under_forty_concurrent_clients(api, admin, user_factory, resources, clock_file):
    clock_file.write_text("0")
    user = user_factory.create(new_tenant_id("alerts"))
    sqs = resources.client("sqs")
    events = resources.client("events")
    queue_url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = f"alerts-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({
        "source": ["bedrock-metering"], "detail-type": ["BudgetThresholdCrossed"], "detail": {"tenant_id": [user.tenant_id]},
    }))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    limit = 12 * ACTUAL_TOKENS  # 50% after 6 requests, 80% after 10; then no reservation fits: 100%
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": limit})

    def client(_):
        # Until three refusals in a row; bounded, so a budget that stopped holding fails the test, never hangs it.
        refusals = 0
        for _attempt in range(60):
            if refusals == 3:
                return
            response = small_chat(api, user.token)
            if response.status_code == 200:
                refusals = 0
            else:
                assert response.status_code == 429, response.text
                refusals += 1
                time.sleep(0.05)
        assert refusals == 3, "60 requests of one client and still admitted: the budget did not hold"

    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(client, range(40)))

    def received():
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not batch:
                return found
            found.extend(json.loads(message["Body"]) for message in batch)

    seen: list[dict] = []
    poll("alerts", lambda: seen.extend(received()) or seen, lambda found: len(found) >= 3, timeout=10)
    time.sleep(1)
    seen.extend(received())
    thresholds = sorted(event["detail"]["threshold_percent"] for event in seen)
    assert thresholds == [50, 80, 100], seen
    for event in seen:
        assert event["source"] == "bedrock-metering" and event["detail-type"] == "BudgetThresholdCrossed"
        detail = event["detail"]
        assert detail["limit"] == "tokens_per_month" and detail["limit_value"] == limit
        assert detail["period"] == f"{dt.datetime.now(dt.timezone.utc):%Y-%m}"
        assert detail["used"] * 100 >= limit * min(detail["threshold_percent"], 80)


# ------------------------------------------------------------------ scripts/limits

def test_the_operator_script_sets_reads_and_clears_limits(stack, api, user_factory, tmp_path):
    from support import operator_environment, run_script

    user = user_factory.create(new_tenant_id("script"))
    env = operator_environment(stack, tmp_path / ".local")
    done = run_script(env, "limits", "set", user.tenant_id, "--tokens-per-day", "0", "--usd-per-month", "2.5", timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["limits"]["tokens_per_day"]["limit"] == 0 and shown["limits"]["usd_per_month"]["limit"] == 2.5
    assert shown["limits"]["requests_per_minute"] is None
    # The gateway enforces what the script stored (this tenant's limits were never cached).
    assert_budget_exceeded(small_chat(api, user.token))
    assert my_limits(api, user.token)["limits"]["usd_per_month"]["limit"] == 2.5
    bad = run_script(env, "limits", "set", user.tenant_id, "--tokens-per-day", "-5", timeout=60)
    assert bad.returncode == 2 and "tokens-per-day" in bad.stderr
    cleared = run_script(env, "limits", "clear", user.tenant_id, timeout=60)
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["limits"]["tokens_per_day"] is None


# ------------------------------------------------------------------ a retried write counts once

def touches_budgets(transaction: dict) -> bool:
    """A reservation or a settlement: a transaction that updates BUDGET# counters."""
    return any(item.get("Update", {}).get("Key", {}).get("pk", {}).get("S", "").startswith("BUDGET#")
               for item in transaction.get("TransactItems", []))


@pytest.fixture(scope="module")
def lossy_tap(stack):
    tap = DynamoDbTap(stack.resources.endpoint_url, lose_first_answer_of=touches_budgets)
    yield tap
    tap.close()


@pytest.fixture(scope="module")
def lossy_api(stack, lossy_tap):
    """An API whose every reservation and settlement is applied by DynamoDB and then answered 500, so the SDK
    sends it again: the retry of an applied write."""
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-limits-retries")
    stack.extra_apis.append(fake)
    # Per-request reservations (leases off, as in Lambda): one reservation and one settlement per request.
    return stack.start_api("api-limits-retries", LIMITS_STORE_TIMEOUT_MS="20000", AWS_ENDPOINT_URL_DYNAMODB=lossy_tap.url,
                           LIMITS_LEASE_REQUESTS="0", **proxy_env(key_table, limit_table, fake.url, RATE_LIMIT_TABLE_NAME=None))


def test_a_reservation_or_settlement_retried_after_it_was_applied_counts_once(lossy_api, lossy_tap, admin, user_factory,
                                                                              resources):
    user = user_factory.create(new_tenant_id("retried"))
    put_limits(lossy_api, admin, user.tenant_id, {"tokens_per_day": 100_000})
    key = create_key(lossy_api, user.token)
    day_sk = f"DAY#{dt.datetime.now(dt.timezone.utc).date().isoformat()}"
    tokens_before = set(lossy_tap.lost_answers)
    assert [small_chat(lossy_api, user.token).status_code for _ in range(3)] == [200] * 3
    assert messages(lossy_api, key["key"], "hello there").status_code == 200
    assert messages(lossy_api, key["key"], "hello there streamed", streamed=True).status_code == 200
    lines = poll("usage lines", lambda: tenant_usage_lines(lossy_api, user.tenant_id), lambda found: len(found) >= 5)
    assert len(lines) == 5
    metered = sum(line["total_tokens"] for line in lines)
    # Every request's reservation and settlement reached the table twice (the tap lost the first answer)...
    lost = poll("lost answers", lambda: set(lossy_tap.lost_answers) - tokens_before, lambda found: len(found) >= 10)
    assert len(lost) == 10, "5 reservations and 5 settlements"
    sent = poll("retries", lambda: {token: lossy_tap.tokens()[token] for token in lost}, lambda seen: all(n >= 2 for n in seen.values()))
    assert set(sent.values()) == {2}, f"each one sent again after it was applied, once: {sent}"
    # ...and counted once: admitted = settled = the metered tokens, with nothing held.
    counter = poll("settled counter", lambda: budget_counter(resources, user.tenant_id, day_sk),
                   lambda c: c == {"admitted": metered, "settled": metered}, timeout=20)
    assert counter == {"admitted": metered, "settled": metered}
    assert my_limits(lossy_api, user.token)["limits"]["tokens_per_day"]["used"] == metered


def test_a_request_held_only_to_requests_per_minute_writes_its_reservation_and_no_settlement(lossy_api, lossy_tap, admin,
                                                                                             user_factory):
    user = user_factory.create(new_tenant_id("rpm-only"))
    put_limits(lossy_api, admin, user.tenant_id, {"requests_per_minute": 100})
    assert [small_chat(lossy_api, user.token).status_code for _ in range(2)] == [200] * 2
    poll("usage lines", lambda: tenant_usage_lines(lossy_api, user.tenant_id), lambda found: len(found) >= 2)
    # The minute's counter counts on admission: one reservation per request (sent twice by the lossy tap), and
    # no settlement, which would be a transaction of nothing but its marker.
    touching = lossy_tap.transactions_touching(f"BUDGET#{user.tenant_id}")
    assert len({t["ClientRequestToken"] for t in touching}) == 2, touching
    time.sleep(1)  # a settlement starts right after the answer: give one the time to show
    assert not [t for t in lossy_tap.transactions
                if all("Put" in item and item["Put"]["Item"]["pk"]["S"].startswith("BUDGETOP#") for item in t["TransactItems"])]
