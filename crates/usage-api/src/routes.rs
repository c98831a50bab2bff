//! The routes of the usage function. Paths match exactly and case-sensitively; anything else is 404.

/// A static file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Page,
    /// `/ui/`: redirected to `/ui`, against which the page's relative links resolve.
    PageWithSlash,
    Script,
    Style,
    Config,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'p> {
    /// `GET /v1/usage/me`
    OwnUsage,
    /// `GET /v1/usage/{tenant_id}`: the segment as sent (still percent-encoded).
    TenantUsage(&'p str),
    /// `GET /v1/usage`
    AllTenants,
    /// `GET /v1/limits/me`
    OwnLimits,
    /// `GET|PUT|DELETE /v1/limits/{tenant_id}` (admins): the segment as sent (still percent-encoded).
    TenantLimits(&'p str),
    /// `GET /ui`, `/ui/app.js`, `/ui/app.css`, `/ui/config.json` (no authorizer).
    Dashboard(Asset),
    NotFound,
}

impl<'p> Route<'p> {
    pub fn parse(path: &'p str) -> Self {
        match path {
            "/v1/usage" => return Self::AllTenants,
            "/v1/usage/me" => return Self::OwnUsage,
            "/v1/limits/me" => return Self::OwnLimits,
            "/ui" => return Self::Dashboard(Asset::Page),
            "/ui/" => return Self::Dashboard(Asset::PageWithSlash),
            "/ui/app.js" => return Self::Dashboard(Asset::Script),
            "/ui/app.css" => return Self::Dashboard(Asset::Style),
            "/ui/config.json" => return Self::Dashboard(Asset::Config),
            _ => {}
        }
        let one_segment =
            |prefix: &str| path.strip_prefix(prefix).filter(|segment| !segment.is_empty() && !segment.contains('/'));
        if let Some(segment) = one_segment("/v1/usage/") {
            return Self::TenantUsage(segment);
        }
        match one_segment("/v1/limits/") {
            Some(segment) => Self::TenantLimits(segment),
            None => Self::NotFound,
        }
    }

    /// Routes behind the Cognito authorizer.
    pub fn needs_identity(&self) -> bool {
        matches!(self, Self::OwnUsage | Self::TenantUsage(_) | Self::AllTenants | Self::OwnLimits | Self::TenantLimits(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_exactly() {
        assert_eq!(Route::parse("/v1/usage"), Route::AllTenants);
        assert_eq!(Route::parse("/v1/usage/me"), Route::OwnUsage);
        assert_eq!(Route::parse("/v1/usage/acme"), Route::TenantUsage("acme"));
        assert_eq!(Route::parse("/v1/usage/B%2F.."), Route::TenantUsage("B%2F.."));
        assert_eq!(Route::parse("/v1/limits/me"), Route::OwnLimits);
        assert_eq!(Route::parse("/v1/limits/acme"), Route::TenantLimits("acme"));
        assert_eq!(Route::parse("/v1/limits/a/b"), Route::NotFound);
        assert_eq!(Route::parse("/v1/limits/"), Route::NotFound);
        assert_eq!(Route::parse("/v1/limits"), Route::NotFound);
        assert_eq!(Route::parse("/ui"), Route::Dashboard(Asset::Page));
        assert_eq!(Route::parse("/ui/config.json"), Route::Dashboard(Asset::Config));
        for unknown in
            ["/", "/v1/usage/", "/v1/usage/a/b", "/v1/usage/me/../b", "/V1/USAGE/me", "//v1/usage/a", "/v1/usages", "/ui/x"]
        {
            assert_eq!(Route::parse(unknown), Route::NotFound, "{unknown}");
        }
    }
}
