#!/usr/bin/env python3
"""Two builds of the local API compared on POST /v1/messages, with their own noise measured in the same run.

A build's throughput on this 2-core machine swings by 10% and more from one run to the next (moto, the fake
and wrk share the cores; the host steals time), and an API process started earlier on a stack was seen to
run faster than the same binary started later. So a single before/after run cannot tell a 5% difference.
This one runs four arms on one stack (moto, the fake Anthropic at --delay-ms): the baseline build twice and
the candidate build twice, as "baseline", "candidate", "baseline again", "candidate again". Each round
measures every arm in turn (the order reversed every other round), each measurement in a fresh API process
(the same environment as `scripts/bench proxy`: managed mode, gateway key cached, rate-limit memory off, usage
lines on stdout, counters in moto), warmed for 2 s, then loaded by wrk for --seconds, then stopped.

Reports per arm the medians over the rounds of requests/s, p50 and p99 latency and the API process's CPU
time per request, then the candidate over the baseline (each pooled over its two arms) beside the same-build
ratios ("again" over the first arm), which are the noise a difference must exceed to mean anything.

    scripts/bench compare --baseline-bin PATH [--local-stack-bin PATH | --no-build] [--stream] ...
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_chat import add_binary_options, cpu_seconds, ensure_wrk, local_stack_bin, run_wrk  # noqa: E402
from bench_proxy import MODEL, PROMPT, bench_gateway_key, lua_script, proxy_bench_env  # noqa: E402

ARMS = ("baseline", "candidate", "baseline again", "candidate again")
METRICS = ("rps", "p50_ms", "p99_ms", "api_cpu_us")


def arm_order(round_number: int) -> list[str]:
    return list(ARMS) if round_number % 2 == 0 else list(reversed(ARMS))


def medians(rows: list[dict]) -> dict[str, float]:
    return {metric: statistics.median(row[metric] for row in rows) for metric in METRICS}


def summary(results: dict[str, list[dict]]) -> list[str]:
    """The report's lines: each arm's medians, then candidate/baseline beside the same-build ratios."""
    lines = [f"{'arm':<18}{'rounds':>7}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'API CPU µs/req':>16}"]
    for arm in ARMS:
        m = medians(results[arm])
        lines.append(f"{arm:<18}{len(results[arm]):>7}{m['rps']:>10.1f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}"
                     f"{m['api_cpu_us']:>16.1f}")
    baseline = medians(results["baseline"] + results["baseline again"])
    candidate = medians(results["candidate"] + results["candidate again"])
    same_build = [medians(results[f"{build} again"])["rps"] / medians(results[build])["rps"]
                  for build in ("baseline", "candidate")]
    ratio = candidate["rps"] / baseline["rps"]
    noise = max(abs(1 - value) for value in same_build)
    verdict = "within" if abs(1 - ratio) <= noise else "beyond"
    lines.append(f"candidate / baseline (pooled medians): req/s {ratio:.3f}, "
                 f"API CPU per request {candidate['api_cpu_us'] / baseline['api_cpu_us']:.3f}, "
                 f"p50 {candidate['p50_ms'] / baseline['p50_ms']:.3f}")
    lines.append(f"same build twice, req/s: baseline {same_build[0]:.3f}, candidate {same_build[1]:.3f}; "
                 f"the difference is {verdict} this run's noise (±{noise:.3f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-bin", metavar="PATH", required=True,
                        help="the local-stack binary to compare against (e.g. a release build of an older commit)")
    add_binary_options(parser)
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each measures every arm once (default 6)")
    parser.add_argument("--seconds", type=int, default=4, help="duration of each measurement (default 4)")
    parser.add_argument("--connections", type=int, default=2, help="concurrent connections (default 2)")
    parser.add_argument("--delay-ms", type=int, default=0, help="fixed delay of the fake Anthropic (default 0)")
    parser.add_argument("--stream", action="store_true", help="streamed answers instead of plain ones")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        parser.error("--rounds, --seconds and --connections must be at least 1")
    baseline_bin = Path(args.baseline_bin).resolve()
    if not baseline_bin.is_file():
        parser.error(f"--baseline-bin {baseline_bin} is not a file")

    wrk = ensure_wrk()
    candidate_bin = local_stack_bin(args)
    binaries = {"baseline": baseline_bin, "candidate": candidate_bin,
                "baseline again": baseline_bin, "candidate again": candidate_bin}
    os.environ["BM_LOCAL_STACK_BIN"] = str(candidate_bin)
    from localstack import LocalStack  # noqa: E402  (reads BM_LOCAL_STACK_BIN)
    from proxy_stack import create_proxy_tables, start_fake_anthropic  # noqa: E402

    run_dir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    stack = LocalStack.start(run_dir)
    try:
        fake = start_fake_anthropic(run_dir, "fake-anthropic-compare", delay_ms=args.delay_ms)
        stack.extra_apis.append(fake)
        key_table, _ = create_proxy_tables(stack.resources, "compare")

        def start_api(arm: str, tag: str):
            os.environ["BM_LOCAL_STACK_BIN"] = str(binaries[arm])
            return stack.start_api(f"api-{arm.replace(' ', '-')}-{tag}", **proxy_bench_env(key_table, fake.url))

        keys_api = start_api("candidate", "keys")
        gateway_key = bench_gateway_key(stack, keys_api.url, "compare")
        keys_api.stop()
        body = {"model": MODEL, "max_tokens": 64, "stream": args.stream,
                "messages": [{"role": "user", "content": PROMPT}]}
        script = lua_script(run_dir / "compare.lua", body, {
            "Content-Type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": gateway_key})
        print(f"baseline {baseline_bin}\ncandidate {candidate_bin}\n{'streamed' if args.stream else 'plain'} answers, "
              f"{args.connections} connection(s), {args.rounds} round(s) of {args.seconds} s per arm, "
              f"fake Anthropic delay {args.delay_ms} ms", flush=True)
        results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        for round_number in range(args.rounds):
            for arm in arm_order(round_number):
                api = start_api(arm, str(round_number))
                try:
                    url = f"{api.url}/v1/messages"
                    run_wrk(wrk, url, script, args.connections, 2)  # warm-up: connections, key cache, pools
                    time.sleep(0.5)
                    cpu_before = cpu_seconds(api.pid)
                    result = run_wrk(wrk, url, script, args.connections, args.seconds)
                    cpu_used = cpu_seconds(api.pid) - cpu_before
                finally:
                    api.stop()
                if result["errors"] or not result["requests"]:
                    sys.exit(f"{arm}: {result['errors']} non-2xx answers of {result['requests']}; see {run_dir}")
                result["api_cpu_us"] = cpu_used / result["requests"] * 1e6
                results[arm].append(result)
                print(f"round {round_number + 1} {arm:<16} req/s {result['rps']:>9.1f}  p50 {result['p50_ms']:.2f} ms  "
                      f"p99 {result['p99_ms']:.2f} ms  API CPU {result['api_cpu_us']:.1f} µs/req", flush=True)
        print("\n".join(summary(results)))
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
