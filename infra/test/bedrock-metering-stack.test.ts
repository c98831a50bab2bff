/**
 * BedrockMeteringStack's synthesized template: Cognito, the usage table, the Rust functions, the REST API
 * with its authorizer, least-privilege IAM and the outputs the scripts read.
 */
import * as assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import {
  actionsOf,
  logicalIdOf,
  methods,
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

describe('Cognito user pool', () => {
  it('has no self sign-up, email as sign-in alias, a strong password policy and an immutable tenant_id', () => {
    template.resourceCountIs('AWS::Cognito::UserPool', 1);
    template.hasResourceProperties('AWS::Cognito::UserPool', {
      AdminCreateUserConfig: { AllowAdminCreateUserOnly: true },
      AliasAttributes: ['email'],
      AutoVerifiedAttributes: ['email'],
      Policies: {
        PasswordPolicy: {
          MinimumLength: 12,
          RequireLowercase: true,
          RequireUppercase: true,
          RequireNumbers: true,
          RequireSymbols: true,
        },
      },
      Schema: Match.arrayWith([
        Match.objectLike({
          Name: 'tenant_id',
          AttributeDataType: 'String',
          Mutable: false,
          StringAttributeConstraints: { MinLength: '1', MaxLength: '128' },
        }),
      ]),
    });
  });

  it('has the admin group', () => {
    template.hasResourceProperties('AWS::Cognito::UserPoolGroup', {
      GroupName: 'admin',
      UserPoolId: { Ref: logicalIdOf(template, 'AWS::Cognito::UserPool', 'AuthUserPool') },
    });
  });

  it('has a public app client with USER_PASSWORD_AUTH and SRP that reads but cannot write custom:tenant_id', () => {
    template.resourceCountIs('AWS::Cognito::UserPoolClient', 1);
    template.hasResourceProperties('AWS::Cognito::UserPoolClient', {
      GenerateSecret: false,
      ExplicitAuthFlows: Match.arrayWith(['ALLOW_USER_PASSWORD_AUTH', 'ALLOW_USER_SRP_AUTH']),
      ReadAttributes: Match.arrayWith(['custom:tenant_id', 'email']),
    });
    const client = Object.values(resourcesOf(template, 'AWS::Cognito::UserPoolClient'))[0];
    const writable = client.Properties?.WriteAttributes as string[];
    assert.ok(Array.isArray(writable), 'WriteAttributes must be explicit (otherwise every attribute is writable)');
    assert.ok(!writable.includes('custom:tenant_id'), 'the client must not write custom:tenant_id');
  });
});

describe('usage table', () => {
  it('is on-demand with PITR, TTL on ttl, pk/sk keys and the gsi1 index projecting all', () => {
    // The usage counters, and the Claude proxy's gateway keys and rate-limit memory (test/claude-proxy.test.ts).
    template.resourceCountIs('AWS::DynamoDB::Table', 3);
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      AttributeDefinitions: Match.arrayWith([
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
        { AttributeName: 'gsi1pk', AttributeType: 'S' },
        { AttributeName: 'gsi1sk', AttributeType: 'S' },
      ]),
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
    });
  });

  it('is deleted by cdk destroy unless retainData is set', () => {
    template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' });
    synth({ retainData: 'true' }).meteringTemplate.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain' });
  });
});

