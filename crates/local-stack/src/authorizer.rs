//! What API Gateway's Cognito user pool authorizer does, for the local server: verify an IdToken against
//! the pool's JWKS (RS256 only; signature, `iss`, `aud` = app client, `token_use` = `id`, `exp`) and hand
//! the claims on as strings, as API Gateway does. The JWKS is fetched once, cached, and refreshed when a
//! token names an unknown `kid` (at most once per `MIN_REFRESH_INTERVAL`). Like API Gateway's authorizer, it
//! caches what it verified, keyed by the whole token ([`VerifiedTokens`]): until the token's `exp`, for at most
//! `CognitoSettings::cache_ttl`.
//!
//! It is stricter than it needs to be for tokens Cognito issues, so that a token signed with the right key
//! but built by hand cannot bend identity: a key repeated in the header or the payload (parsers disagree on
//! which one wins), any `crit` header (RFC 7515 §4.1.11: no extension is understood here), an `iat` more than
//! five minutes ahead, a tenant claim that is not a string, or a group name containing the `,` that API
//! Gateway joins groups with are all refused. Every refusal answers the same 401 body
//! ([`metering_core::error::TOKEN_NOT_ACCEPTED`]); the reason is logged with the request id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use metering_core::error::TOKEN_NOT_ACCEPTED;
use metering_core::identity::{GROUPS_CLAIM, GROUPS_SEPARATOR, TENANT_CLAIM};
use metering_core::ApiError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use thiserror::Error;
use tokio::sync::RwLock;

use crate::verified_tokens::{Claims, VerifiedTokens};

const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How far in the future an `iat` may be (clock skew between Cognito and this host).
const MAX_IAT_AHEAD_SECONDS: i64 = 300;
/// API Gateway's authorizer cache TTL by default (seconds), and its largest.
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 300;
pub const MAX_CACHE_TTL_SECONDS: u64 = 3600;
/// Verified tokens kept at most (a token and its claims are about 2 KB: 2 MB at most).
const CACHED_TOKENS: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(capacity) => capacity,
    None => NonZeroUsize::MIN,
};

#[derive(Debug, Clone)]
pub struct CognitoSettings {
    pub jwks_url: String,
    /// `https://cognito-idp.<region>.amazonaws.com/<pool_id>`: the issuer Cognito (and moto) write.
    pub issuer: String,
    /// The app client id, which Cognito writes as the IdToken's `aud`.
    pub client_id: String,
    /// How long a verified token is answered from the cache at most (never past its `exp`); zero: no cache.
    pub cache_ttl: Duration,
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsupported token algorithm {0:?}; only RS256 is accepted")]
    Algorithm(String),
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token_use must be \"id\" (send the IdToken, not the access token)")]
    NotAnIdToken,
    #[error("signing keys unavailable: {0}")]
    Jwks(String),
    #[error("the token's {0} repeats a key: {1}")]
    DuplicateKey(&'static str, String),
    #[error("the token has a crit header, and no extension is understood here")]
    CriticalHeader,
    #[error("the token was issued {0}s in the future")]
    IssuedInTheFuture(i64),
    #[error("claim {0} has the wrong type or form")]
    ClaimForm(&'static str),
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Jwks(_) => ApiError::Unavailable {
                message: "the token could not be verified right now (signing keys unavailable)".into(),
                retry_after_seconds: 5,
            },
            _ => ApiError::Unauthenticated(TOKEN_NOT_ACCEPTED.into()),
        }
    }
}

struct CachedKeys {
    keys: JwkSet,
    fetched_at: Instant,
}

pub struct CognitoAuthorizer {
    settings: CognitoSettings,
    http: reqwest::Client,
    cache: RwLock<Option<CachedKeys>>,
    verified: VerifiedTokens,
}

impl CognitoAuthorizer {
    pub fn new(settings: CognitoSettings) -> Self {
        let http = claude_proxy::https::client_builder()
            .and_then(|builder| builder.timeout(Duration::from_secs(5)).build())
            .unwrap_or_default();
        let verified = VerifiedTokens::new(CACHED_TOKENS, settings.cache_ttl);
        Self { settings, http, cache: RwLock::new(None), verified }
    }

