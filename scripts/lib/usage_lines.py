"""What is billed, read back: the usage lines (`token_usage`) and the counter outcomes (`counter_update`) of a
period, and the DynamoDB counter items they should agree with. Shared by scripts/reconcile and
scripts/rebuild-counters.

Sources of lines:
- CloudWatch Logs (`FilterLogEvents` on the usage log groups): what Lambda ships from stdout; locally the
  API copies its lines into moto's log group;
- line files: the local API's own standard output (`<LOG_DIR>/api.stdout.log`), where every line is written
  first; the local copy into moto may lag or miss lines while moto is down.

A request is billed once: lines are keyed by `request_id` (a repeated id is counted once and reported).
Counter keys follow README "Usage counters in DynamoDB" (`metering_core::counters::CounterKey`); anything
else in the table (other sk prefixes, e.g. idempotency markers) is ignored.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

USAGE_EVENT = "token_usage"
COUNTER_UPDATE_EVENT = "counter_update"
# Outcomes of a counter update other than "applied", as written by the API (README "The usage line").
NOT_APPLIED_OUTCOMES = ("failed", "unknown")
# A line is stamped when its request arrived and written when its answer ended: read a little around the day.
READ_BEFORE = timedelta(minutes=5)
READ_AFTER = timedelta(minutes=20)
# Token attributes of a counter item, in the order printed.
TOKEN_METRICS = [
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]
COUNTER_METRICS = ["request_count", *TOKEN_METRICS]
DAY, WEEK = "DAY", "WEEK"


def week_label(day: date) -> str:
    """ISO week `YYYY-Www` (the ISO year), as `metering_core::counters::week_label`."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_days(day: date) -> list[date]:
    """Monday to Sunday of the ISO week of `day`."""
    monday = day - timedelta(days=day.isoweekday() - 1)
    return [monday + timedelta(days=offset) for offset in range(7)]


def day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=timezone.utc)


def is_closed(day: date, now: datetime) -> bool:
    """No more line or counter update can belong to `day`: its end plus the late-line window has passed."""
    return now >= day_end(day) + READ_AFTER


@dataclass(frozen=True, order=True)
class CounterKey:
    kind: str  # DAY or WEEK
    period: str  # YYYY-MM-DD or YYYY-Www
    tenant_id: str
    request_type: str
    model_id: str

    @property
    def pk(self) -> str:
        return f"TENANT#{self.tenant_id}"

    @property
    def sk(self) -> str:
        return f"{self.kind}#{self.period}#{self.request_type}#{self.model_id}"

    @property
    def gsi1pk(self) -> str:
        return f"{self.kind}#{self.period}"

    @property
    def gsi1sk(self) -> str:
        return f"TENANT#{self.tenant_id}#{self.request_type}#{self.model_id}"


def keys_of_line(line: dict) -> tuple[CounterKey, CounterKey]:
    """The day and ISO-week counter items a usage line adds to (its own timestamp's UTC day)."""
    day = line_day(line)
    assert day is not None  # only lines with a readable day are collected
    tenant, request_type, model = line["tenant_id"], line["request_type"], line["model_id"]
    return (
        CounterKey(DAY, day.isoformat(), tenant, request_type, model),
        CounterKey(WEEK, week_label(day), tenant, request_type, model),
    )


def line_day(line: dict) -> date | None:
    try:
        stamp = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return stamp.astimezone(timezone.utc).date() if stamp.tzinfo else None


def parse_message(message: str) -> dict | None:
    """A usage line or a counter outcome in a log message, or None (moto ignores filter patterns: check here)."""
    message = message.strip()
    if not message.startswith("{"):
        return None
    try:
        line = json.loads(message)
    except ValueError:
        return None
    if not isinstance(line, dict):
        return None
    if line.get("event") == USAGE_EVENT:
        required = ("request_id", "tenant_id", "request_type", "model_id", "timestamp")
        if all(isinstance(line.get(name), str) for name in required) and line_day(line) is not None:
            return line
        return None
    if line.get("event") == COUNTER_UPDATE_EVENT and isinstance(line.get("request_id"), str):
        return line
    return None


@dataclass
class BilledLines:
    """The usage lines of some days, one per request id, and the counter outcomes seen for them."""

    days: set[date]
    lines: dict[str, dict] = field(default_factory=dict)  # request_id -> first line seen
    repeated: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # request_id -> extra copies
    outcomes: dict[str, dict] = field(default_factory=dict)  # request_id -> last not-applied outcome

    def add(self, line: dict) -> None:
        if line["event"] == COUNTER_UPDATE_EVENT:
            if line.get("outcome") in NOT_APPLIED_OUTCOMES:
                self.outcomes[line["request_id"]] = line
            return
        if line_day(line) not in self.days:
            return
        request_id = line["request_id"]
        if request_id in self.lines:
            self.repeated[request_id] += 1
        else:
            self.lines[request_id] = line

    def of_tenant(self, tenant: str | None) -> list[dict]:
        return [line for line in self.lines.values() if tenant is None or line["tenant_id"] == tenant]

    def not_applied(self) -> dict[str, dict]:
        """request_id -> outcome, for the collected lines whose counter update failed or may not have applied."""
        return {rid: outcome for rid, outcome in self.outcomes.items() if rid in self.lines}


