"""Identity is exact: with real IdTokens from the local Cognito (moto), a tenant id or a group name that is
*almost* another one never becomes it.

Users are created straight through boto3 here (Cognito accepts `"acme "` and a group named `support,admin`;
the project's scripts refuse them, see test_operator_tenant_names.py) and sign in normally: the tokens are
real, signed by moto, and carry the odd values exactly as an attacker with a sloppy operator would get them.
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from provision import ADMIN_GROUP, TENANT_ATTRIBUTE, generate_password
from proxy_stack import create_proxy_tables, proxy_env, start_fake_anthropic
from support import TenantUser, assert_error_body, chat, counter_items, counter_sums, fake_reply, request_id_of, wait_usage_line


def create_raw_user(user_factory, tenant_id: str | None, groups: tuple[str, ...] = (), prefix: str = "odd") -> TenantUser:
    """A user made directly in Cognito (no project-side checks), with a real IdToken."""
    users = user_factory.users
    username = f"{prefix}-{uuid.uuid4().hex[:10]}"
    password = generate_password()
    attributes = [{"Name": "email", "Value": f"{username}@example.com"}]
    if tenant_id is not None:
        attributes.append({"Name": TENANT_ATTRIBUTE, "Value": tenant_id})
    user = users.cognito.admin_create_user(
        UserPoolId=users.user_pool_id, Username=username, UserAttributes=attributes, MessageAction="SUPPRESS"
    )["User"]
    users.cognito.admin_set_user_password(UserPoolId=users.user_pool_id, Username=username, Password=password, Permanent=True)
    for group in groups:
        users.cognito.admin_add_user_to_group(UserPoolId=users.user_pool_id, Username=username, GroupName=group)
    sub = next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub")
    return TenantUser(username, tenant_id, password, sub, users.get_id_token(username, password))


def ensure_group(user_factory, name: str) -> str:
    cognito = user_factory.users.cognito
    try:
        cognito.create_group(GroupName=name, UserPoolId=user_factory.users.user_pool_id)
    except cognito.exceptions.GroupExistsException:
        pass
    return name


@pytest.fixture(scope="module")
def api(stack):
    """The local API with the proxy's routes on (`/v1/keys*`, `/v1/messages`) besides chat and usage."""
    key_table, limit_table = create_proxy_tables(stack.resources)
    fake = start_fake_anthropic(stack.run_dir, name="fake-anthropic-identity")
    stack.extra_apis.append(fake)
    return stack.start_api("api-identity", **proxy_env(key_table, limit_table, fake.url))


@pytest.fixture(scope="module")
def acme(api, user_factory):
    """A real tenant with usage: the victim every odd identity below tries to become."""
    tenant_id = f"acme{uuid.uuid4().hex[:8]}"
    user = user_factory.create(tenant_id, prefix="acme")
    response = chat(api.url, user.token, {"prompt": "acme's own request"})
    assert response.status_code == 200, response.text
    wait_usage_line(api, request_id_of(response))
    return user


