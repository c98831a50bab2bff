//! What API Gateway's Cognito user pool authorizer does, for the local server: verify an IdToken against
//! the pool's JWKS (RS256 only; signature, `iss`, `aud` = app client, `token_use` = `id`, `exp`) and hand
//! the claims on as strings, as API Gateway does. The JWKS is fetched once, cached, and refreshed when a
//! token names an unknown `kid` (at most once per `MIN_REFRESH_INTERVAL`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use metering_core::ApiError;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::RwLock;

const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct CognitoSettings {
    pub jwks_url: String,
    /// `https://cognito-idp.<region>.amazonaws.com/<pool_id>`: the issuer Cognito (and moto) write.
    pub issuer: String,
    /// The app client id, which Cognito writes as the IdToken's `aud`.
    pub client_id: String,
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
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Jwks(_) => ApiError::Unavailable {
                message: "the token could not be verified right now (signing keys unavailable)".into(),
                retry_after_seconds: 5,
            },
            other => ApiError::Unauthenticated(format!("Unauthorized: {other}")),
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
}

impl CognitoAuthorizer {
    pub fn new(settings: CognitoSettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self { settings, http, cache: RwLock::new(None) }
    }

    /// Verifies `Authorization: Bearer <IdToken>` and returns the claims as API Gateway passes them.
    pub async fn authorize(&self, authorization: Option<&str>) -> Result<serde_json::Map<String, Value>, TokenError> {
        let token = bearer_token(authorization).ok_or(TokenError::Missing)?;
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
        let data = decode::<HashMap<String, Value>>(token, &key, &validation)
            .map_err(|error| TokenError::Invalid(error.to_string()))?;
        if data.claims.get("token_use").and_then(Value::as_str) != Some("id") {
            return Err(TokenError::NotAnIdToken);
        }
        Ok(data.claims.into_iter().map(|(name, value)| (name, as_gateway_claim(value))).collect())
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

/// API Gateway hands every claim to the Lambda as a string.
fn as_gateway_claim(value: Value) -> Value {
    match value {
        Value::String(_) => value,
        Value::Array(items) => Value::String(
            items.iter().map(|item| item.as_str().map(str::to_owned).unwrap_or_else(|| item.to_string())).collect::<Vec<_>>().join(","),
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

    #[test]
    fn claims_become_strings_like_api_gateway_passes_them() {
        assert_eq!(as_gateway_claim(serde_json::json!(["admin", "ops"])), serde_json::json!("admin,ops"));
        assert_eq!(as_gateway_claim(serde_json::json!(1700000000)), serde_json::json!("1700000000"));
    }
}
