//! What the gateway tells Bedrock about each call, so that Bedrock's own record (its model invocation logs)
//! names the tenant: `requestMetadata` in the body of Converse/ConverseStream, the
//! `X-Amzn-Bedrock-Request-Metadata` header (a JSON object) on InvokeModel/InvokeModelWithResponseStream.
//! See README "Bedrock invocation logs".
//!
//! Bedrock's documented limits on these pairs (API reference, `RequestMetadataFilters` and Converse
//! `requestMetadata`): at most 16 pairs; keys 1 to 256 characters, values 0 to 256, both drawn from
//! `[a-zA-Z0-9\s._:/=+$@-]`. A tenant or user id may hold other characters (Cognito attributes are free
//! text) or be longer: such a value is sent as `sha256:` + the lowercase hex SHA-256 of its UTF-8 bytes,
//! a fixed-length digest the reconcile computes the same way from the usage line. The id itself is never
//! trimmed, folded or cut: either it is sent verbatim or its digest is. A verbatim id that itself starts
//! with `sha256:` is also sent as its digest, so a digest can never be mistaken for an id.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::usage::RequestType;

pub const MAX_PAIRS: usize = 16;
pub const MAX_KEY_CHARS: usize = 256;
pub const MAX_VALUE_CHARS: usize = 256;
/// The prefix of a value sent as a digest.
pub const DIGEST_PREFIX: &str = "sha256:";
/// The metadata keys the gateway sends.
pub const TENANT_ID_KEY: &str = "tenant_id";
pub const USER_ID_KEY: &str = "user_id";
pub const REQUEST_ID_KEY: &str = "request_id";
pub const REQUEST_TYPE_KEY: &str = "request_type";

/// Whether Bedrock accepts `c` in a metadata key or value (`\s` is Java's: space, \t, \n, \x0B, \f, \r).
pub fn is_allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '.' | '_' | ':' | '/' | '=' | '+' | '$' | '@' | '-')
}

/// Whether Bedrock accepts `value` as a metadata value as it is.
pub fn is_valid_value(value: &str) -> bool {
    value.chars().count() <= MAX_VALUE_CHARS && value.chars().all(is_allowed_char)
}

/// Whether Bedrock accepts `key` as a metadata key.
pub fn is_valid_key(key: &str) -> bool {
    (1..=MAX_KEY_CHARS).contains(&key.chars().count()) && key.chars().all(is_allowed_char)
}

/// The metadata value that stands for `id`: the id itself when Bedrock accepts it, else its digest.
pub fn metadata_value(id: &str) -> String {
    if is_valid_value(id) && !id.starts_with(DIGEST_PREFIX) {
        id.to_owned()
    } else {
        format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// The four pairs of one Bedrock call: who (tenant and user, as the gateway verified them), which request
/// (the usage line's `request_id`) and what kind (`request_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockRequestMetadata {
    pub tenant_id: String,
    pub user_id: String,
    pub request_id: String,
    pub request_type: RequestType,
}

impl BedrockRequestMetadata {
    /// The pairs, each value mapped by [`metadata_value`].
    pub fn pairs(&self) -> HashMap<String, String> {
        HashMap::from([
            (TENANT_ID_KEY.to_owned(), metadata_value(&self.tenant_id)),
            (USER_ID_KEY.to_owned(), metadata_value(&self.user_id)),
            (REQUEST_ID_KEY.to_owned(), metadata_value(&self.request_id)),
            (REQUEST_TYPE_KEY.to_owned(), self.request_type.as_str().to_owned()),
        ])
    }

    /// The value of InvokeModel's `X-Amzn-Bedrock-Request-Metadata` header: the pairs as a JSON object
    /// (every value is ASCII, so the header is too).
    pub fn header_json(&self) -> String {
        let pairs: std::collections::BTreeMap<String, String> = self.pairs().into_iter().collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(tenant_id: &str, user_id: &str) -> BedrockRequestMetadata {
        BedrockRequestMetadata {
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
            request_id: "3f1c2a9e-0b7d-4e5f-9a1b-2c3d4e5f6a7b".into(),
            request_type: RequestType::Bedrock,
        }
    }

    #[test]
    fn ids_bedrock_accepts_are_sent_verbatim() {
        // GIVEN ids within Bedrock's character set and length WHEN mapped THEN they are unchanged
        let pairs = metadata("acme-corp_01", "9b1c0e7a-1111-2222-3333-444455556666").pairs();
        assert_eq!(pairs["tenant_id"], "acme-corp_01");
        assert_eq!(pairs["user_id"], "9b1c0e7a-1111-2222-3333-444455556666");
        assert_eq!(pairs["request_id"], "3f1c2a9e-0b7d-4e5f-9a1b-2c3d4e5f6a7b");
        assert_eq!(pairs["request_type"], "bedrock");
        assert_eq!(metadata_value("a b@c.d/e=f+g$h:i"), "a b@c.d/e=f+g$h:i");
        assert_eq!(metadata_value(&"x".repeat(256)), "x".repeat(256));
    }

    #[test]
    fn ids_bedrock_refuses_are_sent_as_their_digest_never_cut_or_folded() {
        // SHA-256("acme#eu"), computed independently: printf 'acme#eu' | sha256sum
        assert_eq!(metadata_value("acme#eu"), "sha256:073da5bae4746924b0b1ef31e822a8ef50d94cf6f5686af830d0d771855f638d");
        for refused in ["acme#eu", "ÉCOLE", "tenant,with,commas", &"y".repeat(257), "sha256:looks-like-a-digest"] {
            let value = metadata_value(refused);
            assert!(value.starts_with(DIGEST_PREFIX), "{refused:?} -> {value}");
            assert_eq!(value.len(), DIGEST_PREFIX.len() + 64);
            assert!(is_valid_value(&value));
        }
        // Distinct ids stay distinct: case and trailing spaces are not folded away.
        assert_ne!(metadata_value("École"), metadata_value("école"));
        assert_ne!(metadata_value("acme#"), metadata_value("acme# "));
    }

    #[test]
    fn every_pair_satisfies_bedrocks_limits() {
        let pairs = metadata("tenant\u{7f}", &"é".repeat(300)).pairs();
        assert!(pairs.len() <= MAX_PAIRS);
        assert!(pairs.iter().all(|(key, value)| is_valid_key(key) && is_valid_value(value)));
    }

    #[test]
    fn the_header_is_a_json_object_of_the_same_pairs() {
        let header = metadata("acme", "u-1").header_json();
        let parsed: HashMap<String, String> = serde_json::from_str(&header).unwrap();
        assert_eq!(parsed, metadata("acme", "u-1").pairs());
    }
}