describe('Rust functions', () => {
  const expected = [
    { prefix: 'ChatApi', name: 'BedrockMeteringStack-ChatApi', memory: 256, timeout: 38 }, // 25 s Bedrock + 10 s metering + 3 s
    { prefix: 'UsageApi', name: 'BedrockMeteringStack-UsageApi', memory: 256, timeout: 29 },
  ];

  for (const fn of expected) {
    it(`${fn.prefix}: arm64 provided.al2023, ${fn.memory} MB, ${fn.timeout} s, JSON logs to its own log group`, () => {
      const logGroup = logicalIdOf(template, 'AWS::Logs::LogGroup', `${fn.prefix}LogGroup`);
      template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
      template.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: fn.name,
        Runtime: 'provided.al2023',
        Architectures: ['arm64'],
        Handler: 'bootstrap',
        MemorySize: fn.memory,
        Timeout: fn.timeout,
        LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: logGroup } },
        Role: { 'Fn::GetAtt': [logicalIdOf(template, 'AWS::IAM::Role', `${fn.prefix}Role`), 'Arn'] },
      });
    });
  }

  it('configures chat-api through its environment', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: 'BedrockMeteringStack-ChatApi',
      Environment: {
        Variables: Match.objectLike({
          BEDROCK_MODEL_ID: 'anthropic.claude-3-haiku-20240307-v1:0',
          USAGE_TABLE_NAME: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable') },
          USAGE_DAILY_TTL_DAYS: '90',
          USAGE_WEEKLY_TTL_DAYS: '400',
          BEDROCK_TIMEOUT_MS: '25000',
        }),
      },
    });
  });

  it('configures usage-api through its environment: table, admin group, app client, counter TTLs', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: 'BedrockMeteringStack-UsageApi',
      Environment: {
        Variables: Match.objectLike({
          USAGE_TABLE_NAME: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable') },
          ADMIN_GROUP: 'admin',
          COGNITO_CLIENT_ID: { Ref: logicalIdOf(template, 'AWS::Cognito::UserPoolClient', 'AuthUserPoolAppClient') },
          USAGE_DAILY_TTL_DAYS: '90',
          USAGE_WEEKLY_TTL_DAYS: '400',
        }),
      },
    });
  });

  it('gives usage-api the same counter TTLs as chat-api when they are configured', () => {
    const configured = synth({ usageDailyTtlDays: '30', usageWeeklyTtlDays: '120' }).meteringTemplate;
    for (const name of ['BedrockMeteringStack-ChatApi', 'BedrockMeteringStack-UsageApi']) {
      configured.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: name,
        Environment: { Variables: Match.objectLike({ USAGE_DAILY_TTL_DAYS: '30', USAGE_WEEKLY_TTL_DAYS: '120' }) },
      });
    }
  });

  it('passes the Anthropic placeholders and CORS origins only when they are set', () => {
    const chat = (t: Template) =>
      Object.values(resourcesOf(t, 'AWS::Lambda::Function')).find(
        (fn) => fn.Properties?.FunctionName === 'BedrockMeteringStack-ChatApi',
      )?.Properties?.Environment as { Variables: Record<string, unknown> };
    assert.equal(chat(template).Variables.ANTHROPIC_VERSION, undefined);
    assert.equal(chat(template).Variables.CORS_ALLOW_ORIGINS, undefined);
    const configured = synth({
      anthropicVersion: 'bedrock-2023-05-31',
      anthropicMaxTokens: '1024',
      corsAllowOrigins: 'https://a.example.com',
    }).meteringTemplate;
    assert.equal(chat(configured).Variables.ANTHROPIC_VERSION, 'bedrock-2023-05-31');
    assert.equal(chat(configured).Variables.ANTHROPIC_MAX_TOKENS, '1024');
    assert.equal(chat(configured).Variables.CORS_ALLOW_ORIGINS, 'https://a.example.com');
    // The usage function never reads it: its UI is same-origin.
    configured.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: 'BedrockMeteringStack-UsageApi',
      Environment: { Variables: Match.objectLike({ CORS_ALLOW_ORIGINS: Match.absent() }) },
    });
  });
});

