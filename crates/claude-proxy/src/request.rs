//! What the proxy reads from a client request: the gateway key, the body's few fields it acts on (the rest
//! goes upstream untouched), the user to meter, and the query to forward.

use bytes::Bytes;
use http::HeaderMap;
use metering_core::ApiError;
use serde_json::{Map, Value};

use crate::config::CredentialMode;

pub const GATEWAY_KEY_HEADER: &str = "x-gateway-key";
/// Query parameter naming the user when the body has no `metadata.user_id`.
pub const USER_QUERY_PARAMETER: &str = "claude-code-user";
pub const MAX_USER_ID_CHARS: usize = 256;

/// One request as the proxy sees it, whichever server received it.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub request_id: String,
    pub headers: HeaderMap,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    pub body: Bytes,
}

impl ProxyRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The gateway key: `x-gateway-key` in either mode; in managed mode also `x-api-key` or a bearer token.
    pub fn gateway_key(&self, mode: CredentialMode) -> Option<&str> {
        if let Some(key) = self.header(GATEWAY_KEY_HEADER) {
            return Some(key);
        }
        match mode {
            CredentialMode::Passthrough => None,
            CredentialMode::Managed => self.header("x-api-key").or_else(|| {
                let authorization = self.header("authorization")?;
                let (scheme, token) = authorization.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }),
        }
    }

    /// `anthropic-beta` header values (each may hold several, comma-separated).
    pub fn betas(&self) -> Vec<String> {
        self.headers.get_all("anthropic-beta").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }

    /// A query parameter, decoded as `application/x-www-form-urlencoded` (`%XX` and `+`).
    pub fn query_parameter(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes()).find_map(|(key, value)| (key == name).then(|| value.into_owned()))
    }

    /// The query string for the upstream, without the gateway's own parameter. The other pairs are kept as the
    /// client encoded them.
    pub fn upstream_query(&self) -> String {
        let kept: Vec<&str> = self
            .query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| !is_gateway_parameter(pair))
            .collect();
        if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        }
    }
}

/// Whether one `name=value` pair of a query string is the gateway's own user parameter.
fn is_gateway_parameter(pair: &str) -> bool {
    form_urlencoded::parse(pair.as_bytes()).next().is_some_and(|(name, _)| name == USER_QUERY_PARAMETER)
}

/// The body of `/v1/messages` or `/v1/messages/count_tokens`: the JSON object (kept for Bedrock) and the
/// fields the proxy acts on.
#[derive(Debug, Clone)]
pub struct MessagesBody {
    pub fields: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

impl MessagesBody {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidRequest("the request body is empty; send a Messages API JSON object".into()));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| ApiError::InvalidRequest(format!("the request body is not valid JSON: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::InvalidRequest("the request body must be a JSON object".into()));
        };
        let model = match fields.get("model") {
            Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
            Some(_) => return Err(ApiError::InvalidRequest("model: must be a non-empty string".into())),
            None => return Err(ApiError::InvalidRequest("model: field required".into())),
        };
        match fields.get("messages") {
            Some(Value::Array(_)) => {}
            Some(_) => return Err(ApiError::InvalidRequest("messages: must be an array".into())),
            None => return Err(ApiError::InvalidRequest("messages: field required".into())),
        }
        let stream = match fields.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err(ApiError::InvalidRequest("stream: must be a boolean".into())),
        };
        Ok(Self { fields, model, stream })
    }

    /// `metadata.user_id` as Claude Code sends it, reduced to the user (see `clean_user_id`).
    pub fn metadata_user(&self) -> Option<String> {
        self.fields.get("metadata")?.get("user_id")?.as_str().and_then(clean_user_id)
    }
}

/// A client-declared user id for the usage line, without its session:
/// - Claude Code's JSON `{"device_id": ..., "account_uuid": ..., "session_id": ...}`: the account, else the
///   device; never the session (a new one every run);
/// - its older `user_<hash>_account_<uuid>_session_<uuid>`: the account, else the hash (the device), so one
///   user keeps one id across Claude Code versions;
/// - anything else as it is. Trimmed, bounded, printable; `None` when nothing is left.
pub fn clean_user_id(raw: &str) -> Option<String> {
    let user = match serde_json::from_str::<Value>(raw.trim()) {
        Ok(Value::Object(fields)) => {
            let field = |name: &str| fields.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
            field("account_uuid").or_else(|| field("device_id"))?.to_owned()
        }
        _ => legacy_claude_code_user(raw).unwrap_or(raw).to_owned(),
    };
    let trimmed = user.trim();
    if trimmed.is_empty() || trimmed.chars().any(char::is_control) {
        return None;
    }
    Some(trimmed.chars().take(MAX_USER_ID_CHARS).collect())
}

/// `user_<hash>_account_<uuid>_session_<uuid>` (the account may be empty) -> the account, else the hash.
fn legacy_claude_code_user(raw: &str) -> Option<&str> {
    let without_session = raw.find("_session_").map_or(raw, |at| &raw[..at]);
    let Some((user, account)) = without_session.split_once("_account_") else {
        return (without_session.len() < raw.len()).then_some(without_session);
    };
    if !account.trim().is_empty() {
        return Some(account);
    }
    Some(user.strip_prefix("user_").unwrap_or(user))
}

