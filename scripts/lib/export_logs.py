#!/usr/bin/env python3
"""scripts/export-logs: run the log export (CloudWatch Logs -> Parquet in S3) now, and print its summary.

Locally it runs `log-processor export` against the stack of .local/stack.env (moto); with --aws it invokes
the deployed Lambda (MeteringAnalyticsStack output LogProcessorFunctionName) with the same payload.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack_state  # noqa: E402
from processes import REPO_ROOT, base_env  # noqa: E402

ANALYTICS_STACK_NAME = os.environ.get("BM_ANALYTICS_STACK_NAME", "MeteringAnalyticsStack")


class Prerequisite(RuntimeError):
    """Something the command needs is missing; the message says how to fix it."""


def log_processor_binary() -> Path:
    """target/debug/log-processor (or $BM_LOG_PROCESSOR_BIN, or under $CARGO_TARGET_DIR)."""
    override = os.environ.get("BM_LOG_PROCESSOR_BIN")
    if override:
        return Path(override)
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target")) / "debug" / "log-processor"


def build_log_processor() -> Path:
    if os.environ.get("BM_LOG_PROCESSOR_BIN"):
        return log_processor_binary()
    result = subprocess.run(["cargo", "build", "--quiet", "-p", "log-processor"], cwd=REPO_ROOT, stdout=sys.stderr)
    if result.returncode != 0:
        raise Prerequisite("`cargo build -p log-processor` failed; see the compiler output above")
    return log_processor_binary()


def payload_of(args: argparse.Namespace) -> dict:
    payload: dict = {}
    if args.date:
        payload = {"date": args.date}
    elif args.from_day or args.to_day:
        if not (args.from_day and args.to_day):
            raise Prerequisite("--from and --to go together")
        payload = {"from": args.from_day, "to": args.to_day}
    if getattr(args, "allow_shrink", False):
        payload["allow_shrink"] = True
    return payload


def aws_session():
    """A boto3 session in the region the operator named. boto3 reads AWS_DEFAULT_REGION and the profile's
    region, but not AWS_REGION (the variable the README and the Rust SDK use): honour it first."""
    import boto3

    return boto3.Session(region_name=os.environ.get("AWS_REGION") or None)


def local_export_env(state: dict[str, str], log_groups: list[str] | None, bucket: str | None, prefix: str | None) -> dict[str, str]:
    """The log processor's environment against the local stack (moto)."""
    env = base_env()
    env.update(
        {
            "AWS_REGION": state["AWS_REGION"],
            "AWS_ACCESS_KEY_ID": state.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": state.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "AWS_ENDPOINT_URL": state["AWS_ENDPOINT_URL"],
            "USAGE_LOG_GROUPS": ",".join(log_groups) if log_groups else state.get("USAGE_LOG_GROUP", ""),
            "ANALYTICS_BUCKET": bucket or state.get("ANALYTICS_BUCKET", ""),
            "LOGS_PREFIX": prefix if prefix is not None else "logs/",
        }
    )
    env.setdefault("RUST_LOG", "warn")
    return env


def run_local(args: argparse.Namespace, payload: dict) -> tuple[int, dict | None]:
    state = stack_state.read_state()
    if state is None:
        raise Prerequisite(
            f"no local stack: {stack_state.state_file()} does not exist. Start one with scripts/dev "
            "(or pass --aws for the deployed stack)."
        )
    import requests

    try:
        requests.get(state["AWS_ENDPOINT_URL"] + "/moto-api/", timeout=2)
    except requests.RequestException:
        raise Prerequisite(
            f"the local stack is not running (moto at {state['AWS_ENDPOINT_URL']} does not answer); restart it with scripts/dev"
        ) from None
    binary = log_processor_binary() if args.no_build else build_log_processor()
    if not binary.exists():
        raise Prerequisite(f"{binary} does not exist: build it with `cargo build -p log-processor`")
    command = [str(binary), "export"]
    for key, flag in (("date", "--date"), ("from", "--from"), ("to", "--to")):
        if key in payload:
            command += [flag, payload[key]]
    if args.max_rows_per_object:
        command += ["--max-rows-per-object", str(args.max_rows_per_object)]
    if payload.get("allow_shrink"):
        command += ["--allow-shrink"]
    env = local_export_env(state, args.log_group, args.bucket, args.prefix)
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    summary = json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None
    return result.returncode, summary


