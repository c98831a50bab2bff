//! Leases: budget a long-running process reserved in advance, so that most requests are admitted from memory.
//!
//! A process that serves concurrent requests (the local server, a container) reserves, when a request's hold is
//! not covered, up to `LIMITS_LEASE_REQUESTS` times the request's worth on the counter, capped at
//! `LIMITS_LEASE_SHARE_PERCENT` of the limit, with the same conditional `TransactWriteItems` as a plain
//! reservation: DynamoDB's `admitted` still never crosses the limit, so the overshoot bound stays 0. What the
//! request does not use stays in the process's lease and admits its next requests without a DynamoDB call. A
//! lease unused for `LIMITS_LEASE_IDLE_MS`, of a period that ended, or granted under a limit that changed is
//! returned (`admitted` goes down by what is left), and every lease is returned when the process stops.
//! Until then, others may be refused while a lease is held: the under-use bound is 1.25 leases per process and
//! counter (a lease down to a quarter has the next reserved ahead). Off (0) by default: a Lambda instance
//! serves one request at a time and is frozen between them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::store::{Hold, Settlement, UseCounter};

/// `LIMITS_LEASE_*`: how much a process reserves in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// `LIMITS_LEASE_REQUESTS` (default 0 = off): a lease is worth this many requests like the one that asks.
    pub requests: u64,
    /// `LIMITS_LEASE_SHARE_PERCENT` (default 1, 1 to 100): a lease is at most this share of the limit.
    pub share_percent: u64,
    /// `LIMITS_LEASE_IDLE_MS` (default 1000, 100 to 60000): a lease unused this long is returned.
    pub idle: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self { requests: 0, share_percent: 1, idle: Duration::from_millis(1000) }
    }
}

impl LeaseSettings {
    pub fn enabled(&self) -> bool {
        self.requests > 0
    }

    /// What to reserve in DynamoDB for a hold no lease covers: the hold, or a lease of more when that stays
    /// within the share of the limit (never less than the hold itself). `growth` multiplies the requests a
    /// lease is worth (see [`LeaseBook::growth`]).
    pub fn reservation_amount(&self, hold: &Hold, growth: u64) -> u64 {
        if !self.enabled() {
            return hold.amount;
        }
        let share = u128::from(hold.limit) * u128::from(self.share_percent) / 100;
        let wanted = u128::from(hold.amount) * u128::from(self.requests) * u128::from(growth.max(1));
        u64::try_from(wanted.min(share)).unwrap_or(u64::MAX).max(hold.amount)
    }
}

#[derive(Debug)]
struct Lease {
    /// Reserved in DynamoDB and held by no request.
    free: u64,
    /// The limit it was granted under: a lease never admits under another one.
    limit: u64,
    last_used: Instant,
    /// The lease is worth `growth` times `LIMITS_LEASE_REQUESTS` requests: doubled (up to
    /// `MAX_LEASE_GROWTH`) each time the next one is reserved within `FAST_REFILL` of the one before, so that
    /// a busy tenant makes about one reservation per `FAST_REFILL`, whatever its request rate.
    growth: u64,
    granted_at: Instant,
}

/// A lease used up faster than this has its next one doubled.
pub const FAST_REFILL: Duration = Duration::from_secs(1);
pub const MAX_LEASE_GROWTH: u64 = 256;

/// A lease taken back from the book, to be returned to DynamoDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedLease {
    pub counter: UseCounter,
    pub free: u64,
    pub limit: u64,
}

impl ReturnedLease {
    /// The write that gives it back: `admitted` down by what is left, `settled` unchanged.
    pub fn settlement(&self) -> Settlement {
        Settlement { counter: self.counter.clone(), held: self.free, actual: 0, limit: self.limit }
    }
}

/// The leases of one process, by counter.
#[derive(Debug, Default)]
pub struct LeaseBook {
    leases: HashMap<UseCounter, Lease>,
}

impl LeaseBook {
    /// Takes each hold's amount from its counter's lease when that lease has enough and the same limit; true
    /// at the index of each hold taken. A lease granted under another limit is taken out, into `stale`.
    pub fn take(&mut self, holds: &[Hold], now: Instant, stale: &mut Vec<ReturnedLease>) -> Vec<bool> {
        holds
            .iter()
            .map(|hold| {
                let Some(lease) = self.leases.get_mut(&hold.counter) else { return false };
                if lease.limit != hold.limit {
                    if let Some(lease) = self.leases.remove(&hold.counter) {
                        stale.push(ReturnedLease { counter: hold.counter.clone(), free: lease.free, limit: lease.limit });
                    }
                    return false;
                }
                if lease.free < hold.amount {
                    return false;
                }
                lease.free -= hold.amount;
                lease.last_used = now;
                true
            })
            .collect()
    }

