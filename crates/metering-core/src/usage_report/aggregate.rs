//! Pure aggregation of counter rows into the reports the usage API returns: one tenant's summary, daily and
//! weekly stats (every day and week of the period present, zeros included, so a chart has no holes), and
//! every tenant's totals ranked by tokens. No I/O here: the rows come from a `UsageReader`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::period::ReportPeriod;
use crate::counters::day_label;
use crate::pricing::{round_usd, PricingTable};
use crate::usage::{RequestType, TokenCounts};

/// One counter item as read: one tenant, one day or ISO week, one request type, one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub tenant_id: String,
    /// `YYYY-MM-DD` (daily item) or `YYYY-Www` (weekly item).
    pub period: String,
    pub request_type: String,
    pub model_id: String,
    pub tokens: TokenCounts,
    pub total_tokens: u64,
    pub requests: u64,
}

/// Which request types a report counts: one, or all (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestTypeFilter(pub Option<RequestType>);

impl RequestTypeFilter {
    pub const ALL_LABEL: &'static str = "all";

    /// `bedrock`, `anthropic`, `all` or absent; anything else is `None` (the caller answers 400).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some(Self::ALL_LABEL) => Some(Self(None)),
            Some(text) => serde_json::from_value::<RequestType>(serde_json::Value::String(text.to_owned()))
                .ok()
                .map(|request_type| Self(Some(request_type))),
        }
    }

    pub fn label(self) -> &'static str {
        self.0.map_or(Self::ALL_LABEL, RequestType::as_str)
    }

    pub fn matches(self, request_type: &str) -> bool {
        self.0.is_none_or(|wanted| wanted.as_str() == request_type)
    }
}

/// What a day or a week of the report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeriodStats {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub requests: u64,
}

impl PeriodStats {
    fn add(&mut self, row: &CounterRow) {
        self.input_tokens += row.tokens.input_tokens;
        self.output_tokens += row.tokens.output_tokens;
        self.requests += row.requests;
    }
}

/// Token and request sums of any set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub tokens: TokenCounts,
    pub total_tokens: u64,
    pub requests: u64,
}

impl Totals {
    pub fn add_row(&mut self, row: &CounterRow) {
        self.add(&Totals { tokens: row.tokens, total_tokens: row.total_tokens, requests: row.requests });
    }

    pub fn add(&mut self, other: &Totals) {
        self.tokens.input_tokens += other.tokens.input_tokens;
        self.tokens.output_tokens += other.tokens.output_tokens;
        self.tokens.cache_creation_input_tokens += other.tokens.cache_creation_input_tokens;
        self.tokens.cache_read_input_tokens += other.tokens.cache_read_input_tokens;
        self.total_tokens += other.total_tokens;
        self.requests += other.requests;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub total_cache_creation_input_tokens: u64,
    pub total_cache_read_input_tokens: u64,
    pub total_tokens: u64,
    pub total_requests: u64,
    /// `None` (JSON null) when a model of the period has no price: see the report's warnings.
    pub estimated_cost_usd: Option<f64>,
}

impl UsageSummary {
    fn new(totals: &Totals, estimated_cost_usd: Option<f64>) -> Self {
        Self {
            total_input_tokens: totals.tokens.input_tokens,
            total_output_tokens: totals.tokens.output_tokens,
            total_cache_creation_input_tokens: totals.tokens.cache_creation_input_tokens,
            total_cache_read_input_tokens: totals.tokens.cache_read_input_tokens,
            total_tokens: totals.total_tokens,
            total_requests: totals.requests,
            estimated_cost_usd,
        }
    }
}

/// One model's share of a tenant's period (the cost is estimated per model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsage {
    pub model_id: String,
    pub request_type: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub total_tokens: u64,
    pub requests: u64,
    pub estimated_cost_usd: Option<f64>,
}

/// The body of `GET /v1/usage/me` and `GET /v1/usage/{tenant_id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantUsageReport {
    pub tenant_id: String,
    pub period_days: u32,
    pub from: String,
    pub to: String,
    pub request_type: &'static str,
    pub summary: UsageSummary,
    /// Every day of the period, oldest first, zeros included.
    pub daily_stats: BTreeMap<String, PeriodStats>,
    /// Every ISO week that overlaps the period, whole weeks (from the weekly counters, which are kept longer).
    pub weekly_stats: BTreeMap<String, PeriodStats>,
    pub models: Vec<ModelUsage>,
    pub warnings: Vec<String>,
}

type ModelKey = (String, String);

