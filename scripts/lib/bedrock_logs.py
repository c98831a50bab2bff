"""Bedrock's own record of the gateway's calls: its model invocation log records in S3 (README "Bedrock
invocation logs"), read back for scripts/reconcile --with-bedrock-logs.

Bedrock delivers to s3://<bucket>/<prefix>AWSLogs/<account>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/
files of JSON records (gzipped by Bedrock; the local fake writes plain JSON), one record per line. The gateway
tags every call with request metadata (`tenant_id`, `user_id`, `request_id`, `request_type`); an id Bedrock
would refuse is sent as `sha256:` + its hex digest, computed here the same way (`metadata_value`, the twin
of metering_core::bedrock_metadata::metadata_value).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from collections import defaultdict
from typing import Iterable

import usage_lines as ul
from analytics import TABLE, ExportSource, connect, run_sql

Totals = dict[str, dict[str, int]]  # tenant -> metric -> value

DEFAULT_PREFIX = "bedrock-invocation-logs/"
DIGEST_PREFIX = "sha256:"
MAX_VALUE_CHARS = 256
_ALLOWED = re.compile(r"[a-zA-Z0-9 \t\n\x0b\x0c\r._:/=+$@-]*")


def metadata_value(identifier: str) -> str:
    """The metadata value that stands for `identifier`: itself when Bedrock accepts it, else its digest."""
    if len(identifier) <= MAX_VALUE_CHARS and _ALLOWED.fullmatch(identifier) and not identifier.startswith(DIGEST_PREFIX):
        return identifier
    return DIGEST_PREFIX + hashlib.sha256(identifier.encode()).hexdigest()


@dataclass(frozen=True)
class InvocationRecord:
    request_id: str | None  # the gateway's, from requestMetadata; None when the call carried none
    tenant_value: str | None  # requestMetadata.tenant_id as sent (possibly a digest)
    operation: str
    model_id: str
    timestamp: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    bedrock_request_id: str
    error_code: str | None = None  # a failed invocation (not billed by AWS, not billed by us)

    @classmethod
    def parse(cls, record: dict) -> "InvocationRecord":
        metadata = record.get("requestMetadata") or {}
        source = record.get("input") or {}
        output = record.get("output") or {}
        return cls(
            request_id=metadata.get("request_id"),
            tenant_value=metadata.get("tenant_id"),
            operation=record.get("operation", ""),
            model_id=record.get("modelId", ""),
            timestamp=record.get("timestamp", ""),
            input_tokens=int(source.get("inputTokenCount") or 0),
            output_tokens=int(output.get("outputTokenCount") or 0),
            cache_read_input_tokens=int(source.get("cacheReadInputTokenCount") or 0),
            cache_write_input_tokens=int(source.get("cacheWriteInputTokenCount") or 0),
            bedrock_request_id=record.get("requestId", ""),
            error_code=record.get("errorCode"),
        )

    @property
    def day(self) -> date | None:
        try:
            return datetime.fromisoformat(self.timestamp.replace("Z", "+00:00")).date()
        except ValueError:
            return None


def parse_object(body: bytes) -> list[dict]:
    """The records of one delivered file (gzipped or not): one JSON record per line."""
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    text = body.decode()
    records = []
    for line in text.splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def _children(s3, bucket: str, prefix: str) -> list[str]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return found


def _keys(s3, bucket: str, prefix: str) -> Iterable[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def read_records(s3, bucket: str, prefix: str, day: date) -> list[InvocationRecord]:
    """The records of successful calls stamped on `day` (UTC), from every account and region folder under the
    prefix (a record with an `errorCode` is a failed call: skipped). The next day's first hour is read too: a
    call at 23:59 may be delivered in the next folder."""
    records = []
    for account in _children(s3, bucket, f"{prefix}AWSLogs/"):
        for region in _children(s3, bucket, f"{account}BedrockModelInvocationLogs/"):
            folders = [f"{region}{day:%Y/%m/%d}/", f"{region}{day + timedelta(days=1):%Y/%m/%d}/00/"]
            for folder in folders:
                for key in _keys(s3, bucket, folder):
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    records += [InvocationRecord.parse(r) for r in parse_object(body)]
    return [r for r in records if r.day == day and not r.error_code]


# ------------------------------------------------------------------ the comparison (scripts/reconcile)

BEDROCK_METRICS = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]
BEDROCK_REQUEST_TYPE = "bedrock"


def _bedrock_zero() -> dict[str, int]:
    return dict.fromkeys(BEDROCK_METRICS, 0)


def bedrock_comparison(billed: ul.BilledLines, records: list[InvocationRecord], counter_items, day: date,
                       tenants: list[str] | None, exported: Totals | None = None,
                       ) -> tuple[list[tuple[str, Totals]], list[str], list[str]]:
    """Lines, counters, Bedrock's records (and the export, when given) of the Bedrock-served requests of `day`,
    per tenant.
    -> (sources for the table, findings by request id, per-tenant differences)."""
    lines = {rid: line for rid, line in billed.lines.items()
             if ul.line_day(line) == day and line.get("request_type") == BEDROCK_REQUEST_TYPE}
    # A tenant as the records name it (the id itself, or its digest) -> the tenant id.
    known = {line["tenant_id"] for line in lines.values()} | set(tenants or [])
    tenant_of_value = {metadata_value(t): t for t in known}
    wanted = set(tenants) if tenants else None

    def record_tenant(record: InvocationRecord) -> str:
        if record.tenant_value is None:
            return "(no tenant metadata)"
        return tenant_of_value.get(record.tenant_value, record.tenant_value)

    line_totals: Totals = defaultdict(_bedrock_zero)
    for line in lines.values():
        totals = line_totals[line["tenant_id"]]
        totals["requests"] += 1
        for metric in BEDROCK_METRICS[1:]:
            totals[metric] += int(line.get(metric) or 0)
    record_totals: Totals = defaultdict(_bedrock_zero)
    by_request: dict[str, InvocationRecord] = {}
    findings = []
    for record in records:
        tenant = record_tenant(record)
        if wanted is not None and tenant not in wanted:
            continue
        totals = record_totals[tenant]
        totals["requests"] += 1
        totals["input_tokens"] += record.input_tokens
        totals["output_tokens"] += record.output_tokens
        totals["cache_creation_input_tokens"] += record.cache_write_input_tokens
        totals["cache_read_input_tokens"] += record.cache_read_input_tokens
        if record.request_id is None:
            findings.append(f"MISSING-LINE {tenant} (no request_id) Bedrock request {record.bedrock_request_id} "
                            f"{record.operation} {record.model_id}: not made by the gateway, or without metadata")
            continue
        by_request[record.request_id] = record
    line_values = {metadata_value(rid): rid for rid in lines}
    for value, record in sorted(by_request.items()):
        if value not in line_values:
            findings.append(f"MISSING-LINE {record_tenant(record)} {value}: Bedrock served it ({record.operation}, "
                            f"{record.input_tokens} in / {record.output_tokens} out), no usage line bills it")
    for value, rid in sorted(line_values.items()):
        line = lines[rid]
        if wanted is not None and line["tenant_id"] not in wanted:
            continue
        record = by_request.get(value)
        if record is None:
            findings.append(f"MISSING-RECORD {line['tenant_id']} {rid}: billed ({line.get('input_tokens', 0)} in / "
                            f"{line.get('output_tokens', 0)} out), no Bedrock invocation record")
            continue
        pairs = [("input_tokens", record.input_tokens), ("output_tokens", record.output_tokens)]
        if record.cache_read_input_tokens or record.cache_write_input_tokens:
            pairs += [("cache_creation_input_tokens", record.cache_write_input_tokens),
                      ("cache_read_input_tokens", record.cache_read_input_tokens)]
        for metric, recorded in pairs:
            if int(line.get(metric) or 0) != recorded:
                findings.append(f"TOKENS {line['tenant_id']} {rid}: {metric} line {line.get(metric, 0)}, Bedrock {recorded}")
    counters: Totals = defaultdict(_bedrock_zero)
    for key, sums in counter_items.items():
        if key.request_type == BEDROCK_REQUEST_TYPE:
            counters[key.tenant_id]["requests"] += sums["request_count"]
            for metric in BEDROCK_METRICS[1:]:
                counters[key.tenant_id][metric] += sums[metric]
    sources = [("log lines", dict(line_totals)), ("counters", dict(counters)), ("bedrock record", dict(record_totals))]
    if exported is not None:
        sources.append(("export", exported))
    names = sorted(wanted if wanted is not None else {t for _, totals in sources for t in totals})
    differences = []
    for tenant in names:
        for metric in BEDROCK_METRICS:
            values = [(name, totals.get(tenant, {}).get(metric, 0)) for name, totals in sources]
            if len({value for _, value in values}) > 1:
                differences.append(f"{tenant}: bedrock {metric} differs: " + ", ".join(f"{n} {v}" for n, v in values))
    return sources, findings, differences


def export_bedrock_totals(source: ExportSource, day: date) -> Totals:
    """Sums of the exported rows of `day` served by Bedrock."""
    partition = f"year={day:%Y}/month={day:%m}/day={day:%d}/"
    connection = connect(source.local_root(only=partition))
    sums = ", ".join(f"sum({m})" for m in BEDROCK_METRICS[1:])
    where = (f"year = '{day:%Y}' AND month = '{day:%m}' AND day = '{day:%d}' "
             f"AND request_type = '{BEDROCK_REQUEST_TYPE}'")
    _, rows = run_sql(connection, f"SELECT tenant_id, count(*), {sums} FROM {TABLE} WHERE {where} GROUP BY tenant_id")
    return {row[0]: dict(zip(BEDROCK_METRICS, (int(v or 0) for v in row[1:]))) for row in rows}
