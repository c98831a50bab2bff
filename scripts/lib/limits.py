#!/usr/bin/env python3
"""scripts/limits get|set|clear TENANT [--key KEY_ID]: a tenant's limits (README "Budgets and quotas"), read and
written in the usage table (`pk = LIMITS#<tenant>`, `sk = CONFIG`, or `KEY#<key_id>` for one gateway key's
narrowing), of the local stack or (--aws) the deployed one.

`set` replaces the stored limits as a whole: a kind not given is unlimited. The functions see a change within
LIMITS_CACHE_SECONDS (30 s by default); the admin API (PUT /v1/limits/{tenant_id}) does the same for a tenant,
and on the local server takes effect at once.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from billing_target import Prerequisite, aws_target, local_target, wants_aws  # noqa: E402

KINDS = ("requests_per_minute", "tokens_per_day", "tokens_per_month", "usd_per_month")
MAXIMA = {"requests_per_minute": 10_000_000, "tokens_per_day": 10**15, "tokens_per_month": 10**15, "usd_per_month": 10**9}
COUNTER_PREFIX = {"requests_per_minute": "MINUTE", "tokens_per_day": "DAY", "tokens_per_month": "MONTH", "usd_per_month": "USD"}
TENANT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def limits_key(tenant: str, key_id: str | None) -> dict:
    return {"pk": {"S": f"LIMITS#{tenant}"}, "sk": {"S": f"KEY#{key_id}" if key_id else "CONFIG"}}


def period_label(kind: str, now: datetime) -> str:
    return {"requests_per_minute": now.strftime("%Y-%m-%dT%H:%M"), "tokens_per_day": now.strftime("%Y-%m-%d")}.get(
        kind, now.strftime("%Y-%m"))


def parse_amount(kind: str, text: str) -> str:
    """The DynamoDB number of a limit given on the command line, checked like the API checks it."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise Prerequisite(f"--{kind.replace('_', '-')}: {text!r} is not a number") from None
    if not value.is_finite() or value < 0 or value > MAXIMA[kind]:
        raise Prerequisite(f"--{kind.replace('_', '-')}: must be between 0 and {MAXIMA[kind]}")
    if kind == "usd_per_month":
        return str(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP).normalize())
    if value != value.to_integral_value():
        raise Prerequisite(f"--{kind.replace('_', '-')}: must be a whole number")
    return str(int(value))


def show(target, tenant: str, key_id: str | None) -> dict:
    item = target.dynamodb.get_item(TableName=target.table, Key=limits_key(tenant, key_id), ConsistentRead=True).get("Item")
    now = datetime.now(timezone.utc)
    partition = f"BUDGET#{tenant}#KEY#{key_id}" if key_id else f"BUDGET#{tenant}"
    limits: dict[str, dict | None] = {}
    for kind in KINDS:
        if not item or kind not in item:
            limits[kind] = None
            continue
        period = period_label(kind, now)
        counter = target.dynamodb.get_item(
            TableName=target.table, Key={"pk": {"S": partition}, "sk": {"S": f"{COUNTER_PREFIX[kind]}#{period}"}},
            ConsistentRead=True,
        ).get("Item", {})
        scale = Decimal(1_000_000) if kind == "usd_per_month" else Decimal(1)
        admitted = Decimal(counter.get("admitted", {}).get("N", "0")) / scale
        settled = Decimal(counter.get("settled", {}).get("N", "0")) / scale
        limit = Decimal(item[kind]["N"])
        used = admitted if kind == "requests_per_minute" else settled
        limits[kind] = {"limit": float(limit), "used": float(used), "in_flight": float(max(admitted - used, Decimal(0))),
                        "remaining": float(max(limit - admitted, Decimal(0))), "period": period}
    text = lambda name: item.get(name, {}).get("S") if item else None  # noqa: E731
    answer = {"tenant_id": tenant, "limits": limits, "updated_at": text("updated_at"), "updated_by": text("updated_by")}
    if key_id:
        answer["key_id"] = key_id
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/limits",
        description="Read, set or clear a tenant's limits (requests per minute; tokens per UTC day and month; "
        "estimated USD per UTC month) in the usage table of the local stack, or the deployed one with --aws. "
        "--key narrows one gateway key of the tenant further. See README 'Budgets and quotas'.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "get": sub.add_parser("get", help="print the limits with this period's use (JSON)"),
        "set": sub.add_parser("set", help="replace the limits; a kind not given is unlimited"),
        "clear": sub.add_parser("clear", help="remove the limits: unlimited"),
    }
    for command in commands.values():
        command.add_argument("tenant_id")
        command.add_argument("--key", metavar="KEY_ID", help="a gateway key's narrowing instead of the tenant's limits")
        group = command.add_mutually_exclusive_group()
        group.add_argument("--aws", action="store_true", help="the deployed stack (also: BM_STACK=aws)")
        group.add_argument("--local", action="store_true", help="the local stack even if BM_STACK=aws")
        command.add_argument("--table", help="the usage table (default: the stack's)")
    for kind in KINDS:
        unit = "USD, decimal" if kind == "usd_per_month" else "whole number"
        commands["set"].add_argument(f"--{kind.replace('_', '-')}", dest=kind, metavar="N", help=f"{kind} ({unit})")
    commands["set"].add_argument("--updated-by", default="scripts/limits", help="recorded as updated_by")
    args = parser.parse_args(argv)
    try:
        if not TENANT_ID.match(args.tenant_id):
            raise Prerequisite("tenant_id must be 1 to 128 characters of letters, digits, '-', '_' or '.'")
        target = (aws_target if wants_aws(args.aws, args.local) else local_target)(table=args.table)
        key = limits_key(args.tenant_id, args.key)
        if args.command == "set":
            item = dict(key)
            item["tenant_id"] = {"S": args.tenant_id}
            if args.key:
                item["key_id"] = {"S": args.key}
            for kind in KINDS:
                given = getattr(args, kind)
                if given is not None:
                    item[kind] = {"N": parse_amount(kind, given)}
            item["updated_at"] = {"S": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            item["updated_by"] = {"S": args.updated_by}
            target.dynamodb.put_item(TableName=target.table, Item=item)
        elif args.command == "clear":
            target.dynamodb.delete_item(TableName=target.table, Key=key)
        print(json.dumps(show(target, args.tenant_id, args.key), indent=2))
        return 0
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
