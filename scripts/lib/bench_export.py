#!/usr/bin/env python3
"""scripts/bench-export: the log export's figures, on a release build of log-processor.

1. transform: events/s of JSON line -> Parquet row group, one core (`log-processor bench-transform`);
2. day loop: a day of 10,000,000 synthetic events through the whole export loop into a byte-counting store,
   with the process's peak memory (`log-processor bench-day`): the Lambda must fit 512 MB;
3. a 200,000-line day exported from moto (CloudWatch Logs -> S3) by `log-processor export`: wall time and
   peak RSS, and its size in Parquet against the same lines as gzip JSON lines.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import REPO_ROOT, base_env, start_moto  # noqa: E402
from provision import LOCAL_CREDENTIALS  # noqa: E402
from synthetic_usage import put_lines, synthetic_day  # noqa: E402

REGION = "us-east-1"


def release_binary() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target")) / "release" / "log-processor"


def run_measured(command: list[str], env: dict[str, str] | None = None, pin_core: bool = False) -> tuple[str, float, int]:
    """Runs command; returns (stdout, wall seconds, peak RSS in bytes of that process).

    The peak is taken by /usr/bin/time when there is one: the rusage of a child forked from this Python
    process would count the parent's pages copied before exec (the synthetic lines it holds)."""
    if pin_core and shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *command] if Path("/usr/bin/time").exists() else command
        started = time.monotonic()
        process = subprocess.Popen(timed, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        stdout = process.stdout.read().decode() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"error: {' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)})")
        text = rss_file.read().strip()
        peak_kib = int(text.splitlines()[-1]) if text else usage.ru_maxrss  # KiB on Linux
    return stdout, seconds, peak_kib * 1024