/// Sums per (request type, model) and their estimated cost; unpriced models add a warning.
fn estimate(
    pricing: &PricingTable,
    by_model: &BTreeMap<ModelKey, Totals>,
    warnings: &mut BTreeSet<String>,
) -> (Option<f64>, Vec<(ModelKey, Option<f64>)>) {
    let mut total = Some(0.0);
    let mut per_model = Vec::with_capacity(by_model.len());
    for (key, totals) in by_model {
        let cost = match pricing.cost_usd(&key.1, &totals.tokens) {
            Ok(cost) => Some(cost),
            Err(unpriced) => {
                warnings.insert(format!("{unpriced}: estimated_cost_usd is null"));
                None
            }
        };
        total = total.zip(cost).map(|(sum, cost)| sum + cost);
        per_model.push((key.clone(), cost.map(round_usd)));
    }
    (total.map(round_usd), per_model)
}

/// One tenant's report from its daily rows (summary, days, models) and weekly rows (weeks).
pub fn tenant_report(
    tenant_id: &str,
    period: &ReportPeriod,
    filter: RequestTypeFilter,
    day_rows: &[CounterRow],
    week_rows: &[CounterRow],
    pricing: &PricingTable,
) -> TenantUsageReport {
    let mut daily_stats: BTreeMap<String, PeriodStats> =
        period.day_labels().into_iter().map(|day| (day, PeriodStats::default())).collect();
    let mut weekly_stats: BTreeMap<String, PeriodStats> =
        period.week_labels().into_iter().map(|week| (week, PeriodStats::default())).collect();
    let mut totals = Totals::default();
    let mut by_model: BTreeMap<ModelKey, Totals> = BTreeMap::new();
    // Rows outside the period or of another tenant or request type cannot come from a correct reader;
    // skipping them keeps a reader's mistake from ever showing another tenant's numbers.
    let wanted = |row: &&CounterRow| row.tenant_id == tenant_id && filter.matches(&row.request_type);
    for row in day_rows.iter().filter(wanted) {
        let Some(day) = daily_stats.get_mut(&row.period) else { continue };
        day.add(row);
        totals.add_row(row);
        by_model.entry((row.request_type.clone(), row.model_id.clone())).or_default().add_row(row);
    }
    for row in week_rows.iter().filter(wanted) {
        if let Some(week) = weekly_stats.get_mut(&row.period) {
            week.add(row);
        }
    }
    let mut warnings = BTreeSet::new();
    let (cost, model_costs) = estimate(pricing, &by_model, &mut warnings);
    let models = model_costs
        .into_iter()
        .map(|((request_type, model_id), estimated_cost_usd)| {
            let model_totals = by_model[&(request_type.clone(), model_id.clone())];
            ModelUsage {
                model_id,
                request_type,
                input_tokens: model_totals.tokens.input_tokens,
                output_tokens: model_totals.tokens.output_tokens,
                cache_creation_input_tokens: model_totals.tokens.cache_creation_input_tokens,
                cache_read_input_tokens: model_totals.tokens.cache_read_input_tokens,
                total_tokens: model_totals.total_tokens,
                requests: model_totals.requests,
                estimated_cost_usd,
            }
        })
        .collect();
    TenantUsageReport {
        tenant_id: tenant_id.to_owned(),
        period_days: period.days(),
        from: day_label(period.from),
        to: day_label(period.to),
        request_type: filter.label(),
        summary: UsageSummary::new(&totals, cost),
        daily_stats,
        weekly_stats,
        models,
        warnings: warnings.into_iter().collect(),
    }
}

/// One line of the all-tenants table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantTotals {
    pub tenant_id: String,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub total_tokens: u64,
    pub total_requests: u64,
    pub estimated_cost_usd: Option<f64>,
}

/// Every tenant's totals, sorted by total tokens (most first, then tenant id), with the grand summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub tenants: Vec<TenantTotals>,
    pub summary: UsageSummary,
    pub warnings: Vec<String>,
}

/// Folds the daily rows of every tenant, a day at a time, so memory grows with tenants, not with days.
#[derive(Debug, Default)]
pub struct RankingBuilder {
    filter: RequestTypeFilter,
    per_tenant: HashMap<String, BTreeMap<ModelKey, Totals>>,
}

impl RankingBuilder {
    pub fn new(filter: RequestTypeFilter) -> Self {
        Self { filter, per_tenant: HashMap::new() }
    }

    pub fn add(&mut self, rows: &[CounterRow]) {
        for row in rows.iter().filter(|row| self.filter.matches(&row.request_type)) {
            self.per_tenant
                .entry(row.tenant_id.clone())
                .or_default()
                .entry((row.request_type.clone(), row.model_id.clone()))
                .or_default()
                .add_row(row);
        }
    }

