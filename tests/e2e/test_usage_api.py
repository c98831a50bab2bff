"""The usage API against the local stack: GET /v1/usage/me, /v1/usage/{tenant_id}, /v1/usage (admins).

Reports must equal the sums of the usage lines, show nothing of another tenant through any route or
parameter, refuse bad parameters with the error JSON, and read a number of items that depends on the days
asked for, never on the number of requests (proven with the x-usage-items-read header, DynamoDB's
ScannedCount summed over every Query the report made).
"""
from __future__ import annotations

import datetime as dt
import http.client
import time
import urllib.parse
from dataclasses import dataclass

import pytest
import requests

from provision import DEFAULT_MODEL_ID, generate_password
from support import (
    assert_error_body,
    chat,
    new_tenant_id,
    poll,
    request_id_of,
    wait_usage_line,
)

HAIKU_INPUT_PER_1K = 0.00025
HAIKU_OUTPUT_PER_1K = 0.00125
ITEMS_READ = "x-usage-items-read"


# ------------------------------------------------------------------ helpers

@dataclass(frozen=True)
class Caller:
    username: str
    tenant_id: str
    token: str


@pytest.fixture(scope="module")
def admin(user_factory) -> Caller:
    username = f"admin-{new_tenant_id('u')}"
    password = generate_password()
    tenant_id = new_tenant_id("ops")
    user_factory.users.create_tenant_user(username, f"{username}@example.com", tenant_id, password, admin=True)
    return Caller(username, tenant_id, user_factory.users.get_id_token(username, password))


def tenant_user(user_factory, label: str) -> Caller:
    user = user_factory.create(new_tenant_id(label))
    return Caller(user.username, user.tenant_id, user.token)


