//! The local authorizer's result cache, as API Gateway's Cognito authorizer keeps one (its "authorization
//! caching", up to `ttl` per token, 300 s by default): a token verified once is not verified again while its
//! entry lasts. The key is the whole token string, so a token changed in any byte (a tampered payload, another
//! signature) is a different key and goes through the full verification. An entry lasts until the earlier of
//! the token's `exp` and `ttl` after it was verified: an expired token is refused even if it was cached.
//! The cache holds at most `capacity` tokens, the least recently used going first.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use serde_json::{Map, Value};

/// The claims of a verified token, as the authorizer hands them on.
pub type Claims = Map<String, Value>;

struct Entry {
    claims: Arc<Claims>,
    /// Unix seconds; the entry answers while `now < valid_until`.
    valid_until: i64,
}

pub struct VerifiedTokens {
    entries: Mutex<LruCache<String, Entry>>,
    ttl_seconds: i64,
}

impl VerifiedTokens {
    /// A `ttl` of zero turns the cache off (as in API Gateway): every token is verified every time.
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        let ttl_seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Self { entries: Mutex::new(LruCache::new(capacity)), ttl_seconds }
    }

    /// The claims of `token` if it was verified and its entry still holds at `now` (Unix seconds). An entry
    /// past its time is dropped.
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<Claims>> {
        if self.ttl_seconds == 0 {
            return None;
        }
        // A poisoned lock (a panic while holding it) only costs the cache: the token is verified again.
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(token)?;
        if now < entry.valid_until {
            return Some(Arc::clone(&entry.claims));
        }
        entries.pop(token);
        None
    }

    /// Remembers a token that was just verified at `now`, whose `exp` is `expires_at` (Unix seconds).
    pub fn insert(&self, token: &str, claims: Arc<Claims>, expires_at: i64, now: i64) {
        let valid_until = expires_at.min(now.saturating_add(self.ttl_seconds));
        if self.ttl_seconds == 0 || valid_until <= now {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(token.to_owned(), Entry { claims, valid_until });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims(tenant: &str) -> Arc<Claims> {
        let mut claims = Claims::new();
        claims.insert("custom:tenant_id".into(), Value::String(tenant.into()));
        Arc::new(claims)
    }

    fn cache(capacity: usize, ttl_seconds: u64) -> VerifiedTokens {
        VerifiedTokens::new(NonZeroUsize::new(capacity).unwrap(), Duration::from_secs(ttl_seconds))
    }

    #[test]
    fn a_verified_token_answers_from_the_cache_until_its_exp() {
        // GIVEN a token verified at NOW that expires in 60 s (the TTL is longer)
        let tokens = cache(8, 300);
        tokens.insert("t1", claims("acme"), NOW + 60, NOW);
        // WHEN it is asked for before and at its exp
        // THEN it answers before, and is gone from its exp on (and stays gone)
        assert_eq!(tokens.get("t1", NOW + 59).as_deref(), Some(&*claims("acme")));
        assert!(tokens.get("t1", NOW + 60).is_none());
        assert!(tokens.get("t1", NOW + 59).is_none(), "the expired entry was dropped");
    }

    #[test]
    fn an_entry_lasts_at_most_the_ttl() {
        let tokens = cache(8, 300);
        tokens.insert("t1", claims("acme"), NOW + 3600, NOW);
        assert!(tokens.get("t1", NOW + 299).is_some());
        assert!(tokens.get("t1", NOW + 300).is_none(), "verified again after the TTL, though exp is later");
    }

    #[test]
    fn only_the_exact_token_string_hits() {
        let tokens = cache(8, 300);
        tokens.insert("header.payload.signature", claims("acme"), NOW + 60, NOW);
        for other in
            ["header.payload.signaturE", "header.payload.signature ", "header.payloaD.signature", "HEADER.payload.signature"]
        {
            assert!(tokens.get(other, NOW).is_none(), "{other}");
        }
    }

    #[test]
    fn a_token_already_expired_or_a_zero_ttl_is_not_cached() {
        let tokens = cache(8, 300);
        tokens.insert("old", claims("acme"), NOW, NOW);
        assert!(tokens.get("old", NOW - 1).is_none());
        let off = cache(8, 0);
        off.insert("t1", claims("acme"), NOW + 60, NOW);
        assert!(off.get("t1", NOW).is_none());
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let tokens = cache(2, 300);
        tokens.insert("a", claims("a"), NOW + 60, NOW);
        tokens.insert("b", claims("b"), NOW + 60, NOW);
        assert!(tokens.get("a", NOW).is_some());
        tokens.insert("c", claims("c"), NOW + 60, NOW);
        assert!(tokens.get("b", NOW).is_none(), "b was the least recently used");
        assert!(tokens.get("a", NOW).is_some());
        assert!(tokens.get("c", NOW).is_some());
    }
}
