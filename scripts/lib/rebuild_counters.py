#!/usr/bin/env python3
"""scripts/rebuild-counters --date D: recompute the DynamoDB counters of a UTC day (and of its ISO week) from
the usage lines, and SET them. See `scripts/rebuild-counters --help` and README "Rebuilding counters".

- Idempotent: every item is SET to what the lines say (never ADD); a second run changes nothing.
- Items of the period that no line backs are SET to zero; items that are not counters (other sk prefixes)
  are never read or written.
- Safe while traffic flows: only closed periods are rebuilt (a day is closed 20 minutes after its end, when
  no late line or counter update can still belong to it). The ISO week of D is rebuilt too when it is
  closed; while it is open (it holds today) its items are left alone and the output says so.
  `--allow-today` rebuilds open periods as well: use it when no traffic flows for the tenant(s), else a
  request answered during the rebuild may be counted twice or not at all until the next rebuild.
"""
from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from billing_target import Prerequisite, aws_target, local_target, wants_aws  # noqa: E402
import usage_lines as ul  # noqa: E402


def plan_and_apply(target, day: date, tenant: str | None, billed: ul.BilledLines, kinds: list[str],
                   dry_run: bool, out=sys.stdout) -> dict[str, int]:
    """SETs the counter items of `day` (and of its week when WEEK is in kinds) to the lines' sums."""
    wanted = ul.sums_by_key(billed.of_tenant(tenant), kinds)
    periods = {ul.DAY: day.isoformat(), ul.WEEK: ul.week_label(day)}
    counts = {"items_set": 0, "items_unchanged": 0, "items_zeroed": 0}
    for kind in kinds:
        period = periods[kind]
        current = ul.read_counters(target.dynamodb, target.table, kind, period, tenant)
        expected = {key: sums for key, sums in wanted.items() if key.kind == kind and key.period == period}
        zero = dict.fromkeys(ul.COUNTER_METRICS, 0)
        for key in sorted(set(current) | set(expected)):
            new = expected.get(key, zero)
            old = current.get(key)
            if old == new:
                counts["items_unchanged"] += 1
                continue
            change = ", ".join(
                f"{metric} {(old or zero)[metric]} -> {new[metric]}" for metric in ul.COUNTER_METRICS
                if (old or zero)[metric] != new[metric]
            ) or "created"
            print(f"{'would SET' if dry_run else 'SET'} {key.sk} of {key.tenant_id}: {change}", file=out)
            if not dry_run:
                ul.set_counter(target.dynamodb, target.table, key, new, ul.default_ttl(key))
            counts["items_set"] += 1
            counts["items_zeroed"] += key not in expected
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/rebuild-counters",
        description="Recompute the DynamoDB usage counters of one UTC day, and of its ISO week, from the usage "
        "lines (the bill), and SET them (never ADD: running it again changes nothing). Items no line backs are "
        "set to zero. Only closed periods are rebuilt (a day closes 20 minutes after its end; a week that "
        "holds today is left alone and reported) unless --allow-today. Lines are read from the usage log "
        "groups (local: moto's; --aws: those of the deployed log processor) or from --lines-file. "
        "In AWS the log processor Lambda does the same for the event {\"rebuild_counters\": \"YYYY-MM-DD\"}. "
        "Exit 0 when done, 1 when an AWS call failed, 2 when refused or a prerequisite is missing.",
    )
    parser.add_argument("--date", required=True, help="the UTC day, YYYY-MM-DD")
    parser.add_argument("--tenant", help="only this tenant (exact id; default: every tenant of the day)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--aws", action="store_true", help="the deployed stack (also: BM_STACK=aws)")
    group.add_argument("--local", action="store_true", help="the local stack even if BM_STACK=aws")
    parser.add_argument("--allow-today", action="store_true",
                        help="also rebuild a day or week that is still open; only when no traffic flows for the tenant(s)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be SET, write nothing")
    parser.add_argument("--table", help="usage table (default: the stack's)")
    parser.add_argument("--log-group", action="append", help="usage log group (repeatable; default: the stack's)")
    parser.add_argument("--lines-file", action="append", type=Path,
                        help="read the lines from this file instead (repeatable), e.g. the local API's "
                        "standard output .local/logs/api.stdout.log, where every line is written first")
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"error: --date must be a day like 2026-11-23, got {args.date!r}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc)
    if day > now.date():
        print(f"error: {day} is in the future (today is {now.date()} UTC)", file=sys.stderr)
        return 2
    if not ul.is_closed(day, now) and not args.allow_today:
        print(
            f"error: {day} is still open (its lines and counter updates may arrive until "
            f"{(ul.day_end(day) + ul.READ_AFTER):%Y-%m-%d %H:%M} UTC): a rebuild now would race with the API's own "
            "updates. Rebuild it after that, or pass --allow-today when no traffic flows for the tenant(s).",
            file=sys.stderr,
        )
        return 2
    week = ul.week_days(day)
    week_open = not ul.is_closed(week[-1], now)
    kinds = [ul.DAY] if week_open and not args.allow_today else [ul.DAY, ul.WEEK]
    days_to_read = [day] if kinds == [ul.DAY] else [d for d in week if d <= now.date()]
    try:
        target = (aws_target if wants_aws(args.aws, args.local) else local_target)(table=args.table, log_groups=args.log_group)
        for path in args.lines_file or []:
            if not path.is_file():
                raise Prerequisite(f"--lines-file {path} does not exist")
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        messages = (ul.read_line_files(args.lines_file) if args.lines_file
                    else ul.read_log_groups(target.logs, target.log_groups, days_to_read, now))
        billed = ul.collect(messages, days_to_read)
        source = ", ".join(map(str, args.lines_file)) if args.lines_file else ", ".join(target.log_groups)
        scope = f"tenant {args.tenant}" if args.tenant else "every tenant"
        print(f"{day}: {len(billed.of_tenant(args.tenant))} usage line(s) of {scope} on "
              f"{days_to_read[0]}..{days_to_read[-1]} from {source} -> {target.table}")
        if billed.repeated:
            print(f"note: {len(billed.repeated)} request id(s) have more than one line; each is counted once")
        counts = plan_and_apply(target, day, args.tenant, billed, kinds, args.dry_run)
    except (BotoCoreError, ClientError) as error:
        print(f"error: AWS call failed: {error}", file=sys.stderr)
        return 1
    if ul.WEEK not in kinds:
        print(f"note: week {ul.week_label(day)} is still open (it holds today): its items were not rebuilt. "
              f"Run this again after {week[-1]} (or with --allow-today when no traffic flows).")
    verb = "would set" if args.dry_run else "set"
    periods = {ul.DAY: day.isoformat(), ul.WEEK: ul.week_label(day)}
    print(f"OK: {verb} {counts['items_set']} item(s) ({counts['items_zeroed']} to zero), "
          f"{counts['items_unchanged']} already right, in {', '.join(f'{k}#{periods[k]}' for k in kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