def bench_moto_day(binary: Path, lines_count: int) -> dict:
    import boto3

    run_dir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    moto = start_moto(run_dir)
    try:
        kwargs = dict(endpoint_url=moto.url, region_name=REGION, **LOCAL_CREDENTIALS)
        s3, logs = boto3.client("s3", **kwargs), boto3.client("logs", **kwargs)
        bucket, group = "bench-export", "/aws/lambda/bedrock-metering-chat"
        s3.create_bucket(Bucket=bucket)
        day = datetime.now(timezone.utc).date() - timedelta(days=1)
        lines = synthetic_day(day, lines_count, seed=5)
        put_lines(logs, group, lines)
        env = base_env()
        env.update({"AWS_ENDPOINT_URL": moto.url, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "USAGE_LOG_GROUPS": group, "ANALYTICS_BUCKET": bucket,
                    "RUST_LOG": "warn"})
        stdout, seconds, rss = run_measured([str(binary), "export", "--date", day.isoformat()], env)
        summary = json.loads(stdout)
        json_lines = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        return {
            "lines": lines_count,
            "rows": summary["rows_written"],
            "seconds": round(seconds, 2),
            "peak_rss_bytes": rss,
            "parquet_bytes": summary["bytes"],
            "json_bytes": len(json_lines),
            "gzip_json_bytes": len(gzip.compress(json_lines, compresslevel=6)),
        }
    finally:
        moto.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transform-lines", type=int, default=1_000_000)
    parser.add_argument("--day-events", type=int, default=10_000_000)
    parser.add_argument("--moto-lines", type=int, default=200_000)
    parser.add_argument("--no-build", action="store_true", help="use the existing target/release/log-processor")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--compare-with", type=Path, metavar="BINARY",
                        help="another log-processor build (e.g. one of main): its transform is measured in the same run, "
                             "alternating with this one")
    parser.add_argument("--transform-only", action="store_true", help="measure the transform only (no day loop, no moto)")
    args = parser.parse_args(argv)

    binary = release_binary()
    if not args.no_build:
        print("building: cargo build --release -p log-processor", file=sys.stderr)
        if subprocess.run(["cargo", "build", "--release", "-p", "log-processor"], cwd=REPO_ROOT).returncode != 0:
            print("error: the release build failed", file=sys.stderr)
            return 1
    if not binary.exists():
        print(f"error: {binary} does not exist (drop --no-build)", file=sys.stderr)
        return 2

    def measure_transform(program: Path) -> dict:
        out, _, _ = run_measured([str(program), "bench-transform", "--lines", str(args.transform_lines)], pin_core=True)
        return json.loads(out)

    print("measuring: transform", file=sys.stderr)
    baseline = None
    if args.compare_with:
        # Alternating runs, the best of two each: a busy machine slows both alike.
        runs = {"baseline": [], "this": []}
        for _ in range(2):
            runs["baseline"].append(measure_transform(args.compare_with))
            runs["this"].append(measure_transform(binary))
        best = lambda results: max(results, key=lambda r: r.get("events_per_cpu_second") or r["events_per_second"])  # noqa: E731
        baseline, transform = best(runs["baseline"]), best(runs["this"])
    else:
        transform = measure_transform(binary)
    if args.transform_only:
        figures = {"transform": transform, "baseline_transform": baseline}
        print(json.dumps(figures, indent=2) if args.json else transform_table(transform, baseline))
        return 0
    print("measuring: day loop", file=sys.stderr)
    out, _, day_rss = run_measured([str(binary), "bench-day", "--events", str(args.day_events)], {**base_env(), "RUST_LOG": "warn"})
    day = json.loads(out)
    print("measuring: export from moto", file=sys.stderr)
    moto_day = bench_moto_day(binary, args.moto_lines)
    figures = {"transform": transform, "baseline_transform": baseline, "day_loop": {**day, "peak_rss_bytes": day_rss},
               "moto_day": moto_day}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    rows = [
        ("transform, 1 core (JSON line -> priced Parquet row group)", f"{transform['lines']:,} lines",
         f"{transform['events_per_second']:,.0f} events/s (target >= 1,000,000), "
         f"{transform['parquet_bytes_per_row']} B/row (entropy floor {transform.get('entropy_floor_bytes_per_row')})"),
        ("day loop, no network (pages -> parts)", f"{day['events']:,} events",
         f"{day['events_per_second']:,.0f} events/s, peak RSS {mb(day_rss)}"),
        ("export from moto (FilterLogEvents -> S3)", f"{moto_day['lines']:,} lines",
         f"{moto_day['seconds']} s, peak RSS {mb(moto_day['peak_rss_bytes'])}"),
        ("one day as JSON lines", f"{moto_day['lines']:,} lines", mb(moto_day["json_bytes"])),
        ("one day as gzip JSON lines (level 6)", "", mb(moto_day["gzip_json_bytes"])),
        ("one day as Parquet (zstd)", "",
         f"{mb(moto_day['parquet_bytes'])} ({moto_day['gzip_json_bytes'] / moto_day['parquet_bytes']:.2f}x smaller than gzip), "
         f"{moto_day['parquet_bytes'] / max(1, moto_day['rows']):.1f} B/row (target <= 20)"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print("log-processor (release build)")
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print(transform_table(transform, baseline))
    return 0


def transform_table(transform: dict, baseline: dict | None) -> str:
    """The transform's figures (wall and CPU events/s, bytes per row, the largest columns), beside a baseline's."""
    lines = ["transform, 1 core:"]
    for label, figures in (("baseline", baseline), ("this build", transform)):
        if figures is None:
            continue
        cpu = figures.get("events_per_cpu_second")
        lines.append(f"  {label:<11} {figures['events_per_second']:>12,.0f} events/s wall, "
                     f"{'n/a' if cpu is None else f'{cpu:,.0f}'} events/CPU-s, {figures['parquet_bytes_per_row']} B/row")
    if transform.get("entropy_floor_bytes_per_row") is not None:
        lines.append(f"  entropy floor of the benchmark day: {transform['entropy_floor_bytes_per_row']} B/row, of which the "
                     f"request id {transform['request_id_entropy_bytes_per_row']} (no lossless file is smaller on average)")
    columns = transform.get("column_bytes_per_row") or {}
    largest = sorted(columns.items(), key=lambda item: -item[1])[:6]
    if largest:
        lines.append("  largest columns (B/row): " + ", ".join(f"{name} {size}" for name, size in largest))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
