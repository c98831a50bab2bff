//! Deterministic synthetic usage lines for a day: the benchmark's input and the unit tests' fixtures.
//! Shaped like production traffic: a few dozen tenants with a handful of users each, three models, unique
//! request ids, timestamps spread evenly over the day.

use chrono::{Duration, NaiveDate, SecondsFormat};
use metering_core::usage::{RequestType, UsageRecord, USAGE_EVENT};

const TENANTS: u64 = 40;
const USERS_PER_TENANT: u64 = 5;
/// Each count is uniform below its bound (input tokens from 5, output from 1, latency from 80 ms).
const INPUT_TOKENS: u64 = 2_000;
const OUTPUT_TOKENS: u64 = 800;
const LATENCY_MS: u64 = 6_000;
/// One request in CACHED has cache tokens, uniform below these bounds.
const CACHED: u64 = 10;
const CACHE_CREATION_TOKENS: u64 = 500;
const CACHE_READ_TOKENS: u64 = 4_000;
/// One request in ANTHROPIC is of the `anthropic` type.
const ANTHROPIC: u64 = 10;
/// The random bits of a request id: `8-4-4-4-12` hex digits, less the fixed version (`4`) and variant (`a`).
const REQUEST_ID_BITS: f64 = 120.0;
const MODELS: [&str; 3] =
    ["anthropic.claude-3-haiku-20240307-v1:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "amazon.nova-lite-v1:0"];

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
        let mut random =
            XorShift((self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1);
        random.next();
        let tenant = random.below(TENANTS);
        let user = random.below(USERS_PER_TENANT);
        let input_tokens = 5 + random.below(INPUT_TOKENS);
        let output_tokens = 1 + random.below(OUTPUT_TOKENS);
        let (cache_creation, cache_read) = if random.below(CACHED) == 0 {
            (random.below(CACHE_CREATION_TOKENS), random.below(CACHE_READ_TOKENS))
        } else {
            (0, 0)
        };
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
            request_type: if random.below(ANTHROPIC) == 0 { RequestType::Anthropic } else { RequestType::Bedrock },
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens + cache_creation + cache_read,
            usage_estimated: false,
            cache_creation_input_tokens: cache_creation,
            cache_read_input_tokens: cache_read,
            latency_ms: 80 + random.below(LATENCY_MS),
            metering_error: None,
            client_user_id: None,
            requested_model_id: None,
        }
    }

    /// The information in one row of this day, in bits: the sum of its independent random choices. No lossless
    /// encoding of the rows, in their order, averages fewer bits (Shannon's source coding theorem); what a row
    /// derives from them (total tokens, cost, base model, price version, counter outcome) adds none. The
    /// timestamp carries only its offset within its step of the day: the step follows from the row's place.
    pub fn entropy_bits_per_row(&self) -> EntropyFloor {
        let uniform = |count: u64| (count.max(1) as f64).log2();
        let one_in = |n: u64| {
            let p = 1.0 / n.max(2) as f64;
            -(p * p.log2() + (1.0 - p) * (1.0 - p).log2())
        };
        let step_ms = 86_400_000 / self.count.max(1);
        let others = uniform(step_ms)
            + uniform(TENANTS)
            + uniform(USERS_PER_TENANT)
            + uniform(INPUT_TOKENS)
            + uniform(OUTPUT_TOKENS)
            + one_in(CACHED)
            + (uniform(CACHE_CREATION_TOKENS) + uniform(CACHE_READ_TOKENS)) / CACHED as f64
            + uniform(MODELS.len() as u64)
            + one_in(ANTHROPIC)
            + uniform(LATENCY_MS);
        EntropyFloor { request_id: REQUEST_ID_BITS, others }
    }

    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.records().map(|record| record.to_line())
    }
}

/// Bits per row of a synthetic day: its request id's, and all the other fields' together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyFloor {
    pub request_id: f64,
    pub others: f64,
}

impl EntropyFloor {
    pub fn bytes_per_row(&self) -> f64 {
        (self.request_id + self.others) / 8.0
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

    #[test]
    #[allow(clippy::float_cmp)] // a whole number of bits, exactly
    fn the_entropy_floor_adds_up_the_random_choices_of_a_row() {
        // GIVEN the benchmark day (1,000,000 lines: a step of 86 ms)
        let floor = SyntheticDay::new("2026-11-23", 1_000_000, 42).entropy_bits_per_row();
        // THEN the request id holds 120 bits, and the rest is the sum of the other choices
        assert_eq!(floor.request_id, 120.0);
        let one_in_ten = -(0.1f64 * 0.1f64.log2() + 0.9 * 0.9f64.log2());
        let expected = 86f64.log2()
            + 40f64.log2()
            + 5f64.log2()
            + 2_000f64.log2()
            + 800f64.log2()
            + one_in_ten
            + (500f64.log2() + 4_000f64.log2()) / 10.0
            + 3f64.log2()
            + one_in_ten
            + 6_000f64.log2();
        assert!((floor.others - expected).abs() < 1e-9, "{floor:?}");
        assert!((21.4..21.6).contains(&floor.bytes_per_row()), "{floor:?}");
    }
}
