"""Request bodies: bad ones get 400 with the error JSON and are never metered; the limits are inclusive."""
from __future__ import annotations

import time

import pytest

from support import (
    assert_error_body,
    chat,
    counter_sums,
    fake_reply,
    new_tenant_id,
    request_id_of,
    usage_lines_for,
    wait_usage_line,
)

LIMIT = 100_000

BAD_BODIES = {
    "malformed JSON": '{"prompt": "hi"',
    "empty body": "",
    "JSON array": '["hi"]',
    "JSON string": '"hi"',
    "prompt missing": "{}",
    "prompt null": '{"prompt": null}',
    "prompt a number": '{"prompt": 42}',
    "prompt a list": '{"prompt": ["hi"]}',
    "prompt empty": '{"prompt": ""}',
    "prompt whitespace": '{"prompt": "  \\n\\t "}',
    "prompt 100,001 chars": '{"prompt": "' + "a" * (LIMIT + 1) + '"}',
    "max_tokens 0": '{"prompt": "hi", "max_tokens": 0}',
    "max_tokens -1": '{"prompt": "hi", "max_tokens": -1}',
    "max_tokens 4097": '{"prompt": "hi", "max_tokens": 4097}',
    "max_tokens a string": '{"prompt": "hi", "max_tokens": "100"}',
    "unknown field tenant_id": '{"prompt": "hi", "tenant_id": "someone-else"}',
}


@pytest.fixture(scope="module")
def tenant_user(user_factory):
    return user_factory.create(new_tenant_id("valid"))


@pytest.fixture(scope="module")
def bad_responses(api_url, tenant_user):
    return {case: chat(api_url, tenant_user.token, raw=body) for case, body in BAD_BODIES.items()}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_get_400(bad_responses, case):
    assert_error_body(bad_responses[case], 400)


def test_refused_bodies_are_not_metered(stack, resources, api_url, bad_responses, tenant_user):
    # A good request after the bad ones: once its usage line is out, any line of the bad ones would be too.
    good = chat(api_url, tenant_user.token, {"prompt": "good"})
    assert good.status_code == 200, good.text
    wait_usage_line(stack.api, request_id_of(good))
    time.sleep(0.3)
    # Every bad body is refused (a wrongly answered 200 fails here too, not only in test_bad_bodies_get_400),
    # none is metered, and the day counts the good request alone.
    assert {case: r.status_code for case, r in bad_responses.items()} == dict.fromkeys(bad_responses, 400)
    for case, response in bad_responses.items():
        assert usage_lines_for(stack.api, request_id_of(response)) == [], case
    assert counter_sums(resources, tenant_user.tenant_id, "DAY#")["request_count"] == 1


def test_a_prompt_of_exactly_100000_chars_is_answered(api_url, tenant_user):
    prompt = "a" * LIMIT
    response = chat(api_url, tenant_user.token, {"prompt": prompt})
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"response": fake_reply(prompt)}


def test_the_prompt_limit_counts_characters_not_bytes(api_url, tenant_user):
    prompt = "é" * LIMIT  # 200,000 bytes in UTF-8
    response = chat(api_url, tenant_user.token, {"prompt": prompt})
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("max_tokens", [1, 4096])
def test_max_tokens_bounds_are_inclusive(api_url, tenant_user, max_tokens):
    response = chat(api_url, tenant_user.token, {"prompt": "bounds", "max_tokens": max_tokens})
    assert response.status_code == 200, response.text
    assert response.json() == {"response": fake_reply("bounds", max_tokens)}


def test_a_body_over_1_mib_gets_413(api_url, tenant_user):
    response = chat(api_url, tenant_user.token, raw='{"prompt": "' + "a " * 600_000 + '"}')
    assert_error_body(response, 413)


def test_other_methods_and_routes_get_the_error_json(api_url, tenant_user):
    import requests

    auth = {"Authorization": f"Bearer {tenant_user.token}"}
    assert_error_body(requests.get(f"{api_url}/bedrock/chat", headers=auth, timeout=10), 405)
    assert_error_body(requests.post(f"{api_url}/no/such/route", headers=auth, json={"prompt": "x"}, timeout=10), 404)
