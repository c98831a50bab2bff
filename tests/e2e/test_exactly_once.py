"""Every answered request is billed once, and the counters can be made to agree with the bill.

- The freeze: DynamoDB (the moto process) is stopped with SIGSTOP for longer than the API's counter timeout
  (METERING_COUNTER_TIMEOUT_MS, retries included) while 100 chats and 50 proxy calls (half streamed) are
  answered, then resumed. Counter writes reach the frozen table more than once (a tap in front of moto sees the
  same batch id again), so an over-count would show. The usage lines must be exactly the answered requests;
  no counter may exceed its lines; scripts/reconcile must report the
  gap as it is; after scripts/rebuild-counters the counters equal the lines, day and week alike, and
  scripts/reconcile finds no gap.
- scripts/rebuild-counters on a tampered tenant (over-count, missing week item, a stale item, a non-counter
  item) and on a closed past day read from a log group; scripts/reconcile's report and its suggested command.

The scripts run as an operator runs them, against a `.local/stack.env` of this session's stack written into a
temporary BM_LOCAL_DIR; lines are read from the API's standard output (--lines-file), where every line is
written first, or from a log group of the test's own.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from support import chat, counter_items, new_tenant_id, poll, request_id_of, operator_environment, run_script, wait_usage_line

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))

from synthetic_usage import put_lines, usage_line  # noqa: E402

# The API under test retries a counter write (same batch id) for this long (METERING_COUNTER_TIMEOUT_MS); the
# DynamoDB client gives each attempt 3 s (metering_core::counters::dynamodb_client), so a write started in the
# freeze reaches the frozen table more than once before it gives up.
COUNTER_TIMEOUT_MS = 4_000
# Longer than the counter timeout, retries included, from the moment the requests are answered: every write
# started then gives up while the table is frozen (its outcome is "unknown").
FREEZE_SECONDS = 12
CHATS, PROXY_CALLS = 100, 50
COUNTER_FIELDS = ("request_count", "input_tokens", "output_tokens", "total_tokens",
                  "cache_creation_input_tokens", "cache_read_input_tokens")


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def operator_env(stack, tmp_path_factory) -> dict[str, str]:
    """The environment of an operator whose .local/stack.env points at this session's stack."""
    return operator_environment(stack, tmp_path_factory.mktemp("bm-local-exactly-once"))



@pytest.fixture(scope="module")
def metered_api(stack, dynamodb_tap):
    """One API serving /bedrock/chat and the proxy's /v1/messages. Gateway keys are cached and the rate-limit
    memory is off, so a request needs DynamoDB for nothing but its counters. Its DynamoDB calls pass through a
    tap that records every counter batch sent (moto is still what is frozen)."""
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-exactly-once")
    stack.extra_apis.append(fake)  # stopped with the stack
    key_table, _ = create_proxy_tables(stack.resources)
    return stack.start_api("api-exactly-once", **proxy_env(key_table, None, fake.url, API_KEY_CACHE_SECONDS="600",
                                                           RATE_LIMIT_TRACKING="false",
                                                           AWS_ENDPOINT_URL_DYNAMODB=dynamodb_tap.url,
                                                           METERING_COUNTER_TIMEOUT_MS=str(COUNTER_TIMEOUT_MS)))


def gateway_key(api_url: str, id_token: str) -> str:
    response = requests.post(f"{api_url}/v1/keys", json={"name": "exactly-once"},
                             headers={"Authorization": f"Bearer {id_token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def proxy_call(api_url: str, key: str, prompt: str, stream: bool) -> requests.Response:
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    response = requests.post(f"{api_url}/v1/messages", json=body, headers=headers, timeout=90, stream=stream)
    if stream:
        response._content = b"".join(response.iter_content(chunk_size=None))  # the whole stream, to its end
    return response


def lines_of(api, tenants: set[str]) -> list[dict]:
    return [line for line in api.usage_lines() if line.get("tenant_id") in tenants]


def expected_items(lines: list[dict]) -> dict[str, dict[str, int]]:
    """sk -> what the counter item must hold, from the lines (README "Usage counters in DynamoDB")."""
    items: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTER_FIELDS, 0))
    for line in lines:
        day = line["timestamp"][:10]
        for period in (f"DAY#{day}", f"WEEK#{week_of(date.fromisoformat(day))}"):
            item = items[f"{period}#{line['request_type']}#{line['model_id']}"]
            item["request_count"] += 1
            for field in COUNTER_FIELDS[1:]:
                item[field] += int(line.get(field, 0))
    return dict(items)


