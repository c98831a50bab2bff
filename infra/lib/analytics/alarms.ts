/**
 * Exports that cannot fail silently: alarms on the log processor, all to one SNS alerts topic (the topic the
 * budget alerts are to use as well). The metrics come from the function itself as CloudWatch embedded metric
 * format lines (crates/log-processor/src/metrics.rs, namespace BedrockMetering/LogExport).
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export const LOG_EXPORT_NAMESPACE = 'BedrockMetering/LogExport';

export interface ExportAlarmsProps {
  readonly processor: lambda.IFunction;
  readonly deadLetterQueue: sqs.IQueue;
  /**
   * Stream mode: no daily manifest is expected (the 03:00 check is not scheduled); the Firehose stream's
   * delivery is watched instead: data older than `freshnessLimit` not yet in S3, records that failed the
   * Parquet conversion (they land under stream-errors/), and days past the active partition limit.
   */
  readonly stream?: { readonly streamName: string; readonly freshnessLimit: Duration };
  /** An existing alerts topic; one is created when absent. */
  readonly alertsTopic?: sns.ITopic;
}

export class ExportAlarms extends Construct {
  public readonly alertsTopic: sns.ITopic;
  public readonly alarms: cloudwatch.Alarm[];

  constructor(scope: Construct, id: string, props: ExportAlarmsProps) {
    super(scope, id);
    this.alertsTopic = props.alertsTopic ?? new sns.Topic(this, 'Alerts', { displayName: 'bedrock-metering alerts', enforceSSL: true });
    const metric = (metricName: string, statistic: string) =>
      new cloudwatch.Metric({ namespace: LOG_EXPORT_NAMESPACE, metricName, statistic, period: Duration.minutes(5) });
    const anyOf = (name: string, description: string, value: cloudwatch.IMetric) =>
      new cloudwatch.Alarm(this, name, {
        alarmDescription: description,
        metric: value,
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    this.alarms = [
      anyOf('ExportErrors', 'The log processor failed (an export, a refused shrink, too many malformed lines or a missing export)',
        props.processor.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' })),
      anyOf('SkippedMalformed', 'The export skipped malformed usage lines (see malformed_samples in the summary)',
        metric('SkippedMalformed', 'Sum')),
      anyOf('ScheduleDeadLetters', 'A scheduled export or check could not be delivered to the log processor',
        props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' })),
    ];
    if (props.stream === undefined) {
      this.alarms.push(anyOf('MissingDailyExport', 'No complete export (_SUCCESS manifest) of yesterday at 03:00 UTC',
        metric('MissingDailyExport', 'Maximum')));
    } else {
      const firehoseMetric = (metricName: string, statistic: string) =>
        new cloudwatch.Metric({
          namespace: 'AWS/Firehose',
          metricName,
          statistic,
          dimensionsMap: { DeliveryStreamName: props.stream!.streamName },
          period: Duration.minutes(5),
        });
      this.alarms.push(
        new cloudwatch.Alarm(this, 'StreamDataFreshness', {
          alarmDescription: 'The usage stream holds lines older than the freshness limit: delivery to S3 is failing or late',
          metric: firehoseMetric('DeliveryToS3.DataFreshness', 'Maximum'),
          threshold: props.stream.freshnessLimit.toSeconds(),
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
        anyOf('StreamFailedConversion', 'Usage lines failed the Parquet conversion (see stream-errors/ in the bucket)',
          firehoseMetric('FailedConversion.Records', 'Sum')),
        anyOf('StreamPartitionCountExceeded', 'The usage stream exceeded its active partition limit (records went to stream-errors/)',
          firehoseMetric('PartitionCountExceeded', 'Maximum')),
      );
    }
    for (const alarm of this.alarms) {
      alarm.addAlarmAction(new actions.SnsAction(this.alertsTopic));
    }
  }
}
