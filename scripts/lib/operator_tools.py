#!/usr/bin/env python3
"""Operator commands: scripts/create-tenant-user, scripts/get-token, scripts/chat, scripts/usage.

They work against the local stack (.local/stack.env, written by scripts/dev) by default, and against the
deployed stack with --aws or BM_STACK=aws.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

import stack_state  # noqa: E402
from provision import CognitoUsers, generate_password  # noqa: E402
from targets import Target, TargetError, resolve, wants_aws  # noqa: E402
from tenant_names import InvalidName, TenantIdCollision, check_tenant_id  # noqa: E402

DEFAULT_USER = "demo-user"


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--aws", action="store_true", help="use the deployed stack (also: BM_STACK=aws)")
    group.add_argument("--local", action="store_true", help="use the local stack even if BM_STACK=aws")


def _users(target: Target) -> CognitoUsers:
    return CognitoUsers(target.cognito, target.user_pool_id, target.client_id)


def _registering_users(target: Target) -> CognitoUsers:
    """Users whose tenant ids are registered in the gateway's tenant registry (the usage table) first."""
    if not target.usage_table:
        where = "USAGE_TABLE_NAME in .local/stack.env" if target.is_local else f"output UsageTableName of {target.kind} stack"
        raise TargetError(f"no usage table to register the tenant in ({where} is missing); redeploy or restart the stack")
    return CognitoUsers(target.cognito, target.user_pool_id, target.client_id, registry=(target.dynamodb, target.usage_table))


def _password_for(target: Target, username: str, given: str | None) -> str:
    """--password, then $BM_PASSWORD, then the local password store, then a prompt on a terminal."""
    if given:
        return given
    if os.environ.get("BM_PASSWORD"):
        return os.environ["BM_PASSWORD"]
    if target.is_local:
        stored = stack_state.PasswordStore().get(username)
        if stored:
            return stored
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {username}: ")
    where = "" if not target.is_local else f" and none is stored in {stack_state.PasswordStore().path}"
    raise TargetError(f"no password for {username}: pass --password or set BM_PASSWORD{where}")


def _id_token(target: Target, username: str, password: str | None) -> str:
    password = _password_for(target, username, password)
    try:
        return _users(target).get_id_token(username, password)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("NotAuthorizedException", "UserNotFoundException"):
            raise TargetError(f"sign-in of {username} refused: wrong username or password ({code})") from None
        raise


def create_tenant_user(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/create-tenant-user",
        description="Create a confirmed Cognito user bound to a tenant (custom:tenant_id, immutable), with a "
        "permanent password. The tenant id is registered in the gateway's tenant registry (the usage table) first; "
        "an id that differs only by case from a registered or existing one (ACME when acme exists) is refused. "
        "Locally the password is kept in .local/users.json for get-token/chat; "
        "on AWS it is printed once and not stored.",
    )
    parser.add_argument("username")
    parser.add_argument("email")
    parser.add_argument("tenant_id", help="1 to 128 of A-Z a-z 0-9 . _ -, used exactly as written")
    parser.add_argument("--admin", action="store_true", help="add the user to the `admin` group")
    parser.add_argument("--password", help="the password (default: a generated strong one)")
    _add_target_flags(parser)
    args = parser.parse_args(argv)

    try:
        check_tenant_id(args.tenant_id)
    except InvalidName as error:
        parser.error(str(error))
    target = resolve(wants_aws(args.aws, args.local))
    look_alikes = sorted(
        existing for existing in _users(target).tenant_ids()
        if existing != args.tenant_id and existing.casefold() == args.tenant_id.casefold()
    )
    if look_alikes:
        raise TargetError(
            f"tenant id {args.tenant_id!r} differs only by case from existing tenant {look_alikes[0]!r}: tenant ids "
            "are exact, so this would be another tenant; use the existing id or a clearly different one"
        )
    password = args.password or generate_password()
    try:
        sub = _registering_users(target).create_tenant_user(args.username, args.email, args.tenant_id, password, admin=args.admin)
    except TenantIdCollision as error:
        raise TargetError(str(error)) from None
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code == "UsernameExistsException":
            raise TargetError(f"user {args.username} already exists in pool {target.user_pool_id}") from None
        if code == "InvalidPasswordException":
            raise TargetError(f"password refused by the pool's policy: {error.response['Error'].get('Message')}") from None
        raise
    print(f"created {args.username} (sub {sub}) in tenant {args.tenant_id}{' [admin]' if args.admin else ''} "
          f"in {target.kind} pool {target.user_pool_id}")
    if target.is_local:
        stack_state.PasswordStore().put(args.username, password)
        print(f"password stored in {stack_state.PasswordStore().path}")
    elif not args.password:
        print(f"password (shown once, not stored): {password}")
    return 0


