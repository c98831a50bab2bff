//! Tenant budgets and quotas: limits a provider sets per tenant (optionally narrowed per gateway key),
//! enforced before the model is called, with alerts when a budget's thresholds are crossed.
//!
//! - [`Limits`]: the four optional kinds (requests per minute; tokens per UTC day and month; estimated USD per
//!   UTC month); absent means unlimited. Stored at `pk = LIMITS#<tenant>`, `sk = CONFIG` (or `KEY#<key_id>`).
//! - [`service::LimitsService`]: the hot path. Limits are read with one `GetItem` (or `BatchGetItem` with a
//!   key's narrowing) and cached; a request reserves its worst case (estimated input + `max_tokens`) in one
//!   conditional `TransactWriteItems` that fails when it would cross a limit, and settles to its actual
//!   usage when it is metered. See the README, "Budgets and quotas", for the overshoot bound.
//! - [`report`]: what `GET /v1/limits/me` answers (limits, use, remaining, reset times).
//! - [`alerts`]: `BudgetThresholdCrossed` events, once per threshold and period (a conditional marker item).

pub mod alerts;
pub mod config;
pub mod dynamo;
pub mod lease;
pub mod period;
pub mod report;
pub mod service;
pub mod store;

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use period::PeriodUnit;

/// Micro-dollars per dollar: USD amounts are kept as whole micro-dollars, so counters add exactly.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// Largest accepted values (far above any real budget; they keep sums inside DynamoDB's and u64's range).
pub const MAX_REQUESTS_PER_MINUTE: u64 = 10_000_000;
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;
pub const MAX_USD: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerDay,
    TokensPerMonth,
    UsdPerMonth,
}

impl LimitKind {
    pub const ALL: [Self; 4] = [Self::RequestsPerMinute, Self::TokensPerDay, Self::TokensPerMonth, Self::UsdPerMonth];

    /// The attribute name in the limits item, the API's field and the `limit` of a `limit_refused` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::TokensPerDay => "tokens_per_day",
            Self::TokensPerMonth => "tokens_per_month",
            Self::UsdPerMonth => "usd_per_month",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn period_unit(self) -> PeriodUnit {
        match self {
            Self::RequestsPerMinute => PeriodUnit::Minute,
            Self::TokensPerDay => PeriodUnit::Day,
            Self::TokensPerMonth | Self::UsdPerMonth => PeriodUnit::Month,
        }
    }

    /// Token and USD budgets: reserved, settled, alerted. Requests per minute is a rate, not a budget.
    pub fn is_budget(self) -> bool {
        self != Self::RequestsPerMinute
    }

    /// The `sk` prefix of this kind's use counter (`MINUTE#`, `DAY#`, `MONTH#`, `USD#`).
    pub fn counter_prefix(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "MINUTE",
            Self::TokensPerDay => "DAY",
            Self::TokensPerMonth => "MONTH",
            Self::UsdPerMonth => "USD",
        }
    }
}

/// A tenant's (or a key's) limits. Requests and tokens are counts; USD is in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub usd_per_month_micros: Option<u64>,
}

impl Limits {
    /// The limit of `kind`, in its unit (USD in micro-dollars).
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::TokensPerDay => self.tokens_per_day,
            LimitKind::TokensPerMonth => self.tokens_per_month,
            LimitKind::UsdPerMonth => self.usd_per_month_micros,
        }
    }

    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        match kind {
            LimitKind::RequestsPerMinute => self.requests_per_minute = value,
            LimitKind::TokensPerDay => self.tokens_per_day = value,
            LimitKind::TokensPerMonth => self.tokens_per_month = value,
            LimitKind::UsdPerMonth => self.usd_per_month_micros = value,
        }
    }

    pub fn is_empty(&self) -> bool {
        LimitKind::ALL.iter().all(|kind| self.get(*kind).is_none())
    }

    /// The kinds that are set, with their limits.
    pub fn set_kinds(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        LimitKind::ALL.into_iter().filter_map(|kind| self.get(kind).map(|limit| (kind, limit)))
    }

    /// Parses the body of `PUT /v1/limits/{tenant_id}`: a JSON object whose fields are the kinds, each a
    /// non-negative number (whole for requests and tokens; USD rounded to the micro-dollar) or `null` (unlimited).
    /// An absent field is unlimited too: the body replaces the tenant's limits as a whole.
    pub fn parse_request(body: &[u8]) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::InvalidRequest(message);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid(
                "the request body is empty; send JSON like {\"tokens_per_month\": 20000000, \"usd_per_month\": 50}".into(),
            ));
        }
        let value: Value = serde_json::from_slice(body).map_err(|error| invalid(format!("invalid request body: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(invalid("invalid request body: expected a JSON object of limits".into()));
        };
        let mut limits = Self::default();
        for (name, value) in &fields {
            let Some(kind) = LimitKind::parse(name) else {
                return Err(invalid(format!(
                    "unknown field {name:?}: the limits are requests_per_minute, tokens_per_day, tokens_per_month, usd_per_month"
                )));
            };
            limits.set(kind, parse_limit_value(kind, value)?);
        }
        Ok(limits)
    }

    /// The limits as the API shows them: every kind, `null` when unlimited, USD as a decimal number.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        for kind in LimitKind::ALL {
            object.insert(kind.as_str().to_owned(), self.get(kind).map_or(Value::Null, |limit| amount_json(kind, limit)));
        }
        Value::Object(object)
    }
}

