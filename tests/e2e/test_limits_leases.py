"""Leases (README "Budgets and quotas"): a long-running process reserves budget in advance and admits most
requests from memory, without overshooting a budget, across processes and under concurrency, and gives back
what it did not use when idle or when it stops."""
from __future__ import annotations

import datetime as dt
import hashlib
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from dynamodb_tap import DynamoDbTap
from support import new_tenant_id, poll
from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic
from test_limits import (ACTUAL_TOKENS, RESERVED_TOKENS, admin, assert_budget_exceeded, budget_counter,  # noqa: F401
                         create_key, messages, put_limits, small_chat, tenant_usage_lines)


def lease_env(tap: DynamoDbTap, **overrides: str) -> dict:
    env = {"AWS_ENDPOINT_URL_DYNAMODB": tap.url, "LIMITS_STORE_TIMEOUT_MS": "20000", "LIMITS_LEASE_REQUESTS": "16",
           "LIMITS_LEASE_SHARE_PERCENT": "25", "LIMITS_LEASE_IDLE_MS": "300"}
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def tap(dynamodb_tap):
    """This module's name for its DynamoDB tap (the `dynamodb_tap` fixture of tests/conftest.py)."""
    return dynamodb_tap


@pytest.fixture(scope="module")
def leasing_apis(stack, tap):
    """Two processes with leases on, on the same table; the first serves the Claude proxy too."""
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-leases")
    stack.extra_apis.append(fake)
    proxy = proxy_env(key_table, limit_table, fake.url, RATE_LIMIT_TABLE_NAME=None)
    return [stack.start_api("api-leases-1", **lease_env(tap), **proxy), stack.start_api("api-leases-2", **lease_env(tap))]


def operations(tap: DynamoDbTap, tenant_id: str, operation: str) -> list[dict]:
    """The budget transactions of `tenant_id` whose marker says `operation` (reserve or settle)."""
    return [t for t in tap.transactions_touching(f"BUDGET#{tenant_id}")
            if any(item.get("Put", {}).get("Item", {}).get("operation", {}).get("S") == operation
                   for item in t["TransactItems"])]


def reservation_token(what: str, request_id: str) -> str:
    return hashlib.sha256(f"{what}#{request_id}".encode()).hexdigest()[:32]


def minute_admissions(resources, tenant_id: str, minutes: set[str]) -> int:
    return sum(budget_counter(resources, tenant_id, f"MINUTE#{minute}")["admitted"] for minute in minutes)