def collect(messages: Iterable[str], days: Iterable[date]) -> BilledLines:
    billed = BilledLines(days=set(days))
    for message in messages:
        line = parse_message(message)
        if line is not None:
            billed.add(line)
    return billed


def sums_by_key(lines: Iterable[dict], kinds: Iterable[str] = (DAY, WEEK)) -> dict[CounterKey, dict[str, int]]:
    """What each counter item must hold according to the lines."""
    wanted = set(kinds)
    sums: dict[CounterKey, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTER_METRICS, 0))
    for line in lines:
        for key in keys_of_line(line):
            if key.kind not in wanted:
                continue
            item = sums[key]
            item["request_count"] += 1
            for metric in TOKEN_METRICS:
                item[metric] += int(line.get(metric, 0) or 0)
    return dict(sums)


# ------------------------------------------------------------------------------------------- reading lines

def read_line_files(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as lines:
            yield from lines


def read_log_groups(logs, log_groups: Iterable[str], days: Iterable[date], now: datetime | None = None) -> Iterator[str]:
    """Messages of the log groups written while `days` could still get lines (FilterLogEvents, paged)."""
    days = sorted(days)
    start = datetime.combine(days[0], time(), tzinfo=timezone.utc) - READ_BEFORE
    end = min(day_end(days[-1]) + READ_AFTER, now or datetime.now(timezone.utc))
    for group in log_groups:
        pages = logs.get_paginator("filter_log_events").paginate(
            logGroupName=group,
            startTime=int(start.timestamp() * 1000),
            endTime=int(end.timestamp() * 1000),
            # Both events; moto ignores the pattern (the lines are checked again in parse_message).
            filterPattern='?"token_usage" ?"counter_update"',
        )
        for page in pages:
            for event in page.get("events", []):
                yield event.get("message", "")


# ------------------------------------------------------------------------------------------ counter items

def read_counters(dynamodb, table: str, kind: str, period: str, tenant: str | None = None) -> dict[CounterKey, dict[str, int]]:
    """The counter items of one day or week (one Query on gsi1; with a tenant, on its gsi1sk prefix)."""
    condition = "gsi1pk = :period"
    values = {":period": {"S": f"{kind}#{period}"}}
    if tenant is not None:
        condition += " AND begins_with(gsi1sk, :tenant)"
        values[":tenant"] = {"S": f"TENANT#{tenant}#"}
    items: dict[CounterKey, dict[str, int]] = {}
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table, IndexName="gsi1", KeyConditionExpression=condition, ExpressionAttributeValues=values
    )
    for page in pages:
        for item in page["Items"]:
            key = _counter_key(item)
            if key is None or key.kind != kind or key.period != period or (tenant is not None and key.tenant_id != tenant):
                continue
            items[key] = {metric: int(item.get(metric, {"N": "0"})["N"]) for metric in COUNTER_METRICS}
    return items


def _counter_key(item: dict) -> CounterKey | None:
    """The key of a counter item, or None for anything else (e.g. an idempotency marker)."""
    try:
        names = [item[name]["S"] for name in ("sk", "tenant_id", "request_type", "model_id", "period")]
    except KeyError:
        return None
    sk, tenant, request_type, model, period = names
    kind = sk.split("#", 1)[0]
    key = CounterKey(kind, period, tenant, request_type, model)
    if kind not in (DAY, WEEK) or key.sk != sk or item.get("pk", {}).get("S") != key.pk:
        return None
    return key


def set_counter(dynamodb, table: str, key: CounterKey, sums: dict[str, int], ttl: int) -> None:
    """SET (never ADD) one counter item to `sums`: running it twice gives the same item. An existing ttl is
    kept (the writer's TTL settings decided it)."""
    names = {f"#{metric}": metric for metric in COUNTER_METRICS}
    values = {f":{metric}": {"N": str(sums[metric])} for metric in COUNTER_METRICS}
    attributes = {"tenant_id": key.tenant_id, "period": key.period, "request_type": key.request_type,
                  "model_id": key.model_id, "gsi1pk": key.gsi1pk, "gsi1sk": key.gsi1sk}
    names.update({f"#{name}": name for name in attributes})
    values.update({f":{name}": {"S": value} for name, value in attributes.items()})
    names["#ttl"] = "ttl"
    values[":ttl"] = {"N": str(ttl)}
    assignments = [f"#{name} = :{name}" for name in [*COUNTER_METRICS, *attributes]]
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": key.pk}, "sk": {"S": key.sk}},
        UpdateExpression="SET " + ", ".join(assignments) + ", #ttl = if_not_exists(#ttl, :ttl)",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def default_ttl(key: CounterKey, daily_ttl_days: int = 90, weekly_ttl_days: int = 400) -> int:
    """The ttl the API would give a new item (README: the end of the period + USAGE_*_TTL_DAYS)."""
    if key.kind == DAY:
        start, days, keep = date.fromisoformat(key.period), 1, daily_ttl_days
    else:
        year, week = key.period.split("-W")
        start, days, keep = date.fromisocalendar(int(year), int(week), 1), 7, weekly_ttl_days
    start_epoch = int(datetime.combine(start, time(), tzinfo=timezone.utc).timestamp())
    return start_epoch + (days + keep) * 86_400
