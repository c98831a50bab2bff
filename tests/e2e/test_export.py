"""The log export end to end: usage lines in CloudWatch Logs (moto) -> `log-processor export` -> Parquet in
S3 (moto) -> SQL with DuckDB (scripts/query) -> reconciliation with the DynamoDB counters (scripts/reconcile).

The scripts run as an operator runs them, against a `.local/stack.env` of this session's stack written into a
temporary BM_LOCAL_DIR. Tests with synthetic lines use a log group and an S3 prefix of their own, so they do
not disturb the day of the chat tests in the stack's real log group.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import date, datetime, time as day_time, timedelta, timezone
from pathlib import Path

import pytest

from support import chat, fake_tokens, new_tenant_id, poll, operator_environment, request_id_of, run_script

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))

from synthetic_usage import put_lines, synthetic_day, usage_line  # noqa: E402

COLUMNS = [
    "timestamp", "tenant_id", "user_id", "model_id", "request_type", "request_id",
    "input_tokens", "output_tokens", "total_tokens", "latency_ms", "cache_creation_input_tokens", "cache_read_input_tokens",
]
METRICS = ["input_tokens", "output_tokens", "total_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
TABLE = "bedrock_metering_db.token_usage_logs"


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


@pytest.fixture(scope="module")
def log_processor_bin() -> Path:
    """The log processor, built once (or $BM_LOG_PROCESSOR_BIN)."""
    override = os.environ.get("BM_LOG_PROCESSOR_BIN")
    if override:
        return Path(override)
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed to build the log processor"
    subprocess.run([cargo, "build", "--quiet", "-p", "log-processor"], cwd=REPO_ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    return target / "debug" / "log-processor"


@pytest.fixture(scope="module")
def operator_env(stack, tmp_path_factory, log_processor_bin) -> dict[str, str]:
    """The environment of an operator whose .local/stack.env points at this session's stack."""
    return operator_environment(stack, tmp_path_factory.mktemp("bm-local"), BM_LOG_PROCESSOR_BIN=str(log_processor_bin))


def export(env: dict[str, str], *args: str) -> dict:
    result = run_script(env, "export-logs", "--json", "--no-build", *args)
    assert result.returncode == 0, f"export-logs {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def query(env: dict[str, str], sql: str, *args: str) -> list[dict]:
    result = run_script(env, "query", "--format", "json", *args, sql)
    assert result.returncode == 0, f"query failed ({result.returncode}): {sql}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def own_space(resources) -> tuple[str, str]:
    """A log group and an export prefix for one test's synthetic lines."""
    tag = uuid.uuid4().hex[:10]
    group = f"/test/log-export/{tag}"
    resources.client("logs").create_log_group(logGroupName=group)
    return group, f"test-{tag}/"


def usage_lines_of_day(resources, group: str, day: date) -> list[dict]:
    """Every usage line in `group` whose own timestamp is on `day` (filtered here: moto ignores patterns)."""
    logs = resources.client("logs")
    lines = []
    for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group):
        for event in page["events"]:
            try:
                line = json.loads(event["message"])
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == "token_usage" and line["timestamp"][:10] == day.isoformat():
                lines.append(line)
    return lines


def as_row(line: dict) -> dict:
    """The export row a usage line must become (cache fields default to 0)."""
    return {column: line.get(column, 0) for column in COLUMNS}


# ---------------------------------------------------------------------------------------------------------