    pub fn finish(self, pricing: &PricingTable) -> Ranking {
        let mut warnings = BTreeSet::new();
        let mut grand = Totals::default();
        let mut grand_cost = Some(0.0);
        let mut tenants: Vec<TenantTotals> = self
            .per_tenant
            .into_iter()
            .map(|(tenant_id, by_model)| {
                let mut totals = Totals::default();
                for model in by_model.values() {
                    totals.add(model);
                }
                let (cost, _) = estimate(pricing, &by_model, &mut warnings);
                grand.add(&totals);
                grand_cost = grand_cost.zip(cost).map(|(sum, cost)| sum + cost);
                TenantTotals {
                    tenant_id,
                    total_input_tokens: totals.tokens.input_tokens,
                    total_output_tokens: totals.tokens.output_tokens,
                    total_tokens: totals.total_tokens,
                    total_requests: totals.requests,
                    estimated_cost_usd: cost,
                }
            })
            .collect();
        tenants.sort_by(|a, b| b.total_tokens.cmp(&a.total_tokens).then_with(|| a.tenant_id.cmp(&b.tenant_id)));
        Ranking {
            tenants,
            summary: UsageSummary::new(&grand, grand_cost.map(round_usd)),
            warnings: warnings.into_iter().collect(),
        }
    }
}

