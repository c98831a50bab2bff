//! Which Bedrock model serves an Anthropic model id when the proxy falls back, in this order:
//! 1. the explicit map (`BEDROCK_MODEL_MAP`: exact ids and aliases);
//! 2. discovery: the system-defined inference profiles Bedrock lists for the region (`ListInferenceProfiles`),
//!    cached, matched by family and version (`claude-opus-4-8` -> the profile of Claude Opus 4.8), preferring
//!    the region's geography (`us.`, `eu.`, `apac.`, `global.`, ...);
//! 3. the configured fallback of the model's family (`BEDROCK_FAMILY_FALLBACK`: opus / sonnet / haiku);
//! 4. none: the caller passes Anthropic's answer on, and a log line names the unmapped id.
//!
//! So a model newer than any hard-coded entry (Claude Code's default) falls back as soon as Bedrock lists it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::Mutex;

use metering_core::error::Detail;

/// Geographic prefixes of Bedrock's cross-region inference profile ids.
pub const PROFILE_GEOGRAPHIES: [&str; 8] = ["us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"];

/// A Claude model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Opus,
    Sonnet,
    Haiku,
}

impl Family {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "opus" => Some(Self::Opus),
            "sonnet" => Some(Self::Sonnet),
            "haiku" => Some(Self::Haiku),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Sonnet => "sonnet",
            Self::Haiku => "haiku",
        }
    }
}

/// A Claude model as its ids name it: `claude-opus-4-8`, `claude-sonnet-4-5-20250929`, `claude-3-7-sonnet-latest`,
/// `anthropic.claude-opus-4-6-v1`, `anthropic.claude-sonnet-4-20250514-v1:0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaudeModel {
    pub family: Family,
    /// Major and minor version; a minor of 0 is dropped (`claude-sonnet-4-0` is Sonnet 4).
    pub version: Vec<u32>,
    /// The snapshot date (`20250929`), if the id names one.
    pub date: Option<String>,
}

impl ClaudeModel {
    /// An Anthropic API model id. `None` for anything that is not a Claude id of a known family.
    pub fn from_anthropic_id(id: &str) -> Option<Self> {
        Self::from_tokens(id.strip_suffix("-latest").unwrap_or(id), false)
    }

    /// A Bedrock foundation model id (`anthropic.claude-...-v1:0`), without a profile prefix.
    pub fn from_foundation_model_id(id: &str) -> Option<Self> {
        Self::from_tokens(id.strip_prefix("anthropic.")?, true)
    }

    fn from_tokens(id: &str, bedrock_suffix_allowed: bool) -> Option<Self> {
        let mut tokens = id.split('-');
        if tokens.next() != Some("claude") {
            return None;
        }
        let mut family = None;
        let mut version = Vec::new();
        let mut date = None;
        for token in tokens {
            let numeric = !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_digit());
            if let Some(found) = Family::parse(token) {
                if family.replace(found).is_some() {
                    return None;
                }
            } else if numeric && token.len() <= 2 && date.is_none() {
                version.push(token.parse().ok()?);
            } else if numeric && token.len() == 8 && date.is_none() {
                date = Some(token.to_owned());
            } else if bedrock_suffix_allowed && is_bedrock_version_suffix(token) {
                // `v1`, `v1:0`, `v2:0`: Bedrock's own revision of the model id.
            } else {
                return None;
            }
        }
        if version.len() == 2 && version[1] == 0 {
            version.pop();
        }
        if version.is_empty() || version.len() > 2 {
            return None;
        }
        Some(Self { family: family?, version, date })
    }

    fn serves(&self, requested: &Self) -> bool {
        self.family == requested.family
            && self.version == requested.version
            // A dated request wants that snapshot; an undated Bedrock id is the only one of its version.
            && (requested.date.is_none() || self.date.is_none() || self.date == requested.date)
    }
}

fn is_bedrock_version_suffix(token: &str) -> bool {
    let Some(rest) = token.strip_prefix('v') else { return false };
    let (major, minor) = rest.split_once(':').unwrap_or((rest, "0"));
    [major, minor].iter().all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
}

