//! Who is calling, taken only from claims an authorizer has already verified (API Gateway's Cognito
//! authorizer in AWS, the local server's verifier on a laptop) — never from the body or the query.
//!
//! Identity is exact: a claim is used as it arrives or refused. Nothing is trimmed, case-folded or
//! converted, because `"acme "`, `"ACME"` and `["acme"]` must never become tenant `acme`.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

pub const TENANT_CLAIM: &str = "custom:tenant_id";
pub const GROUPS_CLAIM: &str = "cognito:groups";

/// The separator of `cognito:groups` as API Gateway's REST API Cognito (`COGNITO_USER_POOLS`) authorizer
/// hands it to a Lambda proxy integration in `requestContext.authorizer.claims`: every claim becomes a
/// string, and the ID token's array of groups becomes its names joined by `,` (one group: just its name).
/// Sources: the claims of a one-group user as API Gateway passed them,
/// <https://repost.aws/questions/QUFJRBaEJRSmmqarNrvCWoQA/aws-cognito-group> (`'cognito:groups': 'team_manager'`);
/// several groups, <https://openillumi.com/en/en-api-gateway-cognito-jwt-claim-conversion-zero-trust>
/// (`["group-a","group-b"]` becomes `"group-a,group-b"`) and AWS's own Chalice answer,
/// <https://github.com/aws/chalice/issues/783> (`claims['cognito:groups'].split(',')`).
/// The HTTP API's JWT authorizer writes `"[a b]"` instead; this gateway is a REST API, so that form is not
/// parsed. A group name containing `,` would be ambiguous: the CDK app and the operator scripts refuse to
/// create one (see [`is_valid_group_name`]), and the local authorizer refuses tokens carrying one.
pub const GROUPS_SEPARATOR: char = ',';

/// Characters a group name may not contain: the REST form's separator, and (to stay unambiguous should the
/// API ever move to the HTTP API's `"[a b]"` form) whitespace and square brackets.
pub fn is_valid_group_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count())
        && !name.chars().any(|c| c == GROUPS_SEPARATOR || c == '[' || c == ']' || c.is_whitespace() || c.is_control())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIdentity {
    pub tenant_id: String,
    /// The Cognito `sub`: stable for the user's life, unlike the username.
    pub user_id: String,
    pub username: Option<String>,
    pub groups: Vec<String>,
}

/// The message of every refused tenant claim: which check failed goes to the logs, not to the caller.
pub const TENANT_REFUSED: &str = "this user is not bound to a valid tenant";

impl TenantIdentity {
    /// Builds the identity from the authorizer's claims (`requestContext.authorizer.claims`), where API
    /// Gateway passes every claim as a string. A claim of any other JSON type is refused, never converted.
    pub fn from_claims(claims: &HashMap<String, Value>) -> Result<Self, ApiError> {
        let user_id = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(ApiError::Unauthenticated(crate::error::TOKEN_NOT_ACCEPTED.into())),
        };
        let tenant_id = match claims.get(TENANT_CLAIM) {
            Some(Value::String(tenant_id)) if is_valid_tenant_id(tenant_id) => tenant_id.clone(),
            other => {
                tracing::warn!(
                    user_id = %user_id,
                    claim = ?other.map(std::string::ToString::to_string),
                    "refused: the custom:tenant_id claim is missing or not a valid tenant id"
                );
                return Err(ApiError::Forbidden(TENANT_REFUSED.into()));
            }
        };
        let username = match claims.get("cognito:username") {
            Some(Value::String(name)) => Some(name.clone()),
            _ => None,
        };
        let groups = match claims.get(GROUPS_CLAIM) {
            None => Vec::new(),
            Some(Value::String(joined)) => parse_groups(joined),
            Some(other) => {
                tracing::warn!(user_id = %user_id, claim = %other, "refused: cognito:groups is not a string");
                return Err(ApiError::Forbidden("this user's groups are not valid".into()));
            }
        };
        Ok(Self { tenant_id, user_id, username, groups })
    }

    /// As [`Self::from_claims`], then admitted by the tenant registry: a tenant id that differs only by case
    /// from a registered one is refused (403), and an unanswerable registry is a 503 (see `tenant_registry`).
    /// Every route that turns claims into a tenant goes through here.
    pub async fn from_claims_admitted(
        claims: &HashMap<String, Value>,
        tenants: &dyn crate::tenant_registry::TenantRegistry,
    ) -> Result<Self, ApiError> {
        let identity = Self::from_claims(claims)?;
        crate::tenant_registry::admit(tenants, &identity).await?;
        Ok(identity)
    }

    /// Exact membership: `Admin`, ` admin` or `[admin]` are not `admin`.
    pub fn is_in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|member_of| member_of == group)
    }
}