def test_chats_are_exported_field_by_field_and_reconcile(stack, resources, api_url, user_factory, operator_env):
    # GIVEN 9 answered chats across 3 tenants (two users in the first)
    tenants = [new_tenant_id("export") for _ in range(3)]
    users = [user_factory.create(tenants[0]), user_factory.create(tenants[0]),
             user_factory.create(tenants[1]), user_factory.create(tenants[2])]
    request_ids = []
    for index in range(9):
        user = users[index % len(users)]
        prompt = " ".join(["word"] * (index + 1))
        body = {"prompt": prompt, "max_tokens": 4} if index % 3 == 0 else {"prompt": prompt}
        response = chat(api_url, user.token, body)
        assert response.status_code == 200, response.text
        request_ids.append(request_id_of(response))
    today = utc_today()
    lines = poll(
        "usage lines in CloudWatch Logs",
        lambda: [l for l in usage_lines_of_day(resources, resources.usage_log_group, today) if l["request_id"] in request_ids],
        lambda found: len(found) == len(request_ids),
        timeout=20,
    )
    assert len(lines) == len(request_ids)
    by_id = {line["request_id"]: line for line in lines}
    assert (by_id[request_ids[0]]["input_tokens"], by_id[request_ids[0]]["output_tokens"]) == fake_tokens("word", 4)

    # WHEN today is exported
    summary = export(operator_env)

    # THEN every usage line of today in the log group is one row, and ours come back field by field
    day_summary = summary["days"][0]
    assert (summary["trigger"], day_summary["day"]) == ("today", today.isoformat())
    everything_today = usage_lines_of_day(resources, resources.usage_log_group, today)
    assert day_summary["rows_written"] == len(everything_today), day_summary
    partition = f"s3://{resources.analytics_bucket}/logs/year={today:%Y}/month={today:%m}/day={today:%d}/"
    assert len(day_summary["objects"]) == 1 and day_summary["objects"][0].startswith(partition + "part-"), day_summary
    assert day_summary["objects"][0].endswith("-00000.parquet") and day_summary["manifest"] == partition + "_SUCCESS"
    quoted = ", ".join(f"'{r}'" for r in request_ids)
    rows = query(operator_env, f"SELECT * FROM {TABLE} WHERE request_id IN ({quoted}) ORDER BY request_id")
    assert [{c: r[c] for c in COLUMNS} for r in rows] == sorted(map(as_row, lines), key=lambda r: r["request_id"])
    assert all(r["cost_usd"] is not None and r["price_version"] == day_summary["price_version"] for r in rows), rows
    assert {(r["year"], r["month"], r["day"]) for r in rows} == {(f"{today:%Y}", f"{today:%m}", f"{today:%d}")}

    # AND the SQL sums per tenant equal the DynamoDB counters of the day
    tenant_list = ", ".join(f"'{t}'" for t in tenants)
    sums = query(operator_env, f"SELECT tenant_id, count(*) AS requests, sum(input_tokens) AS input_tokens, "
                               f"sum(output_tokens) AS output_tokens, sum(total_tokens) AS total_tokens FROM {TABLE} "
                               f"WHERE tenant_id IN ({tenant_list}) GROUP BY tenant_id")
    dynamodb = resources.client("dynamodb")
    for row in sums:
        items = dynamodb.query(
            TableName=resources.usage_table, KeyConditionExpression="pk = :pk AND begins_with(sk, :day)",
            ExpressionAttributeValues={":pk": {"S": f"TENANT#{row['tenant_id']}"}, ":day": {"S": f"DAY#{today}#"}},
            ConsistentRead=True,
        )["Items"]
        counters = {name: sum(int(item[name]["N"]) for item in items)
                    for name in ("request_count", "input_tokens", "output_tokens", "total_tokens")}
        assert counters == {"request_count": row["requests"], "input_tokens": row["input_tokens"],
                            "output_tokens": row["output_tokens"], "total_tokens": row["total_tokens"]}, row
    assert sorted(r["tenant_id"] for r in sums) == sorted(tenants)

    # AND scripts/reconcile agrees for these tenants
    result = run_script(operator_env, "reconcile", "--date", today.isoformat(), *sum((["--tenant", t] for t in tenants), []))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "OK: 3 tenant(s) agree" in result.stdout


