"""The Claude proxy's part of the local stack: its two DynamoDB tables in moto, the fake Anthropic API, and the
environment that turns the proxy on in `local-stack api`.

    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(run_dir)
    api = stack.start_api("api-proxy", **proxy_env(key_table, limit_table, fake.url))
"""
from __future__ import annotations

import uuid
from pathlib import Path

from processes import ManagedProcess, base_env, start_local_stack_service
from provision import LocalResources

# The provider's key the local proxy sends to the fake Anthropic in managed mode (the fake accepts any key
# but `sk-ant-invalid`, and records what it received).
LOCAL_PROVIDER_KEY = "sk-ant-local-provider-key"
# The Anthropic model the tests use, mapped to a Bedrock inference profile.
MODEL = "claude-sonnet-4-5-20250929"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
UNMAPPED_MODEL = "claude-unmapped-test-model"


def create_proxy_tables(resources: LocalResources, suffix: str | None = None) -> tuple[str, str]:
    """The API key table (pk; gsi1 = gsi1pk/gsi1sk; TTL ttl) and the rate-limit table (pk; TTL ttl)."""
    suffix = suffix or uuid.uuid4().hex[:8]
    dynamodb = resources.client("dynamodb")
    key_table = f"bedrock-metering-api-keys-{suffix}"
    limit_table = f"bedrock-metering-rate-limits-{suffix}"
    dynamodb.create_table(
        TableName=key_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in ("pk", "gsi1pk", "gsi1sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    dynamodb.create_table(
        TableName=limit_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    for table in (key_table, limit_table):
        dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
        dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    return key_table, limit_table


def start_fake_anthropic(run_dir: Path, name: str = "fake-anthropic", delay_ms: int = 0,
                         detached: bool = False) -> ManagedProcess:
    extra = ["--delay-ms", str(delay_ms)] if delay_ms else []
    return start_local_stack_service("fake-anthropic", name, run_dir, base_env(), extra_args=extra, detached=detached)


def proxy_env(key_table: str, limit_table: str | None, fake_anthropic_url: str, **overrides: str | None) -> dict[str, str | None]:
    """Overrides for `LocalStack.start_api` that turn the proxy on (managed mode, fallback on 429, tracking)."""
    env: dict[str, str | None] = {
        "API_KEY_TABLE_NAME": key_table,
        "RATE_LIMIT_TABLE_NAME": limit_table,
        "ANTHROPIC_BASE_URL": fake_anthropic_url,
        "ANTHROPIC_API_KEY": LOCAL_PROVIDER_KEY,
        "ANTHROPIC_TIMEOUT_MS": "30000",
        "BEDROCK_TIMEOUT_MS": "30000",
        "RUST_LOG": "info,claude_proxy=debug",
    }
    env.update(overrides)
    return env
