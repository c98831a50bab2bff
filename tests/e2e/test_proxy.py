"""The Claude-compatible proxy (`POST /v1/messages`) end to end, with the official `anthropic` SDK as the
client: gateway keys, plain and streamed answers through the (fake) Anthropic API, 429 -> Bedrock fallback
(real, forced, remembered), exact usage lines and counters on both paths, a client that hangs up mid-stream,
prompt caching, count_tokens, passthrough credentials, and the Anthropic error shapes.

Each API process here is the same `local-stack api` binary with the proxy's variables set; they share moto,
the fake Bedrock and one fake Anthropic. Fake rules: see crates/local-stack/src/fake_anthropic.rs.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
import requests

import anthropic  # scripts/requirements-proxy.txt, installed into .venv by scripts/test

from proxy_stack import (  # noqa: E402
    BEDROCK_MODEL,
    LOCAL_PROVIDER_KEY,
    MODEL,
    UNMAPPED_MODEL,
    create_proxy_tables,
    proxy_env,
    start_fake_anthropic,
)
from support import counter_items, new_tenant_id, periods_of, poll, usage_lines_for, wait_usage_line  # noqa: E402

# The SDK warns that the test model nears its end of life; the fakes do not care which model it is.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


# ------------------------------------------------------------------ the fakes' rules (fake_anthropic.rs)

def reply(prompt: str, speaker: str, max_tokens: int = 1024) -> str:
    return " ".join([speaker, "says:", *prompt.split()[:32]][:max_tokens])


def tokens(prompt: str, speaker: str, max_tokens: int = 1024, system: str = "") -> dict[str, int]:
    return {
        "input_tokens": max(1, len(prompt.split()) + len(system.split())),
        "output_tokens": len(reply(prompt, speaker, max_tokens).split()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def proxy_tables(stack):
    return create_proxy_tables(stack.resources)


@pytest.fixture(scope="module")
def fake_anthropic(stack):
    fake = start_fake_anthropic(stack.run_dir)
    stack.extra_apis.append(fake)  # stopped with the stack
    return fake


@pytest.fixture(scope="module")
def proxy(stack, proxy_tables, fake_anthropic):
    """Managed mode, fallback on 429, rate-limit memory on."""
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy", **proxy_env(key_table, limit_table, fake_anthropic.url))


@pytest.fixture(scope="module")
def forced_proxy(stack, proxy_tables, fake_anthropic):
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy-forced", **proxy_env(
        key_table, limit_table, fake_anthropic.url, FORCE_RATE_LIMIT_TEST="true", FORCE_RATE_LIMIT_RETRY_AFTER="5"))


@pytest.fixture(scope="module")
def passthrough_proxy(stack, proxy_tables, fake_anthropic):
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy-passthrough", **proxy_env(
        key_table, limit_table, fake_anthropic.url, ANTHROPIC_CREDENTIAL_MODE="passthrough", ANTHROPIC_API_KEY=None))


@pytest.fixture(scope="module")
def wide_proxy(stack, proxy_tables, fake_anthropic):
    """Fallback on 429, 529 and 5xx."""
    return stack.start_api("api-proxy-fallback-5xx", **proxy_env(*proxy_tables, fake_anthropic.url, FALLBACK_ON="429,529,5xx"))


class Caller:
    """A Cognito user of a fresh tenant with one gateway key."""

    def __init__(self, user, key: dict):
        self.user = user
        self.tenant_id = user.tenant_id
        self.key = key["key"]
        self.key_id = key["id"]


def create_key(api_url: str, id_token: str, name: str | None = None) -> requests.Response:
    body = {} if name is None else {"name": name}
    return requests.post(f"{api_url}/v1/keys", json=body, headers={"Authorization": f"Bearer {id_token}"}, timeout=30)


@pytest.fixture
def caller(proxy, user_factory) -> Caller:
    user = user_factory.create(new_tenant_id("proxy"))
    response = create_key(proxy.url, user.token, "laptop")
    assert response.status_code == 201, response.text
    return Caller(user, response.json())


def sdk(api, key: str, **options) -> anthropic.Anthropic:
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", 60)
    return anthropic.Anthropic(base_url=api.url, api_key=key, **options)


def ask(client: anthropic.Anthropic, prompt: str, model: str = MODEL, max_tokens: int = 1024, **fields):
    """messages.create; returns (message, response headers)."""
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}], **fields)
    return raw.parse(), raw.headers


def client_version(api, caller) -> str:
    """The anthropic-version header this SDK sends."""
    return sdk(api, caller.key).default_headers["anthropic-version"]


def fake_requests(fake_url: str, contains: str) -> list[dict]:
    return requests.get(f"{fake_url}/fake/requests", params={"contains": contains}, timeout=10).json()["requests"]


def assert_line(line: dict, caller: Caller, request_type: str, model_id: str, expected: dict[str, int], user_id=None):
    assert line["event"] == "token_usage"
    assert line["tenant_id"] == caller.tenant_id, "the tenant comes from the gateway key"
    assert line["user_id"] == (user_id or caller.user.sub)
    assert (line["request_type"], line["model_id"]) == (request_type, model_id), line
    assert {name: line.get(name, 0) for name in TOKEN_FIELDS} == expected, line
    assert line["total_tokens"] == sum(expected.values()), line
    assert "metering_error" not in line, line


def counter_sums(resources, tenant_id: str, sk_prefix: str) -> dict[str, int]:
    sums = dict.fromkeys((*TOKEN_FIELDS, "total_tokens", "request_count"), 0)
    for item in counter_items(resources, tenant_id, sk_prefix):
        for name in sums:
            sums[name] += int(item.get(name, 0))
    return sums


def expected_counters(lines: list[dict]) -> dict[str, int]:
    sums = {name: sum(line.get(name, 0) for line in lines) for name in (*TOKEN_FIELDS, "total_tokens")}
    sums["request_count"] = len(lines)
    return sums


def assert_counters(resources, tenant_id: str, lines: list[dict], request_type: str, model_id: str):
    day, week = periods_of(lines[0])
    expected = expected_counters(lines)
    for prefix in (f"DAY#{day}#{request_type}#{model_id}", f"WEEK#{week}#{request_type}#{model_id}"):
        found = poll("counters", lambda: counter_sums(resources, tenant_id, prefix), lambda s: s == expected)
        assert found == expected, prefix


def assert_anthropic_error(response: requests.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


# ------------------------------------------------------------------ keys

def test_keys_are_created_listed_and_revoked(stack, proxy, proxy_tables, user_factory):
    user = user_factory.create(new_tenant_id("keys"))
    created = create_key(proxy.url, user.token, "ci runner")
    assert created.status_code == 201, created.text
    assert created.headers.get("cache-control") == "no-store"
    key = created.json()
    assert key["key"].startswith("bmk_") and key["tenant_id"] == user.tenant_id and key["user_id"] == user.sub
    assert key["name"] == "ci runner" and key["created_at"].endswith("Z")

    item = stack.resources.client("dynamodb").get_item(
        TableName=proxy_tables[0], Key={"pk": {"S": f"KEY#{key['id']}"}}, ConsistentRead=True)["Item"]
    assert item["key_hash"]["S"] == hashlib.sha256(key["key"].encode()).hexdigest()
    assert key["key"] not in json.dumps(item), "the key itself is never stored"
    assert item["tenant_id"]["S"] == user.tenant_id and item["user_id"]["S"] == user.sub

    listed = requests.get(f"{proxy.url}/v1/keys", headers={"Authorization": f"Bearer {user.token}"}, timeout=10)
    assert listed.status_code == 200, listed.text
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
    assert key["key"] not in listed.text and "key_hash" not in listed.text

    message, _ = ask(sdk(proxy, key["key"]), "works before revocation")
    assert message.content[0].text.startswith("fake-anthropic says:")

    other = user_factory.create(user.tenant_id)
    stolen = requests.delete(f"{proxy.url}/v1/keys/{key['id']}", headers={"Authorization": f"Bearer {other.token}"}, timeout=10)
    assert_anthropic_error(stolen, 404, "not_found_error")

    revoked = requests.delete(f"{proxy.url}/v1/keys/{key['id']}", headers={"Authorization": f"Bearer {user.token}"}, timeout=10)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"]
    again = requests.delete(f"{proxy.url}/v1/keys/{key['id']}", headers={"Authorization": f"Bearer {user.token}"}, timeout=10)
    assert_anthropic_error(again, 404, "not_found_error")
    listed = requests.get(f"{proxy.url}/v1/keys", headers={"Authorization": f"Bearer {user.token}"}, timeout=10)
    assert listed.json()["data"] == []

    with pytest.raises(anthropic.AuthenticationError) as refused:
        ask(sdk(proxy, key["key"]), "refused after revocation")
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_keys_need_an_id_token(proxy):
    for method in ("GET", "POST"):
        response = requests.request(method, f"{proxy.url}/v1/keys", timeout=10)
        assert_anthropic_error(response, 401, "authentication_error")
        assert response.headers.get("x-request-id"), dict(response.headers)
    response = requests.post(f"{proxy.url}/v1/keys", headers={"Authorization": "Bearer not-a-jwt"}, timeout=10)
    assert_anthropic_error(response, 401, "authentication_error")


# ------------------------------------------------------------------ through Anthropic

def test_a_plain_answer_through_anthropic_is_metered(stack, resources, proxy, fake_anthropic, caller):
    prompt = f"Hello metering proxy {marker()}"
    message, headers = ask(sdk(proxy, caller.key), prompt)

    assert message.content[0].text == reply(prompt, "fake-anthropic")
    assert message.usage.input_tokens == 4 and message.usage.output_tokens == 6
    assert headers["x-gateway-upstream"] == "anthropic"
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert_line(line, caller, "anthropic", MODEL, tokens(prompt, "fake-anthropic"))
    assert_counters(resources, caller.tenant_id, [line], "anthropic", MODEL)

    seen = fake_requests(fake_anthropic.url, prompt.split()[-1])
    assert len(seen) == 1
    assert seen[0]["x-api-key"] == LOCAL_PROVIDER_KEY, "managed mode: the provider's own key goes upstream"
    assert seen[0]["x-gateway-key"] is None and caller.key not in json.dumps(seen[0])
    assert seen[0]["anthropic-version"] == client_version(proxy, caller), "the client's API version goes upstream"


def test_a_streamed_answer_through_anthropic_is_metered(resources, proxy, caller):
    prompt = f"stream these words please {marker()}"
    with sdk(proxy, caller.key).messages.stream(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
        assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert text == reply(prompt, "fake-anthropic")
    assert final.usage.output_tokens == len(text.split()) and final.stop_reason == "end_turn"
    line = wait_usage_line(proxy, request_id)
    assert_line(line, caller, "anthropic", MODEL, tokens(prompt, "fake-anthropic"))
    assert_counters(resources, caller.tenant_id, [line], "anthropic", MODEL)


def test_the_metered_user_is_the_keys_owner_and_the_client_user_is_kept_apart(proxy, caller):
    _, headers = ask(sdk(proxy, caller.key), "who am i", metadata={"user_id": "user_ab12_account_77_session_99"})
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert (line["user_id"], line["client_user_id"]) == (caller.user.sub, "77")
    _, headers = ask(sdk(proxy, caller.key, default_query={"claude-code-user": "alice@example.com"}), "who am i")
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert (line["user_id"], line["client_user_id"]) == (caller.user.sub, "alice@example.com")
    _, headers = ask(sdk(proxy, caller.key), "who am i")
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert line["user_id"] == caller.user.sub and "client_user_id" not in line


def test_anthropic_client_errors_pass_through_unmetered(proxy, caller):
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(sdk(proxy, caller.key), "please refuse [fake:invalid]")
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    request_id = refused.value.response.headers["x-request-id"]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        ask(sdk(proxy, caller.key), "busy [fake:overloaded]")
    assert overloaded.value.status_code == 529, "529 does not fall back unless FALLBACK_ON says so"
    assert overloaded.value.body["error"]["type"] == "overloaded_error", overloaded.value.body
    assert overloaded.value.response.headers["x-gateway-upstream"] == "anthropic"
    time.sleep(0.5)
    assert usage_lines_for(proxy, request_id) == []


# ------------------------------------------------------------------ 429 -> Bedrock

def test_a_429_is_answered_by_bedrock_with_a_cleaned_body(stack, resources, proxy, caller):
    prompt = f"fall back please [fake:rate-limit=30] {marker()}"
    client = sdk(proxy, caller.key)
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=1024, metadata={"user_id": "user_fb_account_1_session_2"},
        messages=[
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": [{"type": "text", "text": ""}]},
            {"role": "user", "content": prompt},
        ])
    message, headers = raw.parse(), raw.headers

    assert message.content[0].text == reply(f"earlier question {prompt}", "fake-bedrock")
    assert headers["x-gateway-upstream"] == "bedrock" and headers["x-gateway-fallback"] == "rate_limited"
    line = wait_usage_line(proxy, headers["x-request-id"])
    expected = tokens(f"earlier question {prompt}", "fake-bedrock")
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, expected)
    assert (line["client_user_id"], line["requested_model_id"]) == ("1", MODEL)
    assert_counters(resources, caller.tenant_id, [line], "bedrock", BEDROCK_MODEL)

    sent = fake_requests(stack.fake_bedrock.url, prompt.split()[-1])
    assert len(sent) == 1 and sent[0]["model_id"] == BEDROCK_MODEL
    body = sent[0]["body"]
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert not {"model", "metadata", "stream"} & set(body), body
    assert [m["role"] for m in body["messages"]] == ["user", "user"], "the empty assistant message was dropped"


def test_a_streamed_429_is_streamed_by_bedrock(resources, proxy, caller):
    prompt = f"stream from bedrock [fake:rate-limit=30] {marker()}"
    with sdk(proxy, caller.key).messages.stream(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == reply(prompt, "fake-bedrock") and final.stop_reason == "end_turn"
    assert headers["x-gateway-upstream"] == "bedrock"
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(prompt, "fake-bedrock"))
    assert_counters(resources, caller.tenant_id, [line], "bedrock", BEDROCK_MODEL)


def test_overloaded_falls_back_only_when_configured(wide_proxy, caller):
    wide = wide_proxy
    prompt = f"busy upstream [fake:overloaded] {marker()}"
    message, headers = ask(sdk(wide, caller.key), prompt)
    assert message.content[0].text == reply(prompt, "fake-bedrock")
    assert headers["x-gateway-fallback"] == "overloaded"
    line = wait_usage_line(wide, headers["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(prompt, "fake-bedrock"))
    _, after = ask(sdk(wide, caller.key), "a 529 is not remembered")
    assert after["x-gateway-upstream"] == "anthropic", "only 429s go into the rate-limit memory"


def stream_text(api, caller: Caller, prompt: str) -> tuple[str, dict]:
    with sdk(api, caller.key).messages.stream(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt}]) as stream:
        return "".join(stream.text_stream), stream.response.headers


def test_a_stream_that_opens_with_overloaded_falls_back_before_it_is_committed(wide_proxy, proxy, fake_anthropic, caller):
    # GIVEN Anthropic accepts the stream (200) and its first event is an overloaded_error, before message_start
    prompt = f"overloaded once streaming [fake:stream-overloaded] {marker()}"
    # WHEN the policy covers 529 THEN Bedrock answers, as for a 529, and the request is metered once, as Bedrock
    text, headers = stream_text(wide_proxy, caller, prompt)
    assert text == reply(prompt, "fake-bedrock")
    assert (headers["x-gateway-upstream"], headers["x-gateway-fallback"]) == ("bedrock", "overloaded")
    assert len(fake_requests(fake_anthropic.url, prompt)) == 1, "Anthropic was asked first"
    line = wait_usage_line(wide_proxy, headers["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(prompt, "fake-bedrock"))
    assert [l["request_id"] for l in wide_proxy.usage_lines() if l["tenant_id"] == caller.tenant_id] == [line["request_id"]]
    # WHEN the policy does not cover 529 THEN the stream reaches the client as Anthropic sent it, unmetered
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        stream_text(proxy, caller, f"not covered [fake:stream-overloaded] {marker()}")
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert overloaded.value.response.headers["x-gateway-upstream"] == "anthropic"


def test_an_unmapped_model_gets_the_original_429(proxy, caller):
    with pytest.raises(anthropic.RateLimitError) as limited:
        ask(sdk(proxy, caller.key), "no fallback [fake:rate-limit=9]", model=UNMAPPED_MODEL)
    assert limited.value.response.headers["retry-after"] == "9"
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    time.sleep(0.3)
    assert usage_lines_for(proxy, limited.value.response.headers["x-request-id"]) == []


def test_the_rate_limit_memory_skips_anthropic_while_in_force(stack, proxy, proxy_tables, fake_anthropic, caller, user_factory):
    client = sdk(proxy, caller.key)
    _, first = ask(client, "hit the limit [fake:rate-limit=30]")
    assert first["x-gateway-fallback"] == "rate_limited"

    item = stack.resources.client("dynamodb").get_item(
        TableName=proxy_tables[1], Key={"pk": {"S": f"LIMIT#USER#{caller.tenant_id}#{caller.user.sub}"}})["Item"]
    assert item["retry_after_seconds"]["N"] == "30"
    assert int(item["limited_until"]["N"]) - time.time() > 20 and int(item["ttl"]["N"]) > int(item["limited_until"]["N"])

    tag = marker()
    message, second = ask(client, f"an ordinary question {tag}")
    assert second["x-gateway-fallback"] == "remembered"
    assert message.content[0].text.startswith("fake-bedrock says:")
    assert fake_requests(fake_anthropic.url, tag) == [], "Anthropic was not asked while the 429 is in force"
    line = wait_usage_line(proxy, second["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(f"an ordinary question {tag}", "fake-bedrock"))

    other_user = user_factory.create(caller.tenant_id)
    other_key = create_key(proxy.url, other_user.token).json()["key"]
    _, others = ask(sdk(proxy, other_key), "someone else")
    assert others["x-gateway-upstream"] == "anthropic", "the memory is per user by default"


def test_an_expired_limit_sends_requests_to_anthropic_again(proxy, caller):
    client = sdk(proxy, caller.key)
    _, first = ask(client, "short limit [fake:rate-limit=1]")
    assert first["x-gateway-fallback"] == "rate_limited"
    time.sleep(1.5)
    _, later = ask(client, "after the limit")
    assert later["x-gateway-upstream"] == "anthropic"


def test_forced_rate_limit_mode_serves_everything_from_bedrock(forced_proxy, fake_anthropic, caller):
    tag = marker()
    message, headers = ask(sdk(forced_proxy, caller.key), f"forced {tag}")
    assert message.content[0].text == reply(f"forced {tag}", "fake-bedrock")
    assert headers["x-gateway-fallback"] == "forced"
    assert fake_anthropic and fake_requests(fake_anthropic.url, tag) == []
    line = wait_usage_line(forced_proxy, headers["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(f"forced {tag}", "fake-bedrock"))

    with pytest.raises(anthropic.RateLimitError) as limited:
        ask(sdk(forced_proxy, caller.key), "forced and unmapped", model=UNMAPPED_MODEL)
    assert limited.value.response.headers["retry-after"] == "5"

    start_lines = [line for line in forced_proxy.stderr_tail(400).splitlines() if "claude proxy configured" in line]
    assert len(start_lines) == 1, "the start-up log states the modes once"
    modes = json.loads(start_lines[0])["fields"]
    assert modes["forced_429"].startswith("ON") and modes["fallback"].startswith("on") and modes["tracking"].startswith("on")


# ------------------------------------------------------------------ a client that hangs up

@pytest.mark.parametrize("upstream", ["anthropic", "bedrock"])
def test_a_client_that_hangs_up_mid_stream_is_metered_for_what_was_generated(proxy, caller, upstream):
    directive = "[fake:rate-limit=30] " if upstream == "bedrock" else ""
    prompt = f"{directive}[fake:stream-delay=100] one two three four five six seven eight {marker()}"
    speaker = f"fake-{upstream}"
    body = {"model": MODEL, "max_tokens": 1024, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with requests.post(f"{proxy.url}/v1/messages", json=body, stream=True, timeout=30,
                       headers={"x-api-key": caller.key, "anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith(b"data:") and b"text_delta" in line:
                break  # the first words arrived: hang up
    started = time.monotonic()
    line = wait_usage_line(proxy, request_id, timeout=20)
    assert time.monotonic() - started < 15
    assert_line(line, caller, upstream, MODEL if upstream == "anthropic" else BEDROCK_MODEL, tokens(prompt, speaker))


# ------------------------------------------------------------------ errors in Anthropic's shape

def test_bad_missing_and_malformed_requests_get_anthropic_errors(proxy, caller):
    for key in ("bmk_" + "0" * 16 + "_" + "1" * 64, "sk-ant-not-a-gateway-key"):
        with pytest.raises(anthropic.AuthenticationError) as refused:
            ask(sdk(proxy, key), "hello")
        assert refused.value.body["error"]["type"] == "authentication_error"

    url = f"{proxy.url}/v1/messages"
    assert_anthropic_error(requests.post(url, json={"model": MODEL}, timeout=10), 401, "authentication_error")
    headers = {"x-api-key": caller.key, "content-type": "application/json"}
    body = assert_anthropic_error(requests.post(url, data="{not json", headers=headers, timeout=10), 400, "invalid_request_error")
    assert body["request_id"]
    assert_anthropic_error(requests.post(url, json={"messages": []}, headers=headers, timeout=10), 400, "invalid_request_error")
    assert_anthropic_error(requests.get(url, headers=headers, timeout=10), 405, "invalid_request_error")
    with pytest.raises(anthropic.BadRequestError):
        sdk(proxy, caller.key).messages.create(model=MODEL, max_tokens=10, messages="not a list")  # type: ignore[arg-type]


# ------------------------------------------------------------------ passthrough credentials

def test_passthrough_sends_the_users_own_key_and_meters_the_gateway_keys_tenant(passthrough_proxy, fake_anthropic, caller):
    own_key = f"sk-ant-user-own-{marker()}"
    client = sdk(passthrough_proxy, own_key, default_headers={"x-gateway-key": caller.key})
    prompt = f"my own quota {marker()}"
    message, headers = ask(client, prompt)
    assert message.content[0].text == reply(prompt, "fake-anthropic")
    seen = fake_requests(fake_anthropic.url, prompt.split()[-1])
    assert len(seen) == 1
    # The SDK sends its key as `Authorization: Bearer` (older ones as x-api-key): either goes on untouched.
    assert own_key in (seen[0]["x-api-key"], (seen[0]["authorization"] or "").removeprefix("Bearer ")), seen[0]
    assert seen[0]["x-gateway-key"] is None and caller.key not in json.dumps(seen[0])
    line = wait_usage_line(passthrough_proxy, headers["x-request-id"])
    assert_line(line, caller, "anthropic", MODEL, tokens(prompt, "fake-anthropic"))
    assert own_key not in passthrough_proxy.stdout_text() + passthrough_proxy.stderr_tail(2000)

    _, fallback = ask(client, "own quota exhausted [fake:rate-limit=30]")
    assert fallback["x-gateway-upstream"] == "bedrock", "Bedrock is the company's fallback"

    with pytest.raises(anthropic.AuthenticationError):
        ask(sdk(passthrough_proxy, own_key), "no gateway key")


# ------------------------------------------------------------------ count_tokens and prompt caching

def test_count_tokens_goes_to_anthropic_or_bedrock_and_is_not_metered(proxy, forced_proxy, caller):
    messages = [{"role": "user", "content": "count these five words"}]
    for api, upstream in ((proxy, "anthropic"), (forced_proxy, "bedrock")):
        raw = sdk(api, caller.key).messages.with_raw_response.count_tokens(model=MODEL, messages=messages, system="be brief")
        assert raw.parse().input_tokens == 6
        assert raw.headers["x-gateway-upstream"] == upstream
        time.sleep(0.3)
        assert usage_lines_for(api, raw.headers["x-request-id"]) == []


@pytest.mark.parametrize("upstream", ["anthropic", "bedrock"])
def test_prompt_cache_writes_and_reads_are_metered_apart(stack, resources, proxy, caller, upstream):
    directive = " [fake:rate-limit=1]" if upstream == "bedrock" else ""
    context = f"a long shared context of ten words {marker()} to cache"
    system = [{"type": "text", "text": context, "cache_control": {"type": "ephemeral"}}]
    client = sdk(proxy, caller.key)
    lines = []
    for _ in range(2):
        _, headers = ask(client, f"question{directive}", system=system)
        assert headers["x-gateway-upstream"] == upstream
        lines.append(wait_usage_line(proxy, headers["x-request-id"]))
        time.sleep(1.1 if upstream == "bedrock" else 0)  # let the 1 s limit lapse: each request hits the 429 again
    question_words = len(f"question{directive}".split())
    model_id = MODEL if upstream == "anthropic" else BEDROCK_MODEL
    speaker = f"fake-{upstream}"
    output = len(reply(f"question{directive}", speaker).split())
    assert_line(lines[0], caller, upstream, model_id, {"input_tokens": question_words, "output_tokens": output,
                                                       "cache_creation_input_tokens": 10, "cache_read_input_tokens": 0})
    assert_line(lines[1], caller, upstream, model_id, {"input_tokens": question_words, "output_tokens": output,
                                                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10})
    assert_counters(resources, caller.tenant_id, lines, upstream, model_id)
    if upstream == "bedrock":
        sent = fake_requests(stack.fake_bedrock.url, context.split()[-3])
        assert sent and all(s["body"]["system"] == system for s in sent), "cache_control reaches Bedrock"


# ------------------------------------------------------------------ fidelity (issue 11, item 4)

def sse_events(response: requests.Response) -> list[tuple[str, dict]]:
    events, name = [], ""
    for raw in response.iter_lines():
        line = raw.decode()
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def stream_raw(api, key: str, prompt: str, headers: dict | None = None, **fields) -> requests.Response:
    body = {"model": MODEL, "max_tokens": 1024, "stream": True, "messages": [{"role": "user", "content": prompt}], **fields}
    return requests.post(f"{api.url}/v1/messages", json=body, stream=True, timeout=30,
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01", **(headers or {})})


def estimated_tokens(delivered_text: str) -> int:
    """The proxy's estimate for content a cut stream delivered: characters / 4, rounded up."""
    return -(-len(delivered_text) // 4)


@pytest.mark.parametrize("upstream", ["anthropic", "bedrock"])
def test_a_stream_without_message_stop_ends_with_an_error_event_and_is_metered_as_estimated(proxy, forced_proxy, caller, upstream):
    api = proxy if upstream == "anthropic" else forced_proxy
    prompt = f"alpha beta gamma delta epsilon {marker()} [fake:stream-cut=3]"
    with stream_raw(api, caller.key, prompt) as response:
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        events = sse_events(response)
    names = [name for name, _ in events]
    assert "message_stop" not in names and names[-1] == "error", names
    assert events[-1][1]["error"]["type"] == "api_error"
    delivered = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert delivered == f"fake-{upstream} says: alpha"
    line = wait_usage_line(api, request_id)
    assert line["usage_estimated"] is True
    assert line["input_tokens"] == tokens(prompt, f"fake-{upstream}")["input_tokens"]
    assert line["output_tokens"] == max(1, estimated_tokens(delivered)) > 1, "more than message_start's count of 1"


def test_an_upstream_error_mid_stream_reaches_the_sdk_and_the_partial_answer_is_metered(proxy, caller):
    prompt = f"one two three four {marker()} [fake:stream-error=2]"
    with pytest.raises(anthropic.APIStatusError) as broken:
        with sdk(proxy, caller.key).messages.stream(model=MODEL, max_tokens=100,
                                                     messages=[{"role": "user", "content": prompt}]) as stream:
            for _ in stream.text_stream:
                pass
    assert broken.value.body["error"]["type"] == "overloaded_error"
    lines = poll("line", lambda: [l for l in proxy.usage_lines() if l["tenant_id"] == caller.tenant_id], bool)
    assert len(lines) == 1 and lines[0]["usage_estimated"] is True
    assert lines[0]["output_tokens"] == max(1, estimated_tokens("fake-anthropic says:"))


def test_complete_streams_are_exact(proxy, caller):
    with stream_raw(proxy, caller.key, f"plain words {marker()}") as response:
        request_id = response.headers["x-request-id"]
        assert [name for name, _ in sse_events(response)][-1] == "message_stop"
    assert "usage_estimated" not in wait_usage_line(proxy, request_id)


def test_every_answer_carries_request_ids_and_the_upstream(proxy, forced_proxy, caller):
    refused = requests.post(f"{proxy.url}/v1/messages", json={"model": MODEL}, timeout=10)
    assert refused.headers["request-id"] == refused.headers["x-request-id"]
    assert refused.headers["x-gateway-upstream"] == "gateway"
    with pytest.raises(anthropic.AuthenticationError) as error:
        ask(sdk(proxy, "sk-ant-not-a-gateway-key"), "hello")
    assert error.value.request_id, "the SDK reports the gateway's request id"
    _, from_anthropic = ask(sdk(proxy, caller.key), f"hi {marker()}")
    assert from_anthropic["x-gateway-upstream"] == "anthropic"
    assert from_anthropic["request-id"].startswith("req_fake_"), "Anthropic's own request id is kept"
    assert from_anthropic["x-request-id"] and from_anthropic["x-request-id"] != from_anthropic["request-id"]
    raw = sdk(forced_proxy, caller.key).messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": f"hi {marker()}"}])
    assert raw.parse()._request_id == raw.headers["x-request-id"], "Bedrock answers carry request-id too"
    assert (raw.headers["x-gateway-upstream"], raw.headers["x-gateway-fallback"]) == ("bedrock", "forced")


@pytest.mark.parametrize("stream", [False, True])
def test_a_bedrock_failure_during_a_fallback_answers_with_anthropics_429(proxy, caller, stream):
    prompt = f"hello {marker()} [fake:rate-limit=11] [fake:validation]"
    body = {"model": MODEL, "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    response = requests.post(f"{proxy.url}/v1/messages", json=body, timeout=30,
                             headers={"x-api-key": caller.key, "anthropic-version": "2023-06-01"})
    error = assert_anthropic_error(response, 429, "rate_limit_error")
    assert error["request_id"].startswith("req_fake_"), "Anthropic's own 429 body"
    assert response.headers["retry-after"] == "11"
    assert response.headers["x-gateway-upstream"] == "bedrock"
    assert response.headers["x-gateway-fallback"] == "rate_limited"
    assert response.headers["x-gateway-fallback-error"] == "invalid_request_error"
    assert response.headers["x-request-id"] and response.headers["request-id"]


def test_a_remembered_429_with_a_failing_bedrock_stays_a_retryable_429(proxy, caller):
    ask(sdk(proxy, caller.key), f"first {marker()} [fake:rate-limit=40]")
    with pytest.raises(anthropic.RateLimitError) as limited:
        ask(sdk(proxy, caller.key), f"second {marker()} [fake:validation]")
    headers = limited.value.response.headers
    assert (headers["x-gateway-fallback"], headers["x-gateway-upstream"]) == ("remembered", "bedrock")
    assert 1 <= int(headers["retry-after"]) <= 40


def test_body_fields_betas_and_system_messages_reach_bedrock_consistently(stack, forced_proxy, caller):
    tag = marker()
    body = {
        "model": MODEL, "max_tokens": 100,
        "system": [{"type": "text", "text": "base rules"}],
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "messages": [
            {"role": "user", "content": f"question {tag}"},
            {"role": "system", "content": [{"type": "text", "text": "environment notes"}]},
        ],
    }
    betas = "claude-code-20250219,context-management-2025-06-27,effort-2025-11-24"
    response = requests.post(f"{forced_proxy.url}/v1/messages", json=body, timeout=30, headers={
        "x-api-key": caller.key, "anthropic-version": "2023-06-01", "anthropic-beta": betas})
    assert response.status_code == 200, response.text
    seen = requests.get(f"{stack.fake_bedrock.url}/fake/requests", params={"contains": tag}, timeout=10).json()["requests"]
    sent = seen[-1]["body"]
    assert [message["role"] for message in sent["messages"]] == ["user"]
    assert [block["text"] for block in sent["system"]] == ["base rules", "environment notes"]
    assert sent["context_management"] == body["context_management"], "its beta is one Bedrock accepts"
    assert "output_config" not in sent
    assert sent["anthropic_beta"] == ["context-management-2025-06-27"], "effort- went with output_config"


def test_unknown_routes_under_the_proxy_answer_in_anthropics_shape(proxy, caller):
    headers = {"x-api-key": caller.key, "anthropic-version": "2023-06-01"}
    for method, path in (("POST", "/v1/messages/batches"), ("GET", "/v1/models"), ("POST", "/v1/complete")):
        response = requests.request(method, f"{proxy.url}{path}", headers=headers, json={}, timeout=10)
        assert_anthropic_error(response, 404, "not_found_error")
        assert response.headers["request-id"] and response.headers["x-gateway-upstream"] == "gateway"


def test_the_strict_fake_anthropics_refusals_pass_through(proxy, caller):
    url = f"{proxy.url}/v1/messages"
    headers = {"x-api-key": caller.key, "anthropic-version": "2023-06-01"}
    missing = requests.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, headers=headers, timeout=10)
    assert assert_anthropic_error(missing, 400, "invalid_request_error")["error"]["message"] == "max_tokens: Field required"
    assert missing.headers["x-gateway-upstream"] == "anthropic"
    with pytest.raises(anthropic.NotFoundError):
        ask(sdk(proxy, caller.key), "hello", model="claude-nonexistent-9")
    with pytest.raises(anthropic.BadRequestError):
        sdk(proxy, caller.key).messages.create(model=MODEL, max_tokens=10,
                                               messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}])
    assert not [l for l in proxy.usage_lines() if l["tenant_id"] == caller.tenant_id], "refusals are not metered"


