"""The Claude proxy's model resolution, client user ids, key-owner attribution and 429 memory, end to end
against the local stack (moto, the fake Bedrock with its ListInferenceProfiles, the fake Anthropic), with the
official `anthropic` SDK as the client.

- Model resolution: explicit map -> discovery (the fake Bedrock's profile listing, over HTTP, through the
  real aws-sdk client) -> family fallback -> the original 429. The table below is the expected Bedrock id
  for each requested id, from the fake's listing (crates/local-stack/src/fake_bedrock_profiles.rs).
- The usage line records the requested id and the Bedrock id; CountTokens gets the foundation model id.
- The metered user is the gateway key's owner; what the client says is `client_user_id`.
- The 429 memory is keyed by tenant and key owner; a count_tokens 429 is not remembered.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

import anthropic  # scripts/requirements-proxy.txt, installed into .venv by scripts/test

from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic  # noqa: E402
from support import counter_items, new_tenant_id, usage_lines_for, wait_usage_line  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

OPUS_4_8 = "us.anthropic.claude-opus-4-8-20260915-v1:0"
HAIKU_4_5 = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
EXPLICIT_MAP = {"claude-team-default": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"}
FAMILY_FALLBACK = {"haiku": HAIKU_4_5}

# Requested Anthropic id -> the Bedrock id expected in us-east-1 (geographies us, then global); None: no
# Bedrock model, the client gets the 429.
US_TABLE = {
    "claude-opus-4-8": OPUS_4_8,                                                # Claude Code's default, newer than any map
    "claude-sonnet-5": "global.anthropic.claude-sonnet-5-20261105-v1:0",        # no us. profile: global.
    "claude-haiku-4-5": HAIKU_4_5,                                              # alias
    "claude-haiku-4-5-20251001": HAIKU_4_5,                                     # dated
    "claude-sonnet-4-5-20250929": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "claude-opus-4-5": "us.anthropic.claude-opus-4-5-20251101-v1:0",
    "claude-sonnet-4-0": "us.anthropic.claude-sonnet-4-20250514-v1:0",          # minor 0 is Sonnet 4
    "claude-3-7-sonnet-latest": "us.anthropic.claude-3-7-sonnet-20250219-v1:0",  # old word order, -latest
    "claude-3-5-haiku-latest": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "claude-opus-4-6": "us.anthropic.claude-opus-4-6-v1",                       # Bedrock's undated id form
    "claude-team-default": EXPLICIT_MAP["claude-team-default"],                 # the map comes first
    "claude-haiku-9": HAIKU_4_5,                                                # not listed: the haiku fallback
    "claude-opus-9": None,                                                      # not listed, no opus fallback
    "claude-unmapped-test-model": None,                                         # unknown family
    "claude-sonnet-4-5-20990101": None,                                         # a snapshot Bedrock does not have
}
# The same listing seen from an EU region (geographies eu, then global).
EU_TABLE = {
    "claude-sonnet-5": "eu.anthropic.claude-sonnet-5-20261105-v1:0",
    "claude-opus-4-8": "eu.anthropic.claude-opus-4-8-20260915-v1:0",
    "claude-sonnet-4-5": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "claude-opus-4-1": None,  # only a us. profile, which an EU region cannot invoke
}


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def claude_code_user_id(account: str, device: str = "d" * 64, session: str | None = None) -> str:
    """metadata.user_id as Claude Code 2.1 sends it: a JSON string."""
    return json.dumps({"device_id": device, "account_uuid": account, "session_id": session or str(uuid.uuid4())})


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tables(stack):
    return create_proxy_tables(stack.resources)


@pytest.fixture(scope="module")
def fake_anthropic(stack):
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-models")
    stack.extra_apis.append(fake)
    return fake


def models_env(tables, fake_anthropic, **overrides):
    return proxy_env(*tables, fake_anthropic.url, BEDROCK_MODEL_MAP=json.dumps(EXPLICIT_MAP),
                     BEDROCK_FAMILY_FALLBACK=json.dumps(FAMILY_FALLBACK), **overrides)


@pytest.fixture(scope="module")
def forced_us(stack, tables, fake_anthropic):
    """Every call falls back (forced 429): resolution decides alone. Discovery in us, then global."""
    return stack.start_api("api-models-us", **models_env(
        tables, fake_anthropic, FORCE_RATE_LIMIT_TEST="true", FORCE_RATE_LIMIT_RETRY_AFTER="5",
        BEDROCK_PROFILE_GEOGRAPHIES="us,global"))


@pytest.fixture(scope="module")
def forced_eu(stack, tables, fake_anthropic):
    return stack.start_api("api-models-eu", **models_env(
        tables, fake_anthropic, FORCE_RATE_LIMIT_TEST="true", FORCE_RATE_LIMIT_RETRY_AFTER="5",
        BEDROCK_PROFILE_GEOGRAPHIES="eu,global"))


@pytest.fixture(scope="module")
def proxy(stack, tables, fake_anthropic):
    """Anthropic first, Bedrock on a real 429, rate-limit memory on; the stack's region (us-east-1)."""
    return stack.start_api("api-models", **models_env(tables, fake_anthropic))


