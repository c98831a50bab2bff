#!/usr/bin/env python3
"""scripts/statement: the monthly statement of each tenant, from the export's priced rows.

Per tenant: requests and tokens (input, output, cache writes, cache reads) by model and request type, the
estimated cost (the sum of the rows' `cost_usd`, priced at export by pricing.json, the usage API's table), the
budget in force (the `LIMITS#<tenant>` / `CONFIG` item of the usage table), and a reconciliation footer: the
rows of the month against the lines the export's `_SUCCESS` manifests say it read, the days without a complete
export, and the counter outcomes of the rows.

One SQL (scripts/lib/statement.sql): run by DuckDB over the local export, and by Athena (`--aws`), where it is
also the workgroup's named query `monthly-statement`.
"""
from __future__ import annotations

import argparse
import calendar
import csv
import html
import io
import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from billing_target import ANALYTICS_STACK_NAME, Prerequisite, Target, aws_session, aws_target, local_target, wants_aws  # noqa: E402

STATEMENT_SQL_FILE = Path(__file__).resolve().parent / "statement.sql"
NAMED_QUERY = "monthly-statement"
BUDGET_ATTRIBUTES = ("requests_per_minute", "tokens_per_day", "tokens_per_month", "usd_per_month")
COUNT_COLUMNS = ("requests", "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                 "total_tokens", "unpriced_requests", "counter_applied", "counter_failed", "counter_unknown",
                 "counter_not_recorded")
OUTCOME_COLUMNS = ("counter_applied", "counter_failed", "counter_unknown", "counter_not_recorded")


def statement_sql() -> str:
    """The SQL without its leading comment (the named query's text)."""
    lines = STATEMENT_SQL_FILE.read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("--")).strip()


def parse_month(text: str) -> tuple[str, str]:
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise Prerequisite(f"--month must be a month like 2026-11, not {text!r}")
    return match.group(1), match.group(2)


# ---------------------------------------------------------------------------------------- the data

def rows_duckdb(target: Target, year: str, month: str) -> list[dict]:
    from analytics import ExportSource, connect, translate_presto

    source = ExportSource(s3=target.s3, bucket=target.bucket, prefix=target.prefix, cache_dir=target.cache_dir)
    connection = connect(source.local_root(only=f"year={year}/month={month}/"))
    relation = connection.execute(translate_presto(statement_sql()), [year, month, "", ""])
    columns = [d[0] for d in relation.description]
    return [dict(zip(columns, row)) for row in relation.fetchall()]


def athena_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def rows_athena(session, year: str, month: str) -> list[dict]:
    from export_logs import stack_output

    athena = session.client("athena")
    workgroup = stack_output(session, ANALYTICS_STACK_NAME, "AthenaWorkgroupName")
    started = athena.start_query_execution(
        QueryString=statement_sql(), WorkGroup=workgroup,
        ExecutionParameters=[athena_literal(year), athena_literal(month), "''", "''"],
    )
    query_id = started["QueryExecutionId"]
    while True:
        status = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
        if status["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(1)
    if status["State"] != "SUCCEEDED":
        raise RuntimeError(f"Athena query {query_id} {status['State']}: {status.get('StateChangeReason', '')}")
    rows: list[dict] = []
    columns: list[str] = []
    for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
        if not columns:
            columns = [c["Name"] for c in page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]]
        for raw in page["ResultSet"]["Rows"]:
            values = [cell.get("VarCharValue") for cell in raw["Data"]]
            if values == columns:
                continue  # the header row
            rows.append(dict(zip(columns, values)))
    for row in rows:
        for name in COUNT_COLUMNS:
            row[name] = int(row[name] or 0)
        row["estimated_cost_usd"] = None if row["estimated_cost_usd"] is None else float(row["estimated_cost_usd"])
    return rows


def manifests(target: Target, year: str, month: str) -> dict[str, dict]:
    """The `_SUCCESS` manifests of the month's days, by day (YYYY-MM-DD)."""
    found = {}
    prefix = f"{target.prefix}year={year}/month={month}/"
    for page in target.s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/_SUCCESS"):
                body = json.loads(target.s3.get_object(Bucket=target.bucket, Key=obj["Key"])["Body"].read())
                found[body["day"]] = body
    return found


def budget_in_force(target: Target, tenant_id: str) -> dict | None:
    """The tenant's limits item (`pk = LIMITS#<tenant_id>`, `sk = CONFIG`); None when there is none."""
    item = target.dynamodb.get_item(
        TableName=target.table, Key={"pk": {"S": f"LIMITS#{tenant_id}"}, "sk": {"S": "CONFIG"}}, ConsistentRead=True,
    ).get("Item")
    if item is None:
        return None
    budget = {}
    for name in BUDGET_ATTRIBUTES:
        value = item.get(name, {}).get("N")
        budget[name] = None if value is None else (int(value) if re.fullmatch(r"-?\d+", value) else float(value))
    return budget


