/**
 * One CloudWatch dashboard for the whole gateway: traffic and errors at the API, latency per function,
 * Bedrock throttles and the proxy's fallbacks, metering errors, budget refusals, the last export, and the
 * state of every alarm. Its metrics are AWS's own (API Gateway, Lambda, Bedrock, Firehose), the log
 * processor's EMF metrics, and metric filters on the existing log lines (./log-metrics.ts): none per tenant.
 */
import { Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { LOG_EXPORT_NAMESPACE } from '../analytics/alarms';
import { LogMetrics } from './log-metrics';

export interface DashboardFunction {
  /** Shown on the graphs (`chat`, `usage`, `proxy`, `log processor`). */
  readonly label: string;
  readonly function: lambda.IFunction;
}

export interface OperationsDashboardProps {
  /** The REST API's name (API Gateway metrics are by `ApiName`). */
  readonly restApiName: string;
  readonly functions: readonly DashboardFunction[];
  /** Log groups holding usage lines (chat and proxy) and the proxy's own. */
  readonly usageLogGroups: readonly logs.ILogGroup[];
  readonly proxyLogGroup: logs.ILogGroup;
  /** The log processor's log group: the last export's summary is read from it. */
  readonly exportLogGroup: logs.ILogGroup;
  readonly alarms: readonly cloudwatch.IAlarm[];
  readonly dashboardName?: string;
}

const PERIOD = Duration.minutes(5);

export class OperationsDashboard extends Construct {
  public readonly dashboard: cloudwatch.Dashboard;
  public readonly logMetrics: LogMetrics;

  constructor(scope: Construct, id: string, props: OperationsDashboardProps) {
    super(scope, id);
    this.logMetrics = new LogMetrics(this, 'LogMetrics', {
      usageLogGroups: props.usageLogGroups,
      proxyLogGroup: props.proxyLogGroup,
    });
    const api = (metricName: string, statistic: string, label: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/ApiGateway',
        metricName,
        statistic,
        label,
        period: PERIOD,
        dimensionsMap: { ApiName: props.restApiName },
      });
    const perFunction = (make: (fn: lambda.IFunction) => cloudwatch.IMetric) => props.functions.map((entry) => make(entry.function));
    const exportMetric = (metricName: string, statistic: string, period: Duration) =>
      new cloudwatch.Metric({ namespace: LOG_EXPORT_NAMESPACE, metricName, statistic, period });

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.dashboardName ?? `${Stack.of(this).stackName}-operations`,
      defaultInterval: Duration.hours(24),
    });
    this.dashboard.addWidgets(
      new cloudwatch.TextWidget({
        markdown:
          '# bedrock-metering operations\nRequests, errors and latency of the gateway; Bedrock throttles and fallbacks; ' +
          'metering errors; budget refusals; the daily export. Per-tenant figures: the usage API (`/v1/usage`) and Athena.',
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'API requests, 4xx and 5xx',
        left: [api('Count', 'Sum', 'requests'), api('4XXError', 'Sum', '4xx'), api('5XXError', 'Sum', '5xx')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Metered requests by request type (usage lines)',
        left: [LogMetrics.search('MeteredRequests', 'RequestType', 'requests')],
        right: [LogMetrics.metric('MeteredTokens')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'API latency p50 / p99 (ms)',
        left: [api('Latency', 'p50', 'p50'), api('Latency', 'p99', 'p99')],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Function duration p50 (ms)',
        left: perFunction((fn) => fn.metricDuration({ statistic: 'p50', period: PERIOD })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Function duration p99 (ms)',
        left: perFunction((fn) => fn.metricDuration({ statistic: 'p99', period: PERIOD })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Function errors and throttles',
        left: perFunction((fn) => fn.metricErrors({ statistic: 'Sum', period: PERIOD })),
        right: perFunction((fn) => fn.metricThrottles({ statistic: 'Sum', period: PERIOD })),
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Bedrock throttles and failed calls',
        left: [
          new cloudwatch.MathExpression({
            expression: `SEARCH('{AWS/Bedrock,ModelId} MetricName="InvocationThrottles"', 'Sum', ${PERIOD.toSeconds()})`,
            label: 'throttles',
            period: PERIOD,
          }),
        ],
        right: [LogMetrics.metric('BedrockCallFailures'), LogMetrics.metric('RateLimitedAnswers')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Proxy: served by the Bedrock fallback (by reason)',
        left: [LogMetrics.search('ProxyFallbacks', 'Reason', 'fallbacks')],
        right: [LogMetrics.metric('ProxyFallbackFailures')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Metering errors (counter outcome failed / unknown) and budget refusals',
        left: [LogMetrics.search('CounterUpdateNotApplied', 'Outcome', 'not applied')],
        right: [LogMetrics.metric('BudgetRefusals')],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.SingleValueWidget({
        title: 'Last export: rows written (last 24 h), malformed lines skipped',
        metrics: [
          exportMetric('RowsWritten', 'Sum', Duration.days(1)),
          exportMetric('DaysExported', 'Sum', Duration.days(1)),
          exportMetric('SkippedMalformed', 'Sum', Duration.days(1)),
        ],
        width: 8,
      }),
      new cloudwatch.LogQueryWidget({
        title: 'Last export: when (its age) and its rows',
        logGroupNames: [props.exportLogGroup.logGroupName],
        queryLines: [
          'fields @timestamp, RowsWritten, DaysExported, SkippedMalformed',
          'filter ispresent(RowsWritten)',
          'sort @timestamp desc',
          'limit 5',
        ],
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        width: 8,
      }),
      new cloudwatch.AlarmStatusWidget({
        title: 'Alarms',
        alarms: [...props.alarms],
        width: 8,
      }),
    );
  }
}
