#!/usr/bin/env python3
"""moto in server mode, one request at a time, on a port it picks itself.

    python moto_serial_server.py --host 127.0.0.1 --port-file FILE

Why not `moto_server`: moto 5.2.5 handles requests on parallel threads without locking its backends, so
DynamoDB `UpdateItem ... ADD` is not atomic there. Two concurrent first updates of the same new item both
see "no item", both create it, and one increment is lost (seen in the 50-concurrent-requests test: a
tenant's daily counter one request short). Real DynamoDB applies each UpdateItem atomically; serialising
requests gives moto the same guarantee. moto is GIL-bound anyway, so little throughput is lost.

moto's `TransactWriteItems` deep-copies every table a transaction touches, once per item, before applying it
(its rollback). With a usage table of thousands of items (counters, markers, limits) each counter or budget
transaction then costs tens of milliseconds, moto's one-at-a-time queue grows under concurrent tests, and
calls time out (a limits read failing open; counter outcomes "unknown"). `transact_write_items_with_item_undo`
replaces it with the same checks and errors, keeping a copy of only the items it changes and restoring them
on a cancellation. Pinned to moto 5.2.5 (scripts/requirements.txt), whose method it replaces.

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

import copy
from typing import Any

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


def transact_write_items_with_item_undo(self, transact_items: list[dict[str, Any]]) -> None:
    """moto 5.2.5's DynamoDBBackend.transact_write_items, with an undo log of the changed items instead of a deep
    copy of each table per item. Same checks (size, one operation per item, one item once, conditions), same
    TransactionCanceledException reasons; on cancellation every changed item is put back (or deleted if it
    did not exist)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed, MockValidationException, MultipleTransactionsException, TooManyTransactionsException,
        TransactionCanceledException, TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []  # (table, key, attributes before)
    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    def roll_back() -> None:
        for table_name, key, before in reversed(undo):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before)

    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            check_unicity(table_name, key)
            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(condition_expression, names, values)
                if not condition_op.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                undo.append((table_name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
            if op_type == "Put":
                self.put_item(table_name, op["Item"], condition_expression=condition_expression,
                              expression_attribute_names=names, expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(table_name, key, condition_expression=condition_expression,
                                 expression_attribute_names=names, expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                 condition_expression=condition_expression,
                                 expression_attribute_names=names, expression_attribute_values=values)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            roll_back()
            raise
        except ConditionalCheckFailed as error:
            errors.append(("ConditionalCheckFailed", str(error.message), original_item))
        except Exception as error:  # noqa: BLE001 (moto reports any other failure as the item's reason)
            errors.append((type(error).__name__, str(error), original_item))
    if any(code is not None for code, _, _ in errors):
        roll_back()
        raise TransactionCanceledException(errors)


def install_item_undo() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    DynamoDBBackend.transact_write_items = transact_write_items_with_item_undo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the bound port once listening")
    args = parser.parse_args(argv)

    install_item_undo()
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