    /// Adds `amount` (reserved in DynamoDB, held by no request now) to the lease of `hold`'s counter, creating
    /// it when `create`. False when there is no such lease (or it has another limit): the caller gives the
    /// amount back to DynamoDB itself.
    pub fn give(&mut self, hold: &Hold, amount: u64, now: Instant, create: bool) -> bool {
        if amount == 0 {
            return true;
        }
        match self.leases.get_mut(&hold.counter) {
            Some(lease) if lease.limit == hold.limit => {
                lease.free = lease.free.saturating_add(amount);
                lease.last_used = now;
                true
            }
            Some(_) => false,
            None if create => {
                let lease = Lease { free: amount, limit: hold.limit, last_used: now, growth: 1, granted_at: now };
                self.leases.insert(hold.counter.clone(), lease);
                true
            }
            None => false,
        }
    }

    /// Notes that a lease's worth was just reserved for `counter` (a new lease, or the next one of a lease):
    /// a lease used up within `FAST_REFILL` doubles its worth.
    pub fn granted(&mut self, counter: &UseCounter, now: Instant) {
        if let Some(lease) = self.leases.get_mut(counter) {
            if now.saturating_duration_since(lease.granted_at) < FAST_REFILL {
                lease.growth = (lease.growth * 2).min(MAX_LEASE_GROWTH);
            }
            lease.granted_at = now;
        }
    }

    /// The multiplier of the next lease of `counter` (1 without a lease).
    pub fn growth(&self, counter: &UseCounter) -> u64 {
        self.leases.get(counter).map_or(1, |lease| lease.growth)
    }

