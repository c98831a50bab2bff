"""The Lambda binaries (dev profile) under the emulated Runtime + Extensions API, against the local stack
(moto, fake Bedrock, fake Anthropic on free 127.0.0.1 ports). Build first: `cargo build -p chat-api -p
usage-api -p claude-proxy` (scripts/test's build step does).

Each test asserts the order Lambda depends on: the response is posted, the usage line is on stdout and the
counters are written before the extension asks for its next event (when Lambda may freeze the environment);
nothing hangs; no line is lost at a deadline or at SIGTERM.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from emulator import STREAMING_CONTENT_TYPE, DynamoRecorder, InitFailed, LambdaEmulator
from localstack import LocalStack, api_env
from processes import REPO_ROOT
from proxy_stack import MODEL, proxy_env
from tls_front import CertificateAuthority, TlsFront

EVENTS = REPO_ROOT / "events"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target")) / "debug"
TENANT = "emulator-tenant"


def binary(name: str) -> Path:
    path = TARGET / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build -p chat-api -p usage-api -p claude-proxy`")
    return path


@pytest.fixture(scope="module")
def lambda_stack(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lambda-emulator")
    stack = LocalStack.start(run_dir, with_proxy=True)
    current = {"timeline": None}
    recorder = DynamoRecorder(stack.resources.endpoint_url, stack.resources.usage_table, lambda: current["timeline"])
    yield stack, recorder, current, run_dir
    recorder.close()
    stack.stop()


@pytest.fixture
def make_lambda(lambda_stack):
    stack, recorder, current, run_dir = lambda_stack
    started: list[LambdaEmulator] = []

    def make(name: str, **overrides: str | None) -> LambdaEmulator:
        """The function `name` on the local stack; an override of None removes the variable."""
        env = api_env(stack.resources, stack.fake_bedrock.url, AWS_ENDPOINT_URL=recorder.url, BEDROCK_TIMEOUT_MS="25000")
        if name == "claude-proxy":
            env.update({k: v for k, v in proxy_env(*stack.proxy_tables, stack.fake_anthropic.url).items() if v is not None})
        env.update({k: v for k, v in overrides.items() if v is not None})
        for removed in [k for k, v in overrides.items() if v is None]:
            env.pop(removed, None)
        emulator = LambdaEmulator(binary(name), env, run_dir, f"{name}-{len(started)}-{uuid.uuid4().hex[:6]}")
        current["timeline"] = emulator.timeline
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.close()


@pytest.fixture
def moto_pid(lambda_stack) -> int:
    return lambda_stack[0].moto.pid


def api_event(file: str, request_id: str, body: object | None = None, headers: dict[str, str] | None = None) -> dict:
    event = copy.deepcopy(json.loads((EVENTS / file).read_text()))
    event["requestContext"]["requestId"] = request_id
    event["requestContext"].setdefault("authorizer", {}).setdefault("claims", {})
    claims = event["requestContext"]["authorizer"]["claims"]
    if "custom:tenant_id" in claims:
        claims["custom:tenant_id"] = TENANT
    if body is not None:
        event["body"] = json.dumps(body)
        event["isBase64Encoded"] = False
    for name, value in (headers or {}).items():
        event.setdefault("headers", {})[name] = value
        event.setdefault("multiValueHeaders", {})[name] = [value]
    return event


def chat_event(prompt: str = "Hello from the emulator") -> tuple[str, dict]:
    request_id = str(uuid.uuid4())
    return request_id, api_event("chat.json", request_id, {"prompt": prompt})


def usage_line(emulator: LambdaEmulator, api_request_id: str) -> dict:
    """The one usage line of a request (waits for the stdout tail to read what is already in the file)."""
    until = time.monotonic() + 5
    while True:
        lines = [l for l in emulator.timeline.usage_lines() if l["request_id"] == api_request_id]
        if lines or time.monotonic() > until:
            return one(lines, f"usage line of {api_request_id}")
        time.sleep(0.02)


def counter_update(emulator: LambdaEmulator, api_request_id: str) -> dict:
    """The one `counter_update` line of a request (its counters were not, or not surely, updated)."""
    until = time.monotonic() + 5
    while True:
        lines = [l for l in emulator.timeline.usage_lines("counter_update") if l["request_id"] == api_request_id]
        if lines or time.monotonic() > until:
            return one(lines, f"counter_update line of {api_request_id}")
        time.sleep(0.02)


def one(events, what: str):
    assert len(events) == 1, f"expected one {what}, got {events}"
    return events[0]


def assert_metered_in_order(emulator: LambdaEmulator, invocation, api_request_id: str, counters: bool = True) -> dict:
    """Response, then (counter write and) usage line, all before the extension's next: returns the line."""
    timeline = emulator.timeline
    response = one(timeline.of("response", invocation.request_id), "response")
    released = one(timeline.of("extension_next", invocation.request_id), "extension next")
    line = usage_line(emulator, api_request_id)
    assert response.t < released.t, "the extension released the environment before the response"
    assert line["_end"] <= released.stdout_bytes, "the usage line came after the environment could freeze"
    if counters:
        writes = [w for w in timeline.of("counter_write") if invocation.started <= w.t]
        assert writes and max(w.t for w in writes) < released.t, "no counter write before the extension's next"
    return line