    /// Verifies the request's `Authorization` header, logging why a token was refused (with the request id)
    /// and answering the generic error API Gateway would.
    pub async fn authorize_request(&self, headers: &http::HeaderMap, request_id: &str) -> Result<Claims, ApiError> {
        let authorization = headers.get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        self.authorize(authorization).await.map_err(|error| {
            tracing::info!(request_id, reason = %error, "token refused");
            ApiError::from(error)
        })
    }

    /// Verifies `Authorization: Bearer <IdToken>` and returns the claims as API Gateway passes them: from the
    /// cache when this very token was verified before and its entry still holds.
    pub async fn authorize(&self, authorization: Option<&str>) -> Result<Claims, TokenError> {
        let token = bearer_token(authorization).ok_or(TokenError::Missing)?;
        let now = chrono::Utc::now().timestamp();
        if let Some(claims) = self.verified.get(token, now) {
            return Ok(Claims::clone(&claims));
        }
        let (claims, expires_at) = self.verify(token, now).await?;
        let claims = Arc::new(claims);
        self.verified.insert(token, Arc::clone(&claims), expires_at, now);
        Ok(Arc::unwrap_or_clone(claims))
    }

    /// The full verification of one token: its claims as API Gateway passes them, and its `exp`.
    async fn verify(&self, token: &str, now: i64) -> Result<(Claims, i64), TokenError> {
        let header_json = check_segments(token)?;
        if header_json.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        let header = decode_header(token).map_err(|error| TokenError::Malformed(error.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.decoding_key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let data =
            decode::<HashMap<String, Value>>(token, &key, &validation).map_err(|error| TokenError::Invalid(error.to_string()))?;
        if data.claims.get("token_use").and_then(Value::as_str) != Some("id") {
            return Err(TokenError::NotAnIdToken);
        }
        check_issued_at(&data.claims, now)?;
        check_identity_claims(&data.claims)?;
        // `exp` is required and checked as a number by the validation above.
        let expires_at = data.claims.get("exp").and_then(Value::as_f64).ok_or(TokenError::ClaimForm("exp"))? as i64;
        let claims = data.claims.into_iter().map(|(name, value)| (name, as_gateway_claim(value))).collect();
        Ok((claims, expires_at))
    }

    async fn decoding_key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(cached) = self.cache.read().await.as_ref() {
            if let Some(jwk) = cached.keys.find(kid) {
                return DecodingKey::from_jwk(jwk).map_err(|error| TokenError::Jwks(error.to_string()));
            }
            if cached.fetched_at.elapsed() < MIN_REFRESH_INTERVAL {
                return Err(TokenError::UnknownKey);
            }
        }
        let mut cache = self.cache.write().await;
        // Another request may have refreshed the keys while this one waited for the lock.
        let fresh_enough = cache.as_ref().is_some_and(|cached| cached.fetched_at.elapsed() < MIN_REFRESH_INTERVAL);
        if !fresh_enough {
            let keys = self.fetch_keys().await?;
            *cache = Some(CachedKeys { keys, fetched_at: Instant::now() });
        }
        let jwk = cache.as_ref().and_then(|cached| cached.keys.find(kid)).ok_or(TokenError::UnknownKey)?;
        DecodingKey::from_jwk(jwk).map_err(|error| TokenError::Jwks(error.to_string()))
    }

    async fn fetch_keys(&self) -> Result<JwkSet, TokenError> {
        tracing::info!(jwks_url = %self.settings.jwks_url, "fetching the user pool's signing keys");
        let response = self
            .http
            .get(&self.settings.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| TokenError::Jwks(error.to_string()))?;
        response.json::<JwkSet>().await.map_err(|error| TokenError::Jwks(error.to_string()))
    }
}

fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        // API Gateway's Cognito authorizer also accepts the bare token.
        None => value,
        Some(_) => return None,
    };
    (!token.is_empty()).then_some(token)
}

/// Decodes the header and payload segments and refuses a repeated key in either (serde_json, like most
/// parsers, would silently keep the last one). Returns the header's JSON object.
fn check_segments(token: &str) -> Result<serde_json::Map<String, Value>, TokenError> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(TokenError::Malformed("a JWS has three segments".into()));
    };
    let decode = |part: &'static str, segment: &str| -> Result<Vec<u8>, TokenError> {
        let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|error| TokenError::Malformed(format!("{part}: {error}")))?;
        serde_json::from_slice::<UniqueKeys>(&bytes).map_err(|error| {
            if error.is_data() {
                TokenError::DuplicateKey(part, error.to_string())
            } else {
                TokenError::Malformed(format!("{part}: {error}"))
            }
        })?;
        Ok(bytes)
    };
    let header_bytes = decode("header", header)?;
    decode("payload", payload)?;
    match serde_json::from_slice::<Value>(&header_bytes) {
        Ok(Value::Object(header)) => Ok(header),
        _ => Err(TokenError::Malformed("the header is not a JSON object".into())),
    }
}

