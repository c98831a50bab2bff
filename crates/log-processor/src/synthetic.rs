//! Deterministic synthetic usage lines for a day: the benchmark's input and the unit tests' fixtures.
//! Shaped like production traffic: a few dozen tenants with a handful of users each, three models, unique
//! request ids, timestamps spread evenly over the day.

use chrono::{Duration, NaiveDate, SecondsFormat};
use metering_core::usage::{RequestType, UsageRecord, USAGE_EVENT};

const TENANTS: u64 = 40;
const USERS_PER_TENANT: u64 = 5;
const MODELS: [&str; 3] = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "amazon.nova-lite-v1:0",
];

#[derive(Debug, Clone)]
pub struct SyntheticDay {
    day: NaiveDate,
    count: u64,
    seed: u64,
}

impl SyntheticDay {
    /// `day` as `YYYY-MM-DD`; panics on anything else (test and benchmark input only).
    pub fn new(day: &str, count: u64, seed: u64) -> Self {
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap_or_else(|_| panic!("not a day: {day}"));
        Self { day, count, seed }
    }

    pub fn of(day: NaiveDate, count: u64, seed: u64) -> Self {
        Self { day, count, seed }
    }

    pub fn records(&self) -> impl Iterator<Item = UsageRecord> + '_ {
        (0..self.count).map(|index| self.record(index))
    }

    /// The `index`-th record of the day, computed on its own (random access: a benchmark can page through
    /// ten million lines without holding them).
    pub fn record(&self, index: u64) -> UsageRecord {
        let midnight = self.day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let step_ms = 86_400_000 / self.count.max(1);
        let mut random = XorShift((self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1);
        random.next();
        let tenant = random.below(TENANTS);
        let user = random.below(USERS_PER_TENANT);
        let input_tokens = 5 + random.below(2_000);
        let output_tokens = 1 + random.below(800);
        let (cache_creation, cache_read) =
            if random.below(10) == 0 { (random.below(500), random.below(4_000)) } else { (0, 0) };
        let at = midnight + Duration::milliseconds((index * step_ms + random.below(step_ms.max(1))) as i64);
        UsageRecord {
            event: USAGE_EVENT.to_owned(),
            timestamp: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            request_id: format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                random.next() as u32,
                random.next() as u16,
                random.below(0x1000),
                random.below(0x1000),
                random.next() & 0xffff_ffff_ffff
            ),
            tenant_id: format!("tenant-{tenant:03}"),
            user_id: format!("user-{tenant:03}-{user}"),
            model_id: MODELS[random.below(MODELS.len() as u64) as usize].to_owned(),
            request_type: if random.below(10) == 0 { RequestType::Anthropic } else { RequestType::Bedrock },
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens + cache_creation + cache_read,
            cache_creation_input_tokens: cache_creation,
            cache_read_input_tokens: cache_read,
            latency_ms: 80 + random.below(6_000),
            metering_error: None,
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.records().map(|record| record.to_line())
    }
}

/// xorshift64: deterministic and dependency-free; statistical quality is beside the point here.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::{classify, LineOutcome};

    #[test]
    fn every_synthetic_line_is_a_usage_line_of_its_day() {
        let day = SyntheticDay::new("2026-11-23", 1_000, 3);
        for line in day.lines() {
            match classify(&line) {
                LineOutcome::Usage { day: of, .. } => assert_eq!(of.to_string(), "2026-11-23"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let ids: std::collections::HashSet<String> = day.records().map(|r| r.request_id).collect();
        assert_eq!(ids.len(), 1_000);
    }
}
