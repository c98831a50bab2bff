"""Stream mode (`exportMode: "stream"`, infra/lib/analytics/usage-stream.ts) as far as moto 5.2.5 can run it.

Exercised here, in moto's server: a CloudWatch Logs subscription filter whose destination is a Firehose
delivery stream (created with the stack's processors, partitioning and format conversion settings), log events
put with PutLogEvents delivered by moto to that stream and on to S3, as the gzip CloudWatch Logs envelope
(`messageType: DATA_MESSAGE`, `logEvents[].message`) that the stream's Decompression and CloudWatchLogProcessing
processors take apart on AWS. Then the day's partition, holding a stream object, is re-exported by the log
processor (the backfill/rebuild path): the stream's object is replaced, never duplicated.

Not exercised by moto (it stores those settings but ignores them), so checked by the CDK assertions
(infra/test/analytics-stream.test.ts) and cfn-lint only:
- the subscription filter pattern (moto sends every event; AWS sends only `token_usage` lines);
- Decompression, CloudWatchLogProcessing (message extraction) and MetadataExtraction (the jq partition query);
- dynamic partitioning (moto names objects `<prefix>YYYY/MM/DD/HH/<stream>-...` by arrival time);
- record format conversion to Parquet with the Glue table's schema (moto writes the gzip envelopes as they are);
- buffering, encryption, the IAM roles, error output and the Firehose metrics behind the alarms.
Here those steps are done by the test itself (gunzip, the messages, the line's own UTC day, DuckDB writing the
Glue columns), only to put a stream-shaped object where the stream would.
"""
from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, time as day_time, timedelta, timezone

import pytest

from synthetic_usage import put_lines, usage_line
from test_export import TABLE, export, own_space, query, utc_today
from test_export import log_processor_bin, operator_env  # noqa: F401  (module fixtures, reused)

# The settings of the stack's stream (infra/lib/analytics/usage-stream.ts) that moto accepts.
STREAM_FILTER_PATTERN = '{ $.event = "token_usage" }'
PARTITION_QUERY = "{year: .timestamp[0:4], month: .timestamp[5:7], day: .timestamp[8:10]}"


