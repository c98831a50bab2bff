"""Bedrock failures reach the tenant as the documented statuses, and an unanswered request is never metered."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import (
    assert_error_body,
    chat,
    counter_sums,
    new_tenant_id,
    request_id_of,
    usage_lines_for,
    wait_usage_line,
)

DIRECTIVES = {
    "throttle": 429,
    "validation": 400,
    "access-denied": 502,
    "model-timeout": 504,
    "not-found": 502,
    "unavailable": 503,
    "error": 502,
}


@pytest.fixture(scope="module")
def tenant_user(user_factory):
    return user_factory.create(new_tenant_id("bedrock-err"))


@pytest.fixture(scope="module")
def error_responses(api_url, tenant_user):
    prompts = {name: f"please fail [fake:{name}] now" for name in DIRECTIVES}
    # Bedrock's own retry-after, when it sends one (the fake sends none unless told).
    prompts["throttle-retry-after-7"] = "please fail [fake:throttle] [fake:retry-after=7] now"
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        futures = {name: pool.submit(chat, api_url, tenant_user.token, {"prompt": p}) for name, p in prompts.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("directive", list(DIRECTIVES))
def test_bedrock_errors_map_to_statuses(error_responses, directive):
    assert_error_body(error_responses[directive], DIRECTIVES[directive])


def test_throttling_keeps_bedrocks_own_retry_after(error_responses):
    response = error_responses["throttle-retry-after-7"]
    assert_error_body(response, 429)
    # Bedrock's `retry-after: 7` kept exactly: not replaced by the API's default (THROTTLE_RETRY_AFTER_SECONDS, 5).
    assert response.headers.get("Retry-After") == "7", dict(response.headers)


def test_throttling_without_bedrocks_retry_after_gives_the_default(error_responses):
    # README "Configuration": THROTTLE_RETRY_AFTER_SECONDS, `5`, when Bedrock throttles without saying.
    assert error_responses["throttle"].headers.get("Retry-After") == "5", dict(error_responses["throttle"].headers)


def test_access_denied_tells_the_operator_what_to_fix(error_responses):
    message = assert_error_body(error_responses["access-denied"], 502)["message"]
    assert "access" in message.lower(), message
    assert "anthropic.claude-3-haiku-20240307-v1:0" in message, f"names the model to enable: {message}"


def test_failed_requests_are_not_metered(stack, resources, api_url, error_responses, tenant_user):
    good = chat(api_url, tenant_user.token, {"prompt": "this one works"})
    assert good.status_code == 200, good.text
    wait_usage_line(stack.api, request_id_of(good))
    time.sleep(0.3)
    for name, response in error_responses.items():
        assert usage_lines_for(stack.api, request_id_of(response)) == [], f"[fake:{name}] produced a usage line"
    assert counter_sums(resources, tenant_user.tenant_id, "DAY#")["request_count"] == 1


def test_a_slow_model_is_cut_off_at_bedrock_timeout(stack, user_factory):
    api = stack.start_api("api-timeout-1s", BEDROCK_TIMEOUT_MS="1000")
    user = user_factory.create(new_tenant_id("timeout"))

    fast = chat(api.url, user.token, {"prompt": "quick [fake:delay=100]"})
    assert fast.status_code == 200, fast.text

    started = time.monotonic()
    slow = chat(api.url, user.token, {"prompt": "slow [fake:delay=3000]"})
    elapsed = time.monotonic() - started

    assert_error_body(slow, 504)
    assert elapsed < 2.5, f"the answer took {elapsed:.1f}s; the timeout is 1s"
    wait_usage_line(api, request_id_of(fast))
    time.sleep(0.3)
    assert usage_lines_for(api, request_id_of(slow)) == []