def usage_get(api_url: str, token: str | None, path: str, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{api_url}{path}", params=params or None, headers=headers, timeout=30)


def raw_get(api_url: str, token: str, raw_path: str, headers: dict | None = None) -> tuple[int, str]:
    """GET with the path sent byte for byte (requests/urllib3 would normalise dots and encodings)."""
    parsed = urllib.parse.urlsplit(api_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("GET", raw_path, headers={"Authorization": f"Bearer {token}", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def add_counters(resources, tenant_id: str, day: dt.date, *, requests_: int, input_tokens: int, output_tokens: int,
                 request_type: str = "bedrock", model_id: str = DEFAULT_MODEL_ID) -> None:
    """What the chat path does for `requests_` requests at once: ADD to the day and ISO-week items."""
    dynamodb = resources.client("dynamodb")
    for prefix, period in (("DAY", day.isoformat()), ("WEEK", iso_week(day))):
        dynamodb.update_item(
            TableName=resources.usage_table,
            Key={"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"{prefix}#{period}#{request_type}#{model_id}"}},
            UpdateExpression="ADD input_tokens :i, output_tokens :o, total_tokens :t, request_count :n, "
            "cache_creation_input_tokens :z, cache_read_input_tokens :z "
            "SET tenant_id = :tenant, period = :period, request_type = :rt, model_id = :m, gsi1pk = :g1, gsi1sk = :g2",
            ExpressionAttributeValues={
                ":i": {"N": str(input_tokens)}, ":o": {"N": str(output_tokens)},
                ":t": {"N": str(input_tokens + output_tokens)}, ":n": {"N": str(requests_)}, ":z": {"N": "0"},
                ":tenant": {"S": tenant_id}, ":period": {"S": period}, ":rt": {"S": request_type},
                ":m": {"S": model_id}, ":g1": {"S": f"{prefix}#{period}"},
                ":g2": {"S": f"TENANT#{tenant_id}#{request_type}#{model_id}"},
            },
        )


def sums(lines: list[dict]) -> dict:
    return {
        "total_input_tokens": sum(line["input_tokens"] for line in lines),
        "total_output_tokens": sum(line["output_tokens"] for line in lines),
        "total_tokens": sum(line["total_tokens"] for line in lines),
        "total_requests": len(lines),
    }


def summary_of(report: dict) -> dict:
    return {key: report["summary"][key] for key in ("total_input_tokens", "total_output_tokens", "total_tokens", "total_requests")}


def all_tenants(api_url: str, token: str, **params) -> tuple[list[dict], list[requests.Response]]:
    """Every page of GET /v1/usage, following `next`."""
    rows, responses, cursor = [], [], None
    while True:
        page_params = dict(params, **({"cursor": cursor} if cursor else {}))
        response = usage_get(api_url, token, "/v1/usage", **page_params)
        assert response.status_code == 200, response.text
        responses.append(response)
        rows.extend(response.json()["tenants"])
        cursor = response.json()["next"]
        if cursor is None:
            return rows, responses


# ------------------------------------------------------------------ the numbers

def test_reports_equal_the_sums_of_the_usage_lines(stack, api_url, user_factory, admin):
    a, b = tenant_user(user_factory, "usage-a"), tenant_user(user_factory, "usage-b")
    prompts = {a: ["one two three", "four five", "six seven eight nine", "ten eleven twelve thirteen fourteen"],
               b: ["alpha beta", "gamma delta epsilon"]}
    lines: dict[str, list[dict]] = {a.tenant_id: [], b.tenant_id: []}
    for caller, caller_prompts in prompts.items():
        for prompt in caller_prompts:
            response = chat(api_url, caller.token, {"prompt": prompt})
            assert response.status_code == 200, response.text
            lines[caller.tenant_id].append(wait_usage_line(stack.api, request_id_of(response)))
    answered = time.monotonic()

    # Within a second of the last usage line, the tenant's own report already counts every request.
    expected_a = sums(lines[a.tenant_id])
    own = poll("own report", lambda: usage_get(api_url, a.token, "/v1/usage/me"),
               lambda r: r.status_code == 200 and summary_of(r.json()) == expected_a, timeout=1.0, interval=0.05)
    assert own.status_code == 200, own.text
    assert summary_of(own.json()) == expected_a
    assert time.monotonic() - answered < 1.0

    report = own.json()
    assert report["tenant_id"] == a.tenant_id and report["period_days"] == 7 and report["request_type"] == "all"
    day = lines[a.tenant_id][0]["timestamp"][:10]
    assert report["to"] == day and len(report["daily_stats"]) == 7
    assert report["daily_stats"][day] == {
        "input_tokens": expected_a["total_input_tokens"], "output_tokens": expected_a["total_output_tokens"],
        "requests": expected_a["total_requests"],
    }
    assert all(stats == {"input_tokens": 0, "output_tokens": 0, "requests": 0}
               for other_day, stats in report["daily_stats"].items() if other_day != day), "idle days are zeros"
    week = iso_week(dt.date.fromisoformat(day))
    assert report["weekly_stats"][week]["requests"] == expected_a["total_requests"]
    expected_cost = (expected_a["total_input_tokens"] * HAIKU_INPUT_PER_1K
                     + expected_a["total_output_tokens"] * HAIKU_OUTPUT_PER_1K) / 1000
    assert report["summary"]["estimated_cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert report["warnings"] == []

    # The same numbers through /{tenant_id} (the tenant itself, then an admin), and in the admin list.
    for caller, tenant in ((a, a), (b, b), (admin, a), (admin, b)):
        response = usage_get(api_url, caller.token, f"/v1/usage/{tenant.tenant_id}")
        assert response.status_code == 200, response.text
        assert summary_of(response.json()) == sums(lines[tenant.tenant_id]), (caller.username, tenant.tenant_id)
    listed = poll("admin list", lambda: {row["tenant_id"]: row for row in all_tenants(api_url, admin.token, limit=1000)[0]},
                  lambda rows: all(t in rows for t in lines), timeout=3.0)
    for tenant_id, tenant_lines in lines.items():
        row = listed[tenant_id]
        assert {key: row[key] for key in sums([])} == sums(tenant_lines), row


def test_request_type_filters_every_route(api_url, resources, stack, user_factory, admin):
    caller = tenant_user(user_factory, "usage-type")
    response = chat(api_url, caller.token, {"prompt": "bedrock words here"})
    line = wait_usage_line(stack.api, request_id_of(response))
    add_counters(resources, caller.tenant_id, today(), requests_=2, input_tokens=100, output_tokens=50,
                 request_type="anthropic", model_id="claude-3-haiku-20240307")

    def totals(token, path, request_type=None):
        params = {"request_type": request_type} if request_type else {}
        response = usage_get(api_url, token, path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    for token, path in ((caller.token, "/v1/usage/me"), (admin.token, f"/v1/usage/{caller.tenant_id}")):
        assert totals(token, path)["summary"]["total_requests"] == 3
        bedrock = totals(token, path, "bedrock")
        assert bedrock["request_type"] == "bedrock"
        assert summary_of(bedrock) == sums([line])
        anthropic = totals(token, path, "anthropic")
        assert (anthropic["summary"]["total_input_tokens"], anthropic["summary"]["total_requests"]) == (100, 2)
        assert [model["model_id"] for model in anthropic["models"]] == ["claude-3-haiku-20240307"]
    rows, _ = all_tenants(api_url, admin.token, request_type="anthropic", limit=1000)
    mine = [row for row in rows if row["tenant_id"] == caller.tenant_id]
    assert mine and mine[0]["total_requests"] == 2
    assert all(row["tenant_id"] != admin.tenant_id for row in rows)


def test_an_unpriced_model_has_a_null_cost_and_a_warning(api_url, resources, user_factory):
    caller = tenant_user(user_factory, "usage-price")
    add_counters(resources, caller.tenant_id, today(), requests_=1, input_tokens=10, output_tokens=10,
                 model_id="acme.mystery-model-v1:0")
    report = usage_get(api_url, caller.token, "/v1/usage/me").json()
    assert report["summary"]["total_tokens"] == 20
    assert report["summary"]["estimated_cost_usd"] is None
    assert any("acme.mystery-model-v1:0" in warning for warning in report["warnings"]), report["warnings"]


def test_days_366_covers_every_day_of_the_year(api_url, user_factory):
    caller = tenant_user(user_factory, "usage-year")
    response = usage_get(api_url, caller.token, "/v1/usage/me", days=366)
    assert response.status_code == 200, response.text
    report = response.json()
    end = today()
    start = end - dt.timedelta(days=365)
    assert (report["period_days"], report["from"], report["to"]) == (366, start.isoformat(), end.isoformat())
    expected_days = [(start + dt.timedelta(days=n)).isoformat() for n in range(366)]
    assert sorted(report["daily_stats"]) == expected_days
    assert sorted(report["weekly_stats"]) == sorted({iso_week(dt.date.fromisoformat(d)) for d in expected_days})
    assert any("kept" in warning for warning in report["warnings"]), "days past the daily TTL are flagged"


# ------------------------------------------------------------------ isolation

def test_a_tenant_reads_nothing_of_another_tenant(api_url, user_factory):
    a, b = tenant_user(user_factory, "iso-a"), tenant_user(user_factory, "iso-b")
    assert chat(api_url, b.token, {"prompt": "secret numbers of b"}).status_code == 200
    secret = b.tenant_id
    encoded = "".join(f"%{byte:02X}" for byte in secret.encode())
    first_encoded = f"%{ord(secret[0]):02X}{secret[1:]}"
    refused_403 = [
        f"/v1/usage/{secret}",
        f"/v1/usage/{secret.upper()}",
        f"/v1/usage/{encoded}",
        f"/v1/usage/{first_encoded}",
        f"/v1/usage/%25{ord(secret[0]):02X}{secret[1:]}",  # double encoding
        f"/v1/usage/{secret}%2F..",
        f"/v1/usage/{a.tenant_id}%2F..%2F{secret}",
        f"/v1/usage/me%2F..%2F{secret}",
        f"/v1/usage/{secret}%00",
        f"/v1/usage/{secret}%20",
        f"/v1/usage/me;tenant_id={secret}",
        f"/v1/usage/{secret}?days=7",
        f"/v1/usage/{secret}?request_type=bedrock",
        f"/v1/usage?tenant_id={secret}",
        f"/v1/usage?days=7",
    ]
    refused_other = [
        (f"/v1/usage/me/../{secret}", 404),
        (f"/v1/usage/{secret}/", 404),
        (f"/v1/usage/{a.tenant_id}/../{secret}", 404),
        (f"/V1/USAGE/{secret}", 404),
        (f"//v1/usage/{secret}", 404),
        (f"/v1/usage/me?tenant_id={secret}", 400),
        (f"/v1/usage/me?tenant={secret}", 400),
        (f"/v1/usage/{a.tenant_id}?tenant_id={secret}", 400),
        (f"/v1/usage/me?days=7&tenant_id={secret}", 400),
    ]
    nobody = raw_get(api_url, a.token, f"/v1/usage/{new_tenant_id('iso-nobody')}")
    assert nobody[0] == 403
    for path in refused_403:
        status, body = raw_get(api_url, a.token, path)
        assert status == 403, f"{path} -> {status} {body}"
        assert secret.lower() not in body.lower(), f"{path} leaked {body}"
        if path.startswith("/v1/usage/"):
            assert body == nobody[1], f"{path}: a 403 must not tell an existing tenant from a missing one"
    for path, expected in refused_other:
        status, body = raw_get(api_url, a.token, path)
        assert status == expected, f"{path} -> {status} {body}"
        assert secret.lower() not in body.lower(), f"{path} leaked {body}"
    # Headers do not choose the tenant either: /me stays the caller's.
    status, body = raw_get(api_url, a.token, "/v1/usage/me", headers={"X-Tenant-Id": secret, "Tenant-Id": secret})
    assert status == 200 and secret not in body and a.tenant_id in body


def test_a_non_admin_cannot_list_tenants(api_url, user_factory):
    caller = tenant_user(user_factory, "iso-list")
    error = assert_error_body(usage_get(api_url, caller.token, "/v1/usage"), 403)
    assert error["type"] == "permission_error"


def test_usage_routes_need_a_token(api_url):
    for path in ("/v1/usage/me", "/v1/usage", "/v1/usage/anyone"):
        assert_error_body(usage_get(api_url, None, path), 401)
        assert_error_body(usage_get(api_url, "not-a-jwt", path), 401)


# ------------------------------------------------------------------ bad requests

@pytest.mark.parametrize("query", [
    "days=0", "days=367", "days=-1", "days=abc", "days=7.5", "days=", "days=%207", "days=1e2", "days=7&days=8",
    "request_type=openai", "request_type=BEDROCK", "request_type=", "limit=10", "cursor=abc", "tenant_id=x",
])
def test_bad_parameters_of_a_tenant_report_are_400(api_url, user_factory, query):
    caller = _shared_caller(user_factory)
    for path in ("/v1/usage/me", f"/v1/usage/{caller.tenant_id}"):
        response = requests.get(f"{api_url}{path}?{query}", headers={"Authorization": f"Bearer {caller.token}"}, timeout=30)
        assert_error_body(response, 400)


@pytest.mark.parametrize("query", [
    "limit=0", "limit=1001", "limit=ten", "days=0", "request_type=gpt", "cursor=", "cursor=not-a-cursor",
    "cursor=eyJ2IjoxfQ", "cursor=%%%", "days=7&cursor={cursor_of_30_days}", "request_type=anthropic&cursor={cursor_of_30_days}",
])
def test_bad_parameters_of_the_admin_list_are_400(api_url, resources, admin, query):
    if "{cursor_of_30_days}" in query:
        # A real cursor needs a second page: make sure there are at least two tenants in the period.
        for label in ("cur-a", "cur-b"):
            add_counters(resources, new_tenant_id(label), today(), requests_=1, input_tokens=1, output_tokens=1)
        first = usage_get(api_url, admin.token, "/v1/usage", days=30, limit=1).json()
        assert first["next"], first
        query = query.replace("{cursor_of_30_days}", first["next"])
    response = requests.get(f"{api_url}/v1/usage?{query}", headers={"Authorization": f"Bearer {admin.token}"}, timeout=30)
    assert_error_body(response, 400)


_callers: dict[str, Caller] = {}


def _shared_caller(user_factory) -> Caller:
    if "bad" not in _callers:
        _callers["bad"] = tenant_user(user_factory, "bad-params")
    return _callers["bad"]


def test_unknown_routes_and_methods(api_url, user_factory):
    caller = _shared_caller(user_factory)
    for path in ("/v1/usage/a/b", "/v1/usages", "/v1/usage/"):
        assert_error_body(usage_get(api_url, caller.token, path), 404)
    response = requests.post(f"{api_url}/v1/usage/me", headers={"Authorization": f"Bearer {caller.token}"}, timeout=30)
    assert_error_body(response, 405)


# ------------------------------------------------------------------ cost of a report

def test_items_read_do_not_grow_with_requests(api_url, resources, admin):
    """30 days at 10 requests/day and at 1,000,000 requests/day read the same number of items."""
    ten_a_day, million_a_day = new_tenant_id("ten-a-day"), new_tenant_id("million-a-day")
    days = [today() - dt.timedelta(days=n) for n in range(30)]
    for day in days:
        for _ in range(10):  # ten separate requests, counted the way the chat path counts them
            add_counters(resources, ten_a_day, day, requests_=1, input_tokens=3, output_tokens=5)
        add_counters(resources, million_a_day, day, requests_=1_000_000, input_tokens=3_000_000, output_tokens=5_000_000)

    answers = {tenant: usage_get(api_url, admin.token, f"/v1/usage/{tenant}", days=30) for tenant in (ten_a_day, million_a_day)}
    for response in answers.values():
        assert response.status_code == 200, response.text
    small, large = (answers[t] for t in (ten_a_day, million_a_day))
    assert small.json()["summary"]["total_requests"] == 300
    assert large.json()["summary"]["total_requests"] == 30_000_000
    assert large.json()["summary"]["total_tokens"] == 240_000_000
    weeks = {iso_week(day) for day in days}
    # One daily item per day and one weekly item per ISO week: 35 or 36 items, two Query calls.
    assert int(small.headers[ITEMS_READ]) == int(large.headers[ITEMS_READ]) == 30 + len(weeks)
    assert small.headers["x-usage-queries"] == large.headers["x-usage-queries"] == "2"


def test_the_admin_list_reads_one_query_per_day_and_pages_every_tenant_once(api_url, resources, admin):
    day = today() - dt.timedelta(days=3)
    seeded = {new_tenant_id(f"rank{n}"): 1000 * (n + 1) for n in range(5)}
    for tenant, tokens in seeded.items():
        add_counters(resources, tenant, day, requests_=1, input_tokens=tokens, output_tokens=0)

    rows, responses = all_tenants(api_url, admin.token, days=7, limit=2)
    single_page, single = all_tenants(api_url, admin.token, days=7, limit=1000)
    ids = [row["tenant_id"] for row in rows]
    assert len(ids) == len(set(ids)), "no tenant twice across pages"
    assert rows == single_page, "pages of 2 make up the same list as one page"
    assert len(responses) == -(-len(rows) // 2)
    assert [row["total_tokens"] for row in rows] == sorted((row["total_tokens"] for row in rows), reverse=True)
    assert responses[0].json()["tenant_count"] == len(rows)
    by_id = {row["tenant_id"]: row for row in rows}
    for tenant, tokens in seeded.items():
        assert by_id[tenant]["total_tokens"] == tokens

    # The items read are exactly the daily items of the 7 days (one Query per day on gsi1), whatever they count.
    dynamodb = resources.client("dynamodb")
    daily_items = 0
    for n in range(7):
        label = (today() - dt.timedelta(days=n)).isoformat()
        daily_items += dynamodb.query(
            TableName=resources.usage_table, IndexName="gsi1", Select="COUNT",
            KeyConditionExpression="gsi1pk = :d", ExpressionAttributeValues={":d": {"S": f"DAY#{label}"}},
        )["Count"]
    assert int(single[0].headers[ITEMS_READ]) == daily_items
    assert single[0].headers["x-usage-queries"] == "7"


# ------------------------------------------------------------------ the dashboard's own routes

def test_the_dashboard_is_served_without_a_token(api_url, resources):
    page = requests.get(f"{api_url}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self' " + resources.endpoint_url in page.headers["content-security-policy"]
    config = requests.get(f"{api_url}/ui/config.json", timeout=10).json()
    assert config == {
        "cognito_endpoint": resources.endpoint_url,
        "cognito_client_id": resources.user_pool_client_id,
        "region": resources.region,
        "admin_group": "admin",
    }
    for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        response = requests.get(f"{api_url}/ui/{asset}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    slash = requests.get(f"{api_url}/ui/", timeout=10, allow_redirects=False)
    assert slash.status_code == 308 and slash.headers["location"] == "../ui"


def test_pricing_file_replaces_the_built_in_prices(stack, user_factory, tmp_path):
    # GIVEN a usage API started with PRICING_FILE naming a table of its own (round prices, easy to check)
    prices = tmp_path / "pricing.json"
    prices.write_text(
        '{"currency": "USD", "as_of": "2026-11-30", "models": '
        f'{{"{DEFAULT_MODEL_ID}": {{"input_per_1k": 1.5, "output_per_1k": 20}}}}}}'
    )
    api = stack.start_api("api-pricing-file", PRICING_FILE=str(prices))
    caller = tenant_user(user_factory, "pricefile")
    response = chat(api.url, caller.token, {"prompt": "price me"})
    assert response.status_code == 200, response.text
    line = wait_usage_line(api, request_id_of(response))
    # WHEN the tenant asks for its report THEN the cost is the file's, not the built-in table's
    expected = (line["input_tokens"] * 1.5 + line["output_tokens"] * 20) / 1000
    report = poll("report", lambda: usage_get(api.url, caller.token, "/v1/usage/me"),
                  lambda r: r.status_code == 200 and r.json()["summary"]["total_requests"] == 1, timeout=10)
    assert report.json()["summary"]["estimated_cost_usd"] == pytest.approx(expected, abs=1e-9), report.json()
    built_in = (line["input_tokens"] * HAIKU_INPUT_PER_1K + line["output_tokens"] * HAIKU_OUTPUT_PER_1K) / 1000
    assert expected != pytest.approx(built_in)

