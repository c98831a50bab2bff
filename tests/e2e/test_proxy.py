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

anthropic = pytest.importorskip("anthropic", reason="pip install -r scripts/requirements-proxy.txt")

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
        assert response.status_code == 401, response.text
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


def test_overloaded_falls_back_only_when_configured(stack, proxy_tables, fake_anthropic, proxy, caller):
    wide = stack.start_api("api-proxy-fallback-5xx", **proxy_env(*proxy_tables, fake_anthropic.url, FALLBACK_ON="429,529,5xx"))
    prompt = f"busy upstream [fake:overloaded] {marker()}"
    message, headers = ask(sdk(wide, caller.key), prompt)
    assert message.content[0].text == reply(prompt, "fake-bedrock")
    assert headers["x-gateway-fallback"] == "overloaded"
    line = wait_usage_line(wide, headers["x-request-id"])
    assert_line(line, caller, "bedrock", BEDROCK_MODEL, tokens(prompt, "fake-bedrock"))
    _, after = ask(sdk(wide, caller.key), "a 529 is not remembered")
    assert after["x-gateway-upstream"] == "anthropic", "only 429s go into the rate-limit memory"


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