def usage(api_url: str, token: str, path: str) -> requests.Response:
    return requests.get(f"{api_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def create_key(api_url: str, token: str) -> requests.Response:
    return requests.post(f"{api_url}/v1/keys", json={"name": "laptop"}, headers={"Authorization": f"Bearer {token}"}, timeout=30)


NEAR_MISSES = {
    "trailing space": lambda t: f"{t} ",
    "leading space": lambda t: f" {t}",
    "trailing tab": lambda t: f"{t}\t",
}


@pytest.mark.parametrize("case", list(NEAR_MISSES))
def test_a_whitespace_variant_of_a_tenant_is_refused_on_every_route(api, acme, user_factory, resources, case):
    before = counter_sums(resources, acme.tenant_id, "DAY#")
    odd = create_raw_user(user_factory, NEAR_MISSES[case](acme.tenant_id))

    answers = {
        "chat": chat(api.url, odd.token, {"prompt": "bill this to acme"}),
        "usage/me": usage(api.url, odd.token, "/v1/usage/me"),
        "usage/acme": usage(api.url, odd.token, f"/v1/usage/{acme.tenant_id}"),
        "usage (all)": usage(api.url, odd.token, "/v1/usage"),
        "keys (create)": create_key(api.url, odd.token),
        "keys (list)": usage(api.url, odd.token, "/v1/keys"),
    }

    for route, response in answers.items():
        assert response.status_code == 403, f"{route}: {response.status_code} {response.text}"
        assert acme.tenant_id not in response.text, f"{route} leaks acme: {response.text}"
        body = response.json()
        assert body["error"]["type"] == "permission_error", (route, body)
    assert_error_body(answers["chat"], 403)
    time.sleep(0.3)
    assert counter_sums(resources, acme.tenant_id, "DAY#") == before, "acme's counters moved"
    assert counter_items(resources, odd.tenant_id, "DAY#") == [], "the odd tenant was metered"


def every_route(api_url: str, token: str, victim: str) -> dict[str, requests.Response]:
    """One answer per claims-authenticated route, asked with `token` (victim: the tenant it must not reach)."""
    return {
        "chat": chat(api_url, token, {"prompt": f"bill this to {victim}"}),
        "usage/me": usage(api_url, token, "/v1/usage/me"),
        "usage/victim": usage(api_url, token, f"/v1/usage/{victim}"),
        "usage (all)": usage(api_url, token, "/v1/usage"),
        "keys (create)": create_key(api_url, token),
        "keys (list)": usage(api_url, token, "/v1/keys"),
        "keys (revoke)": requests.delete(f"{api_url}/v1/keys/bmk_0000000000000000", headers={"Authorization": f"Bearer {token}"}, timeout=30),
    }


def assert_refused_everywhere(answers: dict[str, requests.Response], *never_shown: str) -> None:
    for route, response in answers.items():
        assert response.status_code == 403, f"{route}: {response.status_code} {response.text}"
        assert response.json()["error"]["type"] == "permission_error", (route, response.text)
        for text in never_shown:
            assert text not in response.text, f"{route} names {text}: {response.text}"


def messages(api_url: str, key: str, prompt: str) -> requests.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": prompt}]}
    return requests.post(f"{api_url}/v1/messages", json=body, headers=headers, timeout=30)


def registry_item(resources, tenant_id: str) -> dict | None:
    key = {"pk": {"S": f"TENANT_ID#{tenant_id.lower()}"}, "sk": {"S": "TENANT_ID"}}
    return resources.client("dynamodb").get_item(TableName=resources.usage_table, Key=key, ConsistentRead=True).get("Item")


def test_a_case_variant_of_an_existing_tenant_is_refused_on_every_route(api, acme, user_factory, resources):
    """`ACME` when `acme` exists: not folded into acme, and not a second tenant beside it either."""
    before = counter_sums(resources, acme.tenant_id, "DAY#")
    upper = create_raw_user(user_factory, acme.tenant_id.upper())

    assert_refused_everywhere(every_route(api.url, upper.token, acme.tenant_id), acme.tenant_id)
    # /v1/messages takes a gateway key, bound at creation to an admitted tenant: ACME got none above, and
    # acme's own key still answers (as acme).
    acme_key = create_key(api.url, acme.token)
    assert acme_key.status_code == 201, acme_key.text
    assert messages(api.url, acme_key.json()["key"], "acme through the proxy").status_code == 200

    time.sleep(0.3)
    assert counter_sums(resources, acme.tenant_id, "DAY#").get("request_count", 0) == before.get("request_count", 0) + 1, \
        "acme's counters moved by more than acme's own proxy call"
    assert counter_items(resources, upper.tenant_id, "DAY#") == [], "ACME was metered"
    assert registry_item(resources, acme.tenant_id)["tenant_id"]["S"] == acme.tenant_id, "acme owns the name"


def test_the_first_seen_case_wins_the_other_way_round_too(api, user_factory, resources):
    """Symmetry: when `ZED` is registered first, `zed` is the one refused."""
    tenant_id = f"ZED{uuid.uuid4().hex[:8].upper()}"
    first = create_raw_user(user_factory, tenant_id, prefix="zed")
    response = chat(api.url, first.token, {"prompt": "ZED registers its name"})
    assert response.status_code == 200, response.text
    assert registry_item(resources, tenant_id)["tenant_id"]["S"] == tenant_id
    lower = create_raw_user(user_factory, tenant_id.lower(), prefix="zed")

    assert_refused_everywhere(every_route(api.url, lower.token, tenant_id), tenant_id)
    time.sleep(0.3)
    assert counter_items(resources, tenant_id.lower(), "DAY#") == [], "zed was metered"
    assert usage(api.url, first.token, "/v1/usage/me").status_code == 200, "the owner is unaffected"


def test_different_tenants_with_similar_names_are_unaffected(api, acme, user_factory):
    """Only a case variant collides: `acme-2`, `acme.x` and `Xacme` are tenants of their own."""
    for tenant_id in (f"{acme.tenant_id}-2", f"{acme.tenant_id}.x", f"X{acme.tenant_id}"):
        user = create_raw_user(user_factory, tenant_id, prefix="near")
        answers = every_route(api.url, user.token, acme.tenant_id)
        assert answers["chat"].status_code == 200, answers["chat"].text
        assert answers["usage/me"].status_code == 200 and answers["usage/me"].json()["tenant_id"] == tenant_id
        assert answers["usage/victim"].status_code == 403, "still not acme's usage"
        assert answers["keys (create)"].status_code == 201, answers["keys (create)"].text
        assert answers["keys (list)"].status_code == 200


def test_registry_items_never_show_in_a_usage_answer(api, acme, user_factory, resources):
    admin = create_raw_user(user_factory, f"reg{uuid.uuid4().hex[:8]}", groups=(ADMIN_GROUP,))
    assert chat(api.url, admin.token, {"prompt": "register the admin's tenant too"}).status_code == 200
    assert registry_item(resources, admin.tenant_id) is not None and registry_item(resources, acme.tenant_id) is not None

    answers = [
        usage(api.url, admin.token, "/v1/usage"),
        usage(api.url, admin.token, f"/v1/usage/{acme.tenant_id}"),
        usage(api.url, acme.token, "/v1/usage/me"),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        for registry_text in ("TENANT_ID", "registered_at", "registered_by"):
            assert registry_text not in response.text, f"{response.url}: {response.text}"


ODD_GROUPS = ["support,admin", "[admin]", " admin", "Admin"]


@pytest.mark.parametrize("group", ODD_GROUPS)
def test_members_of_a_look_alike_group_are_not_admins(api, acme, user_factory, group):
    member = create_raw_user(user_factory, f"grp{uuid.uuid4().hex[:8]}", groups=(ensure_group(user_factory, group),))

    for path in ("/v1/usage", f"/v1/usage/{acme.tenant_id}"):
        response = usage(api.url, member.token, path)
        assert response.status_code in (401, 403), f"{group!r} reads {path}: {response.status_code} {response.text}"
        assert_error_body(response, response.status_code)
        assert acme.tenant_id not in response.text


def test_a_comma_in_a_group_name_makes_the_token_unacceptable(api, user_factory):
    """API Gateway would hand `support,admin` on as two groups; the local authorizer refuses the token."""
    member = create_raw_user(user_factory, f"grp{uuid.uuid4().hex[:8]}", groups=(ensure_group(user_factory, "support,admin"),))
    error = assert_error_body(usage(api.url, member.token, "/v1/usage/me"), 401)
    assert error["message"] == "Unauthorized: the token was not accepted"


def test_the_real_admin_group_still_is_admin(api, acme, user_factory):
    """Control: without it the refusals above could come from a broken admin check."""
    admin = create_raw_user(user_factory, f"ops{uuid.uuid4().hex[:8]}", groups=(ADMIN_GROUP, ensure_group(user_factory, "ops")))
    assert usage(api.url, admin.token, f"/v1/usage/{acme.tenant_id}").status_code == 200
    assert usage(api.url, admin.token, "/v1/usage").status_code == 200


def test_an_exact_tenant_still_works(api, acme):
    """Control: acme itself chats and reads its usage."""
    response = chat(api.url, acme.token, {"prompt": "acme again"})
    assert response.status_code == 200 and response.json() == {"response": fake_reply("acme again")}
    assert usage(api.url, acme.token, "/v1/usage/me").status_code == 200


def test_an_unanswerable_registry_fails_closed_with_retry_after(stack, user_factory):
    """DynamoDB unreachable (connection refused) for a tenant this process has not confirmed yet: refused, with
    the overload status and Retry-After, never admitted unchecked and never a 500."""
    from processes import closed_port

    down = stack.start_api("api-registry-down", AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{closed_port()}")
    user = user_factory.create(f"down{uuid.uuid4().hex[:8]}", prefix="down")

    answers = {
        "chat": chat(down.url, user.token, {"prompt": "no registry, no answer"}),
        "usage/me": usage(down.url, user.token, "/v1/usage/me"),
    }
    for route, response in answers.items():
        error = assert_error_body(response, 503)
        assert error["type"] == "overloaded_error", (route, error)
        assert response.headers.get("Retry-After") == "2", (route, response.headers)
        for internal in ("127.0.0.1", "DispatchFailure", "dispatch", "os error"):
            assert internal not in response.text, (route, response.text)
