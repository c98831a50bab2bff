//! What makes the fake Bedrock refuse what the real Bedrock Runtime refuses, so a gateway bug shows up
//! locally instead of in production (README "Fake Bedrock Runtime"):
//! - **SigV4**: every Bedrock call carries an `Authorization` header of the form
//!   `AWS4-HMAC-SHA256 Credential=<key>/<yyyymmdd>/<region>/bedrock/aws4_request, SignedHeaders=..., Signature=<hex>`
//!   that signs `host` and `x-amz-date`, and an `x-amz-date` of the same day within 5 minutes of now. The
//!   signature itself is not recomputed (the fake holds no secret): its form is checked. Failures are 403s
//!   with the error types AWS gives (`MissingAuthenticationTokenException`, `IncompleteSignatureException`,
//!   `InvalidSignatureException`, `UnrecognizedClientException`).
//! - **Model ids**: only the configured ones (foundation models and inference profiles, bare or as ARNs):
//!   an unknown profile id is a 400 `ValidationException`, an unknown foundation model a 404
//!   `ResourceNotFoundException`, as Bedrock answers.
//! - **Converse rules**: the first message is `user`, roles alternate, no empty `content` and no blank
//!   `text`, `inferenceConfig.maxTokens` at least 1 and within the model's output limit.
//! - **Mid-stream exceptions**: `[fake:stream-exception=TYPE]` (after the first text delta) or
//!   `[fake:stream-exception=TYPE@N]` (after N) ends a stream with an event-stream exception frame.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_smithy_types::event_stream::{Header, HeaderValue as EventHeaderValue, Message};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::fake_bedrock::aws_error;
use crate::fake_bedrock_profiles::{profiles, LISTED_MODELS};

/// How far `x-amz-date` may be from the fake's clock (AWS allows 5 minutes).
pub const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// The signing name of both `bedrock` and `bedrock-runtime`.
pub const SIGNING_SERVICE: &str = "bedrock";
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A refusal: status, Bedrock's error type, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self { status, error_type, message: message.into() }
    }

    fn forbidden(error_type: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error_type, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    pub fn into_response(self) -> Response {
        aws_error(self.status, self.error_type, &self.message)
    }
}

/// Checks the form of a SigV4-signed request (see the module doc) against the fake's region and clock.
pub fn check_signature(headers: &HeaderMap, region: &str, now: DateTime<Utc>) -> Result<(), Refusal> {
    let Some(authorization) = headers.get("authorization") else {
        return Err(Refusal::forbidden("MissingAuthenticationTokenException", "Missing Authentication Token"));
    };
    let authorization = authorization.to_str().unwrap_or_default();
    let Some(parameters) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        let algorithm = authorization.split(' ').next().unwrap_or_default();
        return Err(Refusal::forbidden("IncompleteSignatureException", format!("Unsupported AWS 'algorithm': '{algorithm}'")));
    };
    let parameter = |name: &str| {
        parameters.split(',').map(str::trim).find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    };
    let mut missing = Vec::new();
    for name in ["Credential", "Signature", "SignedHeaders"] {
        if parameter(name).is_none() {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    if !missing.is_empty() {
        return Err(Refusal::forbidden(
            "IncompleteSignatureException",
            format!("{} Authorization={authorization}", missing.join(" ")),
        ));
    }
    let (credential, signature, signed_headers) = (
        parameter("Credential").unwrap_or_default(),
        parameter("Signature").unwrap_or_default(),
        parameter("SignedHeaders").unwrap_or_default(),
    );

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, scope_date, scope_region, service, terminator] = scope[..] else {
        return Err(Refusal::forbidden(
            "IncompleteSignatureException",
            format!(
                "Credential should be scoped to a valid region, not '{}'. Credential={credential}",
                scope.get(2).unwrap_or(&"")
            ),
        ));
    };
    if access_key.is_empty() {
        return Err(Refusal::forbidden("UnrecognizedClientException", "The security token included in the request is invalid."));
    }
    if terminator != "aws4_request" {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!("Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."),
        ));
    }
    if service != SIGNING_SERVICE {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{SIGNING_SERVICE}'."),
        ));
    }
    if scope_region != region {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{scope_region}'."),
        ));
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return Err(Refusal::forbidden(
                "IncompleteSignatureException",
                format!("'{required}' must be a 'SignedHeader' in the AWS Authorization."),
            ));
        }
    }
    if signature.len() != 64 || !signature.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret \
             Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    let amz_date = headers.get("x-amz-date").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let Ok(signed_at) = NaiveDateTime::parse_from_str(amz_date, AMZ_DATE_FORMAT).map(|time| time.and_utc()) else {
        return Err(Refusal::forbidden(
            "IncompleteSignatureException",
            format!("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={authorization}"),
        ));
    };
    let date_of_signature = &amz_date[..8];
    if scope_date != date_of_signature {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
                 '{scope_date}' != '{date_of_signature}', from '{amz_date}'."
            ),
        ));
    }
    let stamp = |time: DateTime<Utc>| time.format(AMZ_DATE_FORMAT).to_string();
    if signed_at < now - CLOCK_SKEW {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)", stamp(now - CLOCK_SKEW), stamp(now)),
        ));
    }
    if signed_at > now + CLOCK_SKEW {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                stamp(now + CLOCK_SKEW),
                stamp(now)
            ),
        ));
    }
    Ok(())
}

