/**
 * The public REST API: Cognito-authorized chat, usage and gateway-key routes, the unauthenticated usage UI,
 * the Claude-compatible `/v1/messages` (gateway key checked by its function, answers streamed), stage
 * throttling and JSON access logs. Every function is a Lambda proxy integration: it owns body validation
 * and error bodies, so API Gateway only checks the token and the declared request parameters.
 */
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ApiConfig } from '../config';
import { addKeyHolderRoutes } from '../claude-proxy/routes';
import { addErrorResponses } from './error-responses';

export interface MeteringApiProps {
  readonly config: ApiConfig;
  readonly userPool: cognito.IUserPool;
  readonly chatFunction: lambda.IFunction;
  readonly usageFunction: lambda.IFunction;
  /** The Claude proxy (crates/claude-proxy): /v1/messages, /v1/messages/count_tokens, /v1/keys. */
  readonly claudeProxyFunction: lambda.IFunction;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export class MeteringApi extends Construct {
  public readonly restApi: apigw.RestApi;
  public readonly accessLogGroup: logs.LogGroup;
  /** The stage's base URL without a trailing slash: `${url}/bedrock/chat`. */
  public readonly url: string;

  constructor(scope: Construct, id: string, props: MeteringApiProps) {
    super(scope, id);
    const { config } = props;

    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });

    this.restApi = new apigw.RestApi(this, 'RestApi', {
      restApiName: `${Stack.of(this).stackName}-api`,
      description: 'bedrock-metering: per-tenant metered access to Amazon Bedrock',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      // Execution logs (errors only) need API Gateway's account-wide CloudWatch role. It is kept on destroy,
      // as the CDK does by default, because other APIs of the account may log through it.
      cloudWatchRole: true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      deployOptions: {
        stageName: config.stageName,
        throttlingRateLimit: config.throttlingRateLimit,
        throttlingBurstLimit: config.throttlingBurstLimit,
        loggingLevel: apigw.MethodLoggingLevel.ERROR,
        // Never log request or response bodies: they hold the tenants' prompts and answers.
        dataTraceEnabled: false,
        metricsEnabled: false,
        accessLogDestination: new apigw.LogGroupLogDestination(this.accessLogGroup),
        accessLogFormat: accessLogFormat(),
      },
    });
    const cloudWatchRole = this.restApi.node.tryFindChild('CloudWatchRole');
    if (cloudWatchRole) {
      Validations.of(cloudWatchRole).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason: 'The AWS-documented policy of the account-wide role API Gateway writes execution logs with.',
      });
    }

    const validator = this.restApi.addRequestValidator('ParametersValidator', {
      requestValidatorName: 'parameters-and-body',
      validateRequestParameters: true,
      // Only methods with a request model get their body checked; the functions return precise 400s.
      validateRequestBody: true,
    });

    const authorizer = new apigw.CognitoUserPoolsAuthorizer(this, 'Authorizer', {
      cognitoUserPools: [props.userPool],
      // IdToken in `Authorization` (with or without `Bearer `): it carries custom:tenant_id and cognito:groups.
      identitySource: apigw.IdentitySource.header('Authorization'),
      resultsCacheTtl: Duration.minutes(5),
    });
    const authorized: apigw.MethodOptions = {
      authorizer,
      authorizationType: apigw.AuthorizationType.COGNITO,
      requestValidator: validator,
      requestParameters: { 'method.request.header.Authorization': true },
    };
    const cors: apigw.CorsOptions | undefined =
      config.corsAllowOrigins.length === 0
        ? undefined
        : {
            allowOrigins: [...config.corsAllowOrigins],
            allowMethods: ['GET', 'POST', 'OPTIONS'],
            allowHeaders: ['Authorization', 'Content-Type'],
            maxAge: Duration.hours(1),
          };

    // allowTestInvoke: false — no extra permission for the console's test-invoke on any stage.
    const chat = new apigw.LambdaIntegration(props.chatFunction, { allowTestInvoke: false });
    const usage = new apigw.LambdaIntegration(props.usageFunction, { allowTestInvoke: false });

    // POST /bedrock/chat
    const chatResource = this.restApi.root.addResource('bedrock').addResource('chat', withCors(cors));
    chatResource.addMethod('POST', chat, authorized);

    // GET /v1/usage (admin: all tenants), /v1/usage/me (own tenant), /v1/usage/{tenant_id} (admin or own)
    const v1 = this.restApi.root.addResource('v1');
    const usageResource = v1.addResource('usage', withCors(cors));
    usageResource.addMethod('GET', usage, authorized);
    usageResource.addResource('me', withCors(cors)).addMethod('GET', usage, authorized);
    usageResource.addResource('{tenant_id}', withCors(cors)).addMethod('GET', usage, {
      ...authorized,
      requestParameters: { ...authorized.requestParameters, 'method.request.path.tenant_id': true },
    });

    // GET /v1/limits/me (own tenant), GET|PUT|DELETE /v1/limits/{tenant_id} (admins): the usage function.
    const limitsResource = v1.addResource('limits');
    limitsResource.addResource('me', withCors(cors)).addMethod('GET', usage, authorized);
    const tenantLimits = limitsResource.addResource('{tenant_id}', withCors(cors));
    for (const method of ['GET', 'PUT', 'DELETE']) {
      tenantLimits.addMethod(method, usage, {
        ...authorized,
        requestParameters: { ...authorized.requestParameters, 'method.request.path.tenant_id': true },
      });
    }

    // The Claude proxy answers in a stream (server-sent events while the model writes): API Gateway's STREAM
    // mode calls it with InvokeWithResponseStream (the `2021-11-15/.../response-streaming-invocations` URI,
    // which the CDK picks for STREAM), which also lifts the 29 s and 10 MB limits of a buffered answer. The
    // function is built with run_with_streaming_response, so every route to it must stream, /v1/keys too.
    const claude = new apigw.LambdaIntegration(props.claudeProxyFunction, {
      allowTestInvoke: false,
      responseTransferMode: apigw.ResponseTransferMode.STREAM,
      timeout: Duration.minutes(15),
    });
    // POST /v1/messages, /v1/messages/count_tokens: Anthropic clients send the gateway key (x-api-key,
    // Authorization: Bearer or x-gateway-key), never a Cognito token; the function checks it on every request.
    // No body model either: the function answers malformed bodies with Anthropic-shaped 400s.
    const messages = v1.addResource('messages');
    const keyAuthenticated = [
      messages.addMethod('POST', claude),
      messages.addResource('count_tokens').addMethod('POST', claude),
      // GET /v1/gateway-key/usage/me: the key holder's own usage (lib/claude-proxy/routes.ts).
      ...addKeyHolderRoutes(v1, claude),
    ];
    for (const method of keyAuthenticated) {
      const reason = 'Authenticated by the gateway key (bmk_...) inside the Claude proxy function on every request, as the Anthropic API does; Anthropic clients (and Claude Code\'s status line) cannot send a Cognito token.';
      Validations.of(method).acknowledge({ id: 'AwsSolutions-APIG4', reason });
      Validations.of(method).acknowledge({ id: 'AwsSolutions-COG4', reason });
    }
    // POST /v1/keys (create a key for the signed-in user), GET /v1/keys (theirs), DELETE /v1/keys/{id}.
    const keys = v1.addResource('keys');
    keys.addMethod('POST', claude, authorized);
    keys.addMethod('GET', claude, authorized);
    keys.addResource('{id}').addMethod('DELETE', claude, {
      ...authorized,
      requestParameters: { ...authorized.requestParameters, 'method.request.path.id': true },
    });

    // GET /ui, /ui/{proxy+}: the static usage UI, served by the usage function. It holds no data: the page
    // signs in with Cognito in the browser and calls /v1/usage with the token, from the same origin.
    const uiResource = this.restApi.root.addResource('ui');
    const uiMethods = [
      uiResource.addMethod('GET', usage),
      uiResource.addResource('{proxy+}').addMethod('GET', usage, {
        requestValidator: validator,
        requestParameters: { 'method.request.path.proxy': true },
      }),
    ];
    for (const method of uiMethods) {
      Validations.of(method).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason: 'The UI is public static content (HTML, JS); every data call it makes goes through the Cognito authorizer.',
      });
      Validations.of(method).acknowledge({
        id: 'AwsSolutions-COG4',
        reason: 'The UI is public static content (HTML, JS); every data call it makes goes through the Cognito authorizer.',
      });
    }
    if (cors) {
      for (const resource of [chatResource, usageResource, ...usageResource.node.children, ...limitsResource.node.children]) {
        const preflight = resource.node.tryFindChild('OPTIONS');
        if (!preflight) continue;
        Validations.of(preflight).acknowledge({
          id: 'AwsSolutions-APIG4',
          reason: 'CORS preflight (OPTIONS) requests carry no credentials by definition; they return headers only.',
        });
        Validations.of(preflight).acknowledge({
          id: 'AwsSolutions-COG4',
          reason: 'CORS preflight (OPTIONS) requests carry no credentials by definition; they return headers only.',
        });
      }
    }
    // API Gateway's own errors in the project's shape. Browsers must see the CORS header on them too (401 of
    // the authorizer, 429); a gateway response header is a constant, so that works for a single origin only.
    addErrorResponses(this.restApi, config.corsAllowOrigins.length === 1 ? config.corsAllowOrigins[0] : undefined);

    Validations.of(this.restApi.deploymentStage).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason:
        'No WAF web ACL: it costs a monthly fee even when idle; the stage is throttled, every data route needs a ' +
        'Cognito token, and a web ACL can be associated later without code changes.',
    });

    this.url = `https://${this.restApi.restApiId}.execute-api.${Stack.of(this).region}.${Stack.of(this).urlSuffix}/${config.stageName}`;
  }
}

