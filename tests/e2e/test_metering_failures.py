"""Metering when DynamoDB is down or slow: the tenant still gets the answer, the usage line still bills the
request, and a stopping API finishes its pending counter writes."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from dynamodb_tap import answer, forward_to, serve
from support import (
    chat,
    cloudwatch_usage_lines,
    counter_sums,
    expected_sums,
    fake_reply,
    fake_tokens,
    new_tenant_id,
    poll,
    request_id_of,
    usage_lines_for,
    wait_counters,
    wait_usage_line,
)


def test_unreachable_dynamodb_still_answers_and_logs_a_counter_update_line(stack, resources, user_factory):
    # DynamoDB through a proxy that is closed after a warm-up request: the tenant registry's lookup (one per
    # tenant per process, fail-closed) is then cached, and every later DynamoDB call is refused at connect.
    proxy = SlowDynamoProxy(resources.endpoint_url, delay=0)
    api = stack.start_api("api-no-dynamodb", AWS_ENDPOINT_URL_DYNAMODB=proxy.url)
    user = user_factory.create(new_tenant_id("nodb"))
    assert chat(api.url, user.token, {"prompt": "warm-up"}).status_code == 200
    poll("warm-up counters", lambda: counter_sums(resources, user.tenant_id, "DAY#")["request_count"], lambda n: n == 1, timeout=10)
    proxy.close()
    prompt = "billing must survive"

    response = chat(api.url, user.token, {"prompt": prompt})

    assert response.status_code == 200, response.text
    assert response.json() == {"response": fake_reply(prompt)}
    request_id = request_id_of(response)
    lines = poll("usage and counter_update lines", lambda: [r for r in api.json_lines() if r.get("request_id") == request_id], lambda found: len(found) >= 2, timeout=30)
    usage = [line for line in lines if line["event"] == "token_usage"]
    updates = [line for line in lines if line["event"] == "counter_update"]
    assert len(usage) == 1 and len(updates) == 1, lines
    line = usage[0]
    assert "metering_error" not in line, line
    assert (line["input_tokens"], line["output_tokens"]) == fake_tokens(prompt)
    assert updates[0]["outcome"] in ("failed", "unknown") and updates[0]["error"], updates[0]
    assert updates[0]["tenant_id"] == user.tenant_id and updates[0]["day"] == line["timestamp"][:10]
    in_cloudwatch = poll("cloudwatch", lambda: cloudwatch_usage_lines(resources, request_id), bool, timeout=10)
    assert in_cloudwatch == [line], "the usage line reaches the log group (the export bills from it)"
    assert counter_sums(resources, user.tenant_id, "DAY#")["request_count"] == 1, "the warm-up's only"


class SlowDynamoProxy:
    """An HTTP proxy in front of moto that holds each request `delay` seconds, so counter writes are
    still in flight when the API is told to stop."""

    def __init__(self, upstream: str, delay: float):
        self.upstream = urlsplit(upstream)
        self.delay = delay
        self.completed_at: list[float] = []
        self.closed = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if proxy.closed:  # a kept-alive connection after close(): drop it, as a dead endpoint would
                    self.close_connection = True
                    return
                time.sleep(proxy.delay)
                answer(self, *forward_to(proxy.upstream, self, body, 30))
                proxy.completed_at.append(time.monotonic())

            def log_message(self, *args):
                pass

        self.server, self.url = serve(Handler)

    def close(self):
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def test_sigterm_drains_pending_counter_writes(stack, resources, user_factory):
    proxy = SlowDynamoProxy(resources.endpoint_url, delay=1.5)
    try:
        api = stack.start_api("api-drain", AWS_ENDPOINT_URL_DYNAMODB=proxy.url)
        user = user_factory.create(new_tenant_id("drain"))
        prompts = [f"drain request number {i}" for i in range(6)]
        with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
            responses = list(pool.map(lambda p: chat(api.url, user.token, {"prompt": p}), prompts))
        assert [r.status_code for r in responses] == [200] * len(prompts), [r.text for r in responses]

        stopped_at = time.monotonic()
        api.popen.send_signal(signal.SIGTERM)
        exit_code = api.popen.wait(timeout=30)

        assert exit_code == 0, f"api exited with {exit_code} after SIGTERM; stderr:\n{api.stderr_tail()}"
        assert proxy.completed_at and max(proxy.completed_at) > stopped_at, (
            "no counter write was still in flight at SIGTERM: the test proves nothing "
            "(does the API write counters before answering?)"
        )
        lines = []
        for prompt, response in zip(prompts, responses):
            found = usage_lines_for(api, request_id_of(response))
            assert len(found) == 1, f"one usage line per request before exit, got {found}"
            assert (found[0]["input_tokens"], found[0]["output_tokens"]) == fake_tokens(prompt)
            assert "metering_error" not in found[0], found[0]
            lines.append(found[0])
        expected = expected_sums(lines)
        # The process is gone: whatever it wrote is all there will ever be (no polling needed, one re-read).
        assert wait_counters(resources, user.tenant_id, "DAY#", expected, timeout=1) == expected
        assert wait_counters(resources, user.tenant_id, "WEEK#", expected, timeout=1) == expected
    finally:
        proxy.close()

