//! Model prices for the *estimated* cost of usage reports (never for billing: the usage lines are the
//! record). One table in the repository (`pricing.json`, embedded at build time), replaceable as a whole by
//! the environment (`PRICING_JSON` inline, or `PRICING_FILE` a path). A model the table does not know
//! yields no cost at all (`null` in the report, with a warning) rather than a wrong number.

use std::collections::HashMap;

use serde::Deserialize;
use thiserror::Error;

use crate::usage::TokenCounts;

const BUILTIN_PRICING: &str = include_str!("../pricing.json");

/// Prefixes of cross-region inference profile ids (`us.anthropic.claude-...`), which bill like their base model
/// (plus [`ModelPrice::geographic_profile_premium`] for the geographic ones).
const INFERENCE_PROFILE_PREFIXES: [&str; 8] = ["us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global."];
/// The global profile routes worldwide; every other prefix is a geographic (regional) profile.
const GLOBAL_PROFILE_PREFIX: &str = "global.";

/// Prices of one model in USD per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
    /// Prompt-cache writes; absent for models without prompt caching.
    #[serde(default)]
    pub cache_write_per_1k: Option<f64>,
    /// Prompt-cache reads; absent for models without prompt caching.
    #[serde(default)]
    pub cache_read_per_1k: Option<f64>,
    /// Extra charged on a geographic inference profile (`us.`, `eu.`, `apac.`, ...) over the global profile and
    /// the prices above, as a fraction (0.1 = 10%), on every price of the model. AWS documents it for the Claude
    /// 4.5 generation: "Global cross-Region inference for Anthropic's Claude Sonnet 4.5 offers approximately 10%
    /// savings on both input and output token pricing compared to geographic cross-Region inference"
    /// (https://docs.aws.amazon.com/bedrock/latest/userguide/global-cross-region-inference.html; the regional
    /// rows of https://aws.amazon.com/bedrock/pricing/ carry it on the prompt-cache prices too).
    #[serde(default)]
    pub geographic_profile_premium: Option<f64>,
}