def test_reconcile_reports_a_counter_that_disagrees(stack, resources, api_url, user_factory, operator_env):
    # GIVEN an exported chat whose day counter is then tampered with
    tenant = new_tenant_id("drift")
    user = user_factory.create(tenant)
    request_id = request_id_of(chat(api_url, user.token, {"prompt": "count me twice"}))
    today = utc_today()
    poll("line", lambda: [l for l in usage_lines_of_day(resources, resources.usage_log_group, today) if l["request_id"] == request_id], bool, timeout=20)
    export(operator_env)
    dynamodb = resources.client("dynamodb")
    item = dynamodb.query(
        TableName=resources.usage_table, KeyConditionExpression="pk = :pk AND begins_with(sk, :day)",
        ExpressionAttributeValues={":pk": {"S": f"TENANT#{tenant}"}, ":day": {"S": f"DAY#{today}#"}},
    )["Items"][0]
    dynamodb.update_item(TableName=resources.usage_table, Key={"pk": item["pk"], "sk": item["sk"]},
                         UpdateExpression="ADD input_tokens :one", ExpressionAttributeValues={":one": {"N": "1"}})
    # WHEN reconciled THEN it fails and names the tenant, the metric and the three values
    result = run_script(operator_env, "reconcile", "--date", today.isoformat(), "--tenant", tenant)
    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"
    assert f"DIFFERENCE {tenant}: input_tokens differs: counters 4, log lines 3, export 3" in result.stdout


def test_reruns_midnight_and_empty_days(resources, operator_env):
    group, prefix = own_space(resources)
    today = utc_today()
    yesterday = today - timedelta(days=1)
    midnight = datetime.combine(today, day_time(), tzinfo=timezone.utc)
    before = [usage_line(midnight - timedelta(milliseconds=1 + i), "tenant-night") for i in range(3)]
    after = [usage_line(midnight + timedelta(milliseconds=i), "tenant-night") for i in range(2)]
    # A request that arrived before midnight, its line written (and stamped by CloudWatch) after it.
    late = usage_line(midnight - timedelta(seconds=2), "tenant-night", latency_ms=2500)
    put_lines(resources.client("logs"), group, before + after)
    put_lines(resources.client("logs"), group, [late], at_ms=[int((midnight + timedelta(milliseconds=500)).timestamp() * 1000)])
    put_lines(resources.client("logs"), group, ["START RequestId: 42 Version: $LATEST", '{"event":"token_usage","tenant_id":"broken"}'],
              at_ms=[int(midnight.timestamp() * 1000) + 1] * 2)
    space = ["--log-group", group, "--prefix", prefix]

    # WHEN yesterday and today are exported
    first = export(operator_env, "--from", yesterday.isoformat(), "--to", today.isoformat(), *space)

    # THEN each line lands in the day of its own timestamp, the late one included
    by_day = {d["day"]: d for d in first["days"]}
    assert by_day[yesterday.isoformat()]["rows_written"] == 4
    assert by_day[today.isoformat()]["rows_written"] == 2
    assert by_day[today.isoformat()]["outside_day"] >= 1, "yesterday's lines read in today's window are not today's rows"
    # The two junk lines sit right after midnight: inside both days' windows, skipped by each.
    for day_summary in first["days"]:
        assert (day_summary["skipped_not_usage"], day_summary["skipped_malformed"]) == (1, 1), day_summary
    counted = query(operator_env, f"SELECT day, count(*) AS n FROM {TABLE} WHERE tenant_id = 'tenant-night' GROUP BY day ORDER BY day", "--prefix", prefix)
    assert {r["day"]: r["n"] for r in counted} == {f"{yesterday:%d}": 4, f"{today:%d}": 2}

    # WHEN the same export runs again THEN the row counts are the same, in the new run's objects only
    second = export(operator_env, "--from", yesterday.isoformat(), "--to", today.isoformat(), *space)
    assert [d["rows_written"] for d in second["days"]] == [4, 2]
    assert [d["stale_objects_deleted"] for d in second["days"]] == [1, 1]
    assert query(operator_env, f"SELECT count(*) AS n FROM {TABLE}", "--prefix", prefix) == [{"n": 6}]

    # WHEN yesterday is split into 4 objects, then exported whole again THEN all 4 of the earlier run are deleted
    split = export(operator_env, "--date", yesterday.isoformat(), "--max-rows-per-object", "1", *space)
    assert len(split["days"][0]["objects"]) == 4
    whole = export(operator_env, "--date", yesterday.isoformat(), *space)
    assert (len(whole["days"][0]["objects"]), whole["days"][0]["stale_objects_deleted"]) == (1, 4)
    keys = [o["Key"] for o in resources.client("s3").list_objects_v2(Bucket=resources.analytics_bucket, Prefix=prefix)["Contents"]]
    assert len([k for k in keys if k.endswith(".parquet")]) == 2 and len([k for k in keys if k.endswith("/_SUCCESS")]) == 2, keys
    assert query(operator_env, f"SELECT count(*) AS n FROM {TABLE}", "--prefix", prefix) == [{"n": 6}]

    # WHEN a day without usage lines is exported THEN no object is written, only an empty manifest
    empty_day = today - timedelta(days=10)
    empty = export(operator_env, "--date", empty_day.isoformat(), *space)
    assert (empty["rows_written"], empty["objects"]) == (0, 0)
    assert "no usage lines" in empty["days"][0]["note"]
    listed = resources.client("s3").list_objects_v2(Bucket=resources.analytics_bucket, Prefix=f"{prefix}year={empty_day:%Y}/month={empty_day:%m}/day={empty_day:%d}/")
    assert [o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])] == ["_SUCCESS"]


