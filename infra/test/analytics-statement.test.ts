/**
 * The monthly statement's SQL is one text: scripts/lib/statement.sql, run by scripts/statement (DuckDB, Athena)
 * and installed as the workgroup's named query `monthly-statement`.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { MONTHLY_STATEMENT, STATEMENT_SQL_FILE } from '../lib/analytics/statement-query';
import { synth } from './helpers';

describe('monthly-statement named query', () => {
  it('is the text of scripts/lib/statement.sql, in the workgroup, over the Glue database', () => {
    const template = synth().analyticsTemplate;
    const queries = Object.values(template.findResources('AWS::Athena::NamedQuery')).filter(
      (resource) => (resource.Properties as { Name: string }).Name === 'monthly-statement',
    );
    assert.equal(queries.length, 1);
    const properties = queries[0].Properties as { QueryString: string; Database: string; WorkGroup: unknown };
    const file = fs.readFileSync(STATEMENT_SQL_FILE, 'utf8');
    const withoutComments = file.split('\n').filter((line) => !line.startsWith('--')).join('\n').trim();
    assert.equal(properties.QueryString, withoutComments);
    assert.equal(properties.Database, 'bedrock_metering_db');
    assert.ok(JSON.stringify(properties.WorkGroup).includes('Workgroup'));
  });

  it('groups by tenant, model and request type, sums cost_usd, and takes the month and tenant as parameters', () => {
    const sql = MONTHLY_STATEMENT.sql;
    assert.match(sql, /sum\(cost_usd\) AS estimated_cost_usd/);
    assert.match(sql, /GROUP BY tenant_id, model_id, request_type/);
    assert.equal((sql.match(/\?/g) ?? []).length, 4, 'year, month, tenant, tenant');
    assert.match(sql, /counter_outcome = 'unknown'/);
  });
});
