"""The operator scripts against a "deployed" stack: CloudFormation outputs read with boto3 (--aws / BM_STACK=aws).

The deployment is simulated in the session's moto: a BedrockMeteringStack whose outputs name the session's
user pool, app client and local API, reached through AWS_ENDPOINT_URL like any other AWS endpoint.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from processes import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


def run(script: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BM_"))}
    env["BM_LOCAL_DIR"] = str(tmp_path / "local")  # no local stack there
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "absent")
    return env


@pytest.fixture
def deployed_env(resources, api_url, clean_env) -> dict[str, str]:
    stack_name = f"BedrockMeteringStack-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {
            "UserPoolId": {"Value": resources.user_pool_id},
            "UserPoolClientId": {"Value": resources.user_pool_client_id},
            "ApiGatewayUrl": {"Value": f"{api_url}/"},
            "UsageTableName": {"Value": resources.usage_table},
        },
    }
    resources.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    return {
        **clean_env,
        "BM_STACK_NAME": stack_name,
        "AWS_ENDPOINT_URL": resources.endpoint_url,
        "AWS_REGION": resources.region,
        "AWS_ACCESS_KEY_ID": "deployed-test",
        "AWS_SECRET_ACCESS_KEY": "deployed-test",
    }


def test_operator_scripts_work_against_the_deployed_stack(deployed_env):
    username = f"carol-{uuid.uuid4().hex[:6]}"
    created = run("create-tenant-user", username, f"{username}@example.com", "tenant-carol", "--aws", env=deployed_env)
    assert created.returncode == 0, created.stderr
    shown = re.search(r"password \(shown once, not stored\): (\S+)", created.stdout)
    assert shown, created.stdout
    password = shown.group(1)
    assert not (Path(deployed_env["BM_LOCAL_DIR"]) / "users.json").exists(), "AWS passwords are never stored"

    token = run("get-token", username, "--aws", "--password", password, env=deployed_env)
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2

    answer = run("chat", "hello deployed", "--user", username, env={**deployed_env, "BM_STACK": "aws", "BM_PASSWORD": password})
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "fake-bedrock says: hello deployed"

    usage = run("usage", "me", "--days", "3", "--user", username, "--aws", "--password", password, env=deployed_env)
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    assert report["tenant_id"] == "tenant-carol" and report["period_days"] == 3
    assert len(report["daily_stats"]) == 3
    # The answer is metered after the response: the counters may lag the chat by a moment.
    assert report["summary"]["total_requests"] in (0, 1)

    others = run("usage", "all", "--user", username, "--aws", "--password", password, env=deployed_env)
    assert others.returncode == 1 and "403" in others.stderr, "a tenant user may not list every tenant"

    wrong = run("get-token", username, "--aws", "--password", "Wrong-password-1!", env=deployed_env)
    assert wrong.returncode == 1 and "wrong username or password" in wrong.stderr, wrong.stderr


def test_a_missing_stack_is_explained(deployed_env):
    env = {**deployed_env, "BM_STACK_NAME": "NoSuchStack"}
    result = run("get-token", "someone", "--aws", "--password", "x", env=env)
    assert result.returncode == 1 and "NoSuchStack" in result.stderr and "scripts/deploy" in result.stderr, result.stderr


def test_missing_aws_credentials_are_explained(clean_env):
    result = run("get-token", "demo-user", "--aws", env={**clean_env, "AWS_REGION": "us-east-1"})
    assert result.returncode == 1
    assert "no AWS credentials" in result.stderr, result.stderr


def test_a_missing_local_stack_is_explained(clean_env):
    for script, args in (
        ("get-token", ["demo-user"]),
        ("chat", ["hi"]),
        ("usage", ["me"]),
        ("create-tenant-user", ["a", "a@example.com", "t"]),
    ):
        result = run(script, *args, env=clean_env)
        assert result.returncode == 1, (script, result.stderr)
        assert "no local stack" in result.stderr and "scripts/dev" in result.stderr, (script, result.stderr)


@pytest.mark.parametrize("script", ["dev", "create-tenant-user", "get-token", "chat", "usage", "test", "bench"])
def test_scripts_have_help(script, clean_env):
    result = run(script, "--help", env=clean_env)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
