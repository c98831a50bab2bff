//! The hot path of the limits: read (cached), reserve before the model is called, settle when metered,
//! alert once per threshold. Routes call [`LimitsService::admit`] and keep the [`Reservation`] until the
//! request is metered; a reservation dropped unsettled (the model call failed, nothing was metered) is
//! released.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::alerts::{event_detail, AlertPublisher};
use super::config::{FailMode, LimitsConfig};
use super::lease::{LeaseBook, ReturnedLease};
use super::period::{system_clock, Clock, Period};
use super::store::{AlertMarker, Hold, LimitsStore, LimitsStoreError, ReserveOutcome, Settlement, UseCounter};
use super::{LimitKind, LimitSet, Limits, Scope, MICROS_PER_USD};
use crate::error::{ApiError, Detail};
use crate::pricing::PricingTable;
use crate::usage::{LimitRefusedRecord, TokenCounts, UsageLine, UsageLog, LIMIT_REFUSED_EVENT};

/// What a request may use at most, known before the model is called.
#[derive(Debug, Clone)]
pub struct AdmissionRequest<'a> {
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub request_id: &'a str,
    /// The gateway key the request came with (the proxy), whose narrowing applies too.
    pub key_id: Option<&'a str>,
    /// `/bedrock/chat` or `/v1/messages`: the `route` of a `limit_refused` line.
    pub route: &'a str,
    /// The model the request asks for: the price of its USD reservation.
    pub model_id: &'a str,
    /// An upper bound of the input tokens (see the README for how each route estimates it).
    pub input_tokens_bound: u64,
    pub max_output_tokens: u64,
}

/// One limit's state after an admission, for `anthropic-ratelimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    pub kind: LimitKind,
    pub scope: Scope,
    pub limit: u64,
    pub remaining: u64,
    pub resets_at: DateTime<Utc>,
}

