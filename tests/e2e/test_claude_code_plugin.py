"""The Claude Code plugin (integrations/claude-code) against the local stack: its status line script prints
today's tokens and the month's estimated cost of the key's tenant (the usage API's own numbers), zeros for a
tenant without usage, a short fallback (exit 0) when the gateway is unreachable or the key is refused, and
asks the gateway at most once per cache period (counted in the proxy's own log lines, not timed). The week
table is the last 7 days of the report; the pinned CLI validates both manifests (`claude plugin validate
--strict`) and runs the /usage command, whose table reaches the model's prompt.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from processes import closed_port
from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from support import Holder, new_holder, poll

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKETPLACE = REPO_ROOT / "integrations" / "claude-code"
PLUGIN = MARKETPLACE / "gateway-usage"
SCRIPT = PLUGIN / "scripts" / "gateway_usage.py"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "lib" / "install_claude_code.sh"
SERVED = "usage report served to a gateway key"


@pytest.fixture(scope="module")
def fake_anthropic(stack):
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-plugin")
    stack.extra_apis.append(fake)
    return fake


@pytest.fixture(scope="module")
def proxy(stack, fake_anthropic):
    return stack.start_api("api-plugin", **proxy_env(*create_proxy_tables(stack.resources), fake_anthropic.url))


def report(proxy, holder: Holder, days: int) -> dict:
    response = requests.get(f"{proxy.url}/v1/usage/me", params={"days": days},
                            headers={"Authorization": f"Bearer {holder.user.token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def with_usage(proxy, user_factory) -> Holder:
    holder = new_holder(proxy, user_factory, "plugin-used")
    for prompt in ("count these few words please", "and these other words too"):
        answer = requests.post(f"{proxy.url}/v1/messages", timeout=60,
                               headers={"x-api-key": holder.key, "anthropic-version": "2023-06-01"},
                               json={"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]})
        assert answer.status_code == 200, answer.text
    poll("counters", lambda: report(proxy, holder, 1)["summary"]["total_requests"], lambda total: total == 2, timeout=15)
    return holder


def run_script(tmp_path: Path, *args: str, base_url: str, key: str | None, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "ANTHROPIC_BASE_URL": base_url,
        # Long enough that no test run can outlast it: expiry is tested by ageing the cache file instead.
        "GATEWAY_USAGE_CACHE_SECONDS": "3600",
        **({"ANTHROPIC_API_KEY": key} if key is not None else {}),
        **extra,
    }
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def status_line(tmp_path: Path, proxy, holder: Holder, **extra: str) -> str:
    result = run_script(tmp_path, "statusline", base_url=proxy.url, key=holder.key, **extra)
    assert result.returncode == 0 and result.stderr == "", result
    return result.stdout.rstrip("\n")


def served_to(proxy, holder: Holder) -> int:
    """Reports the proxy served to this key: its own log lines (stderr; stdout holds the usage lines only), one
    per GET /v1/gateway-key/usage/me."""
    count = 0
    for text in proxy.stderr_path.read_text(errors="replace").splitlines():
        try:
            fields = json.loads(text).get("fields", {}) if text.startswith("{") else {}
        except ValueError:
            continue
        count += fields.get("message") == SERVED and fields.get("key_id") == holder.key_id
    return count


def expected_line(proxy, holder: Holder) -> str:
    today = dt.datetime.now(dt.timezone.utc).date()
    month = report(proxy, holder, today.day)
    day = month["daily_stats"][today.isoformat()]
    return f"gateway: {day['input_tokens'] + day['output_tokens']:,} tok today · ${month['summary']['estimated_cost_usd']:,.2f} this month"


def test_the_status_line_of_a_tenant_with_usage(proxy, with_usage, tmp_path):
    line = status_line(tmp_path, proxy, with_usage)
    assert line == expected_line(proxy, with_usage)
    assert not line.startswith("gateway: 0 tok"), "two requests were metered today"


def test_the_status_line_of_a_tenant_without_usage(proxy, user_factory, tmp_path):
    holder = new_holder(proxy, user_factory, "plugin-idle")
    assert status_line(tmp_path, proxy, holder) == "gateway: 0 tok today · $0.00 this month"


def test_the_status_line_falls_back_quietly(proxy, with_usage, tmp_path):
    unreachable = run_script(tmp_path / "a", "statusline", base_url=f"http://127.0.0.1:{closed_port()}", key=with_usage.key)
    refused = run_script(tmp_path / "b", "statusline", base_url=proxy.url, key="bmk_not_a_key")
    unset = run_script(tmp_path / "c", "statusline", base_url=proxy.url, key=None)
    for result in (unreachable, refused):
        assert (result.returncode, result.stdout, result.stderr) == (0, "gateway: usage unavailable\n", ""), result
    assert (unset.returncode, unset.stdout) == (0, "gateway: ANTHROPIC_BASE_URL or gateway key not set\n"), unset


def test_the_status_line_asks_the_gateway_once_per_cache_period(proxy, user_factory, tmp_path):
    holder = new_holder(proxy, user_factory, "plugin-cache")
    first = status_line(tmp_path, proxy, holder)
    assert poll("the first report in the log", lambda: served_to(proxy, holder), lambda count: count == 1) == 1
    assert status_line(tmp_path, proxy, holder) == first
    assert status_line(tmp_path, proxy, holder) == first
    [cache] = list((tmp_path / "cache" / "bedrock-metering").glob("statusline-*.json"))
    assert holder.key not in cache.read_text(), "the cache never holds the key"
    # A cache entry older than the period is refreshed: exactly one more call.
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "fetched_at": entry["fetched_at"] - 4000}))
    assert status_line(tmp_path, proxy, holder) == first
    poll("the second report in the log", lambda: served_to(proxy, holder), lambda count: count == 2, timeout=10)
    assert served_to(proxy, holder) == 2, "the calls within the period were answered from the cache"


def test_the_week_table_is_the_last_seven_days(proxy, with_usage, tmp_path):
    result = run_script(tmp_path, "week", base_url=proxy.url, key=with_usage.key)
    assert result.returncode == 0, result
    week = report(proxy, with_usage, 7)
    lines = result.stdout.splitlines()
    assert lines[0] == f"Gateway usage of tenant {with_usage.tenant_id}, {week['from']} to {week['to']}"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line[:4].isdigit() or line.startswith("total")}
    assert sorted(rows) == sorted([*week["daily_stats"], "total"]) and len(week["daily_stats"]) == 7
    for day, stats in week["daily_stats"].items():
        assert rows[day] == [f"{stats['requests']:,}", f"{stats['input_tokens']:,}", f"{stats['output_tokens']:,}"]
    summary = week["summary"]
    assert rows["total"] == [f"{summary['total_requests']:,}", f"{summary['total_input_tokens']:,}",
                             f"{summary['total_output_tokens']:,}"]
    assert f"estimated cost: ${summary['estimated_cost_usd']:,.2f}" in lines


def test_the_budget_is_read_from_a_limits_answer_when_there_is_one():
    """/v1/gateway-key/limits/me does not exist yet (404: omitted, as the tests above show); when it answers,
    the monthly USD budget left is shown, else the monthly tokens left, else nothing (unlimited)."""
    spec = importlib.util.spec_from_file_location("gateway_usage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The body of GET /v1/limits/me (crates/metering-core/src/limits/report.rs): unset kinds are null.
    def entry(limit, remaining):
        return {"limit": limit, "used": limit - remaining, "in_flight": 0, "remaining": remaining,
                "period": "2026-12", "resets_at": "2027-01-01T00:00:00Z"}
    unset = {"requests_per_minute": None, "tokens_per_day": None, "tokens_per_month": None, "usd_per_month": None}
    both = {**unset, "usd_per_month": entry(50, 37.5), "tokens_per_month": entry(100, 10)}
    assert module.budget_text({"tenant_id": "t", "limits": both}) == "$37.50 left"
    only_tokens = {**unset, "tokens_per_month": entry(5000, 1234), "tokens_per_day": entry(10, 1)}
    assert module.budget_text({"tenant_id": "t", "limits": only_tokens}) == "1,234 tok left"
    # A key narrowed below its tenant: the smaller remainder holds.
    narrowed = {"tenant_id": "t", "limits": both, "key": {"key_id": "k", "limits": {**unset, "usd_per_month": entry(20, 2.25)}}}
    assert module.budget_text(narrowed) == "$2.25 left"
    assert module.budget_text({"tenant_id": "t", "limits": {**unset, "requests_per_minute": entry(10, 3)}}) is None
    assert module.budget_text({"tenant_id": "t", "limits": unset}) is None
    assert module.budget_text({"limits": []}) is None
    assert module.budget_text(None) is None


# ------------------------------------------------------------------ the real CLI

@pytest.fixture(scope="module")
def claude_bin() -> str:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"installing Claude Code failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_MAX_RETRIES": "0", **extra}


def test_the_cli_validates_the_marketplace_and_the_plugin(claude_bin, tmp_path):
    for manifest_dir in (MARKETPLACE, PLUGIN):
        result = subprocess.run([claude_bin, "plugin", "validate", "--strict", str(manifest_dir)], env=cli_env(tmp_path),
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Validation passed" in result.stdout
    assert "commands: gateway-usage:usage" in result.stdout


def test_install_sh_installs_the_plugin_and_sets_the_status_line(claude_bin, tmp_path):
    env = cli_env(tmp_path, CLAUDE_BIN=claude_bin)
    result = subprocess.run(["sh", str(MARKETPLACE / "install.sh")], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    settings = json.loads((Path(env["CLAUDE_CONFIG_DIR"]) / "settings.json").read_text())
    assert settings["enabledPlugins"]["gateway-usage@bedrock-metering"] is True
    command = settings["statusLine"]["command"]
    installed = Path(command.split('"')[1])
    assert installed.name == "gateway_usage.py" and installed.read_bytes() == SCRIPT.read_bytes(), command


def test_the_usage_command_puts_the_week_into_the_prompt(claude_bin, proxy, fake_anthropic, with_usage, tmp_path):
    env = cli_env(tmp_path, ANTHROPIC_BASE_URL=proxy.url, ANTHROPIC_API_KEY=with_usage.key)
    result = subprocess.run([claude_bin, "-p", "/gateway-usage:usage", "--plugin-dir", str(PLUGIN), "--model", MODEL],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    tag = f"Gateway usage of tenant {with_usage.tenant_id}"
    seen = requests.get(f"{fake_anthropic.url}/fake/requests", params={"contains": tag}, timeout=10).json()["requests"]
    assert seen, "the week table reached the model's prompt"
