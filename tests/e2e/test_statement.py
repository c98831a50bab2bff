"""scripts/statement: a synthetic month (days spread over the month, three models, both request types, cache
tokens) exported from moto's logs to Parquet, its counters rebuilt from the same lines, then the statement (DuckDB
over the export) against the usage API (`/v1/usage/me`, the counters) for the same period: equal totals.

The month is yesterday's, its days within moto's 14-day window for log events; the usage API's `days=N` reaches
from today back to the first of those days, and the tenant has no usage outside them.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from datetime import timedelta

import pytest
import requests

from support import REPO_ROOT, new_tenant_id, run_script
from synthetic_usage import MODELS, put_lines, synthetic_day
from test_export import export, own_space, utc_today
from test_export import log_processor_bin, operator_env  # noqa: F401  (module fixtures, reused)

sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))
from statement import render_csv  # noqa: E402


# Bedrock model ids (a `us.` profile among them) on the chat route, Anthropic's own on the proxy.
REQUESTS = [(MODELS[0], "bedrock"), (MODELS[1], "bedrock"), (MODELS[2], "bedrock"), ("claude-3-5-haiku-20241022", "anthropic"),
            ("claude-sonnet-4-5-20250929", "anthropic"), (MODELS[1], "bedrock"), ("claude-3-5-haiku-20241022", "anthropic")]


def month_of_lines(days, tenant: str, other: str) -> list[dict]:
    """Per day: 7 lines of `tenant` (five models, both request types, some cache tokens) and 2 of `other`."""
    lines = []
    for number, day in enumerate(days):
        for index, line in enumerate(synthetic_day(day, 9, seed=100 + number, tenants=1)):
            owner = tenant if index < 7 else other
            model_id, request_type = REQUESTS[index % len(REQUESTS)]
            cache = {"cache_creation_input_tokens": 50 + index, "cache_read_input_tokens": 400 + number} if index in (1, 3) else {}
            line = dict(line, tenant_id=owner, user_id=f"{owner}-user", model_id=model_id, request_type=request_type, **cache)
            line["total_tokens"] = (line["input_tokens"] + line["output_tokens"] + line["cache_creation_input_tokens"]
                                    + line["cache_read_input_tokens"])
            lines.append(line)
    return lines


def statement(env: dict, *args: str) -> str:
    result = run_script(env, "statement", *args)
    assert result.returncode == 0, f"statement {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_monthly_statement_equals_the_usage_api_for_the_same_period(resources, api_url, user_factory, operator_env):
    # GIVEN a month of synthetic lines of a new tenant (and of another tenant) in a log group of this test
    yesterday = utc_today() - timedelta(days=1)
    days = sorted({yesterday - timedelta(days=n) for n in (0, 5, 11)
                   if (yesterday - timedelta(days=n)).month == yesterday.month})
    user = user_factory.create(new_tenant_id("stmt"))
    other = new_tenant_id("stmt-other")
    lines = month_of_lines(days, user.tenant_id, other)
    group, prefix = own_space(resources)
    put_lines(resources.client("logs"), group, lines)
    # AND its days exported, and the tenant's counters rebuilt from the same lines (what the live path writes)
    summary = export(operator_env, "--from", days[0].isoformat(), "--to", days[-1].isoformat(), "--log-group", group,
                     "--prefix", prefix)
    assert summary["rows_written"] == len(lines), summary
    for day in days:
        result = run_script(operator_env, "rebuild-counters", "--date", day.isoformat(), "--tenant", user.tenant_id,
                            "--log-group", group, "--allow-today")
        assert result.returncode == 0, result.stdout + result.stderr
    # AND a budget in force for the tenant (the limits item of the budgets feature); none for the other
    resources.client("dynamodb").put_item(TableName=resources.usage_table, Item={
        "pk": {"S": f"LIMITS#{user.tenant_id}"}, "sk": {"S": "CONFIG"},
        "tokens_per_month": {"N": "2000000"}, "usd_per_month": {"N": "25.5"}})
    month = yesterday.strftime("%Y-%m")

    # WHEN the statement of the month is made, and the usage API asked for the same period
    report = json.loads(statement(operator_env, "--month", month, "--prefix", prefix))
    period_days = (utc_today() - days[0]).days + 1
    response = requests.get(f"{api_url}/v1/usage/me", params={"days": period_days},
                            headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    api = response.json()

    # THEN the totals are the API's: requests, each kind of token, and the estimated cost to the micro-dollar
    statements = {entry["tenant_id"]: entry for entry in report["tenants"]}
    assert set(statements) == {user.tenant_id, other}
    tenant = statements[user.tenant_id]
    totals, expected = tenant["totals"], api["summary"]
    mine = [line for line in lines if line["tenant_id"] == user.tenant_id]
    assert totals["requests"] == expected["total_requests"] == len(mine)
    for metric in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        assert totals[metric] == expected[f"total_{metric}"] == sum(line[metric] for line in mine), metric
    assert totals["total_tokens"] == expected["total_tokens"]
    assert expected["estimated_cost_usd"] and api["warnings"] == [], api
    assert totals["estimated_cost_usd"] == pytest.approx(expected["estimated_cost_usd"], abs=1e-6, rel=0)
    assert totals["unpriced_requests"] == 0
    # AND by model and request type as well
    by_model = {(row["model_id"], row["request_type"]): row for row in tenant["models"]}
    assert len(by_model) == 5, by_model
    api_by_model = {(m["model_id"], m["request_type"]): m for m in api["models"]}
    assert set(api_by_model) == set(by_model)
    for key, model in api_by_model.items():
        assert by_model[key]["requests"] == model["requests"], key
        assert by_model[key]["estimated_cost_usd"] == pytest.approx(model["estimated_cost_usd"], abs=1e-6, rel=0), key
    # AND the budget in force is shown, and the reconciliation footer holds: every line is a row, all applied
    assert tenant["budget"] == {"requests_per_minute": None, "tokens_per_day": None, "tokens_per_month": 2000000,
                                "usd_per_month": 25.5}
    footer = report["reconciliation"]
    assert (footer["days_exported"], footer["manifest_rows"], footer["rows"], footer["lines_equal_rows"]) == (
        (days[-1] - days[0]).days + 1, len(lines), len(lines), True), footer  # the export wrote every day of the range
    assert footer["counter_outcomes"] == {"applied": len(lines), "failed": 0, "unknown": 0, "not_recorded": 0}
    assert footer["skipped_malformed"] == 0 and len(footer["price_versions"]) == 1

    # AND the other tenant has no budget: "none" in the CSV form (rendered from the same statement)
    assert statements[other]["budget"] is None and statements[other]["totals"]["requests"] == len(lines) - len(mine)
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    totals_rows = {row[1]: dict(zip(rows[0], row)) for row in rows[1:] if len(row) > 2 and row[2] == "TOTAL"}
    assert totals_rows[other]["budget_usd_per_month"] == "none" and totals_rows[user.tenant_id]["budget_usd_per_month"] == "25.5"
    assert int(totals_rows[user.tenant_id]["requests"]) == len(mine)

    # WHEN the tenant's statement is asked for as HTML
    page = statement(operator_env, "--month", month, "--tenant", user.tenant_id, "--format", "html", "--prefix", prefix)
    # THEN it is that tenant's only, printable, with an inline SVG chart and nothing fetched from elsewhere
    assert page.count("<svg") == 1 and "@media print" in page and "<script" not in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert user.tenant_id in page and other not in page and f"${totals['estimated_cost_usd']:,.6f}" in page


def test_a_bad_month_is_refused_with_exit_2(operator_env):
    result = run_script(operator_env, "statement", "--month", "2026-13")
    assert result.returncode == 2 and "--month must be a month like" in result.stderr, result.stderr
