"""A minimal Lambda Runtime API + Extensions API, enough to run the project's Lambda binaries as Lambda does.

One execution environment at a time: `start()` launches the binary (init: every registered extension and the
runtime must ask for their next event), `invoke()` hands one event to the runtime and an INVOKE event to every
extension and returns when the runtime has answered AND every extension has asked for its next event (the
moment Lambda may freeze the environment) — or, at the deadline, times the invocation out and shuts the
environment down. `shutdown()` is Lambda's: SIGTERM, 500 ms (a runtime with an internal extension), SIGKILL.

Everything observable goes to one timeline (`events`): the response or error as posted, each stdout line
(usage lines), each extension /next, each counter write seen by `DynamoRecorder`, signals and exits.
Streaming responses (`Lambda-Runtime-Function-Response-Mode: streaming`) are decoded: the prelude of the
`application/vnd.awslambda.http-integration-response` content type, the 8 NUL separator, the body.
"""
from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

STREAMING_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
SHUTDOWN_GRACE_S = 0.5


@dataclass
class Event:
    t: float
    kind: str  # response | error | stdout | extension_next | runtime_next | counter_write | register | signal | exit | timeout
    request_id: str = ""
    detail: object = None
    # For stdout lines: the byte offset where the line ends; for the others: stdout's size at that moment.
    # Standard output is a file, so its size when an event happens says exactly which lines came before it.
    stdout_bytes: int = 0


class Timeline:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.stdout_path: Path | None = None

    def add(self, kind: str, request_id: str = "", detail: object = None, stdout_bytes: int | None = None) -> Event:
        if stdout_bytes is None:
            stdout_bytes = self.stdout_path.stat().st_size if self.stdout_path and self.stdout_path.exists() else 0
        event = Event(time.monotonic(), kind, request_id, detail, stdout_bytes)
        with self._lock:
            self.events.append(event)
        return event

    def of(self, kind: str, request_id: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind and (request_id is None or e.request_id == request_id)]

    def usage_lines(self, event_name: str = "token_usage") -> list[dict]:
        """Lines of standard output whose `event` is `event_name` (the usage lines, or `counter_update`)."""
        lines = []
        for event in self.of("stdout"):
            try:
                value = json.loads(event.detail)
            except (TypeError, ValueError):
                continue
            if isinstance(value, dict) and value.get("event") == event_name:
                lines.append({**value, "_t": event.t, "_end": event.stdout_bytes})
        return lines


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    posted: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    waiting_extensions: set[str] = field(default_factory=set)
    response: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: dict | None = None
    timed_out: bool = False
    started: float = 0.0
    finished: float = 0.0
    # A streamed response: when each of its chunks had arrived (the last: the terminator), time.monotonic().
    chunk_times: list[float] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        return self.headers.get("lambda-runtime-function-response-mode", "").lower() == "streaming"

    def http(self) -> tuple[dict, bytes]:
        """The HTTP answer: (status/headers, body) from a buffered JSON response or a streamed prelude."""
        assert self.response is not None, f"no response (error: {self.error})"
        if self.streaming:
            prelude, separator, body = self.response.partition(b"\0" * 8)
            assert separator, "streamed response without the 8 NUL separator after the prelude"
            return json.loads(prelude), body
        answer = json.loads(self.response)
        body = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            import base64

            return answer, base64.b64decode(body)
        return answer, body.encode()


