#!/usr/bin/env python3
"""scripts/reconcile --date D: what is billed (the usage lines) against what is counted (the DynamoDB
counters) and what is exported (the Parquet rows), tenant by tenant, for the day and for its ISO week.

1. the usage lines whose own timestamp is on D (the bill), one per request id (from the usage log groups,
   or from --lines-file), and the `counter_update` lines that say a request's counter update failed or has
   an unknown outcome (a timeout after the request may have reached the table);
2. the DynamoDB counters: the day's items (`gsi1pk = DAY#D`) and the week's (`WEEK#YYYY-Www`), summed over
   request types and models;
3. the exported rows in s3://<bucket>/<prefix>year=../month=../day=../ (read with DuckDB; --no-export skips);
4. with --with-bedrock-logs, Bedrock's own record: its model invocation log records of the day (README
   "Bedrock invocation logs"), matched to the lines by the `request_id` of their request metadata. For the
   Bedrock-served requests (request_type `bedrock`) it compares lines, counters, export and records per tenant,
   and names every request missing on either side (MISSING-LINE: Bedrock served it, nobody billed it;
   MISSING-RECORD: billed, but Bedrock has no record of it) and every per-request token difference.

Compared: requests, input/output/total tokens, cache creation/read tokens (and duplicate request ids). For
every tenant whose counters disagree with its lines it prints the exact scripts/rebuild-counters command.
Exit 0 when all agree, 1 on any difference (printed), 2 when a prerequisite is missing.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bedrock_logs  # noqa: E402
from bedrock_logs import BEDROCK_METRICS, bedrock_comparison, export_bedrock_totals  # noqa: E402
import usage_lines as ul  # noqa: E402
from analytics import TABLE, ExportSource, connect, run_sql  # noqa: E402
from billing_target import Prerequisite, aws_target, local_target, wants_aws  # noqa: E402

METRICS = [
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]

Totals = dict[str, dict[str, int]]  # tenant -> metric -> value


def _zero() -> dict[str, int]:
    return dict.fromkeys(METRICS, 0)


def per_tenant(items: dict[ul.CounterKey, dict[str, int]]) -> Totals:
    """Counter items (or the sums the lines give them), summed per tenant over request types and models."""
    totals: Totals = defaultdict(_zero)
    for key, sums in items.items():
        totals[key.tenant_id]["requests"] += sums["request_count"]
        for metric in METRICS[1:]:
            totals[key.tenant_id][metric] += sums[metric]
    return dict(totals)


def export_totals(source: ExportSource, day: date) -> tuple[Totals, dict[str, int]]:
    """Sums of the exported rows of `day`, and per tenant how many rows repeat a request id."""
    partition = f"year={day:%Y}/month={day:%m}/day={day:%d}/"
    connection = connect(source.local_root(only=partition))
    sums = ", ".join(f"sum({m})" for m in METRICS[1:])
    where = f"year = '{day:%Y}' AND month = '{day:%m}' AND day = '{day:%d}'"
    _, rows = run_sql(connection, f"SELECT tenant_id, count(*), {sums} FROM {TABLE} WHERE {where} GROUP BY tenant_id")
    totals = {row[0]: dict(zip(METRICS, (int(v or 0) for v in row[1:]))) for row in rows}
    _, repeats = run_sql(connection, f"SELECT tenant_id, count(*) - count(DISTINCT request_id) FROM {TABLE} "
                                     f"WHERE {where} GROUP BY tenant_id")
    return totals, {row[0]: int(row[1]) for row in repeats if int(row[1])}


def compare(counters: Totals, lines: Totals, exported: Totals | None, tenants: list[str], period: str = "") -> list[str]:
    """One message per tenant and metric where the sources disagree (the export only when given)."""
    differences = []
    for tenant in tenants:
        for metric in METRICS:
            counted, billed = counters.get(tenant, _zero())[metric], lines.get(tenant, _zero())[metric]
            if exported is None:
                if counted != billed:
                    differences.append(f"{tenant}: {period}{metric} differs: counters {counted}, log lines {billed}")
                continue
            in_export = exported.get(tenant, _zero())[metric]
            if len({counted, billed, in_export}) > 1:
                differences.append(
                    f"{tenant}: {period}{metric} differs: counters {counted}, log lines {billed}, export {in_export}"
                )
    return differences


def print_table(sources: list[tuple[str, Totals]], tenants: list[str], out=sys.stdout, metrics: list[str] = METRICS) -> None:
    header = ["tenant", "source", *metrics]
    rows = [[tenant, name, *(str(totals.get(tenant, {}).get(m, 0)) for m in metrics)]
            for tenant in tenants for name, totals in sources]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) + "\n")


def outcome_counts(billed: ul.BilledLines, day: date) -> dict[str, dict[str, int]]:
    """Per tenant, the requests of `day` whose counter update did not surely apply: `failed`, `unknown`
    (a counter_update line says so) and `metering_error` (older lines that carry the field: outcome unknown)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"failed": 0, "unknown": 0, "metering_error": 0})
    not_applied = billed.not_applied()
    for request_id, line in billed.lines.items():
        if ul.line_day(line) != day:
            continue
        if request_id in not_applied:
            counts[line["tenant_id"]][not_applied[request_id].get("outcome", "unknown")] += 1
        elif line.get("metering_error"):
            counts[line["tenant_id"]]["metering_error"] += 1
    return dict(counts)


