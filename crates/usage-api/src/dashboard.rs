//! The `/ui` dashboard: plain HTML, JavaScript and CSS compiled into the binary (no build step, no CDN), and
//! the small `config.json` that tells the page where to sign in. These routes sit outside the authorizer:
//! the page holds no data; it signs the user in with Cognito and calls the usage API with the IdToken.

use api_gateway_lambda::JsonError;
use axum::body::Body;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use metering_core::usage_config::DashboardConfig;
use metering_core::ApiError;
use serde_json::json;

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

impl Asset {
    /// The file under `/ui/`, named exactly.
    pub fn of_file(name: &str) -> Option<Self> {
        match name {
            "app.js" => Some(Self::Script),
            "app.css" => Some(Self::Style),
            "config.json" => Some(Self::Config),
            _ => None,
        }
    }
}

const PAGE: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

pub fn response(asset: Asset, config: &DashboardConfig, admin_group: &str) -> Result<Response, JsonError> {
    let (content_type, body, cache) = match asset {
        Asset::PageWithSlash => {
            // Relative, so it also works under an API Gateway stage (`/prod/ui/` -> `/prod/ui`).
            return Response::builder()
                .status(308)
                .header(http::header::LOCATION, "../ui")
                .body(Body::empty())
                .map_err(|error| JsonError(ApiError::Internal(format!("could not build the response: {error}"))));
        }
        Asset::Page => ("text/html; charset=utf-8", PAGE.to_owned(), "no-cache"),
        Asset::Script => ("text/javascript; charset=utf-8", SCRIPT.to_owned(), "no-cache"),
        Asset::Style => ("text/css; charset=utf-8", STYLE.to_owned(), "no-cache"),
        Asset::Config => ("application/json", config_body(config, admin_group).to_string(), "no-store"),
    };
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, cache)
        .header("content-security-policy", content_security_policy(&config.cognito_endpoint))
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(Body::from(body))
        .map_err(|error| JsonError(ApiError::Internal(format!("could not build the response: {error}"))))
}

fn config_body(config: &DashboardConfig, admin_group: &str) -> serde_json::Value {
    json!({
        "cognito_endpoint": config.cognito_endpoint,
        "cognito_client_id": config.cognito_client_id,
        "region": config.region,
        "admin_group": admin_group,
    })
}

/// Scripts and styles only from this origin; network calls only to this origin and to Cognito.
fn content_security_policy(cognito_endpoint: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' {}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        origin_of(cognito_endpoint)
    )
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |index| index + 3);
    match url[after_scheme..].find('/') {
        Some(index) => &url[..after_scheme + index],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_this_origin_and_cognito() {
        assert_eq!(origin_of("https://cognito-idp.eu-west-1.amazonaws.com/"), "https://cognito-idp.eu-west-1.amazonaws.com");
        assert_eq!(origin_of("http://127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert!(content_security_policy("http://127.0.0.1:5000/x").contains("connect-src 'self' http://127.0.0.1:5000;"));
    }

    #[test]
    fn the_page_references_only_its_own_files() {
        assert!(PAGE.contains("app.js") && PAGE.contains("app.css"));
        for text in [PAGE, SCRIPT, STYLE] {
            assert!(!text.contains("cdn.") && !text.contains("unpkg") && !text.contains("googleapis"), "no CDN");
        }
    }
}
