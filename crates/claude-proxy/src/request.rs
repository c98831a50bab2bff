//! What the proxy reads from a client request: the gateway key, the body's few fields it acts on (the rest
//! goes upstream untouched), the user to meter, and the query to forward.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderMap;
use metering_core::ApiError;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// The body of `/v1/messages` or `/v1/messages/count_tokens`: the fields the proxy acts on, read in one pass
/// that builds nothing else (the rest is checked to be JSON and skipped: it goes upstream as the client sent
/// it), and the whole JSON object, parsed only if a Bedrock fallback or a limit needs it.
#[derive(Debug, Clone)]
pub struct MessagesBody {
    pub fields: BodyFields,
    pub model: String,
    pub stream: bool,
    /// `metadata.user_id` as sent, when it is a string.
    metadata_user_id: Option<String>,
}

impl MessagesBody {
    pub fn parse(body: &Bytes) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidRequest("the request body is empty; send a Messages API JSON object".into()));
        }
        let inspected = serde_json::from_slice::<InspectedBody<'_>>(body)
            .map_err(|error| ApiError::InvalidRequest(format!("the request body is not valid JSON: {error}")))?;
        let InspectedBody::Object { model, messages, stream, metadata_user_id } = inspected else {
            return Err(ApiError::InvalidRequest("the request body must be a JSON object".into()));
        };
        let model = match model {
            Some(Probe::Str(model)) if !model.trim().is_empty() => model.into_owned(),
            Some(_) => return Err(ApiError::InvalidRequest("model: must be a non-empty string".into())),
            None => return Err(ApiError::InvalidRequest("model: field required".into())),
        };
        match messages {
            Some(Probe::Array) => {}
            Some(_) => return Err(ApiError::InvalidRequest("messages: must be an array".into())),
            None => return Err(ApiError::InvalidRequest("messages: field required".into())),
        }
        let stream = match stream {
            None | Some(Probe::Null) => false,
            Some(Probe::Bool(stream)) => stream,
            Some(_) => return Err(ApiError::InvalidRequest("stream: must be a boolean".into())),
        };
        Ok(Self { fields: BodyFields::new(body.clone()), model, stream, metadata_user_id })
    }

    /// `metadata.user_id` as Claude Code sends it, reduced to the user (see `clean_user_id`).
    pub fn metadata_user(&self) -> Option<String> {
        self.metadata_user_id.as_deref().and_then(clean_user_id)
    }
}

/// The request body as a JSON object, parsed on first use and kept.
#[derive(Debug, Clone)]
pub struct BodyFields {
    bytes: Bytes,
    parsed: OnceLock<Result<Map<String, Value>, String>>,
}

impl BodyFields {
    fn new(bytes: Bytes) -> Self {
        Self { bytes, parsed: OnceLock::new() }
    }

    /// The whole object. It fails only on JSON the first pass skipped without judging (a number too large for
    /// a float, in a field the proxy does not act on).
    pub fn whole(&self) -> Result<&Map<String, Value>, ApiError> {
        let parsed = self.parsed.get_or_init(|| match serde_json::from_slice::<Value>(&self.bytes) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err("the request body must be a JSON object".into()),
            Err(error) => Err(format!("the request body is not valid JSON: {error}")),
        });
        parsed.as_ref().map_err(|message| ApiError::InvalidRequest(message.clone()))
    }

    /// One top-level field (`None` as well when the whole body cannot be read as a JSON object).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.whole().ok()?.get(name)
    }
}

/// What the first pass reads of a body: the top-level fields the proxy acts on, each as little as its checks
/// need. A repeated field counts as its last occurrence, as in a `serde_json::Value`.
enum InspectedBody<'a> {
    Object { model: Option<Probe<'a>>, messages: Option<Probe<'a>>, stream: Option<Probe<'a>>, metadata_user_id: Option<String> },
    NotAnObject,
}

/// The kind of one JSON value (and its text when it is a string), its contents skipped.
enum Probe<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Null,
    Array,
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for InspectedBody<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = InspectedBody<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let (mut model, mut messages, mut stream, mut metadata_user_id) = (None, None, None, None);
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "model" => model = Some(entries.next_value::<Probe<'de>>()?),
                        "messages" => messages = Some(entries.next_value::<Probe<'de>>()?),
                        "stream" => stream = Some(entries.next_value::<Probe<'de>>()?),
                        "metadata" => metadata_user_id = entries.next_value::<MetadataUser>()?.0,
                        _ => {
                            entries.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(InspectedBody::Object { model, messages, stream, metadata_user_id })
            }

            crate::json_visit::any_non_object_is!(InspectedBody::NotAnObject);
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Probe<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = Probe<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Probe::Str(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Probe::Str(Cow::Owned(text.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(Probe::Bool(value))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Probe::Null)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Probe::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Probe::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Probe::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Probe::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Probe::Other)
            }
        }
        deserializer.deserialize_any(ProbeVisitor)
    }
}

/// `metadata.user_id` when `metadata` is an object and its (last) `user_id` a string; any other `metadata`
/// is skipped, as `Value::get` would find nothing in it.
struct MetadataUser(Option<String>);