describe('IAM', () => {
  it('chat-api may write its log group, UpdateItem the table and invoke only the configured model', () => {
    const statements = statementsOfRole(template, 'ChatApiRole');
    assert.deepEqual(
      statements.map((s) => [s.Sid, actionsOf(s)]),
      [
        ['WriteOwnLogGroup', ['logs:CreateLogStream', 'logs:PutLogEvents']],
        ['IncrementUsageCounters', ['dynamodb:UpdateItem']],
        ['PutCounterMarkers', ['dynamodb:PutItem']],
        ['LookUpAndRegisterTenants', ['dynamodb:GetItem', 'dynamodb:PutItem']],
        ['ReadTenantLimits', ['dynamodb:BatchGetItem', 'dynamodb:GetItem']],
        ['ReserveAndSettleBudgets', ['dynamodb:BatchGetItem', 'dynamodb:UpdateItem']],
        ['PutBudgetOperationMarkers', ['dynamodb:PutItem']],
        ['MarkBudgetAlerts', ['dynamodb:DeleteItem', 'dynamodb:PutItem']],
        ['SendBudgetAlerts', ['events:PutEvents']],
        ['InvokeConfiguredBedrockModel', ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream']],
      ],
    );
    const table = logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable');
    const byId = Object.fromEntries(statements.map((s) => [s.Sid, resourcesOfStatement(s)]));
    assert.deepEqual(byId.WriteOwnLogGroup, [{ 'Fn::GetAtt': [logicalIdOf(template, 'AWS::Logs::LogGroup', 'ChatApiLogGroup'), 'Arn'] }]);
    assert.deepEqual(byId.IncrementUsageCounters, [{ 'Fn::GetAtt': [table, 'Arn'] }]);
    assert.deepEqual(byId.PutCounterMarkers, [{ 'Fn::GetAtt': [table, 'Arn'] }]);
    // A counter transaction updates TENANT#<t> items and puts one COUNTED#<batch> marker, and nothing else.
    const leadingKeys = (sid: string) =>
      (statements.find((s) => s.Sid === sid) as { Condition?: Record<string, Record<string, unknown>> } | undefined)
        ?.Condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'];
    assert.deepEqual(leadingKeys('IncrementUsageCounters'), ['TENANT#*']);
    assert.deepEqual(leadingKeys('PutCounterMarkers'), ['COUNTED#*']);
    // Limits: read LIMITS#<t>, reserve and settle BUDGET#<t>... (once: BUDGETOP#<token>), mark BUDGETALERT#<t>...: nothing else.
    assert.deepEqual(leadingKeys('ReadTenantLimits'), ['LIMITS#*']);
    assert.deepEqual(leadingKeys('ReserveAndSettleBudgets'), ['BUDGET#*']);
    assert.deepEqual(leadingKeys('PutBudgetOperationMarkers'), ['BUDGETOP#*']);
    assert.deepEqual(leadingKeys('MarkBudgetAlerts'), ['BUDGETALERT#*']);
    assert.ok(JSON.stringify(byId.SendBudgetAlerts).includes(':event-bus/default'), JSON.stringify(byId.SendBudgetAlerts));
    assert.deepEqual(byId.InvokeConfiguredBedrockModel, [
      `arn:aws:bedrock:${TEST_REGION}::foundation-model/anthropic.claude-3-haiku-20240307-v1:0`,
    ]);
  });

  it('usage-api may write its log group and Query the table and gsi1, nothing else', () => {
    const statements = statementsOfRole(template, 'UsageApiRole');
    const table = logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable');
    assert.deepEqual(
      statements.map((s) => [s.Sid, actionsOf(s)]),
      [
        ['WriteOwnLogGroup', ['logs:CreateLogStream', 'logs:PutLogEvents']],
        ['QueryUsageCounters', ['dynamodb:Query']],
        ['LookUpAndRegisterTenants', ['dynamodb:GetItem', 'dynamodb:PutItem']],
        ['ManageTenantLimits', ['dynamodb:BatchGetItem', 'dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem']],
        ['ReadBudgetUse', ['dynamodb:BatchGetItem']],
      ],
    );
    const limits = statements.filter((s) => s.Sid === 'ManageTenantLimits' || s.Sid === 'ReadBudgetUse');
    assert.deepEqual(limits.map((s) => (s as { Condition?: unknown }).Condition), [
      { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['LIMITS#*'] } },
      { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['BUDGET#*'] } },
    ]);
    assert.deepEqual(resourcesOfStatement(statements[1]), [
      { 'Fn::GetAtt': [table, 'Arn'] },
      { 'Fn::Join': ['', [{ 'Fn::GetAtt': [table, 'Arn'] }, '/index/gsi1']] },
    ]);
  });

  it('the chat, usage and proxy roles may GetItem/PutItem only the tenant registry partitions of the usage table', () => {
    const table = logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable');
    for (const role of ['ChatApiRole', 'UsageApiRole', 'ClaudeProxyRole']) {
      const registry = statementsOfRole(template, role).filter((s) => s.Sid === 'LookUpAndRegisterTenants');
      assert.equal(registry.length, 1, role);
      const [statement] = registry;
      assert.deepEqual(actionsOf(statement), ['dynamodb:GetItem', 'dynamodb:PutItem'], role);
      assert.deepEqual(resourcesOfStatement(statement), [{ 'Fn::GetAtt': [table, 'Arn'] }], role);
      assert.deepEqual(
        (statement as { Condition?: unknown }).Condition,
        { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['TENANT_ID#*'] } },
        role,
      );
    }
  });

  it('grants no wildcard action and no * resource, and the function roles carry no managed policy', () => {
    for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::Policy'))) {
      const statements = (policy.Properties?.PolicyDocument as { Statement: Parameters<typeof actionsOf>[0][] }).Statement;
      for (const statement of statements) {
        for (const action of actionsOf(statement)) assert.ok(!action.includes('*'), `wildcard action ${action}`);
        for (const resource of resourcesOfStatement(statement)) {
          assert.notEqual(resource, '*', `statement ${statement.Sid} allows every resource`);
        }
      }
    }
    for (const prefix of ['ChatApiRole', 'UsageApiRole', 'ClaudeProxyRole']) {
      const role = resourcesOf(template, 'AWS::IAM::Role')[logicalIdOf(template, 'AWS::IAM::Role', prefix)];
      assert.equal(role.Properties?.ManagedPolicyArns, undefined, `${prefix} has managed policies`);
    }
  });

  it('allows a cross-region inference profile and its foundation model in the profile regions', () => {
    const profiled = synth({ modelId: 'us.anthropic.claude-3-5-haiku-20241022-v1:0' }).meteringTemplate;
    const bedrock = statementsOfRole(profiled, 'ChatApiRole').find((s) => s.Sid === 'InvokeConfiguredBedrockModel');
    assert.ok(bedrock);
    const sorted = (items: unknown[]) => items.map((item) => JSON.stringify(item)).sort();
    assert.deepEqual(sorted(resourcesOfStatement(bedrock)), sorted([
      {
        'Fn::Join': [
          '',
          [
            `arn:aws:bedrock:${TEST_REGION}:`,
            { Ref: 'AWS::AccountId' },
            ':inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0',
          ],
        ],
      },
      ...['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2'].map(
        (region) => `arn:aws:bedrock:${region}::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0`,
      ),
    ]));
    profiled.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: 'BedrockMeteringStack-ChatApi',
      Environment: { Variables: Match.objectLike({ BEDROCK_MODEL_ID: 'us.anthropic.claude-3-5-haiku-20241022-v1:0' }) },
    });
  });

  it('takes the model id from the environment (BM_MODEL_ID) when no context sets it', () => {
    const fromEnv = synth({}, { BM_MODEL_ID: 'amazon.nova-micro-v1:0' });
    assert.equal(fromEnv.config.modelId, 'amazon.nova-micro-v1:0');
    const bedrock = statementsOfRole(fromEnv.meteringTemplate, 'ChatApiRole').find((s) => s.Sid === 'InvokeConfiguredBedrockModel');
    assert.deepEqual(resourcesOfStatement(bedrock!), [`arn:aws:bedrock:${TEST_REGION}::foundation-model/amazon.nova-micro-v1:0`]);
  });
});