/// The region the fake serves (what a signature's scope must name) and the model ids it knows.
#[derive(Debug, Clone)]
pub struct Strictness {
    pub region: String,
    pub models: Arc<ModelCatalogue>,
}

impl Default for Strictness {
    fn default() -> Self {
        Self { region: "us-east-1".to_owned(), models: Arc::new(ModelCatalogue::listed()) }
    }
}

/// Middleware: refuses a request whose SigV4 `Authorization` is missing or ill-formed.
pub async fn require_signature(State(strictness): State<Strictness>, request: Request, next: Next) -> Response {
    match check_signature(request.headers(), &strictness.region, Utc::now()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Geographic prefixes of cross-region inference profile ids.
pub const PROFILE_PREFIXES: [&str; 8] = ["us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"];

/// The model ids the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCatalogue {
    ids: BTreeSet<String>,
}

impl ModelCatalogue {
    /// Every listed foundation model and every system-defined profile `ListInferenceProfiles` shows.
    pub fn listed() -> Self {
        let mut ids: BTreeSet<String> = LISTED_MODELS.iter().map(|(model_id, _, _)| (*model_id).to_owned()).collect();
        ids.extend(profiles().iter().filter_map(|profile| profile["inferenceProfileId"].as_str().map(str::to_owned)));
        Self { ids }
    }

    /// Exactly these ids (`FAKE_BEDROCK_MODEL_IDS`).
    pub fn of(ids: impl IntoIterator<Item = String>) -> Self {
        Self { ids: ids.into_iter().collect() }
    }

    /// The known model id `requested` names (a bare id, or the id at the end of a foundation-model or
    /// inference-profile ARN), or Bedrock's refusal.
    pub fn resolve<'a>(&self, requested: &'a str) -> Result<&'a str, Refusal> {
        let id = requested.rsplit_once('/').map_or(requested, |(_, id)| id);
        if self.ids.contains(id) {
            return Ok(id);
        }
        let is_profile = id.split_once('.').is_some_and(|(prefix, _)| PROFILE_PREFIXES.contains(&prefix));
        if is_profile || !well_formed_model_id(id) {
            return Err(Refusal::validation("The provided model identifier is invalid."));
        }
        Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ))
    }
}

