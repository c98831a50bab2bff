#!/usr/bin/env python3
"""Benchmark of POST /bedrock/chat through the local API server (release build), against the same load
sent straight to the fake Bedrock Runtime with the same fixed delay, in one run. The gateway's added
latency is the difference between the two. Beside them the floor, `local-stack bench-floor chat`: the same server
and the same SDK Converse call with nothing else (no authorizer, metering, limits or log line), so the gateway's
own work is what it adds over the floor. Then the local API is stopped at once (SIGTERM; it drains its
counters within METERING_DRAIN_TIMEOUT_MS) and the usage lines it wrote are compared with the requests it
answered (must be 100%); its idle and peak RSS (over the runs and the drain) are reported.

Load generator: wrk (Debian package), fixed connection count, fixed duration, loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import PeakSampler, memory_kib, memory_line  # noqa: E402
from processes import REPO_ROOT, base_env, start_local_stack_service, start_moto  # noqa: E402
from provision import DEFAULT_MODEL_ID, local_users, provision  # noqa: E402

BENCH_TARGET_DIR = REPO_ROOT / "target" / "bench"
# Built as the deploy builds the Lambdas (scripts/deploy): aws-lc without CPU jitter entropy, whose collection
# costs tens of milliseconds at a process's first use of randomness.
BENCH_BUILD_ENV = {"AWS_LC_SYS_NO_JITTER_ENTROPY": "1"}
PROMPT = "Summarise the benefits of metering every token per tenant in a multi-tenant gateway."


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (Debian package)...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is required for the benchmark and could not be installed")
    return found


def sigv4_headers(url: str, body: dict) -> dict[str, str]:
    """Headers of a SigV4-signed Bedrock call (local test credentials, us-east-1), as the SDK sends them."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=json.dumps(body), headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("testing", "testing"), "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def lua_post(path: Path, body: dict, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected latency {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> dict:
    # wrk needs at least one connection per thread.
    command = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _millis(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99_ms": _millis(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["errors"] = int(non_2xx.group(1)) if non_2xx else 0
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TABLE_CPU_NOTE = "(moto CPU: the share of one core the DynamoDB stand-in used during the run, on the cores everything shares)"


def run_wrk_watching(wrk: str, url: str, script: Path, connections: int, seconds: int, table_pids: list[int]) -> dict:
    """run_wrk, plus `table_cpu`: the share of one core the DynamoDB stand-in (moto, on the same cores) used during
    the run, which a gateway's p99 shows and its floor's does not."""
    before = sum(cpu_seconds(pid) for pid in table_pids)
    result = run_wrk(wrk, url, script, connections, seconds)
    result["table_cpu"] = (sum(cpu_seconds(pid) for pid in table_pids) - before) / seconds
    return result


def answered(result: dict) -> int:
    """Requests wrk saw answered with 2xx in one run."""
    return result["requests"] - result["errors"]


def local_stack_bin(args: argparse.Namespace) -> Path:
    """The local-stack binary to measure: --local-stack-bin, else the release build (built unless --no-build)."""
    if args.local_stack_bin:
        return Path(args.local_stack_bin).resolve()
    if not args.no_build:
        print("building local-stack (release)...", file=sys.stderr)
        # A target dir of its own, so the long release build never holds the dev builds' lock.
        subprocess.run(["cargo", "build", "--release", "-p", "local-stack"], cwd=REPO_ROOT, check=True,
                       env=dict(os.environ, **BENCH_BUILD_ENV, CARGO_TARGET_DIR=str(BENCH_TARGET_DIR)))
    return BENCH_TARGET_DIR / "release" / "local-stack"


def add_binary_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-build", action="store_true", help="use the existing target/bench/release/local-stack")
    parser.add_argument("--local-stack-bin", metavar="PATH",
                        help="measure this local-stack binary instead (e.g. target/debug/local-stack; no build)")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-workers", type=int, metavar="N",
                        help="tokio worker threads of the measured servers (the gateway and its floor alike: "
                             "TOKIO_WORKER_THREADS); default: tokio's, one per core")
    parser.add_argument("--counter-interval-ms", type=int, metavar="MS",
                        help="METERING_COUNTER_INTERVAL_MS of the gateway: the least time between two counter writes "
                             "of one key, so how often moto (on the same cores) works; default: the gateway's (250)")


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment --api-workers and --counter-interval-ms give the measured servers (the floor has no counters
    and ignores the interval; both get the same worker count, so the floor stays fair)."""
    env = {} if args.api_workers is None else {"TOKIO_WORKER_THREADS": str(args.api_workers)}
    if args.counter_interval_ms is not None:
        env["METERING_COUNTER_INTERVAL_MS"] = str(args.counter_interval_ms)
    return env


def check_server_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.api_workers is not None and args.api_workers < 1:
        parser.error("--api-workers must be at least 1")
    if args.counter_interval_ms is not None and not 0 <= args.counter_interval_ms <= 60_000:
        parser.error("--counter-interval-ms must be from 0 to 60000")


def server_label(args: argparse.Namespace) -> str:
    label = f"{args.api_workers} tokio worker(s) per server" if args.api_workers else "tokio workers: one per core"
    interval = "default" if args.counter_interval_ms is None else f"{args.counter_interval_ms} ms"
    return f"{label}, counter interval {interval}"


def stop_and_count(server, count_lines, timeout: float = 120.0) -> tuple[int, float, int | None]:
    """SIGTERM the server (it drains its counters within METERING_DRAIN_TIMEOUT_MS), wait for it to exit, then
    count the usage lines it wrote: (lines, seconds it took to exit, exit code)."""
    started = time.monotonic()
    code = server.stop(timeout=timeout)
    return count_lines(), time.monotonic() - started, code


def billing_line(lines: int, answered_requests: int) -> str:
    share = 100.0 * lines / answered_requests if answered_requests else 0.0
    verdict = "OK" if lines >= answered_requests else "LINES MISSING"
    return (f"usage lines written / answered requests when the server stopped: {lines} / {answered_requests} "
            f"= {share:.2f}% ({verdict})")


def admitted_by_limits(resources, tenant_id: str) -> int:
    """The requests the limits admitted for `tenant_id`: the sum of its requests-per-minute counters."""
    dynamodb = resources.client("dynamodb")
    total = 0
    for page in dynamodb.get_paginator("query").paginate(
        TableName=resources.usage_table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"BUDGET#{tenant_id}"}}, ConsistentRead=True,
    ):
        total += sum(int(item["admitted"]["N"]) for item in page["Items"] if item["sk"]["S"].startswith("MINUTE#"))
    return total


FLOOR = "floor: SDK call only"


def floor_line(floor: dict, gateway: dict, direct: dict) -> str:
    """The gateway against its floor (the same server and upstream call with nothing else): what any server making
    that call adds on this machine, and what the gateway's own work adds on top."""
    return (f"floor (server + upstream call, nothing else): req/s {floor['rps']:.1f}, added over direct p50 "
            f"{floor['p50_ms'] - direct['p50_ms']:.2f} ms, p99 {floor['p99_ms'] - direct['p99_ms']:.2f} ms; "
            f"gateway/floor req/s {gateway['rps'] / max(floor['rps'], 0.001):.3f}, gateway's own work p50 "
            f"{gateway['p50_ms'] - floor['p50_ms']:.2f} ms, p99 {gateway['p99_ms'] - floor['p99_ms']:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each measured run (default 15)")
    parser.add_argument("--delay-ms", type=int, default=50, help="fixed delay of the fake Bedrock (default 50)")
    add_binary_options(parser)
    add_server_options(parser)
    args = parser.parse_args()
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    check_server_options(parser, args)

    wrk = ensure_wrk()
    os.environ["BM_LOCAL_STACK_BIN"] = str(local_stack_bin(args))
    from localstack import LocalStack  # noqa: E402  (reads BM_LOCAL_STACK_BIN)

    run_dir = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    stack = LocalStack.start(run_dir)
    try:
        slow_bedrock = start_local_stack_service(
            "fake-bedrock", "fake-bedrock-delayed", run_dir, base_env(),
            extra_args=["--delay-ms", str(args.delay_ms)], require_health=False,
        )
        stack.extra_apis.append(slow_bedrock)
        # Usage lines still go to stdout (as in Lambda); the local-only copy to moto's CloudWatch Logs is off.
        # Limits off here (LIMITS_ENABLED=false); a second API enforces limits on its own tenant, so the added
        # latency of enforcement (limits cached; reservation and settlement against moto) is measured in the same run.
        api = stack.start_api("api-bench", AWS_ENDPOINT_URL_BEDROCK_RUNTIME=slow_bedrock.url, USAGE_LOG_GROUP=None,
                              LIMITS_ENABLED="false", **server_env(args))
        # The floor: the same server and the same SDK Converse call, and nothing else (no authorizer, metering,
        # limits or log line). What the gateway adds over it is the gateway's own work.
        floor = stack.start_floor("chat", "bench-floor-chat", AWS_ENDPOINT_URL_BEDROCK_RUNTIME=slow_bedrock.url,
                                  **server_env(args))
        # Its DynamoDB is a moto of its own, holding only its items: moto's TransactWriteItems deep-copies the whole
        # table once per item of the transaction, so in the shared moto (thousands of counter items after the
        # other runs) a reservation would cost hundreds of ms of moto's copying, not of the gateway or DynamoDB.
        # Its store timeout is long: a reservation moto answers late must be measured, not skipped by failing open
        # (which the run counts and reports: it must be 0).
        limits_dir = run_dir / "limits-dynamodb"
        limits_dir.mkdir()
        limits_moto = start_moto(limits_dir)
        limits_resources = provision(limits_moto.url, suffix="bench-limits")
        # Two of them: with leases (the local server's default: most requests admitted from memory) and without
        # (as in Lambda: one reservation per request, one synchronous round trip to DynamoDB).
        limited_env = dict(AWS_ENDPOINT_URL_BEDROCK_RUNTIME=slow_bedrock.url, AWS_ENDPOINT_URL_DYNAMODB=limits_moto.url,
                           USAGE_TABLE_NAME=limits_resources.usage_table, USAGE_LOG_GROUP=None,
                           LIMITS_EVENT_BUS_NAME="none", LIMITS_STORE_TIMEOUT_MS="30000", **server_env(args))
        limited_api = stack.start_api("api-bench-limits", **limited_env)
        unleased_api = stack.start_api("api-bench-limits-no-leases", LIMITS_LEASE_REQUESTS="0", **limited_env)
        stack.extra_apis.append(limits_moto)  # stopped after the API that writes to it
        users = local_users(stack.resources)
        password = "Bench-Passw0rd!-Bench"
        users.create_tenant_user("bench-user", "bench-user@example.com", "bench-tenant", password=password)
        token = users.get_id_token("bench-user", password)
        users.create_tenant_user("bench-limited", "bench-limited@example.com", "bench-limited-tenant", password=password)
        limited_token = users.get_id_token("bench-limited", password)
        limits_resources.client("dynamodb").put_item(TableName=limits_resources.usage_table, Item={
            "pk": {"S": "LIMITS#bench-limited-tenant"}, "sk": {"S": "CONFIG"},
            "tokens_per_month": {"N": "1000000000000"}, "requests_per_minute": {"N": "10000000"},
        })
        limited_script = lua_post(run_dir / "limited.lua", {"prompt": PROMPT},
                                  {"Content-Type": "application/json", "Authorization": f"Bearer {limited_token}"})

        gateway_script = lua_post(run_dir / "gateway.lua", {"prompt": PROMPT},
                                  {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        converse_body = {"messages": [{"role": "user", "content": [{"text": PROMPT}]}]}
        model_path = "/model/" + DEFAULT_MODEL_ID.replace(":", "%3A") + "/converse"
        # The fake Bedrock wants a SigV4-signed call, within 5 minutes of its x-amz-date: signed once here.
        direct_script = lua_post(run_dir / "direct.lua", converse_body,
                                 sigv4_headers(slow_bedrock.url + model_path, converse_body))
        targets = {
            "direct to fake Bedrock": (slow_bedrock.url + model_path, direct_script),
            FLOOR: (floor.url + "/bedrock/chat", gateway_script),
            "through the gateway": (api.url + "/bedrock/chat", gateway_script),
            "gateway, limits on": (limited_api.url + "/bedrock/chat", limited_script),
            "limits on, no leases": (unleased_api.url + "/bedrock/chat", limited_script),
        }
        results = {}
        idle_kib = memory_kib(api.pid, "VmRSS")
        sampler = PeakSampler(api.pid)
        gateway_answered = limited_answered = 0
        for name, (url, script) in targets.items():
            warm_up = run_wrk(wrk, url, script, args.connections, 3)
            results[name] = run_wrk_watching(wrk, url, script, args.connections, args.seconds,
                                             [stack.moto.pid, limits_moto.pid])
            if url.startswith(api.url):
                gateway_answered += answered(warm_up) + answered(results[name])
            if url.startswith((limited_api.url, unleased_api.url)):
                limited_answered += answered(warm_up) + answered(results[name])
        limits_checked = admitted_by_limits(limits_resources, "bench-limited-tenant")
        failed_open = sum(1 for server in (limited_api, unleased_api)
                          for line in server.stderr_path.read_text(errors="replace").splitlines()
                          if '"limits_unavailable"' in line)
        # No pause: the server is stopped with whatever counter backlog the load left.
        metered, stop_seconds, exit_code = stop_and_count(
            api, lambda: sum(1 for line in api.usage_lines() if line.get("tenant_id") == "bench-tenant"))
        peak_kib = sampler.stop_sampling()
    finally:
        stack.stop()

    direct, gateway = results["direct to fake Bedrock"], results["through the gateway"]
    print(f"\n/bedrock/chat benchmark: wrk, {args.connections} connections, {args.seconds}s per run, "
          f"fake Bedrock delay {args.delay_ms} ms, {os.cpu_count()} cores, {server_label(args)}, loopback")
    print(f"{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}{'moto CPU':>10}")
    for name, r in results.items():
        print(f"{name:<26}{r['rps']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>10}"
              f"{r['table_cpu']:>10.0%}")
    print(TABLE_CPU_NOTE)
    print(f"throughput ratio gateway/direct: {gateway['rps'] / direct['rps']:.3f}")
    for name, what in (("gateway, limits on", "leases: most requests admitted from memory"),
                       ("limits on, no leases", "a reservation in moto per request")):
        limited = results[name]
        print(f"added latency of limits ({name} - off) p50: {limited['p50_ms'] - gateway['p50_ms']:.2f} ms, "
              f"p99: {limited['p99_ms'] - gateway['p99_ms']:.2f} ms ({what}); "
              f"throughput on/off: {limited['rps'] / gateway['rps']:.3f}")
    print(f"limits on: requests counted by the requests_per_minute counters / answered: {limits_checked} / "
          f"{limited_answered}; admitted unchecked (limits_unavailable, fail open): {failed_open}")
    print(f"added latency p50: {gateway['p50_ms'] - direct['p50_ms']:.2f} ms, "
          f"p99: {gateway['p99_ms'] - direct['p99_ms']:.2f} ms")
    print(floor_line(results[FLOOR], gateway, direct))
    print(billing_line(metered, gateway_answered))
    print(f"server exit after SIGTERM: {stop_seconds:.1f}s (code {exit_code}); "
          f"local API {memory_line(idle_kib, peak_kib)} (peak over the runs and the drain)")
    return 0 if metered >= gateway_answered and failed_open == 0 and limits_checked >= limited_answered else 1


if __name__ == "__main__":
    sys.exit(main())
