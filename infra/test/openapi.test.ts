/**
 * The REST API's routes (resources and methods in the synthesized template) and infra/openapi/openapi.json
 * agree, both ways: a route added to either side only fails. CORS preflights (OPTIONS, answered by API
 * Gateway itself) are not part of the document; `{proxy+}` and the document's path parameters compare by
 * position only.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { INFRA_DIR, methods, synth } from './helpers';

const HTTP_METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head'];

function normalized(route: string): string {
  return route.replace(/\{[^}]+\}/g, '{}');
}

describe('OpenAPI document', () => {
  it('lists exactly the methods API Gateway routes', () => {
    const spec = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'openapi', 'openapi.json'), 'utf8')) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const documented = new Set<string>();
    for (const [route, item] of Object.entries(spec.paths)) {
      for (const method of Object.keys(item).filter((key) => HTTP_METHODS.includes(key))) {
        documented.add(`${method.toUpperCase()} ${normalized(route)}`);
      }
    }
    for (const cors of [{}, { corsAllowOrigins: 'https://app.example.com' }]) {
      const deployed = new Set(
        Object.keys(methods(synth(cors).meteringTemplate))
          .filter((key) => !key.startsWith('OPTIONS '))
          .map(normalized),
      );
      assert.deepEqual([...deployed].filter((key) => !documented.has(key)).sort(), [], 'routed but not documented');
      assert.deepEqual([...documented].filter((key) => !deployed.has(key)).sort(), [], 'documented but not routed');
    }
  });
});
