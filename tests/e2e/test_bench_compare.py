"""`scripts/bench compare`: two builds of the local API, each measured twice in the same run, so a difference is
judged against the noise of the very same run (scripts/lib/bench_compare.py)."""
from __future__ import annotations

import os

import bench_compare
from bench_compare import ARMS, arm_order, summary


def rows(rps: float, cpu_us: float, count: int = 3) -> list[dict]:
    return [{"rps": rps, "p50_ms": 1000 / rps, "p99_ms": 3000 / rps, "api_cpu_us": cpu_us} for _ in range(count)]


def test_every_round_measures_each_arm_once_and_the_order_turns_every_other_round():
    assert arm_order(0) == list(ARMS)
    assert arm_order(1) == list(reversed(ARMS))
    assert sorted(arm_order(2)) == sorted(ARMS)


def test_a_difference_larger_than_the_same_build_spread_is_beyond_the_noise():
    results = {"baseline": rows(5000, 100), "baseline again": rows(4900, 102),
               "candidate": rows(4000, 125), "candidate again": rows(4040, 124)}
    lines = summary(results)
    assert "req/s 0.812" in lines[-2], lines  # pooled medians 4020 / 4950
    assert "API CPU per request 1.233" in lines[-2], lines  # 124.5 / 101
    assert "baseline 0.980, candidate 1.010" in lines[-1], lines
    assert lines[-1].endswith("the difference is beyond this run's noise (±0.020)"), lines
    assert [line.split()[0] for line in lines[1:5]] == ["baseline", "candidate", "baseline", "candidate"]


def test_a_difference_smaller_than_the_same_build_spread_is_within_the_noise():
    results = {"baseline": rows(5000, 100), "baseline again": rows(4500, 110),
               "candidate": rows(4800, 104), "candidate again": rows(4900, 102)}
    assert summary(results)[-1].endswith("the difference is within this run's noise (±0.100)")


def test_a_short_run_of_the_same_build_as_baseline_and_candidate_reports_every_arm(monkeypatch, capsys):
    binary = os.environ.get("BM_LOCAL_STACK_BIN")
    assert binary, "the e2e step sets BM_LOCAL_STACK_BIN to the local-stack build"
    # main() points BM_LOCAL_STACK_BIN at each arm's binary in turn; monkeypatch restores it afterwards.
    monkeypatch.setenv("BM_LOCAL_STACK_BIN", binary)
    assert bench_compare.main(["--baseline-bin", binary, "--local-stack-bin", binary,
                               "--rounds", "1", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    for arm in ARMS:
        assert f"round 1 {arm}" in out, out
    assert "candidate / baseline (pooled medians): req/s " in out, out
    assert "same build twice, req/s: baseline " in out, out


def test_the_table_cpu_of_a_bench_run_is_the_share_of_a_core_the_table_process_used(monkeypatch):
    """scripts/bench chat|proxy report, per run, how much of a core moto (the DynamoDB stand-in on the same cores)
    used: a process busy for the whole run shows about one core, an idle one about none."""
    import subprocess
    import sys
    import time

    import bench_chat

    def one_second_run(*_args):
        time.sleep(1.0)
        return {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 1.0, "requests": 1, "errors": 0}

    monkeypatch.setattr(bench_chat, "run_wrk", one_second_run)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        time.sleep(0.3)
        busy_run = bench_chat.run_wrk_watching("wrk", "http://127.0.0.1:1", None, 1, 1, [busy.pid])
        idle_run = bench_chat.run_wrk_watching("wrk", "http://127.0.0.1:1", None, 1, 1, [idle.pid])
    finally:
        busy.kill()
        idle.kill()
    assert 0.3 <= busy_run["table_cpu"] <= 1.3, busy_run  # a busy machine may give it less than a core
    assert idle_run["table_cpu"] <= 0.1, idle_run