describe('REST API', () => {
  it('has exactly the chat, usage, limits, UI and Claude proxy routes', () => {
    assert.deepEqual(Object.keys(methods(template)).sort(), [
      'DELETE /v1/keys/{id}',
      'DELETE /v1/limits/{tenant_id}',
      'GET /ui',
      'GET /ui/{proxy+}',
      'GET /v1/gateway-key/limits/me',
      'GET /v1/gateway-key/usage/me',
      'GET /v1/keys',
      'GET /v1/limits/me',
      'GET /v1/limits/{tenant_id}',
      'GET /v1/usage',
      'GET /v1/usage/me',
      'GET /v1/usage/{tenant_id}',
      'POST /bedrock/chat',
      'POST /v1/keys',
      'POST /v1/messages',
      'POST /v1/messages/count_tokens',
      'PUT /v1/limits/{tenant_id}',
    ]);
  });

  it('puts the Cognito authorizer on /bedrock/chat, /v1/usage and /v1/keys, none on the UI and /v1/messages', () => {
    const authorizer = logicalIdOf(template, 'AWS::ApiGateway::Authorizer', 'ApiAuthorizer');
    template.hasResourceProperties('AWS::ApiGateway::Authorizer', {
      Type: 'COGNITO_USER_POOLS',
      IdentitySource: 'method.request.header.Authorization',
      ProviderARNs: [{ 'Fn::GetAtt': [logicalIdOf(template, 'AWS::Cognito::UserPool', 'AuthUserPool'), 'Arn'] }],
    });
    const all = methods(template);
    for (const route of [
      'POST /bedrock/chat',
      'GET /v1/usage',
      'GET /v1/usage/me',
      'GET /v1/usage/{tenant_id}',
      'GET /v1/limits/me',
      'GET /v1/limits/{tenant_id}',
      'PUT /v1/limits/{tenant_id}',
      'DELETE /v1/limits/{tenant_id}',
      'POST /v1/keys',
      'GET /v1/keys',
      'DELETE /v1/keys/{id}',
    ]) {
      assert.equal(all[route].AuthorizationType, 'COGNITO_USER_POOLS', route);
      assert.deepEqual(all[route].AuthorizerId, { Ref: authorizer }, route);
    }
    // /v1/messages: the gateway key is checked by the Claude proxy itself.
    for (const route of ['GET /ui', 'GET /ui/{proxy+}', 'POST /v1/messages', 'POST /v1/messages/count_tokens', 'GET /v1/gateway-key/usage/me', 'GET /v1/gateway-key/limits/me']) {
      assert.equal(all[route].AuthorizationType, 'NONE', route);
      assert.equal(all[route].AuthorizerId, undefined, route);
    }
  });

  it('sends chat to chat-api, usage and UI to usage-api, /v1/messages and /v1/keys to the Claude proxy (Lambda proxy)', () => {
    const chat = logicalIdOf(template, 'AWS::Lambda::Function', 'ChatApiFunction');
    const usage = logicalIdOf(template, 'AWS::Lambda::Function', 'UsageApiFunction');
    const claude = logicalIdOf(template, 'AWS::Lambda::Function', 'ClaudeProxyFunction');
    for (const [route, method] of Object.entries(methods(template))) {
      assert.equal(method.Integration?.Type, 'AWS_PROXY', route);
      const target = route === 'POST /bedrock/chat' ? chat : /^\S+ \/v1\/(messages|keys|gateway-key)/.test(route) ? claude : usage;
      assert.ok(JSON.stringify(method.Integration?.Uri).includes(`"${target}"`), `${route} -> ${target}`);
    }
  });

  it('throttles the stage, logs access as JSON and never logs bodies', () => {
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: 'prod',
      MethodSettings: [
        Match.objectLike({
          HttpMethod: '*',
          ResourcePath: '/*',
          ThrottlingRateLimit: 50,
          ThrottlingBurstLimit: 100,
          LoggingLevel: 'ERROR',
          DataTraceEnabled: false,
        }),
      ],
      AccessLogSetting: Match.objectLike({ Format: Match.anyValue() }),
    });
    const stage = Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage'))[0];
    const format = (stage.Properties?.AccessLogSetting as { Format: string }).Format;
    // What API Gateway writes: each $context variable replaced by its value (messageString comes quoted).
    const line = format.replace('$context.error.messageString', '"Unauthorized"').replace(/\$context\.[A-Za-z.]+/g, 'x');
    const parsed = JSON.parse(line) as Record<string, string>;
    for (const key of ['requestId', 'httpMethod', 'resourcePath', 'status', 'responseLatency', 'sourceIp', 'errorMessage']) {
      assert.ok(key in parsed, `access log lacks ${key}`);
    }
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  it('has no CORS by default (the UI is same-origin) and preflight on the data routes when origins are set', () => {
    assert.ok(!Object.keys(methods(template)).some((route) => route.startsWith('OPTIONS')));
    const withCors = synth({ corsAllowOrigins: 'https://console.example.com' }).meteringTemplate;
    const all = methods(withCors);
    assert.deepEqual(
      Object.keys(all).filter((route) => route.startsWith('OPTIONS')).sort(),
      ['OPTIONS /bedrock/chat', 'OPTIONS /v1/limits/me', 'OPTIONS /v1/limits/{tenant_id}', 'OPTIONS /v1/usage', 'OPTIONS /v1/usage/me', 'OPTIONS /v1/usage/{tenant_id}'],
    );
    assert.ok(JSON.stringify(all['OPTIONS /bedrock/chat']).includes("'https://console.example.com'"));
    for (const responseType of ['UNAUTHORIZED', 'ACCESS_DENIED', 'THROTTLED', 'REQUEST_TOO_LARGE', 'INTEGRATION_TIMEOUT', 'DEFAULT_4XX', 'DEFAULT_5XX']) {
      withCors.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
        ResponseType: responseType,
        ResponseParameters: {
          'gatewayresponse.header.Content-Type': "'application/json'",
          'gatewayresponse.header.Access-Control-Allow-Origin': "'https://console.example.com'",
        },
      });
    }
  });

  it("answers API Gateway's own errors in the project's shape {error: {type, message}}, as JSON", () => {
    const expected: [string, string | undefined, string][] = [
      ['UNAUTHORIZED', '401', 'authentication_error'],
      ['ACCESS_DENIED', '403', 'permission_error'],
      ['THROTTLED', '429', 'rate_limit_error'],
      ['REQUEST_TOO_LARGE', '413', 'request_too_large'],
      ['INTEGRATION_TIMEOUT', '504', 'timeout_error'],
      ['DEFAULT_4XX', undefined, 'invalid_request_error'],
      ['DEFAULT_5XX', undefined, 'api_error'],
    ];
    template.resourceCountIs('AWS::ApiGateway::GatewayResponse', expected.length);
    const restApi = logicalIdOf(template, 'AWS::ApiGateway::RestApi', 'ApiRestApi');
    for (const [responseType, statusCode, errorType] of expected) {
      const body = `{"error":{"type":"${errorType}","message":$context.error.messageString}}`;
      template.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
        RestApiId: { Ref: restApi },
        ResponseType: responseType,
        StatusCode: statusCode ?? Match.absent(),
        ResponseParameters: {
          'gatewayresponse.header.Content-Type': "'application/json'",
          'gatewayresponse.header.Access-Control-Allow-Origin': Match.absent(),
        },
        ResponseTemplates: { 'application/json': body },
      });
      // What a client receives: API Gateway puts its message in, already quoted (and escaped) as a JSON string.
      const answered = body.replace('$context.error.messageString', JSON.stringify('Say "hi" \\ later'));
      assert.deepEqual(JSON.parse(answered), { error: { type: errorType, message: 'Say "hi" \\ later' } });
    }
  });

  it('has a request validator on the API', () => {
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', {
      ValidateRequestBody: true,
      ValidateRequestParameters: true,
    });
  });
});

