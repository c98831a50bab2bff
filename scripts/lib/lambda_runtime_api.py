"""A minimal local AWS Lambda Runtime API and Extensions API, for timing a Lambda binary's cold start.

One server serves one process, like a fresh Lambda execution environment, on a port of its own: a request that a
stopped process sent late (its `next` after its response) can reach only its own, closed, server, never the next
process's.
- Extensions API: `POST /2020-01-01/extension/register`, `GET /2020-01-01/extension/event/next`. The first
  `event/next` says the extension has finished its init; it gets the INVOKE event when the function does; its
  next `event/next` says it is done with that invocation (Lambda ends the invocation only then).
- Runtime API: the first `GET /2018-06-01/runtime/invocation/next` gets the one event, but, as in Lambda, only
  once every registered extension has finished its init; `POST .../invocation/{id}/response` (buffered, or
  streamed with chunked encoding, `Lambda-Runtime-Function-Response-Mode: streaming`), `.../error`,
  `/runtime/init/error`. Any later `next` is held until the process is stopped.

Every moment is taken with `time.monotonic_ns()`, so the caller compares them with the instant it started the
process. Timing only: no event validation beyond what the measured binaries need.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUNTIME_PREFIX = "/2018-06-01/runtime"
EXTENSION_PREFIX = "/2020-01-01/extension"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:coldstart-bench"
# Longest a measured step may take before the run is declared failed.
STEP_TIMEOUT_SECONDS = 30.0


@dataclass
class ProcessRun:
    """The moments (monotonic ns) and outcome of one process's cold start and first invocation."""

    event: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    extension_registered_ns: int | None = None
    extension_ready_ns: int | None = None
    runtime_next_ns: int | None = None
    response_ns: int | None = None
    extension_done_ns: int | None = None
    response_body: bytes = b""
    error: str | None = None
    extension_id: str | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)
    stopping: threading.Event = field(default_factory=threading.Event)

    def init_done_ns(self) -> int | None:
        """Lambda's end of init: the runtime asked for work and every extension finished its init."""
        if self.runtime_next_ns is None:
            return None
        if self.extension_registered_ns is None:
            return self.runtime_next_ns
        if self.extension_ready_ns is None:
            return None
        return max(self.runtime_next_ns, self.extension_ready_ns)

    def invocation_done_ns(self) -> int | None:
        """Lambda's end of the invocation: the response is in and every extension is done with it."""
        if self.response_ns is None:
            return None
        if self.extension_registered_ns is None:
            return self.response_ns
        return None if self.extension_done_ns is None else max(self.response_ns, self.extension_done_ns)

    def note(self, **moments: object) -> None:
        with self.changed:
            for name, value in moments.items():
                setattr(self, name, value)
            self.changed.notify_all()

    def wait_for(self, ready, timeout: float = STEP_TIMEOUT_SECONDS) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: ready() or self.stopping.is_set(), timeout) and not self.stopping.is_set()


class RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, event: dict) -> None:
        """A fresh environment, on a port of its own, that hands `event` to its process's first `next`."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.run = ProcessRun(event=json.dumps(event).encode())
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        """A stopped process drops its held connections: expected, not worth a traceback."""

    def close(self) -> None:
        """Ends the environment: held requests return, the port is closed."""
        self.run.stopping.set()
        with self.run.changed:
            self.run.changed.notify_all()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApiServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (quiet)
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers (Lambda-Runtime-Function-Error-*) until the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hold(self, run: ProcessRun) -> None:
        """A later `next`: nothing more to do in this environment; wait until the process is stopped."""
        run.stopping.wait(STEP_TIMEOUT_SECONDS * 4)
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        now = time.monotonic_ns()
        body = self._read_body()
        run = self.server.run
        if self.path == f"{EXTENSION_PREFIX}/register":
            run.note(extension_registered_ns=now, extension_id=str(uuid.uuid4()))
            answer = {"functionName": "coldstart-bench", "functionVersion": "$LATEST", "handler": "bootstrap"}
            self._answer(200, json.dumps(answer).encode(), {"Lambda-Extension-Identifier": run.extension_id or ""})
        elif self.path == f"{RUNTIME_PREFIX}/invocation/{run.request_id}/response":
            run.note(response_ns=time.monotonic_ns(), response_body=body)
            self._answer(202, b'{"status":"OK"}')
        elif self.path.endswith("/error"):
            run.note(error=f"{self.path}: {body[:500].decode(errors='replace')}")
            self._answer(202, b'{"status":"OK"}')
        else:
            self._answer(404)

    def do_GET(self) -> None:  # noqa: N802
        now = time.monotonic_ns()
        run = self.server.run
        if self.path == f"{EXTENSION_PREFIX}/event/next":
            if run.extension_ready_ns is None:
                run.note(extension_ready_ns=now)
                # Released with the INVOKE once the runtime has taken the event.
                if not run.wait_for(lambda: run.runtime_next_ns is not None and run.init_done_ns() is not None):
                    self._hold(run)
                    return
                invoke = {"eventType": "INVOKE", "deadlineMs": _deadline_ms(), "requestId": run.request_id,
                          "invokedFunctionArn": FUNCTION_ARN, "tracing": {"type": "X-Amzn-Trace-Id", "value": ""}}
                self._answer(200, json.dumps(invoke).encode(), {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})
            else:
                run.note(extension_done_ns=now)
                self._hold(run)
        elif self.path == f"{RUNTIME_PREFIX}/invocation/next":
            if run.runtime_next_ns is not None:
                self._hold(run)
                return
            run.note(runtime_next_ns=now)
            # As in Lambda: the event comes once every registered extension has finished its init.
            if not run.wait_for(lambda: run.extension_registered_ns is None or run.extension_ready_ns is not None):
                self._hold(run)
                return
            self._answer(200, run.event, {
                "Lambda-Runtime-Aws-Request-Id": run.request_id,
                "Lambda-Runtime-Deadline-Ms": str(_deadline_ms()),
                "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            })
        else:
            self._answer(404)


def _deadline_ms() -> int:
    return int(time.time() * 1000) + 60_000
