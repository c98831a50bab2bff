"""The exact forms of tenant ids and group names, checked before anything is created in Cognito.

The gateway uses both exactly as they are (crates/metering-core/src/identity.rs): nothing is trimmed or
case-folded, so an id or a name that could be read two ways is refused here, where it would be created.

- A tenant id is `[A-Za-z0-9._-]{1,128}`, as it is (it becomes part of DynamoDB keys and S3 rows).
- A group name may not contain `,`: API Gateway's REST Cognito authorizer hands `cognito:groups` to the
  Lambda as the names joined by `,` (`"admin"`, `"admin,ops"`), so a group named `support,admin` would read
  as membership of `admin`. Whitespace and `[` `]` are refused too (the HTTP API's form is `"[admin ops]"`).
"""
from __future__ import annotations

import re

TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
GROUP_NAME_FORBIDDEN = re.compile(r"[,\[\]\s]")


class InvalidName(ValueError):
    pass


def check_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or TENANT_ID.fullmatch(tenant_id) is None:
        raise InvalidName(
            f"tenant id {tenant_id!r} is not valid: use 1 to 128 of A-Z a-z 0-9 . _ - (no spaces, taken exactly as written)"
        )
    return tenant_id


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 128 or GROUP_NAME_FORBIDDEN.search(name):
        raise InvalidName(
            f"group name {name!r} is not valid: 1 to 128 characters without ',', '[', ']' or whitespace "
            "(API Gateway joins a user's groups with ',')"
        )
    return name


# ------------------------------------------------------------------ the tenant registry

# The gateway's registry (crates/metering-core/src/tenant_registry.rs): every tenant id recorded in the usage
# table under its ASCII-lowercased name, first seen wins. A tenant id whose name is registered to another exact
# id (`ACME` when `acme` exists) is refused by the gateway on every route, so the scripts refuse to create it.
REGISTRY_PARTITION_PREFIX = "TENANT_ID#"
REGISTRY_SORT_KEY = "TENANT_ID"


class TenantIdCollision(ValueError):
    def __init__(self, tenant_id: str, registered: str):
        super().__init__(
            f"tenant id {tenant_id!r} differs only by case from existing tenant {registered!r}: tenant ids are exact, "
            "and the gateway refuses a second tenant under the same name; use the existing id or a clearly different one"
        )
        self.tenant_id = tenant_id
        self.registered = registered


def registry_key(tenant_id: str) -> dict:
    """The DynamoDB key of the registry item of `tenant_id`'s name (ASCII lowercase, as the gateway's)."""
    name = check_tenant_id(tenant_id).lower()  # the id is ASCII, so this is the gateway's to_ascii_lowercase
    return {"pk": {"S": REGISTRY_PARTITION_PREFIX + name}, "sk": {"S": REGISTRY_SORT_KEY}}


def register_tenant(dynamodb, table: str, tenant_id: str) -> str:
    """Register `tenant_id` as the gateway does (conditional put, first seen wins) and return it; raise
    TenantIdCollision when its name is registered to another exact id."""
    key = registry_key(tenant_id)
    item = {**key, "tenant_id": {"S": tenant_id}, "registered_at": {"S": _now()}, "registered_by": {"S": "operator"}}
    try:
        dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        return tenant_id
    except dynamodb.exceptions.ConditionalCheckFailedException:
        pass
    owner = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["tenant_id"]["S"]
    if owner != tenant_id:
        raise TenantIdCollision(tenant_id, owner)
    return owner


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()
