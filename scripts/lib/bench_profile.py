#!/usr/bin/env python3
"""Where the local API's CPU goes under load: perf (Linux, sampling) on the local-stack API process while wrk
drives one of its paths, then a flame graph (inferno, installed by this script into .local/inferno) and the top
frames by self time and by inclusive time.

Paths: chat (POST /bedrock/chat -> fake Bedrock), proxy (POST /v1/messages, plain answer -> fake Anthropic),
stream (the same, streamed). The fakes answer at once (no delay), so the gateway's own work dominates. The
binary is a release build with symbols (target/bench-profile; --local-stack-bin for another), as the
benchmarks run it but unstripped. perf comes from Debian (`apt-get install linux-perf`) when missing.
Output: target/bench-profile/<path>.svg, <path>.folded, and the top frames printed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_chat import BENCH_BUILD_ENV, ensure_wrk, lua_post  # noqa: E402
from processes import REPO_ROOT  # noqa: E402

PROFILE_TARGET_DIR = REPO_ROOT / "target" / "bench-profile"
INFERNO_ROOT = REPO_ROOT / ".local" / "inferno"
INFERNO_VERSION = "0.12.4"
PATHS = ("chat", "proxy", "stream")
PROMPT = "Summarise the benefits of metering every token per tenant in a multi-tenant gateway."
MODEL = "claude-sonnet-4-5-20250929"


def ensure_perf() -> str:
    found = shutil.which("perf")
    if not found:
        print("installing perf (Debian package linux-perf)...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "linux-perf"], check=True)
        found = shutil.which("perf")
    if not found:
        sys.exit("perf is required for the profile and could not be installed")
    return found


def ensure_inferno() -> Path:
    bin_dir = INFERNO_ROOT / "bin"
    if not (bin_dir / "inferno-flamegraph").exists():
        print(f"installing inferno {INFERNO_VERSION} into {INFERNO_ROOT} (cargo install)...", file=sys.stderr)
        subprocess.run(["cargo", "install", "--locked", "--quiet", "inferno", "--version", INFERNO_VERSION,
                        "--root", str(INFERNO_ROOT)], check=True)
    return bin_dir


def build_with_symbols() -> Path:
    print("building local-stack (release, with symbols)...", file=sys.stderr)
    env = {**os.environ, **BENCH_BUILD_ENV, "CARGO_TARGET_DIR": str(PROFILE_TARGET_DIR),
           "CARGO_PROFILE_RELEASE_STRIP": "none", "CARGO_PROFILE_RELEASE_DEBUG": "line-tables-only"}
    subprocess.run(["cargo", "build", "--release", "-p", "local-stack"], cwd=REPO_ROOT, check=True, env=env)
    return PROFILE_TARGET_DIR / "release" / "local-stack"


def top_frames(folded: Path, count: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self, inclusive) shares of the samples by function, highest first."""
    self_samples: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        self_samples[frames[-1]] += n
        for frame in set(frames[1:]):  # the first frame is the thread name
            inclusive[frame] += n
    share = lambda c: [(name, 100.0 * n / max(total, 1)) for name, n in c.most_common(count)]  # noqa: E731
    return share(self_samples), share(inclusive)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", help=f"paths to profile: {', '.join(PATHS)} (default: all)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds recorded per path (default 8)")
    parser.add_argument("--connections", type=int, default=2, help="wrk connections (default 2)")
    parser.add_argument("--frequency", type=int, default=499, help="perf samples per second (default 499)")
    parser.add_argument("--top", type=int, default=25, help="frames listed per path (default 25)")
    parser.add_argument("--local-stack-bin", metavar="PATH", help="profile this binary (no build); needs symbols")
    args = parser.parse_args()
    args.paths = args.paths or list(PATHS)
    if unknown := [path for path in args.paths if path not in PATHS]:
        parser.error(f"unknown path(s) {', '.join(unknown)}: choose from {', '.join(PATHS)}")

    perf = ensure_perf()
    wrk = ensure_wrk()
    inferno = ensure_inferno()
    binary = Path(args.local_stack_bin).resolve() if args.local_stack_bin else build_with_symbols()
    os.environ["BM_LOCAL_STACK_BIN"] = str(binary)
    from localstack import LocalStack  # noqa: E402  (reads BM_LOCAL_STACK_BIN)
    from provision import local_users  # noqa: E402
    import requests  # noqa: E402

    out_dir = PROFILE_TARGET_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    # As the benchmarks run it: usage lines on stdout only, tracing at warn.
    stack = LocalStack.start(run_dir, with_proxy=True, USAGE_LOG_GROUP=None, RUST_LOG="warn",
                             API_KEY_CACHE_SECONDS="300", RATE_LIMIT_TABLE_NAME=None)
    try:
        api = stack.api
        users = local_users(stack.resources)
        password = "Profile-Passw0rd!-Profile"
        users.create_tenant_user("profile-user", "profile-user@example.com", "profile-tenant", password=password)
        token = users.get_id_token("profile-user", password)
        key = requests.post(f"{api.url}/v1/keys", json={"name": "profile"}, headers={"Authorization": f"Bearer {token}"},
                            timeout=30).json()["key"]
        proxy_headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": key}
        loads = {
            "chat": ("/bedrock/chat", {"prompt": PROMPT}, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}),
            "proxy": ("/v1/messages", {"model": MODEL, "max_tokens": 64, "stream": False,
                                       "messages": [{"role": "user", "content": PROMPT}]}, proxy_headers),
            "stream": ("/v1/messages", {"model": MODEL, "max_tokens": 64, "stream": True,
                                        "messages": [{"role": "user", "content": PROMPT}]}, proxy_headers),
        }
        for path in args.paths:
            route, body, headers = loads[path]
            script = lua_post(run_dir / f"{path}.lua", body, headers)
            load = subprocess.Popen([wrk, f"-t{min(2, args.connections)}", f"-c{args.connections}",
                                     f"-d{args.seconds + 3}s", "-s", str(script), api.url + route],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1.5)
            data = out_dir / f"{path}.perf.data"
            subprocess.run([perf, "record", "-q", "-F", str(args.frequency), "--call-graph", "dwarf,16384",
                            "-p", str(api.pid), "-o", str(data), "--", "sleep", str(args.seconds)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wrk_output, _ = load.communicate(timeout=args.seconds + 60)
            folded = out_dir / f"{path}.folded"
            script_output = subprocess.run([perf, "script", "-i", str(data)], check=True, capture_output=True).stdout
            collapsed = subprocess.run([str(inferno / "inferno-collapse-perf")], input=script_output, check=True,
                                       capture_output=True).stdout
            folded.write_bytes(collapsed)
            svg = out_dir / f"{path}.svg"
            with open(svg, "wb") as out:
                subprocess.run([str(inferno / "inferno-flamegraph"), "--title", f"local API: {path}", str(folded)],
                               check=True, stdout=out)
            data.unlink(missing_ok=True)
            rps = next((line.split()[-1] for line in wrk_output.splitlines() if line.startswith("Requests/sec")), "?")
            self_top, inclusive_top = top_frames(folded, args.top)
            print(f"\n== {path}: {route}, wrk {args.connections} connections, {rps} req/s while recorded; {svg}")
            print(f"{'self %':>7}  function")
            for name, share in self_top:
                print(f"{share:>7.2f}  {name[:150]}")
            print(f"{'incl %':>7}  function (inclusive)")
            for name, share in inclusive_top:
                print(f"{share:>7.2f}  {name[:150]}")
    finally:
        stack.stop()
    print(json.dumps({"flame_graphs": [str(out_dir / f"{p}.svg") for p in args.paths]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