def test_most_requests_are_admitted_from_a_lease_and_what_is_left_goes_back_when_idle(leasing_apis, tap, admin,
                                                                                      user_factory, resources):
    api = leasing_apis[0]
    user = user_factory.create(new_tenant_id("leased"))
    # A lease is 16 requests' worth: 16 x the chat's reservation of tokens, and 16 requests of the minute.
    put_limits(api, admin, user.tenant_id, {"tokens_per_day": 1_000_000, "requests_per_minute": 1_000})
    minutes = set()
    for _ in range(12):
        minutes.add(dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M"))
        assert small_chat(api, user.token).status_code == 200
        minutes.add(dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M"))
    # One reservation admitted the 12 requests (two if a minute began on the way: a new minute's counter).
    reservations = operations(tap, user.tenant_id, "reserve")
    assert 1 <= len(reservations) <= len(minutes), [t["TransactItems"] for t in reservations]
    lines = poll("usage lines", lambda: tenant_usage_lines(api, user.tenant_id), lambda found: len(found) >= 12)
    metered = sum(line["total_tokens"] for line in lines)
    assert len(lines) == 12 and metered == 12 * ACTUAL_TOKENS
    # Idle for LIMITS_LEASE_IDLE_MS: the lease goes back, and the counters hold exactly what was used.
    day = f"DAY#{dt.datetime.now(dt.timezone.utc).date().isoformat()}"
    counter = poll("returned lease", lambda: budget_counter(resources, user.tenant_id, day),
                   lambda c: c == {"admitted": metered, "settled": metered})
    assert counter == {"admitted": metered, "settled": metered}
    assert poll("minutes", lambda: minute_admissions(resources, user.tenant_id, minutes), lambda n: n == 12) == 12
    # The settlements were merged into batch writes (one per ~100 ms), none a request's own.
    request_ids = {line["request_id"] for line in lines}
    settles = {t["ClientRequestToken"] for t in operations(tap, user.tenant_id, "settle")}
    assert settles and not settles & {reservation_token("settle", request_id) for request_id in request_ids}


def test_the_next_lease_is_reserved_ahead_so_no_request_after_the_first_waits_for_a_reservation(stack, tap, admin,
                                                                                                user_factory):
    # Leases kept when idle, so that only use empties them, however slow the machine.
    api = stack.start_api("api-leases-ahead", **lease_env(tap, LIMITS_LEASE_IDLE_MS="60000"))
    user = user_factory.create(new_tenant_id("leased-ahead"))
    put_limits(api, admin, user.tenant_id, {"tokens_per_day": 1_000_000})
    # Each request takes its hold (RESERVED_TOKENS) and gives back what it did not use: the lease of 16 holds
    # loses ACTUAL_TOKENS per request, so 40 requests use more than one lease.
    lease = 16 * RESERVED_TOKENS
    count = 40
    assert count * ACTUAL_TOKENS > lease
    responses = [small_chat(api, user.token) for _ in range(count)]
    assert [r.status_code for r in responses] == [200] * count
    tokens = {t["ClientRequestToken"] for t in operations(tap, user.tenant_id, "reserve")}
    own = [r for r in responses if reservation_token("reserve", r.headers["x-request-id"]) in tokens]
    # Only the first request reserved; the next lease was reserved in the background, before it was needed.
    assert own == responses[:1] and len(tokens) >= 2, (len(own), len(tokens))


def test_the_rate_limit_headers_count_a_lease_left_unused_as_remaining(leasing_apis, admin, user_factory, resources):
    api = leasing_apis[0]
    user = user_factory.create(new_tenant_id("leased-headers"))
    key = create_key(api, user.token)["key"]
    limit = 1_000_000
    put_limits(api, admin, user.tenant_id, {"tokens_per_month": limit})
    first = messages(api, key, "hello")
    assert first.status_code == 200, first.text
    # The request reserved a lease of 16 requests' worth in DynamoDB...
    month = f"MONTH#{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m')}"
    leased = budget_counter(resources, user.tenant_id, month)["admitted"]
    hold = leased // 16
    assert leased == 16 * hold and hold > 0
    # ...but only its own hold is gone from what the tenant may still use.
    assert int(first.headers["anthropic-ratelimit-tokens-remaining"]) == limit - hold, dict(first.headers)


def test_two_processes_with_leases_never_overshoot_a_budget_under_sixty_concurrent_requests(leasing_apis, tap, admin,
                                                                                             user_factory, resources):
    user = user_factory.create(new_tenant_id("leased-race"))
    limit = 30 * ACTUAL_TOKENS  # about 30 of the 60 fit
    lease = min(16 * RESERVED_TOKENS, limit * 25 // 100)  # the servers' lease: more than one request's worth
    assert lease > RESERVED_TOKENS
    put_limits(leasing_apis[0], admin, user.tenant_id, {"tokens_per_day": limit})
    targets = [leasing_apis[n % 2] for n in range(60)]
    with ThreadPoolExecutor(max_workers=60) as pool:
        responses = list(pool.map(lambda api: small_chat(api, user.token), targets))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    for response in refused:
        assert_budget_exceeded(response)
    lines = poll("usage lines", lambda: [line for api in leasing_apis for line in tenant_usage_lines(api, user.tenant_id)],
                 lambda found: len(found) >= len(ok))
    assert len(lines) == len(ok)
    metered = sum(line["total_tokens"] for line in lines)
    # Overshoot bound 0 with leases too; the under-use bound: one request's worth plus, per process, a lease
    # and the quarter of one it may have left when it reserves the next ahead.
    assert metered <= limit, f"metered {metered} tokens over the limit {limit}"
    assert metered >= limit - RESERVED_TOKENS - 2 * (lease + lease // 4), f"only {metered} of {limit} admitted"
    # Leases admitted requests without a reservation of their own (the token of a request's reservation is
    # derived from its request id: crates/metering-core/src/limits/service.rs `idempotency_token`).
    tokens = {t["ClientRequestToken"] for t in operations(tap, user.tenant_id, "reserve")}
    own = [r for r in ok if {reservation_token(what, r.headers["x-request-id"]) for what in ("reserve", "reserve-exact")}
           & tokens]
    assert len(own) < len(ok), "every admitted request made a reservation: no lease admitted any"
    day = f"DAY#{dt.datetime.now(dt.timezone.utc).date().isoformat()}"
    counter = poll("returned leases", lambda: budget_counter(resources, user.tenant_id, day),
                   lambda c: c == {"admitted": metered, "settled": metered})
    assert counter == {"admitted": metered, "settled": metered}


def test_a_stopping_process_gives_its_leases_back_and_a_killed_one_leaves_them_counted(stack, tap, admin, user_factory,
                                                                                       resources):
    # Leases kept for a minute when idle: only the stop can give them back within this test.
    apis = [stack.start_api(f"api-leases-stop-{n}", **lease_env(tap, LIMITS_LEASE_IDLE_MS="60000")) for n in (1, 2)]
    day = f"DAY#{dt.datetime.now(dt.timezone.utc).date().isoformat()}"
    users = [user_factory.create(new_tenant_id(f"leased-{how}")) for how in ("stopped", "killed")]
    for api, user in zip(apis, users):
        put_limits(api, admin, user.tenant_id, {"tokens_per_day": 1_000_000})
        assert [small_chat(api, user.token).status_code for _ in range(3)] == [200] * 3
        poll("usage lines", lambda: tenant_usage_lines(api, user.tenant_id), lambda found: len(found) >= 3)
        poll("settled", lambda: budget_counter(resources, user.tenant_id, day)["settled"], lambda n: n == 3 * ACTUAL_TOKENS)
    held = [budget_counter(resources, user.tenant_id, day) for user in users]
    # Each holds its lease (16 requests' worth): the 3 requests' use is settled, the rest stays leased.
    lease = 16 * RESERVED_TOKENS
    assert held == [{"admitted": lease, "settled": 3 * ACTUAL_TOKENS}] * 2, held
    # SIGTERM: the process returns its leases before it exits.
    assert apis[0].stop() == 0
    assert budget_counter(resources, users[0].tenant_id, day) == {"admitted": 3 * ACTUAL_TOKENS, "settled": 3 * ACTUAL_TOKENS}
    # SIGKILL: nothing returns the lease; it stays counted (stricter, never looser) until the period ends.
    apis[1]._signal(signal.SIGKILL)
    apis[1]._wait_gone(10)
    assert budget_counter(resources, users[1].tenant_id, day) == held[1]