def complete_day() -> date:
    """A day whose export is complete whenever the test runs: yesterday is not until its late lines' margin
    past midnight (`read_after`, 20 minutes) has gone by."""
    return utc_today() - timedelta(days=2)


def test_a_reexport_that_would_shrink_a_day_is_refused_unless_allowed(resources, operator_env):
    # GIVEN a past day exported with 10 rows (and its _SUCCESS manifest)
    group, prefix = own_space(resources)
    day = complete_day()
    lines = synthetic_day(day, 10, seed=21)
    put_lines(resources.client("logs"), group, lines)
    space = ["--log-group", group, "--prefix", prefix]
    first = export(operator_env, "--date", day.isoformat(), *space)
    assert first["rows_written"] == 10 and first["days"][0]["complete"]
    manifest_key = first["days"][0]["manifest"].split("/", 3)[3]
    manifest = json.loads(resources.client("s3").get_object(Bucket=resources.analytics_bucket, Key=manifest_key)["Body"].read())
    assert (manifest["rows"], manifest["complete"], manifest["sources"]) == (10, True, [group])

    # WHEN part of the day's log is gone (another group holding 6 of the lines) and the day is exported again
    shrunk_group, _ = own_space(resources)
    put_lines(resources.client("logs"), shrunk_group, lines[:6])
    shrunk = ["--log-group", shrunk_group, "--prefix", prefix]
    refused = run_script(operator_env, "export-logs", "--json", "--no-build", "--date", day.isoformat(), *shrunk)

    # THEN it is refused with exit 3, both counts named, and the 10 rows stay
    assert refused.returncode == 3, f"{refused.stdout}\n{refused.stderr}"
    assert "has 10 rows, the log now gives 6" in refused.stderr and "allow_shrink" in refused.stderr, refused.stderr
    assert query(operator_env, f"SELECT count(*) AS n FROM {TABLE}", "--prefix", prefix) == [{"n": 10}]

    # WHEN --allow-shrink is given THEN the day is replaced by the 6 rows
    allowed = export(operator_env, "--date", day.isoformat(), "--allow-shrink", *shrunk)
    assert allowed["rows_written"] == 6
    assert query(operator_env, f"SELECT count(*) AS n FROM {TABLE}", "--prefix", prefix) == [{"n": 6}]


