/**
 * The monthly statement's SQL (scripts/lib/statement.sql), installed as the Athena named query
 * `monthly-statement`: the very text scripts/statement runs in DuckDB locally and in Athena with --aws
 * (parameters `?`: year, month, tenant or '', the same tenant again; Athena execution parameters).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExampleQuery } from './example-queries';

export const STATEMENT_SQL_FILE = path.join(__dirname, '..', '..', '..', 'scripts', 'lib', 'statement.sql');

/** The file without its leading `--` comment lines (as scripts/lib/statement.py `statement_sql`). */
export function statementSql(file: string = STATEMENT_SQL_FILE): string {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => !line.startsWith('--'))
    .join('\n')
    .trim();
}

export const MONTHLY_STATEMENT: ExampleQuery = {
  id: 'MonthlyStatement',
  name: 'monthly-statement',
  description:
    "Monthly statement per tenant, model and request type: requests, tokens, estimated cost (cost_usd) and counter outcomes. Execution parameters: 'YYYY', 'MM', tenant or '', the tenant again",
  sql: statementSql(),
};
