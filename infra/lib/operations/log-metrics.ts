/**
 * The gateway's own metrics, from metric filters on the lines its functions already write: the usage line
 * (`event = token_usage`), the counter outcome line (`event = counter_update`), the budget refusal line
 * (`event = limit_refused`) and the JSON tracing lines (`fields.message`). No code change, no PutMetricData,
 * and no per-tenant dimension: a custom metric is billed per name and dimension combination per month, so a
 * `tenant_id` dimension would make the bill grow with the tenant count (per-tenant figures are the usage API's
 * and Athena's job). The only dimensions are low-cardinality enums (request type, counter outcome, fallback reason).
 */
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Duration } from 'aws-cdk-lib';
import { Construct } from 'constructs';

export const GATEWAY_NAMESPACE = 'BedrockMetering/Gateway';

/** One metric filter: its pattern, the value it counts (1 unless a field), its dimensions (fields). */
export interface LogMetricSpec {
  readonly metricName: string;
  readonly pattern: string;
  readonly metricValue?: string;
  readonly dimensions?: Record<string, string>;
  /** Which log groups carry the line. */
  readonly on: 'usage' | 'chat' | 'proxy';
}

/** The metric filters, by metric name (the patterns are the lines' contracts; keep them in step with the writers). */
export const LOG_METRICS: readonly LogMetricSpec[] = [
  // One usage line per answered request (crates/metering-core/src/usage.rs): requests and their tokens.
  { metricName: 'MeteredRequests', pattern: '{ $.event = "token_usage" }', dimensions: { RequestType: '$.request_type' }, on: 'usage' },
  { metricName: 'MeteredTokens', pattern: '{ $.event = "token_usage" }', metricValue: '$.total_tokens', on: 'usage' },
  // The counters missed a request (failed) or may have (unknown): the usage API may under-count it.
  { metricName: 'CounterUpdateNotApplied', pattern: '{ $.event = "counter_update" }', dimensions: { Outcome: '$.outcome' }, on: 'usage' },
  // A request refused by a tenant's budget (the budgets feature writes `event = limit_refused`).
  { metricName: 'BudgetRefusals', pattern: '{ $.event = "limit_refused" }', on: 'usage' },
  // Bedrock refused or failed a call (metering-core classify_bedrock_error logs every failed call once).
  { metricName: 'BedrockCallFailures', pattern: '{ $.fields.message = "the Bedrock call failed" }', on: 'usage' },
  // Answered 429 to the client (Bedrock or Anthropic throttled and no fallback helped).
  {
    metricName: 'RateLimitedAnswers',
    pattern: '{ ($.fields.message = "request failed" || $.fields.message = "proxy request failed") && $.fields.status = 429 }',
    on: 'usage',
  },
  // The proxy's Bedrock fallback: served by Bedrock (by reason), or the fallback failed too.
  { metricName: 'ProxyFallbacks', pattern: '{ $.fields.message = "served by Bedrock" }', dimensions: { Reason: '$.fields.reason' }, on: 'proxy' },
  { metricName: 'ProxyFallbackFailures', pattern: '{ $.fields.message = "the Bedrock fallback failed; answering with Anthropic\'s refusal" }', on: 'proxy' },
];

export interface LogMetricsProps {
  /** Log groups holding usage lines (chat and proxy). */
  readonly usageLogGroups: readonly logs.ILogGroup[];
  readonly proxyLogGroup: logs.ILogGroup;
}

export class LogMetrics extends Construct {
  public readonly filters: logs.MetricFilter[] = [];

  constructor(scope: Construct, id: string, props: LogMetricsProps) {
    super(scope, id);
    LOG_METRICS.forEach((spec) => {
      const groups = spec.on === 'proxy' ? [props.proxyLogGroup] : props.usageLogGroups;
      groups.forEach((logGroup, index) => {
        this.filters.push(
          new logs.MetricFilter(this, `${spec.metricName}${index}`, {
            logGroup,
            metricNamespace: GATEWAY_NAMESPACE,
            metricName: spec.metricName,
            filterPattern: logs.FilterPattern.literal(spec.pattern),
            metricValue: spec.metricValue ?? '1',
            dimensions: spec.dimensions,
            // No value when nothing matched: a dashboard shows a gap, an alarm treats it as missing data.
          }),
        );
      });
    });
  }

  /** The metric `metricName` summed over `period` (all dimension values when `search` is true). */
  static metric(metricName: string, statistic = 'Sum', period = Duration.minutes(5), dimensionsMap?: Record<string, string>): cloudwatch.Metric {
    return new cloudwatch.Metric({ namespace: GATEWAY_NAMESPACE, metricName, statistic, period, dimensionsMap });
  }

  /** Every dimension value of a metric that has dimensions (one line per request type, outcome or reason). */
  static search(metricName: string, dimension: string, label: string, period = Duration.minutes(5)): cloudwatch.MathExpression {
    return new cloudwatch.MathExpression({
      expression: `SEARCH('{${GATEWAY_NAMESPACE},${dimension}} MetricName="${metricName}"', 'Sum', ${period.toSeconds()})`,
      label,
      period,
    });
  }
}
