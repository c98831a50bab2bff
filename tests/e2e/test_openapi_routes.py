"""The routes the local server serves and the paths and methods of infra/openapi/openapi.json agree, both ways.

- Paths: the axum routes of the functions' Routers, which the local server mounts (`.route("...")`), against the document's
  paths; a route on one side only fails.
- Methods: on the live local stack (proxy on), every documented path is asked with every method; a method is
  served when the answer is neither 404 nor 405. The served methods must be exactly the documented ones, so a
  method a handler starts (or stops) accepting fails here.
The API Gateway side (the CDK app's resources and methods) is compared in infra/test/openapi.test.ts.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import requests

from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic
from provision import generate_password

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = json.loads((REPO_ROOT / "infra" / "openapi" / "openapi.json").read_text())
# The functions' own Routers, which the local server mounts (crates/local-stack/src/api_server.rs) as Lambda runs them.
LOCAL_SERVER_SOURCES = [REPO_ROOT / "crates" / path for path in (
    "chat-api/src/lib.rs", "usage-api/src/lib.rs", "claude-proxy/src/handler.rs", "local-stack/src/api_server.rs")]
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Local-only routes that are no part of the tenant API: the server's health probe, and `/ui/` (a redirect to /ui).
LOCAL_ONLY_ROUTES = {"/health", "/ui/"}


def documented_operations() -> dict[str, set[str]]:
    return {path: {method.upper() for method in item if method.upper() in HTTP_METHODS} for path, item in SPEC["paths"].items()}


def local_server_routes() -> set[str]:
    routes = set()
    for source in LOCAL_SERVER_SOURCES:
        routes.update(re.findall(r'\.route\(\s*"([^"]+)"', source.read_text()))
    return routes - LOCAL_ONLY_ROUTES


def route_pattern(route: str) -> re.Pattern:
    """An axum route as a regex over documented paths: `{*rest}` takes any rest, `{id}` one segment."""
    pattern = re.escape(route)
    pattern = re.sub(r"\\\{\\\*[a-z_]+\\\}", r".+", pattern)
    pattern = re.sub(r"\\\{[a-z_]+\\\}", r"[^/]+", pattern)
    return re.compile(f"^{pattern}$")


def test_every_local_route_is_documented_and_every_documented_path_is_routed() -> None:
    documented = set(documented_operations())
    routes = local_server_routes()
    assert routes, f"no .route(...) found in {LOCAL_SERVER_SOURCES}"
    unrouted = {path for path in documented if not any(route_pattern(route).match(path) for route in routes)}
    undocumented = {route for route in routes if not any(route_pattern(route).match(path) for path in documented)}
    assert not unrouted, f"documented paths the local server has no route for: {sorted(unrouted)}"
    assert not undocumented, f"local server routes missing from openapi.json: {sorted(undocumented)}"


@pytest.fixture(scope="module")
def probe(stack, user_factory):
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake_anthropic = start_fake_anthropic(stack.run_dir, name="fake-anthropic-routes")
    stack.extra_apis.append(fake_anthropic)
    api = stack.start_api("api-routes", **proxy_env(key_table, limit_table, fake_anthropic.url))
    tenant_id = f"routes-{uuid.uuid4().hex[:8]}"
    name, password = f"routes-admin-{uuid.uuid4().hex[:8]}", generate_password()
    user_factory.users.create_tenant_user(name, f"{name}@example.com", tenant_id, password, admin=True)
    token = user_factory.users.get_id_token(name, password)
    created = requests.post(f"{api.url}/v1/keys", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert created.status_code == 201, created.text
    return api.url, token, tenant_id, created.json()


def concrete(path: str, tenant_id: str, key_id: str) -> str:
    return path.replace("{tenant_id}", tenant_id).replace("{id}", key_id).replace("{file}", "app.js")


def test_the_local_server_serves_exactly_the_documented_methods(probe) -> None:
    url, token, tenant_id, key = probe
    mismatches = []
    for path, methods in documented_operations().items():
        for method in HTTP_METHODS:
            # A fresh key per DELETE probe: the documented DELETE must find a key that exists.
            key_id = key["id"]
            if method == "DELETE":
                fresh = requests.post(f"{url}/v1/keys", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                key_id = fresh.json().get("id", key_id)
            headers = {"x-api-key": key["key"], "anthropic-version": "2023-06-01"} if path.startswith("/v1/messages") \
                else {"Authorization": f"Bearer {token}"}
            body = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]} \
                if path.startswith("/v1/messages") else ({"prompt": "hi"} if path == "/bedrock/chat" else None)
            response = requests.request(method, f"{url}{concrete(path, tenant_id, key_id)}", headers=headers,
                                        json=body if method in ("POST", "PUT", "PATCH") else None, timeout=30)
            served = response.status_code not in (404, 405)
            if served != (method in methods):
                mismatches.append(f"{method} {path}: {response.status_code} {response.text[:120]!r} "
                                  f"(documented: {method in methods})")
    assert not mismatches, "the local server and openapi.json disagree:\n" + "\n".join(mismatches)
