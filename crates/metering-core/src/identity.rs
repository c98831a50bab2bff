//! Who is calling, taken only from claims an authorizer has already verified (API Gateway's Cognito
//! authorizer in AWS, the local server's verifier on a laptop) — never from the body or the query.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

pub const TENANT_CLAIM: &str = "custom:tenant_id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIdentity {
    pub tenant_id: String,
    /// The Cognito `sub`: stable for the user's life, unlike the username.
    pub user_id: String,
    pub username: Option<String>,
    pub groups: Vec<String>,
}

impl TenantIdentity {
    /// Builds the identity from the authorizer's claims (`requestContext.authorizer.claims`).
    ///
    /// API Gateway passes every claim as a string; `cognito:groups` arrives as `"admin"`, `"[a, b]"` or a
    /// JSON array depending on the path, so all three are accepted.
    pub fn from_claims(claims: &HashMap<String, Value>) -> Result<Self, ApiError> {
        let text = |name: &str| claims.get(name).and_then(claim_text).filter(|value| !value.is_empty());
        let user_id = text("sub").ok_or_else(|| ApiError::Unauthenticated("the token carries no subject".into()))?;
        let tenant_id = text(TENANT_CLAIM).ok_or_else(|| {
            ApiError::Forbidden("this user belongs to no tenant (the token has no custom:tenant_id claim)".into())
        })?;
        if !is_valid_tenant_id(&tenant_id) {
            return Err(ApiError::Forbidden("the token's tenant id is not valid".into()));
        }
        Ok(Self {
            tenant_id,
            user_id,
            username: text("cognito:username"),
            groups: claims.get("cognito:groups").map(parse_groups).unwrap_or_default(),
        })
    }

    pub fn is_in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|member_of| member_of == group)
    }
}

/// Tenant ids become parts of DynamoDB keys (`TENANT#<id>#...`) and S3 rows: keep them to a safe alphabet.
pub fn is_valid_tenant_id(tenant_id: &str) -> bool {
    (1..=128).contains(&tenant_id.len())
        && tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn parse_groups(value: &Value) -> Vec<String> {
    let names: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(claim_text).collect(),
        Value::String(text) => {
            let trimmed = text.trim();
            if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(trimmed) {
                items.iter().filter_map(claim_text).collect()
            } else {
                trimmed
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split([',', ' '])
                    .map(|name| name.trim().to_owned())
                    .collect()
            }
        }
        _ => Vec::new(),
    };
    names.into_iter().filter(|name| !name.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> HashMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn identity_comes_from_the_claims() {
        let identity = TenantIdentity::from_claims(&claims(json!({
            "sub": "u-1", "custom:tenant_id": "acme", "cognito:username": "alice", "cognito:groups": "admin"
        })))
        .unwrap();
        assert_eq!(identity.tenant_id, "acme");
        assert_eq!(identity.user_id, "u-1");
        assert_eq!(identity.username.as_deref(), Some("alice"));
        assert!(identity.is_in_group("admin"));
    }

    #[test]
    fn no_tenant_claim_is_forbidden_not_unauthenticated() {
        let error = TenantIdentity::from_claims(&claims(json!({"sub": "u-1"}))).unwrap_err();
        assert!(matches!(error, ApiError::Forbidden(_)));
        let blank = TenantIdentity::from_claims(&claims(json!({"sub": "u-1", "custom:tenant_id": "  "}))).unwrap_err();
        assert!(matches!(blank, ApiError::Forbidden(_)));
    }

    #[test]
    fn a_tenant_id_that_could_forge_keys_is_refused() {
        let error =
            TenantIdentity::from_claims(&claims(json!({"sub": "u", "custom:tenant_id": "a#DAY#x"}))).unwrap_err();
        assert!(matches!(error, ApiError::Forbidden(_)));
    }

    #[test]
    fn groups_parse_in_every_form_api_gateway_uses() {
        for groups in [json!("[admin, ops]"), json!("admin,ops"), json!(["admin", "ops"]), json!("[\"admin\",\"ops\"]")] {
            let identity = TenantIdentity::from_claims(&claims(json!({
                "sub": "u", "custom:tenant_id": "t", "cognito:groups": groups
            })))
            .unwrap();
            assert_eq!(identity.groups, vec!["admin".to_string(), "ops".to_string()]);
        }
    }
}