function withCors(cors: apigw.CorsOptions | undefined): apigw.ResourceOptions {
  return cors ? { defaultCorsPreflightOptions: cors } : {};
}

/**
 * One JSON object per request; never the body, never the token. Every value is quoted (API Gateway writes
 * `-` for a missing number) except `$context.error.messageString`, which API Gateway quotes itself.
 */
export function accessLogFormat(): apigw.AccessLogFormat {
  const field = apigw.AccessLogField;
  const quoted: Record<string, string> = {
    requestId: field.contextRequestId(),
    extendedRequestId: field.contextExtendedRequestId(),
    requestTime: field.contextRequestTime(),
    requestTimeEpoch: field.contextRequestTimeEpoch(),
    httpMethod: field.contextHttpMethod(),
    resourcePath: field.contextResourcePath(),
    path: field.contextPath(),
    status: field.contextStatus(),
    protocol: field.contextProtocol(),
    responseLength: field.contextResponseLength(),
    responseLatency: field.contextResponseLatency(),
    integrationLatency: field.contextIntegrationLatency(),
    integrationStatus: field.contextIntegrationStatus(),
    sourceIp: field.contextIdentitySourceIp(),
    userAgent: field.contextIdentityUserAgent(),
    userSub: field.contextAuthorizerClaims('sub'),
    authorizerError: field.contextAuthorizerError(),
  };
  const members = Object.entries(quoted).map(([name, value]) => `"${name}":"${value}"`);
  members.push(`"errorMessage":${field.contextErrorMessageString()}`);
  return apigw.AccessLogFormat.custom(`{${members.join(',')}}`);
}
