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