@pytest.fixture(scope="module")
def aborting_proxy(stack, proxy_tables, fake_anthropic):
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy-abort", **proxy_env(key_table, limit_table, fake_anthropic.url, ON_CLIENT_DISCONNECT="abort"))


def test_on_client_disconnect_abort_stops_reading_and_meters_an_estimate(aborting_proxy, caller):
    prompt = f"[fake:stream-delay=300] {' '.join(f'w{i}' for i in range(30))} {marker()}"
    with stream_raw(aborting_proxy, caller.key, prompt) as response:
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith(b"data:") and b"text_delta" in line:
                break
    line = wait_usage_line(aborting_proxy, request_id, timeout=20)
    assert line["usage_estimated"] is True
    full_output = tokens(prompt, "fake-anthropic")["output_tokens"]
    assert 1 <= line["output_tokens"] < full_output, "aborted early: less than the whole answer"


# ------------------------------------------------------------------ RATE_LIMIT_SCOPE

@pytest.mark.parametrize("scope", ["tenant", "deployment"])
def test_the_rate_limit_scope_decides_whose_429_diverts_whom(stack, fake_anthropic, user_factory, scope):
    # GIVEN a proxy with RATE_LIMIT_SCOPE=<scope> (its own tables), two users of one tenant and one of another
    key_table, limit_table = create_proxy_tables(stack.resources)
    scoped = stack.start_api(f"api-proxy-scope-{scope}", **proxy_env(key_table, limit_table, fake_anthropic.url,
                                                                    RATE_LIMIT_SCOPE=scope))

    def caller_of(tenant_id: str) -> Caller:
        user = user_factory.create(tenant_id)
        created = create_key(scoped.url, user.token, scope)
        assert created.status_code == 201, created.text
        return Caller(user, created.json())

    hit = caller_of(new_tenant_id("scope"))
    colleague = caller_of(hit.tenant_id)
    outsider = caller_of(new_tenant_id("scope-other"))
    # WHEN the first user hits Anthropic's 429
    _, first = ask(sdk(scoped, hit.key), "hit the limit [fake:rate-limit=30]")
    assert first["x-gateway-fallback"] == "rate_limited"
    expected_pk = f"LIMIT#TENANT#{hit.tenant_id}" if scope == "tenant" else "LIMIT#DEPLOYMENT"
    item = stack.resources.client("dynamodb").get_item(TableName=limit_table, Key={"pk": {"S": expected_pk}})
    assert item.get("Item", {}).get("retry_after_seconds") == {"N": "30"}, item
    # THEN a colleague of the same tenant goes straight to Bedrock, without asking Anthropic
    tag = marker()
    message, second = ask(sdk(scoped, colleague.key), f"a colleague asks {tag}")
    assert second["x-gateway-fallback"] == "remembered", dict(second)
    assert message.content[0].text.startswith("fake-bedrock says:")
    assert fake_requests(fake_anthropic.url, tag) == []
    # AND another tenant is diverted only when the whole deployment shares the quota
    tag = marker()
    message, third = ask(sdk(scoped, outsider.key), f"another tenant asks {tag}")
    if scope == "deployment":
        assert third["x-gateway-fallback"] == "remembered", dict(third)
        assert fake_requests(fake_anthropic.url, tag) == []
    else:
        assert third["x-gateway-upstream"] == "anthropic" and "x-gateway-fallback" not in third, dict(third)
        assert message.content[0].text.startswith("fake-anthropic says:")
        assert len(fake_requests(fake_anthropic.url, tag)) == 1
