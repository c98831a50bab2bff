#!/usr/bin/env python3
"""The local stack: moto (DynamoDB, S3, CloudWatch Logs, Cognito) + the fake Bedrock + the local API.

Library (tests, scripts):
    stack = LocalStack.start(run_dir)                 # everything on free 127.0.0.1 ports
    api2 = stack.start_api("api-slow", BEDROCK_TIMEOUT_MS="1000")   # a second API, other env, same moto/fake
    stack.stop()

CLI (what scripts/dev runs; the processes are detached and outlive it):
    localstack.py start [--no-build]   build local-stack, (re)start the stack, create the demo user, print a curl
                                       ($BM_LOCAL_STACK_BIN set: run that binary, build nothing)
    localstack.py stop                 stop the stack recorded in .local/stack.env
    localstack.py status               show whether each process is up
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import (  # noqa: E402
    REPO_ROOT,
    ManagedProcess,
    StackError,
    base_env,
    local_stack_binary,
    start_local_stack_service,
    start_moto,
)
from provision import DEFAULT_MODEL_ID, DEFAULT_REGION, LocalResources, local_users, generate_password, provision  # noqa: E402
import stack_state  # noqa: E402
from venv_bootstrap import ensure_venv  # noqa: E402,F401  (re-exported: the stack needs the venv)

DEMO_USER = "demo-user"
DEMO_EMAIL = "demo-user@example.com"
DEMO_TENANT = "demo-tenant"
# Where Bedrock's invocation records go in the analytics bucket (the CDK app's default too).
BEDROCK_LOGS_PREFIX = "bedrock-invocation-logs/"


def fake_bedrock_env(resources: LocalResources) -> dict[str, str]:
    """The fake Bedrock's environment: it writes Bedrock-format invocation records to the analytics bucket in
    moto (README "Bedrock invocation logs")."""
    env = base_env()
    env.update(
        {
            "AWS_REGION": resources.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": resources.endpoint_url,
            "FAKE_BEDROCK_INVOCATION_LOG_BUCKET": resources.analytics_bucket,
            "FAKE_BEDROCK_INVOCATION_LOG_PREFIX": BEDROCK_LOGS_PREFIX,
        }
    )
    return env


def api_env(resources: LocalResources, fake_bedrock_url: str, **overrides: str | None) -> dict[str, str]:
    """The local API's environment (contract: "local-stack api"). An override of None removes the variable."""
    env = base_env()
    env.update(
        {
            "AWS_REGION": resources.region,
            "AWS_DEFAULT_REGION": resources.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": resources.endpoint_url,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake_bedrock_url,
            # The control plane too (the Claude proxy's model discovery: ListInferenceProfiles).
            "AWS_ENDPOINT_URL_BEDROCK": fake_bedrock_url,
            "USAGE_TABLE_NAME": resources.usage_table,
            "USAGE_LOG_GROUP": resources.usage_log_group,
            "BEDROCK_MODEL_ID": DEFAULT_MODEL_ID,
            "BEDROCK_TIMEOUT_MS": "30000",
            "COGNITO_JWKS_URL": resources.jwks_url,
            "COGNITO_ISSUER": resources.issuer,
            "COGNITO_CLIENT_ID": resources.user_pool_client_id,
            "RUST_BACKTRACE": "1",
            # One long-running process serving concurrent requests: it reserves budget in advance (leases, see
            # README "Budgets and quotas"); a Lambda instance serves one request at a time and leaves them off.
            "LIMITS_LEASE_REQUESTS": "16",
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@dataclass
class LocalStack:
    run_dir: Path
    moto: ManagedProcess
    resources: LocalResources
    fake_bedrock: ManagedProcess
    api: ManagedProcess
    detached: bool = False
    extra_apis: list[ManagedProcess] = field(default_factory=list)
    # The Claude proxy (with_proxy=True): the fake Anthropic API and the key and rate-limit tables.
    fake_anthropic: ManagedProcess | None = None
    proxy_tables: tuple[str, str] | None = None

    @classmethod
    def start(cls, run_dir: Path, detached: bool = False, region: str = DEFAULT_REGION, with_proxy: bool = False,
              **api_overrides: str | None) -> "LocalStack":
        run_dir.mkdir(parents=True, exist_ok=True)
        started: list[ManagedProcess] = []
        fake_anthropic, proxy_tables = None, None
        try:
            moto = start_moto(run_dir, detached=detached)
            started.append(moto)
            resources = provision(moto.url, region=region)
            if with_proxy:
                from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic

                proxy_tables = create_proxy_tables(resources, "local")
                fake_anthropic = start_fake_anthropic(run_dir, detached=detached)
                started.append(fake_anthropic)
                api_overrides = {**proxy_env(*proxy_tables, fake_anthropic.url), **api_overrides}
            fake = start_local_stack_service(
                "fake-bedrock", "fake-bedrock", run_dir, fake_bedrock_env(resources), detached=detached, require_health=False
            )
            started.append(fake)
            api = start_local_stack_service(
                "api", "api", run_dir, api_env(resources, fake.url, **api_overrides), detached=detached
            )
            started.append(api)
        except BaseException:
            for process in reversed(started):
                process.stop()
            raise
        return cls(run_dir, moto, resources, fake, api, detached, fake_anthropic=fake_anthropic, proxy_tables=proxy_tables)

    def start_api(self, name: str, **env_overrides: str | None) -> ManagedProcess:
        """Another API process against the same moto and fake Bedrock, with some env changed."""
        api = start_local_stack_service(
            "api", name, self.run_dir, api_env(self.resources, self.fake_bedrock.url, **env_overrides), detached=self.detached
        )
        self.extra_apis.append(api)
        return api

    def start_floor(self, route: str, name: str, **env_overrides: str | None) -> ManagedProcess:
        """`local-stack bench-floor chat|proxy`: the route's upstream call alone, on the API's server, with the
        API's environment (a benchmark's floor under the gateway's overhead; see `local-stack bench-floor --help`)."""
        floor = start_local_stack_service(
            "bench-floor", name, self.run_dir, api_env(self.resources, self.fake_bedrock.url, **env_overrides),
            extra_args=[route], detached=self.detached, require_health=False,
        )
        self.extra_apis.append(floor)
        return floor

    def processes(self) -> list[ManagedProcess]:
        # API first: its shutdown drains counter writes into moto, which must still be up.
        fakes = [self.fake_anthropic] if self.fake_anthropic else []
        return [*self.extra_apis, self.api, *fakes, self.fake_bedrock, self.moto]

    def stop(self) -> None:
        for process in self.processes():
            process.stop()

    def state(self) -> dict[str, str]:
        r = self.resources
        return {
            "BM_STACK": "local",
            "AWS_REGION": r.region,
            "AWS_DEFAULT_REGION": r.region,  # what the AWS CLI v1 and boto3 read
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": r.endpoint_url,
            "USER_POOL_ID": r.user_pool_id,
            "USER_POOL_CLIENT_ID": r.user_pool_client_id,
            "API_URL": self.api.url,
            "USAGE_TABLE_NAME": r.usage_table,
            "USAGE_LOG_GROUP": r.usage_log_group,
            "ANALYTICS_BUCKET": r.analytics_bucket,
            "FAKE_BEDROCK_URL": self.fake_bedrock.url,
            "COGNITO_ISSUER": r.issuer,
            "COGNITO_JWKS_URL": r.jwks_url,
            "BM_LOCAL_DIR": str(stack_state.local_dir()),
            "LOG_DIR": str(self.run_dir),
            "MOTO_PID": str(self.moto.pid),
            "FAKE_BEDROCK_PID": str(self.fake_bedrock.pid),
            "API_PID": str(self.api.pid),
            "PIDS": " ".join(str(p.pid) for p in self.processes() if p not in self.extra_apis),
            **self._proxy_state(),
        }

    def _proxy_state(self) -> dict[str, str]:
        if self.fake_anthropic is None or self.proxy_tables is None:
            return {}
        return {
            "FAKE_ANTHROPIC_URL": self.fake_anthropic.url,
            "FAKE_ANTHROPIC_PID": str(self.fake_anthropic.pid),
            "API_KEY_TABLE_NAME": self.proxy_tables[0],
            "RATE_LIMIT_TABLE_NAME": self.proxy_tables[1],
        }


def recorded_processes(state: dict[str, str]) -> list[ManagedProcess]:
    """The processes a stack.env names, API first (so it can drain its counter writes into moto)."""
    log_dir = Path(state.get("LOG_DIR", stack_state.local_dir() / "logs"))
    entries = [
        ("api", "API_PID", "API_URL", "local-stack"),
        ("fake-anthropic", "FAKE_ANTHROPIC_PID", "FAKE_ANTHROPIC_URL", "local-stack"),
        ("fake-bedrock", "FAKE_BEDROCK_PID", "FAKE_BEDROCK_URL", "local-stack"),
        ("moto", "MOTO_PID", "AWS_ENDPOINT_URL", "moto_serial_server"),
    ]
    processes = []
    for name, pid_key, url_key, marker in entries:
        if state.get(pid_key, "").isdigit():
            processes.append(
                ManagedProcess(
                    name=name,
                    pid=int(state[pid_key]),
                    stdout_path=log_dir / f"{name}.stdout.log",
                    stderr_path=log_dir / f"{name}.stderr.log",
                    url=state.get(url_key, ""),
                    cmdline_marker=marker,
                )
            )
    return processes


# ---------------------------------------------------------------------------------------------- CLI

def _build_local_stack() -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        raise StackError("cargo not found on PATH: install Rust (rustup) to build the local stack")
    print("building: cargo build -p local-stack", file=sys.stderr)
    started = time.monotonic()
    result = subprocess.run([cargo, "build", "-p", "local-stack"], cwd=REPO_ROOT)
    if result.returncode != 0:
        raise StackError("`cargo build -p local-stack` failed; see the compiler output above")
    print(f"built {local_stack_binary()} in {time.monotonic() - started:.0f}s", file=sys.stderr)


def cmd_stop(quiet: bool = False) -> int:
    state = stack_state.read_state()
    if state is None:
        if not quiet:
            print(f"no local stack recorded ({stack_state.state_file()} does not exist)")
        return 0
    for process in recorded_processes(state):
        if process.is_alive():
            process.stop()
            if not quiet:
                print(f"stopped {process.name} (pid {process.pid})")
    stack_state.remove_state()
    stack_state.PasswordStore().clear()  # the users lived in moto's memory, gone with it
    if not quiet:
        print(f"local stack stopped (logs kept in {state.get('LOG_DIR', '')})")
    return 0


def cmd_status() -> int:
    state = stack_state.read_state()
    if state is None:
        print(f"no local stack: {stack_state.state_file()} does not exist (start one with scripts/dev)")
        return 1
    import requests

    all_up = True
    for process in recorded_processes(state):
        alive = process.is_alive()
        answer = "-"
        if alive:
            probe = process.url + {"api": "/health", "moto": "/moto-api/"}.get(process.name, "/")
            try:
                status = requests.get(probe, timeout=2).status_code
                # Only the API has a health route; the others are up when they answer HTTP at all.
                answer = f"GET /health -> {status}" if process.name == "api" else "answers HTTP"
                alive = status == 200 if process.name == "api" else alive
            except requests.RequestException as error:
                answer = f"no answer ({type(error).__name__})"
                alive = False
        all_up &= alive
        print(f"{process.name:<13} pid {process.pid:<8} {'up  ' if alive else 'DOWN'}  {process.url:<28} {answer}")
    print(f"state: {stack_state.state_file()}   logs: {state.get('LOG_DIR', '')}")
    return 0 if all_up else 1


def _create_gateway_key(api_url: str, id_token: str) -> str:
    """A gateway key of the demo user for the Claude proxy (POST /v1/keys; shown once)."""
    import requests

    response = requests.post(f"{api_url}/v1/keys", json={"name": "scripts/dev"},
                             headers={"Authorization": f"Bearer {id_token}"}, timeout=30)
    if response.status_code != 201:
        raise StackError(f"could not create the demo gateway key: {response.status_code} {response.text[:300]}")
    return response.json()["key"]


def cmd_start(build: bool) -> int:
    override = os.environ.get("BM_LOCAL_STACK_BIN")
    if override:
        # A binary built elsewhere (scripts/test builds every binary once, with the tests' features): building
        # target/debug/local-stack here would compile a second variant of the workspace and not be the one run.
        print(f"using $BM_LOCAL_STACK_BIN={override} (not building)", file=sys.stderr)
    elif build:
        _build_local_stack()
    if stack_state.read_state() is not None:
        print("stopping the previous local stack", file=sys.stderr)
        cmd_stop(quiet=True)
    log_dir = stack_state.local_dir() / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    stack = LocalStack.start(log_dir, detached=True, with_proxy=True)
    try:
        users = local_users(stack.resources)
        password = generate_password()
        users.create_tenant_user(DEMO_USER, DEMO_EMAIL, DEMO_TENANT, password)
        stack_state.PasswordStore().put(DEMO_USER, password)
        token = users.get_id_token(DEMO_USER, password)
        gateway_key = _create_gateway_key(stack.api.url, token)
        path = stack_state.write_state(stack.state())
    except BaseException:
        stack.stop()
        raise
    print(
        f"""local stack up (detached):
  API             {stack.api.url}   (POST /bedrock/chat, GET /health)
  fake Bedrock    {stack.fake_bedrock.url}
  moto            {stack.resources.endpoint_url}   (DynamoDB {stack.resources.usage_table}, Cognito {stack.resources.user_pool_id})
  state           {path}   (`source` it for API_URL, USER_POOL_ID, ...)
  logs            {log_dir}/   (usage lines: api.stdout.log)
  demo user       {DEMO_USER}, tenant {DEMO_TENANT} (password in {stack_state.PasswordStore().path})

Try it (IdToken valid for 1 hour; a fresh one: scripts/get-token {DEMO_USER}):
curl -sS -X POST "{stack.api.url}/bedrock/chat" -H "Authorization: Bearer {token}" -H 'content-type: application/json' -d '{{"prompt":"Hello"}}'

Claude proxy (fake Anthropic {stack.fake_anthropic.url if stack.fake_anthropic else "-"}; "[fake:rate-limit]" in a prompt -> Bedrock):
export ANTHROPIC_BASE_URL={stack.api.url} ANTHROPIC_API_KEY={gateway_key}   # then: claude, or any Anthropic SDK

Also: scripts/chat "Hello"    scripts/create-tenant-user <username> <email> <tenant_id>
Status: scripts/dev status    Stop: scripts/dev stop"""
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/dev",
        description="Run the whole stack on this machine: moto (DynamoDB, S3, CloudWatch Logs, Cognito), the fake "
        "Bedrock and the local API, detached, on free 127.0.0.1 ports. State goes to .local/ (or $BM_LOCAL_DIR). "
        "Running it again restarts the stack (moto keeps its data in memory only). With $BM_LOCAL_STACK_BIN set, "
        "that binary is run and nothing is built.",
    )
    parser.add_argument("--no-build", action="store_true", help="use the existing target/debug/local-stack")
    sub = parser.add_subparsers(dest="command")
    start = sub.add_parser("start", help="(default) build local-stack, (re)start the stack, create the demo user")
    start.add_argument("--no-build", action="store_true", default=argparse.SUPPRESS,
                       help="use the existing target/debug/local-stack")
    sub.add_parser("stop", help="stop the stack recorded in .local/stack.env")
    sub.add_parser("status", help="show whether each process is up; exit 1 if not")
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            return cmd_stop()
        if args.command == "status":
            return cmd_status()
        return cmd_start(build=not args.no_build)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
