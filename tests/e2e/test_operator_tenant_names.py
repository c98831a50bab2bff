"""The operator scripts refuse tenant ids and group names the gateway would not take exactly as written,
before anything is created in Cognito (the "deployed" stack simulated in moto, as in test_operator_scripts)."""
from __future__ import annotations

import uuid

import pytest

from tenant_names import InvalidName, check_group_name, check_tenant_id
from test_operator_scripts import clean_env, deployed_env, run  # noqa: F401  (fixtures)


def _user_exists(resources, username: str) -> bool:
    cognito = resources.client("cognito-idp")
    try:
        cognito.admin_get_user(UserPoolId=resources.user_pool_id, Username=username)
        return True
    except cognito.exceptions.UserNotFoundException:
        return False


@pytest.mark.parametrize("tenant_id", ["acme ", " acme", "acme\t", "ac me", "a#DAY#b", "a,b", "", "x" * 129, "ａcme"])
def test_create_tenant_user_refuses_an_inexact_tenant_id(resources, deployed_env, tenant_id):
    username = f"dan-{uuid.uuid4().hex[:6]}"

    result = run("create-tenant-user", username, f"{username}@example.com", tenant_id, "--aws", env=deployed_env)

    assert result.returncode != 0, result.stdout
    assert "is not valid" in result.stderr, result.stderr
    assert not _user_exists(resources, username), "the user was created anyway"


def test_create_tenant_user_refuses_a_case_variant_of_an_existing_tenant(resources, deployed_env):
    tenant_id = f"Case{uuid.uuid4().hex[:6]}"
    first = f"erin-{uuid.uuid4().hex[:6]}"
    created = run("create-tenant-user", first, f"{first}@example.com", tenant_id, "--aws", env=deployed_env)
    assert created.returncode == 0, created.stderr

    second = f"finn-{uuid.uuid4().hex[:6]}"
    refused = run("create-tenant-user", second, f"{second}@example.com", tenant_id.lower(), "--aws", env=deployed_env)

    assert refused.returncode != 0, refused.stdout
    assert "differs only by case" in refused.stderr, refused.stderr
    assert not _user_exists(resources, second)
    same = run("create-tenant-user", second, f"{second}@example.com", tenant_id, "--aws", env=deployed_env)
    assert same.returncode == 0, same.stderr


def _registry_owner(resources, tenant_id: str) -> str | None:
    key = {"pk": {"S": f"TENANT_ID#{tenant_id.lower()}"}, "sk": {"S": "TENANT_ID"}}
    item = resources.client("dynamodb").get_item(TableName=resources.usage_table, Key=key, ConsistentRead=True).get("Item")
    return item["tenant_id"]["S"] if item else None


def test_create_tenant_user_registers_the_tenant_id_in_the_gateways_registry(resources, deployed_env):
    tenant_id = f"Reg{uuid.uuid4().hex[:6]}"
    username = f"gail-{uuid.uuid4().hex[:6]}"

    created = run("create-tenant-user", username, f"{username}@example.com", tenant_id, "--aws", env=deployed_env)

    assert created.returncode == 0, created.stderr
    assert _registry_owner(resources, tenant_id) == tenant_id


def test_create_tenant_user_refuses_a_case_variant_of_a_tenant_registered_by_the_gateway(resources, deployed_env):
    """The name is registered (as the gateway does at a tenant's first request) but no Cognito user holds it
    any more: the registry alone refuses the look-alike."""
    tenant_id = f"Gone{uuid.uuid4().hex[:6]}"
    resources.client("dynamodb").put_item(
        TableName=resources.usage_table,
        Item={"pk": {"S": f"TENANT_ID#{tenant_id.lower()}"}, "sk": {"S": "TENANT_ID"}, "tenant_id": {"S": tenant_id}},
    )
    username = f"hugo-{uuid.uuid4().hex[:6]}"

    refused = run("create-tenant-user", username, f"{username}@example.com", tenant_id.upper(), "--aws", env=deployed_env)

    assert refused.returncode != 0, refused.stdout
    assert "differs only by case" in refused.stderr and repr(tenant_id) in refused.stderr, refused.stderr
    assert not _user_exists(resources, username)
    assert _registry_owner(resources, tenant_id) == tenant_id, "the owner is unchanged"
    same = run("create-tenant-user", username, f"{username}@example.com", tenant_id, "--aws", env=deployed_env)
    assert same.returncode == 0, same.stderr


def test_the_name_rules_match_the_gateways():
    for good in ["acme", "ACME", "t-1_2.3", "x" * 128]:
        assert check_tenant_id(good) == good
    for bad in ["acme\n", "acme "]:
        with pytest.raises(InvalidName):
            check_tenant_id(bad)
    for good in ["admin", "Admin", "support-team", "équipe"]:
        assert check_group_name(good) == good
    for bad in ["support,admin", "[admin]", " admin", "admin ", "a b", "a\tb", ""]:
        with pytest.raises(InvalidName):
            check_group_name(bad)
