"""The AWS resources of the local stack, created with boto3 in moto, and the Cognito user helpers.

The same CognitoUsers helpers work against a real user pool (operator scripts with --aws): only the
boto3 client differs.
"""
from __future__ import annotations

import secrets
import string
from dataclasses import asdict, dataclass

import boto3

from tenant_names import check_group_name, check_tenant_id, register_tenant

DEFAULT_REGION = "us-east-1"
DEFAULT_MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
USAGE_LOG_GROUP = "/aws/lambda/bedrock-metering-chat"
ADMIN_GROUP = "admin"
TENANT_ATTRIBUTE = "custom:tenant_id"
# moto accepts any credentials; fixed dummies keep the local stack away from real ones.
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class LocalResources:
    """What provision() created in moto: everything a process needs to talk to it."""

    endpoint_url: str
    region: str
    usage_table: str
    analytics_bucket: str
    usage_log_group: str
    user_pool_id: str
    user_pool_client_id: str

    @property
    def issuer(self) -> str:
        # moto signs the real AWS form of the issuer, not its own address (TOOLCHAIN-NOTES).
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint_url}/{self.user_pool_id}/.well-known/jwks.json"

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region, **LOCAL_CREDENTIALS)

    def to_dict(self) -> dict:
        return asdict(self)


def provision(endpoint_url: str, region: str = DEFAULT_REGION, suffix: str = "local") -> LocalResources:
    """Create the usage table, analytics bucket, usage log group and Cognito pool/client/admin group."""

    def client(service: str):
        return boto3.client(service, endpoint_url=endpoint_url, region_name=region, **LOCAL_CREDENTIALS)

    table = f"bedrock-metering-usage-{suffix}"
    dynamodb = client("dynamodb")
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})

    bucket = f"bedrock-metering-analytics-{suffix}"
    s3 = client("s3")
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

    client("logs").create_log_group(logGroupName=USAGE_LOG_GROUP)

    cognito = client("cognito-idp")
    pool_id = cognito.create_user_pool(
        PoolName=f"bedrock-metering-{suffix}",
        Schema=[
            {
                "Name": "tenant_id",
                "AttributeDataType": "String",
                "Mutable": False,
                "StringAttributeConstraints": {"MinLength": "1", "MaxLength": "128"},
            }
        ],
        Policies={
            "PasswordPolicy": {
                "MinimumLength": 12,
                "RequireUppercase": True,
                "RequireLowercase": True,
                "RequireNumbers": True,
                "RequireSymbols": True,
            }
        },
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
    )["UserPool"]["Id"]
    client_id = create_app_client(cognito, pool_id, f"bedrock-metering-{suffix}-web")
    cognito.create_group(GroupName=check_group_name(ADMIN_GROUP), UserPoolId=pool_id, Description="Sees every tenant's usage")

    return LocalResources(
        endpoint_url=endpoint_url,
        region=region,
        usage_table=table,
        analytics_bucket=bucket,
        usage_log_group=USAGE_LOG_GROUP,
        user_pool_id=pool_id,
        user_pool_client_id=client_id,
    )


def create_app_client(cognito, pool_id: str, name: str) -> str:
    """A public app client (no secret) for password sign-in and refresh."""
    return cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=name,
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH"],
    )["UserPoolClient"]["ClientId"]


def generate_password(length: int = 24) -> str:
    """A password satisfying the pool policy (upper, lower, digit, symbol)."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(length - 4))
    required = [
        secrets.choice(string.ascii_uppercase),
        secrets.choice(string.ascii_lowercase),
        secrets.choice(string.digits),
        secrets.choice("!#%+-=_"),
    ]
    return body + "".join(required)


class CognitoUsers:
    """Tenant users of one user pool (moto or AWS)."""

    def __init__(self, cognito, user_pool_id: str, client_id: str, registry: tuple[object, str] | None = None):
        """registry: (DynamoDB client, usage table) of the tenant registry; when given, every tenant id is
        registered before its user is created, and one that differs only by case from a registered id is
        refused (tenant_names.TenantIdCollision)."""
        self.cognito = cognito
        self.user_pool_id = user_pool_id
        self.client_id = client_id
        self.registry = registry

    def create_tenant_user(
        self, username: str, email: str, tenant_id: str | None, password: str, admin: bool = False
    ) -> str:
        """Create a confirmed user with a permanent password; returns the user's `sub`.

        tenant_id=None creates a user without custom:tenant_id (tests of the 403 path). The tenant id is
        checked first (tenant_names.check_tenant_id): Cognito would store `"acme "` as it is."""
        if tenant_id is not None:
            check_tenant_id(tenant_id)
            if self.registry is not None:
                register_tenant(*self.registry, tenant_id)
        attributes = [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
        if tenant_id is not None:
            attributes.append({"Name": TENANT_ATTRIBUTE, "Value": tenant_id})
        user = self.cognito.admin_create_user(
            UserPoolId=self.user_pool_id,
            Username=username,
            UserAttributes=attributes,
            MessageAction="SUPPRESS",
        )["User"]
        self.cognito.admin_set_user_password(
            UserPoolId=self.user_pool_id, Username=username, Password=password, Permanent=True
        )
        if admin:
            self.cognito.admin_add_user_to_group(UserPoolId=self.user_pool_id, Username=username, GroupName=ADMIN_GROUP)
        return next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub")

    def tenant_ids(self) -> set[str]:
        """Every custom:tenant_id of the pool (ListUsers cannot filter on a custom attribute: all users are read)."""
        found = set()
        for page in self.cognito.get_paginator("list_users").paginate(UserPoolId=self.user_pool_id):
            for user in page["Users"]:
                found.update(a["Value"] for a in user.get("Attributes", []) if a["Name"] == TENANT_ATTRIBUTE)
        return found

    def authenticate(self, username: str, password: str, client_id: str | None = None) -> dict:
        """USER_PASSWORD_AUTH; returns the AuthenticationResult (IdToken, AccessToken, RefreshToken...)."""
        response = self.cognito.initiate_auth(
            ClientId=client_id or self.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
        if "AuthenticationResult" not in response:
            raise RuntimeError(f"sign-in of {username} needs challenge {response.get('ChallengeName')}")
        return response["AuthenticationResult"]

    def get_id_token(self, username: str, password: str, client_id: str | None = None) -> str:
        return self.authenticate(username, password, client_id)["IdToken"]


def local_users(resources: LocalResources) -> CognitoUsers:
    return CognitoUsers(
        resources.client("cognito-idp"),
        resources.user_pool_id,
        resources.user_pool_client_id,
        registry=(resources.client("dynamodb"), resources.usage_table),
    )
