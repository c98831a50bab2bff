"""A pass-through HTTP proxy in front of moto's DynamoDB that records every TransactWriteItems it forwards.

The API is pointed at it with AWS_ENDPOINT_URL_DYNAMODB; it forwards each request to moto as it arrives (it is
never frozen itself: freezing moto with SIGSTOP still freezes the table) and keeps each transaction's
ClientRequestToken, the counter batch id. A token seen twice is a retried counter write that reached the
table twice: without idempotent counters it would be counted twice. The fault tests assert that this happened,
so their "counted at most once" can fail.
"""
from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Longer than any freeze of the tests: a forwarded request waits for the frozen moto to answer.
UPSTREAM_TIMEOUT_SECONDS = 120


class DynamoDbTap:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self._lock = threading.Lock()
        self.transaction_tokens: Counter[str] = Counter()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("x-amz-target", "").endswith(".TransactWriteItems"):
                    try:
                        token = json.loads(body).get("ClientRequestToken")
                    except ValueError:
                        token = None
                    if token:
                        with tap._lock:
                            tap.transaction_tokens[token] += 1
                upstream = http.client.HTTPConnection(tap.upstream.hostname, tap.upstream.port,
                                                      timeout=UPSTREAM_TIMEOUT_SECONDS)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    upstream.request("POST", self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                finally:
                    upstream.close()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.getheaders():
                        if key.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                            self.send_header(key, value)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its attempt timed out); moto has applied the request anyway

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tokens(self) -> Counter[str]:
        with self._lock:
            return Counter(self.transaction_tokens)

    def resent(self) -> dict[str, int]:
        """Counter batches sent more than once: batch id -> times."""
        return {token: n for token, n in self.tokens().items() if n > 1}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