def run_aws(payload: dict) -> tuple[int, dict | None]:
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        if "127.0.0.1" in os.environ[key] or "localhost" in os.environ[key]:
            print(f"note: ignoring {key}={os.environ[key]} (a local endpoint) for --aws", file=sys.stderr)
            del os.environ[key]
    session = aws_session()
    if session.get_credentials() is None:
        raise Prerequisite("no AWS credentials found: set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not session.region_name:
        raise Prerequisite(f"no AWS region: set AWS_REGION (the region {ANALYTICS_STACK_NAME} is deployed in)")
    function_name = stack_output(session, ANALYTICS_STACK_NAME, "LogProcessorFunctionName")
    # The export of a large day runs for minutes: wait as long as the Lambda may, and never retry an invoke.
    client = session.client("lambda", config=Config(read_timeout=905, connect_timeout=10, retries={"max_attempts": 0}))
    print(f"invoking {function_name} with {json.dumps(payload)}", file=sys.stderr)
    try:
        response = client.invoke(FunctionName=function_name, Payload=json.dumps(payload).encode())
    except (BotoCoreError, ClientError) as error:
        raise Prerequisite(f"cannot invoke {function_name}: {error}") from None
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
        message = body.get("errorMessage", body) if isinstance(body, dict) else body
        print(f"error ({kind}): {message}", file=sys.stderr)
        return {"BadRequest": 2, "WouldShrink": 3}.get(kind, 1), None
    return 0, body


def stack_output(session, stack_name: str, key: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        raise Prerequisite(
            f"cannot read stack {stack_name} in {session.region_name}: {error.response['Error'].get('Message', error)} "
            "(is it deployed? check AWS_REGION/AWS_PROFILE)"
        ) from None
    except BotoCoreError as error:
        raise Prerequisite(f"cannot reach CloudFormation in {session.region_name}: {error}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if key not in outputs:
        raise Prerequisite(f"stack {stack_name} has no output {key}; is it fully deployed?")
    return outputs[key]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_summary(summary: dict, out=sys.stdout) -> None:
    span = summary["from"] if summary["from"] == summary["to"] else f"{summary['from']}..{summary['to']}"
    out.write(
        f"exported {span} ({summary['trigger']}): {summary['events_read']} events read, {summary['rows_written']} rows "
        f"written, {summary['skipped']} skipped, {summary['objects']} object(s), {_size(summary['bytes'])}, "
        f"{summary['seconds']} s\n"
    )
    header = ("day", "events", "rows", "not-usage", "malformed", "other-day", "objects", "bytes", "stale-deleted", "complete")
    rows = [
        (d["day"], d["events_read"], d["rows_written"], d["skipped_not_usage"], d["skipped_malformed"],
         d["outside_day"], len(d["objects"]), d["bytes"], d["stale_objects_deleted"], "yes" if d.get("complete") else "no")
        for d in summary["days"]
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        out.write("  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths))) + "\n")
    for day in summary["days"]:
        for uri in day["objects"]:
            out.write(f"  {uri}\n")
        if day.get("manifest"):
            out.write(f"  {day['manifest']}\n")
        for sample in day.get("malformed_samples", []):
            out.write(f"  malformed: {sample}\n")
        if day.get("note"):
            out.write(f"  note: {day['note']}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/export-logs",
        description="Export usage lines (CloudWatch Logs) to Parquet in S3 now and print the summary. Default: "
        "today so far, against the local stack (.local/stack.env, moto) with target/debug/log-processor; "
        "--aws invokes the deployed Lambda (MeteringAnalyticsStack output LogProcessorFunctionName). "
        "Re-running a day replaces its objects, unless that would shrink it (see --allow-shrink). "
        "Exit codes: 0 done, 1 failed, 2 bad request or missing prerequisite, 3 refused to shrink a day.",
    )
    days = parser.add_mutually_exclusive_group()
    days.add_argument("--date", help="one UTC day, YYYY-MM-DD (default: today so far)")
    days.add_argument("--from", dest="from_day", metavar="FROM", help="first day of a range (at most 31 days), with --to")
    parser.add_argument("--to", dest="to_day", metavar="TO", help="last day of the range, included")
    parser.add_argument("--aws", action="store_true", help="invoke the deployed Lambda instead (also: BM_STACK=aws)")
    parser.add_argument("--local", action="store_true", help="use the local stack even if BM_STACK=aws")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    local = parser.add_argument_group("local only")
    local.add_argument("--no-build", action="store_true", help="do not run `cargo build -p log-processor` first")
    local.add_argument("--log-group", action="append", help="log group to read (repeatable; default: the stack's USAGE_LOG_GROUP)")
    local.add_argument("--bucket", help="bucket to write (default: the stack's ANALYTICS_BUCKET)")
    local.add_argument("--prefix", help="key prefix (default logs/)")
    local.add_argument("--max-rows-per-object", type=int, help="split a day into objects of this many rows")
    parser.add_argument("--allow-shrink", action="store_true",
                        help="replace a day even when the log now has fewer rows than its _SUCCESS manifest records "
                        "(without it such a re-export is refused, exit 3, and the earlier export kept)")
    args = parser.parse_args(argv)
    if args.aws and args.local:
        parser.error("--aws and --local exclude each other")
    use_aws = args.aws or (not args.local and os.environ.get("BM_STACK", "local").lower() == "aws")
    try:
        payload = payload_of(args)
        code, summary = run_aws(payload) if use_aws else run_local(args, payload)
    except Prerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if summary is not None:
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print_summary(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
