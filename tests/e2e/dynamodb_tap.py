"""A pass-through HTTP proxy in front of moto's DynamoDB that records every TransactWriteItems it forwards.

The API is pointed at it with AWS_ENDPOINT_URL_DYNAMODB; it forwards each request to moto as it arrives (it is
never frozen itself: freezing moto with SIGSTOP still freezes the table) and keeps each transaction's
ClientRequestToken, the counter batch id. A token seen twice is a retried counter write that reached the
table twice: without idempotent counters it would be counted twice. The fault tests assert that this happened,
so their "counted at most once" can fail.

With `lose_first_answer_of`, a predicate on a transaction's body, the tap forwards the first attempt of each
matching transaction (by ClientRequestToken) to moto, so it is applied, then answers it 500 InternalServerError
as if the answer had been lost on the way back: the client's retry of an applied write, on demand.
"""
from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

# Longer than any freeze of the tests: a forwarded request waits for the frozen moto to answer.
UPSTREAM_TIMEOUT_SECONDS = 120
# Headers of one connection, not of the answer: the proxies of these tests set their own.
HOP_HEADERS = ("content-length", "connection", "transfer-encoding", "server", "date")


def forward_to(upstream, handler: BaseHTTPRequestHandler, body: bytes, timeout: float) -> tuple[int, list, bytes]:
    """Sends the request `handler` received (its path, headers and `body`) to `upstream` (a urlsplit result):
    the answer's status, headers and body."""
    connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=timeout)
    try:
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
        connection.request("POST", handler.path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.getheaders(), reply.read()
    finally:
        connection.close()


def serve(handler_class: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Serves `handler_class` on a free 127.0.0.1 port in a daemon thread: the server and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def answer(handler: BaseHTTPRequestHandler, status: int, headers: list, data: bytes) -> None:
    """Answers the request `handler` received with `status`, the answer's own `headers` and `data`."""
    handler.send_response(status)
    for key, value in headers:
        if key.lower() not in HOP_HEADERS:
            handler.send_header(key, value)
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class DynamoDbTap:
    def __init__(self, upstream: str, lose_first_answer_of: Callable[[dict], bool] | None = None):
        self.upstream = urlsplit(upstream)
        self._lock = threading.Lock()
        self.transaction_tokens: Counter[str] = Counter()
        self.lost_answers: Counter[str] = Counter()
        self.transactions: list[dict] = []
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                lose_answer = False
                if self.headers.get("x-amz-target", "").endswith(".TransactWriteItems"):
                    try:
                        transaction = json.loads(body)
                    except ValueError:
                        transaction = {}
                    token = transaction.get("ClientRequestToken")
                    with tap._lock:
                        tap.transactions.append(transaction)
                    if token:
                        with tap._lock:
                            tap.transaction_tokens[token] += 1
                            lose_answer = (lose_first_answer_of is not None and tap.transaction_tokens[token] == 1
                                           and lose_first_answer_of(transaction))
                            if lose_answer:
                                tap.lost_answers[token] += 1
                status, headers, data = forward_to(tap.upstream, self, body, UPSTREAM_TIMEOUT_SECONDS)
                if lose_answer:
                    status, headers, data = 500, [("content-type", "application/x-amz-json-1.0")], json.dumps({
                        "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                        "message": "the tap lost the answer of an applied write"}).encode()
                try:
                    answer(self, status, headers, data)
                except OSError:
                    pass  # the client gave up (its attempt timed out); moto has applied the request anyway

            def log_message(self, *args):
                pass

        self.server, self.url = serve(Handler)

    def tokens(self) -> Counter[str]:
        with self._lock:
            return Counter(self.transaction_tokens)

    def resent(self) -> dict[str, int]:
        """Counter batches sent more than once: batch id -> times."""
        return {token: n for token, n in self.tokens().items() if n > 1}

    def transactions_touching(self, partition: str) -> list[dict]:
        """The TransactWriteItems bodies with an item whose `pk` is `partition`."""
        def pk(item: dict) -> str:
            action = item.get("Update") or item.get("Put") or item.get("ConditionCheck") or item.get("Delete") or {}
            return (action.get("Key") or action.get("Item") or {}).get("pk", {}).get("S", "")
        with self._lock:
            return [t for t in self.transactions if any(pk(item) == partition for item in t.get("TransactItems", []))]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
