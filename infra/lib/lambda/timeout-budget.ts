/**
 * The timeout budget of a metered function, by construction: its Lambda timeout is the longest wait on its
 * upstream, plus the bound of its metering, plus a margin — so an answer that arrives at the last allowed
 * moment is still metered before Lambda ends the invocation. The function checks the same inequality at cold
 * start (crates/api-gateway-lambda/src/budget.rs) against FUNCTION_TIMEOUT_SECONDS, which RustFunction sets.
 */
import { Duration } from 'aws-cdk-lib';

/** One counter update's upper bound: `DEFAULT_COUNTER_TIMEOUT` in crates/metering-core/src/config.rs (the
 * functions refuse to start when METERING_COUNTER_TIMEOUT_MS would break the budget). */
export const METERING_BOUND_SECONDS = 10;
/** `BUDGET_MARGIN` in crates/api-gateway-lambda/src/budget.rs: the deadline reserve, the response, jitter. */
export const BUDGET_MARGIN_SECONDS = 3;
/** The variable every Rust function gets with its own Lambda timeout. */
export const FUNCTION_TIMEOUT_ENV = 'FUNCTION_TIMEOUT_SECONDS';
/** Lambda's maximum. */
export const MAX_FUNCTION_TIMEOUT_SECONDS = 900;

/** The Lambda timeout of a metered function whose upstream waits add up to `upstreamMs` at most. */
export function meteredFunctionTimeout(upstreamMs: number): Duration {
  const seconds = Math.ceil(upstreamMs / 1000) + METERING_BOUND_SECONDS + BUDGET_MARGIN_SECONDS;
  if (seconds > MAX_FUNCTION_TIMEOUT_SECONDS) {
    throw new Error(
      `upstream timeouts of ${upstreamMs} ms + metering ${METERING_BOUND_SECONDS} s + margin ${BUDGET_MARGIN_SECONDS} s ` +
        `exceed Lambda's ${MAX_FUNCTION_TIMEOUT_SECONDS} s: lower the upstream timeouts`,
    );
  }
  return Duration.seconds(seconds);
}
