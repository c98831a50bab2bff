"""Child processes of the local stack: moto, the fake Bedrock and the local API.

Every server listens on 127.0.0.1 on a free port. Each process writes its stdout and stderr to files in a
run directory, so tests can read the usage lines the API prints, and so detached processes (scripts/dev)
keep running after the script that started them exits.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A local-stack piece could not be started or reached; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return free_port()


def local_stack_binary() -> Path:
    """target/debug/local-stack (or $BM_LOCAL_STACK_BIN, or under $CARGO_TARGET_DIR)."""
    override = os.environ.get("BM_LOCAL_STACK_BIN")
    if override:
        return Path(override)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    return target_dir / "debug" / "local-stack"


@dataclass
class ManagedProcess:
    """A process we started, by pid (a Popen is kept when we are its parent)."""

    name: str
    pid: int
    stdout_path: Path
    stderr_path: Path
    url: str = ""
    popen: subprocess.Popen | None = field(default=None, repr=False)
    # A word of the command line, checked before signalling a pid read back from a state file,
    # so a recycled pid of somebody else's process is never signalled.
    cmdline_marker: str = ""

    def is_alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return self._is_ours()

    def _is_ours(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, not yet reaped
            return False
        return self.cmdline_marker in cmdline

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code when we are the parent."""
        if not self.is_alive():
            return self.returncode()
        self._signal(signal.SIGTERM)
        if self._wait_gone(timeout):
            return self.returncode()
        print(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL", file=sys.stderr)
        self._signal(signal.SIGKILL)
        self._wait_gone(5.0)
        return self.returncode()

    def _signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                return True
            time.sleep(0.05)
        return False

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_tail(self, lines: int = 30) -> str:
        if not self.stderr_path.exists():
            return ""
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    def json_lines(self) -> list[dict]:
        """Every stdout line that parses as a JSON object."""
        records = []
        for line in self.stdout_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def usage_lines(self) -> list[dict]:
        return [r for r in self.json_lines() if r.get("event") == "token_usage"]


def spawn(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    env: Mapping[str, str],
    detached: bool,
    cmdline_marker: str,
) -> ManagedProcess:
    """Start argv with stdout/stderr in run_dir/<name>.{stdout,stderr}.log.

    detached=True puts the child in its own session, so it survives the script (scripts/dev)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = run_dir / f"{name}.stdout.log"
    stderr_path = run_dir / f"{name}.stderr.log"
    with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=str(REPO_ROOT),
            start_new_session=detached,
        )
    return ManagedProcess(
        name=name,
        pid=popen.pid,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        popen=popen,
        cmdline_marker=cmdline_marker,
    )


def wait_until(
    what: str, ready: Callable[[], bool], process: ManagedProcess, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise StackError(
                f"{process.name} exited (code {process.returncode()}) before {what}.\n"
                f"--- {process.stderr_path} (tail) ---\n{process.stderr_tail()}"
            )
        if ready():
            return
        time.sleep(0.05)
    process.stop()
    raise StackError(
        f"{process.name}: timed out after {timeout:.0f}s waiting for {what}.\n"
        f"--- {process.stderr_path} (tail) ---\n{process.stderr_tail()}"
    )


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def base_env() -> dict[str, str]:
    """The caller's environment without any AWS_* setting, so a developer's profile, real credentials
    or endpoint overrides can never leak into the local stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def start_moto(run_dir: Path, detached: bool = False, timeout: float = 30.0) -> ManagedProcess:
    """moto in server mode (every AWS service on one port), serialised: see moto_serial_server.py."""
    port_file = run_dir / "moto.port"
    port_file.unlink(missing_ok=True)
    process = spawn(
        "moto",
        [sys.executable, str(Path(__file__).resolve().parent / "moto_serial_server.py"),
         "--host", "127.0.0.1", "--port-file", str(port_file)],
        run_dir,
        base_env(),
        detached,
        cmdline_marker="moto_serial_server",
    )
    wait_until(f"its port file {port_file}", lambda: _read_port_file(port_file) is not None, process, timeout)
    process.url = f"http://127.0.0.1:{_read_port_file(port_file)}"
    wait_until("moto to answer HTTP", lambda: _answers(process.url + "/moto-api/"), process, timeout)
    return process


def _read_port_file(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.endswith("\n"):
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def start_local_stack_service(
    subcommand: str,
    name: str,
    run_dir: Path,
    env: Mapping[str, str],
    extra_args: Sequence[str] = (),
    detached: bool = False,
    timeout: float = 30.0,
    require_health: bool = True,
) -> ManagedProcess:
    """`local-stack fake-bedrock|api --addr 127.0.0.1:0 --port-file F`; waits for the port file, then for
    GET /health -> 200 (require_health) or for any HTTP answer (the fake Bedrock's contract has no /health)."""
    binary = local_stack_binary()
    if not binary.exists():
        raise StackError(f"{binary} does not exist: build it with `cargo build -p local-stack`")
    port_file = run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    process = spawn(
        name,
        [str(binary), subcommand, "--addr", "127.0.0.1:0", "--port-file", str(port_file), *extra_args],
        run_dir,
        env,
        detached,
        cmdline_marker="local-stack",
    )
    wait_until(f"its port file {port_file}", lambda: _read_port_file(port_file) is not None, process, timeout)
    process.url = f"http://127.0.0.1:{_read_port_file(port_file)}"
    if require_health:
        wait_until(f"GET {process.url}/health -> 200", lambda: _healthy(process.url + "/health"), process, timeout)
    else:
        wait_until(f"{process.url} to answer HTTP", lambda: _answers(process.url + "/health"), process, timeout)
    return process
