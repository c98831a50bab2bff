//! The README's error table of `POST /bedrock/chat` (the mapping every API of the gateway shares) is
//! exactly `ApiError`'s: each row a variant's status and `error.type`, each variant a row. Fed from the
//! README itself, so neither can change without the other.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::BTreeSet;

use api_gateway_lambda::error_envelope::{error_type_of, status_of};
use metering_core::ApiError;

fn readme_rows() -> BTreeSet<(u16, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## `POST /bedrock/chat`").nth(1).expect("the chat section");
    let table = section.split("| status | `error.type` | when |").nth(1).expect("the error table");
    table
        .lines()
        .skip(2) // the header's rest and the |---| line
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].parse().unwrap(), cells[1].trim_matches('`').to_owned())
        })
        .collect()
}

#[test]
fn the_readme_error_table_is_exactly_the_error_mapping() {
    let text = || "t".to_owned();
    let answered = [
        ApiError::InvalidRequest(text()),
        ApiError::Unauthenticated(text()),
        ApiError::Forbidden(text()),
        ApiError::NotFound(text()),
        ApiError::MethodNotAllowed(text()),
        ApiError::PayloadTooLarge(text()),
        ApiError::RequestTimeout(text()),
        ApiError::RateLimited { message: text(), retry_after_seconds: 1 },
        ApiError::Upstream(text()),
        ApiError::Unavailable { message: text(), retry_after_seconds: 1 },
        ApiError::UpstreamTimeout(text()),
        ApiError::Internal(text()),
        // Not listed: ApiError::UnsupportedMediaType, which only the Claude proxy raises, in Anthropic's
        // shape (`invalid_request_error`, checked in claude-proxy/tests/error_classification.rs).
    ];
    let mapping: BTreeSet<(u16, String)> =
        answered.iter().map(|error| (status_of(error).as_u16(), error_type_of(error).to_owned())).collect();
    assert_eq!(readme_rows(), mapping);
    for error in &answered {
        let has_retry_after = matches!(error, ApiError::RateLimited { .. } | ApiError::Unavailable { .. });
        assert_eq!(error.retry_after_seconds().is_some(), has_retry_after, "{error:?}: Retry-After only on 429/503");
    }
}
