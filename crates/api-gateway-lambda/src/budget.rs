//! The timeout budget of a metered function, held at cold start: the longest wait on the upstream, plus the
//! bound of its metering, plus a margin, fits in the Lambda timeout — so an answer that comes at the last
//! allowed moment is still metered before Lambda ends the invocation. The CDK computes each function's
//! timeout from the same terms (`infra/lib/lambda/timeout-budget.ts`) and passes it as
//! `FUNCTION_TIMEOUT_SECONDS`; its tests check the inequality on the synthesized template.

use std::time::Duration;

use thiserror::Error;

/// Kept free at the end of every invocation: when metering is still pending this close to the deadline, the
/// extension abandons the counter updates so the usage lines are written before Lambda stops the process.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(1);
/// What the budget keeps beyond upstream + metering: the deadline reserve, the response itself, start-up
/// jitter. Mirrored by `BUDGET_MARGIN_SECONDS` in the CDK.
pub const BUDGET_MARGIN: Duration = Duration::from_secs(3);
/// The variable the CDK sets to the function's Lambda timeout.
pub const FUNCTION_TIMEOUT_VAR: &str = "FUNCTION_TIMEOUT_SECONDS";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error(
        "environment variable {FUNCTION_TIMEOUT_VAR} has an invalid value {0:?}: not a whole number of seconds from 1 to 900"
    )]
    InvalidTimeout(String),
    #[error(
        "the Lambda timeout ({function_timeout}s) is shorter than upstream {upstream_ms} ms + metering {metering_ms} ms \
         + margin {margin_ms} ms: an answer near the upstream timeout could not be metered; raise the function \
         timeout or lower the upstream timeout"
    )]
    Exceeded { function_timeout: u64, upstream_ms: u128, metering_ms: u128, margin_ms: u128 },
}

/// The longest a function may wait on its upstream and on its metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutBudget {
    pub upstream: Duration,
    pub metering: Duration,
}

impl TimeoutBudget {
    pub fn needed(&self) -> Duration {
        self.upstream + self.metering + BUDGET_MARGIN
    }

    /// Checks the budget against the function timeout from the environment (absent outside Lambda, e.g. in
    /// `cargo lambda watch`: then only the per-invocation deadline bounds the wait).
    pub fn check_env(&self) -> Result<(), BudgetError> {
        let checked = function_timeout(std::env::var(FUNCTION_TIMEOUT_VAR).ok()).and_then(|timeout| self.check(timeout));
        if let Err(error) = &checked {
            // main returns the error, which Rust prints with Debug: say it in words too.
            tracing::error!(%error, "timeout budget refused at cold start");
        }
        checked
    }

    pub fn check(&self, function_timeout: Option<Duration>) -> Result<(), BudgetError> {
        match function_timeout {
            Some(timeout) if timeout < self.needed() => Err(BudgetError::Exceeded {
                function_timeout: timeout.as_secs(),
                upstream_ms: self.upstream.as_millis(),
                metering_ms: self.metering.as_millis(),
                margin_ms: BUDGET_MARGIN.as_millis(),
            }),
            _ => Ok(()),
        }
    }
}

fn function_timeout(value: Option<String>) -> Result<Option<Duration>, BudgetError> {
    let Some(value) = value.filter(|value| !value.is_empty()) else { return Ok(None) };
    match value.parse::<u64>() {
        Ok(seconds @ 1..=900) => Ok(Some(Duration::from_secs(seconds))),
        _ => Err(BudgetError::InvalidTimeout(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_defaults_fit_a_38_second_function_and_not_the_old_30() {
        let budget = TimeoutBudget { upstream: Duration::from_secs(25), metering: Duration::from_secs(10) };
        assert_eq!(budget.check(Some(Duration::from_secs(38))), Ok(()));
        let error = budget.check(Some(Duration::from_secs(30))).unwrap_err();
        assert!(matches!(error, BudgetError::Exceeded { function_timeout: 30, .. }));
        assert!(error.to_string().contains("raise the function timeout"));
    }

    #[test]
    fn no_function_timeout_means_no_check_and_garbage_is_refused() {
        let budget = TimeoutBudget { upstream: Duration::from_secs(600), metering: Duration::from_secs(10) };
        assert_eq!(budget.check(function_timeout(None).unwrap()), Ok(()));
        assert_eq!(function_timeout(Some("45".into())), Ok(Some(Duration::from_secs(45))));
        for garbage in ["soon", "0", "901", " 45", "-1"] {
            assert_eq!(function_timeout(Some(garbage.into())), Err(BudgetError::InvalidTimeout(garbage.into())));
        }
    }
}