/// The only family word of an id that is otherwise not understood (`claude-opus-9-preview`): enough for the
/// family fallback.
fn family_of(id: &str) -> Option<Family> {
    let mut found = id.split('-').filter_map(Family::parse);
    let family = found.next()?;
    (id.starts_with("claude-") && found.next().is_none()).then_some(family)
}

/// One system-defined inference profile as `ListInferenceProfiles` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceProfile {
    /// `us.anthropic.claude-opus-4-8-20260915-v1:0`: what InvokeModel is called with.
    pub id: String,
    /// `anthropic.claude-opus-4-8-20260915-v1:0`: the model the profile routes to (from its model ARNs).
    pub foundation_model_id: String,
}

impl InferenceProfile {
    fn geography(&self) -> Option<&str> {
        let (prefix, _) = self.id.split_once('.')?;
        PROFILE_GEOGRAPHIES.contains(&prefix).then_some(prefix)
    }
}

/// How a Bedrock model was chosen (logged, and shown in the `x-gateway-model-source` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionSource {
    Map,
    Discovered,
    FamilyFallback,
}

impl ResolutionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Discovered => "discovered",
            Self::FamilyFallback => "family_fallback",
        }
    }
}

/// The Bedrock model that serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockModel {
    /// The id InvokeModel is called with (an inference profile or a foundation model).
    pub invoke_id: String,
    /// The foundation model behind it: what CountTokens takes.
    pub foundation_model_id: String,
    pub source: ResolutionSource,
}

impl BedrockModel {
    /// A configured id: a profile id names its foundation model after the geography prefix.
    pub fn configured(id: &str, source: ResolutionSource) -> Self {
        let foundation_model_id = match id.split_once('.') {
            Some((prefix, rest)) if PROFILE_GEOGRAPHIES.contains(&prefix) => rest,
            _ => id,
        };
        Self { invoke_id: id.to_owned(), foundation_model_id: foundation_model_id.to_owned(), source }
    }
}

/// The profile that serves `requested`: same family and version (the requested snapshot, or the newest),
/// in the first of `geographies` that has one. Profiles of other geographies are never chosen: they cannot
/// be invoked from this region.
pub fn best_profile<'a>(
    requested: &ClaudeModel,
    profiles: &'a [InferenceProfile],
    geographies: &[String],
) -> Option<&'a InferenceProfile> {
    let rank = |profile: &InferenceProfile| {
        let geography = profile.geography()?;
        geographies.iter().position(|preferred| preferred == geography)
    };
    profiles
        .iter()
        .filter_map(|profile| {
            let model = ClaudeModel::from_foundation_model_id(&profile.foundation_model_id)?;
            let geography_rank = rank(profile)?;
            model.serves(requested).then_some((model, geography_rank, profile))
        })
        // Newest snapshot first (an undated id last), then the preferred geography, then the newest revision.
        .max_by(|(a, a_rank, a_profile), (b, b_rank, b_profile)| {
            a.date.cmp(&b.date).then(b_rank.cmp(a_rank)).then(a_profile.id.cmp(&b_profile.id))
        })
        .map(|(_, _, profile)| profile)
}

/// The geographies whose profiles a region can invoke, most specific first.
pub fn geographies_for_region(region: &str) -> Vec<String> {
    let list: &[&str] = match region {
        r if r.starts_with("us-gov-") => &["us-gov"],
        r if r.starts_with("us-") => &["us", "global"],
        r if r.starts_with("eu-") => &["eu", "global"],
        "ap-northeast-1" | "ap-northeast-3" => &["jp", "apac", "global"],
        "ap-southeast-2" | "ap-southeast-4" => &["au", "apac", "global"],
        r if r.starts_with("ap-") => &["apac", "global"],
        r if r.starts_with("ca-") => &["ca", "us", "global"],
        _ => &["global"],
    };
    list.iter().map(|geography| (*geography).to_owned()).collect()
}

#[derive(Debug, Error)]
#[error("Bedrock's inference profiles could not be listed: {0}")]
pub struct DiscoveryError(#[source] pub Detail);

/// The port in front of `ListInferenceProfiles` (system-defined profiles, every page).
#[async_trait]
pub trait InferenceProfiles: Send + Sync {
    async fn list(&self) -> Result<Vec<InferenceProfile>, DiscoveryError>;
}

/// How discovery behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Preferred geographies, first wins (`BEDROCK_PROFILE_GEOGRAPHIES`, else from the region).
    pub geographies: Vec<String>,
    /// How long a listing is used (`BEDROCK_PROFILE_CACHE_SECONDS`, default an hour).
    pub cache_for: Duration,
    /// A miss lists again, but not more often than this (an unknown id must not list on every request).
    pub refresh_on_miss_after: Duration,
}