class Caller:
    def __init__(self, user, key: str):
        self.user, self.key, self.tenant_id = user, key, user.tenant_id


def new_caller(api, user_factory, tenant_id: str | None = None) -> Caller:
    user = user_factory.create(tenant_id or new_tenant_id("models"))
    response = requests.post(f"{api.url}/v1/keys", json={"name": "laptop"},
                             headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return Caller(user, response.json()["key"])


@pytest.fixture
def caller(proxy, user_factory) -> Caller:
    return new_caller(proxy, user_factory)


def sdk(api, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=api.url, api_key=key, max_retries=0, timeout=60)


def ask(api, key: str, prompt: str, model: str, **fields):
    raw = sdk(api, key).messages.with_raw_response.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}], **fields)
    return raw.parse(), raw.headers


def bedrock_requests(stack, tag: str) -> list[dict]:
    return requests.get(f"{stack.fake_bedrock.url}/fake/requests", params={"contains": tag}, timeout=10).json()["requests"]


def anthropic_requests(fake_anthropic, tag: str) -> list[dict]:
    return requests.get(f"{fake_anthropic.url}/fake/requests", params={"contains": tag}, timeout=10).json()["requests"]


def assert_resolves(stack, api, caller: Caller, requested: str, expected: str | None) -> None:
    tag = marker()
    if expected is None:
        with pytest.raises(anthropic.RateLimitError) as limited:
            ask(api, caller.key, f"resolve {tag}", requested)
        assert limited.value.response.headers["retry-after"] == "5"
        assert bedrock_requests(stack, tag) == []
        logged = [line for line in api.stderr_tail(2000).splitlines() if "no Bedrock model for" in line]
        assert any(json.dumps(requested) in line or requested in line for line in logged), \
            f"no log line names the unmapped id {requested}"
        time.sleep(0.2)
        assert usage_lines_for(api, limited.value.response.headers["x-request-id"]) == []
        return
    message, headers = ask(api, caller.key, f"resolve {tag}", requested)
    assert headers["x-gateway-upstream"] == "bedrock", requested
    assert message.content[0].text.startswith("fake-bedrock says:")
    sent = bedrock_requests(stack, tag)
    assert [request["model_id"] for request in sent] == [expected], requested
    line = wait_usage_line(api, headers["x-request-id"])
    assert (line["requested_model_id"], line["model_id"], line["request_type"]) == (requested, expected, "bedrock")


# ------------------------------------------------------------------ model resolution

@pytest.mark.parametrize("requested", list(US_TABLE))
def test_model_resolution_table_in_a_us_region(stack, forced_us, user_factory, requested):
    assert_resolves(stack, forced_us, new_caller(forced_us, user_factory), requested, US_TABLE[requested])


@pytest.mark.parametrize("requested", list(EU_TABLE))
def test_model_resolution_prefers_the_regions_geography(stack, forced_eu, user_factory, requested):
    assert_resolves(stack, forced_eu, new_caller(forced_eu, user_factory), requested, EU_TABLE[requested])


def test_claude_codes_default_model_falls_back_on_a_real_429(stack, proxy, fake_anthropic, caller, resources):
    tag = marker()
    prompt = f"write a haiku [fake:rate-limit=30] {tag}"
    message, headers = ask(proxy, caller.key, prompt, "claude-opus-4-8", metadata={"user_id": claude_code_user_id("acct-1")})
    assert (headers["x-gateway-upstream"], headers["x-gateway-fallback"]) == ("bedrock", "rate_limited")
    assert len(anthropic_requests(fake_anthropic, tag)) == 1, "Anthropic was asked first"
    assert [request["model_id"] for request in bedrock_requests(stack, tag)] == [OPUS_4_8]
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert (line["requested_model_id"], line["model_id"]) == ("claude-opus-4-8", OPUS_4_8)
    assert (line["user_id"], line["client_user_id"]) == (caller.user.sub, "acct-1")
    assert line["output_tokens"] == len(message.content[0].text.split())
    items = [item for item in counter_items(resources, caller.tenant_id, "DAY#") if f"#bedrock#{OPUS_4_8}" in item["sk"]]
    assert items, "the counters are kept under the Bedrock id that served"


