"""scripts/dev and the operator scripts, end to end, as a developer uses them.

Runs with its own state directory (BM_LOCAL_DIR) and its own free ports, beside the session's stack.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from localstack import recorded_processes
from processes import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    # BM_LOCAL_STACK_BIN stays: under scripts/test it names the binary its build step made, which scripts/dev then
    # runs instead of compiling `-p local-stack` (another feature set than the tests': a second workspace build).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "BM_")) or k == "BM_LOCAL_STACK_BIN"}
    env["BM_LOCAL_DIR"] = str(tmp_path / "local")
    return env


def run(script: str, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=timeout)


def read_state(env: dict[str, str]) -> dict[str, str]:
    import stack_state

    path = Path(env["BM_LOCAL_DIR"]) / "stack.env"
    os.environ["BM_LOCAL_DIR"] = env["BM_LOCAL_DIR"]
    try:
        state = stack_state.read_state()
    finally:
        del os.environ["BM_LOCAL_DIR"]
    assert state is not None, f"{path} missing"
    return state


def curl_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("curl ")]
    assert len(lines) == 1, f"expected one curl line in:\n{stdout}"
    return lines[0]


def test_dev_starts_a_working_stack_and_stops_it(dev_env):
    started = run("dev", env=dev_env)
    try:
        assert started.returncode == 0, f"scripts/dev failed:\n{started.stdout}\n{started.stderr}"
        state = read_state(dev_env)
        for key in ("BM_STACK", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                    "USER_POOL_ID", "USER_POOL_CLIENT_ID", "API_URL", "USAGE_TABLE_NAME", "USAGE_LOG_GROUP",
                    "ANALYTICS_BUCKET", "FAKE_BEDROCK_URL", "PIDS"):
            assert state.get(key), f"stack.env lacks {key}: {state}"
        assert state["BM_STACK"] == "local"

        # The printed curl works as pasted.
        answer = subprocess.run(["bash", "-c", curl_line(started.stdout)], capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"response": "fake-bedrock says: Hello"}

        # The printed demo gateway key works with the Claude-compatible proxy as pasted (README: scripts/dev
        # "prints a demo gateway key").
        exports = [line for line in started.stdout.splitlines() if line.startswith("export ANTHROPIC_BASE_URL=")]
        assert len(exports) == 1, started.stdout
        settings = dict(word.split("=", 1) for word in exports[0].split("#")[0].split()[1:])
        assert settings["ANTHROPIC_BASE_URL"] == state["API_URL"], exports
        assert re.fullmatch(r"bmk_[0-9a-f]{16}_[0-9a-f]{64}", settings["ANTHROPIC_API_KEY"]), exports
        answer = requests.post(
            f"{settings['ANTHROPIC_BASE_URL']}/v1/messages",
            headers={"x-api-key": settings["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"},
            json={"model": "claude-sonnet-4-5-20250929", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["content"][0]["text"].startswith("fake-anthropic says:"), answer.text
        wrong = requests.post(f"{settings['ANTHROPIC_BASE_URL']}/v1/messages", headers={"x-api-key": "bmk_nope"},
                              json={"model": "m", "max_tokens": 1, "messages": []}, timeout=30)
        assert wrong.status_code == 401, "the key is what opened the door"

        assert run("dev", "status", env=dev_env).returncode == 0

        chat = run("chat", "Hello from chat", env=dev_env, timeout=60)
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip() == "fake-bedrock says: Hello from chat"

        token = run("get-token", "demo-user", env=dev_env, timeout=60)
        assert token.returncode == 0, token.stderr
        assert token.stdout.count(".") == 2

        created = run("create-tenant-user", "bob", "bob@example.com", "tenant-bob", "--admin", env=dev_env, timeout=60)
        assert created.returncode == 0, created.stderr
        bob = run("chat", "hi from bob", "--user", "bob", "--json", env=dev_env, timeout=60)
        assert bob.returncode == 0, bob.stderr
        assert json.loads(bob.stdout) == {"response": "fake-bedrock says: hi from bob"}
        duplicate = run("create-tenant-user", "bob", "bob@example.com", "tenant-bob", env=dev_env, timeout=60)
        assert duplicate.returncode == 1 and "already exists" in duplicate.stderr, duplicate.stderr

        # Re-running restarts cleanly: the old processes are gone, the new stack answers.
        old = recorded_processes(state)
        restarted = run("dev", "--no-build", env=dev_env)
        assert restarted.returncode == 0, f"{restarted.stdout}\n{restarted.stderr}"
        assert not any(p.is_alive() for p in old), "the previous run's processes still run"
        again = subprocess.run(["bash", "-c", curl_line(restarted.stdout)], capture_output=True, text=True, timeout=30)
        assert json.loads(again.stdout) == {"response": "fake-bedrock says: Hello"}
        state = read_state(dev_env)
    finally:
        stopped = run("dev", "stop", env=dev_env)

    assert stopped.returncode == 0, stopped.stderr
    assert not any(p.is_alive() for p in recorded_processes(state)), "scripts/dev stop left processes running"
    assert not (Path(dev_env["BM_LOCAL_DIR"]) / "stack.env").exists()
    status = run("dev", "status", env=dev_env)
    assert status.returncode == 1 and "no local stack" in status.stdout
    chat = run("chat", "anyone there?", env=dev_env, timeout=60)
    assert chat.returncode == 1 and "scripts/dev" in chat.stderr, chat.stderr
