"""Where scripts/reconcile and scripts/rebuild-counters read and write: the usage table, the usage log groups
and the export, of the local stack (.local/stack.env) or of the deployed stacks (--aws or BM_STACK=aws).

On AWS the settings come from the CloudFormation outputs of BedrockMeteringStack and MeteringAnalyticsStack,
and from the deployed log processor's own environment (its log groups and export prefix).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack_state  # noqa: E402
from analytics import normalize_prefix  # noqa: E402

APP_STACK_NAME = os.environ.get("BM_STACK_NAME", "BedrockMeteringStack")
ANALYTICS_STACK_NAME = os.environ.get("BM_ANALYTICS_STACK_NAME", "MeteringAnalyticsStack")


class Prerequisite(RuntimeError):
    """Something to set up first; the message says what."""


@dataclass
class Target:
    kind: str  # local or aws
    dynamodb: object
    logs: object
    s3: object
    table: str
    log_groups: list[str]
    bucket: str
    prefix: str
    cache_dir: Path


def wants_aws(flag_aws: bool, flag_local: bool) -> bool:
    if flag_aws and flag_local:
        raise Prerequisite("--aws and --local exclude each other")
    if flag_aws or flag_local:
        return flag_aws
    return os.environ.get("BM_STACK", "local").lower() == "aws"


def local_target(table: str | None = None, log_groups: list[str] | None = None, bucket: str | None = None,
                 prefix: str | None = None, cache_dir: Path | None = None) -> Target:
    import boto3
    import requests

    from provision import LOCAL_CREDENTIALS

    state = stack_state.read_state()
    if state is None:
        raise Prerequisite(f"no local stack: {stack_state.state_file()} does not exist. Start one with scripts/dev (or pass --aws).")
    endpoint = state["AWS_ENDPOINT_URL"]
    try:
        requests.get(endpoint + "/moto-api/", timeout=2)
    except requests.RequestException:
        raise Prerequisite(f"the local stack is not running (moto at {endpoint} does not answer); restart it with scripts/dev") from None
    client = lambda service: boto3.client(service, endpoint_url=endpoint, region_name=state["AWS_REGION"], **LOCAL_CREDENTIALS)  # noqa: E731
    bucket = bucket or state["ANALYTICS_BUCKET"]
    prefix = normalize_prefix(prefix if prefix is not None else "logs/")
    return Target(
        kind="local",
        dynamodb=client("dynamodb"),
        logs=client("logs"),
        s3=client("s3"),
        table=table or state["USAGE_TABLE_NAME"],
        log_groups=log_groups or [state["USAGE_LOG_GROUP"]],
        bucket=bucket,
        prefix=prefix,
        cache_dir=cache_dir or stack_state.local_dir() / "analytics" / bucket / prefix,
    )


def aws_session():
    """A boto3 session in AWS_REGION: boto3 itself reads only AWS_DEFAULT_REGION and the profile's region,
    so without this the project's AWS_REGION would be ignored (and the call fail or go to another region)."""
    import boto3

    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        if "127.0.0.1" in os.environ[key] or "localhost" in os.environ[key]:
            del os.environ[key]  # a sourced .local/stack.env must not send --aws to moto
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
    if session.get_credentials() is None or not session.region_name:
        raise Prerequisite("set AWS credentials (AWS_PROFILE...) and AWS_REGION for --aws")
    return session


def aws_target(table: str | None = None, log_groups: list[str] | None = None, bucket: str | None = None,
               prefix: str | None = None, cache_dir: Path | None = None) -> Target:
    from export_logs import Prerequisite as ExportPrerequisite, stack_output

    session = aws_session()
    try:
        table = table or stack_output(session, APP_STACK_NAME, "UsageTableName")
        function = stack_output(session, ANALYTICS_STACK_NAME, "LogProcessorFunctionName")
        bucket = bucket or stack_output(session, ANALYTICS_STACK_NAME, "AnalyticsBucketName")
    except ExportPrerequisite as error:
        raise Prerequisite(str(error)) from None
    # The log groups and prefix the deployed export reads and writes: its own environment says.
    variables = session.client("lambda").get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
    log_groups = log_groups or [g.strip() for g in variables.get("USAGE_LOG_GROUPS", "").split(",") if g.strip()]
    if not log_groups:
        raise Prerequisite(f"{function} has no USAGE_LOG_GROUPS; pass --log-group")
    prefix = normalize_prefix(prefix if prefix is not None else variables.get("LOGS_PREFIX", "logs/"))
    return Target(
        kind="aws",
        dynamodb=session.client("dynamodb"),
        logs=session.client("logs"),
        s3=session.client("s3"),
        table=table,
        log_groups=log_groups,
        bucket=bucket,
        prefix=prefix,
        cache_dir=cache_dir or stack_state.local_dir() / "analytics-aws" / bucket / prefix,
    )