def test_an_anthropic_answer_records_the_requested_id_as_both(proxy, caller):
    _, headers = ask(proxy, caller.key, "plain answer", "claude-sonnet-5")
    assert headers["x-gateway-upstream"] == "anthropic"
    line = wait_usage_line(proxy, headers["x-request-id"])
    assert (line["requested_model_id"], line["model_id"], line["request_type"]) == ("claude-sonnet-5", "claude-sonnet-5", "anthropic")


def test_count_tokens_gets_the_foundation_model_of_the_resolved_profile(stack, forced_us, user_factory):
    caller = new_caller(forced_us, user_factory)
    tag = marker()
    raw = sdk(forced_us, caller.key).messages.with_raw_response.count_tokens(
        model="claude-opus-4-8", messages=[{"role": "user", "content": f"count these words {tag}"}])
    assert raw.parse().input_tokens == 4
    assert raw.headers["x-gateway-upstream"] == "bedrock"
    sent = bedrock_requests(stack, tag)
    assert [(request["model_id"], request.get("count_tokens")) for request in sent] == [
        ("anthropic.claude-opus-4-8-20260915-v1:0", True)]


# ------------------------------------------------------------------ who is metered, and whose 429 is remembered

def test_another_users_id_in_metadata_is_metered_to_the_keys_owner(proxy, caller, user_factory, resources):
    """Issue 10: a key holder cannot bill another user (here: another tenant's Cognito sub)."""
    victim = user_factory.create(new_tenant_id("victim"))
    for user_id in (victim.sub, claude_code_user_id(victim.sub)):
        _, headers = ask(proxy, caller.key, "bill someone else", "claude-sonnet-4-5", metadata={"user_id": user_id})
        line = wait_usage_line(proxy, headers["x-request-id"])
        assert (line["tenant_id"], line["user_id"]) == (caller.tenant_id, caller.user.sub)
        assert line["client_user_id"] == victim.sub, "what the client said is kept apart"
    assert counter_items(resources, victim.tenant_id, "DAY#") == [], "nothing reached the victim's tenant"


def test_two_sessions_of_one_user_share_the_429_memory_and_other_users_do_not(
        stack, proxy, tables, fake_anthropic, caller, user_factory):
    first_session = claude_code_user_id("acct-7", session="session-1")
    _, first = ask(proxy, caller.key, "hit the limit [fake:rate-limit=30]", "claude-opus-4-8",
                   metadata={"user_id": first_session})
    assert first["x-gateway-fallback"] == "rate_limited"
    limits = stack.resources.client("dynamodb")
    key = {"pk": {"S": f"LIMIT#USER#{caller.tenant_id}#{caller.user.sub}"}}
    assert limits.get_item(TableName=tables[1], Key=key)["Item"]["user_id"]["S"] == caller.user.sub

    # A second Claude Code session of the same user: straight to Bedrock, Anthropic not asked.
    tag = marker()
    second_session = claude_code_user_id("acct-7", session="session-2")
    _, second = ask(proxy, caller.key, f"next session {tag}", "claude-opus-4-8", metadata={"user_id": second_session})
    assert second["x-gateway-fallback"] == "remembered"
    assert anthropic_requests(fake_anthropic, tag) == []
    line = wait_usage_line(proxy, second["x-request-id"])
    assert (line["user_id"], line["client_user_id"], line["model_id"]) == (caller.user.sub, "acct-7", OPUS_4_8)

    # Another user of the tenant who claims to be the limited one is not diverted: the memory follows the key.
    other = new_caller(proxy, user_factory, caller.tenant_id)
    _, others = ask(proxy, other.key, "not me", "claude-opus-4-8", metadata={"user_id": first_session})
    assert others["x-gateway-upstream"] == "anthropic"


def test_a_count_tokens_429_falls_back_for_that_call_alone(stack, proxy, tables, caller):
    client = sdk(proxy, caller.key)
    raw = client.messages.with_raw_response.count_tokens(
        model="claude-opus-4-8", messages=[{"role": "user", "content": "count [fake:rate-limit=30] these"}])
    assert raw.headers["x-gateway-upstream"] == "bedrock" and raw.headers["x-gateway-fallback"] == "rate_limited"
    assert raw.parse().input_tokens == 3
    item = stack.resources.client("dynamodb").get_item(
        TableName=tables[1], Key={"pk": {"S": f"LIMIT#USER#{caller.tenant_id}#{caller.user.sub}"}})
    assert "Item" not in item, "a count_tokens 429 is not remembered"
    _, headers = ask(proxy, caller.key, "a message right after", "claude-opus-4-8")
    assert headers["x-gateway-upstream"] == "anthropic"