/// `provider.model[-version][:n]`: what Bedrock's model id pattern accepts.
fn well_formed_model_id(id: &str) -> bool {
    let allowed = id.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b':'));
    allowed && id.split_once('.').is_some_and(|(provider, rest)| !provider.is_empty() && !rest.is_empty())
}

/// The foundation model behind an id (a profile id without its geographic prefix).
pub fn foundation_model(model_id: &str) -> &str {
    match model_id.split_once('.') {
        Some((prefix, rest)) if PROFILE_PREFIXES.contains(&prefix) => rest,
        _ => model_id,
    }
}

/// The most output tokens one call to this model may ask for (Bedrock's model cards).
pub fn max_output_tokens(model_id: &str) -> u64 {
    let model = foundation_model(model_id);
    // Opus 4 and 4.1: 32K; Opus 4.6: 128K, as the listed models after it (Opus 4.8, Sonnet 5, Opus 5.5,
    // which Claude Code 2.1.332 asks 128,000 of); the other Claude 4 models: 64K.
    let limits: [(&str, u64); 11] = [
        ("anthropic.claude-3-haiku", 4_096),
        ("anthropic.claude-3-5-", 8_192),
        ("anthropic.claude-3-7-sonnet", 64_000),
        ("anthropic.claude-opus-4-2", 32_000),
        ("anthropic.claude-opus-4-1", 32_000),
        ("anthropic.claude-opus-4-6", 128_000),
        ("anthropic.claude-opus-4-8", 128_000),
        ("anthropic.claude-sonnet-5", 128_000),
        ("anthropic.claude-opus-5", 128_000),
        ("anthropic.claude-", 64_000),
        ("meta.", 8_192),
    ];
    limits.iter().find(|(prefix, _)| model.starts_with(prefix)).map_or(4_096, |(_, limit)| *limit)
}