def test_malformed_lines_are_sampled_and_fail_the_run_above_the_threshold(resources, operator_env):
    group, prefix = own_space(resources)
    day = complete_day()
    good = synthetic_day(day, 5, seed=22)
    bad = [dict(line, request_type="carrier-pigeon") for line in synthetic_day(day, 3, seed=23)]
    counter = {"event": "counter_update", "timestamp": good[0]["timestamp"], "request_id": good[0]["request_id"],
               "tenant_id": good[0]["tenant_id"], "request_type": "bedrock", "model_id": good[0]["model_id"],
               "day": day.isoformat(), "outcome": "failed", "error": "throttled"}
    put_lines(resources.client("logs"), group, good + bad + [counter])
    space = ["--log-group", group, "--prefix", prefix, "--date", day.isoformat()]
    # WHEN exported with the default threshold THEN the day is complete, the bad lines counted and sampled
    summary = export(operator_env, *space)["days"][0]
    assert (summary["rows_written"], summary["skipped_malformed"], summary["counter_updates"]) == (5, 3, 1), summary
    assert summary["complete"] and summary["manifest"], summary
    assert len(summary["malformed_samples"]) == 3 and "carrier-pigeon" in summary["malformed_samples"][0]
    # WHEN at most 2 are allowed THEN the run fails, names the samples, and the day has no manifest
    strict = {**operator_env, "MAX_MALFORMED_LINES": "2"}
    result = run_script(strict, "export-logs", "--json", "--no-build", *space)
    assert result.returncode == 1 and "3 malformed usage lines (more than 2)" in result.stderr, result.stderr
    day_prefix = f"{prefix}year={day:%Y}/month={day:%m}/day={day:%d}/"
    keys = [o["Key"] for o in resources.client("s3").list_objects_v2(Bucket=resources.analytics_bucket, Prefix=day_prefix)["Contents"]]
    assert not any(k.endswith("_SUCCESS") for k in keys) and len(keys) == 1, keys


def test_each_row_carries_its_counter_outcome(resources, operator_env):
    # GIVEN 6 usage lines of yesterday in moto; counter_update lines written after them say the first request's
    # counter update failed and the second's outcome is unknown; the third is an older line with metering_error
    group, prefix = own_space(resources)
    yesterday = utc_today() - timedelta(days=1)
    lines = synthetic_day(yesterday, 6, seed=31, tenants=1)
    lines[2] = dict(lines[2], metering_error="timeout")

    def counter_update(line: dict, outcome: str) -> dict:
        return {"event": "counter_update", "timestamp": lines[-1]["timestamp"], "request_id": line["request_id"],
                "tenant_id": line["tenant_id"], "request_type": line["request_type"], "model_id": line["model_id"],
                "day": yesterday.isoformat(), "outcome": outcome, "error": "throttled"}

    put_lines(resources.client("logs"), group, lines)
    put_lines(resources.client("logs"), group, [counter_update(lines[0], "failed"), counter_update(lines[1], "unknown")])

    # WHEN the day is exported
    summary = export(operator_env, "--date", yesterday.isoformat(), "--log-group", group, "--prefix", prefix)["days"][0]

    # THEN every row says whether its request reached the counters
    assert (summary["rows_written"], summary["counter_updates"]) == (6, 2), summary
    rows = query(operator_env, f"SELECT request_id, counter_outcome FROM {TABLE}", "--prefix", prefix)
    expected = ["failed", "unknown", "unknown", "applied", "applied", "applied"]
    assert {r["request_id"]: r["counter_outcome"] for r in rows} == {l["request_id"]: o for l, o in zip(lines, expected)}
    # AND the cost example counts the requests the usage API's counters may lack
    if yesterday.year == utc_today().year:
        cost = query(operator_env, "", "--example", "cost-per-tenant-per-month", "--prefix", prefix)
        assert [(r["tenant_id"], r["requests"], r["requests_not_in_counters"]) for r in cost] == [
            (lines[0]["tenant_id"], 6, 3)]


def test_bad_requests_and_missing_prerequisites_are_explained(operator_env, tmp_path):
    result = run_script(operator_env, "export-logs", "--no-build", "--date", "2026-02-30")
    assert result.returncode == 2 and "must be a date like" in result.stderr, result.stderr
    result = run_script(operator_env, "export-logs", "--no-build", "--from", "2026-01-01", "--to", "2026-03-01")
    assert result.returncode == 2 and "at most 31 days" in result.stderr, result.stderr
    no_stack = {**operator_env, "BM_LOCAL_DIR": str(tmp_path)}
    for script, args in (("export-logs", ["--no-build"]), ("reconcile", ["--date", "2026-01-01"]), ("query", ["SELECT 1"])):
        result = run_script(no_stack, script, *args)
        assert result.returncode != 0 and "scripts/dev" in result.stderr, (script, result.stderr)


