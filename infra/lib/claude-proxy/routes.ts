/**
 * The key-authenticated routes of the Claude proxy for a gateway-key holder's own data
 * (crates/claude-proxy/src/key_holder.rs): `GET /v1/gateway-key/<path>`, no authorizer (the function checks
 * the key, as on /v1/messages), streamed like every route of that function.
 *
 * Why not on `GET /v1/usage/me` itself: there the Cognito authorizer refuses a request without an IdToken
 * before any function runs, and one method has one authorizer.
 *
 * Adding one: its path here and in `KeyHolderRoute::PATHS` (the CDK test
 * compares the two), its operation in infra/openapi/openapi.json.
 */
import * as apigw from 'aws-cdk-lib/aws-apigateway';

export const KEY_HOLDER_PREFIX = 'gateway-key';
export const KEY_HOLDER_PATHS: readonly string[] = ['usage/me', 'limits/me'];

/** Adds `GET /v1/gateway-key/<path>` for every path under `v1`; returns the methods. */
export function addKeyHolderRoutes(v1: apigw.IResource, integration: apigw.Integration): apigw.Method[] {
  const prefix = v1.getResource(KEY_HOLDER_PREFIX) ?? v1.addResource(KEY_HOLDER_PREFIX);
  return KEY_HOLDER_PATHS.map((path) => {
    let resource = prefix;
    for (const part of path.split('/')) {
      resource = resource.getResource(part) ?? resource.addResource(part);
    }
    return resource.addMethod('GET', integration);
  });
}