/// Bedrock's Converse checks of the messages, `system` and `inferenceConfig`.
pub fn check_converse_body(body: &Value, model_id: &str) -> Result<(), Refusal> {
    let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    if messages.is_empty() {
        return Err(Refusal::validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    for (index, message) in messages.iter().enumerate() {
        let expected = if index % 2 == 0 { "user" } else { "assistant" };
        if message["role"] != expected {
            return Err(Refusal::validation(if index == 0 {
                "A conversation must start with a user message. Try again with a conversation that starts with a user message."
            } else {
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates \
                 between user and assistant roles and try again."
            }));
        }
        let blocks = message["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        if blocks.is_empty() {
            return Err(Refusal::validation(format!(
                "The content field in the Message object at messages.{index} is empty. Add a ContentBlock object to the content field and try again."
            )));
        }
        for (block_index, block) in blocks.iter().enumerate() {
            if block["text"].as_str().is_some_and(|text| text.trim().is_empty()) {
                return Err(Refusal::validation(format!(
                    "The text field in the ContentBlock object at messages.{index}.content.{block_index} is blank. Add text to the text field, and try again."
                )));
            }
        }
    }
    for (index, block) in body["system"].as_array().into_iter().flatten().enumerate() {
        if block["text"].as_str().is_some_and(|text| text.trim().is_empty()) {
            return Err(Refusal::validation(format!(
                "The text field in the SystemContentBlock object at system.{index} is blank. Add text to the text field, and try again."
            )));
        }
    }
    if let Some(max_tokens) = body["inferenceConfig"].get("maxTokens") {
        check_max_tokens(max_tokens, model_id).map_err(Refusal::validation)?;
    }
    Ok(())
}

fn check_max_tokens(max_tokens: &Value, model_id: &str) -> Result<(), String> {
    let Some(asked) = max_tokens.as_i64() else {
        return Err(format!("1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must be an integer"));
    };
    if asked < 1 {
        return Err(format!(
            "1 validation error detected: Value '{asked}' at 'inferenceConfig.maxTokens' failed to satisfy constraint: \
             Member must have value greater than or equal to 1"
        ));
    }
    let limit = max_output_tokens(model_id);
    if asked as u64 > limit {
        return Err(format!(
            "The maximum tokens you requested exceeds the model limit of {limit}. Try again with a maximum tokens value that is lower than {limit}."
        ));
    }
    Ok(())
}

/// Bedrock's checks of an Anthropic body's `max_tokens` (InvokeModel): at least 1, within the model's limit.
pub fn check_anthropic_max_tokens(body: &Value, model_id: &str) -> Result<(), Refusal> {
    let asked = body["max_tokens"].as_u64().unwrap_or_default();
    if asked < 1 {
        return Err(Refusal::validation("max_tokens: Input should be greater than or equal to 1"));
    }
    let limit = max_output_tokens(model_id);
    if asked > limit {
        return Err(Refusal::validation(format!(
            "max_tokens: {asked} > {limit}, which is the maximum allowed number of output tokens for {}",
            foundation_model(model_id)
        )));
    }
    Ok(())
}

/// A mid-stream exception a directive asks for: its event-stream type and after how many text deltas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamException {
    pub exception_type: &'static str,
    pub after_deltas: usize,
}

/// The exceptions `ConverseStream` and `InvokeModelWithResponseStream` may send mid-stream.
pub const STREAM_EXCEPTIONS: [(&str, &str); 6] = [
    ("throttlingException", "Too many requests, please wait before trying again."),
    ("modelStreamErrorException", "The model encountered an error while streaming its response."),
    ("internalServerException", "An internal server error occurred."),
    ("serviceUnavailableException", "The service is unavailable. Try again later."),
    ("validationException", "The provided request is not valid."),
    ("modelTimeoutException", "Model has timed out in processing the request."),
];

/// `[fake:stream-exception=TYPE]` or `[fake:stream-exception=TYPE@N]` in the prompt (the first one counts).
pub fn stream_exception(text: &str) -> Option<StreamException> {
    let (_, rest) = text.split_once("[fake:stream-exception=")?;
    let directive = rest.split(']').next()?;
    let (name, after) = match directive.split_once('@') {
        Some((name, count)) => (name, count.parse().ok()?),
        None => (directive, 1),
    };
    let (exception_type, _) = STREAM_EXCEPTIONS.iter().find(|(known, _)| *known == name)?;
    Some(StreamException { exception_type, after_deltas: after })
}

/// The event-stream exception frame Bedrock ends a failed stream with.
pub fn exception_frame(exception_type: &'static str) -> Vec<u8> {
    let message = STREAM_EXCEPTIONS.iter().find(|(known, _)| *known == exception_type).map_or("", |(_, message)| message);
    let mut payload = json!({"message": message});
    if exception_type == "modelStreamErrorException" {
        payload["originalStatusCode"] = json!(500);
        payload["originalMessage"] = json!("Internal server error");
    }
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(":exception-type", EventHeaderValue::String(exception_type.into())))
        .add_header(Header::new(":content-type", EventHeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", EventHeaderValue::String("exception".into())));
    let mut frame = Vec::new();
    if let Err(error) = aws_smithy_eventstream::frame::write_message_to(&message, &mut frame) {
        tracing::error!(%error, "could not encode an event-stream exception frame");
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use chrono::TimeZone;

    const SIGNATURE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
    }

    fn signed(authorization: &str, amz_date: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(authorization).unwrap());
        headers.insert("x-amz-date", HeaderValue::from_str(amz_date).unwrap());
        headers
    }

    fn authorization(scope: &str, signed_headers: &str, signature: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential=testing/{scope}, SignedHeaders={signed_headers}, Signature={signature}")
    }

    fn refusal(headers: &HeaderMap) -> (StatusCode, &'static str) {
        let refusal = check_signature(headers, "us-east-1", now()).unwrap_err();
        (refusal.status, refusal.error_type)
    }

    const GOOD_SCOPE: &str = "20261201/us-east-1/bedrock/aws4_request";
    const GOOD_HEADERS: &str = "content-type;host;x-amz-date;x-amz-user-agent";

    #[test]
    fn a_well_formed_signature_of_now_passes() {
        let headers = signed(&authorization(GOOD_SCOPE, GOOD_HEADERS, SIGNATURE), "20261201T080100Z");
        assert_eq!(check_signature(&headers, "us-east-1", now()), Ok(()));
    }

    #[test]
    fn an_unsigned_request_is_refused_as_aws_refuses_it() {
        assert_eq!(
            check_signature(&HeaderMap::new(), "us-east-1", now()),
            Err(Refusal::forbidden("MissingAuthenticationTokenException", "Missing Authentication Token"))
        );
        let bearer = signed("Bearer abc", "20261201T080000Z");
        assert_eq!(refusal(&bearer), (StatusCode::FORBIDDEN, "IncompleteSignatureException"));
        let no_signature = signed(
            &format!("AWS4-HMAC-SHA256 Credential=testing/{GOOD_SCOPE}, SignedHeaders=host;x-amz-date"),
            "20261201T080000Z",
        );
        let refused = check_signature(&no_signature, "us-east-1", now()).unwrap_err();
        assert_eq!(refused.error_type, "IncompleteSignatureException");
        assert!(refused.message.starts_with("Authorization header requires 'Signature' parameter."), "{}", refused.message);
    }

    #[test]
    fn the_credential_scope_must_name_this_region_bedrock_and_aws4_request() {
        for (scope, error_type) in [
            ("20261201/eu-west-1/bedrock/aws4_request", "InvalidSignatureException"),
            ("20261201/us-east-1/s3/aws4_request", "InvalidSignatureException"),
            ("20261201/us-east-1/bedrock/aws5_request", "InvalidSignatureException"),
            ("20261201/us-east-1/bedrock", "IncompleteSignatureException"),
        ] {
            let headers = signed(&authorization(scope, GOOD_HEADERS, SIGNATURE), "20261201T080000Z");
            assert_eq!(refusal(&headers), (StatusCode::FORBIDDEN, error_type), "{scope}");
        }
        let no_key = signed(
            &format!("AWS4-HMAC-SHA256 Credential=/{GOOD_SCOPE}, SignedHeaders=host;x-amz-date, Signature={SIGNATURE}"),
            "20261201T080000Z",
        );
        assert_eq!(refusal(&no_key), (StatusCode::FORBIDDEN, "UnrecognizedClientException"));
    }

    #[test]
    fn host_and_x_amz_date_must_be_signed_and_the_signature_hex() {
        let no_host = signed(&authorization(GOOD_SCOPE, "content-type;x-amz-date", SIGNATURE), "20261201T080000Z");
        assert_eq!(refusal(&no_host), (StatusCode::FORBIDDEN, "IncompleteSignatureException"));
        let no_date = signed(&authorization(GOOD_SCOPE, "content-type;host", SIGNATURE), "20261201T080000Z");
        assert_eq!(refusal(&no_date), (StatusCode::FORBIDDEN, "IncompleteSignatureException"));
        for bad in ["abc", &SIGNATURE.to_uppercase(), &format!("{}g", &SIGNATURE[..63])] {
            let headers = signed(&authorization(GOOD_SCOPE, GOOD_HEADERS, bad), "20261201T080000Z");
            assert_eq!(refusal(&headers), (StatusCode::FORBIDDEN, "InvalidSignatureException"), "{bad}");
        }
    }

    #[test]
    fn x_amz_date_must_exist_match_the_scope_and_be_within_five_minutes() {
        let mut missing = signed(&authorization(GOOD_SCOPE, GOOD_HEADERS, SIGNATURE), "x");
        missing.remove("x-amz-date");
        assert_eq!(refusal(&missing), (StatusCode::FORBIDDEN, "IncompleteSignatureException"));
        let other_day =
            signed(&authorization("20261130/us-east-1/bedrock/aws4_request", GOOD_HEADERS, SIGNATURE), "20261201T080000Z");
        let refused = check_signature(&other_day, "us-east-1", now()).unwrap_err();
        assert_eq!(refused.error_type, "InvalidSignatureException");
        assert!(refused.message.contains("'20261130' != '20261201'"), "{}", refused.message);
        let boundary =
            [("20261201T075500Z", true), ("20261201T075459Z", false), ("20261201T080500Z", true), ("20261201T080501Z", false)];
        for (amz_date, accepted) in boundary {
            let headers = signed(&authorization(GOOD_SCOPE, GOOD_HEADERS, SIGNATURE), amz_date);
            let result = check_signature(&headers, "us-east-1", now());
            assert_eq!(result.is_ok(), accepted, "{amz_date}: {result:?}");
        }
        let old = signed(&authorization(GOOD_SCOPE, GOOD_HEADERS, SIGNATURE), "20261201T070000Z");
        assert!(check_signature(&old, "us-east-1", now())
            .unwrap_err()
            .message
            .starts_with("Signature expired: 20261201T070000Z"));
    }

    #[test]
    fn only_configured_models_are_served_and_others_refused_as_bedrock_does() {
        let catalogue = ModelCatalogue::of([
            "anthropic.claude-3-haiku-20240307-v1:0".to_owned(),
            "us.anthropic.claude-3-haiku-20240307-v1:0".to_owned(),
        ]);
        assert_eq!(catalogue.resolve("anthropic.claude-3-haiku-20240307-v1:0"), Ok("anthropic.claude-3-haiku-20240307-v1:0"));
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(catalogue.resolve(arn), Ok("us.anthropic.claude-3-haiku-20240307-v1:0"));
        let unknown_profile = catalogue.resolve("eu.anthropic.claude-3-haiku-20240307-v1:0").unwrap_err();
        assert_eq!((unknown_profile.status, unknown_profile.error_type), (StatusCode::BAD_REQUEST, "ValidationException"));
        assert_eq!(unknown_profile.message, "The provided model identifier is invalid.");
        let unknown_model = catalogue.resolve("anthropic.claude-nonexistent-v1:0").unwrap_err();
        assert_eq!((unknown_model.status, unknown_model.error_type), (StatusCode::NOT_FOUND, "ResourceNotFoundException"));
        assert_eq!(catalogue.resolve("sonnet").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(catalogue.resolve("Anthropic.Claude").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_listed_catalogue_has_every_listed_profile_and_foundation_model() {
        let listed = ModelCatalogue::listed();
        assert!(listed.resolve("anthropic.claude-3-haiku-20240307-v1:0").is_ok());
        assert!(listed.resolve("global.anthropic.claude-sonnet-5-20261105-v1:0").is_ok());
        assert!(listed.resolve("us.anthropic.claude-sonnet-5-20261105-v1:0").is_err(), "Sonnet 5 has no us. profile");
    }

    fn converse(messages: Value) -> Value {
        json!({"messages": messages})
    }

    fn refused_message(body: &Value) -> String {
        check_converse_body(body, "anthropic.claude-3-haiku-20240307-v1:0").unwrap_err().message
    }

    #[test]
    fn converse_bodies_follow_bedrocks_role_and_content_rules() {
        let user = json!({"role": "user", "content": [{"text": "hi"}]});
        let assistant = json!({"role": "assistant", "content": [{"text": "hello"}]});
        assert_eq!(
            check_converse_body(&converse(json!([user, assistant, user])), "anthropic.claude-3-haiku-20240307-v1:0"),
            Ok(())
        );
        assert!(
            refused_message(&converse(json!([assistant, user]))).starts_with("A conversation must start with a user message.")
        );
        assert!(refused_message(&converse(json!([user, user])))
            .starts_with("A conversation must alternate between user and assistant roles."));
        assert!(refused_message(&converse(json!([]))).starts_with("A conversation must start with a user message."));
        let empty = json!({"role": "user", "content": []});
        assert!(refused_message(&converse(json!([empty])))
            .starts_with("The content field in the Message object at messages.0 is empty."));
        let blank = json!({"role": "user", "content": [{"text": "ok"}, {"text": "  "}]});
        assert!(refused_message(&converse(json!([blank])))
            .starts_with("The text field in the ContentBlock object at messages.0.content.1 is blank."));
        let mut blank_system = converse(json!([user]));
        blank_system["system"] = json!([{"text": ""}]);
        assert!(refused_message(&blank_system).contains("system.0 is blank"));
    }

    #[test]
    fn max_tokens_is_at_least_one_and_within_the_models_limit() {
        let user = json!({"role": "user", "content": [{"text": "hi"}]});
        let with_max = |max: Value| json!({"messages": [user], "inferenceConfig": {"maxTokens": max}});
        let haiku = "anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(check_converse_body(&with_max(json!(1)), haiku), Ok(()));
        assert_eq!(check_converse_body(&with_max(json!(4096)), haiku), Ok(()));
        assert!(refused_message(&with_max(json!(0))).contains("Member must have value greater than or equal to 1"));
        assert!(refused_message(&with_max(json!(-3))).contains("Value '-3'"));
        assert!(refused_message(&with_max(json!(4097))).contains("exceeds the model limit of 4096"));
        assert_eq!(check_converse_body(&with_max(json!(64_000)), "us.anthropic.claude-sonnet-4-5-20250929-v1:0"), Ok(()));
        let anthropic = |max: u64| json!({"max_tokens": max});
        assert!(check_anthropic_max_tokens(&anthropic(0), haiku).is_err());
        assert_eq!(check_anthropic_max_tokens(&anthropic(4096), haiku), Ok(()));
        assert_eq!(
            check_anthropic_max_tokens(&anthropic(4097), haiku).unwrap_err().message,
            "max_tokens: 4097 > 4096, which is the maximum allowed number of output tokens for anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(max_output_tokens("global.anthropic.claude-opus-4-6-v1"), 128_000);
        assert_eq!(max_output_tokens("us.anthropic.claude-opus-4-1-20250805-v1:0"), 32_000);
        assert_eq!(max_output_tokens("global.anthropic.claude-opus-5-5-20261120-v1:0"), 128_000);
        assert_eq!(max_output_tokens("anthropic.claude-sonnet-4-5-20250929-v1:0"), 64_000);
    }

    #[test]
    fn stream_exception_directives_name_a_known_exception_and_a_position() {
        assert_eq!(
            stream_exception("x [fake:stream-exception=throttlingException] y"),
            Some(StreamException { exception_type: "throttlingException", after_deltas: 1 })
        );
        assert_eq!(
            stream_exception("[fake:stream-exception=modelStreamErrorException@3]"),
            Some(StreamException { exception_type: "modelStreamErrorException", after_deltas: 3 })
        );
        assert_eq!(stream_exception("[fake:stream-exception=NoSuchException]"), None);
        assert_eq!(stream_exception("plain"), None);
    }

    #[test]
    fn an_exception_frame_decodes_as_the_sdk_reads_it() {
        let frame = exception_frame("throttlingException");
        let mut buffer = bytes::Bytes::from(frame);
        let message = aws_smithy_eventstream::frame::read_message_from(&mut buffer).unwrap();
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .map(|h| h.value().as_string().unwrap().as_str().to_owned())
        };
        assert_eq!(header(":message-type").as_deref(), Some("exception"));
        assert_eq!(header(":exception-type").as_deref(), Some("throttlingException"));
        let payload: Value = serde_json::from_slice(message.payload()).unwrap();
        assert_eq!(payload["message"], "Too many requests, please wait before trying again.");
    }
}