class LambdaEmulator:
    def __init__(self, binary: Path, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.binary, self.base_env, self.log_dir, self.name = binary, env, log_dir, name
        self.timeline = Timeline()
        self._lock = threading.Condition()
        self._runtime_queue: queue.Queue[Invocation] = queue.Queue()
        self._extensions: dict[str, dict] = {}
        self._current: Invocation | None = None
        self._runtime_waiting = False
        self.process: subprocess.Popen | None = None
        self.init_errors: list[dict] = []
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                emulator._route(self, "GET")

            def do_POST(self):
                emulator._route(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 60, **env_overrides: str) -> None:
        """Init: launch the binary; done when the runtime and every registered extension wait for events."""
        self._extensions.clear()
        self._runtime_waiting = False
        env = {
            **self.base_env,
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            **env_overrides,
        }
        stderr = open(self.log_dir / f"{self.name}.stderr.log", "ab")
        stdout_path = self.log_dir / f"{self.name}.stdout.log"
        self.timeline.stdout_path = stdout_path
        stdout = open(stdout_path, "ab")
        self.process = subprocess.Popen([str(self.binary)], env=env, stdout=stdout, stderr=stderr)
        if not getattr(self, "_tailing", False):
            self._tailing = True
            threading.Thread(target=self._tail_stdout, args=(stdout_path,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not (self._runtime_waiting and all(e["waiting"] for e in self._extensions.values())):
                if self.process.poll() is not None:
                    raise InitFailed(self.process.returncode, self.stderr_text())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: init did not finish in {timeout_s}s")
                self._lock.wait(min(remaining, 0.1))

    def stderr_text(self) -> str:
        return (self.log_dir / f"{self.name}.stderr.log").read_text(errors="replace")

    def extensions(self) -> list[dict]:
        return list(self._extensions.values())

    def invoke(self, payload: object, timeout_s: float = 30, request_id: str | None = None) -> Invocation:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        invocation = Invocation(request_id or str(uuid.uuid4()), body, int((time.time() + timeout_s) * 1000))
        invocation.started = time.monotonic()
        with self._lock:
            self._current = invocation
            for extension_id, extension in self._extensions.items():
                if "INVOKE" in extension["events"]:
                    invocation.waiting_extensions.add(extension_id)
                    extension["queue"].put(invocation)
            if not invocation.waiting_extensions:
                invocation.released.set()
        self._runtime_queue.put(invocation)
        end = invocation.started + timeout_s
        while not (invocation.posted.is_set() and invocation.released.is_set()):
            if time.monotonic() >= end:
                invocation.timed_out = True
                self.timeline.add("timeout", invocation.request_id)
                self.shutdown()
                break
            time.sleep(0.005)
        invocation.finished = time.monotonic()
        return invocation

    def shutdown(self) -> int | None:
        """Lambda's shutdown: SIGTERM, then SIGKILL after the grace period. Returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        self.timeline.add("signal", detail="SIGTERM")
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            self.timeline.add("signal", detail="SIGKILL")
            process.kill()
            code = process.wait(5)
        self.timeline.add("exit", detail=code)
        time.sleep(0.2)  # let the stdout tail take the last lines
        return code

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.server.shutdown()

    def _tail_stdout(self, path: Path) -> None:
        offset, pending = 0, b""
        while True:
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read()
            if not data:
                time.sleep(0.01)
                continue
            start = offset - len(pending)
            offset += len(data)
            pending += data
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                start += len(raw) + 1
                line = raw.decode(errors="replace")
                request_id = ""
                try:
                    value = json.loads(line)
                    request_id = value.get("request_id", "") if isinstance(value, dict) else ""
                except ValueError:
                    pass
                self.timeline.add("stdout", request_id, line, stdout_bytes=start)

    # ------------------------------------------------------------------ the two APIs

    def _route(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path
        body = _read_body(handler) if method == "POST" else b""
        parts = path.strip("/").split("/")
        if path == "/2018-06-01/runtime/invocation/next":
            return self._runtime_next(handler)
        if method == "POST" and path.startswith("/2018-06-01/runtime/invocation/") and len(parts) == 5:
            return self._runtime_post(handler, parts[3], parts[4], body)
        if path == "/2018-06-01/runtime/init/error":
            self.init_errors.append(json.loads(body or b"{}"))
            return _reply(handler, 202, {"status": "OK"})
        if path == "/2020-01-01/extension/register":
            return self._register(handler, body)
        if path == "/2020-01-01/extension/event/next":
            return self._extension_next(handler)
        if path in ("/2020-01-01/extension/init/error", "/2020-01-01/extension/exit/error"):
            self.timeline.add("extension_error", detail=body.decode(errors="replace"))
            return _reply(handler, 202, {"status": "OK"})
        _reply(handler, 404, {"errorMessage": f"unknown route {method} {path}"})

    def _runtime_next(self, handler) -> None:
        self.timeline.add("runtime_next")
        with self._lock:
            self._runtime_waiting = True
            self._lock.notify_all()
        invocation = self._runtime_queue.get()
        with self._lock:
            self._runtime_waiting = False
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:us-east-1:123456789012:function:{self.name}",
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
        }
        _reply(handler, 200, invocation.payload, headers)

    def _runtime_post(self, handler, request_id: str, outcome: str, body: bytes) -> None:
        invocation = self._current
        if invocation is None or invocation.request_id != request_id:
            return _reply(handler, 400, {"errorMessage": f"unknown request id {request_id}"})
        invocation.headers = {k.lower(): v for k, v in handler.headers.items()}
        invocation.chunk_times = list(getattr(handler, "chunk_times", []))
        if outcome == "response":
            invocation.response = body
            trailer_error = getattr(handler, "trailers", {}).get("lambda-runtime-function-error-type")
            if trailer_error:
                invocation.error = {"errorType": trailer_error}
        else:
            invocation.error = json.loads(body or b"{}")
        self.timeline.add(outcome, request_id)
        invocation.posted.set()
        _reply(handler, 202, {"status": "OK"})

    def _register(self, handler, body: bytes) -> None:
        extension_id = str(uuid.uuid4())
        events = json.loads(body or b"{}").get("events", [])
        with self._lock:
            self._extensions[extension_id] = {
                "name": handler.headers.get("Lambda-Extension-Name"), "events": events,
                "queue": queue.Queue(), "waiting": False, "in": None,
            }
        self.timeline.add("register", detail={"runtime_waiting": self._runtime_waiting, "events": events})
        _reply(handler, 200, {"functionName": self.name, "functionVersion": "$LATEST", "handler": "bootstrap"},
               {"Lambda-Extension-Identifier": extension_id})

    def _extension_next(self, handler) -> None:
        extension_id = handler.headers.get("Lambda-Extension-Identifier", "")
        extension = self._extensions.get(extension_id)
        if extension is None:
            return _reply(handler, 403, {"errorMessage": "unknown extension"})
        with self._lock:
            done: Invocation | None = extension["in"]
            extension["in"], extension["waiting"] = None, True
            if done is not None:
                self.timeline.add("extension_next", done.request_id)
                done.waiting_extensions.discard(extension_id)
                if not done.waiting_extensions:
                    done.released.set()
            self._lock.notify_all()
        invocation = extension["queue"].get()
        with self._lock:
            extension["in"], extension["waiting"] = invocation, False
        _reply(handler, 200, {
            "eventType": "INVOKE", "deadlineMs": invocation.deadline_ms, "requestId": invocation.request_id,
            "invokedFunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{self.name}",
            "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-00000000-000000000000000000000000;Sampled=0"},
        })


class InitFailed(AssertionError):
    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"the function exited during init with {code}: {stderr[-2000:]}")
        self.code, self.stderr = code, stderr


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The body, chunked or not. For a chunked body, also `handler.chunk_times`: when each chunk (and last, the
    terminator) had arrived, so a test can see how long the sender took between its writes."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks, trailers = [], {}
        handler.chunk_times = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (line := handler.rfile.readline().strip()):
                    name, _, value = line.decode().partition(":")
                    trailers[name.strip().lower()] = value.strip()
                handler.trailers = trailers
                handler.chunk_times.append(time.monotonic())
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
            handler.chunk_times.append(time.monotonic())
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _reply(handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class DynamoRecorder:
    """Forwards the function's AWS calls to moto and puts each finished write to `table` on the timeline."""

    def __init__(self, upstream_url: str, table: str, timeline_of) -> None:
        upstream = urlsplit(upstream_url)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method: str) -> None:
                body = _read_body(self) if method == "POST" else b""
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                connection.request(method, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                target = self.headers.get("X-Amz-Target", "")
                if target.endswith(("UpdateItem", "TransactWriteItems", "PutItem")) and table.encode() in body and answer.status == 200:
                    timeline_of().add("counter_write", detail=json.loads(body or b"{}"))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self._forward_quietly("POST")

            def do_GET(self):
                self._forward_quietly("GET")

            def _forward_quietly(self, method: str) -> None:
                try:
                    self._forward(method)
                except (BrokenPipeError, ConnectionResetError, TimeoutError, http.client.HTTPException):
                    # The function gave up on a stopped table (its own timeout) or was shut down.
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