impl<'de> Deserialize<'de> for MetadataUser {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = MetadataUser;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut user_id = None;
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    if key == "user_id" {
                        user_id = match entries.next_value::<Probe<'de>>()? {
                            Probe::Str(text) => Some(text.into_owned()),
                            _ => None,
                        };
                    } else {
                        entries.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(MetadataUser(user_id))
            }

            crate::json_visit::any_non_object_is!(MetadataUser(None));
        }
        deserializer.deserialize_any(MetadataVisitor)
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

    fn parse(json: &str) -> Result<MessagesBody, ApiError> {
        MessagesBody::parse(&Bytes::copy_from_slice(json.as_bytes()))
    }

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
        let body = |json: &str| parse(json).unwrap();
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
            match parse(body) {
                Err(ApiError::InvalidRequest(message)) => assert!(message.contains(expected), "{body}: {message}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(parse(r#"{"model":"m","messages":[],"stream":true}"#).unwrap().stream);
    }

    /// The reference reading: the whole body as a `serde_json::Value`, as the proxy read it before the one-pass
    /// inspection; `Err` holds the start of the error message.
    fn parse_by_whole_value(json: &str) -> Result<(String, bool, Option<String>), &'static str> {
        if json.bytes().all(|byte| byte.is_ascii_whitespace()) {
            return Err("the request body is empty");
        }
        let Ok(value) = serde_json::from_str::<Value>(json) else { return Err("the request body is not valid JSON") };
        let Value::Object(fields) = value else { return Err("the request body must be a JSON object") };
        let model = match fields.get("model") {
            Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
            Some(_) => return Err("model: must be"),
            None => return Err("model: field required"),
        };
        match fields.get("messages") {
            Some(Value::Array(_)) => {}
            Some(_) => return Err("messages: must be"),
            None => return Err("messages: field required"),
        }
        let stream = match fields.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err("stream: must be"),
        };
        let user = fields.get("metadata").and_then(|metadata| metadata.get("user_id")).and_then(Value::as_str).map(str::to_owned);
        Ok((model, stream, user))
    }

    #[test]
    fn the_one_pass_inspection_reads_exactly_what_the_whole_value_reading_reads() {
        for json in [
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi \"x\" \u00e9"}]}],"stream":true}"#,
            r#"{"model":"m\u0031","messages":[],"stream":null,"max_tokens":5}"#,
            r#"{"mod\u0065l":"escaped key","messages":[]}"#,
            r#"{"model":"first","model":"last","messages":[],"stream":true,"stream":false}"#,
            r#"{"model":"m","messages":[],"messages":{}}"#,
            r#"{"model":"m","messages":{},"messages":[]}"#,
            r#"{"model":"  ","messages":[]}"#,
            r#"{"model":null,"messages":[]}"#,
            r#"{"model":["m"],"messages":[]}"#,
            r#"{"model":"m","messages":"[]"}"#,
            r#"{"model":"m","messages":[],"stream":"true"}"#,
            r#"{"model":"m","messages":[],"stream":1}"#,
            r#"{"model":"m","messages":[],"metadata":{"user_id":"u1"}}"#,
            r#"{"model":"m","messages":[],"metadata":{"user_id":"u1","user_id":5}}"#,
            r#"{"model":"m","messages":[],"metadata":{"user_id":"u1"},"metadata":"x"}"#,
            r#"{"model":"m","messages":[],"metadata":["user_id"]}"#,
            r#"{"model":"m","messages":[],"metadata":{"other":{"user_id":"nested"}}}"#,
            r#"{"model":"m","messages":[],"metadata":{"user_id":"a\nb"}}"#,
            r#"{"model":"m","messages":[]} x"#,
            r#"{"model":"m","messages":[}"#,
            r#"{"model":"m","messages":[],"x":[[[{"y":tru}]]]}"#,
            "[]",
            "\"text\"",
            "5",
            "null",
            " ",
        ] {
            let expected = parse_by_whole_value(json);
            match (parse(json), expected) {
                (Ok(body), Ok((model, stream, user))) => {
                    assert_eq!((body.model.clone(), body.stream, body.metadata_user_id.clone()), (model, stream, user), "{json}");
                    assert_eq!(body.metadata_user(), body.metadata_user_id.as_deref().and_then(clean_user_id), "{json}");
                }
                (Err(ApiError::InvalidRequest(message)), Err(start)) => assert!(message.starts_with(start), "{json}: {message}"),
                (got, expected) => panic!("{json}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn the_whole_object_is_parsed_when_asked_for() {
        let body = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":64,"system":"s"}"#).unwrap();
        assert_eq!(body.fields.get("max_tokens").and_then(Value::as_u64), Some(64));
        let whole = body.fields.whole().unwrap();
        assert_eq!(whole.keys().collect::<Vec<_>>(), ["max_tokens", "messages", "model", "system"]);
        assert_eq!(whole["messages"][0]["content"], "hi");
        // A number too large for a float is skipped by the inspection, refused by the whole reading.
        let huge = parse(r#"{"model":"m","messages":[],"temperature":1e400}"#).unwrap();
        assert!(matches!(huge.fields.whole(), Err(ApiError::InvalidRequest(message)) if message.contains("not valid JSON")));
        assert_eq!(huge.fields.get("model"), None);
    }

    #[test]
    fn user_ids_are_cleaned() {
        assert_eq!(clean_user_id("  bob  ").as_deref(), Some("bob"));
        assert_eq!(clean_user_id("_session_x"), None);
        assert_eq!(clean_user_id("a\nb"), None);
        assert_eq!(clean_user_id(&"x".repeat(300)).unwrap().len(), MAX_USER_ID_CHARS);
    }
}
