/**
 * Budget alerts: the gateway's `BudgetThresholdCrossed` events (source `bedrock-metering`, sent by the chat and
 * proxy functions when a tenant crosses 50/80/100% of a budget; README "Budgets and quotas") go to the alerts
 * topic, with an optional e-mail subscription (`budgetAlertEmail`).
 */
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

export const BUDGET_EVENT_SOURCE = 'bedrock-metering';
export const BUDGET_EVENT_DETAIL_TYPE = 'BudgetThresholdCrossed';

export interface BudgetAlertsProps {
  readonly topic: sns.ITopic;
  /** An address subscribed to the topic (it must confirm the subscription). */
  readonly email?: string;
}

export class BudgetAlerts extends Construct {
  public readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: BudgetAlertsProps) {
    super(scope, id);
    this.rule = new events.Rule(this, 'BudgetThresholdCrossed', {
      description: 'A tenant crossed a threshold of a budget (bedrock-metering limits)',
      eventPattern: { source: [BUDGET_EVENT_SOURCE], detailType: [BUDGET_EVENT_DETAIL_TYPE] },
    });
    this.rule.addTarget(new targets.SnsTopic(props.topic));
    if (props.email) {
      props.topic.addSubscription(new subscriptions.EmailSubscription(props.email));
    }
  }
}
