"""One price truth: the cost the usage API reports for a tenant equals, to the micro-dollar, the cost the example
SQL (`cost-per-tenant-per-month`, run by DuckDB through scripts/query) computes from the exported Parquet.

A day of real traffic through one local API process that serves both the chat route and the Claude proxy, its
usage lines shipped to a log group of its own in moto: chats on Bedrock (Claude 3 Haiku), proxy calls answered
by the fake Anthropic (two models, prompt-cache writes and reads) and proxy calls that fall back to Bedrock on a
429 (a `us.` geographic inference profile: priced with its premium, cache tokens included).
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from proxy_stack import BEDROCK_MODEL, MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from support import chat, new_tenant_id, poll, request_id_of, wait_usage_line
from test_export import TABLE, export, own_space, query, usage_lines_of_day, utc_today  # noqa: F401 (fixtures below)
from test_export import log_processor_bin, operator_env  # noqa: F401  (module fixtures, reused)

OTHER_ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"


@pytest.fixture(scope="module")
def metered_api(stack, resources):
    """(api, log group): chat + proxy in one process, its usage lines in a log group of this module only."""
    group, _ = own_space(resources)
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = stack.fake_anthropic or start_fake_anthropic(stack.run_dir, name=f"fake-anthropic-costs-{uuid.uuid4().hex[:6]}")
    if stack.fake_anthropic is None:
        stack.extra_apis.append(fake)  # stopped with the stack
    api = stack.start_api("api-costs", USAGE_LOG_GROUP=group, **proxy_env(key_table, limit_table, fake.url))
    return api, group


def gateway_key(api_url: str, id_token: str) -> str:
    response = requests.post(f"{api_url}/v1/keys", json={"name": "costs"},
                             headers={"Authorization": f"Bearer {id_token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def ask(api_url: str, key: str, model: str, prompt: str, system: list | None = None) -> requests.Response:
    body = {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}
    if system is not None:
        body["system"] = system
    return requests.post(f"{api_url}/v1/messages", json=body, timeout=60,
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01"})


def test_sql_cost_per_tenant_equals_the_usage_api_cost_to_the_micro_dollar(stack, resources, user_factory, metered_api,
                                                                           operator_env):
    api, group = metered_api
    tenants = [user_factory.create(new_tenant_id("cost")) for _ in range(3)]
    request_ids: dict[str, list[str]] = {}
    for index, user in enumerate(tenants):
        key = gateway_key(api.url, user.token)
        ids = request_ids.setdefault(user.tenant_id, [])
        # Chats (request_type bedrock, Claude 3 Haiku), a different count per tenant.
        for n in range(index + 1):
            response = chat(api.url, user.token, {"prompt": " ".join(["word"] * (5 + 7 * n + index))})
            assert response.status_code == 200, response.text
            ids.append(request_id_of(response))
        # The proxy on Anthropic: a cache write, then a cache read of the same context, then another model.
        context = f"a long shared context of ten words {uuid.uuid4().hex[:10]} to cache"
        system = [{"type": "text", "text": context, "cache_control": {"type": "ephemeral"}}]
        for prompt, model, with_system in (("first question", MODEL, True), ("second question here", MODEL, True),
                                           (" ".join(["haiku"] * (3 + index)), OTHER_ANTHROPIC_MODEL, False)):
            response = ask(api.url, key, model, prompt, system if with_system else None)
            assert response.status_code == 200 and response.headers["x-gateway-upstream"] == "anthropic", response.text
            ids.append(response.headers["x-request-id"])
        # The proxy falling back to Bedrock on a 429 (a `us.` profile), with cache tokens too.
        fallback_context = f"another shared context of nine words {uuid.uuid4().hex[:10]} cached"
        fallback_system = [{"type": "text", "text": fallback_context, "cache_control": {"type": "ephemeral"}}]
        for attempt in range(1 + index % 2 + 1):
            response = ask(api.url, key, MODEL, f"fallback {attempt} [fake:rate-limit=1]", fallback_system)
            assert response.status_code == 200 and response.headers["x-gateway-upstream"] == "bedrock", response.text
            ids.append(response.headers["x-request-id"])
            time.sleep(1.1)  # the 1 s limit lapses: the next request meets the 429 again

    lines = {rid: wait_usage_line(api, rid) for ids in request_ids.values() for rid in ids}
    models = {line["model_id"] for line in lines.values()}
    assert {BEDROCK_MODEL, MODEL, OTHER_ANTHROPIC_MODEL} <= models and len(models) == 4, models
    assert {line["request_type"] for line in lines.values()} == {"bedrock", "anthropic"}
    assert any(line["cache_creation_input_tokens"] for line in lines.values() if line["model_id"] == BEDROCK_MODEL)
    assert any(line["cache_read_input_tokens"] for line in lines.values() if line["model_id"] == MODEL)
    today = utc_today()
    shipped = poll("lines in moto's log group", lambda: usage_lines_of_day(resources, group, today),
                   lambda found: len(found) >= len(lines), timeout=20)
    assert {line["request_id"] for line in shipped} == set(lines)

    # The usage API's estimated cost per tenant, once the counters hold every request.
    def report(user) -> dict:
        response = requests.get(f"{api.url}/v1/usage/me", headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    api_cost = {}
    for user in tenants:
        expected = len(request_ids[user.tenant_id])
        answer = poll("counters", lambda: report(user), lambda r: r["summary"]["total_requests"] == expected, timeout=20)
        assert answer["summary"]["total_requests"] == expected and answer["warnings"] == [], answer
        api_cost[user.tenant_id] = answer["summary"]["estimated_cost_usd"]
    assert all(cost and cost > 0 for cost in api_cost.values()), api_cost

    # WHEN the day is exported and the example query runs on the Parquet
    _, prefix = own_space(resources)
    summary = export(operator_env, "--date", today.isoformat(), "--log-group", group, "--prefix", prefix)
    assert summary["rows_written"] == len(lines), summary
    rows = query(operator_env, "", "--example", "cost-per-tenant-per-month", "--prefix", prefix)

    # THEN every tenant's SQL cost is the API's, to the micro-dollar
    sql_cost = {row["tenant_id"]: row["estimated_cost_usd"] for row in rows}
    assert set(sql_cost) == set(api_cost), rows
    for tenant, cost in api_cost.items():
        assert sql_cost[tenant] == pytest.approx(cost, abs=1e-6, rel=0), (tenant, sql_cost[tenant], cost)
    assert all(not row["models_without_price"] for row in rows), rows
    # AND the tokens behind them are the lines'
    for row in rows:
        tenant_lines = [lines[rid] for rid in request_ids[row["tenant_id"]]]
        assert row["requests"] == len(tenant_lines)
        for metric in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            assert row[metric] == sum(line[metric] for line in tenant_lines), (row, metric)