def rebuild_command(day: date, tenants: list[str], args: argparse.Namespace, use_aws: bool, now: datetime) -> str:
    parts = ["scripts/rebuild-counters", "--date", day.isoformat()]
    if len(tenants) == 1:
        parts += ["--tenant", tenants[0]]
    parts.append("--aws" if use_aws else "--local")
    if not ul.is_closed(day, now):
        parts.append("--allow-today")  # with no traffic for the tenant(s); else wait until the day closes
    for group in args.log_group or []:
        parts += ["--log-group", group]
    for path in args.lines_file or []:
        parts += ["--lines-file", str(path)]
    if args.table:
        parts += ["--table", args.table]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/reconcile",
        description="Compare, per tenant, what is billed (the usage lines of the day, one per request id) with the "
        "DynamoDB counters of the day and of its ISO week, and with the exported Parquet rows of the day. Reports "
        "the requests whose counter update failed or has an unknown outcome, and the scripts/rebuild-counters "
        "command that makes the counters equal to the lines. Exit 0 when they agree, 1 on any difference "
        "(printed), 2 on a missing prerequisite.",
    )
    parser.add_argument("--date", required=True, help="the UTC day, YYYY-MM-DD")
    parser.add_argument("--tenant", action="append", help="only this tenant (repeatable; default: every tenant seen)")
    parser.add_argument("--aws", action="store_true", help="the deployed stack (also: BM_STACK=aws)")
    parser.add_argument("--local", action="store_true", help="the local stack even if BM_STACK=aws")
    parser.add_argument("--table", help="usage table (default: the stack's)")
    parser.add_argument("--log-group", action="append", help="usage log group (repeatable; default: the stack's)")
    parser.add_argument("--lines-file", action="append", type=Path,
                        help="read the lines from this file instead of the log groups (repeatable), e.g. the local "
                        "API's standard output .local/logs/api.stdout.log")
    parser.add_argument("--bucket", help="analytics bucket (default: the stack's)")
    parser.add_argument("--prefix", help="export key prefix (default logs/, or the deployed LOGS_PREFIX)")
    parser.add_argument("--cache-dir", type=Path, help="where the day's objects are mirrored")
    parser.add_argument("--no-export", action="store_true", help="compare lines and counters only")
    parser.add_argument("--no-week", action="store_true",
                        help="skip the ISO week (its check reads the lines of every day of the week so far)")
    parser.add_argument("--quiet", action="store_true", help="print only the differences")
    parser.add_argument("--with-bedrock-logs", action="store_true",
                        help="also compare the Bedrock-served requests with Bedrock's own model invocation log records "
                        "(by the request_id of their request metadata; README \"Bedrock invocation logs\")")
    parser.add_argument("--bedrock-logs-bucket", help="bucket of Bedrock's invocation logs (default: the analytics bucket)")
    parser.add_argument("--bedrock-logs-prefix", default=bedrock_logs.DEFAULT_PREFIX,
                        help=f"key prefix of Bedrock's invocation logs (default {bedrock_logs.DEFAULT_PREFIX})")
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"error: --date must be a day like 2026-11-23, got {args.date!r}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc)
    try:
        use_aws = wants_aws(args.aws, args.local)
        settings = dict(table=args.table, log_groups=args.log_group, bucket=args.bucket, prefix=args.prefix, cache_dir=args.cache_dir)
        target = aws_target(**settings) if use_aws else local_target(**settings)
        for path in args.lines_file or []:
            if not path.is_file():
                raise Prerequisite(f"--lines-file {path} does not exist")
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    week = ul.week_label(day)
    days_to_read = [day] if args.no_week else [d for d in ul.week_days(day) if d <= now.date()] or [day]
    messages = (ul.read_line_files(args.lines_file) if args.lines_file
                else ul.read_log_groups(target.logs, target.log_groups, days_to_read, now))
    billed = ul.collect(messages, days_to_read)
    expected = ul.sums_by_key(billed.lines.values())
    lines = per_tenant({k: v for k, v in expected.items() if k.kind == ul.DAY and k.period == day.isoformat()})
    counters = per_tenant(ul.read_counters(target.dynamodb, target.table, ul.DAY, day.isoformat()))
    exported, export_repeats = None, {}
    if not args.no_export:
        source = ExportSource(s3=target.s3, bucket=target.bucket, prefix=target.prefix, cache_dir=target.cache_dir)
        exported, export_repeats = export_totals(source, day)
    tenants = sorted(set(args.tenant) if args.tenant else set(counters) | set(lines) | set(exported or {}))

    differences = compare(counters, lines, exported, tenants)
    counter_gaps = {t for t in tenants for m in METRICS if counters.get(t, _zero())[m] != lines.get(t, _zero())[m]}
    week_lines, week_counters = {}, {}
    if not args.no_week:
        week_lines = per_tenant({k: v for k, v in expected.items() if k.kind == ul.WEEK and k.period == week})
        week_counters = per_tenant(ul.read_counters(target.dynamodb, target.table, ul.WEEK, week))
        differences += compare(week_counters, week_lines, None, tenants, period=f"week {week} ")
        counter_gaps |= {t for t in tenants for m in METRICS if week_counters.get(t, _zero())[m] != week_lines.get(t, _zero())[m]}
    # Repeats are reported for the tenants reconciled (all of them without --tenant).
    duplicates = sum(count for tenant, count in export_repeats.items() if tenant in tenants)
    if duplicates:
        differences.append(f"the export of {day} repeats {duplicates} request id(s)")
    day_repeats = sum(1 for rid in billed.repeated
                      if ul.line_day(billed.lines[rid]) == day and billed.lines[rid]["tenant_id"] in tenants)
    if day_repeats:
        differences.append(f"{day_repeats} request id(s) of {day} have more than one usage line (each is billed once)")

    bedrock_findings: list[str] = []
    bedrock_sources: list[tuple[str, Totals]] = []
    if args.with_bedrock_logs:
        logs_bucket = args.bedrock_logs_bucket or target.bucket
        records = bedrock_logs.read_records(target.s3, logs_bucket, args.bedrock_logs_prefix, day)
        day_items = ul.read_counters(target.dynamodb, target.table, ul.DAY, day.isoformat())
        exported_bedrock = None
        if not args.no_export:
            source = ExportSource(s3=target.s3, bucket=target.bucket, prefix=target.prefix, cache_dir=target.cache_dir)
            exported_bedrock = export_bedrock_totals(source, day)
        bedrock_sources, bedrock_findings, bedrock_differences = bedrock_comparison(
            billed, records, day_items, day, sorted(args.tenant) if args.tenant else None, exported_bedrock)
        differences += bedrock_differences + bedrock_findings

    if not args.quiet:
        source = ", ".join(map(str, args.lines_file)) if args.lines_file else ", ".join(target.log_groups)
        export_name = "not compared" if args.no_export else f"s3://{target.bucket}/{target.prefix}"
        print(f"{day}: counters {target.table} | log lines {source} | export {export_name}")
        sources = [("counters", counters), ("log lines", lines)] + ([("export", exported)] if exported is not None else [])
        print_table(sources, tenants)
        if not args.no_week:
            print(f"week {week} (lines of {days_to_read[0]}..{days_to_read[-1]}):")
            print_table([("counters", week_counters), ("log lines", week_lines)], tenants)
        if args.with_bedrock_logs:
            logs_bucket = args.bedrock_logs_bucket or target.bucket
            print(f"served by Bedrock on {day}: log lines | counters | bedrock record "
                  f"s3://{logs_bucket}/{args.bedrock_logs_prefix}" + ("" if args.no_export else " | export"))
            bedrock_tenants = sorted(set(args.tenant) if args.tenant else {t for _, totals in bedrock_sources for t in totals})
            print_table(bedrock_sources, bedrock_tenants, metrics=BEDROCK_METRICS)
    for tenant in tenants:
        for period, counted, billed_totals in [(f"day {day}", counters, lines)] + (
                [] if args.no_week else [(f"week {week}", week_counters, week_lines)]):
            requests_counted = counted.get(tenant, _zero())["requests"]
            requests_billed = billed_totals.get(tenant, _zero())["requests"]
            if requests_counted != requests_billed:
                print(f"GAP {tenant} {period}: lines {requests_billed} request(s), counters {requests_counted}, "
                      f"difference {requests_counted - requests_billed:+d}")
    outcomes = outcome_counts(billed, day)
    for tenant in tenants:
        counts = outcomes.get(tenant)
        if counts and any(counts.values()):
            print(f"note: {tenant}: {counts['unknown']} request(s) with counter outcome unknown, {counts['failed']} failed"
                  + (f", {counts['metering_error']} line(s) with metering_error (outcome unknown)" if counts["metering_error"] else "")
                  + ": billed from their lines; their counters may or may not include them")
    if differences:
        for difference in differences:
            print(difference if difference.split(" ", 1)[0] in ("MISSING-LINE", "MISSING-RECORD", "TOKENS")
                  else f"DIFFERENCE {difference}")
        if counter_gaps:
            print(f"fix the counters: {rebuild_command(day, sorted(counter_gaps), args, use_aws, now)}")
        print(f"{len(differences)} difference(s) for {day}", file=sys.stderr)
        return 1
    print(f"OK: {len(tenants)} tenant(s) agree for {day}" + ("" if args.no_week else f" and week {week}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