/// An admitted request: its reservation (none when no budget applies) and, when asked for, its limits' state.
#[derive(Default)]
pub struct Admission {
    pub reservation: Option<Arc<Reservation>>,
    pub statuses: Vec<LimitStatus>,
    /// True when some token or USD budget applies (the chat route then bounds `max_tokens`).
    pub has_token_budget: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusal {
    pub kind: LimitKind,
    pub scope: Scope,
    pub limit: u64,
    pub period: Period,
    pub retry_after_seconds: u64,
}

impl LimitRefusal {
    pub fn to_api_error(&self) -> ApiError {
        let whose = match &self.scope {
            Scope::Tenant(_) => "this tenant's".to_owned(),
            Scope::Key { key_id, .. } => format!("gateway key {key_id}'s"),
        };
        let message = format!(
            "{whose} {} limit ({}) is reached for {}; it resets at {}",
            self.kind.as_str(),
            super::amount_json(self.kind, self.limit),
            self.period.label,
            self.period.resets_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        if self.kind == LimitKind::RequestsPerMinute {
            ApiError::RateLimited { message, retry_after_seconds: self.retry_after_seconds }
        } else {
            ApiError::BudgetExceeded { message, retry_after_seconds: self.retry_after_seconds }
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    /// A limit is reached (429).
    Refused(LimitRefusal),
    /// The limits store failed and `LIMITS_FAIL_MODE=closed` (503).
    Unavailable(ApiError),
}

impl From<AdmitError> for ApiError {
    fn from(error: AdmitError) -> Self {
        match error {
            AdmitError::Refused(refusal) => refusal.to_api_error(),
            AdmitError::Unavailable(error) => error,
        }
    }
}

struct CachedLimits {
    read_at: Instant,
    /// The limits, or the failure to read them: a failure is remembered for the TTL too, so a table that
    /// does not answer costs one bounded wait per tenant and TTL, not one per request.
    limits: Result<LimitSet, LimitsStoreError>,
}

struct Inner {
    store: Arc<dyn LimitsStore>,
    config: LimitsConfig,
    pricing: Arc<PricingTable>,
    usage_log: Arc<dyn UsageLog>,
    alerts: Option<Arc<dyn AlertPublisher>>,
    clock: Clock,
    cache: Mutex<HashMap<(String, Option<String>), CachedLimits>>,
    /// Alert markers this process knows exist: no need to ask DynamoDB again.
    alerted: Mutex<HashSet<AlertMarker>>,
    /// Settlements not finished yet, for `flush` (Lambda freezes the process after the response).
    pending: watch::Sender<usize>,
    /// Budget this process reserved in advance (`LIMITS_LEASE_*`; empty when leases are off).
    leases: Mutex<LeaseBook>,
    /// One lease reservation at a time per tenant (and key) in this process: the requests that find no lease
    /// wait for the one reserving it, then take from it, instead of each reserving a lease of its own.
    lease_gates: Mutex<LeaseGates>,
    /// Settlements and lease returns of a process with leases, merged per counter until the next write.
    batch: Mutex<SettlementBatch>,
    /// True once the task that returns idle leases runs.
    lease_sweeper: AtomicBool,
    /// With `batches_written`, makes the idempotency token of each batch write unique.
    process_nonce: String,
    batches_written: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct LimitsService {
    inner: Arc<Inner>,
}

impl LimitsService {
    pub fn new(
        store: Arc<dyn LimitsStore>,
        config: LimitsConfig,
        pricing: Arc<PricingTable>,
        usage_log: Arc<dyn UsageLog>,
        alerts: Option<Arc<dyn AlertPublisher>>,
    ) -> Self {
        Self::with_clock(store, config, pricing, usage_log, alerts, system_clock())
    }

    pub fn with_clock(
        store: Arc<dyn LimitsStore>,
        config: LimitsConfig,
        pricing: Arc<PricingTable>,
        usage_log: Arc<dyn UsageLog>,
        alerts: Option<Arc<dyn AlertPublisher>>,
        clock: Clock,
    ) -> Self {
        let (pending, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                pricing,
                usage_log,
                alerts,
                clock,
                cache: Mutex::default(),
                alerted: Mutex::default(),
                pending,
                leases: Mutex::default(),
                lease_gates: Mutex::default(),
                batch: Mutex::default(),
                lease_sweeper: AtomicBool::new(false),
                process_nonce: uuid::Uuid::new_v4().to_string(),
                batches_written: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The same service (store, settings, alerts) on another clock.
    pub fn with_clock_of(self, clock: Clock) -> Self {
        let inner = &self.inner;
        Self::with_clock(
            Arc::clone(&inner.store),
            inner.config.clone(),
            Arc::clone(&inner.pricing),
            Arc::clone(&inner.usage_log),
            inner.alerts.clone(),
            clock,
        )
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    pub fn store(&self) -> &Arc<dyn LimitsStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.inner.config
    }

    /// Forgets the cached limits of `tenant_id` (after this process changed them).
    pub fn invalidate(&self, tenant_id: &str) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|(tenant, _), _| tenant != tenant_id);
    }

    /// The limits that apply to `tenant_id` (and `key_id`), from the cache when younger than its TTL. When a
    /// refresh fails, the last limits read stay in use for another TTL (stale if error); with none, the
    /// failure itself is cached for the TTL.
    pub async fn limits(&self, tenant_id: &str, key_id: Option<&str>) -> Result<LimitSet, LimitsStoreError> {
        let cache_key = (tenant_id.to_owned(), key_id.map(str::to_owned));
        let ttl = self.inner.config.cache_ttl;
        let lock = || self.inner.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !ttl.is_zero() {
            if let Some(cached) = lock().get(&cache_key).filter(|cached| cached.read_at.elapsed() < ttl) {
                return cached.limits.clone();
            }
        }
        // Bounded (LIMITS_STORE_TIMEOUT_MS): a sick table adds at most this to a request before the fail mode
        // decides, not the client's whole retry budget.
        let bound = self.inner.config.store_timeout;
        let loaded = tokio::time::timeout(bound, self.inner.store.load(tenant_id, key_id))
            .await
            .unwrap_or_else(|_| {
                Err(LimitsStoreError::Unavailable(Detail::new(format!("no answer within {} ms", bound.as_millis()))))
            })
            .map(|(tenant, key)| LimitSet {
                tenant: tenant.map(|stored| stored.limits).unwrap_or_default(),
                key: key.map(|stored| stored.limits).unwrap_or_default(),
            });
        if ttl.is_zero() {
            return loaded;
        }
        let mut cache = lock();
        let kept = match (&loaded, cache.get(&cache_key)) {
            (Err(error), Some(CachedLimits { limits: Ok(stale), .. })) => {
                tracing::warn!(tenant_id, %error, "limits could not be refreshed; the last ones read stay in use");
                Ok(stale.clone())
            }
            _ => loaded,
        };
        // Bounded: a process serves few tenants, but never let the map grow without end.
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(cache_key, CachedLimits { read_at: Instant::now(), limits: kept.clone() });
        kept
    }

    /// Admits a request or refuses it (429, with a `limit_refused` line). `with_status` also reads the
    /// counters after the reservation (the proxy's `anthropic-ratelimit-*` headers).
    #[tracing::instrument(skip_all, fields(tenant_id = %request.tenant_id, request_id = %request.request_id))]
    pub async fn admit(&self, request: &AdmissionRequest<'_>, with_status: bool) -> Result<Admission, AdmitError> {
        if !self.inner.config.enabled {
            return Ok(Admission::default());
        }
        let limits = match self.limits(request.tenant_id, request.key_id).await {
            Ok(limits) => limits,
            Err(error) => return self.store_failed(error, request),
        };
        if limits.is_empty() {
            return Ok(Admission::default());
        }
        let now = self.now();
        let holds = self.holds(request, &limits, now);
        let has_token_budget = holds.iter().any(|hold| hold.counter.kind.is_budget());
        // A request larger than a whole limit is refused without a write.
        if let Some(index) = holds.iter().position(|hold| hold.amount > hold.limit) {
            return Err(self.refuse(request, &holds[index], now));
        }
        let leased = self.inner.config.lease.enabled();
        if let Err(error) = self.reserve_holds(request, &holds, leased).await {
            return match error {
                ReserveError::Refused(index) => Err(self.refuse(request, holds.get(index).unwrap_or(&holds[0]), now)),
                ReserveError::Store(error) => self.store_failed(error, request),
            };
        }
        let statuses = if with_status { self.statuses(&holds).await } else { Vec::new() };
        let reservation = Reservation {
            service: self.clone(),
            holds,
            request_id: request.request_id.to_owned(),
            price_model_id: request.model_id.to_owned(),
            leased,
            done: AtomicBool::new(false),
        };
        Ok(Admission { reservation: Some(Arc::new(reservation)), statuses, has_token_budget })
    }

    /// Reserves every hold: from this process's leases when they cover it (no DynamoDB call), else in one
    /// conditional transaction (of a lease's worth where leases are on; of the hold alone when a lease's
    /// worth would cross the limit). All or nothing: on a refusal or a failure nothing stays held.
    async fn reserve_holds(&self, request: &AdmissionRequest<'_>, holds: &[Hold], leased: bool) -> Result<(), ReserveError> {
        let token = idempotency_token("reserve", request.request_id);
        if !leased {
            return self.reserve_in_store(holds, &token).await;
        }
        let mut taken = self.take_from_leases(holds, &vec![false; holds.len()]);
        if taken.iter().all(|taken| *taken) {
            self.refill_ahead(request, holds);
            return Ok(());
        }
        // Wait for the reservation in progress for this tenant (bounded like a reservation), then look again.
        let gate = self.lease_gate(request.tenant_id, request.key_id);
        let _turn = tokio::time::timeout(self.inner.config.store_timeout, gate.lock()).await.ok();
        taken = self.take_from_leases(holds, &taken);
        let missing: Vec<usize> = (0..holds.len()).filter(|&index| !taken[index]).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let settings = self.inner.config.lease;
        let leases: Vec<Hold> = {
            let book = self.lease_book();
            missing
                .iter()
                .map(|&index| {
                    let hold = &holds[index];
                    Hold { amount: settings.reservation_amount(hold, book.growth(&hold.counter)), ..hold.clone() }
                })
                .collect()
        };
        let mut outcome = self.reserve_in_store(&leases, &token).await;
        let mut granted = leases.iter().map(|lease| lease.amount).collect::<Vec<u64>>();
        if matches!(outcome, Err(ReserveError::Refused(_)))
            && leases.iter().zip(&missing).any(|(lease, &index)| lease.amount > holds[index].amount)
        {
            // A lease's worth does not fit: the hold alone may.
            let exact: Vec<Hold> = missing.iter().map(|&index| holds[index].clone()).collect();
            outcome = self.reserve_in_store(&exact, &idempotency_token("reserve-exact", request.request_id)).await;
            granted = exact.iter().map(|hold| hold.amount).collect();
        }
        let now = Instant::now();
        let mut book = self.lease_book();
        match outcome {
            Ok(()) => {
                let mut orphans = Vec::new();
                for (&index, amount) in missing.iter().zip(granted) {
                    let hold = &holds[index];
                    let existed = book.free(&hold.counter).is_some();
                    // A lease under another limit appeared meanwhile: give this one back instead.
                    if !book.give(hold, amount - hold.amount, now, true) {
                        orphans.push(ReturnedLease {
                            counter: hold.counter.clone(),
                            free: amount - hold.amount,
                            limit: hold.limit,
                        });
                    } else if existed && amount > hold.amount {
                        book.granted(&hold.counter, now);
                    }
                }
                drop(book);
                self.return_leases(orphans);
                self.start_lease_sweeper();
                Ok(())
            }
            Err(error) => {
                let mut orphans = Vec::new();
                for (hold, _) in holds.iter().zip(&taken).filter(|(_, taken)| **taken) {
                    if !book.give(hold, hold.amount, now, true) {
                        orphans.push(ReturnedLease { counter: hold.counter.clone(), free: hold.amount, limit: hold.limit });
                    }
                }
                drop(book);
                self.return_leases(orphans);
                Err(match error {
                    ReserveError::Refused(position) => ReserveError::Refused(missing.get(position).copied().unwrap_or(0)),
                    other @ ReserveError::Store(_) => other,
                })
            }
        }
    }

    /// When a lease that admitted this request has less than a quarter of a lease's worth left, reserves the
    /// next one in the background (one at a time per tenant), so that the requests that follow do not wait for
    /// it. A refusal or a failure there changes nothing: a request that finds the lease empty reserves as usual.
    fn refill_ahead(&self, request: &AdmissionRequest<'_>, holds: &[Hold]) {
        let settings = self.inner.config.lease;
        let low: Vec<Hold> = {
            let book = self.lease_book();
            holds
                .iter()
                .filter_map(|hold| {
                    let worth = settings.reservation_amount(hold, book.growth(&hold.counter));
                    let free = book.free(&hold.counter)?;
                    (worth > hold.amount && free < worth / 4).then(|| Hold { amount: worth - free.min(worth), ..hold.clone() })
                })
                .collect()
        };
        if low.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Ok(turn) = self.lease_gate(request.tenant_id, request.key_id).try_lock_owned() else { return };
        let sequence = self.inner.batches_written.fetch_add(1, Ordering::Relaxed);
        let token = idempotency_token("refill", &format!("{}#{sequence}", self.inner.process_nonce));
        self.inner.pending.send_modify(|count| *count += 1);
        let this = self.clone();
        runtime.spawn(async move {
            if this.reserve_in_store(&low, &token).await.is_ok() {
                let now = Instant::now();
                let mut orphans = Vec::new();
                let mut book = this.lease_book();
                for hold in &low {
                    if book.give(hold, hold.amount, now, false) {
                        book.granted(&hold.counter, now);
                    } else {
                        orphans.push(ReturnedLease { counter: hold.counter.clone(), free: hold.amount, limit: hold.limit });
                    }
                }
                drop(book);
                this.return_leases(orphans);
            }
            drop(turn);
            this.inner.pending.send_modify(|count| *count = count.saturating_sub(1));
        });
    }

    async fn reserve_in_store(&self, holds: &[Hold], token: &str) -> Result<(), ReserveError> {
        // A reservation that lands after the bound (the request was admitted unreserved, fail open) is never
        // settled: it only makes the budget stricter.
        let bound = self.inner.config.store_timeout;
        let reserved = tokio::time::timeout(bound, self.inner.store.reserve(holds, token)).await.unwrap_or_else(|_| {
            Err(LimitsStoreError::Unavailable(Detail::new(format!("no answer within {} ms", bound.as_millis()))))
        });
        match reserved {
            Ok(ReserveOutcome::Reserved) => Ok(()),
            Ok(ReserveOutcome::Refused { index }) => Err(ReserveError::Refused(index)),
            Err(error) => Err(ReserveError::Store(error)),
        }
    }

    /// Takes from the leases the holds not `taken` yet; the holds taken, old and new.
    fn take_from_leases(&self, holds: &[Hold], taken: &[bool]) -> Vec<bool> {
        let wanted: Vec<usize> = (0..holds.len()).filter(|&index| !taken[index]).collect();
        let asked: Vec<Hold> = wanted.iter().map(|&index| holds[index].clone()).collect();
        let mut stale = Vec::new();
        let got = self.lease_book().take(&asked, Instant::now(), &mut stale);
        self.return_leases(stale);
        let mut taken = taken.to_vec();
        for (&index, got) in wanted.iter().zip(got) {
            taken[index] = got;
        }
        taken
    }

    fn lease_gate(&self, tenant_id: &str, key_id: Option<&str>) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.inner.lease_gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a process serves few tenants, but never let the map grow without end.
        if gates.len() >= 10_000 {
            gates.clear();
        }
        Arc::clone(gates.entry((tenant_id.to_owned(), key_id.map(str::to_owned))).or_default())
    }

    fn lease_book(&self) -> std::sync::MutexGuard<'_, LeaseBook> {
        self.inner.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this process's lease of `counter` has free (none without a lease).
    pub fn lease_free(&self, counter: &UseCounter) -> Option<u64> {
        self.lease_book().free(counter)
    }

    /// Gives leases back to DynamoDB, in the background (`flush_within` waits for it). A return that fails
    /// leaves the lease counted: the budget is stricter until its period ends, never looser.
    fn return_leases(&self, leases: Vec<ReturnedLease>) {
        let settlements: Vec<Settlement> = leases.iter().filter(|lease| lease.free > 0).map(ReturnedLease::settlement).collect();
        if settlements.is_empty() {
            return;
        }
        self.add_to_batch(settlements, None);
    }

    /// Merges settlements into the next batch write (the sweeper writes it within `BATCH_INTERVAL`).
    fn add_to_batch(&self, settlements: Vec<Settlement>, request_id: Option<&str>) {
        let mut batch = self.inner.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for settlement in settlements {
            let merged = batch.by_counter.entry(settlement.counter.clone()).or_insert_with(|| Settlement {
                held: 0,
                actual: 0,
                ..settlement.clone()
            });
            merged.held = merged.held.saturating_add(settlement.held);
            merged.actual = merged.actual.saturating_add(settlement.actual);
            merged.limit = settlement.limit;
        }
        if let Some(request_id) = request_id {
            request_id.clone_into(&mut batch.last_request_id);
        }
        drop(batch);
        self.start_lease_sweeper();
    }

    /// Starts the write of the merged settlements: one transaction per 99 counters, made idempotent by a token
    /// unique to this process and batch.
    fn write_batch(&self) {
        let (settlements, request_id) = {
            let mut batch = self.inner.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let settlements: Vec<Settlement> = std::mem::take(&mut batch.by_counter)
                .into_values()
                .filter(|settlement| settlement.held != settlement.actual || settlement.actual > 0)
                .collect();
            (settlements, std::mem::take(&mut batch.last_request_id))
        };
        if settlements.is_empty() {
            return;
        }
        let sequence = self.inner.batches_written.fetch_add(1, Ordering::Relaxed);
        for (part, chunk) in settlements.chunks(99).enumerate() {
            let operation = format!("batch#{}#{sequence}#{part}", self.inner.process_nonce);
            self.start_settlement(chunk.to_vec(), operation, request_id.clone());
        }
    }

    /// Returns the leases unused for `LIMITS_LEASE_IDLE_MS` or of an ended period (every lease with
    /// `everything`).
    fn return_idle_leases(&self, everything: bool) {
        let idle = self.inner.config.lease.idle;
        let returned = self.lease_book().take_out_idle(Instant::now(), idle, self.now(), everything);
        self.return_leases(returned);
    }

    fn start_lease_sweeper(&self) {
        if self.inner.lease_sweeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let inner = Arc::downgrade(&self.inner);
        let tick = (self.inner.config.lease.idle / 4).clamp(Duration::from_millis(25), BATCH_INTERVAL);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = inner.upgrade() else { break };
                let service = LimitsService { inner };
                service.return_idle_leases(false);
                service.write_batch();
            }
        });
    }

