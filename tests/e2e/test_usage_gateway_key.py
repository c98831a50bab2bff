"""GET /v1/gateway-key/usage/me against the local stack: a gateway key reads its own tenant's usage report,
the very body GET /v1/usage/me gives that tenant's Cognito users (same parameters, same errors for bad ones),
and nothing of any other tenant through any path, parameter or header. Invalid, revoked or missing keys get
the proxy's Anthropic-shaped 401.
"""
from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid

import boto3
import pytest
import requests

from provision import generate_password
from proxy_stack import MODEL, create_proxy_tables, proxy_env, start_fake_anthropic
from support import Holder, new_holder, new_tenant_id, poll

ROUTE = "/v1/gateway-key/usage/me"


@pytest.fixture(scope="module")
def proxy_tables(stack):
    return create_proxy_tables(stack.resources)


@pytest.fixture(scope="module")
def fake_anthropic(stack):
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-key-usage")
    stack.extra_apis.append(fake)
    return fake


@pytest.fixture(scope="module")
def proxy(stack, proxy_tables, fake_anthropic):
    return stack.start_api("api-key-usage", **proxy_env(*proxy_tables, fake_anthropic.url))


@pytest.fixture(scope="module")
def passthrough_proxy(stack, proxy_tables, fake_anthropic):
    return stack.start_api("api-key-usage-passthrough", **proxy_env(
        *proxy_tables, fake_anthropic.url, ANTHROPIC_CREDENTIAL_MODE="passthrough", ANTHROPIC_API_KEY=None))


def by_key(api, key: str | None, path: str = ROUTE, header: str = "x-api-key", **params) -> requests.Response:
    headers = {header: key} if key is not None else {}
    return requests.get(f"{api.url}{path}", params=params or None, headers=headers, timeout=30)


def by_token(api, token: str, **params) -> requests.Response:
    return requests.get(f"{api.url}/v1/usage/me", params=params or None,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)


def raw_get(api, raw_path: str, headers: dict) -> tuple[int, str]:
    """GET with the path sent byte for byte (requests would normalise dots and encodings)."""
    parsed = urllib.parse.urlsplit(api.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("GET", raw_path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def ask(api, key: str, prompt: str) -> None:
    response = requests.post(f"{api.url}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                             json={"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]},
                             timeout=60)
    assert response.status_code == 200, response.text


