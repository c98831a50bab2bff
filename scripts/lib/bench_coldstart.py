#!/usr/bin/env python3
"""Cold start of each Lambda binary (release build), against a minimal local Lambda Runtime API and Extensions
API (scripts/lib/lambda_runtime_api.py) and the local stack (moto, the fake Bedrock, the fake Anthropic).

Four cases: the three functions, and the proxy again with its provider key in a Secrets Manager secret (moto's),
as it is deployed in managed mode. For each, --runs times, a fresh process (a new execution environment) gets one API Gateway event:
- init: process start -> the runtime's first `GET /runtime/invocation/next`, and (chat-api, claude-proxy) the
  metering-flush extension's first `event/next` — Lambda's init ends at the later of the two;
- first response: process start -> the first response posted (the whole body), answered by the local stack;
- invocation end: process start -> the extension is done with that invocation (its counter updates flushed).
Every response must be a 200 with the expected body, or the benchmark fails. Reports min / median / max (ms).

The binaries are built as the deploy builds them (release, AWS_LC_SYS_NO_JITTER_ENTROPY=1), for this host.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_runtime_api import ProcessRun, RuntimeApiServer  # noqa: E402
from bench_chat import BENCH_BUILD_ENV as BUILD_ENV  # noqa: E402
from processes import REPO_ROOT  # noqa: E402

BENCH_TARGET_DIR = REPO_ROOT / "target" / "bench"
EVENTS_DIR = REPO_ROOT / "events"
FUNCTIONS = ("chat-api", "usage-api", "claude-proxy")


def build(binaries: list[str]) -> Path:
    print(f"building {', '.join(binaries)} (release, {' '.join(f'{k}={v}' for k, v in BUILD_ENV.items())})...",
          file=sys.stderr)
    packages = [arg for name in binaries for arg in ("-p", name)]
    subprocess.run(["cargo", "build", "--release", *packages], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": str(BENCH_TARGET_DIR), **BUILD_ENV})
    return BENCH_TARGET_DIR / "release"


def event(name: str, **headers: str) -> dict:
    value = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    for header, header_value in headers.items():
        value["headers"][header] = header_value
        value["multiValueHeaders"][header] = [header_value]
    return value


def gateway_status(function: str, body: bytes) -> tuple[int, bytes]:
    """The status and body of an API Gateway proxy response, buffered (JSON) or streamed (prelude, 8 NULs, body)."""
    if function == "claude-proxy":
        prelude, _, payload = body.partition(b"\0" * 8)
        return int(json.loads(prelude).get("statusCode", 0)), payload
    response = json.loads(body)
    return int(response.get("statusCode", 0)), str(response.get("body", "")).encode()


def lambda_env(base: dict[str, str], runtime_api: str, function: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if v is not None}
    env.update({
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "RUST_LOG": "info",
        # Long enough for every function's timeout budget (checked at cold start).
        "FUNCTION_TIMEOUT_SECONDS": "300",
    })
    return env


def one_cold_start(binary: Path, function: str, env: dict[str, str], request: dict,
                   log_dir: Path) -> tuple[ProcessRun, int]:
    server = RuntimeApiServer(request)
    run = server.run
    env = lambda_env(env, server.address, function)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{binary.name}.stdout.log", "ab") as out, open(log_dir / f"{binary.name}.stderr.log", "ab") as err:
        started_ns = time.monotonic_ns()
        process = subprocess.Popen([str(binary)], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    try:
        done = run.wait_for(lambda: run.error is not None or run.invocation_done_ns() is not None
                            or process.poll() is not None)
        if not done or run.error is not None or run.invocation_done_ns() is None:
            tail = (log_dir / f"{binary.name}.stderr.log").read_text(errors="replace")[-1500:]
            reached = {name: round((value - started_ns) / 1e6, 1) for name, value in vars(run).items()
                       if name.endswith("_ns") and isinstance(value, int)}
            sys.exit(f"{binary.name}: no complete invocation (error {run.error!r}, exit {process.poll()}, "
                     f"ms reached {reached}).\n{tail}")
    finally:
        server.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return run, started_ns


def summary(values_ms: list[float]) -> str:
    return f"{min(values_ms):>8.1f}{statistics.median(values_ms):>8.1f}{max(values_ms):>8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="cold starts per binary (default 20)")
    parser.add_argument("--no-build", action="store_true", help="use the existing binaries in target/bench/release")
    parser.add_argument("--bin-dir", metavar="DIR", help="take the binaries from DIR instead (no build)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    if args.bin_dir:
        bin_dir = Path(args.bin_dir).resolve()
    elif args.no_build:
        bin_dir = BENCH_TARGET_DIR / "release"
    else:
        bin_dir = build([*FUNCTIONS, "local-stack"])
    os.environ.setdefault("BM_LOCAL_STACK_BIN", str(bin_dir / "local-stack"))
    from localstack import LocalStack, api_env  # noqa: E402  (reads BM_LOCAL_STACK_BIN)
    from proxy_stack import LOCAL_PROVIDER_KEY, proxy_env  # noqa: E402

    run_dir = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    stack = LocalStack.start(run_dir, with_proxy=True)
    results: dict[str, list[tuple[float, float, float, bool]]] = {}
    try:
        base = api_env(stack.resources, stack.fake_bedrock.url, USAGE_LOG_GROUP=None, RUST_BACKTRACE=None)
        assert stack.proxy_tables and stack.fake_anthropic
        proxy_base = {**base, **proxy_env(stack.proxy_tables[0], None, stack.fake_anthropic.url,
                                          ANTHROPIC_API_KEY=LOCAL_PROVIDER_KEY, RUST_LOG=None)}
        # A gateway key for the proxy's runs, made by the proxy binary itself (POST /v1/keys, Cognito claims).
        setup, _ = one_cold_start(bin_dir / "claude-proxy", "claude-proxy", proxy_base, event("proxy-keys-create"),
                                  run_dir / "setup")
        status, body = gateway_status("claude-proxy", setup.response_body)
        if status != 201 and status != 200:
            sys.exit(f"could not create a gateway key: {status} {body[:300]!r}")
        gateway_key = json.loads(body)["key"]
        # The proxy as deployed in managed mode: its provider key in a Secrets Manager secret (moto's).
        secret_id = f"coldstart-provider-key-{os.getpid()}"
        stack.resources.client("secretsmanager").create_secret(Name=secret_id,
                                                               SecretString=json.dumps({"api_key": LOCAL_PROVIDER_KEY}))
        proxy_secret = {**proxy_base, "ANTHROPIC_API_KEY": "", "ANTHROPIC_API_KEY_SECRET_ID": secret_id}
        proxy_request = event("proxy-messages", **{"x-api-key": gateway_key})
        cases = {
            "chat-api": ("chat-api", base, event("chat"), b'"response"'),
            "usage-api": ("usage-api", base, event("usage-me"), b'"tenant_id"'),
            "claude-proxy": ("claude-proxy", proxy_base, proxy_request, b"fake-anthropic says"),
            "claude-proxy, key in Secrets Manager": ("claude-proxy", proxy_secret, proxy_request, b"fake-anthropic says"),
        }
        for label, (function, env, request, expected) in cases.items():
            binary = bin_dir / function
            results[label] = []
            for index in range(args.runs):
                run, started = one_cold_start(binary, function, env, copy.deepcopy(request),
                                              run_dir / f"{function}-{len(results)}-{index}")
                status, body = gateway_status(function, run.response_body)
                if status != 200 or expected not in body:
                    sys.exit(f"{label}: unexpected first response {status}: {body[:300]!r}")
                ms = lambda ns: (ns - started) / 1e6  # noqa: E731
                results[label].append((ms(run.init_done_ns()), ms(run.response_ns), ms(run.invocation_done_ns()),
                                       run.extension_registered_ns is not None))
    finally:
        stack.stop()

    print(f"\nLambda cold start: {args.runs} fresh processes per binary, local Runtime and Extensions API, "
          f"local stack (moto, fakes) on loopback, {os.cpu_count()} cores; binaries from {bin_dir}")
    print(f"{'ms from process start':<40}{'min':>8}{'median':>8}{'max':>8}")
    for function, runs in results.items():
        extension = " + metering-flush extension" if runs[0][3] else ""
        print(f"{function}{extension}")
        print(f"{'  init (first /next)':<40}{summary([r[0] for r in runs])}")
        print(f"{'  first response (first invoke)':<40}{summary([r[1] for r in runs])}")
        if runs[0][3]:
            print(f"{'  invocation end (extension flushed)':<40}{summary([r[2] for r in runs])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
