#!/usr/bin/env python3
"""scripts/reconcile --date D: the three records of a day's usage must agree, tenant by tenant.

1. the DynamoDB counters: the day's items (`gsi1pk = DAY#D`), summed over request types and models;
2. the usage lines in CloudWatch Logs whose own timestamp is on D (the source of truth);
3. the exported rows in s3://<bucket>/<prefix>year=../month=../day=../ (read with DuckDB).

Compared: requests, input/output/total tokens, cache creation/read tokens (and duplicate request ids in the
export). Exit 0 when all agree, 1 on any difference (printed), 2 when a prerequisite is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack_state  # noqa: E402
from analytics import TABLE, ExportSource, connect, normalize_prefix, run_sql  # noqa: E402

METRICS = [
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]
USAGE_FILTER_PATTERN = '{ $.event = "token_usage" }'
# Same window as the log processor: lines are stamped when the request arrived but written when it ended.
READ_BEFORE = timedelta(minutes=5)
READ_AFTER = timedelta(minutes=20)
APP_STACK_NAME = os.environ.get("BM_STACK_NAME", "BedrockMeteringStack")
ANALYTICS_STACK_NAME = os.environ.get("BM_ANALYTICS_STACK_NAME", "MeteringAnalyticsStack")


class Prerequisite(RuntimeError):
    pass


Totals = dict[str, dict[str, int]]  # tenant -> metric -> value


@dataclass
class Target:
    dynamodb: object
    logs: object
    s3: object
    table: str
    log_groups: list[str]
    bucket: str
    prefix: str
    cache_dir: Path


def counter_totals(dynamodb, table: str, day: date) -> Totals:
    totals: Totals = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :day",
        ExpressionAttributeValues={":day": {"S": f"DAY#{day.isoformat()}"}},
    )
    for page in pages:
        for item in page["Items"]:
            tenant = item["tenant_id"]["S"]
            number = lambda name: int(item.get(name, {"N": "0"})["N"])  # noqa: E731
            totals[tenant]["requests"] += number("request_count")
            for metric in METRICS[1:]:
                totals[tenant][metric] += number(metric)
    return dict(totals)


def log_line_totals(logs, log_groups: list[str], day: date, now: datetime | None = None) -> tuple[Totals, dict[str, int]]:
    """Sums of the usage lines of `day` (by their own timestamp), and the lines per tenant that carry
    metering_error (their counters were not updated: a known cause of a difference)."""
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    end = min(start + timedelta(days=1) + READ_AFTER, now or datetime.now(timezone.utc))
    totals: Totals = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    metering_errors: dict[str, int] = defaultdict(int)
    for group in log_groups:
        pages = logs.get_paginator("filter_log_events").paginate(
            logGroupName=group,
            startTime=int((start - READ_BEFORE).timestamp() * 1000),
            endTime=int(end.timestamp() * 1000),
            filterPattern=USAGE_FILTER_PATTERN,
        )
        for page in pages:
            for event in page.get("events", []):
                line = usage_line(event.get("message", ""))
                if line is None or line_day(line) != day:
                    continue
                tenant = line["tenant_id"]
                totals[tenant]["requests"] += 1
                for metric in METRICS[1:]:
                    totals[tenant][metric] += int(line.get(metric, 0))
                if line.get("metering_error"):
                    metering_errors[tenant] += 1
    return dict(totals), dict(metering_errors)


def usage_line(message: str) -> dict | None:
    """The usage line in a log message, or None (moto ignores the filter pattern: check here too)."""
    message = message.strip()
    if not message.startswith("{"):
        return None
    try:
        line = json.loads(message)
    except ValueError:
        return None
    if not isinstance(line, dict) or line.get("event") != "token_usage" or "tenant_id" not in line:
        return None
    return line


def line_day(line: dict) -> date | None:
    try:
        return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).astimezone(timezone.utc).date()
    except (KeyError, ValueError):
        return None


def export_totals(source: ExportSource, day: date) -> tuple[Totals, int]:
    """Sums of the exported rows of `day`, and how many rows repeat a request id."""
    partition = f"year={day:%Y}/month={day:%m}/day={day:%d}/"
    connection = connect(source.local_root(only=partition))
    sums = ", ".join(f"sum({m})" for m in METRICS[1:])
    where = f"year = '{day:%Y}' AND month = '{day:%m}' AND day = '{day:%d}'"
    _, rows = run_sql(connection, f"SELECT tenant_id, count(*), {sums} FROM {TABLE} WHERE {where} GROUP BY tenant_id")
    totals = {row[0]: dict(zip(METRICS, (int(v or 0) for v in row[1:]))) for row in rows}
    _, duplicates = run_sql(connection, f"SELECT count(*) - count(DISTINCT request_id) FROM {TABLE} WHERE {where}")
    return totals, int(duplicates[0][0])


def compare(counters: Totals, lines: Totals, exported: Totals, tenants: list[str] | None) -> list[str]:
    """One message per tenant and metric where the three sources disagree."""
    names = sorted(set(tenants) if tenants else set(counters) | set(lines) | set(exported))
    zero = dict.fromkeys(METRICS, 0)
    differences = []
    for tenant in names:
        for metric in METRICS:
            values = (counters.get(tenant, zero)[metric], lines.get(tenant, zero)[metric], exported.get(tenant, zero)[metric])
            if len(set(values)) > 1:
                differences.append(
                    f"{tenant}: {metric} differs: counters {values[0]}, log lines {values[1]}, export {values[2]}"
                )
    return differences


def print_table(counters: Totals, lines: Totals, exported: Totals, tenants: list[str], out=sys.stdout) -> None:
    zero = dict.fromkeys(METRICS, 0)
    header = ["tenant", "source", *METRICS]
    rows = []
    for tenant in tenants:
        for name, source in (("counters", counters), ("log lines", lines), ("export", exported)):
            rows.append([tenant, name, *(str(source.get(tenant, zero)[m]) for m in METRICS)])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) + "\n")


def local_target(args: argparse.Namespace) -> Target:
    import boto3
    import requests

    from provision import LOCAL_CREDENTIALS

    state = stack_state.read_state()
    if state is None:
        raise Prerequisite(f"no local stack: {stack_state.state_file()} does not exist. Start one with scripts/dev (or pass --aws).")
    endpoint = state["AWS_ENDPOINT_URL"]
    try:
        requests.get(endpoint + "/moto-api/", timeout=2)
    except requests.RequestException:
        raise Prerequisite(f"the local stack is not running (moto at {endpoint} does not answer); restart it with scripts/dev") from None
    client = lambda service: boto3.client(service, endpoint_url=endpoint, region_name=state["AWS_REGION"], **LOCAL_CREDENTIALS)  # noqa: E731
    bucket = args.bucket or state["ANALYTICS_BUCKET"]
    prefix = normalize_prefix(args.prefix if args.prefix is not None else "logs/")
    return Target(
        dynamodb=client("dynamodb"),
        logs=client("logs"),
        s3=client("s3"),
        table=args.table or state["USAGE_TABLE_NAME"],
        log_groups=args.log_group or [state["USAGE_LOG_GROUP"]],
        bucket=bucket,
        prefix=prefix,
        cache_dir=args.cache_dir or stack_state.local_dir() / "analytics" / bucket / prefix,
    )


def aws_target(args: argparse.Namespace) -> Target:
    import boto3

    from export_logs import Prerequisite as ExportPrerequisite, stack_output

    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        if "127.0.0.1" in os.environ[key] or "localhost" in os.environ[key]:
            del os.environ[key]
    session = boto3.Session()
    if session.get_credentials() is None or not session.region_name:
        raise Prerequisite("set AWS credentials (AWS_PROFILE...) and AWS_REGION for --aws")
    try:
        table = args.table or stack_output(session, APP_STACK_NAME, "UsageTableName")
        function = stack_output(session, ANALYTICS_STACK_NAME, "LogProcessorFunctionName")
        bucket = args.bucket or stack_output(session, ANALYTICS_STACK_NAME, "AnalyticsBucketName")
    except ExportPrerequisite as error:
        raise Prerequisite(str(error)) from None
    # The log groups and prefix the deployed export reads and writes: its own environment says.
    variables = session.client("lambda").get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
    log_groups = args.log_group or [g.strip() for g in variables.get("USAGE_LOG_GROUPS", "").split(",") if g.strip()]
    if not log_groups:
        raise Prerequisite(f"{function} has no USAGE_LOG_GROUPS; pass --log-group")
    prefix = normalize_prefix(args.prefix if args.prefix is not None else variables.get("LOGS_PREFIX", "logs/"))
    return Target(
        dynamodb=session.client("dynamodb"),
        logs=session.client("logs"),
        s3=session.client("s3"),
        table=table,
        log_groups=log_groups,
        bucket=bucket,
        prefix=prefix,
        cache_dir=args.cache_dir or stack_state.local_dir() / "analytics-aws" / bucket / prefix,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/reconcile",
        description="Compare, per tenant, a day's DynamoDB counters, its usage lines in CloudWatch Logs and its "
        "exported Parquet rows. Exit 0 when they agree, 1 on any difference (printed), 2 on a missing prerequisite.",
    )
    parser.add_argument("--date", required=True, help="the UTC day, YYYY-MM-DD")
    parser.add_argument("--tenant", action="append", help="only this tenant (repeatable; default: every tenant seen)")
    parser.add_argument("--aws", action="store_true", help="the deployed stack (also: BM_STACK=aws)")
    parser.add_argument("--local", action="store_true", help="the local stack even if BM_STACK=aws")
    parser.add_argument("--table", help="usage table (default: the stack's)")
    parser.add_argument("--log-group", action="append", help="usage log group (repeatable; default: the stack's)")
    parser.add_argument("--bucket", help="analytics bucket (default: the stack's)")
    parser.add_argument("--prefix", help="export key prefix (default logs/, or the deployed LOGS_PREFIX)")
    parser.add_argument("--cache-dir", type=Path, help="where the day's objects are mirrored")
    parser.add_argument("--quiet", action="store_true", help="print only the differences")
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"error: --date must be a day like 2026-11-23, got {args.date!r}", file=sys.stderr)
        return 2
    use_aws = args.aws or (not args.local and os.environ.get("BM_STACK", "local").lower() == "aws")
    try:
        target = aws_target(args) if use_aws else local_target(args)
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counters = counter_totals(target.dynamodb, target.table, day)
    lines, metering_errors = log_line_totals(target.logs, target.log_groups, day)
    source = ExportSource(s3=target.s3, bucket=target.bucket, prefix=target.prefix, cache_dir=target.cache_dir)
    exported, duplicates = export_totals(source, day)
    tenants = sorted(set(args.tenant) if args.tenant else set(counters) | set(lines) | set(exported))
    differences = compare(counters, lines, exported, tenants)
    if duplicates:
        differences.append(f"the export of {day} repeats {duplicates} request id(s)")
    if not args.quiet:
        print(f"{day}: counters {target.table} | log lines {', '.join(target.log_groups)} | export s3://{target.bucket}/{target.prefix}")
        print_table(counters, lines, exported, tenants)
    for tenant, count in sorted(metering_errors.items()):
        if tenant in tenants:
            print(f"note: {count} usage line(s) of {tenant} carry metering_error: their counters were not updated")
    if differences:
        for difference in differences:
            print(f"DIFFERENCE {difference}")
        print(f"{len(differences)} difference(s) for {day}", file=sys.stderr)
        return 1
    print(f"OK: {len(tenants)} tenant(s) agree for {day}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