/// `iat`, when present, is a number no more than `MAX_IAT_AHEAD_SECONDS` ahead of `now`.
fn check_issued_at(claims: &HashMap<String, Value>, now: i64) -> Result<(), TokenError> {
    let Some(issued_at) = claims.get("iat") else { return Ok(()) };
    let issued_at = issued_at.as_f64().ok_or(TokenError::ClaimForm("iat"))?;
    let ahead = issued_at - now as f64;
    if ahead > MAX_IAT_AHEAD_SECONDS as f64 {
        return Err(TokenError::IssuedInTheFuture(ahead as i64));
    }
    Ok(())
}

/// The claims identity is built from have the types Cognito writes: strings (`sub`, `custom:tenant_id`,
/// `cognito:username`) and an array of group names none of which contains API Gateway's separator, so that
/// the strings handed on below mean exactly what the token said.
fn check_identity_claims(claims: &HashMap<String, Value>) -> Result<(), TokenError> {
    for name in ["sub", TENANT_CLAIM, "cognito:username"] {
        if claims.get(name).is_some_and(|value| !value.is_string()) {
            return Err(TokenError::ClaimForm(match name {
                "sub" => "sub",
                "cognito:username" => "cognito:username",
                _ => TENANT_CLAIM,
            }));
        }
    }
    match claims.get(GROUPS_CLAIM) {
        None => Ok(()),
        Some(Value::Array(names))
            if names.iter().all(|name| name.as_str().is_some_and(|name| !name.contains(GROUPS_SEPARATOR))) =>
        {
            Ok(())
        }
        Some(_) => Err(TokenError::ClaimForm(GROUPS_CLAIM)),
    }
}

/// Any JSON, refused if an object repeats a key (at any depth).
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("JSON without repeated object keys")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E: de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<UniqueKeys, A::Error> {
        while items.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("repeated key {key:?}")));
            }
            entries.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// API Gateway hands every claim to the Lambda as a string (an array: its items joined by `,`).
