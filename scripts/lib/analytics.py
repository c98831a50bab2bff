#!/usr/bin/env python3
"""Local analytics: the Athena table `bedrock_metering_db.token_usage_logs`, in DuckDB, over the local export.

The export's Parquet objects (S3 in moto, from .local/stack.env; or any folder holding `year=YYYY/...`) are
mirrored to a cache folder (.local/analytics/...) and read with DuckDB's Hive partitioning, the partition
keys `year`/`month`/`day` typed as strings as in Glue. The Presto/Trino functions the Athena examples use
(from_iso8601_timestamp, date_format, approx_percentile; date, extract and date_trunc exist already) are
DuckDB macros, so an Athena query runs here as written. Sessions are in UTC, as Athena's.

    scripts/query "SELECT tenant_id, sum(total_tokens) FROM bedrock_metering_db.token_usage_logs GROUP BY 1"
    scripts/query --example all          # the README's example queries (scripts/lib/example_queries.sql)
    scripts/query                        # interactive
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytics_env import ensure_analytics_packages  # noqa: E402

TABLE = "bedrock_metering_db.token_usage_logs"
STRING_COLUMNS = ["timestamp", "tenant_id", "user_id", "model_id", "request_type", "request_id"]
BIGINT_COLUMNS = [
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_ms",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]
# Added by the export (log-processor's parquet_file.rs): the row's price and the newer optional line fields.
# Objects written before them read as NULL here (union_by_name) as in Athena.
ADDED_COLUMNS = [
    ("cost_usd", "DOUBLE"), ("price_version", "VARCHAR"), ("base_model_id", "VARCHAR"),
    ("client_user_id", "VARCHAR"), ("requested_model_id", "VARCHAR"), ("usage_estimated", "BOOLEAN"),
    ("counter_outcome", "VARCHAR"),
]
PARTITION_COLUMNS = ["year", "month", "day"]
PRICES_TABLE = "bedrock_metering_db.model_prices"
PRICING_FILE = Path(__file__).resolve().parents[2] / "crates" / "metering-core" / "pricing.json"
EXAMPLES_FILE = Path(__file__).resolve().parent / "example_queries.sql"
DEFAULT_PREFIX = "logs/"

# Presto/Trino date_format/date_parse take MySQL specifiers, DuckDB's strftime/strptime C ones. Most are the
# same (%Y %m %d %H %S); the others are translated in the query text (DuckDB wants a constant format, so a
# macro cannot do it). Order matters: %M (month name) becomes %B before %i (minutes) becomes %M.
_MYSQL_SPECIFIERS = [
    ("%M", "%B"), ("%i", "%M"), ("%s", "%S"), ("%h", "%I"), ("%W", "%A"), ("%c", "%-m"), ("%e", "%-d"),
    ("%k", "%-H"), ("%l", "%-I"), ("%v", "%V"), ("%T", "%H:%M:%S"), ("%r", "%I:%M:%S %p"),
]


def _mysql_to_strftime(format_text: str) -> str:
    for mysql, strftime in _MYSQL_SPECIFIERS:
        format_text = format_text.replace(mysql, strftime)
    return format_text


def translate_presto(sql: str) -> str:
    """Rewrites the format literal of every date_format(x, '...') / date_parse(x, '...') call."""
    out, position = [], 0
    for match in re.finditer(r"\b(date_format|date_parse)\s*\(", sql, flags=re.IGNORECASE):
        if match.start() < position:
            continue
        depth, index, quote, last_comma = 1, match.end(), False, -1
        while index < len(sql) and depth:
            char = sql[index]
            if quote:
                quote = not (char == "'" and not sql.startswith("''", index))
                if char == "'" and sql.startswith("''", index):
                    index += 1
            elif char == "'":
                quote = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            elif char == "," and depth == 1:
                last_comma = index
            index += 1
        if depth or last_comma < 0:
            continue
        argument = sql[last_comma + 1 : index - 1]
        literal = re.fullmatch(r"(\s*)'((?:[^']|'')*)'(\s*)", argument)
        if literal:
            out.append(sql[position : last_comma + 1])
            out.append(f"{literal.group(1)}'{_mysql_to_strftime(literal.group(2))}'{literal.group(3)})")
            position = index
    out.append(sql[position:])
    return "".join(out)


# Timestamps are naive UTC here (Athena keeps the line's zone; usage lines are all UTC, `Z`).
PRESTO_MACROS = [
    "CREATE OR REPLACE MACRO from_iso8601_timestamp(text) AS "
    "CAST(CAST(text AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP)",
    "CREATE OR REPLACE MACRO from_iso8601_date(text) AS CAST(text AS DATE)",
    "CREATE OR REPLACE MACRO to_iso8601(value) AS strftime(CAST(value AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%gZ')",
    "CREATE OR REPLACE MACRO approx_percentile(value, percentage) AS approx_quantile(value, percentage)",
    "CREATE OR REPLACE MACRO date_format(value, format) AS strftime(CAST(value AS TIMESTAMP), format)",
    "CREATE OR REPLACE MACRO date_parse(text, format) AS strptime(text, format)",
]


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_select(root: Path | None) -> str:
    """The view's SELECT: typed columns, partition keys as strings; no rows when there is no export yet."""
    columns = [f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in STRING_COLUMNS]
    columns += [f"CAST({c} AS BIGINT) AS {c}" for c in BIGINT_COLUMNS]
    columns += [f"CAST({c} AS {t}) AS {c}" for c, t in ADDED_COLUMNS]
    columns += [f"CAST({c} AS VARCHAR) AS {c}" for c in PARTITION_COLUMNS]
    if root is None or not any(root.glob("year=*/month=*/day=*/*.parquet")):
        empty = [f'CAST(NULL AS VARCHAR) AS "{c}"' for c in STRING_COLUMNS]
        empty += [f"CAST(NULL AS BIGINT) AS {c}" for c in BIGINT_COLUMNS]
        empty += [f"CAST(NULL AS {t}) AS {c}" for c, t in ADDED_COLUMNS]
        empty += [f"CAST(NULL AS VARCHAR) AS {c}" for c in PARTITION_COLUMNS]
        return f"SELECT {', '.join(empty)} WHERE false"
    pattern = _sql_string(str(root / "year=*" / "month=*" / "day=*" / "*.parquet"))
    # hive_types: `day=05` would otherwise become an integer, and the value the Glue table gives is a string.
    source = (
        f"read_parquet({pattern}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'year': VARCHAR, 'month': VARCHAR, 'day': VARCHAR})"
    )
    return f"SELECT {', '.join(columns)} FROM {source}"


