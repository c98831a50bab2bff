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
from typing import Iterable

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
    """The records stamped on `day` (UTC), from every account and region folder under the prefix. The next
    day's first hour is read too: a call at 23:59 may be delivered in the next folder."""
    records = []
    for account in _children(s3, bucket, f"{prefix}AWSLogs/"):
        for region in _children(s3, bucket, f"{account}BedrockModelInvocationLogs/"):
            folders = [f"{region}{day:%Y/%m/%d}/", f"{region}{day + timedelta(days=1):%Y/%m/%d}/00/"]
            for folder in folders:
                for key in _keys(s3, bucket, folder):
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    records += [InvocationRecord.parse(r) for r in parse_object(body)]
    return [r for r in records if r.day == day]
