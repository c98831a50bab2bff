"""`local-stack bench-floor`: the floor scripts/bench measures beside the gateway (the route's upstream call alone,
on the same server). Checked here so the benchmark's baseline keeps making the very call the gateway makes: the
chat floor through the AWS SDK to the fake Bedrock (SigV4, Converse), the proxy floor through the proxy's HTTP
client to the fake Anthropic with the provider key, streamed answers passed through."""
from __future__ import annotations

import json

import requests

from proxy_stack import start_fake_anthropic


def test_the_chat_floor_answers_with_one_converse_call_and_writes_no_usage_line(stack):
    floor = stack.start_floor("chat", "floor-chat-check")
    response = requests.post(floor.url + "/bedrock/chat", json={"prompt": "floor check"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["response"], response.text
    # The fake Bedrock served it as a Converse call (its invocation record carries the floor's metadata).
    records = requests.get(stack.fake_bedrock.url + "/fake/invocation-logs", timeout=10).json()["records"]
    assert any("bench-floor" in json.dumps(record) for record in records), records[-1:]
    # Not a route of the gateway: nothing is metered.
    assert '"token_usage"' not in floor.stdout_path.read_text(errors="replace")
    bad = requests.post(floor.url + "/bedrock/chat", data="not json", timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "bench_floor_error", bad.text


def test_the_proxy_floor_forwards_with_the_provider_key_and_streams_the_answer_back(stack):
    fake = start_fake_anthropic(stack.run_dir, "fake-anthropic-floor-check")
    stack.extra_apis.append(fake)
    floor = stack.start_floor("proxy", "floor-proxy-check", ANTHROPIC_BASE_URL=fake.url,
                              ANTHROPIC_API_KEY="sk-ant-floor-check")
    # A key the fake refuses (401): the floor must send the provider's instead, as the proxy's managed mode does.
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-invalid"}
    refused = requests.post(fake.url + "/v1/messages", json={"model": "m", "max_tokens": 1, "messages": []},
                            headers=headers, timeout=30)
    assert refused.status_code == 401, refused.text
    body = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    plain = requests.post(floor.url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert plain.status_code == 200 and plain.json()["type"] == "message", plain.text
    streamed = requests.post(floor.url + "/v1/messages", json={**body, "stream": True}, headers=headers, timeout=30)
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream"), streamed.headers
    assert "event: message_start" in streamed.text and "event: message_stop" in streamed.text, streamed.text