/// Who the client says it is: `metadata.user_id`, else the `claude-code-user` query parameter. Recorded as
/// `client_user_id`, never metered to: the metered user is the gateway key's owner.
pub fn client_user(body: &MessagesBody, request: &ProxyRequest) -> Option<String> {
    body.metadata_user().or_else(|| request.query_parameter(USER_QUERY_PARAMETER).as_deref().and_then(clean_user_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(headers: &[(&'static str, &'static str)], query: Option<&str>) -> ProxyRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        ProxyRequest { request_id: "r".into(), headers: map, query: query.map(str::to_owned), body: Bytes::new() }
    }

    #[test]
    fn the_gateway_key_depends_on_the_mode() {
        let managed = request(&[("x-api-key", "bmk_a")], None);
        assert_eq!(managed.gateway_key(CredentialMode::Managed), Some("bmk_a"));
        assert_eq!(managed.gateway_key(CredentialMode::Passthrough), None, "x-api-key is the user's own then");
        let bearer = request(&[("authorization", "Bearer bmk_b")], None);
        assert_eq!(bearer.gateway_key(CredentialMode::Managed), Some("bmk_b"));
        let both = request(&[("x-api-key", "sk-ant-own"), ("x-gateway-key", "bmk_c")], None);
        assert_eq!(both.gateway_key(CredentialMode::Passthrough), Some("bmk_c"));
        assert_eq!(both.gateway_key(CredentialMode::Managed), Some("bmk_c"));
    }

    #[test]
    fn the_client_user_comes_from_metadata_then_query() {
        let body = |json: &str| MessagesBody::parse(json.as_bytes()).unwrap();
        let with_metadata = body(r#"{"model":"m","messages":[],"metadata":{"user_id":"user_abc_account_1_session_9f"}}"#);
        let plain = body(r#"{"model":"m","messages":[]}"#);
        let query = request(&[], Some("beta=true&claude-code-user=alice%40example.com"));
        assert_eq!(client_user(&with_metadata, &query).as_deref(), Some("1"));
        assert_eq!(client_user(&plain, &query).as_deref(), Some("alice@example.com"));
        assert_eq!(client_user(&plain, &request(&[], None)), None);
    }

    #[test]
    fn claude_codes_json_user_id_is_the_account_else_the_device_never_the_session() {
        let json = |device: &str, account: &str| {
            serde_json::json!({"device_id": device, "account_uuid": account, "session_id": "s-1"}).to_string()
        };
        assert_eq!(clean_user_id(&json("d-1", "a-1")).as_deref(), Some("a-1"));
        assert_eq!(clean_user_id(&json("d-1", "")).as_deref(), Some("d-1"));
        assert_eq!(clean_user_id(r#"{"device_id":"d-1","session_id":"s-1"}"#).as_deref(), Some("d-1"));
        assert_eq!(clean_user_id(r#"{"session_id":"s-1"}"#), None, "a session alone names nobody");
        assert_eq!(clean_user_id(r#"{"account_uuid": 5, "device_id": "d-2"}"#).as_deref(), Some("d-2"));
        // Two sessions of one user are one user.
        let other_session = r#"{"device_id":"d-1","account_uuid":"a-1","session_id":"s-2"}"#;
        assert_eq!(clean_user_id(other_session), clean_user_id(&json("d-1", "a-1")));
    }

    #[test]
    fn claude_codes_older_user_id_is_the_account_else_the_hash() {
        assert_eq!(clean_user_id("user_3f9a_account_7c1e_session_99").as_deref(), Some("7c1e"));
        assert_eq!(clean_user_id("user_3f9a_account__session_99").as_deref(), Some("3f9a"));
        assert_eq!(clean_user_id("user_3f9a_session_99").as_deref(), Some("user_3f9a"));
        assert_eq!(clean_user_id("alice@example.com").as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn the_gateway_parameter_is_not_forwarded_upstream() {
        assert_eq!(request(&[], Some("beta=true&claude-code-user=bob")).upstream_query(), "?beta=true");
        assert_eq!(request(&[], Some("claude-code-user=bob")).upstream_query(), "");
        assert_eq!(request(&[], None).upstream_query(), "");
        // Pairs are matched after decoding and forwarded as the client encoded them.
        assert_eq!(request(&[], Some("claude%2Dcode%2Duser=bob&q=a%26b+c")).upstream_query(), "?q=a%26b+c");
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let with_query = request(&[], Some("x=1&claude-code-user=a%40b+c%2Bd&claude-code-user=second"));
        assert_eq!(with_query.query_parameter("claude-code-user").as_deref(), Some("a@b c+d"), "the first one wins");
        assert_eq!(with_query.query_parameter("x").as_deref(), Some("1"));
        assert_eq!(with_query.query_parameter("missing"), None);
        assert_eq!(request(&[], None).query_parameter("x"), None);
    }

    #[test]
    fn malformed_bodies_are_invalid_requests() {
        for (body, expected) in [
            ("", "empty"),
            ("{not json", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"messages": []}"#, "model: field required"),
            (r#"{"model": 5, "messages": []}"#, "model: must be"),
            (r#"{"model": "m"}"#, "messages: field required"),
            (r#"{"model": "m", "messages": [], "stream": "yes"}"#, "stream: must be"),
        ] {
            match MessagesBody::parse(body.as_bytes()) {
                Err(ApiError::InvalidRequest(message)) => assert!(message.contains(expected), "{body}: {message}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(MessagesBody::parse(br#"{"model":"m","messages":[],"stream":true}"#).unwrap().stream);
    }

    #[test]
    fn user_ids_are_cleaned() {
        assert_eq!(clean_user_id("  bob  ").as_deref(), Some("bob"));
        assert_eq!(clean_user_id("_session_x"), None);
        assert_eq!(clean_user_id("a\nb"), None);
        assert_eq!(clean_user_id(&"x".repeat(300)).unwrap().len(), MAX_USER_ID_CHARS);
    }
}
