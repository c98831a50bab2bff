//! The fake Bedrock's control plane: `ListInferenceProfiles` (`GET /inference-profiles`), what the Claude
//! proxy's model discovery calls (through `AWS_ENDPOINT_URL_BEDROCK`). A realistic listing of system-defined
//! cross-region profiles (`us.`, `eu.`, `apac.`, `global.`), as a us-east-1 account would see them, including
//! Claude models newer than any id hard-coded in the proxy (Opus 4.8, Sonnet 5) and ids in Bedrock's newer,
//! undated form (`anthropic.claude-opus-4-6-v1`), plus non-Claude profiles discovery must pass over.
//! Pages hold at most `PAGE_SIZE` profiles (fewer than `maxResults` asks for), so clients must follow
//! `nextToken`, as the real API allows.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fake_bedrock::aws_error;

const ACCOUNT: &str = "123456789012";
const HOME_REGION: &str = "us-east-1";
const PAGE_SIZE: usize = 10;

/// (foundation model id, display name, geographies it has a profile in).
pub const LISTED_MODELS: [(&str, &str, &[&str]); 17] = [
    ("anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku", &["us", "eu", "apac"]),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku", &["us"]),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "Claude 3.5 Sonnet v2", &["us", "apac"]),
    ("anthropic.claude-3-7-sonnet-20250219-v1:0", "Claude 3.7 Sonnet", &["us", "eu", "apac"]),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "Claude Sonnet 4", &["us", "eu", "apac", "global"]),
    ("anthropic.claude-opus-4-20250514-v1:0", "Claude Opus 4", &["us"]),
    ("anthropic.claude-opus-4-1-20250805-v1:0", "Claude Opus 4.1", &["us"]),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", "Claude Sonnet 4.5", &["us", "eu", "apac", "global"]),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "Claude Haiku 4.5", &["us", "eu", "global"]),
    ("anthropic.claude-opus-4-5-20251101-v1:0", "Claude Opus 4.5", &["us", "eu", "global"]),
    ("anthropic.claude-opus-4-6-v1", "Claude Opus 4.6", &["us", "eu", "global"]),
    ("anthropic.claude-sonnet-4-6", "Claude Sonnet 4.6", &["us", "eu", "global"]),
    ("anthropic.claude-opus-4-8-20260915-v1:0", "Claude Opus 4.8", &["us", "eu", "global"]),
    ("anthropic.claude-sonnet-5-20261105-v1:0", "Claude Sonnet 5", &["eu", "global"]),
    // Claude Code 2.1.332's default model (`claude-opus-5-5`).
    ("anthropic.claude-opus-5-5-20261120-v1:0", "Claude Opus 5.5", &["us", "eu", "global"]),
    ("meta.llama3-3-70b-instruct-v1:0", "Llama 3.3 70B Instruct", &["us"]),
    ("amazon.nova-pro-v1:0", "Nova Pro", &["us", "eu", "apac"]),
];

fn source_regions(geography: &str) -> &'static [&'static str] {
    match geography {
        "us" => &["us-east-1", "us-east-2", "us-west-2"],
        "eu" => &["eu-central-1", "eu-west-1", "eu-west-3"],
        "apac" => &["ap-northeast-1", "ap-south-1", "ap-southeast-2"],
        _ => &["us-east-1", "eu-west-1", "ap-northeast-1"],
    }
}

/// Every listed system-defined profile, in the API's JSON shape.
pub fn profiles() -> Vec<Value> {
    let mut listed = Vec::new();
    for (model_id, name, geographies) in LISTED_MODELS {
        for geography in geographies {
            let id = format!("{geography}.{model_id}");
            let regions = source_regions(geography);
            let label = if *geography == "global" { "Global".to_owned() } else { geography.to_uppercase() };
            listed.push(json!({
                "inferenceProfileName": format!("{label} {name}"),
                "description": format!("Routes requests to {name} in {}.", regions.join(", ")),
                "createdAt": "2025-01-01T00:00:00Z",
                "updatedAt": "2026-11-01T00:00:00Z",
                "inferenceProfileArn": format!("arn:aws:bedrock:{HOME_REGION}:{ACCOUNT}:inference-profile/{id}"),
                "models": regions
                    .iter()
                    .map(|region| json!({"modelArn": format!("arn:aws:bedrock:{region}::foundation-model/{model_id}")}))
                    .collect::<Vec<_>>(),
                "inferenceProfileId": id,
                "status": "ACTIVE",
                "type": "SYSTEM_DEFINED",
            }));
        }
    }
    listed
}

pub fn router() -> Router {
    Router::new().route("/inference-profiles", get(list_inference_profiles))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
    #[serde(rename = "type")]
    profile_type: Option<String>,
}

async fn list_inference_profiles(Query(query): Query<ListQuery>) -> Response {
    let all = match query.profile_type.as_deref() {
        None | Some("SYSTEM_DEFINED") => profiles(),
        // This account has no application profiles.
        Some("APPLICATION") => Vec::new(),
        Some(other) => {
            let message = format!("1 validation error detected: Value '{other}' at 'typeEquals' failed to satisfy constraint");
            return aws_error(StatusCode::BAD_REQUEST, "ValidationException", &message);
        }
    };
    let page_size = match query.max_results {
        None => PAGE_SIZE,
        Some(n @ 1..=1000) => n.min(PAGE_SIZE),
        Some(_) => return aws_error(StatusCode::BAD_REQUEST, "ValidationException", "maxResults must be between 1 and 1000"),
    };
    let start = match query.next_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(start)) if start <= all.len() => start,
        Some(_) => return aws_error(StatusCode::BAD_REQUEST, "ValidationException", "Invalid pagination token"),
    };
    let end = (start + page_size).min(all.len());
    let mut page = json!({"inferenceProfileSummaries": all[start..end]});
    if end < all.len() {
        page["nextToken"] = json!(end.to_string());
    }
    Json(page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_has_newer_claude_models_in_several_geographies() {
        let ids: Vec<String> = profiles().iter().map(|p| p["inferenceProfileId"].as_str().unwrap().to_owned()).collect();
        assert!(ids.contains(&"us.anthropic.claude-opus-4-8-20260915-v1:0".to_owned()));
        assert!(ids.contains(&"global.anthropic.claude-sonnet-5-20261105-v1:0".to_owned()));
        assert!(!ids.contains(&"us.anthropic.claude-sonnet-5-20261105-v1:0".to_owned()), "Sonnet 5 has no us. profile");
        assert!(ids.len() > PAGE_SIZE, "the listing spans pages");
    }
}
