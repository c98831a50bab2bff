/**
 * `bedrock_metering_db.model_prices`: the usage API's price table (crates/metering-core/pricing.json, the
 * file the export prices every row with), as an Athena view for what-if queries. A view over VALUES needs no
 * object in S3: the table is rebuilt from the file at every deploy.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import * as glue from 'aws-cdk-lib/aws-glue';
import { Construct } from 'constructs';
import { GLUE_DATABASE_NAME } from './example-queries';

export const MODEL_PRICES_TABLE = 'model_prices';
export const PRICING_FILE = path.join(__dirname, '..', '..', '..', 'crates', 'metering-core', 'pricing.json');

const COLUMNS: readonly [string, string][] = [
  ['model_id', 'varchar'],
  ['input_per_1k', 'double'],
  ['output_per_1k', 'double'],
  ['cache_write_per_1k', 'double'],
  ['cache_read_per_1k', 'double'],
  ['geographic_profile_premium', 'double'],
  ['as_of', 'varchar'],
];

interface ModelPrice {
  input_per_1k: number;
  output_per_1k: number;
  cache_write_per_1k?: number;
  cache_read_per_1k?: number;
  geographic_profile_premium?: number;
}

/** The view's SQL: one row per model of the file. */
export function modelPricesSql(pricingFile: string = PRICING_FILE): string {
  const table = JSON.parse(fs.readFileSync(pricingFile, 'utf8')) as { as_of?: string; models: Record<string, ModelPrice> };
  const quote = (text: string) => `'${text.replace(/'/g, "''")}'`;
  const number = (value?: number) => (value === undefined ? 'CAST(NULL AS double)' : `CAST(${value} AS double)`);
  const rows = Object.keys(table.models)
    .sort()
    .map((id) => {
      const p = table.models[id];
      return `(${quote(id)}, ${number(p.input_per_1k)}, ${number(p.output_per_1k)}, ${number(p.cache_write_per_1k)}, ` +
        `${number(p.cache_read_per_1k)}, ${number(p.geographic_profile_premium)}, ${quote(table.as_of ?? '')})`;
    });
  return `SELECT * FROM (VALUES ${rows.join(', ')}) AS prices(${COLUMNS.map(([name]) => name).join(', ')})`;
}

export class ModelPricesView extends Construct {
  public readonly table: glue.CfnTable;

  constructor(scope: Construct, id: string, props: { readonly database: glue.CfnDatabase }) {
    super(scope, id);
    // The Presto view format Athena writes for CREATE VIEW: the SQL and columns, base64, in viewOriginalText.
    const view = {
      originalSql: modelPricesSql(),
      catalog: 'awsdatacatalog',
      schema: GLUE_DATABASE_NAME,
      columns: COLUMNS.map(([name, type]) => ({ name, type })),
    };
    this.table = new glue.CfnTable(this, 'Table', {
      catalogId: Stack.of(this).account,
      databaseName: GLUE_DATABASE_NAME,
      tableInput: {
        name: MODEL_PRICES_TABLE,
        description: 'Model prices of crates/metering-core/pricing.json (USD per 1,000 tokens), the table of cost_usd',
        tableType: 'VIRTUAL_VIEW',
        parameters: { presto_view: 'true', comment: 'Presto View' },
        viewOriginalText: `/* Presto View: ${Buffer.from(JSON.stringify(view)).toString('base64')} */`,
        viewExpandedText: '/* Presto View */',
        storageDescriptor: {
          columns: COLUMNS.map(([name, type]) => ({ name, type: type === 'varchar' ? 'string' : type })),
          serdeInfo: {},
        },
      },
    });
    this.table.addResourceDependency(props.database);
  }
}