def warm_up(chat: LambdaEmulator) -> None:
    """One metered request before DynamoDB is stopped, as in a warm environment: the tenant's registry lookup
    (one per tenant per process, and fail-closed: a 503 when the table cannot answer) is cached."""
    api_id, event = chat_event("warm the tenant registry")
    assert_metered_in_order(chat, chat.invoke(event, timeout_s=20), api_id)


def test_chat_init_then_five_sequential_invocations_each_metered_before_release(make_lambda):
    chat = make_lambda("chat-api", FUNCTION_TIMEOUT_SECONDS="38")
    chat.start()
    register = one(chat.timeline.of("register"), "registration")
    assert register.detail == {"runtime_waiting": False, "events": ["INVOKE"]}
    assert register.t < chat.timeline.of("runtime_next")[0].t, "the extension must register before the runtime's /next"
    ids = []
    for _ in range(5):
        api_id, event = chat_event()
        invocation = chat.invoke(event, timeout_s=20)
        assert not invocation.timed_out and invocation.error is None
        answer, body = invocation.http()
        assert answer["statusCode"] == 200, body
        line = assert_metered_in_order(chat, invocation, api_id)
        assert line["tenant_id"] == TENANT and "metering_error" not in line
        ids.append(api_id)
    assert sorted(l["request_id"] for l in chat.timeline.usage_lines()) == sorted(ids)
    assert chat.shutdown() == 0
    assert not chat.timeline.of("signal", None)[1:], "SIGKILL was needed"


def test_chat_handler_errors_release_at_once_and_bill_nothing(make_lambda):
    chat = make_lambda("chat-api")
    chat.start()
    bad_id = str(uuid.uuid4())
    bad = chat.invoke(api_event("chat.json", bad_id, {"no_prompt": 1}), timeout_s=20)
    answer, body = bad.http()
    assert answer["statusCode"] == 400 and json.loads(body)["error"]["type"]
    failed_id, failed_event = chat_event("[fake:error] please")
    failed = chat.invoke(failed_event, timeout_s=20)
    assert failed.http()[0]["statusCode"] >= 500
    for invocation in (bad, failed):
        assert not invocation.timed_out
        assert chat.timeline.of("extension_next", invocation.request_id)
    assert chat.timeline.usage_lines() == []
    api_id, event = chat_event()
    assert_metered_in_order(chat, chat.invoke(event, timeout_s=20), api_id)


@pytest.mark.parametrize("payload", [b'"warm-up ping"', {"source": "aws.events", "detail": {}}])
def test_an_unparseable_event_releases_at_once_and_the_next_invocation_is_paired(make_lambda, payload):
    chat = make_lambda("chat-api")
    chat.start()
    deadline_s = 30
    stray = chat.invoke(payload, timeout_s=deadline_s)
    assert stray.error is not None and stray.response is None, "the runtime should post /error"
    assert not stray.timed_out
    # Released on the runtime's /error, not at the deadline (the old extension waited for a signal that never came).
    assert stray.finished - stray.started < deadline_s / 2
    api_id, event = chat_event()
    invocation = chat.invoke(event, timeout_s=20)
    assert invocation.http()[0]["statusCode"] == 200
    assert_metered_in_order(chat, invocation, api_id)