/// One limit value of a request body, checked.
fn parse_limit_value(kind: LimitKind, value: &Value) -> Result<Option<u64>, ApiError> {
    let name = kind.as_str();
    let invalid = |reason: &str| ApiError::InvalidRequest(format!("{name} {reason}, got {value}"));
    match value {
        Value::Null => Ok(None),
        Value::Number(number) if kind == LimitKind::UsdPerMonth => {
            let dollars = number.as_f64().ok_or_else(|| invalid("must be a number"))?;
            if !dollars.is_finite() || dollars < 0.0 || dollars > MAX_USD as f64 {
                return Err(invalid(&format!("must be between 0 and {MAX_USD} (USD)")));
            }
            // Rounded to the micro-dollar, the unit budgets count in.
            Ok(Some((dollars * MICROS_PER_USD as f64).round() as u64))
        }
        Value::Number(number) => {
            let max = if kind == LimitKind::RequestsPerMinute { MAX_REQUESTS_PER_MINUTE } else { MAX_TOKENS };
            match number.as_u64() {
                Some(whole) if whole <= max => Ok(Some(whole)),
                _ => Err(invalid(&format!("must be a whole number from 0 to {max}"))),
            }
        }
        _ => Err(invalid("must be a number or null")),
    }
}

/// `micros` as a decimal USD string without trailing zeros (`50`, `12.5`, `0.000001`): the DynamoDB `N`.
pub fn usd_decimal(micros: u64) -> String {
    let whole = micros / MICROS_PER_USD;
    let fraction = micros % MICROS_PER_USD;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a decimal USD amount (a DynamoDB `N`) into micro-dollars; `None` if it is not one.
pub fn usd_micros_of(decimal: &str) -> Option<u64> {
    let (whole, fraction) = decimal.split_once('.').unwrap_or((decimal, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 6 {
        return None;
    }
    let digits_only = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let fraction: u64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse().ok()? };
    whole.checked_mul(MICROS_PER_USD)?.checked_add(fraction)
}

/// An amount of `kind` as JSON: a whole number, or decimal USD.
pub fn amount_json(kind: LimitKind, amount: u64) -> Value {
    if kind == LimitKind::UsdPerMonth {
        serde_json::Number::from_f64(amount as f64 / MICROS_PER_USD as f64).map_or(Value::Null, Value::Number)
    } else {
        Value::from(amount)
    }
}

/// Limits as stored, with who set them and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredLimits {
    pub limits: Limits,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

/// Whose use a counter counts: the tenant's, or one gateway key's (a narrowing of the tenant's limits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Tenant(String),
    Key { tenant_id: String, key_id: String },
}

impl Scope {
    pub fn tenant_id(&self) -> &str {
        match self {
            Self::Tenant(tenant_id) | Self::Key { tenant_id, .. } => tenant_id,
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::Tenant(_) => None,
            Self::Key { key_id, .. } => Some(key_id),
        }
    }

    /// `tenant` or `key` (the `scope` of events and lines).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tenant(_) => "tenant",
            Self::Key { .. } => "key",
        }
    }
}

/// Every limit that applies to one caller: the tenant's, and the narrowing of the key it called with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSet {
    pub tenant: Limits,
    pub key: Limits,
}

impl LimitSet {
    pub fn is_empty(&self) -> bool {
        self.tenant.is_empty() && self.key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        match Limits::parse_request(body.as_bytes()) {
            Err(ApiError::InvalidRequest(message)) => message,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_body_sets_the_kinds_it_names_and_null_or_absent_is_unlimited() {
        let limits =
            Limits::parse_request(br#"{"tokens_per_month": 20000000, "usd_per_month": 12.5, "tokens_per_day": null}"#).unwrap();
        assert_eq!(limits.tokens_per_month, Some(20_000_000));
        assert_eq!(limits.usd_per_month_micros, Some(12_500_000));
        assert_eq!(limits.tokens_per_day, None);
        assert_eq!(limits.requests_per_minute, None);
        assert_eq!(Limits::parse_request(b"{}").unwrap(), Limits::default());
        assert_eq!(Limits::parse_request(br#"{"requests_per_minute": 0}"#).unwrap().requests_per_minute, Some(0));
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        assert!(refused("").contains("empty"));
        assert!(refused("[1]").contains("JSON object"));
        assert!(refused("{").contains("invalid request body"));
        assert!(refused(r#"{"tokens_per_dya": 1}"#).contains("unknown field"));
        assert!(refused(r#"{"tokens_per_day": -1}"#).contains("tokens_per_day"));
        assert!(refused(r#"{"tokens_per_day": 1.5}"#).contains("whole number"));
        assert!(refused(r#"{"tokens_per_day": "100"}"#).contains("number or null"));
        assert!(refused(r#"{"requests_per_minute": 10000001}"#).contains("requests_per_minute"));
        assert!(refused(r#"{"usd_per_month": -0.5}"#).contains("usd_per_month"));
        assert_eq!(Limits::parse_request(br#"{"usd_per_month": 0.0000014}"#).unwrap().usd_per_month_micros, Some(1));
        assert!(refused(r#"{"usd_per_month": true}"#).contains("number or null"));
    }

    #[test]
    fn usd_round_trips_through_its_decimal_form() {
        for (micros, text) in [(50_000_000, "50"), (12_500_000, "12.5"), (1, "0.000001"), (0, "0")] {
            assert_eq!(usd_decimal(micros), text);
            assert_eq!(usd_micros_of(text), Some(micros));
        }
        assert_eq!(usd_micros_of("1.0000001"), None);
        assert_eq!(usd_micros_of("-1"), None);
        assert_eq!(usd_micros_of("1e3"), None);
        assert_eq!(usd_micros_of("."), None);
    }
}
