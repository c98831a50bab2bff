"""The local stack's moto applies TransactWriteItems all or nothing, as DynamoDB does, with the undo log that
replaces moto's per-item table copies (scripts/lib/moto_serial_server.py): a cancelled transaction leaves
every item as it was (updated, put, deleted), reports a reason per item, and a valid one applies in full."""
from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def table(resources):
    client = boto3.client("dynamodb", endpoint_url=resources.endpoint_url, region_name=resources.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"transactions-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    yield client, name
    client.delete_table(TableName=name)


def key(pk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": "x"}}


def items(client, name: str) -> dict:
    found = client.scan(TableName=name, ConsistentRead=True)["Items"]
    return {item["pk"]["S"]: {k: v for k, v in item.items() if k not in ("pk", "sk")} for item in found}


def test_a_cancelled_transaction_changes_nothing_and_a_valid_one_applies_in_full(table):
    client, name = table
    client.put_item(TableName=name, Item={**key("counter"), "n": {"N": "5"}})
    client.put_item(TableName=name, Item={**key("doomed"), "v": {"S": "kept"}})
    client.put_item(TableName=name, Item={**key("marker"), "v": {"S": "exists"}})
    before = items(client, name)
    add = {"Update": {"TableName": name, "Key": key("counter"), "UpdateExpression": "ADD n :one",
                      "ExpressionAttributeValues": {":one": {"N": "1"}}}}
    put_new = {"Put": {"TableName": name, "Item": {**key("new"), "v": {"S": "new"}}}}
    delete = {"Delete": {"TableName": name, "Key": key("doomed")}}
    marker = {"Put": {"TableName": name, "Item": {**key("marker"), "v": {"S": "again"}},
                      "ConditionExpression": "attribute_not_exists(pk)"}}
    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(TransactItems=[add, put_new, delete, marker])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    assert items(client, name) == before, "the update, the put and the delete before the failed item are undone"
    # The same writes without the failing condition apply together.
    client.transact_write_items(TransactItems=[add, put_new, delete])
    after = items(client, name)
    assert after["counter"] == {"n": {"N": "6"}} and after["new"] == {"v": {"S": "new"}} and "doomed" not in after
    # One item twice in one transaction is refused whole.
    with pytest.raises(ClientError) as twice:
        client.transact_write_items(TransactItems=[add, {"ConditionCheck": {
            "TableName": name, "Key": key("counter"), "ConditionExpression": "attribute_exists(pk)"}}])
    assert twice.value.response["Error"]["Code"] == "ValidationException"
    assert items(client, name)["counter"] == {"n": {"N": "6"}}