def actual_items(resources, tenant: str, periods: list[str]) -> dict[str, dict[str, int]]:
    items = {}
    for period in periods:
        for item in counter_items(resources, tenant, f"{period}#"):
            items[item["sk"]] = {field: int(item.get(field, 0)) for field in COUNTER_FIELDS}
    return items


def wait_quiet(resources, tenants: list[str], periods: list[str], quiet_for: float = 4.0, timeout: float = 90.0) -> None:
    """Until no counter item of the tenants has changed for `quiet_for` seconds (writes queued in the frozen
    moto, and any retries, have landed)."""
    deadline = time.monotonic() + timeout
    last = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = {tenant: actual_items(resources, tenant, periods) for tenant in tenants}
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_for:
            return
        time.sleep(0.5)
    raise AssertionError(f"counters still changing after {timeout}s")


def report_gaps(stdout: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(tenant, 'day …'/'week …') -> (lines, counters, difference) from reconcile's GAP lines."""
    gaps = {}
    for tenant, period, lines, counters, difference in re.findall(
            r"^GAP (\S+) ((?:day|week) \S+): lines (\d+) request\(s\), counters (\d+), difference ([+-]\d+)$", stdout, re.M):
        gaps[(tenant, period)] = (int(lines), int(counters), int(difference))
    return gaps


# ------------------------------------------------------------------ the freeze

def test_a_dynamodb_freeze_bills_every_answer_once_and_the_rebuild_makes_counters_exact(
        stack, resources, user_factory, metered_api, operator_env, dynamodb_tap):
    api = metered_api
    tenants = [new_tenant_id("freeze"), new_tenant_id("freeze")]
    users = [user_factory.create(tenant) for tenant in tenants]
    keys = [gateway_key(api.url, user.token) for user in users]
    # Warm-up: the JWKS and the gateway keys are cached before the freeze (these requests are billed too).
    warm_ids = set()
    for user, key in zip(users, keys):
        for response in (proxy_call(api.url, key, "warm the key cache", stream=False),
                         chat(api.url, user.token, {"prompt": "warm the JWKS cache"})):
            assert response.status_code == 200, response.text
            warm_ids.add(request_id_of(response))
    poll("warm-up lines", lambda: lines_of(api, set(tenants)), lambda found: len(found) >= len(warm_ids), timeout=20)
    today = utc_today()
    periods = [f"DAY#{today}", f"WEEK#{week_of(today)}"]
    wait_quiet(resources, tenants, periods, quiet_for=1.0)

    # GIVEN DynamoDB frozen (moto serves it; SIGSTOP stops the whole process)
    jobs = [("chat", i % 2, f"freeze chat {i}") for i in range(CHATS)]
    jobs += [("stream" if i % 2 else "proxy", i % 2, f"freeze proxy {i}") for i in range(PROXY_CALLS)]

    def run(job):
        kind, owner, prompt = job
        if kind == "chat":
            return job, chat(api.url, users[owner].token, {"prompt": prompt}, timeout=90)
        return job, proxy_call(api.url, keys[owner], prompt, stream=kind == "stream")

    tokens_before = set(dynamodb_tap.tokens())
    os.kill(stack.moto.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # WHEN 100 chats and 50 proxy calls (25 streamed) are made during the freeze
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(run, jobs))
        answered_during_freeze = time.monotonic() - frozen_at
        # At least FREEZE_SECONDS, and past the counter timeout of the writes started as the last answers left
        # (on a slow machine the answers take longer).
        hold = max(FREEZE_SECONDS, answered_during_freeze + COUNTER_TIMEOUT_MS / 1000 + 1)
        time.sleep(max(0.0, hold - (time.monotonic() - frozen_at)))
        # the counter_update lines of the writes that gave up, all written before the table is back
        gave_up_in_freeze = {l["request_id"] for l in api.json_lines() if l.get("event") == "counter_update"
                             and l.get("tenant_id") in tenants}
    finally:
        os.kill(stack.moto.pid, signal.SIGCONT)
    # Counter batches sent more than once to the frozen table: each would count twice without idempotency, so
    # the "no counter exceeds its lines" below can fail.
    resent = {t: n for t, n in dynamodb_tap.tokens().items() if t not in tokens_before and n > 1}
    assert resent, "no counter write was retried against the frozen table: the over-count check proves nothing"
    assert gave_up_in_freeze, "no counter write gave up during the freeze"

    # THEN every request was answered (streams to their end)
    failed = [(job, r.status_code, r.text[:200]) for job, r in results if r.status_code != 200]
    assert not failed, failed
    streamed = [r for job, r in results if job[0] == "stream"]
    assert len(streamed) == PROXY_CALLS // 2 and all("message_stop" in r.text for r in streamed)
    answered = {request_id_of(r) for _, r in results}
    assert len(answered) == CHATS + PROXY_CALLS

    # AND the lines are exactly the answered requests, one each
    lines = poll("lines", lambda: [l for l in lines_of(api, set(tenants)) if l["request_id"] not in warm_ids],
                 lambda found: len(found) >= len(answered), timeout=60)
    ids = [line["request_id"] for line in lines]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate line(s)"
    assert set(ids) == answered, f"missing {len(answered - set(ids))}, unexpected {len(set(ids) - answered)}"
    by_type = defaultdict(int)
    for line in lines:
        by_type[line["request_type"]] += 1
    assert sum(by_type.values()) == CHATS + PROXY_CALLS, by_type

    # AND once moto has caught up, no counter exceeds its lines, day or week
    wait_quiet(resources, tenants, periods)
    all_lines = lines_of(api, set(tenants))  # the warm-up calls are billed too
    expected = {tenant: expected_items([l for l in all_lines if l["tenant_id"] == tenant]) for tenant in tenants}
    before = {tenant: actual_items(resources, tenant, periods) for tenant in tenants}
    zero = dict.fromkeys(COUNTER_FIELDS, 0)
    over = [(tenant, sk, field, before[tenant][sk][field], expected[tenant].get(sk, zero)[field])
            for tenant in tenants for sk in before[tenant] for field in COUNTER_FIELDS
            if before[tenant][sk][field] > expected[tenant].get(sk, zero)[field]]
    over_count_message = f"counters above their lines (tenant, item, field, counted, billed): {over[:10]}"

    # AND scripts/reconcile reports the gap as it is (lines, counters, difference, uncertain outcomes)
    stdout_file = str(api.stdout_path)
    reconcile_args = ["--date", today.isoformat(), "--no-export", "--lines-file", stdout_file,
                      *sum((["--tenant", t] for t in tenants), [])]
    report = run_script(operator_env, "reconcile", *reconcile_args)
    assert report.returncode in (0, 1), f"{report.stdout}\n{report.stderr}"
    gaps = report_gaps(report.stdout)
    any_gap = False
    for tenant in tenants:
        billed = sum(1 for l in all_lines if l["tenant_id"] == tenant)
        for label, prefix in ((f"day {today}", "DAY#"), (f"week {week_of(today)}", "WEEK#")):
            counted = sum(item["request_count"] for sk, item in before[tenant].items() if sk.startswith(prefix))
            if counted == billed:
                assert (tenant, label) not in gaps, report.stdout
            else:
                any_gap = True
                assert gaps.get((tenant, label)) == (billed, counted, counted - billed), report.stdout
        outcomes = [l for l in api.json_lines() if l.get("event") == "counter_update" and l.get("tenant_id") == tenant
                    and l.get("outcome") in ("failed", "unknown")]
        unknown = len({l["request_id"] for l in outcomes if l["outcome"] == "unknown"})
        failed_updates = len({l["request_id"] for l in outcomes if l["outcome"] == "failed"})
        flagged = sum(1 for l in all_lines if l["tenant_id"] == tenant and l.get("metering_error")
                      and l["request_id"] not in {o["request_id"] for o in outcomes})
        if unknown or failed_updates or flagged:
            assert f"note: {tenant}: {unknown} request(s) with counter outcome unknown, {failed_updates} failed" in report.stdout, report.stdout
            if flagged:
                assert f"{flagged} line(s) with metering_error" in report.stdout, report.stdout
    counters_differ = any(before[t] != {sk: v for sk, v in expected[t].items()} for t in tenants)
    assert report.returncode == (1 if counters_differ else 0), report.stdout
    if any_gap:
        assert "fix the counters: scripts/rebuild-counters --date" in report.stdout, report.stdout

    # WHEN the counters are rebuilt from the lines (traffic has stopped: --allow-today)
    for tenant in tenants:
        rebuilt = run_script(operator_env, "rebuild-counters", "--date", today.isoformat(), "--tenant", tenant,
                             "--allow-today", "--lines-file", stdout_file)
        assert rebuilt.returncode == 0, f"{rebuilt.stdout}\n{rebuilt.stderr}"

    # THEN counters = lines for every tenant, day and week alike, and reconcile finds no gap
    for tenant in tenants:
        assert actual_items(resources, tenant, periods) == expected[tenant], tenant
    after = run_script(operator_env, "reconcile", *reconcile_args)
    assert after.returncode == 0 and "OK: 2 tenant(s) agree" in after.stdout, f"{after.stdout}\n{after.stderr}"
    assert not report_gaps(after.stdout)

    # Last, because it needs the idempotent counters: no counter exceeded its lines after the freeze.
    assert not over, over_count_message


# ------------------------------------------------------------------ rebuild and reconcile, deterministic

def test_rebuild_sets_a_tampered_tenant_back_to_its_lines_and_reconcile_names_the_fix(
        stack, resources, user_factory, operator_env):
    api = stack.api
    tenant = new_tenant_id("rebuild")
    user = user_factory.create(tenant)
    prompts = ["one two three", "four five", "six"]
    request_ids = [request_id_of(chat(api.url, user.token, {"prompt": p})) for p in prompts]
    lines = [wait_usage_line(api, request_id) for request_id in request_ids]
    today = utc_today()
    day_period, week_period = f"DAY#{today}", f"WEEK#{week_of(today)}"
    expected = expected_items(lines)
    poll("counters", lambda: actual_items(resources, tenant, [day_period, week_period]), lambda a: a == expected, timeout=20)

    # GIVEN counters that disagree with the lines: the day over-counted, the week item gone, a stale item of a
    # model no line names, and an item that is not a counter (an idempotency marker, as metering writes them)
    dynamodb = resources.client("dynamodb")
    table = resources.usage_table
    day_sk = next(sk for sk in expected if sk.startswith(day_period))
    week_sk = next(sk for sk in expected if sk.startswith(week_period))
    dynamodb.update_item(TableName=table, Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": day_sk}},
                         UpdateExpression="ADD request_count :two, input_tokens :two",
                         ExpressionAttributeValues={":two": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": week_sk}})
    ghost_sk = f"{day_period}#bedrock#ghost-model"
    dynamodb.put_item(TableName=table, Item={
        "pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": ghost_sk}, "gsi1pk": {"S": day_period},
        "gsi1sk": {"S": f"TENANT#{tenant}#bedrock#ghost-model"}, "tenant_id": {"S": tenant}, "period": {"S": str(today)},
        "request_type": {"S": "bedrock"}, "model_id": {"S": "ghost-model"}, "request_count": {"N": "5"},
        "input_tokens": {"N": "50"}, "output_tokens": {"N": "0"}, "total_tokens": {"N": "50"}})
    marker = {"pk": {"S": f"COUNTED#{uuid.uuid4().hex}"}, "sk": {"S": "COUNTED"}, "request_count": {"N": "1"},
              "day": {"S": str(today)}, "ttl": {"N": str(int(time.time()) + 2 * 86_400)}}
    dynamodb.put_item(TableName=table, Item=marker)
    stdout_file = str(api.stdout_path)

    # WHEN reconciled THEN the gap is named, day and week, with the command that fixes it
    report = run_script(operator_env, "reconcile", "--date", today.isoformat(), "--tenant", tenant, "--no-export",
                        "--lines-file", stdout_file)
    assert report.returncode == 1, f"{report.stdout}\n{report.stderr}"
    gaps = report_gaps(report.stdout)
    assert gaps[(tenant, f"day {today}")] == (3, 10, 7), report.stdout
    assert gaps[(tenant, f"week {week_of(today)}")] == (3, 0, -3), report.stdout
    command = re.search(r"^fix the counters: (scripts/rebuild-counters .*)$", report.stdout, re.M)
    assert command, report.stdout
    suggested = command.group(1).split()
    assert suggested[:6] == ["scripts/rebuild-counters", "--date", today.isoformat(), "--tenant", tenant, "--local"], suggested
    assert "--allow-today" in suggested and stdout_file in suggested, suggested

    # WHEN rebuilt without --allow-today THEN today is refused (it is still open) and nothing changes
    refused = run_script(operator_env, "rebuild-counters", "--date", today.isoformat(), "--tenant", tenant,
                         "--lines-file", stdout_file)
    assert refused.returncode == 2 and "still open" in refused.stderr, f"{refused.stdout}\n{refused.stderr}"
    # AND a dry run writes nothing
    dry = run_script(operator_env, "rebuild-counters", *suggested[1:], "--dry-run")
    assert dry.returncode == 0 and "would SET" in dry.stdout, f"{dry.stdout}\n{dry.stderr}"
    assert actual_items(resources, tenant, [day_period])[ghost_sk]["request_count"] == 5

    # WHEN the suggested command runs THEN the counters are the lines', the stale item is zero, the marker untouched
    rebuilt = run_script(operator_env, "rebuild-counters", *suggested[1:])
    assert rebuilt.returncode == 0, f"{rebuilt.stdout}\n{rebuilt.stderr}"
    after = actual_items(resources, tenant, [day_period, week_period])
    assert after.pop(ghost_sk) == dict.fromkeys(COUNTER_FIELDS, 0)
    assert after == expected
    week_item = counter_items(resources, tenant, week_period + "#")[0]
    assert (week_item["gsi1pk"], week_item["gsi1sk"], week_item["period"]) == (
        week_period, f"TENANT#{tenant}#bedrock#{lines[0]['model_id']}", week_of(today))
    assert int(week_item["ttl"]) > time.time() + 300 * 86_400, "a recreated week item expires like the API's"
    kept = dynamodb.get_item(TableName=table, Key={"pk": marker["pk"], "sk": marker["sk"]})["Item"]
    assert kept == marker

    # WHEN run again THEN nothing changes (SET, not ADD) AND reconcile agrees
    again = run_script(operator_env, "rebuild-counters", *suggested[1:])
    assert again.returncode == 0 and "OK: set 0 item(s)" in again.stdout, again.stdout
    assert actual_items(resources, tenant, [day_period, week_period]).pop(ghost_sk) == dict.fromkeys(COUNTER_FIELDS, 0)
    agreed = run_script(operator_env, "reconcile", "--date", today.isoformat(), "--tenant", tenant, "--no-export",
                        "--lines-file", stdout_file)
    assert agreed.returncode == 0, f"{agreed.stdout}\n{agreed.stderr}"


def test_a_closed_past_day_and_its_week_are_rebuilt_from_a_log_group(resources, operator_env):
    # GIVEN lines of two days of a closed ISO week in a log group: D (with a repeated line and a counter
    # outcome) and the Monday before it, and no counters at all
    today = utc_today()
    monday = today - timedelta(days=today.isoweekday() - 1 + 7)
    day = monday + timedelta(days=2)
    tenant = f"past-{uuid.uuid4().hex[:8]}"
    group = f"/test/rebuild/{uuid.uuid4().hex[:10]}"
    noon = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=12)
    on_day = [usage_line(noon + timedelta(seconds=i), tenant, input_tokens=10 + i, output_tokens=5) for i in range(4)]
    on_monday = [usage_line(noon - timedelta(days=2), tenant, input_tokens=7, output_tokens=3)]
    outcome = {"event": "counter_update", "timestamp": on_day[0]["timestamp"], "request_id": on_day[0]["request_id"],
               "tenant_id": tenant, "request_type": "bedrock", "model_id": on_day[0]["model_id"], "day": str(day),
               "outcome": "unknown", "error": "timeout"}
    put_lines(resources.client("logs"), group, [*on_day, on_day[1], *on_monday])
    put_lines(resources.client("logs"), group, [outcome], at_ms=[int((noon + timedelta(seconds=9)).timestamp() * 1000)])

    # WHEN reconciled THEN the counters are 0 against 4 lines (the repeat billed once), the outcome is reported
    report = run_script(operator_env, "reconcile", "--date", day.isoformat(), "--tenant", tenant, "--no-export",
                        "--log-group", group)
    assert report.returncode == 1, f"{report.stdout}\n{report.stderr}"
    assert report_gaps(report.stdout)[(tenant, f"day {day}")] == (4, 0, -4), report.stdout
    assert report_gaps(report.stdout)[(tenant, f"week {week_of(day)}")] == (5, 0, -5), report.stdout
    assert f"note: {tenant}: 1 request(s) with counter outcome unknown, 0 failed" in report.stdout, report.stdout
    assert "1 request id(s) of" in report.stdout and "more than one usage line" in report.stdout

    # AND a reconcile of another tenant of the same log group is not failed by this tenant's repeated line
    other = f"other-{uuid.uuid4().hex[:8]}"
    put_lines(resources.client("logs"), group, [usage_line(noon + timedelta(seconds=30), other, input_tokens=3, output_tokens=1)],
              at_ms=[int((noon + timedelta(seconds=30)).timestamp() * 1000)])
    scoped = run_script(operator_env, "reconcile", "--date", day.isoformat(), "--tenant", other, "--no-export",
                        "--no-week", "--log-group", group)
    assert "more than one usage line" not in scoped.stdout, scoped.stdout
    assert report_gaps(scoped.stdout)[(other, f"day {day}")] == (1, 0, -1), scoped.stdout

    # WHEN rebuilt (a closed day of a closed week: no --allow-today) THEN day and week items hold the lines
    rebuilt = run_script(operator_env, "rebuild-counters", "--date", day.isoformat(), "--log-group", group, "--tenant", tenant)
    assert rebuilt.returncode == 0, f"{rebuilt.stdout}\n{rebuilt.stderr}"
    assert "request id(s) have more than one line" in rebuilt.stdout
    items = actual_items(resources, tenant, [f"DAY#{day}", f"DAY#{monday}", f"WEEK#{week_of(day)}"])
    assert items == {key: value for key, value in expected_items([*on_day, *on_monday]).items() if not key.startswith(f"DAY#{monday}")}
    assert report_gaps(run_script(operator_env, "reconcile", "--date", day.isoformat(), "--tenant", tenant,
                                  "--no-export", "--log-group", group).stdout) == {}


def test_bad_dates_and_missing_stacks_are_explained(operator_env, tmp_path):
    today = utc_today()
    for args, expected in (
        (["--date", "2026-02-30"], "must be a day like"),
        (["--date", (today + timedelta(days=1)).isoformat()], "in the future"),
        (["--date", today.isoformat()], "still open"),
    ):
        result = run_script(operator_env, "rebuild-counters", *args)
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)
    no_stack = {**operator_env, "BM_LOCAL_DIR": str(tmp_path)}
    result = run_script(no_stack, "rebuild-counters", "--date", "2026-01-01")
    assert result.returncode == 2 and "scripts/dev" in result.stderr, result.stderr
    help_text = run_script(operator_env, "rebuild-counters", "--help")
    assert help_text.returncode == 0 and "--allow-today" in help_text.stdout and "rebuild_counters" in help_text.stdout


def test_reconcile_aws_uses_aws_region(operator_env):
    """boto3 reads AWS_DEFAULT_REGION, not AWS_REGION: --aws must pass AWS_REGION itself (issue 13)."""
    from processes import closed_port

    env = {k: v for k, v in operator_env.items() if k not in ("AWS_DEFAULT_REGION", "AWS_PROFILE")}
    env.update({
        "AWS_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00", "AWS_SECRET_ACCESS_KEY": "example",
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_MAX_ATTEMPTS": "1",
        # Not 127.0.0.1 (which --aws drops as a sourced local stack): nobody listens, so the call fails fast.
        "AWS_ENDPOINT_URL": f"http://127.0.0.2:{closed_port()}",
    })
    for script in ("reconcile", "rebuild-counters"):
        result = run_script(env, script, "--aws", "--date", "2026-01-01")
        assert result.returncode == 2, (script, result.stdout, result.stderr)
        assert "cannot reach CloudFormation in eu-west-3" in result.stderr, (script, result.stderr)
