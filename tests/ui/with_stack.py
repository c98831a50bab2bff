#!/usr/bin/env python3
"""Start the local stack (scripts/lib/localstack.py), seed users and usage, run a command against it, stop it.

    with_stack.py OUTPUT_DIR -- COMMAND...

The command gets the stack in its environment: UI_BASE_URL (the local API, which serves /ui), the users
(TENANT_USER/TENANT_PASSWORD/TENANT_ID, OTHER_TENANT_ID, ADMIN_USER/ADMIN_PASSWORD) and OUTPUT_DIR. The
tenant's usage comes from real chats (today) and, for a chart with a shape, counters of earlier days written
the way the chat path writes them. Exit code: the command's.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))

import requests  # noqa: E402

from localstack import LocalStack  # noqa: E402
from provision import DEFAULT_MODEL_ID, generate_password, local_users  # noqa: E402


def add_day_counters(resources, tenant_id: str, day: dt.date, requests_: int, input_tokens: int, output_tokens: int) -> None:
    year, week, _ = day.isocalendar()
    dynamodb = resources.client("dynamodb")
    for prefix, period in (("DAY", day.isoformat()), ("WEEK", f"{year}-W{week:02d}")):
        dynamodb.update_item(
            TableName=resources.usage_table,
            Key={"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"{prefix}#{period}#bedrock#{DEFAULT_MODEL_ID}"}},
            UpdateExpression="ADD input_tokens :i, output_tokens :o, total_tokens :t, request_count :n "
            "SET tenant_id = :tenant, period = :p, request_type = :rt, model_id = :m, gsi1pk = :g1, gsi1sk = :g2",
            ExpressionAttributeValues={
                ":i": {"N": str(input_tokens)}, ":o": {"N": str(output_tokens)},
                ":t": {"N": str(input_tokens + output_tokens)}, ":n": {"N": str(requests_)},
                ":tenant": {"S": tenant_id}, ":p": {"S": period}, ":rt": {"S": "bedrock"}, ":m": {"S": DEFAULT_MODEL_ID},
                ":g1": {"S": f"{prefix}#{period}"}, ":g2": {"S": f"TENANT#{tenant_id}#bedrock#{DEFAULT_MODEL_ID}"},
            },
        )


def chat(api_url: str, token: str, prompt: str) -> None:
    response = requests.post(f"{api_url}/bedrock/chat", json={"prompt": prompt},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()


def wait_requests(api_url: str, token: str, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        report = requests.get(f"{api_url}/v1/usage/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        today = report.get("daily_stats", {}).get(report.get("to"), {})
        if today.get("requests") == expected or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def seed(stack: LocalStack) -> dict[str, str]:
    users = local_users(stack.resources)
    suffix = uuid.uuid4().hex[:8]
    password = generate_password()
    tenant, other, ops = f"acme-{suffix}", f"globex-{suffix}", f"ops-{suffix}"
    users.create_tenant_user(f"alice-{suffix}", f"alice-{suffix}@example.com", tenant, password)
    users.create_tenant_user(f"bob-{suffix}", f"bob-{suffix}@example.com", other, password)
    users.create_tenant_user(f"root-{suffix}", f"root-{suffix}@example.com", ops, password, admin=True)
    alice = users.get_id_token(f"alice-{suffix}", password)
    bob = users.get_id_token(f"bob-{suffix}", password)
    for prompt in ("Hello dashboard", "How many tokens is this sentence", "one two three four five six"):
        chat(stack.api.url, alice, prompt)
    for prompt in ("Hi from globex", "A somewhat longer prompt from the second tenant of the stack"):
        chat(stack.api.url, bob, prompt)
    today = dt.datetime.now(dt.timezone.utc).date()
    for days_ago, (count, input_tokens, output_tokens) in enumerate([(4, 120, 300), (9, 410, 820), (2, 60, 90), (6, 220, 500)], 1):
        add_day_counters(stack.resources, tenant, today - dt.timedelta(days=days_ago), count, input_tokens, output_tokens)
    add_day_counters(stack.resources, other, today - dt.timedelta(days=2), 3, 1000, 2000)
    wait_requests(stack.api.url, alice, 3)
    wait_requests(stack.api.url, bob, 2)
    return {
        "UI_BASE_URL": stack.api.url,
        "TENANT_USER": f"alice-{suffix}",
        "TENANT_PASSWORD": password,
        "TENANT_ID": tenant,
        "OTHER_TENANT_ID": other,
        "ADMIN_USER": f"root-{suffix}",
        "ADMIN_PASSWORD": password,
        "ADMIN_TENANT_ID": ops,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    output_dir = Path(argv[0]).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stack = LocalStack.start(output_dir / "stack")
    try:
        env = dict(os.environ, **seed(stack), OUTPUT_DIR=str(output_dir))
        print(f"local stack up and seeded in {time.monotonic() - started:.1f}s: {stack.api.url}/ui "
              f"(logs in {output_dir / 'stack'})", file=sys.stderr, flush=True)
        return subprocess.run(argv[2:], env=env).returncode
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