#[derive(Default)]
struct Listing {
    profiles: Arc<Vec<InferenceProfile>>,
    listed_at: Option<Instant>,
}

/// The profiles, listed on first use and cached; one listing at a time.
struct ProfileCache {
    source: Arc<dyn InferenceProfiles>,
    listing: Mutex<Listing>,
}

impl ProfileCache {
    /// The cached listing, listed again when older than `max_age` (or never listed). A failed listing keeps
    /// the previous one (possibly empty) and is tried again after `max_age` at the earliest.
    async fn profiles(&self, max_age: Duration) -> (Arc<Vec<InferenceProfile>>, bool) {
        let mut listing = self.listing.lock().await;
        if listing.listed_at.is_some_and(|at| at.elapsed() < max_age) {
            return (Arc::clone(&listing.profiles), false);
        }
        match self.source.list().await {
            Ok(profiles) => {
                tracing::info!(profiles = profiles.len(), "listed Bedrock's inference profiles");
                listing.profiles = Arc::new(profiles);
            }
            Err(error) => tracing::warn!(%error, "model discovery failed; using the last listing"),
        }
        listing.listed_at = Some(Instant::now());
        (Arc::clone(&listing.profiles), true)
    }
}

/// Resolves Anthropic model ids to Bedrock models (see the module documentation).
#[derive(Clone)]
pub struct ModelResolver {
    map: Arc<BTreeMap<String, String>>,
    family_fallback: Arc<BTreeMap<Family, String>>,
    discovery: Option<(DiscoverySettings, Arc<ProfileCache>)>,
}

impl ModelResolver {
    pub fn new(map: BTreeMap<String, String>, family_fallback: BTreeMap<Family, String>) -> Self {
        Self { map: Arc::new(map), family_fallback: Arc::new(family_fallback), discovery: None }
    }

    pub fn with_discovery(mut self, settings: DiscoverySettings, source: Arc<dyn InferenceProfiles>) -> Self {
        let cache = ProfileCache { source, listing: Mutex::new(Listing::default()) };
        self.discovery = Some((settings, Arc::new(cache)));
        self
    }