impl ModelPrice {
    /// These prices raised by `premium` (0.1 = 10%).
    fn with_premium(self, premium: f64) -> Self {
        let raise = |price: f64| price * (1.0 + premium);
        Self {
            input_per_1k: raise(self.input_per_1k),
            output_per_1k: raise(self.output_per_1k),
            cache_write_per_1k: self.cache_write_per_1k.map(raise),
            cache_read_per_1k: self.cache_read_per_1k.map(raise),
            geographic_profile_premium: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingTable {
    #[serde(default)]
    pub description: Option<String>,
    pub currency: String,
    #[serde(default)]
    pub as_of: Option<String>,
    pub models: HashMap<String, ModelPrice>,
}

/// Where the table in use came from (logged at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingSource {
    Builtin,
    Inline,
    File(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PricingError {
    #[error("the pricing table from {source_name} is not valid JSON of the expected shape: {detail}")]
    Parse { source_name: String, detail: String },
    #[error("the pricing table from {source_name} is not valid: {detail}")]
    Invalid { source_name: String, detail: String },
    #[error("PRICING_FILE {path:?} could not be read: {detail}")]
    File { path: String, detail: String },
}

/// Why a cost could not be estimated; the text goes into the report's warnings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unpriced {
    #[error("model {0} has no price in the pricing table")]
    UnknownModel(String),
    #[error("model {0} has prompt-cache writes but no cache_write_per_1k price")]
    NoCacheWritePrice(String),
    #[error("model {0} has prompt-cache reads but no cache_read_per_1k price")]
    NoCacheReadPrice(String),
}

impl PricingTable {
    /// The table committed in the repository.
    pub fn builtin() -> Self {
        // The embedded file is checked by a unit test; failing here is a build defect, caught at start-up.
        Self::parse(BUILTIN_PRICING, "the built-in pricing.json").expect("the built-in pricing.json is valid")
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Self, PricingError> {
        let table: Self = serde_json::from_str(text)
            .map_err(|error| PricingError::Parse { source_name: source_name.to_owned(), detail: error.to_string() })?;
        table.validate().map_err(|detail| PricingError::Invalid { source_name: source_name.to_owned(), detail })?;
        Ok(table)
    }

    /// `PRICING_JSON` (inline JSON), else `PRICING_FILE` (a path), else the built-in table.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<(Self, PricingSource), PricingError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(inline) = non_empty("PRICING_JSON") {
            return Ok((Self::parse(&inline, "PRICING_JSON")?, PricingSource::Inline));
        }
        if let Some(path) = non_empty("PRICING_FILE") {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| PricingError::File { path: path.clone(), detail: error.to_string() })?;
            return Ok((Self::parse(&text, &format!("PRICING_FILE {path}"))?, PricingSource::File(path)));
        }
        Ok((Self::builtin(), PricingSource::Builtin))
    }

    fn validate(&self) -> Result<(), String> {
        if self.currency != "USD" {
            return Err(format!("currency must be \"USD\", not {:?}", self.currency));
        }
        for (model_id, price) in &self.models {
            let all = [
                Some(price.input_per_1k),
                Some(price.output_per_1k),
                price.cache_write_per_1k,
                price.cache_read_per_1k,
                price.geographic_profile_premium,
            ];
            if all.into_iter().flatten().any(|value| !value.is_finite() || value < 0.0) {
                return Err(format!("model {model_id} has a negative or non-finite price"));
            }
        }
        Ok(())
    }

    /// The price of `model_id`: the exact id, else the base model of an inference profile id or ARN, raised by
    /// the model's `geographic_profile_premium` when the profile is a geographic one.
    pub fn price_of(&self, model_id: &str) -> Option<ModelPrice> {
        if let Some(price) = self.models.get(model_id) {
            return Some(*price);
        }
        // `arn:aws:bedrock:<region>:<account>:inference-profile/us.anthropic...` or `...foundation-model/anthropic...`
        let base = model_id.rsplit('/').next().unwrap_or(model_id);
        if let Some(price) = self.models.get(base) {
            return Some(*price);
        }
        let (prefix, unprefixed) =
            INFERENCE_PROFILE_PREFIXES.iter().find_map(|prefix| base.strip_prefix(prefix).map(|rest| (*prefix, rest)))?;
        let price = *self.models.get(unprefixed)?;
        match price.geographic_profile_premium {
            Some(premium) if prefix != GLOBAL_PROFILE_PREFIX => Some(price.with_premium(premium)),
            _ => Some(price),
        }
    }

    /// A short, stable name of this table's content: `as_of` and a hash of every price, so two tables that
    /// differ in any price never share a version (an override by `PRICING_JSON` included).
    pub fn version(&self) -> String {
        let mut models: Vec<(&String, &ModelPrice)> = self.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        // FNV-1a over the sorted prices: small, stable across builds and platforms (unlike std's hasher).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in format!("{}{models:?}", self.currency).bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{}-{:08x}", self.as_of.as_deref().unwrap_or("unversioned"), hash as u32)
    }

    /// Estimated cost in USD of `tokens` on `model_id`.
    pub fn cost_usd(&self, model_id: &str, tokens: &TokenCounts) -> Result<f64, Unpriced> {
        let price = self.price_of(model_id).ok_or_else(|| Unpriced::UnknownModel(model_id.to_owned()))?;
        price.cost_usd(model_id, tokens)
    }
}

impl ModelPrice {
    /// Cost in USD of `tokens` at these prices (`model_id` only names the model in the error). The one formula
    /// of the project: the usage API and the log export both price through it.
    pub fn cost_usd(&self, model_id: &str, tokens: &TokenCounts) -> Result<f64, Unpriced> {
        let per_token = |count: u64, per_1k: f64| count as f64 * per_1k / 1000.0;
        let cache_write = match (tokens.cache_creation_input_tokens, self.cache_write_per_1k) {
            (0, _) => 0.0,
            (count, Some(per_1k)) => per_token(count, per_1k),
            (_, None) => return Err(Unpriced::NoCacheWritePrice(model_id.to_owned())),
        };
        let cache_read = match (tokens.cache_read_input_tokens, self.cache_read_per_1k) {
            (0, _) => 0.0,
            (count, Some(per_1k)) => per_token(count, per_1k),
            (_, None) => return Err(Unpriced::NoCacheReadPrice(model_id.to_owned())),
        };
        Ok(per_token(tokens.input_tokens, self.input_per_1k)
            + per_token(tokens.output_tokens, self.output_per_1k)
            + cache_write
            + cache_read)
    }
}

/// One model, one value: `model_id` without its ARN, inference profile prefix, `anthropic.` provider prefix,
/// date and version (`us.anthropic.claude-3-5-haiku-20241022-v1:0` and `claude-3-5-haiku-20241022` are both
/// `claude-3-5-haiku`; `amazon.nova-lite-v1:0` is `amazon.nova-lite`). For grouping, never for pricing.
pub fn base_model_id(model_id: &str) -> &str {
    let mut base = model_id.rsplit('/').next().unwrap_or(model_id);
    if let Some(rest) = INFERENCE_PROFILE_PREFIXES.iter().find_map(|prefix| base.strip_prefix(prefix)) {
        base = rest;
    }
    base = base.strip_prefix("anthropic.").unwrap_or(base);
    // `-vN:M` (Bedrock's version), then `-YYYYMMDD` (the release date).
    if let Some(at) = base.rfind("-v") {
        let version = &base[at + 2..];
        if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b':') {
            base = &base[..at];
        }
    }
    if let Some(at) = base.rfind('-') {
        let date = &base[at + 1..];
        if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
            base = &base[..at];
        }
    }
    base
}