def test_a_slow_table_holds_the_release_not_the_response(make_lambda, moto_pid):
    chat = make_lambda("chat-api")
    chat.start()
    warm_up(chat)
    api_id, event = chat_event()
    request_id = str(uuid.uuid4())
    result = {}
    os.kill(moto_pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=lambda: result.setdefault("inv", chat.invoke(event, 30, request_id)))
        worker.start()
        until = time.monotonic() + 20
        while not chat.timeline.of("response", request_id) and time.monotonic() < until:
            time.sleep(0.02)
        assert chat.timeline.of("response", request_id), "the answer waited for the stopped table"
        time.sleep(1.0)
        assert not chat.timeline.of("extension_next", request_id), "released while the counters were pending"
    finally:
        resumed = time.monotonic()
        os.kill(moto_pid, signal.SIGCONT)
    worker.join(40)
    invocation = result["inv"]
    line = assert_metered_in_order(chat, invocation, api_id)
    assert "metering_error" not in line
    assert min(w.t for w in chat.timeline.of("counter_write") if w.t >= invocation.started) > resumed


def test_an_invocation_timeout_without_an_answer_writes_no_line_and_the_next_environment_works(make_lambda):
    chat = make_lambda("chat-api")
    chat.start()
    api_id, event = chat_event("[fake:delay=8000] slow")
    invocation = chat.invoke(event, timeout_s=3)
    assert invocation.timed_out and invocation.response is None
    assert chat.process.returncode == 0, "SIGTERM should end the process cleanly within the grace period"
    assert [e.detail for e in chat.timeline.of("signal")] == ["SIGTERM"]
    assert [l for l in chat.timeline.usage_lines() if l["request_id"] == api_id] == []
    chat.start()
    next_id, next_event = chat_event()
    assert_metered_in_order(chat, chat.invoke(next_event, timeout_s=20), next_id)


def test_at_the_deadline_pending_counters_are_abandoned_and_the_line_is_written(make_lambda, moto_pid):
    chat = make_lambda("chat-api")
    chat.start()
    warm_up(chat)
    api_id, event = chat_event()
    os.kill(moto_pid, signal.SIGSTOP)
    try:
        invocation = chat.invoke(event, timeout_s=4)
    finally:
        os.kill(moto_pid, signal.SIGCONT)
    assert not invocation.timed_out, "the extension should release before the deadline"
    line = assert_metered_in_order(chat, invocation, api_id, counters=False)
    assert "metering_error" not in line
    update = counter_update(chat, api_id)
    released = one(chat.timeline.of("extension_next", invocation.request_id), "extension next")
    assert update["_end"] <= released.stdout_bytes, "the counter_update line came after the environment could freeze"
    assert update["outcome"] in ("failed", "unknown") and "abandoned: invocation deadline" in update["error"], update
    assert (update["tenant_id"], update["day"]) == (line["tenant_id"], line["timestamp"][:10])


def test_sigterm_with_metering_pending_writes_the_line_and_exits_in_the_grace_period(make_lambda, moto_pid):
    chat = make_lambda("chat-api")
    chat.start()
    warm_up(chat)
    api_id, event = chat_event()
    request_id = str(uuid.uuid4())
    os.kill(moto_pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=lambda: chat.invoke(event, 30, request_id), daemon=True)
        worker.start()
        until = time.monotonic() + 20
        while not chat.timeline.of("response", request_id) and time.monotonic() < until:
            time.sleep(0.02)
        assert chat.timeline.of("response", request_id)
        code = chat.shutdown()
    finally:
        os.kill(moto_pid, signal.SIGCONT)
    assert code == 0 and [e.detail for e in chat.timeline.of("signal")] == ["SIGTERM"], "needed SIGKILL"
    line = usage_line(chat, api_id)
    assert "metering_error" not in line
    update = counter_update(chat, api_id)
    assert update["outcome"] in ("failed", "unknown") and "abandoned: shutdown (SIGTERM)" in update["error"], update
    exited = chat.timeline.of("exit")[0].stdout_bytes
    assert line["_end"] <= exited and update["_end"] <= exited