def assert_anthropic_error(response: requests.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    assert body["error"]["message"], body


@pytest.fixture(scope="module")
def holders(proxy, user_factory) -> tuple[Holder, Holder]:
    """Two tenants, each with metered usage through the proxy (b's is the secret a must never see)."""
    a, b = new_holder(proxy, user_factory, "gk-a"), new_holder(proxy, user_factory, "gk-b")
    ask(proxy, a.key, "hello from tenant a")
    for _ in range(2):
        ask(proxy, b.key, "the secret numbers of tenant b are many words long indeed")
    for holder, count in ((a, 1), (b, 2)):
        poll("counters", lambda h=holder: by_token(proxy, h.user.token).json()["summary"]["total_requests"],
             lambda total, c=count: total == c, timeout=15)
    return a, b


@pytest.mark.parametrize("params", [{}, {"days": "30"}, {"days": "1", "request_type": "anthropic"},
                                    {"request_type": "bedrock"}, {"request_type": "all", "days": "366"}])
def test_a_key_reads_exactly_what_its_tenants_users_read(proxy, holders, params):
    a, _ = holders
    mine = by_key(proxy, a.key, **params)
    assert mine.status_code == 200, mine.text
    assert mine.headers["content-type"] == "application/json"
    assert mine.headers["cache-control"] == "private, no-store"
    assert mine.headers["x-request-id"]
    assert mine.json() == by_token(proxy, a.user.token, **params).json()
    assert mine.json()["tenant_id"] == a.tenant_id
    if params.get("request_type") != "bedrock":
        assert mine.json()["summary"]["total_requests"] == 1


def test_a_bearer_key_and_x_gateway_key_work_in_managed_mode(proxy, holders):
    a, _ = holders
    expected = by_token(proxy, a.user.token).json()
    assert by_key(proxy, f"Bearer {a.key}", header="Authorization").json() == expected
    assert by_key(proxy, a.key, header="x-gateway-key").json() == expected


def test_in_passthrough_mode_the_key_is_x_gateway_key(passthrough_proxy, proxy, holders):
    a, _ = holders
    answer = by_key(passthrough_proxy, a.key, header="x-gateway-key")
    assert answer.status_code == 200, answer.text
    assert answer.json() == by_token(proxy, a.user.token).json()
    # x-api-key is the user's own Anthropic key there, never a gateway key.
    assert_anthropic_error(by_key(passthrough_proxy, a.key, header="x-api-key"), 401, "authentication_error")


def test_a_key_reads_nothing_of_another_tenant(proxy, holders):
    a, b = holders
    secret = b.tenant_id
    mine = by_key(proxy, a.key).json()
    refused = [
        (f"/v1/gateway-key/usage/{secret}", 404),
        (f"/v1/gateway-key/usage/me/{secret}", 404),
        (f"/v1/gateway-key/usage/me/../{secret}", 404),
        (f"/v1/gateway-key/usage/me%2F..%2F{secret}", 404),
        (f"/v1/gateway-key/usage/me;tenant_id={secret}", 404),
        (f"/V1/GATEWAY-KEY/USAGE/me", 404),
        (f"/v1/gateway-key/usage/{secret.upper()}", 404),
        (f"{ROUTE}?tenant_id={secret}", 400),
        (f"{ROUTE}?tenant={secret}", 400),
        (f"{ROUTE}?days=7&tenant_id={secret}", 400),
        (f"{ROUTE}?user_id={b.user.sub}", 400),
        (f"{ROUTE}?days=0", 400),
        (f"{ROUTE}?request_type=BEDROCK", 400),
    ]
    for path, expected in refused:
        status, body = raw_get(proxy, path, {"x-api-key": a.key})
        assert status == expected, f"{path} -> {status} {body}"
        assert secret.lower() not in body.lower(), f"{path} leaked {body}"
    # Nothing in the headers chooses the tenant either: not a tenant header, not b's Cognito token.
    status, body = raw_get(proxy, ROUTE, {"x-api-key": a.key, "X-Tenant-Id": secret, "Tenant-Id": secret,
                                          "Authorization": f"Bearer {b.user.token}"})
    assert status == 200 and secret not in body and json.loads(body) == mine
    # A Cognito token is not a gateway key: the key route does not take it.
    assert_anthropic_error(by_key(proxy, f"Bearer {b.user.token}", header="Authorization"), 401, "authentication_error")


def test_missing_invalid_and_revoked_keys_are_401(proxy, user_factory):
    holder = new_holder(proxy, user_factory, "gk-revoked")
    assert by_key(proxy, holder.key).status_code == 200
    revoked = requests.delete(f"{proxy.url}/v1/keys/{holder.key_id}",
                              headers={"Authorization": f"Bearer {holder.user.token}"}, timeout=30)
    assert revoked.status_code == 200, revoked.text
    forged = holder.key[:-4] + ("0000" if not holder.key.endswith("0000") else "1111")
    for key in (holder.key, forged, "bmk_nonsense", "", None):
        answer = by_key(proxy, key)
        assert_anthropic_error(answer, 401, "authentication_error")
        assert holder.tenant_id not in answer.text


def test_other_methods_are_refused(proxy, holders):
    a, _ = holders
    answer = requests.post(f"{proxy.url}{ROUTE}", headers={"x-api-key": a.key}, timeout=30)
    assert_anthropic_error(answer, 405, "invalid_request_error")


LIMITS_ROUTE = "/v1/gateway-key/limits/me"


def test_a_key_reads_its_tenants_limits_and_its_own_narrowing(proxy, holders, user_factory, resources):
    a, b = holders
    username = f"admin-{uuid.uuid4().hex[:8]}"
    password = generate_password()
    user_factory.users.create_tenant_user(username, f"{username}@example.com", new_tenant_id("ops"), password, admin=True)
    admin_token = user_factory.users.get_id_token(username, password)
    put = requests.put(f"{proxy.url}/v1/limits/{a.tenant_id}", json={"tokens_per_month": 1000, "usd_per_month": 12.5},
                       headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    assert put.status_code == 200, put.text
    table = boto3.resource("dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
                           aws_access_key_id="testing", aws_secret_access_key="testing").Table(resources.usage_table)
    table.put_item(Item={"pk": f"LIMITS#{a.tenant_id}", "sk": f"KEY#{a.key_id}", "requests_per_minute": 2})

    cognito = requests.get(f"{proxy.url}/v1/limits/me", headers={"Authorization": f"Bearer {a.user.token}"}, timeout=30)
    assert cognito.status_code == 200, cognito.text
    answer = by_key(proxy, a.key, LIMITS_ROUTE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "private, no-store"
    body = answer.json()
    key_section = body.pop("key")
    assert body == cognito.json()
    assert body["tenant_id"] == a.tenant_id and body["limits"]["tokens_per_month"]["limit"] == 1000
    assert key_section["key_id"] == a.key_id
    assert key_section["limits"]["requests_per_minute"]["limit"] == 2
    assert key_section["limits"]["usd_per_month"] is None

    # The other tenant's key sees its own (unlimited) tenant only; nothing in the query widens it.
    other = by_key(proxy, b.key, LIMITS_ROUTE)
    assert other.status_code == 200, other.text
    assert other.json()["tenant_id"] == b.tenant_id
    assert all(value is None for value in other.json()["limits"].values())
    assert by_key(proxy, b.key, LIMITS_ROUTE, tenant_id=a.tenant_id).status_code == 400
    assert by_key(proxy, "bmk_forged_key", LIMITS_ROUTE).status_code == 401