def get_token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/get-token",
        description="Print a Cognito IdToken (USER_PASSWORD_AUTH) for a user, e.g. "
        'TOKEN=$(scripts/get-token demo-user). Password: --password, $BM_PASSWORD, the local password store, '
        "or a prompt.",
    )
    parser.add_argument("username", nargs="?", default=DEFAULT_USER, help=f"default: {DEFAULT_USER}")
    parser.add_argument("--password")
    _add_target_flags(parser)
    args = parser.parse_args(argv)
    target = resolve(wants_aws(args.aws, args.local))
    print(_id_token(target, args.username, args.password))
    return 0


def chat(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chat",
        description="Sign in as a user and POST a prompt to /bedrock/chat; prints the model's answer.",
    )
    parser.add_argument("prompt")
    parser.add_argument("--user", default=DEFAULT_USER, help=f"default: {DEFAULT_USER}")
    parser.add_argument("--password")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--json", action="store_true", help="print the JSON body instead of the bare text")
    _add_target_flags(parser)
    args = parser.parse_args(argv)

    target = resolve(wants_aws(args.aws, args.local))
    token = _id_token(target, args.user, args.password)
    body: dict = {"prompt": args.prompt}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    try:
        response = requests.post(
            target.chat_url(), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
    except requests.RequestException as error:
        raise TargetError(f"cannot reach {target.chat_url()}: {error}") from None
    request_id = response.headers.get("x-request-id", "-")
    if response.status_code != 200:
        print(f"HTTP {response.status_code} (request {request_id}): {response.text}", file=sys.stderr)
        return 1
    print(response.text if args.json else response.json()["response"])
    print(f"(request {request_id})", file=sys.stderr)
    return 0


def usage(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/usage",
        description="Sign in as a user and read usage from the usage API: `me` (the user's tenant, default), "
        "a tenant id (own tenant, or any for the admin group), or `all` (every tenant; admin group only).",
    )
    parser.add_argument("scope", nargs="?", default="me", help="me (default), a tenant id, or all")
    parser.add_argument("--days", type=int, default=7, help="the last N UTC days, 1 to 366 (default 7)")
    parser.add_argument("--request-type", choices=["bedrock", "anthropic"], help="only this kind of request")
    parser.add_argument("--limit", type=int, help="with `all`: tenants per page")
    parser.add_argument("--user", default=DEFAULT_USER, help=f"who signs in (default: {DEFAULT_USER})")
    parser.add_argument("--password")
    _add_target_flags(parser)
    args = parser.parse_args(argv)

    target = resolve(wants_aws(args.aws, args.local))
    token = _id_token(target, args.user, args.password)
    base = target.chat_url().rsplit("/bedrock/chat", 1)[0]
    path = {"me": "/v1/usage/me", "all": "/v1/usage"}.get(args.scope)
    if path is None:
        path = "/v1/usage/" + requests.utils.quote(args.scope, safe="")
    params: dict = {"days": args.days}
    if args.request_type:
        params["request_type"] = args.request_type
    if args.limit is not None:
        params["limit"] = args.limit
    try:
        response = requests.get(base + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except requests.RequestException as error:
        raise TargetError(f"cannot reach {base + path}: {error}") from None
    if response.status_code != 200:
        print(f"HTTP {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0


COMMANDS = {"create-tenant-user": create_tenant_user, "get-token": get_token, "chat": chat, "usage": usage}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: operator_tools.py {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except TargetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as error:
        print(f"error: AWS call failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
