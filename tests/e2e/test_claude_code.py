"""The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned in scripts/lib/install_claude_code.sh and
installed into .local/claude-code by the fixture below, cached) against the local Claude proxy, as a user
would run it: `ANTHROPIC_BASE_URL` at the proxy, a gateway key as `ANTHROPIC_API_KEY`, telemetry, nonessential
traffic and the auto-updater off, a temporary HOME. What it sends is the contract recorded in the README's
Claude Code section; the fake Anthropic's directives (crates/local-stack/src/fake_anthropic.rs) steer it.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic
from support import new_tenant_id, poll

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "lib" / "install_claude_code.sh"
CLI_TIMEOUT_SECONDS = 180
# The CLI's default model (2.1.332 sends `claude-opus-5-5`, resolved through inference-profile discovery), and
# an explicitly chosen one.
MODELS = [pytest.param(None, id="default-model"), pytest.param("claude-opus-4-8", id="opus-4-8")]


@pytest.fixture(scope="module")
def claude_bin() -> str:
    """The pinned CLI; installed (or found installed) by the project's script, never skipped."""
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"installing Claude Code failed:\n{result.stderr}"
    path = result.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="module")
def fake_anthropic(stack):
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-cc")
    stack.extra_apis.append(fake)
    return fake


@pytest.fixture(scope="module")
def proxy_tables(stack):
    return create_proxy_tables(stack.resources)


@pytest.fixture(scope="module")
def proxy(stack, proxy_tables, fake_anthropic):
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy-cc", **proxy_env(key_table, limit_table, fake_anthropic.url))


@pytest.fixture(scope="module")
def forced_proxy(stack, proxy_tables, fake_anthropic):
    key_table, limit_table = proxy_tables
    return stack.start_api("api-proxy-cc-forced", **proxy_env(
        key_table, limit_table, fake_anthropic.url, FORCE_RATE_LIMIT_TEST="true", FORCE_RATE_LIMIT_RETRY_AFTER="5"))


class Caller:
    def __init__(self, user, key: str):
        self.user, self.key, self.tenant_id = user, key, user.tenant_id


@pytest.fixture
def caller(proxy, user_factory) -> Caller:
    user = user_factory.create(new_tenant_id("cc"))
    response = requests.post(f"{proxy.url}/v1/keys", json={"name": "claude-code"},
                             headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return Caller(user, response.json()["key"])


def run_claude(claude_bin: str, api, key: str, prompt: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": key,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    return subprocess.run([claude_bin, "-p", prompt, *args], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_SECONDS, check=False)


def fake_requests(fake_url: str, contains: str) -> list[dict]:
    return requests.get(f"{fake_url}/fake/requests", params={"contains": contains}, timeout=10).json()["requests"]


def lines_of(api, tenant_id: str, count: int) -> list[dict]:
    lines = poll("usage lines", lambda: [l for l in api.usage_lines() if l.get("tenant_id") == tenant_id],
                 lambda found: len(found) >= count, timeout=15)
    assert len(lines) >= count, f"expected {count} usage lines for {tenant_id}, got {lines}"
    return lines


def marker() -> str:
    return f"cc{uuid.uuid4().hex[:12]}"


def test_claude_p_with_its_default_model_completes_through_anthropic(claude_bin, proxy, fake_anthropic, caller, tmp_path):
    tag = marker()
    result = run_claude(claude_bin, proxy, caller.key, f"say hello {tag}", tmp_path)
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert "fake-anthropic says:" in result.stdout
    seen = fake_requests(fake_anthropic.url, tag)
    assert seen, "the prompt reached the fake Anthropic"
    first = seen[0]
    assert first["x-api-key"] != caller.key, "the gateway key never reaches Anthropic"
    body = first["body"]
    assert body["model"].startswith("claude-") and body["stream"] is True
    assert json.loads(body["metadata"]["user_id"]).keys() >= {"device_id", "session_id"}, body["metadata"]
    line = lines_of(proxy, caller.tenant_id, 1)[0]
    assert (line["request_type"], line["model_id"]) == ("anthropic", body["model"])
    assert line["output_tokens"] > 0 and not line.get("usage_estimated")


def test_a_read_tool_turn_runs_both_legs(claude_bin, proxy, fake_anthropic, caller, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pelican\n")
    tag = marker()
    result = run_claude(claude_bin, proxy, caller.key, f"read my notes {tag} [fake:tool=Read file_path={notes}]",
                        tmp_path, "--allowedTools", "Read")
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert "fake-anthropic read:" in result.stdout and "pelican" in result.stdout, result.stdout
    legs = fake_requests(fake_anthropic.url, tag)
    assert len(legs) == 2, [leg["body"]["messages"][-1] for leg in legs]
    results = [block for block in legs[1]["body"]["messages"][-1]["content"] if block.get("type") == "tool_result"]
    assert results and "pelican" in json.dumps(results[0]["content"])
    lines = lines_of(proxy, caller.tenant_id, 2)
    assert {line["request_type"] for line in lines} == {"anthropic"}


@pytest.mark.parametrize("model", MODELS)
def test_claude_p_with_a_forced_429_completes_from_bedrock(claude_bin, forced_proxy, caller, tmp_path, model):
    model_args = ("--model", model) if model else ()
    result = run_claude(claude_bin, forced_proxy, caller.key, f"say hello {marker()}", tmp_path, *model_args)
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert "fake-bedrock says:" in result.stdout
    line = lines_of(forced_proxy, caller.tenant_id, 1)[0]
    assert line["request_type"] == "bedrock"


@pytest.mark.parametrize("model", MODELS)
def test_two_sessions_of_one_user_are_one_user_and_the_429_is_remembered(claude_bin, proxy, fake_anthropic, caller, tmp_path, model):
    model_args = ("--model", model) if model else ()
    first = run_claude(claude_bin, proxy, caller.key, f"first {marker()} [fake:rate-limit=60]", tmp_path, *model_args)
    assert first.returncode == 0, f"stdout={first.stdout!r} stderr={first.stderr!r}"
    assert "fake-bedrock says:" in first.stdout
    second_tag = marker()
    second = run_claude(claude_bin, proxy, caller.key, f"second {second_tag}", tmp_path, *model_args)
    assert second.returncode == 0, f"stdout={second.stdout!r} stderr={second.stderr!r}"
    assert "fake-bedrock says:" in second.stdout
    assert fake_requests(fake_anthropic.url, second_tag) == [], "the remembered 429 sends the second session to Bedrock"
    lines = lines_of(proxy, caller.tenant_id, 2)
    assert {line["request_type"] for line in lines} == {"bedrock"}
    assert len({line["user_id"] for line in lines}) == 1, "two sessions, one user (the key's owner)"
    client_ids = {line.get("client_user_id") for line in lines}
    assert len(client_ids) == 1 and None not in client_ids, f"the client user id drops the session: {client_ids}"
