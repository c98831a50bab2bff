/**
 * The operations dashboard (infra/lib/operations): its widgets watch what the issue names, its metric
 * filters read the lines the functions write, and none of them has a tenant dimension.
 */
import * as assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { LOG_METRICS } from '../lib/operations/log-metrics';
import { synth, SynthesizedApp } from './helpers';

let built: SynthesizedApp;
let template: Template;
let body: string;

/** The dashboard body with its tokens as JSON text (Fn::Join parts, references kept as objects). */
function dashboardBody(t: Template): string {
  const dashboards = Object.values(t.findResources('AWS::CloudWatch::Dashboard'));
  assert.equal(dashboards.length, 1, 'one dashboard');
  return JSON.stringify(dashboards[0].Properties?.DashboardBody);
}

before(() => {
  built = synth();
  template = built.analyticsTemplate;
  body = dashboardBody(template);
});

describe('operations dashboard', () => {
  it('shows API requests, 4xx, 5xx and latency p50/p99 of the REST API', () => {
    for (const needle of ['\\"AWS/ApiGateway\\",\\"Count\\"', '\\"4XXError\\"', '\\"5XXError\\"', '\\"Latency\\"', '\\"stat\\":\\"p50\\"', '\\"stat\\":\\"p99\\"']) {
      assert.ok(body.includes(needle), `dashboard lacks ${needle}`);
    }
    assert.ok(body.includes('\\"ApiName\\",\\"BedrockMeteringStack-api'), 'by the REST API name');
  });

  it('shows Lambda duration p50 and p99, errors and throttles for each function, the log processor included', () => {
    for (const metric of ['Duration', 'Errors', 'Throttles']) {
      assert.ok(body.includes(`\\"AWS/Lambda\\",\\"${metric}\\"`), metric);
    }
    // chat, usage, proxy (cross-stack references) and the log processor (a Ref), each at p50 and p99
    for (const fn of ['ChatApiFunction', 'UsageApiFunction', 'ClaudeProxyFunction', 'LogProcessorFunction']) {
      for (const stat of ['p50', 'p99']) {
        const pattern = new RegExp(`Duration\\\\",\\\\"FunctionName\\\\",\\\\"",\\{[^}]*${fn}[^}]*\\}+,"\\\\",\\{\\\\"stat\\\\":\\\\"${stat}`);
        assert.match(body, pattern, `no ${stat} duration of ${fn}`);
      }
    }
  });

  it('shows Bedrock throttles, the proxy fallbacks, metering errors and budget refusals from the log metrics', () => {
    for (const needle of [
      'AWS/Bedrock,ModelId} MetricName=\\\\\\"InvocationThrottles',
      'ProxyFallbacks',
      'ProxyFallbackFailures',
      'CounterUpdateNotApplied',
      'BudgetRefusals',
      'BedrockCallFailures',
      'MeteredRequests',
    ]) {
      assert.ok(body.includes(needle), `dashboard lacks ${needle}`);
    }
  });

  it("shows the last export's rows (EMF metric) and its age (a Logs Insights query on the log processor)", () => {
    assert.ok(body.includes('\\"BedrockMetering/LogExport\\",\\"RowsWritten\\"'));
    assert.ok(body.includes('filter ispresent(RowsWritten)'));
    assert.ok(body.includes('sort @timestamp desc'));
  });

  it('shows the state of every export alarm', () => {
    const alarms = Object.keys(template.findResources('AWS::CloudWatch::Alarm'));
    assert.ok(alarms.length >= 4);
    for (const alarm of alarms) {
      assert.ok(body.includes(`{\\"Fn::GetAtt\\":[\\"${alarm}\\",\\"Arn\\"]}`) || body.includes(`"Fn::GetAtt":["${alarm}","Arn"]`), `alarm ${alarm} not on the dashboard`);
    }
  });
});

describe('metric filters on the existing log lines', () => {
  it('counts usage lines, counter outcomes and budget refusals on both usage log groups', () => {
    for (const [name, pattern] of [
      ['MeteredRequests', '{ $.event = "token_usage" }'],
      ['CounterUpdateNotApplied', '{ $.event = "counter_update" }'],
      ['BudgetRefusals', '{ $.event = "limit_refused" }'],
    ]) {
      const filters = template.findResources('AWS::Logs::MetricFilter', {
        Properties: {
          FilterPattern: pattern,
          MetricTransformations: [Match.objectLike({ MetricName: name, MetricNamespace: 'BedrockMetering/Gateway' })],
        },
      });
      assert.equal(Object.keys(filters).length, 2, `${name}: one filter per usage log group (chat, proxy)`);
    }
    template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '{ $.event = "counter_update" }',
      MetricTransformations: [Match.objectLike({ Dimensions: [{ Key: 'Outcome', Value: '$.outcome' }] })],
    });
    template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '{ $.event = "token_usage" }',
      MetricTransformations: [Match.objectLike({ MetricName: 'MeteredTokens', MetricValue: '$.total_tokens' })],
    });
  });

  it('counts the proxy fallbacks by reason on the proxy log group only', () => {
    const filters = template.findResources('AWS::Logs::MetricFilter', {
      Properties: { FilterPattern: '{ $.fields.message = "served by Bedrock" }' },
    });
    assert.equal(Object.keys(filters).length, 1);
    const transformation = (Object.values(filters)[0].Properties as { MetricTransformations: { Dimensions: unknown }[] })
      .MetricTransformations[0];
    assert.deepEqual(transformation.Dimensions, [{ Key: 'Reason', Value: '$.fields.reason' }]);
  });

  it('has no per-tenant (or per-user, per-request) dimension: a custom metric costs per dimension value', () => {
    const filters = Object.values(template.findResources('AWS::Logs::MetricFilter'));
    assert.ok(filters.length >= LOG_METRICS.length);
    for (const filter of filters) {
      const text = JSON.stringify((filter.Properties as { MetricTransformations: unknown }).MetricTransformations);
      for (const field of ['tenant_id', 'user_id', 'request_id', 'client_user_id', 'model_id']) {
        assert.ok(!text.includes(field), `a metric filter has a ${field} dimension: ${text}`);
      }
    }
    assert.ok(!body.includes('tenant_id'), 'no tenant on the dashboard');
  });

  it('the message texts the filters match are the ones the Rust code logs', async () => {
    const fs = await import('node:fs');
    const path = await import('node:path');
    const root = path.resolve(__dirname, '..', '..', 'crates');
    const sources = ['claude-proxy/src/proxy.rs', 'metering-core/src/model.rs', 'api-gateway-lambda/src/error_envelope.rs']
      .map((file) => fs.readFileSync(path.join(root, file), 'utf8'))
      .join('\n');
    for (const message of ['served by Bedrock', "the Bedrock fallback failed; answering with Anthropic's refusal", 'the Bedrock call failed', 'request failed', 'proxy request failed']) {
      assert.ok(sources.includes(`"${message}"`), `no Rust code logs "${message}" any more`);
    }
  });
});