    /// Takes out the leases unused for `idle` or whose period has ended (all of them with `everything`).
    pub fn take_out_idle(
        &mut self,
        now: Instant,
        idle: Duration,
        wall_now: DateTime<Utc>,
        everything: bool,
    ) -> Vec<ReturnedLease> {
        let expired: Vec<UseCounter> = self
            .leases
            .iter()
            .filter(|(counter, lease)| {
                everything || now.saturating_duration_since(lease.last_used) >= idle || counter.period.resets_at <= wall_now
            })
            .map(|(counter, _)| counter.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|counter| {
                let lease = self.leases.remove(&counter)?;
                Some(ReturnedLease { counter, free: lease.free, limit: lease.limit })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// What the lease of `counter` has free (tests and reports).
    pub fn free(&self, counter: &UseCounter) -> Option<u64> {
        self.leases.get(counter).map(|lease| lease.free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{LimitKind, Scope};

    fn hold(kind: LimitKind, limit: u64, amount: u64) -> Hold {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap().with_timezone(&Utc);
        Hold { counter: UseCounter::new(Scope::Tenant("acme".into()), kind, now), limit, amount }
    }

    #[test]
    fn a_lease_is_worth_n_requests_within_its_share_of_the_limit_and_never_less_than_the_hold() {
        let settings = LeaseSettings { requests: 16, share_percent: 1, idle: Duration::from_secs(1) };
        // 16 x 1,000 = 16,000 <= 1% of 10M.
        assert_eq!(settings.reservation_amount(&hold(LimitKind::TokensPerMonth, 10_000_000, 1_000), 1), 16_000);
        // Grown 4 times: 64,000, still within 1%; grown 8 times: capped at 1%.
        assert_eq!(settings.reservation_amount(&hold(LimitKind::TokensPerMonth, 10_000_000, 1_000), 4), 64_000);
        assert_eq!(settings.reservation_amount(&hold(LimitKind::TokensPerMonth, 10_000_000, 1_000), 8), 100_000);
        // 1% of 1M = 10,000 < 16,000.
        assert_eq!(settings.reservation_amount(&hold(LimitKind::TokensPerMonth, 1_000_000, 1_000), 1), 10_000);
        // A budget of ~30 requests: 1% is less than one request, so exactly the hold (no lease).
        assert_eq!(settings.reservation_amount(&hold(LimitKind::TokensPerMonth, 30_000, 1_000), 64), 1_000);
        assert_eq!(settings.reservation_amount(&hold(LimitKind::RequestsPerMinute, 10, 1), 1), 1);
        let off = LeaseSettings::default();
        assert!(!off.enabled());
        assert_eq!(off.reservation_amount(&hold(LimitKind::TokensPerMonth, 10_000_000, 1_000), 8), 1_000);
    }

    #[test]
    fn holds_are_taken_from_a_lease_with_enough_left_and_the_same_limit_only() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let tokens = hold(LimitKind::TokensPerMonth, 10_000_000, 1_000);
        let requests = hold(LimitKind::RequestsPerMinute, 600, 1);
        assert!(book.give(&tokens, 2_500, now, true));
        let mut stale = Vec::new();
        assert_eq!(book.take(&[tokens.clone(), requests.clone()], now, &mut stale), vec![true, false]);
        assert_eq!(book.take(std::slice::from_ref(&tokens), now, &mut stale), vec![true]);
        // 500 left: not enough for a hold of 1,000.
        assert_eq!(book.take(std::slice::from_ref(&tokens), now, &mut stale), vec![false]);
        assert_eq!(book.free(&tokens.counter), Some(500));
        // Without a lease nothing is given back into the book unless asked to create one.
        assert!(!book.give(&requests, 3, now, false));
        // The limit changed: the lease is taken out to be returned, and admits nothing.
        let lowered = Hold { limit: 5_000_000, ..tokens.clone() };
        assert_eq!(book.take(std::slice::from_ref(&lowered), now, &mut stale), vec![false]);
        assert_eq!(stale, vec![ReturnedLease { counter: tokens.counter.clone(), free: 500, limit: 10_000_000 }]);
        assert!(book.is_empty());
        assert!(stale[0].settlement().held == 500 && stale[0].settlement().actual == 0);
    }

    #[test]
    fn a_lease_used_up_within_a_second_doubles_the_next_and_an_idle_one_starts_again_at_one() {
        let mut book = LeaseBook::default();
        let start = Instant::now();
        let tokens = hold(LimitKind::TokensPerMonth, 10_000_000, 1_000);
        assert_eq!(book.growth(&tokens.counter), 1);
        book.give(&tokens, 16_000, start, true);
        book.granted(&tokens.counter, start + Duration::from_millis(300));
        book.granted(&tokens.counter, start + Duration::from_millis(600));
        assert_eq!(book.growth(&tokens.counter), 4);
        // The next one came 2 s later: no growth.
        book.granted(&tokens.counter, start + Duration::from_millis(2_600));
        assert_eq!(book.growth(&tokens.counter), 4);
        for step in 1..=20 {
            book.granted(&tokens.counter, start + Duration::from_millis(2_600 + step));
        }
        assert_eq!(book.growth(&tokens.counter), MAX_LEASE_GROWTH);
        let wall = tokens.counter.period.resets_at - chrono::Duration::days(1);
        book.take_out_idle(start + Duration::from_secs(10), Duration::from_secs(1), wall, false);
        assert_eq!(book.growth(&tokens.counter), 1);
    }

    #[test]
    fn idle_leases_and_leases_of_ended_periods_are_taken_out() {
        let mut book = LeaseBook::default();
        let start = Instant::now();
        let month = hold(LimitKind::TokensPerMonth, 10_000_000, 1_000);
        let minute = hold(LimitKind::RequestsPerMinute, 600, 1);
        book.give(&month, 100, start, true);
        book.give(&minute, 5, start, true);
        let during = minute.counter.period.resets_at - chrono::Duration::seconds(30);
        assert!(book.take_out_idle(start, Duration::from_secs(1), during, false).is_empty());
        // The minute ended (its counter's reset is passed) while the month did not; nothing is idle yet.
        let after_minute = minute.counter.period.resets_at;
        let out = book.take_out_idle(start, Duration::from_secs(1), after_minute, false);
        assert_eq!(out.iter().map(|lease| lease.counter.kind).collect::<Vec<_>>(), vec![LimitKind::RequestsPerMinute]);
        let later = start + Duration::from_secs(2);
        assert_eq!(book.take_out_idle(later, Duration::from_secs(1), during, false).len(), 1);
        assert!(book.is_empty());
        book.give(&month, 7, later, true);
        assert_eq!(book.take_out_idle(later, Duration::from_secs(1), during, true).len(), 1);
    }
}