/// Tenant ids become parts of DynamoDB keys (`TENANT#<id>#...`) and S3 rows: exactly `[A-Za-z0-9._-]{1,128}`.
/// The operator scripts (`scripts/lib/tenant_names.py`) apply the same rule before calling Cognito.
pub fn is_valid_tenant_id(tenant_id: &str) -> bool {
    (1..=128).contains(&tenant_id.len())
        && tenant_id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The names of API Gateway's REST form (see [`GROUPS_SEPARATOR`]), each exactly as written.
fn parse_groups(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(GROUPS_SEPARATOR).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> HashMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    fn identity(tenant: Value, groups: Option<Value>) -> Result<TenantIdentity, ApiError> {
        let mut all = json!({"sub": "u-1", "custom:tenant_id": tenant, "cognito:username": "alice"});
        if let Some(groups) = groups {
            all["cognito:groups"] = groups;
        }
        TenantIdentity::from_claims(&claims(all))
    }

    #[test]
    fn identity_comes_from_the_claims() {
        let identity = identity(json!("acme"), Some(json!("admin"))).unwrap();
        assert_eq!(identity.tenant_id, "acme");
        assert_eq!(identity.user_id, "u-1");
        assert_eq!(identity.username.as_deref(), Some("alice"));
        assert!(identity.is_in_group("admin"));
    }

    #[test]
    fn no_tenant_claim_is_forbidden_not_unauthenticated() {
        let error = TenantIdentity::from_claims(&claims(json!({"sub": "u-1"}))).unwrap_err();
        assert!(matches!(error, ApiError::Forbidden(_)));
    }

    #[test]
    fn the_tenant_claim_is_taken_exactly_or_refused() {
        for accepted in ["acme", "ACME", "a", "t-1_2.3", &"x".repeat(128)] {
            assert_eq!(identity(json!(accepted), None).unwrap().tenant_id, accepted, "as it is, never folded");
        }
        for refused in [
            json!("acme "),
            json!(" acme"),
            json!("acme\t"),
            json!("acme\n"),
            json!(""),
            json!("  "),
            json!("a#DAY#x"),
            json!("a,b"),
            json!("acme\u{00a0}"),
            json!("ａcme"),
            json!("x".repeat(129)),
            json!(null),
            json!(1000),
            json!(1e3),
            json!(true),
            json!(["acme"]),
            json!({"id": "acme"}),
        ] {
            let error = identity(refused.clone(), None).unwrap_err();
            assert!(matches!(error, ApiError::Forbidden(_)), "{refused} -> {error:?}");
            assert!(!error.to_string().contains("acme"), "the message is generic: {error}");
        }
    }

    #[test]
    fn a_non_string_or_empty_subject_is_unauthenticated() {
        for sub in [json!(null), json!(""), json!(42), json!(["u"])] {
            let error = TenantIdentity::from_claims(&claims(json!({"sub": sub, "custom:tenant_id": "t"}))).unwrap_err();
            assert!(matches!(error, ApiError::Unauthenticated(_)), "{sub}");
        }
    }

    #[test]
    fn groups_parse_in_api_gateways_rest_form_only() {
        let groups = |value: Value| identity(json!("t"), Some(value)).map(|identity| identity.groups);
        assert_eq!(groups(json!("admin")).unwrap(), vec!["admin"]);
        assert_eq!(groups(json!("admin,ops")).unwrap(), vec!["admin", "ops"]);
        assert_eq!(groups(json!("")).unwrap(), Vec::<String>::new());
        // Names are exact: no trimming, no brackets stripped, no case folding, no other separators.
        assert_eq!(groups(json!("[admin, ops]")).unwrap(), vec!["[admin", " ops]"]);
        assert_eq!(groups(json!("[admin]")).unwrap(), vec!["[admin]"]);
        assert_eq!(groups(json!("support admin")).unwrap(), vec!["support admin"]);
        assert!(groups(json!(["admin"])).is_err(), "API Gateway never passes an array");
    }

    #[test]
    fn only_the_exact_admin_name_is_admin() {
        for not_admin in ["[admin]", " admin", "admin ", "Admin", "ADMIN", "[admin, ops]", "support admin", "admin\t"] {
            let identity = identity(json!("t"), Some(json!(not_admin))).unwrap();
            assert!(!identity.is_in_group("admin"), "{not_admin:?} is not admin");
        }
        assert!(identity(json!("t"), Some(json!("ops,admin"))).unwrap().is_in_group("admin"));
    }

    #[test]
    fn group_names_with_a_separator_are_not_valid() {
        for bad in ["support,admin", "[admin]", " admin", "admin ", "a b", "", "a\tb"] {
            assert!(!is_valid_group_name(bad), "{bad:?}");
        }
        for good in ["admin", "Admin", "support-team", "ops.eu_1", "équipe"] {
            assert!(is_valid_group_name(good), "{good:?}");
        }
    }
}