    pub async fn resolve(&self, requested: &str) -> Option<BedrockModel> {
        if let Some(id) = self.map.get(requested) {
            return Some(BedrockModel::configured(id, ResolutionSource::Map));
        }
        let parsed = ClaudeModel::from_anthropic_id(requested);
        if let (Some(model), Some((settings, cache))) = (&parsed, &self.discovery) {
            let (profiles, fresh) = cache.profiles(settings.cache_for).await;
            let mut found = best_profile(model, &profiles, &settings.geographies).cloned();
            if found.is_none() && !fresh {
                // A model newer than the listing: list again (at most every `refresh_on_miss_after`).
                let (profiles, _) = cache.profiles(settings.refresh_on_miss_after.min(settings.cache_for)).await;
                found = best_profile(model, &profiles, &settings.geographies).cloned();
            }
            if let Some(profile) = found {
                return Some(BedrockModel {
                    invoke_id: profile.id,
                    foundation_model_id: profile.foundation_model_id,
                    source: ResolutionSource::Discovered,
                });
            }
        }
        let family = parsed.map(|model| model.family).or_else(|| family_of(requested))?;
        let id = self.family_fallback.get(&family)?;
        Some(BedrockModel::configured(id, ResolutionSource::FamilyFallback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn profile(id: &str) -> InferenceProfile {
        let foundation = id.split_once('.').map_or(id, |(_, rest)| rest);
        InferenceProfile { id: id.to_owned(), foundation_model_id: foundation.to_owned() }
    }

    fn listing() -> Vec<InferenceProfile> {
        [
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "us.anthropic.claude-opus-4-1-20250805-v1:0",
            "us.anthropic.claude-opus-4-6-v1",
            "global.anthropic.claude-opus-4-8-20260915-v1:0",
            "us.anthropic.claude-opus-4-8-20260915-v1:0",
            "eu.anthropic.claude-sonnet-5-20261105-v1:0",
            "global.anthropic.claude-sonnet-5-20261105-v1:0",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "us.meta.llama3-3-70b-instruct-v1:0",
        ]
        .iter()
        .map(|id| profile(id))
        .collect()
    }

    fn us() -> Vec<String> {
        geographies_for_region("us-east-1")
    }

    fn best(requested: &str, geographies: &[String]) -> Option<String> {
        let model = ClaudeModel::from_anthropic_id(requested)?;
        best_profile(&model, &listing(), geographies).map(|profile| profile.id.clone())
    }

    #[test]
    fn anthropic_ids_parse_in_both_word_orders_with_aliases_and_dates() {
        let parsed = |id: &str| ClaudeModel::from_anthropic_id(id).map(|m| (m.family, m.version, m.date));
        assert_eq!(parsed("claude-opus-4-8"), Some((Family::Opus, vec![4, 8], None)));
        assert_eq!(parsed("claude-sonnet-5"), Some((Family::Sonnet, vec![5], None)));
        assert_eq!(parsed("claude-sonnet-4-0"), Some((Family::Sonnet, vec![4], None)));
        assert_eq!(parsed("claude-sonnet-4-5-20250929"), Some((Family::Sonnet, vec![4, 5], Some("20250929".into()))));
        assert_eq!(parsed("claude-3-7-sonnet-latest"), Some((Family::Sonnet, vec![3, 7], None)));
        assert_eq!(parsed("claude-opus-4-20250514"), Some((Family::Opus, vec![4], Some("20250514".into()))));
        for unknown in ["claude-unmapped-test-model", "gpt-4", "claude-opus-sonnet-4", "claude-opus", "claude-poem-4-8", ""] {
            assert_eq!(parsed(unknown), None, "{unknown}");
        }
        let bedrock = ClaudeModel::from_foundation_model_id("anthropic.claude-opus-4-6-v1").unwrap();
        assert_eq!((bedrock.family, bedrock.version, bedrock.date), (Family::Opus, vec![4, 6], None));
        assert!(ClaudeModel::from_anthropic_id("claude-opus-4-6-v1").is_none(), "Bedrock suffixes are not Anthropic ids");
    }

    #[test]
    fn discovery_matches_family_and_version_in_the_preferred_geography() {
        assert_eq!(best("claude-opus-4-8", &us()).as_deref(), Some("us.anthropic.claude-opus-4-8-20260915-v1:0"));
        assert_eq!(best("claude-sonnet-5", &us()).as_deref(), Some("global.anthropic.claude-sonnet-5-20261105-v1:0"));
        assert_eq!(best("claude-haiku-4-5", &us()).as_deref(), Some("us.anthropic.claude-haiku-4-5-20251001-v1:0"));
        assert_eq!(best("claude-sonnet-4-5-20250929", &us()).as_deref(), Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0"));
        assert_eq!(best("claude-sonnet-4-0", &us()).as_deref(), Some("us.anthropic.claude-sonnet-4-20250514-v1:0"));
        assert_eq!(best("claude-3-7-sonnet-latest", &us()).as_deref(), Some("us.anthropic.claude-3-7-sonnet-20250219-v1:0"));
        assert_eq!(best("claude-opus-4-6", &us()).as_deref(), Some("us.anthropic.claude-opus-4-6-v1"));
        assert_eq!(best("claude-sonnet-4-5-20990101", &us()), None, "another snapshot is not served in its place");
        assert_eq!(best("claude-opus-9", &us()), None);
        let eu = geographies_for_region("eu-west-1");
        assert_eq!(best("claude-sonnet-5", &eu).as_deref(), Some("eu.anthropic.claude-sonnet-5-20261105-v1:0"));
        assert_eq!(best("claude-opus-4-8", &eu).as_deref(), Some("global.anthropic.claude-opus-4-8-20260915-v1:0"));
        assert_eq!(best("claude-opus-4-1", &eu), None, "a us. profile cannot be invoked from eu-west-1");
    }

    #[test]
    fn configured_ids_name_their_foundation_model() {
        let model = BedrockModel::configured("us.anthropic.claude-x-v1:0", ResolutionSource::Map);
        assert_eq!(model.foundation_model_id, "anthropic.claude-x-v1:0");
        assert_eq!(
            BedrockModel::configured("anthropic.claude-x", ResolutionSource::Map).foundation_model_id,
            "anthropic.claude-x"
        );
    }

    struct CountingProfiles {
        calls: AtomicUsize,
        profiles: std::sync::Mutex<Vec<InferenceProfile>>,
    }

    #[async_trait]
    impl InferenceProfiles for CountingProfiles {
        async fn list(&self) -> Result<Vec<InferenceProfile>, DiscoveryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.profiles.lock().unwrap().clone())
        }
    }

    fn resolver(source: Arc<CountingProfiles>, refresh_on_miss_after: Duration) -> ModelResolver {
        let map = BTreeMap::from([("claude-alias".to_owned(), "eu.anthropic.claude-sonnet-4-5-20250929-v1:0".to_owned())]);
        let fallback = BTreeMap::from([(Family::Opus, "us.anthropic.claude-opus-4-1-20250805-v1:0".to_owned())]);
        let settings = DiscoverySettings { geographies: us(), cache_for: Duration::from_secs(3600), refresh_on_miss_after };
        ModelResolver::new(map, fallback).with_discovery(settings, source)
    }

    #[tokio::test]
    async fn the_order_is_map_then_discovery_then_family_fallback_then_none() {
        let source = Arc::new(CountingProfiles { calls: AtomicUsize::new(0), profiles: std::sync::Mutex::new(listing()) });
        let resolver = resolver(Arc::clone(&source), Duration::from_secs(60));
        let resolved = |id: &'static str| {
            let resolver = resolver.clone();
            async move { resolver.resolve(id).await.map(|model| (model.invoke_id, model.source)) }
        };
        assert_eq!(
            resolved("claude-alias").await,
            Some(("eu.anthropic.claude-sonnet-4-5-20250929-v1:0".into(), ResolutionSource::Map))
        );
        assert_eq!(source.calls.load(Ordering::SeqCst), 0, "the map needs no listing");
        assert_eq!(
            resolved("claude-opus-4-8").await,
            Some(("us.anthropic.claude-opus-4-8-20260915-v1:0".into(), ResolutionSource::Discovered))
        );
        assert_eq!(
            resolved("claude-opus-9-1").await,
            Some(("us.anthropic.claude-opus-4-1-20250805-v1:0".into(), ResolutionSource::FamilyFallback))
        );
        assert_eq!(resolved("claude-sonnet-9").await, None, "no sonnet fallback configured");
        assert_eq!(resolved("claude-unmapped-test-model").await, None);
        let discovered = resolver.resolve("claude-opus-4-8").await.unwrap();
        assert_eq!(discovered.foundation_model_id, "anthropic.claude-opus-4-8-20260915-v1:0");
    }

    #[tokio::test]
    async fn the_listing_is_cached_and_a_miss_lists_again_at_most_so_often() {
        let source = Arc::new(CountingProfiles { calls: AtomicUsize::new(0), profiles: std::sync::Mutex::new(listing()) });
        let cached = resolver(Arc::clone(&source), Duration::from_secs(60));
        cached.resolve("claude-opus-4-8").await.unwrap();
        cached.resolve("claude-haiku-4-5").await.unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 1, "one listing for both");
        assert_eq!(cached.resolve("claude-sonnet-9").await, None);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1, "a miss right after a listing does not list again");

        // Bedrock starts listing a new model: a miss lists again once the refresh interval has passed.
        let eager = resolver(Arc::clone(&source), Duration::ZERO);
        assert_eq!(eager.resolve("claude-sonnet-9").await, None);
        let before = source.calls.load(Ordering::SeqCst);
        source.profiles.lock().unwrap().push(profile("us.anthropic.claude-sonnet-9-20270101-v1:0"));
        let found = eager.resolve("claude-sonnet-9").await.unwrap();
        assert_eq!(found.invoke_id, "us.anthropic.claude-sonnet-9-20270101-v1:0");
        assert_eq!(source.calls.load(Ordering::SeqCst), before + 1);
    }
}