fn as_gateway_claim(value: Value) -> Value {
    match value {
        Value::String(_) => value,
        Value::Array(items) => Value::String(
            items
                .iter()
                .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(&GROUPS_SEPARATOR.to_string()),
        ),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_taken_with_or_without_the_scheme() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    fn segment(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_repeated_key_in_the_header_or_the_payload_is_refused() {
        let header = segment(r#"{"alg":"RS256","kid":"dummy"}"#);
        let ok = format!("{header}.{}.sig", segment(r#"{"sub":"u","custom:tenant_id":"a","nested":{"x":1,"y":[{"z":1}]}}"#));
        assert!(check_segments(&ok).is_ok());
        let twice = format!("{header}.{}.sig", segment(r#"{"custom:tenant_id":"a","sub":"u","custom:tenant_id":"b"}"#));
        assert!(matches!(check_segments(&twice), Err(TokenError::DuplicateKey("payload", _))));
        let nested = format!("{header}.{}.sig", segment(r#"{"sub":"u","x":{"k":1,"k":2}}"#));
        assert!(matches!(check_segments(&nested), Err(TokenError::DuplicateKey("payload", _))));
        let header_twice = format!("{}.{}.sig", segment(r#"{"alg":"RS256","alg":"none"}"#), segment("{}"));
        assert!(matches!(check_segments(&header_twice), Err(TokenError::DuplicateKey("header", _))));
        assert!(matches!(check_segments("a.b"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn iat_may_be_at_most_five_minutes_ahead() {
        let claims = |iat: Value| HashMap::from([("iat".to_owned(), iat)]);
        let now = 1_800_000_000;
        assert!(check_issued_at(&claims(serde_json::json!(now + 300)), now).is_ok());
        assert!(check_issued_at(&claims(serde_json::json!(now - 3600)), now).is_ok());
        assert!(check_issued_at(&HashMap::new(), now).is_ok());
        assert!(matches!(check_issued_at(&claims(serde_json::json!(now + 301)), now), Err(TokenError::IssuedInTheFuture(_))));
        assert!(matches!(check_issued_at(&claims(serde_json::json!("soon")), now), Err(TokenError::ClaimForm("iat"))));
    }

    #[test]
    fn identity_claims_must_have_cognitos_types() {
        let claims = |name: &str, value: Value| HashMap::from([(name.to_owned(), value)]);
        for value in [serde_json::json!(null), serde_json::json!(1e3), serde_json::json!(["t"]), serde_json::json!(true)] {
            assert!(check_identity_claims(&claims(TENANT_CLAIM, value.clone())).is_err(), "{value}");
            assert!(check_identity_claims(&claims("sub", value.clone())).is_err(), "{value}");
        }
        assert!(check_identity_claims(&claims(TENANT_CLAIM, serde_json::json!("t"))).is_ok());
        assert!(check_identity_claims(&claims(GROUPS_CLAIM, serde_json::json!(["admin", "[ops]", " x"]))).is_ok());
        for groups in [serde_json::json!(["support,admin"]), serde_json::json!("admin"), serde_json::json!([1])] {
            assert!(check_identity_claims(&claims(GROUPS_CLAIM, groups.clone())).is_err(), "{groups}");
        }
    }

    #[test]
    fn every_refusal_but_unavailable_keys_answers_the_same_401() {
        for error in [TokenError::Missing, TokenError::Invalid("InvalidSignature".into()), TokenError::CriticalHeader] {
            let api_error = ApiError::from(error);
            assert_eq!(api_error, ApiError::Unauthenticated(TOKEN_NOT_ACCEPTED.into()));
        }
    }

    /// An authorizer whose signing keys cannot be fetched: any token it accepts came from its cache.
    fn authorizer_without_keys() -> CognitoAuthorizer {
        CognitoAuthorizer::new(CognitoSettings {
            jwks_url: "http://127.0.0.1:9/no-keys-here".into(),
            issuer: "https://cognito-idp.us-east-1.amazonaws.com/pool".into(),
            client_id: "client".into(),
            cache_ttl: Duration::from_secs(DEFAULT_CACHE_TTL_SECONDS),
        })
    }

    fn signed_shape(claims: &str) -> String {
        format!("{}.{}.c2ln", segment(r#"{"alg":"RS256","kid":"dummy"}"#), segment(claims))
    }

    #[tokio::test]
    async fn a_cached_token_is_answered_without_verification_until_its_exp() {
        // GIVEN a token the cache holds as verified
        let authorizer = authorizer_without_keys();
        let token = signed_shape(r#"{"sub":"u","custom:tenant_id":"acme"}"#);
        let mut claims = Claims::new();
        claims.insert(TENANT_CLAIM.into(), Value::String("acme".into()));
        let now = chrono::Utc::now().timestamp();
        authorizer.verified.insert(&token, Arc::new(claims.clone()), now + 60, now);
        // WHEN it comes back, with or without the scheme
        // THEN its claims are answered from the cache (the keys could not even be fetched)
        assert_eq!(authorizer.authorize(Some(&format!("Bearer {token}"))).await.unwrap(), claims);
        assert_eq!(authorizer.authorize(Some(&token)).await.unwrap(), claims);
        // AND a token differing in one byte is verified in full (here: refused, no keys)
        let tampered = signed_shape(r#"{"sub":"u","custom:tenant_id":"acmf"}"#);
        assert!(matches!(authorizer.authorize(Some(&tampered)).await, Err(TokenError::Jwks(_))));
        // AND a cached entry past its exp is verified in full again
        let expired = signed_shape(r#"{"sub":"u","custom:tenant_id":"old"}"#);
        authorizer.verified.insert(&expired, Arc::new(claims), now, now - 10);
        assert!(matches!(authorizer.authorize(Some(&expired)).await, Err(TokenError::Jwks(_))));
    }

    #[test]
    fn claims_become_strings_like_api_gateway_passes_them() {
        assert_eq!(as_gateway_claim(serde_json::json!(["admin", "ops"])), serde_json::json!("admin,ops"));
        assert_eq!(as_gateway_claim(serde_json::json!(1_700_000_000)), serde_json::json!("1700000000"));
    }
}