def create_stream(resources, bucket_prefix: str) -> str:
    firehose = resources.client("firehose")
    name = f"usage-lines-{uuid.uuid4().hex[:8]}"
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{resources.analytics_bucket}",
            "RoleARN": "arn:aws:iam::123456789012:role/firehose-delivery",
            # moto does not evaluate !{partitionKeyFromQuery:...}: a plain prefix to find its objects by.
            "Prefix": bucket_prefix,
            "CompressionFormat": "UNCOMPRESSED",
            "BufferingHints": {"SizeInMBs": 128, "IntervalInSeconds": 900},
            "ProcessingConfiguration": {"Enabled": True, "Processors": [
                {"Type": "Decompression", "Parameters": [{"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]},
                {"Type": "CloudWatchLogProcessing",
                 "Parameters": [{"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]},
                {"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": PARTITION_QUERY},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
            ]},
            "DynamicPartitioningConfiguration": {"Enabled": True, "RetryOptions": {"DurationInSeconds": 300}},
        },
    )
    return firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["DeliveryStreamARN"]


def stream_shaped_parquet(lines: list[dict], path) -> None:
    """What the stream's format conversion writes: the Glue columns by name; what a line lacks is null."""
    from analytics import ADDED_COLUMNS, BIGINT_COLUMNS, STRING_COLUMNS
    from analytics_env import ensure_analytics_packages

    ensure_analytics_packages()
    import duckdb

    source = path.with_suffix(".json")
    source.write_text("\n".join(json.dumps(line) for line in lines))
    types = {**{c: "VARCHAR" for c in STRING_COLUMNS}, **{c: "BIGINT" for c in BIGINT_COLUMNS}}
    present = ", ".join(f"'{c}': '{t}'" for c, t in types.items())
    added = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in ADDED_COLUMNS)
    columns = ", ".join(f'"{c}"' for c in types)
    duckdb.sql(f"COPY (SELECT {columns}, {added} FROM read_json('{source}', columns = {{{present}}})) "
               f"TO '{path}' (FORMAT parquet)")


def test_subscribed_lines_reach_s3_through_firehose_and_a_reexport_replaces_the_streams_objects(
        resources, operator_env, tmp_path):
    # GIVEN a log group subscribed (filter on token_usage) to a Firehose stream delivering to the bucket
    group, prefix = own_space(resources)
    raw_prefix = f"{prefix}firehose-raw/"
    stream_arn = create_stream(resources, raw_prefix)
    logs = resources.client("logs")
    logs.put_subscription_filter(logGroupName=group, filterName="usage-lines", filterPattern=STREAM_FILTER_PATTERN,
                                 destinationArn=stream_arn, roleArn="arn:aws:iam::123456789012:role/cwl-to-firehose")
    assert logs.describe_subscription_filters(logGroupName=group)["subscriptionFilters"][0]["destinationArn"] == stream_arn

    # WHEN usage lines are logged: two of today, one of a request that arrived just before midnight (logged
    # after it), among a counter_update line and a platform line
    today = utc_today()
    midnight = datetime.combine(today, day_time(), tzinfo=timezone.utc)
    now = datetime.now(timezone.utc) - timedelta(seconds=5)
    usage = [usage_line(midnight - timedelta(milliseconds=1), "tenant-stream"),
             usage_line(max(midnight, now - timedelta(seconds=2)), "tenant-stream"),
             usage_line(max(midnight, now - timedelta(seconds=1)), "tenant-stream", model_id="anthropic.claude-3-haiku-20240307-v1:0")]
    others = [json.dumps({"event": "counter_update", "request_id": usage[1]["request_id"], "outcome": "unknown",
                          "day": today.isoformat(), "tenant_id": "tenant-stream", "timestamp": usage[1]["timestamp"],
                          "request_type": "bedrock", "model_id": usage[1]["model_id"], "error": "timeout"}),
              "START RequestId: 42 Version: $LATEST"]
    own_times = [int(datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp() * 1000) for line in usage]
    put_lines(logs, group, [*usage, *others], at_ms=own_times + [int(now.timestamp() * 1000)] * len(others))

    # THEN Firehose delivered them to S3 as the gzip CloudWatch Logs envelope the stream's processors expect
    s3 = resources.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=resources.analytics_bucket, Prefix=raw_prefix).get("Contents", [])]
    assert keys, "nothing delivered"
    envelopes = [json.loads(gzip.decompress(s3.get_object(Bucket=resources.analytics_bucket, Key=k)["Body"].read()))
                 for k in keys]
    assert {(e["messageType"], e["logGroup"]) for e in envelopes} == {("DATA_MESSAGE", group)}
    messages = [event["message"] for e in envelopes for event in e["logEvents"]]
    # moto ignores the filter pattern: every event arrives (AWS would send the three usage lines only).
    assert len(messages) == len(usage) + len(others)
    extracted = [json.loads(m) for m in messages if m.startswith("{") and json.loads(m).get("event") == "token_usage"]
    assert [line["request_id"] for line in extracted] == [line["request_id"] for line in usage]

    # WHEN the stream's partitioning and conversion put them in their days (the line's own UTC day)
    by_day: dict[tuple[str, str, str], list[dict]] = {}
    for line in extracted:
        by_day.setdefault((line["timestamp"][0:4], line["timestamp"][5:7], line["timestamp"][8:10]), []).append(line)
    yesterday = today - timedelta(days=1)
    assert sorted(by_day) == sorted({(f"{d:%Y}", f"{d:%m}", f"{d:%d}") for d in (yesterday, today)})
    for (year, month, day), lines in by_day.items():
        local = tmp_path / f"{year}{month}{day}.parquet"
        stream_shaped_parquet(lines, local)
        s3.upload_file(str(local), resources.analytics_bucket,
                       f"{prefix}year={year}/month={month}/day={day}/stream-{uuid.uuid4().hex}.parquet")

    # THEN the table reads the stream's rows unchanged, with what only the export knows left null
    rows = query(operator_env, f"SELECT request_id, day, cost_usd, counter_outcome FROM {TABLE} ORDER BY \"timestamp\"",
                 "--prefix", prefix)
    assert [r["request_id"] for r in rows] == [line["request_id"] for line in usage]
    assert rows[0]["day"] == f"{yesterday:%d}"
    assert all(r["cost_usd"] is None and r["counter_outcome"] is None for r in rows), rows

    # WHEN the log processor re-exports both days (a backfill)
    summary = export(operator_env, "--from", yesterday.isoformat(), "--to", today.isoformat(),
                     "--log-group", group, "--prefix", prefix)

    # THEN each day's stream object is replaced by the export's rows: priced, with their counter outcome, once
    assert [d["stale_objects_deleted"] for d in summary["days"]] == [1, 1], summary
    rows = query(operator_env, f"SELECT request_id, cost_usd, counter_outcome FROM {TABLE} ORDER BY \"timestamp\"",
                 "--prefix", prefix)
    assert [r["request_id"] for r in rows] == [line["request_id"] for line in usage]
    assert all(r["cost_usd"] is not None for r in rows), rows
    assert [r["counter_outcome"] for r in rows] == ["applied", "unknown", "applied"]
