"""The strict fake Bedrock (crates/local-stack/src/fake_bedrock_strict.rs) refuses what Bedrock refuses, over
real connections; and the gateway's failing-fallback paths on `/v1/messages` end to end: Anthropic 429, then
Bedrock failing before the answer (500, throttled, unavailable, a refused body) or in the middle of the
stream (event-stream exception frames), plain and streamed, with the README's statuses, error types,
headers and usage lines ("Proxy fidelity: what a client can count on")."""
from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from proxy_stack import BEDROCK_MODEL, MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from provision import DEFAULT_MODEL_ID
from support import assert_error_body, chat, new_tenant_id, poll, request_id_of, usage_lines_for, wait_usage_line

HELLO = [{"role": "user", "content": [{"text": "hello"}]}]


def bedrock_client(stack, region: str = "us-east-1"):
    return boto3.client("bedrock-runtime", endpoint_url=stack.fake_bedrock.url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}))


def refusal(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as refused:
        call()
    response = refused.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


# ------------------------------------------------------------------ the fake refuses what Bedrock refuses

def test_an_unsigned_or_badly_signed_call_is_refused_with_403(stack):
    url = f"{stack.fake_bedrock.url}/model/{DEFAULT_MODEL_ID}/converse"
    unsigned = requests.post(url, json={"messages": HELLO}, timeout=10)
    assert (unsigned.status_code, unsigned.headers["x-amzn-errortype"]) == (403, "MissingAuthenticationTokenException")
    assert unsigned.json() == {"message": "Missing Authentication Token"}
    stale = requests.post(url, json={"messages": HELLO}, timeout=10, headers={
        "x-amz-date": "20200101T000000Z",
        "authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/bedrock/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64})
    assert (stale.status_code, stale.headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    assert stale.json()["message"].startswith("Signature expired: 20200101T000000Z is now earlier than")
    # A real SigV4 signature scoped to another region than the fake's.
    status, code, message = refusal(lambda: bedrock_client(stack, "eu-west-1").converse(modelId=DEFAULT_MODEL_ID, messages=HELLO))
    assert (status, code, message) == (403, "InvalidSignatureException", "Credential should be scoped to a valid region, not 'eu-west-1'.")
    # The fake's own endpoints need no signature.
    assert requests.get(f"{stack.fake_bedrock.url}/fake/requests", timeout=10).status_code == 200


def test_only_configured_model_ids_are_served(stack):
    client = bedrock_client(stack)
    assert client.converse(modelId=DEFAULT_MODEL_ID, messages=HELLO)["stopReason"] == "end_turn"
    assert client.converse(modelId=f"us.{DEFAULT_MODEL_ID}", messages=HELLO)["stopReason"] == "end_turn"
    assert refusal(lambda: client.converse(modelId="anthropic.claude-nonexistent-v1:0", messages=HELLO)) == (
        404, "ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier.")
    # Sonnet 5 has no us. profile in the fake's listing.
    assert refusal(lambda: client.converse(modelId="us.anthropic.claude-sonnet-5-20261105-v1:0", messages=HELLO)) == (
        400, "ValidationException", "The provided model identifier is invalid.")
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    assert refusal(lambda: client.invoke_model(modelId="sonnet", body=body))[:2] == (400, "ValidationException")


@pytest.mark.parametrize("messages, inference, expected", [
    ([{"role": "assistant", "content": [{"text": "hi"}]}], None, "A conversation must start with a user message."),
    (HELLO * 2, None, "A conversation must alternate between user and assistant roles."),
    ([{"role": "user", "content": []}], None, "The content field in the Message object at messages.0 is empty."),
    ([{"role": "user", "content": [{"text": " "}]}], None, "The text field in the ContentBlock object at messages.0.content.0 is blank."),
    (HELLO, {"maxTokens": 0}, "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens'"),
    (HELLO, {"maxTokens": 4097}, "The maximum tokens you requested exceeds the model limit of 4096."),
])
def test_converse_bodies_bedrock_refuses_are_refused(stack, messages, inference, expected):
    call = {"modelId": DEFAULT_MODEL_ID, "messages": messages}
    if inference:
        call["inferenceConfig"] = inference
    # boto3 checks maxTokens >= 1 itself: without its check the body reaches the fake as it is.
    client = boto3.client("bedrock-runtime", endpoint_url=stack.fake_bedrock.url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1}, parameter_validation=False))
    status, code, message = refusal(lambda: client.converse(**call))
    assert (status, code) == (400, "ValidationException")
    assert message.startswith(expected), message


def test_a_throttle_carries_retry_after_only_when_told(stack):
    client = bedrock_client(stack)
    for prompt, retry_after in [("slow down [fake:throttle]", None), ("slow down [fake:throttle] [fake:retry-after=3]", "3")]:
        with pytest.raises(ClientError) as refused:
            client.converse(modelId=DEFAULT_MODEL_ID, messages=[{"role": "user", "content": [{"text": prompt}]}])
        headers = refused.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert refused.value.response["Error"]["Code"] == "ThrottlingException"
        assert headers.get("retry-after") == retry_after, headers


@pytest.mark.parametrize("exception", ["throttlingException", "modelStreamErrorException", "internalServerException"])
def test_converse_stream_ends_with_the_exception_a_directive_asks_for(stack, exception):
    prompt = f"one two three [fake:stream-exception={exception}@2]"
    stream = bedrock_client(stack).converse_stream(
        modelId=DEFAULT_MODEL_ID, messages=[{"role": "user", "content": [{"text": prompt}]}])["stream"]
    deltas = []
    with pytest.raises(ClientError) as broken:  # botocore's EventStreamError
        for event in stream:
            if "contentBlockDelta" in event:
                deltas.append(event["contentBlockDelta"]["delta"]["text"])
    assert deltas == ["fake-bedrock", " says:"]
    assert broken.value.response["Error"]["Code"] == exception, broken.value.response


# ------------------------------------------------------------------ the chat API against the strict fake

def test_the_chat_api_with_a_model_bedrock_does_not_know_answers_502_and_meters_nothing(stack, user_factory):
    api = stack.start_api("api-unknown-model", BEDROCK_MODEL_ID="anthropic.claude-nonexistent-v1:0")
    user = user_factory.create(new_tenant_id("strict-model"))
    response = chat(api.url, user.token, {"prompt": "hello"})
    error = assert_error_body(response, 502)
    assert "anthropic.claude-nonexistent-v1:0" in error["message"], error
    time.sleep(0.3)
    assert usage_lines_for(api, request_id_of(response)) == []


# ------------------------------------------------------------------ the proxy's failing fallback

@pytest.fixture(scope="module")
def proxy(stack):
    key_table, limit_table = create_proxy_tables(stack.resources, "strict")
    fake_anthropic = start_fake_anthropic(stack.run_dir, "fake-anthropic-strict")
    stack.extra_apis.append(fake_anthropic)  # stopped with the stack
    return stack.start_api("api-proxy-strict", **proxy_env(key_table, limit_table, fake_anthropic.url))


@pytest.fixture
def key(proxy, user_factory):
    """A gateway key of a fresh tenant (the rate-limit memory is per key owner: one 429 per owner)."""
    user = user_factory.create(new_tenant_id("strict"))
    created = requests.post(f"{proxy.url}/v1/keys", json={"name": "strict"}, timeout=30,
                            headers={"Authorization": f"Bearer {user.token}"})
    assert created.status_code == 201, created.text
    return created.json()["key"], user.tenant_id


def post_messages(proxy, api_key: str, prompt: str, stream: bool, max_tokens: int = 100) -> requests.Response:
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    return requests.post(f"{proxy.url}/v1/messages", json=body, timeout=30, stream=stream,
                         headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"})


def assert_no_usage_line(proxy, request_id: str, tenant_id: str):
    """Nothing was answered, so nothing is metered: no line for the request, none for the tenant."""
    time.sleep(0.5)
    assert usage_lines_for(proxy, request_id) == []
    assert [line for line in proxy.usage_lines() if line.get("tenant_id") == tenant_id] == []


# Bedrock's failure -> the error type the gateway reports in x-gateway-fallback-error (bedrock.rs api_error).
FAILED_FALLBACKS = {
    "[fake:error]": "overloaded_error",        # InternalServerException: Bedrock's 500 counts as overloaded
    "[fake:throttle]": "rate_limit_error",     # ThrottlingException
    "[fake:unavailable]": "overloaded_error",  # ServiceUnavailableException
    "[fake:model-timeout]": "api_error",       # ModelTimeoutException
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("directive", list(FAILED_FALLBACKS))
def test_a_failing_fallback_answers_with_anthropics_429_and_meters_nothing(proxy, key, directive, stream):
    api_key, tenant_id = key
    response = post_messages(proxy, api_key, f"hello {uuid.uuid4().hex[:8]} [fake:rate-limit=11] {directive}", stream)
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
    assert body["request_id"].startswith("req_fake_"), "Anthropic's own 429 body"
    assert response.headers["retry-after"] == "11", "Anthropic's own retry-after"
    assert (response.headers["x-gateway-upstream"], response.headers["x-gateway-fallback"]) == ("bedrock", "rate_limited")
    assert response.headers["x-gateway-fallback-error"] == FAILED_FALLBACKS[directive]
    assert_no_usage_line(proxy, response.headers["x-request-id"], tenant_id)


def test_a_max_tokens_beyond_the_bedrock_models_limit_is_a_failed_fallback(proxy, key):
    api_key, tenant_id = key
    # The fallback model (proxy_stack.BEDROCK_MODEL, Sonnet 4.5) allows 64,000 output tokens.
    response = post_messages(proxy, api_key, f"long {uuid.uuid4().hex[:8]} [fake:rate-limit=11]", False, max_tokens=64_001)
    assert response.status_code == 429, response.text
    assert response.headers["x-gateway-fallback-error"] == "invalid_request_error"
    assert_no_usage_line(proxy, response.headers["x-request-id"], tenant_id)


def sse_events(response: requests.Response) -> list[tuple[str, dict]]:
    events, name = [], ""
    for raw in response.iter_lines():
        line = raw.decode()
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.split(":", 1)[1])))
    return events


# Bedrock's mid-stream exception -> the `event: error` type the client gets.
MID_STREAM = {
    "throttlingException": "rate_limit_error",
    "modelStreamErrorException": "api_error",
    "internalServerException": "overloaded_error",
    "serviceUnavailableException": "overloaded_error",
}


@pytest.mark.parametrize("exception", list(MID_STREAM))
def test_a_bedrock_exception_mid_stream_ends_with_an_error_event_and_an_estimated_line(proxy, key, exception):
    api_key, tenant_id = key
    prompt = f"alpha beta gamma {uuid.uuid4().hex[:8]} [fake:rate-limit=11] [fake:stream-exception={exception}@2]"
    with post_messages(proxy, api_key, prompt, True) as response:
        assert response.status_code == 200, response.text
        assert (response.headers["x-gateway-upstream"], response.headers["x-gateway-fallback"]) == ("bedrock", "rate_limited")
        request_id = response.headers["x-request-id"]
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and "message_stop" not in names and names[-1] == "error", names
    assert events[-1][1]["error"]["type"] == MID_STREAM[exception], events[-1]
    assert events[-1][1]["request_id"] == request_id
    delivered = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert delivered == "fake-bedrock says:"
    line = wait_usage_line(proxy, request_id)
    assert (line["tenant_id"], line["request_type"], line["model_id"]) == (tenant_id, "bedrock", BEDROCK_MODEL)
    assert line["usage_estimated"] is True
    assert line["input_tokens"] == len(prompt.split()), "input as Bedrock reported it in message_start"
    assert line["output_tokens"] == -(-len(delivered) // 4), "output: characters delivered / 4, rounded up"
    assert line["total_tokens"] == line["input_tokens"] + line["output_tokens"]


def test_a_plain_fallback_through_the_strict_fake_is_exact(proxy, key):
    """The control case: the same proxy and fake answer and meter a fallback exactly when Bedrock succeeds."""
    api_key, tenant_id = key
    prompt = f"fine {uuid.uuid4().hex[:8]} [fake:rate-limit=11]"
    response = post_messages(proxy, api_key, prompt, False)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-fallback"] == "rate_limited"
    line = poll("line", lambda: wait_usage_line(proxy, response.headers["x-request-id"]), bool)
    assert (line["request_type"], line["model_id"], line["tenant_id"]) == ("bedrock", BEDROCK_MODEL, tenant_id)
    assert "usage_estimated" not in line
