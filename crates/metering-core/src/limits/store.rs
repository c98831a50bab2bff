//! The port of the limits: where limits, use counters and alert markers live (DynamoDB in AWS and locally,
//! an in-memory map in unit tests). Key design, all in the usage table:
//! - limits: `pk = LIMITS#<tenant>`, `sk = CONFIG` (the tenant's) or `KEY#<key_id>` (a key's narrowing);
//! - use counters: `pk = BUDGET#<tenant>` (or `BUDGET#<tenant>#KEY#<key_id>`), `sk = MINUTE#<YYYY-MM-DDTHH:MM>`,
//!   `DAY#<YYYY-MM-DD>`, `MONTH#<YYYY-MM>` (tokens) or `USD#<YYYY-MM>` (micro-dollars), with `admitted`
//!   (settled use plus the reservations of requests in flight) and `settled` (metered use);
//! - alert markers: `pk = BUDGETALERT#<tenant>` (or `...#KEY#<key_id>`), `sk = <kind>#<period>#<percent>`;
//! - operation markers: `pk = BUDGETOP#<token>`, `sk = DONE`, written in the same transaction as a
//!   reservation or a settlement (`attribute_not_exists`): a retry of a write that was applied (its answer was
//!   lost, the SDK or the caller tried again) is cancelled by the marker instead of counting twice. DynamoDB's
//!   `ClientRequestToken` does the same for 10 minutes in AWS; the marker holds everywhere (moto ignores the
//!   token) and for as long as the marker lives.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use crate::error::Detail;

use super::period::{Period, PeriodUnit};
use super::{LimitKind, Scope, StoredLimits};

pub const LIMITS_PARTITION_PREFIX: &str = "LIMITS#";
pub const TENANT_LIMITS_SORT_KEY: &str = "CONFIG";
pub const KEY_LIMITS_SORT_KEY_PREFIX: &str = "KEY#";
pub const BUDGET_PARTITION_PREFIX: &str = "BUDGET#";
pub const ALERT_PARTITION_PREFIX: &str = "BUDGETALERT#";
pub const OPERATION_MARKER_PARTITION_PREFIX: &str = "BUDGETOP#";
pub const OPERATION_MARKER_SORT_KEY: &str = "DONE";
/// How long an operation marker is kept: far longer than any retry of the write it guards.
pub const OPERATION_MARKER_TIME_TO_LIVE: Duration = Duration::days(2);

/// `(pk, sk)` of the marker of the reservation or settlement made with `token`.
pub fn operation_marker_key(token: &str) -> (String, String) {
    (format!("{OPERATION_MARKER_PARTITION_PREFIX}{token}"), OPERATION_MARKER_SORT_KEY.to_owned())
}

/// `(pk, sk)` of the limits item of `scope`.
pub fn limits_key(scope: &Scope) -> (String, String) {
    let pk = format!("{LIMITS_PARTITION_PREFIX}{}", scope.tenant_id());
    match scope.key_id() {
        None => (pk, TENANT_LIMITS_SORT_KEY.to_owned()),
        Some(key_id) => (pk, format!("{KEY_LIMITS_SORT_KEY_PREFIX}{key_id}")),
    }
}

fn scoped_partition(prefix: &str, scope: &Scope) -> String {
    match scope.key_id() {
        None => format!("{prefix}{}", scope.tenant_id()),
        Some(key_id) => format!("{prefix}{}#KEY#{key_id}", scope.tenant_id()),
    }
}

/// One use counter: a scope's use of one kind in one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UseCounter {
    pub scope: Scope,
    pub kind: LimitKind,
    pub period: Period,
}

impl UseCounter {
    pub fn new(scope: Scope, kind: LimitKind, now: DateTime<Utc>) -> Self {
        Self { scope, kind, period: Period::containing(kind.period_unit(), now) }
    }

    pub fn pk(&self) -> String {
        scoped_partition(BUDGET_PARTITION_PREFIX, &self.scope)
    }

    pub fn sk(&self) -> String {
        format!("{}#{}", self.kind.counter_prefix(), self.period.label)
    }

    /// When DynamoDB may delete the item: a minute's an hour after it, a day's or month's 400 days after.
    pub fn expires_at(&self) -> i64 {
        let keep = match self.period.unit {
            PeriodUnit::Minute => Duration::hours(1),
            PeriodUnit::Day | PeriodUnit::Month => Duration::days(400),
        };
        (self.period.resets_at + keep).timestamp()
    }
}

/// What one request holds on one counter until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub counter: UseCounter,
    pub limit: u64,
    pub amount: u64,
}

/// A hold turned into the request's actual use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub counter: UseCounter,
    pub held: u64,
    pub actual: u64,
    /// The limit the hold was admitted under (for the alert thresholds).
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    /// The hold at this index would have crossed its limit; nothing was reserved.
    Refused {
        index: usize,
    },
}

/// A counter's values (0 when the item does not exist yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterUse {
    /// Settled use plus what requests in flight hold.
    pub admitted: u64,
    /// Metered use.
    pub settled: u64,
}

/// The marker that makes one threshold of one budget in one period raise one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertMarker {
    pub counter: UseCounter,
    pub percent: u32,
}

impl AlertMarker {
    pub fn pk(&self) -> String {
        scoped_partition(ALERT_PARTITION_PREFIX, &self.counter.scope)
    }

    pub fn sk(&self) -> String {
        format!("{}#{}#{}", self.counter.kind.as_str(), self.counter.period.label, self.percent)
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LimitsStoreError {
    /// The store did not answer, or failed: fail open or closed (`LIMITS_FAIL_MODE`).
    #[error("the limits store is unavailable: {0}")]
    Unavailable(#[source] Detail),
    /// A stored item is not what the code expects (a defect or a hand edit).
    #[error("a limits item is not valid: {0}")]
    Invalid(#[source] Detail),
}

#[async_trait]
pub trait LimitsStore: Send + Sync {
    /// The tenant's limits and, with `key_id`, the key's narrowing: one read.
    async fn load(
        &self,
        tenant_id: &str,
        key_id: Option<&str>,
    ) -> Result<(Option<StoredLimits>, Option<StoredLimits>), LimitsStoreError>;
    async fn put(&self, scope: &Scope, limits: &StoredLimits) -> Result<(), LimitsStoreError>;
    /// True when there were limits to delete.
    async fn delete(&self, scope: &Scope) -> Result<bool, LimitsStoreError>;
    /// Adds every hold to its counter if none crosses its limit, else none: one conditional transaction,
    /// made idempotent by `token` (a retry with the same token does not add twice: it answers `Reserved`).
    async fn reserve(&self, holds: &[Hold], token: &str) -> Result<ReserveOutcome, LimitsStoreError>;
    /// Replaces holds by actual use, idempotent by `token` (a retry of an applied settlement is `Ok`).
    async fn settle(&self, settlements: &[Settlement], token: &str) -> Result<(), LimitsStoreError>;
    /// The counters' values, in order; `consistent` for a strongly consistent read.
    async fn read_use(&self, counters: &[UseCounter], consistent: bool) -> Result<Vec<CounterUse>, LimitsStoreError>;
    /// Creates the marker unless it exists; true when this call created it.
    async fn mark_alert(&self, marker: &AlertMarker, at: DateTime<Utc>) -> Result<bool, LimitsStoreError>;
    async fn unmark_alert(&self, marker: &AlertMarker) -> Result<(), LimitsStoreError>;
}