def connect(root: Path | None):
    """A DuckDB connection with the Presto macros and the view `bedrock_metering_db.token_usage_logs`."""
    ensure_analytics_packages()
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    for macro in PRESTO_MACROS:
        connection.execute(macro)
    connection.execute("CREATE SCHEMA IF NOT EXISTS bedrock_metering_db")
    connection.execute(f"CREATE OR REPLACE VIEW {TABLE} AS {table_select(root)}")
    connection.execute(f"CREATE OR REPLACE VIEW {PRICES_TABLE} AS {model_prices_select()}")
    return connection


def model_prices_select(pricing_file: Path = PRICING_FILE) -> str:
    """The Athena view `model_prices` (infra/lib/analytics/model-prices.ts) from the same pricing.json."""
    table = json.loads(pricing_file.read_text())
    rows = []
    for model_id, price in sorted(table["models"].items()):
        values = [price["input_per_1k"], price["output_per_1k"], price.get("cache_write_per_1k"),
                  price.get("cache_read_per_1k"), price.get("geographic_profile_premium")]
        rendered = ", ".join("CAST(NULL AS DOUBLE)" if v is None else f"CAST({v!r} AS DOUBLE)" for v in values)
        rows.append(f"({_sql_string(model_id)}, {rendered}, {_sql_string(table.get('as_of') or '')})")
    return ("SELECT * FROM (VALUES " + ", ".join(rows) + ") AS prices(model_id, input_per_1k, output_per_1k, "
            "cache_write_per_1k, cache_read_per_1k, geographic_profile_premium, as_of)")


