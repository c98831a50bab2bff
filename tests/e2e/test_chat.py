"""The metered happy path: Cognito IdToken -> POST /bedrock/chat -> answer, one usage line, counters."""
from __future__ import annotations

import datetime as dt

from support import (
    assert_usage_schema,
    chat,
    cloudwatch_usage_lines,
    counter_items,
    expected_sums,
    fake_reply,
    fake_tokens,
    new_tenant_id,
    periods_of,
    poll,
    request_id_of,
    wait_counters,
    wait_usage_line,
)


def test_health(api_url):
    import requests

    assert requests.get(f"{api_url}/health", timeout=5).status_code == 200


def test_chat_answers_meters_and_counts(stack, resources, api_url, user_factory):
    user = user_factory.create(new_tenant_id("chat"))
    prompt = "Hello metering world"

    response = chat(api_url, user.token, {"prompt": prompt})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"response": fake_reply(prompt)}, "the body holds the answer and nothing else"
    request_id = request_id_of(response)

    line = wait_usage_line(stack.api, request_id)
    assert_usage_schema(line)
    input_tokens, output_tokens = fake_tokens(prompt)
    assert (line["input_tokens"], line["output_tokens"], line["total_tokens"]) == (
        input_tokens, output_tokens, input_tokens + output_tokens,
    ) == (3, 5, 8)
    assert line["tenant_id"] == user.tenant_id
    assert line["user_id"] == user.sub, "user_id is the Cognito sub"
    assert "metering_error" not in line

    in_cloudwatch = poll("cloudwatch", lambda: cloudwatch_usage_lines(resources, request_id), bool, timeout=10)
    assert in_cloudwatch == [line], f"the usage log group holds exactly this line: {in_cloudwatch}"

    day, week = periods_of(line)
    expected = expected_sums([line])
    assert wait_counters(resources, user.tenant_id, f"DAY#{day}#", expected) == expected
    assert wait_counters(resources, user.tenant_id, f"WEEK#{week}#", expected) == expected


def test_counter_items_follow_the_key_design(stack, resources, api_url, user_factory):
    user = user_factory.create(new_tenant_id("keys"))
    response = chat(api_url, user.token, {"prompt": "one two"})
    assert response.status_code == 200, response.text
    line = wait_usage_line(stack.api, request_id_of(response))
    day, week = periods_of(line)
    model = line["model_id"]
    expected = expected_sums([line])
    wait_counters(resources, user.tenant_id, "WEEK#", expected)

    # Expiry (README): the end of the day + USAGE_DAILY_TTL_DAYS (90), the end of the ISO week + USAGE_WEEKLY_TTL_DAYS
    # (400), to the second. (crates/metering-core/tests/counter_ttl.rs checks every weekday; this, the stack's.)
    day_start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    monday = day_start - dt.timedelta(days=day_start.weekday())
    expected_ttl = {
        "DAY": int((day_start + dt.timedelta(days=1 + 90)).timestamp()),
        "WEEK": int((monday + dt.timedelta(days=7 + 400)).timestamp()),
    }
    for prefix, period in (("DAY", day), ("WEEK", week)):
        items = counter_items(resources, user.tenant_id, f"{prefix}#")
        assert len(items) == 1, items
        item = items[0]
        assert item["pk"] == f"TENANT#{user.tenant_id}"
        assert item["sk"] == f"{prefix}#{period}#bedrock#{model}"
        assert item["gsi1pk"] == f"{prefix}#{period}"
        assert item["gsi1sk"] == f"TENANT#{user.tenant_id}#bedrock#{model}"
        assert item["tenant_id"] == user.tenant_id
        assert item["request_type"] == "bedrock" and item["model_id"] == model
        assert "period" in item
        assert int(item["request_count"]) == 1
        assert int(item["ttl"]) == expected_ttl[prefix], (prefix, item["ttl"], expected_ttl)


def test_accept_text_plain_returns_the_bare_text(stack, api_url, user_factory):
    user = user_factory.create(new_tenant_id("plain"))
    prompt = "Plain text please"

    response = chat(api_url, user.token, {"prompt": prompt}, headers={"Accept": "text/plain"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == fake_reply(prompt)
    line = wait_usage_line(stack.api, request_id_of(response))
    assert (line["input_tokens"], line["output_tokens"]) == fake_tokens(prompt)


def test_max_tokens_reaches_the_model(stack, resources, api_url, user_factory):
    user = user_factory.create(new_tenant_id("maxtok"))
    prompt = "one two three four five six"

    response = chat(api_url, user.token, {"prompt": prompt, "max_tokens": 3})

    assert response.status_code == 200, response.text
    assert response.json() == {"response": fake_reply(prompt, max_tokens=3)}
    line = wait_usage_line(stack.api, request_id_of(response))
    assert (line["input_tokens"], line["output_tokens"], line["total_tokens"]) == (6, 3, 9)


def test_long_prompts_are_answered_with_at_most_32_echoed_words(stack, api_url, user_factory):
    user = user_factory.create(new_tenant_id("long"))
    prompt = " ".join(f"w{i}" for i in range(50))

    response = chat(api_url, user.token, {"prompt": prompt})

    assert response.status_code == 200, response.text
    assert response.json()["response"] == fake_reply(prompt)
    line = wait_usage_line(stack.api, request_id_of(response))
    assert (line["input_tokens"], line["output_tokens"]) == (50, 34)


def test_latency_covers_the_model_call(stack, api_url, user_factory):
    user = user_factory.create(new_tenant_id("latency"))
    response = chat(api_url, user.token, {"prompt": "slow [fake:delay=300] answer"})
    assert response.status_code == 200, response.text
    line = wait_usage_line(stack.api, request_id_of(response))
    assert line["latency_ms"] >= 300, line
    assert line["input_tokens"] == 3, "directives count as words"


def test_every_request_gets_its_own_request_id(api_url, user_factory):
    user = user_factory.create(new_tenant_id("ids"))
    ids = {request_id_of(chat(api_url, user.token, {"prompt": "again"})) for _ in range(3)}
    assert len(ids) == 3


def test_stdout_holds_usage_lines_only(stack, api_url, user_factory):
    """Application logs go to stderr: a log shipper may treat every stdout line as a usage record."""
    user = user_factory.create(new_tenant_id("stdout"))
    response = chat(api_url, user.token, {"prompt": "stdout check"})
    assert response.status_code == 200, response.text
    wait_usage_line(stack.api, request_id_of(response))
    lines = [line for line in stack.api.stdout_text().splitlines() if line.strip()]
    records = stack.api.json_lines()
    assert len(records) == len(lines), "every stdout line is one JSON object"
    assert all(record.get("event") == "token_usage" for record in records), [
        r for r in records if r.get("event") != "token_usage"
    ][:3]
