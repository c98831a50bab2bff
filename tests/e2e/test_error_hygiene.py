"""Errors say what the client can act on and nothing more: no SDK debug text, no upstream address, no panic.

- Bedrock killed while requests are in flight: every failed answer is 503 `overloaded_error` with
  Retry-After, and no body names 127.0.0.1, `DispatchFailure` or the SDK's internals.
- A forged all-tenants cursor with a date at chrono's edge (`-262143-01-01`) is a 400, not a panic.
- The local server answers a body shorter than its Content-Length (408) and a malformed chunked body (400)
  with the JSON error shape instead of holding the connection or answering 413.
"""
from __future__ import annotations

import base64
import json
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from processes import base_env, start_local_stack_service
from support import assert_error_body, chat, new_tenant_id

LEAKS = ("127.0.0.1", "localhost", "DispatchFailure", "dispatch failure", "os error", "Connection refused",
         "ConnectorError", "hyper", "SdkError", "aws_smithy")


def assert_no_leak(response: requests.Response) -> None:
    for leak in LEAKS:
        assert leak.lower() not in response.text.lower(), f"{leak!r} in {response.status_code} {response.text!r}"


def test_bedrock_killed_mid_load_gives_503_overloaded_with_retry_after(stack, user_factory):
    doomed = start_local_stack_service("fake-bedrock", "fake-bedrock-doomed", stack.run_dir, base_env(), require_health=False)
    stack.extra_apis.append(doomed)
    api = stack.start_api("api-doomed-bedrock", AWS_ENDPOINT_URL_BEDROCK_RUNTIME=doomed.url, THROTTLE_RETRY_AFTER_SECONDS="9")
    user = user_factory.create(new_tenant_id("killed"))
    warm = chat(api.url, user.token, {"prompt": "before the kill"})
    assert warm.status_code == 200, warm.text

    def one(index: int) -> requests.Response:
        return chat(api.url, user.token, {"prompt": f"in flight {index} [fake:delay=400]"})

    with ThreadPoolExecutor(max_workers=6) as pool:
        in_flight = [pool.submit(one, index) for index in range(12)]
        time.sleep(0.6)
        doomed._signal(signal.SIGKILL)
        responses = [future.result() for future in in_flight]
    responses += [chat(api.url, user.token, {"prompt": f"after the kill {index}"}) for index in range(3)]

    failed = [response for response in responses if response.status_code != 200]
    assert len(failed) >= 3, "the requests after the kill cannot have succeeded"
    for response in responses:
        assert_no_leak(response)
    for response in failed:
        error = assert_error_body(response, 503)
        assert error["type"] == "overloaded_error", error
        # No answer from Bedrock, so no delay of its own: the configured THROTTLE_RETRY_AFTER_SECONDS, exactly.
        assert response.headers.get("Retry-After") == "9", dict(response.headers)


def _admin(user_factory):
    users = user_factory.users
    username = f"admin-{uuid.uuid4().hex[:8]}"
    password = "Adm1n!" + uuid.uuid4().hex
    users.create_tenant_user(username, f"{username}@example.com", new_tenant_id("ops"), password, admin=True)
    return users.get_id_token(username, password)


@pytest.mark.parametrize("dates", [("-262143-01-01", "-262143-01-07"), ("+262142-12-25", "+262142-12-31"), ("1900-01-01", "1900-01-07")])
def test_a_forged_cursor_with_dates_out_of_range_is_a_400(api_url, user_factory, dates):
    token = _admin(user_factory)
    wire = {"v": 1, "from": dates[0], "to": dates[1], "request_type": "all", "offset": 0}
    cursor = base64.urlsafe_b64encode(json.dumps(wire, separators=(",", ":")).encode()).rstrip(b"=").decode()

    response = requests.get(f"{api_url}/v1/usage", params={"cursor": cursor},
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)

    assert_error_body(response, 400)
    control = requests.get(f"{api_url}/v1/usage", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert control.status_code == 200, control.text


def _raw_exchange(api_url: str, request: bytes, read_timeout: float = 40.0) -> tuple[int, dict]:
    """Sends raw bytes and returns (status, JSON body) of the answer; fails if the server holds on."""
    address = urlparse(api_url)
    with socket.create_connection((address.hostname, address.port), timeout=read_timeout) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"connection closed without an answer: {received!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        headers = dict(
            line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
        )
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
        while len(body) < length:
            chunk = connection.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body[:length])


@pytest.fixture(scope="module")
def token(user_factory) -> str:
    return user_factory.create(new_tenant_id("raw")).token


def test_a_body_shorter_than_its_content_length_is_answered_408(api_url, token):
    host = urlparse(api_url).netloc
    request = (
        f"POST /bedrock/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + '{"prompt": '
    ).encode()

    status, body = _raw_exchange(api_url, request)

    assert status == 408, body
    assert body["error"]["type"] == "request_timeout" and body["error"]["message"], body


def test_a_malformed_chunked_body_is_a_400(api_url, token):
    host = urlparse(api_url).netloc
    request = (
        f"POST /bedrock/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    ).encode()

    status, body = _raw_exchange(api_url, request)

    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error", body


def test_a_request_head_never_finished_is_cut_off(api_url):
    """A client that sends half a request head does not hold the connection for ever (header read timeout)."""
    address = urlparse(api_url)
    with socket.create_connection((address.hostname, address.port), timeout=40) as connection:
        connection.sendall(f"POST /bedrock/chat HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Ty".encode())
        try:
            received = connection.recv(65536)
        except socket.timeout:
            pytest.fail("the server still holds a half-sent request head after 40 s")
    # hyper closes the connection (empty read) or answers 408; either way it let go.
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received


def test_a_wrong_method_on_a_server_route_gets_the_json_error(api_url):
    assert_error_body(requests.post(f"{api_url}/health", timeout=10), 405)