def test_a_budget_over_the_function_timeout_is_refused_at_cold_start(make_lambda):
    chat = make_lambda("chat-api", FUNCTION_TIMEOUT_SECONDS="30", BEDROCK_TIMEOUT_MS="25000")
    with pytest.raises(InitFailed) as failed:
        chat.start()
    assert "raise the function timeout" in failed.value.stderr


def proxy_key(proxy: LambdaEmulator) -> str:
    created = proxy.invoke(api_event("proxy-keys-create.json", str(uuid.uuid4()), {"name": "emulator"}), timeout_s=20)
    answer, body = created.http()
    assert answer["statusCode"] == 201, body
    return json.loads(body)["key"]


@pytest.mark.parametrize("stream", [True, False])
def test_the_proxy_streams_with_the_prelude_and_meters_before_release(make_lambda, stream):
    proxy = make_lambda("claude-proxy", FUNCTION_TIMEOUT_SECONDS="80", ANTHROPIC_TIMEOUT_MS="30000", BEDROCK_TIMEOUT_MS="30000")
    proxy.start()
    key = proxy_key(proxy)
    api_id = str(uuid.uuid4())
    body = {"model": MODEL, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "Hello"}]}
    invocation = proxy.invoke(api_event("proxy-messages.json", api_id, body, {"x-api-key": key}), timeout_s=30)
    assert invocation.streaming, "the proxy answers in Lambda's streaming mode"
    assert invocation.headers.get("content-type") == STREAMING_CONTENT_TYPE
    prelude, payload = invocation.http()
    assert prelude["statusCode"] == 200, payload
    if stream:
        assert b"event: message_stop" in payload
    else:
        assert json.loads(payload)["type"] == "message"
    assert_metered_in_order(proxy, invocation, api_id)
    stray = proxy.invoke(b'"ping"', timeout_s=30)
    assert stray.error is not None and not stray.timed_out and stray.finished - stray.started < 15
    assert proxy.shutdown() == 0


def test_the_proxy_writes_its_answers_to_the_runtime_api_without_waiting_for_acks(make_lambda):
    """The proxy's answers go to the Runtime API as a chunked stream (prelude, separator, body: each its own
    write). With Nagle's algorithm on that connection each write after the first waits for the ACK of the one
    before, and the Runtime API, with nothing to send until the body ends, may delay that ACK (Linux: 40 ms or
    more), so an answer reached Lambda 40 ms late: every first answer of a cold start did. An answer whose body
    is ready (not streamed) takes the function's own time from its first chunk to its end, never that timer."""
    proxy = make_lambda("claude-proxy", FUNCTION_TIMEOUT_SECONDS="80", ANTHROPIC_TIMEOUT_MS="30000", BEDROCK_TIMEOUT_MS="30000")
    proxy.start()
    created = proxy.invoke(api_event("proxy-keys-create.json", str(uuid.uuid4()), {"name": "nagle"}), timeout_s=20)
    answer, body = created.http()
    assert answer["statusCode"] == 201, body
    key = json.loads(body)["key"]
    answers = [created]
    for _ in range(3):
        message = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
        answers.append(proxy.invoke(api_event("proxy-messages.json", str(uuid.uuid4()), message, {"x-api-key": key}), timeout_s=30))
    spans_ms = []
    for invocation in answers:
        prelude, _ = invocation.http()
        assert prelude["statusCode"] in (200, 201) and len(invocation.chunk_times) >= 3, invocation.chunk_times
        spans_ms.append(round((invocation.chunk_times[-1] - invocation.chunk_times[0]) * 1000, 2))
    assert max(spans_ms) < 30, f"first chunk to end of each answer (ms): {spans_ms}"
    assert proxy.shutdown() == 0


def test_the_usage_function_answers_refuses_an_unparseable_event_and_stops_on_sigterm(make_lambda):
    usage = make_lambda("usage-api")
    usage.start()
    assert usage.extensions() == [], "the usage function meters nothing and registers no extension"
    answer, body = usage.invoke(api_event("usage-me.json", str(uuid.uuid4())), timeout_s=20).http()
    assert answer["statusCode"] == 200, body
    stray = usage.invoke(b'"ping"', timeout_s=20)
    assert stray.error is not None and not stray.timed_out
    assert usage.shutdown() is not None