    fn store_failed(&self, error: LimitsStoreError, request: &AdmissionRequest<'_>) -> Result<Admission, AdmitError> {
        match self.inner.config.fail_mode {
            FailMode::Open => {
                tracing::warn!(event = "limits_unavailable", fail_mode = "open", tenant_id = %request.tenant_id,
                    request_id = %request.request_id, %error, "limits could not be checked; admitting the request (LIMITS_FAIL_MODE=open)");
                Ok(Admission::default())
            }
            FailMode::Closed => {
                tracing::warn!(event = "limits_unavailable", fail_mode = "closed", tenant_id = %request.tenant_id,
                    request_id = %request.request_id, %error, "limits could not be checked; refusing the request (LIMITS_FAIL_MODE=closed)");
                Err(AdmitError::Unavailable(ApiError::Unavailable {
                    message: "the tenant's limits could not be checked; retry after the delay in Retry-After".into(),
                    retry_after_seconds: 5,
                }))
            }
        }
    }

    /// The holds of one request: one per limit set, tenant's then key's.
    fn holds(&self, request: &AdmissionRequest<'_>, limits: &LimitSet, now: DateTime<Utc>) -> Vec<Hold> {
        let tokens = request.input_tokens_bound.saturating_add(request.max_output_tokens);
        let usd = self.worst_case_usd_micros(request);
        let amount = |kind: LimitKind| match kind {
            LimitKind::RequestsPerMinute => 1,
            LimitKind::TokensPerDay | LimitKind::TokensPerMonth => tokens,
            LimitKind::UsdPerMonth => usd,
        };
        let mut holds = Vec::new();
        let tenant = Scope::Tenant(request.tenant_id.to_owned());
        let scopes: [(Scope, &Limits); 2] = [
            (tenant, &limits.tenant),
            (
                Scope::Key { tenant_id: request.tenant_id.to_owned(), key_id: request.key_id.unwrap_or_default().to_owned() },
                &limits.key,
            ),
        ];
        for (scope, scope_limits) in scopes {
            if scope.key_id() == Some("") {
                continue;
            }
            for (kind, limit) in scope_limits.set_kinds() {
                holds.push(Hold { counter: UseCounter::new(scope.clone(), kind, now), limit, amount: amount(kind) });
            }
        }
        holds
    }

