/**
 * Synthesizes the app offline the way `cdk synth` does (cdk.json's feature flags), with the placeholder
 * Lambda packages and a fixed region, so no AWS account, credentials or Rust build are needed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp, MeteringApp } from '../lib/app';

export const INFRA_DIR = path.resolve(__dirname, '..');
export const PLACEHOLDER_ASSET_DIR = path.join(INFRA_DIR, 'test', 'placeholder-lambda');
export const TEST_REGION = 'us-east-1';

const cdkJson = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};

export interface SynthesizedApp extends MeteringApp {
  readonly app: App;
  readonly meteringTemplate: Template;
  readonly analyticsTemplate: Template;
}

export function testApp(context: Record<string, unknown> = {}): App {
  return new App({
    context: {
      ...cdkJson.context,
      lambdaAssetDir: PLACEHOLDER_ASSET_DIR,
      region: TEST_REGION,
      ...context,
    },
  });
}

export function synth(context: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = {}): SynthesizedApp {
  const app = testApp(context);
  const built = buildApp(app, env);
  return {
    ...built,
    app,
    meteringTemplate: Template.fromStack(built.metering),
    analyticsTemplate: Template.fromStack(built.analytics),
  };
}

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown>; DependsOn?: unknown; DeletionPolicy?: string }>;

/** The one resource of `type` whose logical id starts with `prefix` (construct path without the hash). */
export function logicalIdOf(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) throw new Error(`expected one ${type} starting with ${prefix}, found ${JSON.stringify(ids)}`);
  return ids[0];
}

export function resourcesOf(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

export interface PolicyStatementJson {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

/** Every statement of the inline policies attached to the role whose logical id starts with `rolePrefix`. */
export function statementsOfRole(template: Template, rolePrefix: string): PolicyStatementJson[] {
  const roleId = logicalIdOf(template, 'AWS::IAM::Role', rolePrefix);
  const policies = Object.values(resourcesOf(template, 'AWS::IAM::Policy')).filter((policy) =>
    JSON.stringify(policy.Properties?.Roles).includes(`"${roleId}"`),
  );
  return policies.flatMap(
    (policy) => (policy.Properties?.PolicyDocument as { Statement: PolicyStatementJson[] }).Statement,
  );
}

export function actionsOf(statement: PolicyStatementJson): string[] {
  return Array.isArray(statement.Action) ? statement.Action : [statement.Action];
}

export function resourcesOfStatement(statement: PolicyStatementJson): unknown[] {
  return Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];
}

/** Full path of every API Gateway resource, by logical id. */
export function resourcePaths(t: Template): Record<string, string> {
  const resources = resourcesOf(t, 'AWS::ApiGateway::Resource');
  const pathOf = (id: string): string => {
    const props = resources[id].Properties as { ParentId: { Ref?: string }; PathPart: string };
    const parent = props.ParentId.Ref && resources[props.ParentId.Ref] ? pathOf(props.ParentId.Ref) : '';
    return `${parent}/${props.PathPart}`;
  };
  return Object.fromEntries(Object.keys(resources).map((id) => [id, pathOf(id)]));
}

export interface MethodJson {
  HttpMethod: string;
  ResourceId: { Ref: string };
  AuthorizationType: string;
  AuthorizerId?: { Ref: string };
  Integration?: { Type: string; Uri: unknown; ResponseTransferMode?: string; TimeoutInMillis?: number };
}

/** Every API Gateway method of the template by route, e.g. `POST /v1/messages`. */
export function methods(t: Template): Record<string, MethodJson> {
  const paths = resourcePaths(t);
  return Object.fromEntries(
    Object.values(resourcesOf(t, 'AWS::ApiGateway::Method')).map((method) => {
      const props = method.Properties as unknown as MethodJson;
      return [`${props.HttpMethod} ${paths[props.ResourceId.Ref]}`, props];
    }),
  );
}