def provider_key_seen_upstream(stack, marker: str) -> list[str | None]:
    """The `x-api-key` of each request the fake Anthropic received with `marker` in it."""
    query = urllib.parse.urlencode({"contains": marker})
    with urllib.request.urlopen(f"{stack.fake_anthropic.url}/fake/requests?{query}", timeout=10) as answer:
        return [request["x-api-key"] for request in json.load(answer)["requests"]]


def ask_proxy(proxy: LambdaEmulator, key: str, prompt: str) -> tuple[dict, bytes]:
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
    return proxy.invoke(api_event("proxy-messages.json", str(uuid.uuid4()), body, {"x-api-key": key}), timeout_s=30).http()


@pytest.mark.parametrize("secret", ['{"api_key": "  "}', '{"other_field": "sk-ant-not-here"}', "   "])
def test_a_secret_without_a_key_is_overloaded_until_the_operator_puts_the_key_in(make_lambda, lambda_stack, secret):
    # GIVEN managed mode and a Secrets Manager secret with no usable key (README: "the secret holds no key")
    stack = lambda_stack[0]
    secrets = stack.resources.client("secretsmanager")
    name = f"provider-key-{uuid.uuid4().hex[:8]}"
    secrets.create_secret(Name=name, SecretString=secret)
    proxy = make_lambda("claude-proxy", ANTHROPIC_API_KEY="", ANTHROPIC_API_KEY_SECRET_ID=name)
    # WHEN the function starts THEN its init does not wait for the secret, and /v1/keys needs no provider key
    proxy.start()
    key = proxy_key(proxy)
    # WHEN a message comes THEN it is Anthropic's "try again" (529 overloaded_error, Retry-After 1), nothing goes
    # upstream, and the log names the secret and why
    marker = f"nokey{uuid.uuid4().hex[:8]}"
    answer, body = ask_proxy(proxy, key, f"Hello {marker}")
    assert answer["statusCode"] == 529 and answer["headers"].get("retry-after") == "1", (answer, body)
    error = json.loads(body)["error"]
    assert error["type"] == "overloaded_error" and "Anthropic key is not available" in error["message"], error
    assert name not in body.decode(), "the secret's id is for the operator's log, not for the client"
    assert provider_key_seen_upstream(stack, marker) == []
    log = proxy.stderr_text()
    assert "the secret holds no key" in log and name in log, log[-2000:]
    # WHEN the operator puts the key in THEN after the retry interval (1 s) the same instance uses it
    secrets.put_secret_value(SecretId=name, SecretString='{"api_key": "sk-ant-put-later"}')
    time.sleep(1.2)
    answer, body = ask_proxy(proxy, key, f"Hello again {marker}")
    assert answer["statusCode"] == 200, body
    assert provider_key_seen_upstream(stack, marker) == ["sk-ant-put-later"]
    assert proxy.shutdown() == 0


def test_the_proxy_sends_the_key_of_its_secret(make_lambda, lambda_stack):
    stack = lambda_stack[0]
    name = f"provider-key-{uuid.uuid4().hex[:8]}"
    stack.resources.client("secretsmanager").create_secret(Name=name, SecretString='{"api_key": "sk-ant-from-secret"}')
    proxy = make_lambda("claude-proxy", ANTHROPIC_API_KEY="", ANTHROPIC_API_KEY_SECRET_ID=name)
    proxy.start()
    marker = f"secret{uuid.uuid4().hex[:8]}"
    answer, body = ask_proxy(proxy, proxy_key(proxy), f"Hello {marker}")
    assert answer["statusCode"] == 200, body
    assert provider_key_seen_upstream(stack, marker) == ["sk-ant-from-secret"]
    assert "could not be read" not in proxy.stderr_text()
    assert proxy.shutdown() == 0