    /// The most the request can cost: its token bound at the model's dearest input price (plain or cache
    /// write) and its output price, raised by the largest geographic premium of the table (a Bedrock
    /// fallback may go through a geographic profile). 0 for a model the price table does not know.
    fn worst_case_usd_micros(&self, request: &AdmissionRequest<'_>) -> u64 {
        let pricing = &self.inner.pricing;
        let Some(price) = pricing.price_of(request.model_id) else {
            tracing::warn!(model_id = %request.model_id, "no price for this model: its USD budget use counts as 0");
            return 0;
        };
        let premium = pricing.models.values().filter_map(|price| price.geographic_profile_premium).fold(0.0_f64, f64::max);
        let input_price = price.input_per_1k.max(price.cache_write_per_1k.unwrap_or(0.0));
        let dollars = (request.input_tokens_bound as f64 * input_price + request.max_output_tokens as f64 * price.output_per_1k)
            / 1000.0
            * (1.0 + premium);
        usd_micros_ceil(dollars)
    }

    fn refuse(&self, request: &AdmissionRequest<'_>, hold: &Hold, now: DateTime<Utc>) -> AdmitError {
        let period = hold.counter.period.clone();
        let refusal = LimitRefusal {
            kind: hold.counter.kind,
            scope: hold.counter.scope.clone(),
            limit: hold.limit,
            retry_after_seconds: period.seconds_until_reset(now),
            period,
        };
        self.inner.usage_log.write(&UsageLine::LimitRefused(LimitRefusedRecord {
            event: LIMIT_REFUSED_EVENT.to_owned(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            tenant_id: request.tenant_id.to_owned(),
            user_id: request.user_id.to_owned(),
            request_id: request.request_id.to_owned(),
            limit: refusal.kind.as_str().to_owned(),
            period: refusal.period.label.clone(),
            route: request.route.to_owned(),
            scope: refusal.scope.name().to_owned(),
            key_id: refusal.scope.key_id().map(str::to_owned),
            limit_value: super::amount_json(refusal.kind, refusal.limit),
            requested: super::amount_json(refusal.kind, hold.amount),
            retry_after_seconds: refusal.retry_after_seconds,
        }));
        if hold.counter.kind.is_budget() && self.inner.alerts.is_some() {
            self.start_refusal_alert(hold.clone(), request.request_id.to_owned());
        }
        AdmitError::Refused(refusal)
    }

    /// A budget that refuses a request whose worst case does not fit beside the metered use is exhausted:
    /// its thresholds of 100% and more are raised (once, like every threshold), though the metered use may stay
    /// just below the limit (a reservation is a worst case).
    fn start_refusal_alert(&self, hold: Hold, request_id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.inner.pending.send_modify(|count| *count += 1);
        let this = self.clone();
        runtime.spawn(async move {
            let settlement = Settlement { counter: hold.counter, held: hold.amount, actual: 0, limit: hold.limit };
            this.raise_thresholds(&[settlement], &request_id, true).await;
            this.inner.pending.send_modify(|count| *count = count.saturating_sub(1));
        });
    }

    /// Each hold's limit and what is left of it after this admission (eventually consistent: a header).
    async fn statuses(&self, holds: &[Hold]) -> Vec<LimitStatus> {
        let counters: Vec<UseCounter> = holds.iter().map(|hold| hold.counter.clone()).collect();
        let uses = match self.inner.store.read_use(&counters, false).await {
            Ok(uses) => uses,
            Err(error) => {
                tracing::warn!(%error, "limit counters could not be read for the rate-limit headers");
                return Vec::new();
            }
        };
        holds
            .iter()
            .zip(uses)
            .map(|(hold, used)| LimitStatus {
                kind: hold.counter.kind,
                scope: hold.counter.scope.clone(),
                limit: hold.limit,
                // What this process reserved in advance and no request holds is still free to admit.
                remaining: hold.limit.saturating_sub(used.admitted.saturating_sub(self.lease_free(&hold.counter).unwrap_or(0))),
                resets_at: hold.counter.period.resets_at,
            })
            .collect()
    }

    /// Returns this process's leases and waits up to `bound` for them and the settlements in progress; true
    /// when none is left.
    pub async fn flush_within(&self, bound: Duration) -> bool {
        self.return_idle_leases(true);
        self.write_batch();
        let mut pending = self.inner.pending.subscribe();
        let drained = tokio::time::timeout(bound, pending.wait_for(|count| *count == 0)).await.is_ok();
        drained
    }

    /// `operation` names the write (its idempotency token comes from it): the request id of a request's own
    /// settlement, or a batch's unique name; `request_id` is the request the alerts and logs name.
    fn start_settlement(&self, settlements: Vec<Settlement>, operation: String, request_id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(request_id = %request_id, "no runtime to settle a reservation; it stays held until its period ends");
            return;
        };
        self.inner.pending.send_modify(|count| *count += 1);
        let this = self.clone();
        runtime.spawn(async move {
            this.settle(&settlements, &operation, &request_id).await;
            this.inner.pending.send_modify(|count| *count = count.saturating_sub(1));
        });
    }

