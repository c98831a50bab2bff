#!/usr/bin/env python3
"""Benchmark of POST /v1/messages: the same load, in one run, sent (1) straight to the fake Anthropic API,
(2) through this project's Claude proxy (local-stack api, release build) and (3) through LiteLLM's proxy
(`litellm[proxy]`, its own venv under .local/), both configured for the same fake upstream with a fixed delay.
Also (4) the floor: `local-stack bench-floor proxy`, the same server and HTTP client forwarding to the same fake
and nothing else, so the proxy's own work is what it adds over the floor.
Reports requests/s, p50/p99 latency and the latency each proxy adds over the direct run, peak memory (RSS
high-water mark) of each proxy, and the ratios. Plain and streamed answers. Then stops this proxy at once
(SIGTERM; it drains its counters within METERING_DRAIN_TIMEOUT_MS) and reports the usage lines it wrote against
the requests it answered (must be 100%), how long it took to exit, and its idle and peak RSS over the whole
run. --no-litellm measures this proxy alone; --local-stack-bin measures a given build.

Load generator: wrk (Debian package), the same Lua script shape, connections and duration for every target;
everything on 127.0.0.1; every run bounded in time.

What each proxy does per request, as configured here:
- claude proxy: gateway key verified (first time against the key table in moto, then from its in-memory
  cache: API_KEY_CACHE_SECONDS), the request forwarded, usage read from the answer, one usage line on stdout
  and the DynamoDB counters updated off the answer's path (moto; the backlog is reported). Rate-limit memory
  off (it would add one moto read per request, which measures moto, not the proxy).
- LiteLLM: master key, no database (no spend logs), LITELLM_LOCAL_MODEL_COST_MAP=True, as many workers as
  cores (--litellm-workers; its default is one), its defaults otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_chat import (  # noqa: E402
    TABLE_CPU_NOTE, add_binary_options, add_server_options, billing_line, check_server_options, ensure_wrk, floor_line,
    local_stack_bin, run_wrk, run_wrk_watching, server_env, server_label, stop_and_count,
)
from bench_memory import PeakSampler, memory_kib, memory_line  # noqa: E402
from processes import REPO_ROOT, ManagedProcess, base_env, free_port, spawn, wait_until  # noqa: E402

LITELLM_VENV = REPO_ROOT / ".local" / "litellm-venv"
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
MODEL = "claude-sonnet-4-5-20250929"
PROMPT = "Summarise the benefits of metering every token per tenant in a multi-tenant gateway."
LITELLM_MASTER_KEY = "sk-litellm-bench-master"
UPSTREAM_KEY = "sk-ant-bench-upstream"


def ensure_litellm() -> Path:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if litellm.exists():
        return litellm
    print(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (about 3.5 minutes)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_REQUIREMENT], check=True, timeout=1200)
    return litellm


def lua_script(path: Path, body: dict, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def proxy_bench_env(key_table: str, fake_url: str) -> dict[str, str | None]:
    """The proxy as the benchmarks run it: managed mode with the bench's upstream key, gateway keys cached,
    rate-limit memory off (it would measure moto), warnings only, usage lines on stdout."""
    from proxy_stack import proxy_env
    return proxy_env(key_table, None, fake_url, ANTHROPIC_API_KEY=UPSTREAM_KEY, API_KEY_CACHE_SECONDS="300",
                     RUST_LOG="warn", USAGE_LOG_GROUP=None)


def bench_gateway_key(stack, api_url: str, name: str) -> str:
    """A gateway key, made through the proxy at `api_url`, of a tenant user of its own (tenant `bench-NAME-tenant`)."""
    import requests
    from provision import local_users
    users = local_users(stack.resources)
    user, password = f"bench-{name}-user", f"Bench-Passw0rd!-{name}"
    users.create_tenant_user(user, f"{user}@example.com", f"bench-{name}-tenant", password)
    token = users.get_id_token(user, password)
    return requests.post(f"{api_url}/v1/keys", json={"name": name},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["key"]


def start_litellm(litellm: Path, run_dir: Path, upstream_url: str, workers: int) -> ManagedProcess:
    config = run_dir / "litellm.yaml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {"model": f"anthropic/{MODEL}", "api_base": upstream_url, "api_key": UPSTREAM_KEY},
        }],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }, indent=2))
    port = free_port()
    env = base_env()
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                "DISABLE_SCHEMA_UPDATE": "True"})
    env.pop("DATABASE_URL", None)
    process = spawn("litellm", [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", str(workers)],
                    run_dir, env, detached=False, cmdline_marker="litellm")
    process.url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        import requests
        try:
            return requests.get(process.url + "/health/liveliness", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until("LiteLLM to answer /health/liveliness", ready, process, timeout=180)
    return process


def metered_lines(proxy: ManagedProcess) -> int:
    return sum(1 for line in proxy.usage_lines() if line.get("tenant_id") == "bench-proxy-tenant")


def check_answer(url: str, headers: dict[str, str], stream: bool) -> None:
    """One request before measuring: the target must really answer through to the fake."""
    import requests
    body = {"model": MODEL, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    response = requests.post(url, json=body, headers=headers, timeout=30)
    text = response.text
    expected = ("fake-anthropic", "message_stop") if stream else ("fake-anthropic says:",)
    if response.status_code != 200 or not all(part in text for part in expected):
        sys.exit(f"{url} did not answer as expected: {response.status_code} {text[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each measured run (default 15)")
    parser.add_argument("--delay-ms", type=int, default=50, help="fixed delay of the fake Anthropic (default 50)")
    add_binary_options(parser)
    add_server_options(parser)
    parser.add_argument("--no-stream", action="store_true", help="only plain (non-streamed) answers")
    parser.add_argument("--no-litellm", action="store_true", help="measure only this proxy (and the direct runs)")
    parser.add_argument("--litellm-workers", type=int, default=os.cpu_count() or 1,
                        help="LiteLLM worker processes (default: one per core, as the claude proxy uses every core)")
    args = parser.parse_args()
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    check_server_options(parser, args)

    wrk = ensure_wrk()
    litellm = None if args.no_litellm else ensure_litellm()
    os.environ["BM_LOCAL_STACK_BIN"] = str(local_stack_bin(args))
    from localstack import LocalStack  # noqa: E402  (reads BM_LOCAL_STACK_BIN)
    from proxy_stack import create_proxy_tables, start_fake_anthropic  # noqa: E402

    ours_name, theirs_name, direct_name = "claude proxy (this project)", "LiteLLM proxy", "direct to fake Anthropic"
    floor_name = "floor: pass-through only"
    run_dir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    stack = LocalStack.start(run_dir)
    try:
        fake = start_fake_anthropic(run_dir, "fake-anthropic-delayed", delay_ms=args.delay_ms)
        stack.extra_apis.append(fake)
        key_table, _ = create_proxy_tables(stack.resources, "bench")
        proxy = stack.start_api("api-proxy-bench", **proxy_bench_env(key_table, fake.url), **server_env(args))
        gateway_key = bench_gateway_key(stack, proxy.url, "proxy")
        common = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
        # The floor: the same server and HTTP client forwarding to the same fake, and nothing else (no key check,
        # metering, limits or log line). What the proxy adds over it is the proxy's own work.
        floor = stack.start_floor("proxy", "bench-floor-proxy", ANTHROPIC_BASE_URL=fake.url,
                                  ANTHROPIC_API_KEY=UPSTREAM_KEY, **server_env(args))
        targets = {
            direct_name: (fake.url, {**common, "x-api-key": UPSTREAM_KEY}),
            floor_name: (floor.url, {**common, "x-api-key": gateway_key}),
            ours_name: (proxy.url, {**common, "x-api-key": gateway_key}),
        }
        pids = {ours_name: proxy.pid}
        if litellm is not None:
            litellm_process = start_litellm(litellm, run_dir, fake.url, args.litellm_workers)
            stack.extra_apis.append(litellm_process)
            targets[theirs_name] = (litellm_process.url, {**common, "x-api-key": LITELLM_MASTER_KEY})
            pids[theirs_name] = litellm_process.pid
        idle = {name: memory_kib(pid, "VmRSS") for name, pid in pids.items()}
        # The proxy's peak over every run and its drain at the end (the counter backlog is at its largest then).
        whole_run = PeakSampler(proxy.pid)
        peaks: dict[tuple[str, bool], int] = {}
        modes = [False] if args.no_stream else [False, True]
        results: dict[tuple[str, bool], dict] = {}
        answered = 0
        for stream in modes:
            body = {"model": MODEL, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
            for name, (base, headers) in targets.items():
                check_answer(base + "/v1/messages", headers, stream)
                script = lua_script(run_dir / f"{len(results)}.lua", body, headers)
                sampler = PeakSampler(pids[name]) if name in pids else None
                warm_up = run_wrk(wrk, base + "/v1/messages", script, args.connections, 3)
                results[(name, stream)] = run_wrk_watching(wrk, base + "/v1/messages", script, args.connections,
                                                           args.seconds, [stack.moto.pid])
                if sampler:
                    peaks[(name, stream)] = sampler.stop_sampling()
                if name == ours_name:
                    answered += 1 + sum(r["requests"] - r["errors"] for r in (warm_up, results[(name, stream)]))
        # Stopped at once, with whatever counter backlog the load left behind moto.
        metered, stop_seconds, exit_code = stop_and_count(proxy, lambda: metered_lines(proxy))
        proxy_peak = whole_run.stop_sampling()
    finally:
        stack.stop()

    print(f"\n/v1/messages benchmark: wrk, {args.connections} connections, {args.seconds}s per run (after 3s warm-up), "
          f"fake Anthropic delay {args.delay_ms} ms, {os.cpu_count()} cores, {server_label(args)}, loopback")
    for stream in modes:
        direct = results[(direct_name, stream)]
        print(f"\n{'streamed' if stream else 'plain'} answers")
        print(f"{'target':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}{'non-2xx':>9}"
              f"{'moto CPU':>10}")
        for name in targets:
            r = results[(name, stream)]
            added = "" if name == direct_name else f"{r['p50_ms'] - direct['p50_ms']:>9.2f}{r['p99_ms'] - direct['p99_ms']:>9.2f}"
            print(f"{name:<30}{r['rps']:>10.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{added or ' ' * 18}{r['errors']:>9}"
                  f"{r['table_cpu']:>10.0%}")
        print(floor_line(results[(floor_name, stream)], results[(ours_name, stream)], direct))
        if theirs_name in targets:
            ours, theirs = results[(ours_name, stream)], results[(theirs_name, stream)]
            ours_added = max(ours["p50_ms"] - direct["p50_ms"], 0.01)
            theirs_added = max(theirs["p50_ms"] - direct["p50_ms"], 0.01)
            print(f"ratios claude proxy / LiteLLM: req/s {ours['rps'] / theirs['rps']:.2f}x, "
                  f"added p50 {ours_added / theirs_added:.3f}x, "
                  f"added p99 {max(ours['p99_ms'] - direct['p99_ms'], 0.01) / max(theirs['p99_ms'] - direct['p99_ms'], 0.01):.3f}x")
    print(TABLE_CPU_NOTE)
    print("\nmemory (RSS of the process tree, MiB; peak sampled every 100 ms during each run)")
    print(f"{'':<30}{'idle':>8}" + "".join(f"{'peak ' + ('streamed' if s else 'plain'):>16}" for s in modes))
    for name in pids:
        print(f"{name:<30}{idle[name] / 1024:>8.1f}" + "".join(f"{peaks[(name, s)] / 1024:>16.1f}" for s in modes))
    if theirs_name in pids:
        for stream in modes:
            ratio = peaks[(ours_name, stream)] / peaks[(theirs_name, stream)]
            print(f"peak memory ratio claude proxy / LiteLLM ({'streamed' if stream else 'plain'}): {ratio:.3f}")
    print(f"\nclaude proxy: {billing_line(metered, answered)} (warm-ups and checks included)")
    print(f"claude proxy: exit after SIGTERM {stop_seconds:.1f}s (code {exit_code}); "
          f"{memory_line(idle[ours_name], proxy_peak)} (peak over every run and the drain)")
    return 0 if metered >= answered else 1


if __name__ == "__main__":
    sys.exit(main())
