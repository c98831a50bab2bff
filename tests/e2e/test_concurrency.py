"""Concurrent requests of several tenants: no counter update is lost, none lands on the wrong tenant."""
from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from support import (
    chat,
    expected_sums,
    fake_tokens,
    new_tenant_id,
    periods_of,
    poll,
    request_id_of,
    usage_lines_for,
    wait_counters,
)

REQUESTS = 50


def test_50_concurrent_requests_over_3_tenants_are_counted_exactly(stack, resources, api_url, user_factory):
    tenants = [new_tenant_id(f"conc{i}") for i in range(3)]
    # Two users in the first tenant: a tenant's counters add up all its users.
    users = [user_factory.create(tenants[0]), user_factory.create(tenants[0]),
             user_factory.create(tenants[1]), user_factory.create(tenants[2])]
    rng = random.Random(20261123)
    jobs = []
    for i in range(REQUESTS):
        user = users[i % len(users)]
        prompt = " ".join(f"word{j}" for j in range(rng.randint(1, 40)))
        jobs.append((user, prompt))
    start = threading.Barrier(REQUESTS)

    def send(job):
        user, prompt = job
        start.wait(timeout=30)
        return chat(api_url, user.token, {"prompt": prompt})

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        responses = list(pool.map(send, jobs))

    assert [r.status_code for r in responses] == [200] * REQUESTS, [r.text for r in responses if r.status_code != 200]
    request_ids = [request_id_of(r) for r in responses]
    assert len(set(request_ids)) == REQUESTS

    def all_lines():
        return {rid: usage_lines_for(stack.api, rid) for rid in request_ids}

    lines_by_id = poll("usage lines", all_lines, lambda found: all(found.values()), timeout=15)
    for (user, prompt), rid in zip(jobs, request_ids):
        lines = lines_by_id[rid]
        assert len(lines) == 1, f"request {rid}: expected one usage line, got {lines}"
        line = lines[0]
        assert line["tenant_id"] == user.tenant_id and line["user_id"] == user.sub, line
        assert (line["input_tokens"], line["output_tokens"]) == fake_tokens(prompt), (prompt, line)
        assert "metering_error" not in line, line

    for tenant in tenants:
        lines = [lines_by_id[rid][0] for (user, _), rid in zip(jobs, request_ids) if user.tenant_id == tenant]
        expected = expected_sums(lines)
        days = {periods_of(line)[0] for line in lines}
        weeks = {periods_of(line)[1] for line in lines}
        # One period unless the run straddles midnight UTC; then sum over the tenant's items of those periods.
        day_prefix = f"DAY#{days.pop()}#" if len(days) == 1 else "DAY#"
        week_prefix = f"WEEK#{weeks.pop()}#" if len(weeks) == 1 else "WEEK#"
        assert wait_counters(resources, tenant, day_prefix, expected) == expected, f"daily counters of {tenant}"
        assert wait_counters(resources, tenant, week_prefix, expected) == expected, f"weekly counters of {tenant}"
