"""Where the operator scripts point: the local stack (.local/stack.env) or the deployed stack on AWS.

AWS is chosen by `--aws` or BM_STACK=aws; its settings come from the CloudFormation outputs of
BedrockMeteringStack (UserPoolId, UserPoolClientId, ApiGatewayUrl), read with the caller's credentials.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack_state  # noqa: E402
from provision import LOCAL_CREDENTIALS  # noqa: E402

APP_STACK_NAME = os.environ.get("BM_STACK_NAME", "BedrockMeteringStack")


class TargetError(RuntimeError):
    """A prerequisite is missing; the message says how to fix it."""


@dataclass
class Target:
    kind: str  # "local" or "aws"
    region: str
    user_pool_id: str
    client_id: str
    api_url: str
    cognito: object  # boto3 cognito-idp client
    dynamodb: object = None  # boto3 dynamodb client (the tenant registry in the usage table)
    usage_table: str | None = None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def chat_url(self) -> str:
        return self.api_url.rstrip("/") + "/bedrock/chat"


def wants_aws(flag_aws: bool, flag_local: bool) -> bool:
    if flag_aws and flag_local:
        raise TargetError("--aws and --local exclude each other")
    if flag_aws or flag_local:
        return flag_aws
    return os.environ.get("BM_STACK", "local").lower() == "aws"


def resolve(use_aws: bool) -> Target:
    return aws_target() if use_aws else local_target()


def local_target() -> Target:
    state = stack_state.read_state()
    if state is None:
        raise TargetError(
            f"no local stack: {stack_state.state_file()} does not exist. Start one with scripts/dev "
            "(or pass --aws / set BM_STACK=aws for the deployed stack)."
        )
    endpoint = state["AWS_ENDPOINT_URL"]
    try:
        requests.get(endpoint + "/moto-api/", timeout=2)
    except requests.RequestException:
        raise TargetError(
            f"the local stack in {stack_state.state_file()} is not running (moto at {endpoint} does not answer). "
            "Restart it with scripts/dev."
        ) from None
    cognito = boto3.client("cognito-idp", endpoint_url=endpoint, region_name=state["AWS_REGION"], **LOCAL_CREDENTIALS)
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=state["AWS_REGION"], **LOCAL_CREDENTIALS)
    return Target(
        "local", state["AWS_REGION"], state["USER_POOL_ID"], state["USER_POOL_CLIENT_ID"], state["API_URL"], cognito,
        dynamodb, state.get("USAGE_TABLE_NAME"),
    )


def _forget_sourced_local_stack() -> None:
    """A shell that exported .local/stack.env (`set -a; source ...`, as the README shows) carries BM_STACK=local,
    moto's endpoint and dummy keys; with --aws those would send boto3 to moto or fail with odd errors."""
    if os.environ.get("BM_STACK") != "local":
        return
    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        print(f"note: --aws ignores {key}={os.environ.pop(key)} (exported from .local/stack.env)", file=sys.stderr)
    if os.environ.get("AWS_ACCESS_KEY_ID") == "testing":
        print("note: --aws ignores the local stack's dummy AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", file=sys.stderr)
        os.environ.pop("AWS_ACCESS_KEY_ID", None)
        os.environ.pop("AWS_SECRET_ACCESS_KEY", None)


def aws_target() -> Target:
    _forget_sourced_local_stack()
    # boto3 reads AWS_DEFAULT_REGION and the profile's region, not AWS_REGION (which the project uses).
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
    if session.get_credentials() is None:
        raise TargetError(
            "no AWS credentials found: set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    region = session.region_name
    if not region:
        raise TargetError(f"no AWS region: set AWS_REGION (the region {APP_STACK_NAME} is deployed in)")
    cloudformation = session.client("cloudformation")
    try:
        stack = cloudformation.describe_stacks(StackName=APP_STACK_NAME)["Stacks"][0]
    except ClientError as error:
        raise TargetError(
            f"cannot read stack {APP_STACK_NAME} in {region}: {error.response['Error'].get('Message', error)} "
            "(deploy it with scripts/deploy, or check AWS_REGION/AWS_PROFILE)"
        ) from None
    except BotoCoreError as error:  # credentials that do not work, no network...
        raise TargetError(f"cannot reach CloudFormation in {region}: {error}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [k for k in ("UserPoolId", "UserPoolClientId", "ApiGatewayUrl") if k not in outputs]
    if missing:
        raise TargetError(f"stack {APP_STACK_NAME} has no output(s) {', '.join(missing)}; is it fully deployed?")
    return Target(
        "aws", region, outputs["UserPoolId"], outputs["UserPoolClientId"], outputs["ApiGatewayUrl"], session.client("cognito-idp"),
        session.client("dynamodb"), outputs.get("UsageTableName"),
    )