/// `items[offset..offset + limit]` and the offset of the next page, if any.
pub fn page<T: Clone>(items: &[T], offset: usize, limit: usize) -> (Vec<T>, Option<usize>) {
    let start = offset.min(items.len());
    let end = start.saturating_add(limit).min(items.len());
    let next = (end < items.len()).then_some(end);
    (items[start..end].to_vec(), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

    fn row(tenant: &str, period: &str, request_type: &str, model: &str, input: u64, output: u64, requests: u64) -> CounterRow {
        CounterRow {
            tenant_id: tenant.into(),
            period: period.into(),
            request_type: request_type.into(),
            model_id: model.into(),
            tokens: TokenCounts { input_tokens: input, output_tokens: output, ..TokenCounts::default() },
            total_tokens: input + output,
            requests,
        }
    }

    fn week_period() -> ReportPeriod {
        ReportPeriod::last_days(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), 7).unwrap()
    }

    #[test]
    fn every_day_and_week_is_present_with_zeros_when_idle() {
        let report = tenant_report("acme", &week_period(), RequestTypeFilter(None), &[], &[], &PricingTable::builtin());
        assert_eq!(report.daily_stats.len(), 7);
        assert!(report.daily_stats.values().all(|day| *day == PeriodStats::default()));
        assert_eq!(report.weekly_stats.keys().collect::<Vec<_>>(), vec!["2026-W47", "2026-W48"]);
        assert_eq!(report.summary.total_tokens, 0);
        assert_eq!(report.summary.estimated_cost_usd, Some(0.0));
        assert_eq!((report.from.as_str(), report.to.as_str(), report.period_days), ("2026-11-17", "2026-11-23", 7));
    }

    #[test]
    fn days_weeks_models_and_summary_add_up() {
        // GIVEN two models on one day, one on another, and the weekly rows
        let days = [
            row("acme", "2026-11-20", "bedrock", HAIKU, 1000, 2000, 3),
            row("acme", "2026-11-20", "anthropic", "claude-3-haiku-20240307", 10, 20, 1),
            row("acme", "2026-11-23", "bedrock", HAIKU, 5, 7, 1),
        ];
        let weeks =
            [row("acme", "2026-W47", "bedrock", HAIKU, 1000, 2000, 3), row("acme", "2026-W48", "bedrock", HAIKU, 5, 7, 1)];
        // WHEN the report is built for all request types
        let report = tenant_report("acme", &week_period(), RequestTypeFilter(None), &days, &weeks, &PricingTable::builtin());
        // THEN the days, weeks, models and summary agree
        assert_eq!(report.daily_stats["2026-11-20"], PeriodStats { input_tokens: 1010, output_tokens: 2020, requests: 4 });
        assert_eq!(report.daily_stats["2026-11-23"], PeriodStats { input_tokens: 5, output_tokens: 7, requests: 1 });
        assert_eq!(report.weekly_stats["2026-W48"].requests, 1);
        assert_eq!(report.summary.total_tokens, 3042);
        assert_eq!(report.summary.total_requests, 5);
        assert_eq!(report.models.len(), 2);
        let expected = (1005.0 * 0.00025 + 2007.0 * 0.00125 + 10.0 * 0.00025 + 20.0 * 0.00125) / 1000.0;
        assert!((report.summary.estimated_cost_usd.unwrap() - round_usd(expected)).abs() < 1e-12);
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn the_request_type_filter_keeps_only_that_type() {
        let days = [row("acme", "2026-11-20", "bedrock", HAIKU, 1, 1, 1), row("acme", "2026-11-20", "anthropic", HAIKU, 5, 5, 1)];
        let filter = RequestTypeFilter::parse(Some("anthropic")).unwrap();
        let report = tenant_report("acme", &week_period(), filter, &days, &[], &PricingTable::builtin());
        assert_eq!(report.request_type, "anthropic");
        assert_eq!(report.summary.total_input_tokens, 5);
    }

    #[test]
    fn request_types_parse_strictly() {
        assert_eq!(RequestTypeFilter::parse(None), Some(RequestTypeFilter(None)));
        assert_eq!(RequestTypeFilter::parse(Some("all")), Some(RequestTypeFilter(None)));
        assert_eq!(RequestTypeFilter::parse(Some("bedrock")), Some(RequestTypeFilter(Some(RequestType::Bedrock))));
        for bad in ["BEDROCK", "", "bedrock ", "openai"] {
            assert_eq!(RequestTypeFilter::parse(Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn rows_of_another_tenant_or_outside_the_period_never_count() {
        let days = [row("other", "2026-11-20", "bedrock", HAIKU, 9, 9, 9), row("acme", "2026-11-01", "bedrock", HAIKU, 9, 9, 9)];
        let report = tenant_report("acme", &week_period(), RequestTypeFilter(None), &days, &[], &PricingTable::builtin());
        assert_eq!(report.summary.total_requests, 0);
        assert_eq!(report.daily_stats.len(), 7);
    }

    #[test]
    fn an_unpriced_model_nulls_the_cost_and_says_why() {
        let days = [
            row("acme", "2026-11-20", "bedrock", HAIKU, 1, 1, 1),
            row("acme", "2026-11-21", "bedrock", "acme.secret-model", 1, 1, 1),
        ];
        let report = tenant_report("acme", &week_period(), RequestTypeFilter(None), &days, &[], &PricingTable::builtin());
        assert_eq!(report.summary.estimated_cost_usd, None);
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].contains("acme.secret-model"));
        let haiku = report.models.iter().find(|model| model.model_id == HAIKU).unwrap();
        assert!(haiku.estimated_cost_usd.is_some(), "the priced model keeps its own cost");
    }

    #[test]
    fn tenants_rank_by_total_tokens_then_id() {
        let mut builder = RankingBuilder::new(RequestTypeFilter(None));
        builder.add(&[row("b", "2026-11-20", "bedrock", HAIKU, 10, 10, 1), row("a", "2026-11-20", "bedrock", HAIKU, 10, 10, 1)]);
        builder.add(&[row("c", "2026-11-21", "bedrock", HAIKU, 100, 0, 1), row("b", "2026-11-21", "bedrock", HAIKU, 1, 0, 1)]);
        let ranking = builder.finish(&PricingTable::builtin());
        let order: Vec<_> = ranking.tenants.iter().map(|tenant| tenant.tenant_id.as_str()).collect();
        assert_eq!(order, vec!["c", "b", "a"]);
        assert_eq!(ranking.tenants[1].total_tokens, 21);
        assert_eq!(ranking.tenants[1].total_requests, 2);
        assert_eq!(ranking.summary.total_tokens, 141);
        assert_eq!(ranking.summary.total_requests, 4);
    }

    #[test]
    fn the_ranking_honours_the_request_type() {
        let mut builder = RankingBuilder::new(RequestTypeFilter(Some(RequestType::Anthropic)));
        builder.add(&[row("a", "2026-11-20", "bedrock", HAIKU, 10, 10, 1), row("b", "2026-11-20", "anthropic", HAIKU, 1, 1, 1)]);
        let ranking = builder.finish(&PricingTable::builtin());
        assert_eq!(ranking.tenants.len(), 1);
        assert_eq!(ranking.tenants[0].tenant_id, "b");
    }

    #[test]
    fn pages_cover_everything_once() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(page(&items, 0, 2), (vec![0, 1], Some(2)));
        assert_eq!(page(&items, 2, 2), (vec![2, 3], Some(4)));
        assert_eq!(page(&items, 4, 2), (vec![4], None));
        assert_eq!(page(&items, 0, 5), (items.clone(), None));
        assert_eq!(page(&items, 9, 2), (vec![], None));
    }
}