def test_example_queries_run_locally_as_written(resources, operator_env):
    # GIVEN synthetic usage of yesterday and of today so far, exported
    group, prefix = own_space(resources)
    today = utc_today()
    yesterday = today - timedelta(days=1)
    now = datetime.now(timezone.utc) - timedelta(seconds=5)
    old = synthetic_day(yesterday, 400, seed=11, tenants=6)
    new = synthetic_day(today, 150, seed=12, tenants=6, until=now)
    put_lines(resources.client("logs"), group, old + new)
    export(operator_env, "--from", yesterday.isoformat(), "--to", today.isoformat(), "--log-group", group, "--prefix", prefix)

    # WHEN every example query of the README runs through scripts/query
    results = {}
    for name in ("tenants-of-a-day", "models-used", "daily-usage-per-tenant", "hourly-pattern-per-tenant", "cost-per-tenant-per-month"):
        results[name] = query(operator_env, "", "--example", name, "--prefix", prefix)

    # THEN each answers, with the numbers of the lines
    per_tenant = defaultdict(lambda: defaultdict(int))
    for line in old:
        per_tenant[line["tenant_id"]]["requests"] += 1
        for metric in METRICS:
            per_tenant[line["tenant_id"]][metric] += line[metric]
    assert {r["tenant_id"]: (r["requests"], r["total_tokens"]) for r in results["tenants-of-a-day"]} == {
        t: (v["requests"], v["total_tokens"]) for t, v in per_tenant.items()
    }
    assert sum(r["requests"] for r in results["models-used"]) == len(old) + len(new)
    daily = {(r["usage_date"], r["tenant_id"]): r["requests"] for r in results["daily-usage-per-tenant"]}
    assert sum(v for (d, _), v in daily.items() if d == yesterday.isoformat()) == len(old)
    assert sum(v for (d, _), v in daily.items() if d == today.isoformat()) == len(new)
    hourly = results["hourly-pattern-per-tenant"]
    assert sum(r["requests"] for r in hourly) == len(old) + len(new)
    assert all(0 <= r["hour_utc"] <= 23 for r in hourly)
    # The cost query covers this year only (on 1 January, yesterday's lines are last year's): expected
    # per (month, tenant) from the lines of this year, and the cost from the rows' own prices (checked
    # against pricing.json by the export's tests), so every day of the year checks exact numbers.
    months = {(r["billing_month"], r["tenant_id"]): r for r in results["cost-per-tenant-per-month"]}
    this_year = [line for line in old + new if line["timestamp"].startswith(f"{today:%Y}-")]
    assert this_year, "today's lines are always this year's"
    month_fields = ("requests", "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    expected_months = defaultdict(lambda: dict.fromkeys(month_fields, 0))
    for line in this_year:
        sums = expected_months[(line["timestamp"][:7], line["tenant_id"])]
        sums["requests"] += 1
        for metric in month_fields[1:]:
            sums[metric] += line[metric]
    assert {key: {f: row[f] for f in month_fields} for key, row in months.items()} == dict(expected_months)
    ids = ", ".join(f"'{line['request_id']}'" for line in this_year)
    priced_rows = query(operator_env, f'SELECT substr("timestamp", 1, 7) AS month, tenant_id, cost_usd, model_id '
                        f"FROM {TABLE} WHERE request_id IN ({ids})", "--prefix", prefix)
    assert len(priced_rows) == len(this_year)
    cost = defaultdict(float)
    unpriced = defaultdict(set)
    for row in priced_rows:
        key = (row["month"], row["tenant_id"])
        if row["cost_usd"] is None:
            unpriced[key].add(row["model_id"])
        else:
            cost[key] += row["cost_usd"]
    assert cost, "the synthetic models are priced"
    for key, row in months.items():
        if key in cost:
            assert row["estimated_cost_usd"] == pytest.approx(cost[key], abs=2e-6), (key, row)
        else:
            assert row["estimated_cost_usd"] is None, (key, row)
        assert sorted(row["models_without_price"] or []) == sorted(unpriced[key]), (key, row)


def test_example_queries_are_the_athena_named_queries():
    """scripts/lib/example_queries.sql must hold the SQL of infra/lib/analytics/example-queries.ts."""
    source = REPO_ROOT / "infra" / "lib" / "analytics" / "example-queries.ts"
    tsx = REPO_ROOT / "infra" / "node_modules" / ".bin" / "tsx"
    # scripts/test installs infra/node_modules before the e2e step; missing, it is a failure, never a skip.
    assert source.exists(), source
    assert shutil.which("node") and tsx.exists(), "needs node and infra/node_modules: run `npm ci` in infra/ (scripts/test does)"
    script = ("import('./lib/analytics/example-queries.ts').then(m => { const q = m.EXAMPLE_QUERIES ?? "
              "m.default.EXAMPLE_QUERIES; console.log(JSON.stringify(q)); })")
    result = subprocess.run(["node", "--import", "tsx", "-e", script], cwd=REPO_ROOT / "infra", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from analytics import example_queries

    athena = [(q["name"], q["sql"].strip()) for q in json.loads(result.stdout)]
    local = [(q.name, q.sql) for q in example_queries()]
    assert local == athena, "regenerate scripts/lib/example_queries.sql from infra/lib/analytics/example-queries.ts"


def test_a_day_of_200000_lines_is_exported_whole(resources, operator_env):
    # GIVEN 200,000 usage lines of yesterday, put 10,000 per PutLogEvents call
    group, prefix = own_space(resources)
    day = utc_today() - timedelta(days=1)
    lines = synthetic_day(day, 200_000, seed=7)
    started = time.monotonic()
    put_lines(resources.client("logs"), group, lines)
    put_seconds = time.monotonic() - started

    # WHEN the day is exported
    started = time.monotonic()
    summary = export(operator_env, "--date", day.isoformat(), "--log-group", group, "--prefix", prefix)
    export_seconds = time.monotonic() - started
    print(f"200,000 lines: put {put_seconds:.1f}s, export {export_seconds:.1f}s ({summary['bytes']} bytes of Parquet)")

    # THEN every line is one row, and the sums per tenant are the lines'
    assert (summary["events_read"], summary["rows_written"], summary["skipped"]) == (200_000, 200_000, 0)
    expected = defaultdict(lambda: defaultdict(int))
    for line in lines:
        expected[line["tenant_id"]]["requests"] += 1
        for metric in METRICS:
            expected[line["tenant_id"]][metric] += line[metric]
    sums = ", ".join(f"sum({m}) AS {m}" for m in METRICS)
    rows = query(operator_env, f"SELECT tenant_id, count(*) AS requests, count(DISTINCT request_id) AS ids, {sums} FROM {TABLE} GROUP BY tenant_id", "--prefix", prefix)
    assert sum(r["ids"] for r in rows) == 200_000
    assert {r["tenant_id"]: {k: r[k] for k in ["requests", *METRICS]} for r in rows} == {t: dict(v) for t, v in expected.items()}


def test_the_readme_builds_by_hand_with_the_venv_on_path():
    """cargo lambda (and the zig it cross-compiles with) is installed in .venv: the by-hand step must put it on PATH."""
    for readme in (REPO_ROOT / "README.md", REPO_ROOT / "infra" / "README.md"):
        text = readme.read_text()
        starts = [i for i in range(len(text)) if text.startswith("\ncargo lambda build", i)]
        assert starts, f"{readme}: no build-by-hand step"
        for start in starts:
            block = text[: start][text[: start].rindex("```bash"):]
            assert 'export PATH="$PWD/.venv/bin:$PATH"' in block, f"{readme}: the build-by-hand block lacks the venv on PATH"


def test_export_logs_aws_uses_aws_region(monkeypatch, tmp_path):
    """scripts/export-logs --aws builds its boto3 session in AWS_REGION (boto3 alone reads only AWS_DEFAULT_REGION)."""
    import export_logs

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert export_logs.aws_session().region_name == "eu-west-3"
    monkeypatch.delenv("AWS_REGION")
    assert export_logs.aws_session().region_name is None, "no region named: run_aws then stops with a clear message"
