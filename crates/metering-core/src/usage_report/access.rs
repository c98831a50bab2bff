//! Who may read whose usage: a user reads their own tenant; a member of the admin group reads any tenant
//! and the list of all tenants. A refusal never says whether the other tenant exists.

use crate::error::ApiError;
use crate::identity::{is_valid_tenant_id, TenantIdentity};

fn forbidden() -> ApiError {
    ApiError::Forbidden("you may read only your own tenant's usage".into())
}

/// The tenant `identity` may read when it asks for `requested` (already percent-decoded, exactly once).
pub fn readable_tenant(identity: &TenantIdentity, requested: &str, admin_group: &str) -> Result<String, ApiError> {
    // Tenant ids are compared exactly: `ACME` is not `acme`.
    if requested == identity.tenant_id {
        return Ok(requested.to_owned());
    }
    // Non-admins learn nothing more, whether the id is valid, unknown or somebody else's.
    if !identity.is_in_group(admin_group) {
        return Err(forbidden());
    }
    if !is_valid_tenant_id(requested) {
        return Err(ApiError::InvalidRequest("tenant_id must be 1 to 128 characters of letters, digits, '-', '_' or '.'".into()));
    }
    Ok(requested.to_owned())
}

pub fn may_list_tenants(identity: &TenantIdentity, admin_group: &str) -> Result<(), ApiError> {
    if identity.is_in_group(admin_group) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("listing every tenant's usage needs membership of the {admin_group} group")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tenant: &str, groups: &[&str]) -> TenantIdentity {
        TenantIdentity {
            tenant_id: tenant.into(),
            user_id: "u".into(),
            username: None,
            groups: groups.iter().map(std::string::ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_user_reads_only_their_own_tenant_and_cannot_tell_others_apart() {
        let alice = user("acme", &["users"]);
        assert_eq!(readable_tenant(&alice, "acme", "admin").unwrap(), "acme");
        let refusals: Vec<ApiError> = ["globex", "ACME", "acme/..", "", "a#DAY#x", "acme "]
            .iter()
            .map(|requested| readable_tenant(&alice, requested, "admin").unwrap_err())
            .collect();
        assert!(refusals.iter().all(|error| *error == forbidden()), "{refusals:?}");
        assert!(may_list_tenants(&alice, "admin").is_err());
    }

    #[test]
    fn an_admin_reads_any_valid_tenant() {
        let root = user("ops", &["admin"]);
        assert_eq!(readable_tenant(&root, "globex", "admin").unwrap(), "globex");
        assert!(matches!(readable_tenant(&root, "a/b", "admin"), Err(ApiError::InvalidRequest(_))));
        assert!(may_list_tenants(&root, "admin").is_ok());
        assert!(may_list_tenants(&root, "operators").is_err(), "the admin group is configurable");
    }
}
