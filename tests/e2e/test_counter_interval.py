"""On the local server a counter key's writes start at least METERING_COUNTER_INTERVAL_MS apart: a tenant's burst
of chats costs the table a few coalesced writes, not one per request; its first write goes at once; the counters
still equal the usage lines. moto sits behind a tap that records every TransactWriteItems the API sends."""
from __future__ import annotations

import time

import pytest

from support import chat, counter_sums, new_tenant_id, poll, request_id_of, wait_usage_line

INTERVAL_MS = 700
BURST_SECONDS = 2.0


@pytest.fixture(scope="module")
def spaced_api(stack, dynamodb_tap):
    return stack.start_api("api-counter-interval", AWS_ENDPOINT_URL_DYNAMODB=dynamodb_tap.url,
                           METERING_COUNTER_INTERVAL_MS=str(INTERVAL_MS))


def test_a_busy_tenant_gets_few_spaced_writes_that_count_every_request_and_the_first_goes_at_once(
        stack, spaced_api, dynamodb_tap, user_factory):
    user = user_factory.create(new_tenant_id("interval"))
    partition = f"TENANT#{user.tenant_id}"

    # The first request of a quiet key is written at once, not an interval later.
    first = chat(spaced_api.url, user.token, {"prompt": "first"})
    assert first.status_code == 200, first.text
    lines = [wait_usage_line(spaced_api, request_id_of(first))]
    counted = poll("the first write", lambda: counter_sums(stack.resources, user.tenant_id, "DAY#")["request_count"],
                   lambda n: n == 1, timeout=INTERVAL_MS / 2000, interval=0.02)
    assert counted == 1, "the first request's counters were not written within half an interval"

    # A burst: chats one after another for two seconds.
    burst_started, request_ids = time.monotonic(), []
    while time.monotonic() - burst_started < BURST_SECONDS:
        response = chat(spaced_api.url, user.token, {"prompt": f"burst {len(request_ids)}"})
        assert response.status_code == 200, response.text
        request_ids.append(request_id_of(response))
    burst_seconds = time.monotonic() - burst_started
    assert len(request_ids) >= 15, f"only {len(request_ids)} requests in the burst: nothing to coalesce"
    wanted = set(request_ids)
    burst_lines = poll("the burst's usage lines",
                       lambda: [line for line in spaced_api.usage_lines() if line.get("request_id") in wanted],
                       lambda found: len(found) >= len(wanted), timeout=10)
    assert sorted(line["request_id"] for line in burst_lines) == sorted(wanted), "one usage line per request"
    lines += burst_lines

    expected = {"request_count": len(lines), "input_tokens": sum(line["input_tokens"] for line in lines),
                "output_tokens": sum(line["output_tokens"] for line in lines)}
    project = lambda sums: {name: sums[name] for name in expected}  # noqa: E731
    for period in ("DAY#", "WEEK#"):
        sums = poll(f"{period} counters", lambda: project(counter_sums(stack.resources, user.tenant_id, period)),
                    lambda s: s == expected, timeout=10)
        assert sums == expected, period

    # One write at once, then at most one per interval (plus the last one after the burst).
    writes = len(dynamodb_tap.transactions_touching(partition))
    most = 1 + int(burst_seconds * 1000 / INTERVAL_MS) + 2
    assert 2 <= writes <= most, f"{writes} counter writes for {len(lines)} requests over {burst_seconds:.1f} s"