# ---------------------------------------------------------------------------------------- the statement

@dataclass
class TenantStatement:
    tenant_id: str
    models: list[dict] = field(default_factory=list)
    budget: dict | None = None

    def totals(self) -> dict:
        totals = {name: sum(row[name] for row in self.models) for name in COUNT_COLUMNS}
        costs = [row["estimated_cost_usd"] for row in self.models if row["estimated_cost_usd"] is not None]
        totals["estimated_cost_usd"] = round(sum(costs), 6) if costs else (0.0 if not self.models else None)
        return totals


def build(rows: list[dict], found_manifests: dict[str, dict], year: str, month: str, tenant: str | None,
          budgets, today: date) -> dict:
    by_tenant: dict[str, TenantStatement] = {}
    for row in rows:
        row = {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
        for name in COUNT_COLUMNS:
            row[name] = int(row[name] or 0)
        by_tenant.setdefault(row["tenant_id"], TenantStatement(row["tenant_id"])).models.append(row)
    month_rows = sum(row["requests"] for s in by_tenant.values() for row in s.models)
    outcomes = {name: sum(row[name] for s in by_tenant.values() for row in s.models) for name in OUTCOME_COLUMNS}
    if tenant is not None:
        by_tenant = {tenant: by_tenant.get(tenant, TenantStatement(tenant))}
    for statement in by_tenant.values():
        statement.budget = budgets(statement.tenant_id)

    first = date(int(year), int(month), 1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    closed_days = [first + timedelta(days=n) for n in range((min(last, today - timedelta(days=1)) - first).days + 1)]
    complete = {day for day, manifest in found_manifests.items() if manifest.get("complete")}
    manifest_rows = sum(int(m.get("rows", 0)) for m in found_manifests.values())
    reconciliation = {
        "days_in_month": (last - first).days + 1,
        "closed_days": len(closed_days),
        "days_exported": len(found_manifests),
        "days_without_complete_export": [d.isoformat() for d in closed_days if d.isoformat() not in complete],
        "manifest_rows": manifest_rows,
        "rows": month_rows,
        "lines_equal_rows": manifest_rows == month_rows,
        "skipped_malformed": sum(int(m.get("skipped_malformed", 0)) for m in found_manifests.values()),
        "price_versions": sorted({m["price_version"] for m in found_manifests.values() if m.get("price_version")}),
        "counter_outcomes": {name.removeprefix("counter_"): count for name, count in outcomes.items()},
        "scope": "every tenant of the month (the manifests count every tenant's lines)",
    }
    return {
        "month": f"{year}-{month}",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tenants": [
            {"tenant_id": s.tenant_id, "budget": s.budget, "totals": s.totals(), "models": s.models}
            for s in sorted(by_tenant.values(), key=lambda s: s.tenant_id)
        ],
        "reconciliation": reconciliation,
    }


# ---------------------------------------------------------------------------------------- output

MODEL_COLUMNS = ("model_id", "request_type", *COUNT_COLUMNS[:6], "estimated_cost_usd", "unpriced_requests")


def budget_text(budget: dict | None, name: str) -> str:
    if budget is None or budget.get(name) is None:
        return "none"
    return str(budget[name])


def render_csv(statement: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["month", "tenant_id", *MODEL_COLUMNS, *OUTCOME_COLUMNS, *(f"budget_{b}" for b in BUDGET_ATTRIBUTES)])
    for tenant in statement["tenants"]:
        budget = [budget_text(tenant["budget"], name) for name in BUDGET_ATTRIBUTES]
        for row in tenant["models"]:
            writer.writerow([statement["month"], tenant["tenant_id"], *(row[c] for c in MODEL_COLUMNS),
                             *(row[c] for c in OUTCOME_COLUMNS), *budget])
        totals = tenant["totals"]
        writer.writerow([statement["month"], tenant["tenant_id"], "TOTAL", "",
                         *(totals[c] for c in MODEL_COLUMNS[2:]), *(totals[c] for c in OUTCOME_COLUMNS), *budget])
    writer.writerow([])
    for key, value in statement["reconciliation"].items():
        writer.writerow(["reconciliation", key, json.dumps(value) if isinstance(value, (list, dict)) else value])
    return out.getvalue()


def cost_chart(tenant: dict) -> str:
    """A horizontal bar chart (inline SVG, no script, no external resource) of the cost by model."""
    bars = [(f"{r['model_id']} ({r['request_type']})", r["estimated_cost_usd"] or 0.0) for r in tenant["models"]]
    if not bars:
        return "<p>No usage this month.</p>"
    top = max(cost for _, cost in bars) or 1.0
    height, label_width, bar_width = 22, 360, 300
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{label_width + bar_width + 120}" '
             f'height="{height * len(bars) + 10}" aria-label="Estimated cost by model">']
    for index, (label, cost) in enumerate(bars):
        y = index * height + 5
        width = max(1, round(bar_width * cost / top)) if cost else 0
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 3}" width="{width}" height="{height - 8}" fill="#4e79a7"/>')
        parts.append(f'<text x="{label_width + width + 6}" y="{y + 15}" font-size="12">${cost:.6f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(statement: dict) -> str:
    esc = html.escape
    head = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Statement {esc(statement['month'])}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1em}"
            "th,td{border:1px solid #bbb;padding:3px 8px;font-size:13px}td.n{text-align:right}"
            "section.tenant{page-break-after:always;break-after:page}"
            "@media print{body{margin:1cm}}</style></head><body>")
    body = [f"<h1>Monthly statement {esc(statement['month'])}</h1>",
            f"<p>{esc(statement['from'])} to {esc(statement['to'])} (UTC). Generated {esc(statement['generated_at'])}. "
            "Estimated cost: each request priced at export by the usage API's price table.</p>"]
    for tenant in statement["tenants"]:
        totals = tenant["totals"]
        body.append(f'<section class="tenant"><h2>Tenant {esc(tenant["tenant_id"])}</h2>')
        cost = totals["estimated_cost_usd"]
        body.append(f"<p><strong>{totals['requests']:,}</strong> requests, <strong>{totals['total_tokens']:,}</strong> tokens, "
                    f"estimated cost <strong>{'n/a' if cost is None else f'${cost:,.6f}'}</strong></p>")
        body.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in MODEL_COLUMNS) + "</tr>")
        for row in tenant["models"]:
            body.append("<tr>" + "".join(_cell(row[c]) for c in MODEL_COLUMNS) + "</tr>")
        body.append("<tr><th>total</th><th></th>" + "".join(_cell(totals[c]) for c in MODEL_COLUMNS[2:]) + "</tr></table>")
        body.append(cost_chart(tenant))
        body.append("<h3>Budget in force</h3><table>" + "".join(
            f"<tr><th>{esc(name)}</th><td>{esc(budget_text(tenant['budget'], name))}</td></tr>" for name in BUDGET_ATTRIBUTES)
            + "</table></section>")
    rec = statement["reconciliation"]
    body.append("<h2>Reconciliation</h2><table>" + "".join(
        f"<tr><th>{esc(key)}</th><td>{esc(json.dumps(value) if isinstance(value, (list, dict)) else str(value))}</td></tr>"
        for key, value in rec.items()) + "</table>")
    return head + "".join(body) + "</body></html>\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.6f}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/statement",
        description="Monthly statement per tenant: requests and tokens by model, estimated cost from the export's "
        "priced rows (cost_usd), the budget in force, and a reconciliation footer (rows = lines the export read, days "
        "without a complete export, counter outcomes). Local stack by default (DuckDB over the export in moto); --aws: "
        "Athena (the workgroup's named query monthly-statement). Exit 0 done, 1 an AWS call failed, 2 bad request or "
        "missing prerequisite.",
    )
    parser.add_argument("--month", required=True, help="the UTC month, YYYY-MM")
    parser.add_argument("--tenant", help="only this tenant (exact id); default: every tenant with usage that month")
    parser.add_argument("--aws", action="store_true", help="the deployed stacks (Athena, S3, DynamoDB); also BM_STACK=aws")
    parser.add_argument("--local", action="store_true", help="the local stack even if BM_STACK=aws")
    parser.add_argument("--format", choices=["json", "csv", "html"], default="json")
    parser.add_argument("--output", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--prefix", default=None, help="key prefix of the export (default: the export's, logs/)")
    args = parser.parse_args(argv)
    try:
        year, month = parse_month(args.month)
        if args.tenant is not None and args.tenant == "":
            raise Prerequisite("--tenant must not be empty")
        use_aws = wants_aws(args.aws, args.local)
        target = aws_target(prefix=args.prefix) if use_aws else local_target(prefix=args.prefix)
        rows = rows_athena(aws_session(), year, month) if use_aws else rows_duckdb(target, year, month)
        statement = build(rows, manifests(target, year, month), year, month, args.tenant,
                          lambda tenant_id: budget_in_force(target, tenant_id), datetime.now(timezone.utc).date())
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - an AWS or S3 failure: say which, exit 1
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    text = {"json": lambda s: json.dumps(s, indent=2) + "\n", "csv": render_csv, "html": render_html}[args.format](statement)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    if not statement["reconciliation"]["lines_equal_rows"]:
        print("warning: the month's rows differ from the lines its manifests record (see reconciliation)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
