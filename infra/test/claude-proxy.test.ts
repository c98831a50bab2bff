/**
 * The Claude-compatible proxy in BedrockMeteringStack: its function and environment, its tables, the
 * provider key's secret, least-privilege IAM derived from the model map, the streamed routes and the outputs.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { DEFAULT_CLAUDE_PROXY_MODEL_MAP } from '../lib/claude-proxy/model-map';
import { KEY_HOLDER_PATHS } from '../lib/claude-proxy/routes';
import {
  actionsOf,
  INFRA_DIR,
  logicalIdOf,
  methods,
  resourcePaths,
  resourcesOf,
  resourcesOfStatement,
  statementsOfRole,
  synth,
  SynthesizedApp,
  TEST_REGION,
} from './helpers';

let built: SynthesizedApp;
let template: Template;

before(() => {
  built = synth();
  template = built.meteringTemplate;
});

const FUNCTION_NAME = 'BedrockMeteringStack-ClaudeProxy';

function proxyEnvironment(t: Template): Record<string, unknown> {
  const fn = Object.values(resourcesOf(t, 'AWS::Lambda::Function')).find(
    (candidate) => candidate.Properties?.FunctionName === FUNCTION_NAME,
  );
  assert.ok(fn, 'no Claude proxy function');
  return (fn.Properties?.Environment as { Variables: Record<string, unknown> }).Variables;
}

describe('Claude proxy function', () => {
  it('is an arm64 provided.al2023 Rust function, 512 MB, 893 s (440 + 440 + 10 + 3), JSON logs to its own log group', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      MemorySize: 512,
      Timeout: 893,
      LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: logicalIdOf(template, 'AWS::Logs::LogGroup', 'ClaudeProxyLogGroup') } },
      Role: { 'Fn::GetAtt': [logicalIdOf(template, 'AWS::IAM::Role', 'ClaudeProxyRole'), 'Arn'] },
    });
  });

  it('is configured through its environment: tables, managed mode with the secret, fallback, the model map', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Environment: {
        Variables: {
          RUST_LOG: 'info',
          USAGE_TABLE_NAME: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable') },
          USAGE_DAILY_TTL_DAYS: '90',
          USAGE_WEEKLY_TTL_DAYS: '400',
          API_KEY_TABLE_NAME: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'ClaudeProxyApiKeysTable') },
          RATE_LIMIT_TABLE_NAME: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'ClaudeProxyRateLimitsTable') },
          ANTHROPIC_CREDENTIAL_MODE: 'managed',
          ANTHROPIC_API_KEY_SECRET_ID: { Ref: logicalIdOf(template, 'AWS::SecretsManager::Secret', 'ClaudeProxyAnthropicApiKey') },
          BEDROCK_FALLBACK: 'true',
          BEDROCK_MODEL_MAP: JSON.stringify(DEFAULT_CLAUDE_PROXY_MODEL_MAP),
          BEDROCK_MODEL_DISCOVERY: 'true',
          FORCE_RATE_LIMIT_TEST: 'false',
        },
      },
    });
  });

  it('passes the family fallback and the profile geographies, and may invoke the fallback models', () => {
    const fallback = { opus: 'us.anthropic.claude-opus-4-8-20260915-v1:0' };
    const configured = synth({
      claudeProxyFamilyFallback: JSON.stringify(fallback),
      claudeProxyProfileGeographies: 'eu,global',
    }).meteringTemplate;
    configured.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Environment: {
        Variables: Match.objectLike({
          BEDROCK_FAMILY_FALLBACK: JSON.stringify(fallback),
          BEDROCK_PROFILE_GEOGRAPHIES: 'eu,global',
        }),
      },
    });
    const invoke = statementsOfRole(configured, 'ClaudeProxyRole').find((s) => s.Sid === 'InvokeMappedBedrockModels');
    assert.ok(invoke);
    assert.ok(
      JSON.stringify(resourcesOfStatement(invoke)).includes('inference-profile/us.anthropic.claude-opus-4-8-20260915-v1:0'),
      'the fallback profile is invocable',
    );
    // Unset: nothing is passed, the function's defaults hold.
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Environment: { Variables: Match.objectLike({ BEDROCK_FAMILY_FALLBACK: Match.absent(), BEDROCK_PROFILE_GEOGRAPHIES: Match.absent() }) },
    });
  });

  it('takes the credential mode, fallback, FALLBACK_ON, scope, forced 429 and model map from context', () => {
    const modelMap = { 'claude-sonnet-4-5': 'us.anthropic.claude-sonnet-4-5-20250929-v1:0' };
    const configured = synth({
      claudeProxyCredentialMode: 'passthrough',
      claudeProxyBedrockFallback: 'false',
      claudeProxyFallbackOn: '429,529,5xx',
      claudeProxyRateLimitScope: 'deployment',
      claudeProxyForceRateLimitTest: 'true',
      claudeProxyModelMap: JSON.stringify(modelMap),
    }).meteringTemplate;
    configured.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Environment: {
        Variables: Match.objectLike({
          ANTHROPIC_CREDENTIAL_MODE: 'passthrough',
          ANTHROPIC_API_KEY_SECRET_ID: Match.absent(),
          BEDROCK_FALLBACK: 'false',
          FALLBACK_ON: '429,529,5xx',
          RATE_LIMIT_SCOPE: 'deployment',
          FORCE_RATE_LIMIT_TEST: 'true',
          BEDROCK_MODEL_MAP: JSON.stringify(modelMap),
        }),
      },
    });
    // Passthrough: the callers' own Anthropic credentials; no provider key to keep or read.
    configured.resourceCountIs('AWS::SecretsManager::Secret', 0);
    assert.ok(!statementsOfRole(configured, 'ClaudeProxyRole').some((s) => s.Sid === 'ReadAnthropicApiKey'));
  });

  it('stays under Lambda\'s 4 KB of environment with the default model map', () => {
    // References become names or ARNs at deploy time: count each as 128 characters.
    const sized = Object.entries(proxyEnvironment(template)).reduce(
      (total, [name, value]) => total + name.length + (typeof value === 'string' ? value.length : 128),
      0,
    );
    assert.ok(sized < 4096, `environment of about ${sized} bytes`);
  });

  it("has the crate's own default model map (crates/claude-proxy/src/config.rs)", () => {
    const source = fs.readFileSync(path.resolve(INFRA_DIR, '..', 'crates', 'claude-proxy', 'src', 'config.rs'), 'utf8');
    const block = source.slice(source.indexOf('pub const DEFAULT_MODEL_MAP'), source.indexOf('];', source.indexOf('pub const DEFAULT_MODEL_MAP')));
    const pairs = [...block.matchAll(/\("([^"]+)",\s*"([^"]+)"\)/g)].map((match) => [match[1], match[2]]);
    assert.ok(pairs.length > 0, 'DEFAULT_MODEL_MAP not found in config.rs');
    assert.deepEqual(DEFAULT_CLAUDE_PROXY_MODEL_MAP, Object.fromEntries(pairs));
  });
});

describe('Claude proxy tables', () => {
  it('keeps gateway keys on demand by pk, with gsi1 (owner) projecting all, TTL ttl and PITR', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      AttributeDefinitions: [
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'gsi1pk', AttributeType: 'S' },
        { AttributeName: 'gsi1sk', AttributeType: 'S' },
      ],
      GlobalSecondaryIndexes: [
        {
          IndexName: 'gsi1',
          KeySchema: [
            { AttributeName: 'gsi1pk', KeyType: 'HASH' },
            { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        },
      ],
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
    });
  });

  it('keeps the rate-limit memory on demand by pk, without index, with TTL ttl and PITR', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      GlobalSecondaryIndexes: Match.absent(),
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
    });
  });

  it('are retained on destroy with retainData, deleted otherwise', () => {
    const retained = synth({ retainData: 'true' }).meteringTemplate;
    for (const prefix of ['ClaudeProxyApiKeysTable', 'ClaudeProxyRateLimitsTable']) {
      const id = logicalIdOf(template, 'AWS::DynamoDB::Table', prefix);
      assert.equal(resourcesOf(template, 'AWS::DynamoDB::Table')[id].DeletionPolicy, 'Delete', prefix);
      assert.equal(resourcesOf(retained, 'AWS::DynamoDB::Table')[id].DeletionPolicy, 'Retain', prefix);
    }
  });
});

describe("the provider's Anthropic key", () => {
  it('is a secret the stack creates without any key in it (the operator puts it there)', () => {
    template.resourceCountIs('AWS::SecretsManager::Secret', 1);
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      SecretString: Match.absent(),
      GenerateSecretString: { SecretStringTemplate: '{"api_key":""}', GenerateStringKey: 'placeholder' },
    });
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: logicalIdOf(template, 'AWS::IAM::Role', 'ClaudeProxyRole') }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          {
            Sid: 'ReadAnthropicApiKey',
            Effect: 'Allow',
            Action: 'secretsmanager:GetSecretValue',
            Resource: { Ref: logicalIdOf(template, 'AWS::SecretsManager::Secret', 'ClaudeProxyAnthropicApiKey') },
          },
        ]),
      },
    });
  });

  it('can be an existing secret named by context: read by name, nothing created', () => {
    const named = synth({ anthropicApiKeySecretName: 'bedrock-metering/anthropic' }).meteringTemplate;
    named.resourceCountIs('AWS::SecretsManager::Secret', 0);
    named.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: FUNCTION_NAME,
      Environment: { Variables: Match.objectLike({ ANTHROPIC_API_KEY_SECRET_ID: 'bedrock-metering/anthropic' }) },
    });
    named.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          {
            Sid: 'ReadAnthropicApiKey',
            Effect: 'Allow',
            Action: 'secretsmanager:GetSecretValue',
            Resource: {
              'Fn::Join': ['', [`arn:aws:secretsmanager:${TEST_REGION}:`, { Ref: 'AWS::AccountId' }, ':secret:bedrock-metering/anthropic-??????']],
            },
          },
        ]),
      },
    });
    named.hasOutput('AnthropicApiKeySecretArn', {});
  });

  it('can be an existing secret given by ARN', () => {
    const arn = 'arn:aws:secretsmanager:us-east-1:111122223333:secret:anthropic-AbCdEf';
    const byArn = synth({ anthropicApiKeySecretName: arn }).meteringTemplate;
    byArn.resourceCountIs('AWS::SecretsManager::Secret', 0);
    byArn.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([{ Sid: 'ReadAnthropicApiKey', Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: arn }]),
      },
    });
  });
});

describe('Claude proxy IAM', () => {
  it('may write its log group, UpdateItem the counters, use the key and rate-limit tables as the code does, invoke the mapped models and read its key', () => {
    const statements = statementsOfRole(template, 'ClaudeProxyRole');
    assert.deepEqual(
      statements.map((s) => [s.Sid, actionsOf(s)]),
      [
        ['WriteOwnLogGroup', ['logs:CreateLogStream', 'logs:PutLogEvents']],
        ['IncrementUsageCounters', ['dynamodb:UpdateItem']],
        ['PutCounterMarkers', ['dynamodb:PutItem']],
        ['LookUpAndRegisterTenants', ['dynamodb:GetItem', 'dynamodb:PutItem']],
        ['QueryTenantUsageCounters', ['dynamodb:Query']],
        ['ReadTenantLimits', ['dynamodb:BatchGetItem', 'dynamodb:GetItem']],
        ['ReserveAndSettleBudgets', ['dynamodb:BatchGetItem', 'dynamodb:UpdateItem']],
        ['PutBudgetOperationMarkers', ['dynamodb:PutItem']],
        ['MarkBudgetAlerts', ['dynamodb:DeleteItem', 'dynamodb:PutItem']],
        ['SendBudgetAlerts', ['events:PutEvents']],
        ['CheckAndManageGatewayKeys', ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']],
        ['ListGatewayKeysOfUser', ['dynamodb:Query']],
        ['RememberRateLimits', ['dynamodb:GetItem', 'dynamodb:PutItem']],
        ['InvokeMappedBedrockModels', ['bedrock:CountTokens', 'bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream']],
        ['ListInferenceProfiles', ['bedrock:ListInferenceProfiles']],
        ['InvokeDiscoveredClaudeModels', ['bedrock:CountTokens', 'bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream']],
        ['ReadAnthropicApiKey', ['secretsmanager:GetSecretValue']],
      ],
    );
    const arn = (prefix: string) => ({ 'Fn::GetAtt': [logicalIdOf(template, 'AWS::DynamoDB::Table', prefix), 'Arn'] });
    const byId = Object.fromEntries(statements.map((s) => [s.Sid, resourcesOfStatement(s)]));
    assert.deepEqual(byId.IncrementUsageCounters, [arn('UsageTable')]);
    // GET /v1/gateway-key/usage/me reads one tenant's counters: the table's TENANT# partitions, never gsi1.
    assert.deepEqual(byId.QueryTenantUsageCounters, [arn('UsageTable')]);
    const query = statements.find((s) => s.Sid === 'QueryTenantUsageCounters');
    assert.deepEqual((query as { Condition?: unknown } | undefined)?.Condition, { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['TENANT#*'] } });
    assert.deepEqual(byId.CheckAndManageGatewayKeys, [arn('ClaudeProxyApiKeysTable')]);
    // The code queries the index only (a user's keys), never the table.
    assert.deepEqual(byId.ListGatewayKeysOfUser, [{ 'Fn::Join': ['', [arn('ClaudeProxyApiKeysTable'), '/index/gsi1']] }]);
    assert.deepEqual(byId.RememberRateLimits, [arn('ClaudeProxyRateLimitsTable')]);
  });

  it('invokes exactly the profiles of the default model map and their foundation models in the US regions', () => {
    const bedrock = statementsOfRole(template, 'ClaudeProxyRole').find((s) => s.Sid === 'InvokeMappedBedrockModels');
    assert.ok(bedrock);
    const profiles = [...new Set(Object.values(DEFAULT_CLAUDE_PROXY_MODEL_MAP))].sort();
    const expected = [
      ...profiles.map((profile) => ({
        'Fn::Join': ['', [`arn:aws:bedrock:${TEST_REGION}:`, { Ref: 'AWS::AccountId' }, `:inference-profile/${profile}`]],
      })),
      ...profiles.flatMap((profile) =>
        ['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2'].map(
          (region) => `arn:aws:bedrock:${region}::foundation-model/${profile.slice('us.'.length)}`,
        ),
      ),
    ];
    const sorted = (items: unknown[]) => items.map((item) => JSON.stringify(item)).sort();
    assert.deepEqual(sorted(resourcesOfStatement(bedrock)), sorted(expected));
  });

  it('follows a model map from context: a foundation model and an EU profile, nothing else', () => {
    const configured = synth({
      region: 'eu-west-1',
      claudeProxyModelMap: JSON.stringify({
        'claude-3-haiku-20240307': 'anthropic.claude-3-haiku-20240307-v1:0',
        'claude-sonnet-4-5': 'eu.anthropic.claude-sonnet-4-5-20250929-v1:0',
        'claude-sonnet-4-5-20250929': 'eu.anthropic.claude-sonnet-4-5-20250929-v1:0',
      }),
    }).meteringTemplate;
    configured.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Sid: 'InvokeMappedBedrockModels',
            // IAM's minimized policy: plain ARNs sorted, then the one with the account.
            Resource: Match.arrayEquals([
              ...[
                'arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0',
                ...['eu-central-1', 'eu-central-2', 'eu-north-1', 'eu-south-1', 'eu-south-2', 'eu-west-1', 'eu-west-2', 'eu-west-3'].map(
                  (region) => `arn:aws:bedrock:${region}::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0`,
                ),
              ].sort(),
              { 'Fn::Join': ['', ['arn:aws:bedrock:eu-west-1:', { Ref: 'AWS::AccountId' }, ':inference-profile/eu.anthropic.claude-sonnet-4-5-20250929-v1:0']] },
            ]),
          }),
        ]),
      },
    });
  });

  it('may list the inference profiles of its region and invoke only the Claude ones discovery finds', () => {
    const statements = statementsOfRole(template, 'ClaudeProxyRole');
    const byId = Object.fromEntries(statements.map((s) => [s.Sid, resourcesOfStatement(s)]));
    const inRegion = (resource: string) => ({
      'Fn::Join': ['', [`arn:aws:bedrock:${TEST_REGION}:`, { Ref: 'AWS::AccountId' }, `:inference-profile/${resource}`]],
    });
    assert.deepEqual(byId.ListInferenceProfiles, [inRegion('*')]);
    assert.deepEqual(
      (byId.InvokeDiscoveredClaudeModels as unknown[]).map((resource) => JSON.stringify(resource)).sort(),
      [inRegion('*.anthropic.claude-*'), 'arn:aws:bedrock:*::foundation-model/anthropic.claude-*'].map((r) => JSON.stringify(r)).sort(),
    );
    // Never all of Bedrock: no bare wildcard, no other provider's models, no application profiles.
    for (const statement of statements.filter((s) => actionsOf(s).some((action) => action.startsWith('bedrock:')))) {
      for (const resource of resourcesOfStatement(statement)) {
        const text = JSON.stringify(resource);
        assert.notEqual(resource, '*', statement.Sid);
        assert.ok(!text.includes('application-inference-profile'), text);
        if (statement.Sid !== 'ListInferenceProfiles') assert.ok(text.includes('anthropic.claude-'), text);
      }
    }
  });

  it('warns at synthesis when the map names profiles the stack region does not serve', () => {
    const elsewhere = synth({ region: 'eu-west-1' });
    Annotations.fromStack(elsewhere.metering).hasWarning('/BedrockMeteringStack/ClaudeProxy', Match.stringLikeRegexp('eu-west-1 does not serve .*us\\.anthropic\\.claude-sonnet-4-5'));
    assert.deepEqual(Annotations.fromStack(built.metering).findWarning('*', Match.stringLikeRegexp('does not serve')), []);
  });
});

describe('Claude proxy routes', () => {
  const routes = [
    'POST /v1/messages',
    'POST /v1/messages/count_tokens',
    'POST /v1/keys',
    'GET /v1/keys',
    'DELETE /v1/keys/{id}',
    'GET /v1/gateway-key/usage/me',
    'GET /v1/gateway-key/limits/me',
  ];

  it("routes exactly the function's gateway-key paths (crates/claude-proxy/src/key_holder.rs), without an authorizer", () => {
    const source = fs.readFileSync(path.resolve(INFRA_DIR, '..', 'crates', 'claude-proxy', 'src', 'key_holder.rs'), 'utf8');
    const list = /const PATHS: &'static \[&'static str\] = &\[([^\]]*)\]/.exec(source);
    assert.ok(list, 'KeyHolderRoute::PATHS in key_holder.rs');
    const inCrate = [...list[1].matchAll(/"([^"]+)"/g)].map((match) => match[1]);
    assert.deepEqual([...KEY_HOLDER_PATHS], inCrate);
    const all = methods(template);
    for (const keyPath of KEY_HOLDER_PATHS) {
      const route = `GET /v1/gateway-key/${keyPath}`;
      assert.ok(all[route], route);
      assert.equal(all[route].AuthorizationType, 'NONE', route);
    }
  });

  it('stream every route from the function (InvokeWithResponseStream, STREAM, 15 minutes)', () => {
    const fn = logicalIdOf(template, 'AWS::Lambda::Function', 'ClaudeProxyFunction');
    const resourceIdOf = Object.fromEntries(Object.entries(resourcePaths(template)).map(([id, route]) => [route, id]));
    for (const route of routes) {
      const [httpMethod, routePath] = route.split(' ');
      template.hasResourceProperties('AWS::ApiGateway::Method', {
        HttpMethod: httpMethod,
        ResourceId: { Ref: resourceIdOf[routePath] },
        Integration: {
          Type: 'AWS_PROXY',
          IntegrationHttpMethod: 'POST',
          ResponseTransferMode: 'STREAM',
          TimeoutInMillis: 900_000,
          Uri: {
            'Fn::Join': [
              '',
              [
                `arn:aws:apigateway:${TEST_REGION}:lambda:path/2021-11-15/functions/`,
                { 'Fn::GetAtt': [fn, 'Arn'] },
                '/response-streaming-invocations',
              ],
            ],
          },
        },
      });
    }
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'apigateway.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [fn, 'Arn'] },
    });
  });

  it('leave the other routes buffered', () => {
    for (const [route, method] of Object.entries(methods(template))) {
      if (routes.includes(route)) continue;
      assert.equal(method.Integration?.ResponseTransferMode, undefined, route);
    }
  });
});

describe('Claude proxy usage lines and outputs', () => {
  it('has its log group exported by the log processor next to the chat one', () => {
    const analytics = built.analyticsTemplate;
    const proxyLogGroup = logicalIdOf(template, 'AWS::Logs::LogGroup', 'ClaudeProxyLogGroup');
    const chatLogGroup = logicalIdOf(template, 'AWS::Logs::LogGroup', 'ChatApiLogGroup');
    const read = statementsOfRole(analytics, 'LogProcessorRole').find((s) => s.Sid === 'ReadUsageLines');
    assert.ok(read);
    const resources = resourcesOfStatement(read).map((resource) => JSON.stringify(resource));
    assert.equal(resources.length, 2);
    assert.ok(resources.some((resource) => resource.includes(chatLogGroup)), resources.join());
    assert.ok(resources.some((resource) => resource.includes(proxyLogGroup)), resources.join());
    const processor = Object.values(resourcesOf(analytics, 'AWS::Lambda::Function')).find((fn) =>
      String(fn.Properties?.FunctionName).includes('LogProcessor'),
    );
    const names = JSON.stringify((processor?.Properties?.Environment as { Variables: Record<string, unknown> }).Variables.USAGE_LOG_GROUPS);
    assert.ok(names.includes(chatLogGroup) && names.includes(proxyLogGroup), names);
  });

  it('gives the base URL for ANTHROPIC_BASE_URL, the tables, the function and the secret', () => {
    const apiUrl = template.findOutputs('ApiGatewayUrl').ApiGatewayUrl.Value;
    template.hasOutput('ClaudeProxyUrl', { Value: apiUrl });
    template.hasOutput('ApiKeyTableName', { Value: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'ClaudeProxyApiKeysTable') } });
    template.hasOutput('RateLimitTableName', { Value: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'ClaudeProxyRateLimitsTable') } });
    template.hasOutput('ClaudeProxyFunctionName', { Value: { Ref: logicalIdOf(template, 'AWS::Lambda::Function', 'ClaudeProxyFunction') } });
    template.hasOutput('ClaudeProxyLogGroupName', { Value: { Ref: logicalIdOf(template, 'AWS::Logs::LogGroup', 'ClaudeProxyLogGroup') } });
    template.hasOutput('AnthropicApiKeySecretArn', { Value: { Ref: logicalIdOf(template, 'AWS::SecretsManager::Secret', 'ClaudeProxyAnthropicApiKey') } });
    const passthrough = synth({ claudeProxyCredentialMode: 'passthrough' }).meteringTemplate;
    assert.deepEqual(passthrough.findOutputs('AnthropicApiKeySecretArn'), {});
  });
});
