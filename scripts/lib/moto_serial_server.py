#!/usr/bin/env python3
"""moto in server mode, one request at a time, on a port it picks itself.

    python moto_serial_server.py --host 127.0.0.1 --port-file FILE

Why not `moto_server`: moto 5.2.5 handles requests on parallel threads without locking its backends, so
DynamoDB `UpdateItem ... ADD` is not atomic there. Two concurrent first updates of the same new item both
see "no item", both create it, and one increment is lost (seen in the 50-concurrent-requests test: a
tenant's daily counter one request short). Real DynamoDB applies each UpdateItem atomically; serialising
requests gives moto the same guarantee. moto is GIL-bound anyway, so little throughput is lost.

Binding port 0 and writing the bound port to FILE (decimal, newline) also removes the race of picking a
free port before starting the server.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


def serialised(app):
    """WSGI middleware: the wrapped app handles one request at a time, its whole body produced in the lock."""
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            started: list = []
            body: list[bytes] = []

            def capture(status, headers, exc_info=None):
                started[:] = [status, headers, exc_info]
                return body.append

            result = app(environ, capture)
            try:
                body.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        status, headers, exc_info = started
        start_response(status, headers, exc_info)
        return body

    return handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the bound port once listening")
    args = parser.parse_args(argv)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, serialised(app), threaded=True, request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ["MOTO_PORT"] = str(port)  # moto builds some URLs (queues, presigned) from it

    def stop(_signum, _frame):
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    print(f"moto listening on http://{args.host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