def run_sql(connection, sql: str) -> tuple[list[str], list[tuple]]:
    """Runs one statement (or several: the last one's result is returned)."""
    relation = connection.sql(translate_presto(sql))
    if relation is None:
        return [], []
    return list(relation.columns), relation.fetchall()


# ---------------------------------------------------------------------------------------- the export

@dataclass
class ExportSource:
    """Where the export lives: a bucket/prefix in S3 (moto or AWS, through `s3` boto3 client) or a folder."""

    s3: object | None = None
    bucket: str = ""
    prefix: str = DEFAULT_PREFIX
    folder: Path | None = None
    cache_dir: Path | None = None

    def describe(self) -> str:
        return str(self.folder) if self.folder else f"s3://{self.bucket}/{self.prefix}"

    def local_root(self, only: str = "") -> Path:
        """A folder of `year=YYYY/...` to read: the folder itself, or the S3 objects mirrored into the cache
        (only those under `prefix + only` when `only` is given, e.g. one day's partition)."""
        if self.folder is not None:
            return self.folder
        assert self.cache_dir is not None and self.s3 is not None
        sync_from_s3(self.s3, self.bucket, self.prefix, self.cache_dir, only)
        return self.cache_dir


def sync_from_s3(s3, bucket: str, prefix: str, cache_dir: Path, only: str = "") -> dict[str, int]:
    """Mirror the Parquet objects under s3://bucket/prefix(+only) into cache_dir (same relative paths):
    download new or changed objects (by ETag), delete local files whose object is gone."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / ".etags.json"
    manifest: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    listed: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + only):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                listed[obj["Key"][len(prefix):]] = obj["ETag"]
    downloaded = deleted = 0
    for relative, etag in listed.items():
        path = cache_dir / relative
        if manifest.get(relative) != etag or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.part")
            s3.download_file(bucket, prefix + relative, str(tmp))
            tmp.replace(path)
            manifest[relative] = etag
            downloaded += 1
    for relative in [r for r in manifest if r.startswith(only) and r not in listed]:
        (cache_dir / relative).unlink(missing_ok=True)
        del manifest[relative]
        deleted += 1
    manifest_path.write_text(json.dumps(manifest, indent=0, sort_keys=True))
    return {"objects": len(listed), "downloaded": downloaded, "deleted": deleted}


def local_stack_source(prefix: str | None = None, bucket: str | None = None, cache_dir: Path | None = None) -> ExportSource:
    """The export of the local stack recorded in .local/stack.env (S3 in moto)."""
    import boto3
    import requests

    import stack_state
    from provision import LOCAL_CREDENTIALS

    state = stack_state.read_state()
    if state is None:
        raise SystemExit(
            f"error: no local stack ({stack_state.state_file()} does not exist): start one with scripts/dev, "
            "or query a folder with --dir PATH"
        )
    endpoint = state["AWS_ENDPOINT_URL"]
    try:
        requests.get(endpoint + "/moto-api/", timeout=2)
    except requests.RequestException:
        raise SystemExit(f"error: the local stack is not running (moto at {endpoint} does not answer); restart it with scripts/dev") from None
    bucket = bucket or state.get("ANALYTICS_BUCKET", "")
    if not bucket:
        raise SystemExit(f"error: {stack_state.state_file()} names no ANALYTICS_BUCKET; restart the stack with scripts/dev")
    prefix = normalize_prefix(prefix if prefix is not None else DEFAULT_PREFIX)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=state["AWS_REGION"], **LOCAL_CREDENTIALS)
    cache = cache_dir or stack_state.local_dir() / "analytics" / bucket / prefix
    return ExportSource(s3=s3, bucket=bucket, prefix=prefix, cache_dir=cache)


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip().strip("/")
    return f"{prefix}/" if prefix else ""


# ---------------------------------------------------------------------------------------- example queries

@dataclass(frozen=True)
class ExampleQuery:
    name: str
    description: str
    sql: str


def example_queries(path: Path = EXAMPLES_FILE) -> list[ExampleQuery]:
    """The queries of example_queries.sql: each from its `-- name:` line to its closing `;`."""
    queries = []
    for block in re.split(r"^-- name: ", path.read_text(), flags=re.MULTILINE)[1:]:
        name, _, rest = block.partition("\n")
        description, _, sql = rest.partition("\n")
        queries.append(ExampleQuery(name.strip(), description.removeprefix("-- ").strip(), sql.strip().rstrip(";").strip()))
    return queries


# ---------------------------------------------------------------------------------------- output

def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if value % 1 else int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def print_result(columns: list[str], rows: list[tuple], fmt: str, out=sys.stdout) -> None:
    if fmt == "json":
        out.write(json.dumps([dict(zip(columns, map(_plain, row))) for row in rows]) + "\n")
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        return
    cells = [[("NULL" if v is None else str(_plain(v))) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + "\n" + line + "\n")
    for row in cells:
        out.write(" | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", text))


# ---------------------------------------------------------------------------------------- CLI

def _interactive(connection, fmt: str) -> int:
    print(f"DuckDB over {TABLE} (Presto functions as macros). End statements with ';', quit with \\q or Ctrl-D.")
    buffer: list[str] = []
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            print()
            return 0
        if not buffer and line.strip() in ("\\q", "quit", "exit"):
            return 0
        buffer.append(line)
        if line.rstrip().endswith(";"):
            sql = "\n".join(buffer)
            buffer = []
            try:
                print_result(*run_sql(connection, sql), fmt)
            except Exception as error:  # noqa: BLE001 - an analyst's typo must not end the session
                print(f"error: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/query",
        description=f"Run SQL over the local export as the Athena table {TABLE} (DuckDB, with the Presto "
        "functions of the Athena examples). Without SQL on a terminal: interactive. The export: S3 in the local "
        "stack's moto (.local/stack.env, mirrored to .local/analytics/), or a folder with --dir.",
    )
    parser.add_argument("sql", nargs="?", help="the query (default: read from --file, stdin, or interactively)")
    parser.add_argument("--file", type=Path, help="read the SQL from this file")
    parser.add_argument("--example", metavar="NAME", help="run an example query by name, or `all`")
    parser.add_argument("--list-examples", action="store_true", help="list the example queries")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dir", type=Path, help="a folder holding year=YYYY/month=MM/day=DD/*.parquet")
    source.add_argument("--bucket", help="bucket in the local stack's moto (default: its ANALYTICS_BUCKET)")
    parser.add_argument("--prefix", default=None, help=f"key prefix of the export (default {DEFAULT_PREFIX})")
    parser.add_argument("--cache-dir", type=Path, help="where S3 objects are mirrored (default .local/analytics/...)")
    args = parser.parse_args(argv)

    examples = example_queries()
    if args.list_examples:
        for example in examples:
            print(f"{example.name:<28} {example.description}")
        return 0
    if args.dir is not None:
        if not args.dir.is_dir():
            print(f"error: {args.dir} is not a folder", file=sys.stderr)
            return 2
        export = ExportSource(folder=args.dir.resolve())
    else:
        export = local_stack_source(args.prefix, args.bucket, args.cache_dir)
    connection = connect(export.local_root())

    statements: list[tuple[str, str]] = []
    if args.example:
        chosen = examples if args.example == "all" else [e for e in examples if e.name == args.example]
        if not chosen:
            print(f"error: no example {args.example!r}; try --list-examples", file=sys.stderr)
            return 2
        statements = [(f"-- {e.name}: {e.description}", e.sql) for e in chosen]
    elif args.sql or args.file:
        statements = [("", args.sql if args.sql else args.file.read_text())]
    elif sys.stdin.isatty():
        return _interactive(connection, args.format)
    else:
        statements = [("", sys.stdin.read())]

    import duckdb

    for title, sql in statements:
        if title and args.format == "table":
            print(title)
        try:
            print_result(*run_sql(connection, sql), args.format)
        except duckdb.Error as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if title and args.format == "table":
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