    async fn settle(&self, settlements: &[Settlement], operation: &str, request_id: &str) {
        let token = idempotency_token("settle", operation);
        let mut pause = Duration::from_millis(100);
        let mut settled = false;
        for attempt in 1..=3 {
            match self.inner.store.settle(settlements, &token).await {
                Ok(()) => {
                    settled = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(request_id, attempt, %error, "settling a reservation failed");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        if !settled {
            // Conservative: the worst case stays counted, so the budget is never overshot, only under-used.
            tracing::error!(request_id, "a reservation could not be settled; its worst case stays counted until the period ends");
            return;
        }
        self.raise_thresholds(settlements, request_id, false).await;
    }

    /// Raises the thresholds that the budgets' settled use has crossed (with `refused`, also those of 100%
    /// and more) and nobody raised yet.
    async fn raise_thresholds(&self, settlements: &[Settlement], request_id: &str, refused: bool) {
        let Some(publisher) = &self.inner.alerts else { return };
        let budgets: Vec<&Settlement> = settlements
            .iter()
            .filter(|settlement| settlement.counter.kind.is_budget() && (settlement.actual > 0 || refused))
            .collect();
        if budgets.is_empty() {
            return;
        }
        let counters: Vec<UseCounter> = budgets.iter().map(|settlement| settlement.counter.clone()).collect();
        let uses = match self.inner.store.read_use(&counters, true).await {
            Ok(uses) => uses,
            Err(error) => {
                tracing::warn!(request_id, %error, "budget use could not be read for alerts");
                return;
            }
        };
        for (settlement, used) in budgets.iter().zip(uses) {
            let (counter, limit) = (settlement.counter.clone(), settlement.limit);
            if limit == 0 {
                continue;
            }
            // Refused although nothing else is in flight: the metered use leaves no room for this request.
            let exhausted = refused && used.settled.saturating_add(settlement.held) > limit;
            for percent in &self.inner.config.alert_thresholds {
                let crossed = u128::from(used.settled) * 100 >= u128::from(limit) * u128::from(*percent);
                if !(crossed || exhausted && *percent >= 100) {
                    continue;
                }
                let marker = AlertMarker { counter: counter.clone(), percent: *percent };
                if self.inner.alerted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&marker) {
                    continue;
                }
                match self.inner.store.mark_alert(&marker, self.now()).await {
                    Ok(false) => {}
                    Ok(true) => {
                        let detail = event_detail(&marker, limit, used, request_id);
                        if let Err(error) = publisher.publish(&detail).await {
                            tracing::warn!(request_id, %error, "the budget alert could not be sent; a later request retries");
                            if let Err(error) = self.inner.store.unmark_alert(&marker).await {
                                tracing::error!(request_id, %error, "the alert marker could not be removed: this alert is lost");
                            }
                            continue;
                        }
                        tracing::info!(request_id, limit = counter.kind.as_str(), percent, period = %counter.period.label, "budget alert sent");
                    }
                    Err(error) => {
                        tracing::warn!(request_id, %error, "the alert marker could not be written; a later request retries");
                        continue;
                    }
                }
                self.inner.alerted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(marker);
            }
        }
    }
}

/// One lease reservation at a time per (tenant, key) in a process.
type LeaseGates = HashMap<(String, Option<String>), Arc<tokio::sync::Mutex<()>>>;

/// How often a process with leases writes its merged settlements (and returns idle leases).
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct SettlementBatch {
    by_counter: HashMap<UseCounter, Settlement>,
    /// The last request merged: the one an alert raised by this batch names.
    last_request_id: String,
}

enum ReserveError {
    /// The hold at this index would cross its limit.
    Refused(usize),
    Store(LimitsStoreError),
}

/// Whole micro-dollars, rounded up (a reservation never under-counts).
pub fn usd_micros_ceil(dollars: f64) -> u64 {
    if !dollars.is_finite() || dollars <= 0.0 {
        return 0;
    }
    (dollars * MICROS_PER_USD as f64).ceil() as u64
}

/// A DynamoDB `ClientRequestToken` (at most 36 characters) unique to one request's reservation or settlement.
fn idempotency_token(what: &str, request_id: &str) -> String {
    let digest = Sha256::digest(format!("{what}#{request_id}").as_bytes());
    hex::encode(&digest[..16])
}

/// What a request holds until it is metered. `settle` turns the holds into the actual use (once); dropping
/// it unsettled releases the holds (the request used nothing).
pub struct Reservation {
    service: LimitsService,
    holds: Vec<Hold>,
    request_id: String,
    price_model_id: String,
    /// Admitted under leases: what the request does not use goes back to this process's leases.
    leased: bool,
    done: AtomicBool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reservation")
            .field("request_id", &self.request_id)
            .field("holds", &self.holds)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub fn holds(&self) -> &[Hold] {
        &self.holds
    }

    /// Settles to what the request used on `model_id` (in the background; `LimitsService::flush_within`
    /// waits for it). Only the first call counts.
    pub fn settle(&self, model_id: &str, tokens: &TokenCounts) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let pricing = &self.service.inner.pricing;
        let usd = match pricing.cost_usd(model_id, tokens).or_else(|_| pricing.cost_usd(&self.price_model_id, tokens)) {
            Ok(dollars) => usd_micros_ceil(dollars),
            Err(unpriced) => {
                tracing::warn!(request_id = %self.request_id, %unpriced, "no price: this request counts 0 USD");
                0
            }
        };
        let settlements = self.settlements(|kind| match kind {
            LimitKind::RequestsPerMinute => None,
            LimitKind::TokensPerDay | LimitKind::TokensPerMonth => Some(tokens.total()),
            LimitKind::UsdPerMonth => Some(usd),
        });
        self.finish(settlements);
    }

    /// Writes the settlements, after handing what the request did not use to this process's leases when it
    /// was admitted under them (that part then stays reserved in DynamoDB: only `settled` moves, plus any
    /// excess over the hold). Requests per minute count on admission: a request held to nothing else has
    /// nothing to settle.
    fn finish(&self, mut settlements: Vec<Settlement>) {
        if self.leased {
            let now = Instant::now();
            let mut book = self.service.lease_book();
            for settlement in &mut settlements {
                let unused = settlement.held.saturating_sub(settlement.actual);
                let hold = Hold { counter: settlement.counter.clone(), limit: settlement.limit, amount: settlement.held };
                if book.give(&hold, unused, now, false) {
                    settlement.held -= unused;
                }
            }
            drop(book);
            // Merged with the process's other settlements into one write per counter and batch.
            self.service.add_to_batch(settlements, Some(&self.request_id));
            return;
        }
        if !settlements.is_empty() {
            self.service.start_settlement(settlements, self.request_id.clone(), self.request_id.clone());
        }
    }

    fn settlements(&self, actual: impl Fn(LimitKind) -> Option<u64>) -> Vec<Settlement> {
        self.holds
            .iter()
            .filter_map(|hold| {
                actual(hold.counter.kind).map(|actual| Settlement {
                    counter: hold.counter.clone(),
                    held: hold.amount,
                    actual,
                    limit: hold.limit,
                })
            })
            .collect()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        // Nothing was metered: release the budgets' holds (a refused or failed model call used nothing).
        let settlements = self.settlements(|kind| kind.is_budget().then_some(0));
        self.finish(settlements);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::period::PeriodUnit;

    fn request(model_id: &str) -> AdmissionRequest<'_> {
        AdmissionRequest {
            tenant_id: "acme",
            user_id: "u",
            request_id: "r",
            key_id: Some("k1"),
            route: "/v1/messages",
            model_id,
            input_tokens_bound: 1000,
            max_output_tokens: 500,
        }
    }

    fn service() -> LimitsService {
        let store = Arc::new(crate::limits::dynamo::DynamoLimitsStore::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder().behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest()).build(),
            ),
            "unused".into(),
        ));
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:30Z").unwrap().with_timezone(&Utc);
        LimitsService::with_clock(
            store,
            LimitsConfig::default(),
            Arc::new(PricingTable::builtin()),
            Arc::new(crate::test_util::RecordedLines::default()),
            None,
            Arc::new(move || at),
        )
    }

    #[test]
    fn holds_cover_every_set_limit_of_the_tenant_and_the_key_with_the_worst_case() {
        let limits = LimitSet {
            tenant: Limits { tokens_per_month: Some(10_000), usd_per_month_micros: Some(5_000_000), ..Limits::default() },
            key: Limits { requests_per_minute: Some(3), ..Limits::default() },
        };
        let service = service();
        let holds = service.holds(&request("anthropic.claude-3-haiku-20240307-v1:0"), &limits, service.now());
        let described: Vec<(LimitKind, &str, Option<&str>, u64)> = holds
            .iter()
            .map(|hold| (hold.counter.kind, hold.counter.period.label.as_str(), hold.counter.scope.key_id(), hold.amount))
            .collect();
        // Haiku 3: 1000 input tokens at 0.00025 + 500 output at 0.00125 per 1k = 0.000875 USD, +10% premium.
        assert_eq!(
            described,
            vec![
                (LimitKind::TokensPerMonth, "2026-12", None, 1500),
                (LimitKind::UsdPerMonth, "2026-12", None, 963),
                (LimitKind::RequestsPerMinute, "2026-12-31T23:59", Some("k1"), 1),
            ]
        );
        assert_eq!(holds[0].counter.sk(), "MONTH#2026-12");
        assert_eq!(holds[2].counter.pk(), "BUDGET#acme#KEY#k1");
        assert_eq!(holds[2].counter.period.unit, PeriodUnit::Minute);
    }

    #[test]
    fn an_unpriced_model_reserves_no_usd() {
        assert_eq!(service().worst_case_usd_micros(&request("no-such-model")), 0);
    }

    #[test]
    fn refusals_say_which_limit_and_when_it_resets() {
        let now = service().now();
        let refusal = |kind: LimitKind| LimitRefusal {
            kind,
            scope: Scope::Tenant("acme".into()),
            limit: 10,
            period: Period::containing(kind.period_unit(), now),
            retry_after_seconds: Period::containing(kind.period_unit(), now).seconds_until_reset(now),
        };
        let rate = refusal(LimitKind::RequestsPerMinute).to_api_error();
        assert!(matches!(rate, ApiError::RateLimited { retry_after_seconds: 30, .. }), "{rate:?}");
        let budget = refusal(LimitKind::TokensPerMonth).to_api_error();
        assert!(matches!(budget, ApiError::BudgetExceeded { .. }), "{budget:?}");
        assert!(budget.to_string().contains("tokens_per_month") && budget.to_string().contains("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn tokens_are_idempotency_tokens_of_at_most_36_characters() {
        let token = idempotency_token("reserve", "9f1c2d3e-0000-4000-8000-000000000000");
        assert_eq!(token.len(), 32);
        assert_ne!(token, idempotency_token("settle", "9f1c2d3e-0000-4000-8000-000000000000"));
    }
}