describe('outputs', () => {
  it('has the exact names the scripts read', () => {
    template.hasOutput('UserPoolId', { Value: { Ref: logicalIdOf(template, 'AWS::Cognito::UserPool', 'AuthUserPool') } });
    template.hasOutput('UserPoolClientId', {
      Value: { Ref: logicalIdOf(template, 'AWS::Cognito::UserPoolClient', 'AuthUserPoolAppClient') },
    });
    template.hasOutput('UsageTableName', { Value: { Ref: logicalIdOf(template, 'AWS::DynamoDB::Table', 'UsageTable') } });
    template.hasOutput('ChatLogGroupName', { Value: { Ref: logicalIdOf(template, 'AWS::Logs::LogGroup', 'ChatApiLogGroup') } });
    for (const name of ['UiUrl', 'ChatFunctionName', 'UsageFunctionName', 'ApiAccessLogGroupName', 'BedrockModelId', 'ClaudeProxyUrl']) {
      template.hasOutput(name, {});
    }
  });

  it('gives the API URL without a trailing slash', () => {
    const output = template.findOutputs('ApiGatewayUrl').ApiGatewayUrl as { Value: { 'Fn::Join': [string, unknown[]] } };
    const parts = output.Value['Fn::Join'][1];
    assert.deepEqual(parts[0], 'https://');
    assert.deepEqual(parts[1], { Ref: logicalIdOf(template, 'AWS::ApiGateway::RestApi', 'ApiRestApi') });
    assert.equal(parts[2], `.execute-api.${TEST_REGION}.`);
    assert.deepEqual(parts[3], { Ref: 'AWS::URLSuffix' });
    assert.equal(parts[parts.length - 1], '/prod');
  });
});
