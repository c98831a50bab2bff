"""Session fixtures of the end-to-end tests: one local stack (moto + fake Bedrock + local API) on free ports.

No test may skip: a skipped test (or a module skipped at import) fails the run unless its node id is in
tests/skip-allowlist.txt with a reason. A missing tool is an install step of scripts/test, not a skip.

The stack's logs (each process's stdout/stderr) go to a temporary directory, printed at the end of the run.
Under pytest-xdist (`-n N`, as scripts/test runs the e2e step) each worker has its own session stack.
Tests that need an API process with other settings start their own against the same moto and fake Bedrock
(`stack.start_api(name, **env)`); they are stopped with the stack.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

pytest_plugins = ["skip_guard"]  # tests/skip_guard.py: a skip not in tests/skip-allowlist.txt fails the run

from dynamodb_tap import DynamoDbTap  # noqa: E402
from localstack import LocalStack  # noqa: E402
from support import UserFactory  # noqa: E402

_run_dirs: list[Path] = []


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("local-stack")
    _run_dirs.append(run_dir)
    local_stack = LocalStack.start(run_dir)
    yield local_stack
    local_stack.stop()


@pytest.fixture(scope="session")
def resources(stack: LocalStack):
    return stack.resources


@pytest.fixture(scope="session")
def api_url(stack: LocalStack) -> str:
    return stack.api.url


@pytest.fixture(scope="session")
def user_factory(stack: LocalStack) -> UserFactory:
    return UserFactory(stack.resources)


@pytest.fixture(scope="module")
def dynamodb_tap(stack: LocalStack):
    """A tap in front of moto's DynamoDB, one per test module (tests/e2e/dynamodb_tap.py): an API started with
    AWS_ENDPOINT_URL_DYNAMODB=dynamodb_tap.url has every transaction it sends recorded."""
    tap = DynamoDbTap(stack.resources.endpoint_url)
    yield tap
    tap.close()


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller prints the run directories
        workeroutput["local_stack_run_dirs"] = [str(run_dir) for run_dir in _run_dirs]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: a worker ended; keep its stacks' log directories for the summary."""
    _run_dirs.extend(Path(run_dir) for run_dir in getattr(node, "workeroutput", {}).get("local_stack_run_dirs", []))


def pytest_terminal_summary(terminalreporter):
    for run_dir in _run_dirs:
        terminalreporter.write_line(f"local stack logs (stdout/stderr of moto, fake-bedrock, api*): {run_dir}")
