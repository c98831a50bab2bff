"""Synthetic usage lines, put straight into a CloudWatch Logs group (moto): the large-day and midnight
tests of the export, and scripts/bench-export."""
from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime, time, timedelta, timezone

MODELS = ["anthropic.claude-3-haiku-20240307-v1:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "amazon.nova-lite-v1:0"]
BATCH = 10_000  # PutLogEvents takes at most 10,000 events per call


def iso_millis(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def usage_line(at: datetime, tenant_id: str, user_id: str = "user-1", model_id: str = MODELS[0], input_tokens: int = 10,
               output_tokens: int = 20, cache_creation: int = 0, cache_read: int = 0, latency_ms: int = 100,
               request_id: str | None = None) -> dict:
    return {
        "event": "token_usage",
        "timestamp": iso_millis(at),
        "request_id": request_id or str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "model_id": model_id,
        "request_type": "bedrock",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens + cache_creation + cache_read,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "latency_ms": latency_ms,
    }


def synthetic_day(day: date, count: int, seed: int = 1, tenants: int = 40, until: datetime | None = None) -> list[dict]:
    """`count` usage lines spread evenly over `day` (UTC), up to `until` when given (today so far)."""
    rng = random.Random(seed)
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    span_ms = 86_400_000
    if until is not None:
        span_ms = max(1, min(span_ms, int((until - start).total_seconds() * 1000)))
    lines = []
    for index in range(count):
        tenant = rng.randrange(tenants)
        cached = rng.randrange(10) == 0
        lines.append(
            usage_line(
                start + timedelta(milliseconds=index * span_ms // count),
                tenant_id=f"tenant-{tenant:03d}",
                user_id=f"user-{tenant:03d}-{rng.randrange(5)}",
                model_id=MODELS[rng.randrange(len(MODELS))],
                input_tokens=5 + rng.randrange(2000),
                output_tokens=1 + rng.randrange(800),
                cache_creation=rng.randrange(500) if cached else 0,
                cache_read=rng.randrange(4000) if cached else 0,
                latency_ms=80 + rng.randrange(6000),
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            )
        )
    return lines


def epoch_ms(line: dict) -> int:
    return int(datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)


def put_lines(logs, log_group: str, lines: list[dict | str], stream: str | None = None, at_ms: list[int] | None = None) -> str:
    """PutLogEvents in batches of 10,000, each event stamped with its line's own time (or `at_ms`).
    Creates the group and a stream; returns the stream name."""
    try:
        logs.create_log_group(logGroupName=log_group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = stream or f"synthetic/{uuid.uuid4().hex}"
    logs.create_log_stream(logGroupName=log_group, logStreamName=stream)
    events = []
    for index, line in enumerate(lines):
        message = line if isinstance(line, str) else json.dumps(line, separators=(",", ":"))
        timestamp = at_ms[index] if at_ms is not None else epoch_ms(line)  # type: ignore[arg-type]
        events.append({"timestamp": timestamp, "message": message})
    events.sort(key=lambda event: event["timestamp"])
    for offset in range(0, len(events), BATCH):
        response = logs.put_log_events(logGroupName=log_group, logStreamName=stream, logEvents=events[offset : offset + BATCH])
        rejected = response.get("rejectedLogEventsInfo")
        if rejected:
            raise RuntimeError(f"PutLogEvents rejected events: {rejected}")
    return stream
