//! `BEDROCK_MAX_ATTEMPTS` (README: attempts per Bedrock call, default 2): the chat model's SDK client makes
//! exactly that many attempts at a Bedrock that keeps answering 503, then reports it unavailable. Bedrock
//! is an HTTP listener on 127.0.0.1 (`listener`) that counts the requests.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

mod listener;

use std::time::Duration;

use aws_sdk_bedrockruntime::config::{Credentials, Region, SharedCredentialsProvider};
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::config::ChatConfig;
use metering_core::model::{BedrockChatModel, ChatModel, ModelError, ModelPrompt};
use metering_core::usage::RequestType;

async fn attempts_made(max_attempts: u32) -> (usize, ModelError) {
    let (address, received) = listener::serve(listener::CannedResponse {
        status_line: "HTTP/1.1 503 Service Unavailable",
        headers: vec![
            ("content-type", "application/json"),
            ("x-amzn-errortype", "ServiceUnavailableException"),
            ("retry-after", "6"),
        ],
        body: r#"{"message":"busy"}"#,
    });
    let sdk_config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "test")))
        .endpoint_url(format!("http://{address}"))
        .build();
    let model = BedrockChatModel::new(&sdk_config, Duration::from_secs(30), max_attempts, 5);
    let metadata = BedrockRequestMetadata {
        tenant_id: "t".into(),
        user_id: "u".into(),
        request_id: "r".into(),
        request_type: RequestType::Bedrock,
    };
    let prompt = ModelPrompt { model_id: "m".into(), prompt: "hi".into(), max_tokens: None, metadata };
    let error = model.converse(&prompt).await.unwrap_err();
    let count = received.lock().unwrap().len();
    (count, error)
}

#[tokio::test]
async fn the_client_makes_exactly_bedrock_max_attempts_attempts() {
    for max_attempts in [1, 3] {
        let (count, error) = attempts_made(max_attempts).await;
        assert_eq!(count, max_attempts as usize, "BEDROCK_MAX_ATTEMPTS={max_attempts}");
        assert_eq!(error, ModelError::Unavailable { retry_after_seconds: 6, detail: "busy".into() });
    }
}

#[test]
fn bedrock_max_attempts_is_read_from_the_environment_with_a_default_of_2() {
    let config = |value: Option<&str>| {
        ChatConfig::from_lookup(|name| match name {
            "USAGE_TABLE_NAME" => Some("usage".into()),
            "BEDROCK_MAX_ATTEMPTS" => value.map(str::to_owned),
            _ => None,
        })
    };
    assert_eq!(config(None).unwrap().bedrock_max_attempts, 2);
    assert_eq!(config(Some("4")).unwrap().bedrock_max_attempts, 4);
    assert!(config(Some("0")).is_err() && config(Some("6")).is_err(), "1 to 5");
}