/// Costs are shown to the millionth of a dollar; more digits would claim a precision prices do not have.
pub fn round_usd(amount: f64) -> f64 {
    (amount * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

    fn tokens(input: u64, output: u64) -> TokenCounts {
        TokenCounts { input_tokens: input, output_tokens: output, ..TokenCounts::default() }
    }

    #[test]
    fn the_builtin_table_parses_and_prices_the_default_model() {
        let table = PricingTable::builtin();
        assert_eq!(table.currency, "USD");
        // GIVEN 1M input and 1M output tokens on Claude 3 Haiku ($0.25 / $1.25 per million)
        let cost = table.cost_usd(HAIKU, &tokens(1_000_000, 1_000_000)).unwrap();
        assert!((cost - 1.5).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn an_unknown_model_has_no_cost_rather_than_a_wrong_one() {
        let table = PricingTable::builtin();
        assert_eq!(table.cost_usd("acme.mystery-model", &tokens(1, 1)), Err(Unpriced::UnknownModel("acme.mystery-model".into())));
    }

    #[test]
    fn inference_profiles_and_arns_fall_back_to_the_base_model() {
        let table = PricingTable::builtin();
        let base = table.price_of(HAIKU);
        assert_eq!(table.price_of(&format!("us.{HAIKU}")), base);
        assert_eq!(table.price_of(&format!("global.{HAIKU}")), base);
        let arn = format!("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{HAIKU}");
        assert_eq!(table.price_of(&arn), base);
        assert_eq!(table.price_of("xx.anthropic.claude-3-haiku-20240307-v1:0"), None);
    }

    #[test]
    fn geographic_profiles_of_the_4_5_generation_cost_ten_percent_more_than_global() {
        // GIVEN 1M input, 1M output, 1M cache-write and 1M cache-read tokens on Claude Sonnet 4.5
        let table = PricingTable::builtin();
        let sonnet = "anthropic.claude-sonnet-4-5-20250929-v1:0";
        let all = TokenCounts {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cache_creation_input_tokens: 1_000_000,
            cache_read_input_tokens: 1_000_000,
        };
        let global = table.cost_usd(&format!("global.{sonnet}"), &all).unwrap();
        // THEN global is the listed price (3 + 15 + 3.75 + 0.30), a geographic profile 10% more, on every price
        assert!((global - 22.05).abs() < 1e-9, "{global}");
        for geographic in ["us.", "eu.", "apac.", "jp."] {
            let cost = table.cost_usd(&format!("{geographic}{sonnet}"), &all).unwrap();
            assert!((cost - 22.05 * 1.1).abs() < 1e-9, "{geographic}: {cost}");
        }
        // AND a model without a documented premium costs the same through any profile
        assert_eq!(table.price_of(&format!("eu.{HAIKU}")), table.price_of(HAIKU));
    }

    #[test]
    fn one_model_is_one_base_model_id() {
        for (model_id, base) in [
            ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
            ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
            ("arn:aws:bedrock:eu-west-1:1:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("amazon.nova-lite-v1:0", "amazon.nova-lite"),
            ("my-custom-model", "my-custom-model"),
        ] {
            assert_eq!(base_model_id(model_id), base, "{model_id}");
        }
    }

    #[test]
    fn the_version_changes_with_any_price() {
        let table = PricingTable::builtin();
        assert_eq!(table.version(), PricingTable::builtin().version());
        assert!(table.version().starts_with("2026-11-01-"), "{}", table.version());
        let mut cheaper = table.clone();
        cheaper.models.get_mut(HAIKU).unwrap().output_per_1k = 0.001;
        assert_ne!(cheaper.version(), table.version());
    }

    #[test]
    fn cache_tokens_need_their_own_price() {
        let table = PricingTable::parse(
            r#"{"currency":"USD","models":{"m":{"input_per_1k":1.0,"output_per_1k":2.0,"cache_read_per_1k":0.1}}}"#,
            "test",
        )
        .unwrap();
        let read = TokenCounts { cache_read_input_tokens: 1000, ..tokens(1000, 1000) };
        assert!((table.cost_usd("m", &read).unwrap() - 3.1).abs() < 1e-9);
        let write = TokenCounts { cache_creation_input_tokens: 1, ..tokens(0, 0) };
        assert_eq!(table.cost_usd("m", &write), Err(Unpriced::NoCacheWritePrice("m".into())));
    }

    #[test]
    fn the_environment_replaces_the_table() {
        let inline = r#"{"currency":"USD","models":{"only":{"input_per_1k":1,"output_per_1k":1}}}"#;
        let (table, source) = PricingTable::from_lookup(|name| (name == "PRICING_JSON").then(|| inline.to_owned())).unwrap();
        assert_eq!(source, PricingSource::Inline);
        assert!(table.price_of("only").is_some() && table.price_of(HAIKU).is_none());
        let (_, source) = PricingTable::from_lookup(|_| None).unwrap();
        assert_eq!(source, PricingSource::Builtin);
    }

    #[test]
    fn bad_tables_are_refused_with_their_source() {
        let typo = PricingTable::parse(r#"{"currency":"USD","models":{"m":{"input":1,"output_per_1k":1}}}"#, "X");
        assert!(matches!(typo, Err(PricingError::Parse { ref source_name, .. }) if source_name == "X"));
        let negative = PricingTable::parse(r#"{"currency":"USD","models":{"m":{"input_per_1k":-1,"output_per_1k":1}}}"#, "X");
        assert!(matches!(negative, Err(PricingError::Invalid { .. })));
        let euros = PricingTable::parse(r#"{"currency":"EUR","models":{}}"#, "X");
        assert!(matches!(euros, Err(PricingError::Invalid { .. })));
        let missing = PricingTable::from_lookup(|name| (name == "PRICING_FILE").then(|| "/nonexistent/p.json".into()));
        assert!(matches!(missing, Err(PricingError::File { .. })));
    }

    #[test]
    fn a_free_price_is_a_price() {
        // GIVEN a model whose every price is zero (an internal or promotional model)
        let table = PricingTable::parse(
            r#"{"currency":"USD","models":{"free":{"input_per_1k":0,"output_per_1k":0,"cache_write_per_1k":0,"cache_read_per_1k":0,"geographic_profile_premium":0}}}"#,
            "test",
        )
        .unwrap();
        // THEN it is priced, at zero, rather than refused or unpriced
        let all = TokenCounts { cache_creation_input_tokens: 5, cache_read_input_tokens: 5, ..tokens(5, 5) };
        assert_eq!(table.cost_usd("free", &all), Ok(0.0));
    }

    #[test]
    fn only_a_bedrock_version_and_an_eight_digit_date_are_cut_from_a_base_model_id() {
        for (model_id, base) in [
            // `-v` followed by something other than a version stays
            ("acme.model-vision", "acme.model-vision"),
            ("acme.model-v2beta", "acme.model-v2beta"),
            // a last part of eight characters that are not all digits is not a date
            ("mistral.mixtral-8x7b-instruct-v0:1", "mistral.mixtral-8x7b-instruct"),
            ("acme.model-2025-v1:0", "acme.model-2025"),
            ("acme.model-202509291", "acme.model-202509291"),
        ] {
            assert_eq!(base_model_id(model_id), base, "{model_id}");
        }
    }

    #[test]
    fn a_tables_version_is_stable_across_builds() {
        // `price_version` is written into every exported row: the same table must keep the same version in
        // every build and on every platform (FNV-1a, not std's randomly seeded hasher), or old and new rows
        // of one table would look priced by different tables.
        let table = PricingTable::parse(
            r#"{"currency":"USD","as_of":"2026-01-01","models":{"m":{"input_per_1k":1,"output_per_1k":2}}}"#,
            "test",
        )
        .unwrap();
        assert_eq!(table.version(), "2026-01-01-cb2696a9");
        let unversioned = PricingTable { as_of: None, ..table };
        assert!(unversioned.version().starts_with("unversioned-"), "{}", unversioned.version());
    }

    #[test]
    #[allow(clippy::float_cmp)] // rounding must give these exact values
    fn costs_round_to_micro_dollars() {
        assert_eq!(round_usd(0.000_001_4), 0.000_001);
        assert_eq!(round_usd(1.234_567_89), 1.234_568);
    }
}