@pytest.fixture(scope="module")
def tls_fronts(lambda_stack, tmp_path_factory):
    """HTTPS in front of DynamoDB (moto, through the recorder) and of the fake Anthropic, with a certificate
    authority of the test's own, and a second authority that signed nothing they serve."""
    stack, recorder, _, _ = lambda_stack
    directory = tmp_path_factory.mktemp("tls")
    authority, stranger = CertificateAuthority(directory, "gateway"), CertificateAuthority(directory, "stranger")
    dynamodb, anthropic = TlsFront(recorder.url, authority, "dynamodb"), TlsFront(stack.fake_anthropic.url, authority, "anthropic")
    yield {"authority": authority, "stranger": stranger, "dynamodb": dynamodb, "anthropic": anthropic}
    dynamodb.close()
    anthropic.close()


def proxy_over_tls(make_lambda, fronts, trusted: CertificateAuthority, dynamodb_over_tls: bool = True) -> LambdaEmulator:
    """The proxy with its AWS calls (DynamoDB) and its Anthropic calls over HTTPS, trusting `trusted` alone:
    the system's roots as `SSL_CERT_FILE` names them, which is how rustls-native-certs reads them."""
    overrides = {"ANTHROPIC_BASE_URL": fronts["anthropic"].url, "SSL_CERT_FILE": str(trusted.pem_file), "SSL_CERT_DIR": None}
    if dynamodb_over_tls:
        overrides["AWS_ENDPOINT_URL"] = fronts["dynamodb"].url
    return make_lambda("claude-proxy", FUNCTION_TIMEOUT_SECONDS="80", ANTHROPIC_TIMEOUT_MS="10000",
                       BEDROCK_TIMEOUT_MS="10000", **overrides)


def test_the_sdk_and_the_anthropic_client_trust_the_system_roots(make_lambda, lambda_stack, tls_fronts):
    # GIVEN DynamoDB and Anthropic behind HTTPS whose authority is the one root the system holds
    proxy = proxy_over_tls(make_lambda, tls_fronts, tls_fronts["authority"])
    proxy.start()
    # WHEN a key is made (DynamoDB through the AWS SDK) and a message sent (Anthropic through reqwest)
    key = proxy_key(proxy)
    marker = f"tls{uuid.uuid4().hex[:8]}"
    answer, body = ask_proxy(proxy, key, f"Hello {marker}")
    # THEN both went over TLS, verified with the roots read once for both
    assert answer["statusCode"] == 200, body
    assert answer["headers"].get("x-gateway-upstream") == "anthropic", answer
    assert len(provider_key_seen_upstream(lambda_stack[0], marker)) == 1
    assert proxy.shutdown() == 0


def test_a_server_whose_authority_the_system_does_not_hold_is_refused(make_lambda, lambda_stack, tls_fronts):
    # GIVEN roots that hold another authority than the one that signed DynamoDB's and Anthropic's certificates
    stranger = tls_fronts["stranger"]
    proxy = proxy_over_tls(make_lambda, tls_fronts, stranger)
    proxy.start()
    failed_before = tls_fronts["dynamodb"].handshakes_failed
    # WHEN a key is to be made THEN DynamoDB is not trusted: no key, and the handshake was refused
    created = proxy.invoke(api_event("proxy-keys-create.json", str(uuid.uuid4()), {"name": "stranger"}), timeout_s=30)
    answer, body = created.http()
    assert answer["statusCode"] >= 500, body
    assert tls_fronts["dynamodb"].handshakes_failed > failed_before
    assert proxy.shutdown() == 0
    # GIVEN DynamoDB in plain HTTP (so a key can be made) and Anthropic still behind the untrusted authority
    proxy = proxy_over_tls(make_lambda, tls_fronts, stranger, dynamodb_over_tls=False)
    proxy.start()
    key = proxy_key(proxy)
    marker = f"untrusted{uuid.uuid4().hex[:8]}"
    # WHEN a message is sent THEN nothing reaches Anthropic
    answer, body = ask_proxy(proxy, key, f"Hello {marker}")
    assert answer["headers"].get("x-gateway-upstream") != "anthropic" or answer["statusCode"] >= 500, (answer, body)
    assert provider_key_seen_upstream(lambda_stack[0], marker) == []
    assert proxy.shutdown() == 0
