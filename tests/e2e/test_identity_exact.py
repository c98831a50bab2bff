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


def test_a_case_variant_is_another_tenant_never_acme(api, acme, user_factory, resources):
    """`ACME` is not folded into `acme`: it is refused acme's usage and its own usage is its own."""
    before = counter_sums(resources, acme.tenant_id, "DAY#")
    upper = create_raw_user(user_factory, acme.tenant_id.upper())

    for path in (f"/v1/usage/{acme.tenant_id}", "/v1/usage"):
        assert_error_body(usage(api.url, upper.token, path), 403)
    own = chat(api.url, upper.token, {"prompt": "upper case tenant"})
    assert own.status_code == 200, own.text
    line = wait_usage_line(api, request_id_of(own))
    assert line["tenant_id"] == acme.tenant_id.upper()
    me = usage(api.url, upper.token, "/v1/usage/me")
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == acme.tenant_id.upper()
    assert counter_sums(resources, acme.tenant_id, "DAY#") == before, "acme's counters moved"


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
