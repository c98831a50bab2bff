/**
 * Example Athena (Trino) queries over the exported usage lines, installed as named queries of the
 * `bedrock-metering-workgroup` workgroup and quoted by the README. Each filters on the `year`/`month`/`day`
 * partition keys first, so Athena reads only the days asked for (partition projection, no crawler).
 *
 * `"timestamp"` is quoted: it is a reserved word in Athena. The export writes one Parquet file per day and
 * runs at 01:00 UTC for the previous day, so "yesterday" is the most recent complete day.
 */

export const GLUE_DATABASE_NAME = 'bedrock_metering_db';
export const GLUE_TABLE_NAME = 'token_usage_logs';
const TABLE = `${GLUE_DATABASE_NAME}.${GLUE_TABLE_NAME}`;

export interface ExampleQuery {
  /** Stable identifier (also the construct id of the named query). */
  readonly id: string;
  /** The named query's name in the Athena console. */
  readonly name: string;
  readonly description: string;
  readonly sql: string;
}

/** Partition filter: the days from `days` days ago up to today (UTC), as strings like the partition keys. */
function lastDays(days: number): string {
  return `concat(year, '-', month, '-', day) >= date_format(current_date - interval '${days}' day, '%Y-%m-%d')`;
}

/** Partition filter: exactly yesterday (UTC). */
const YESTERDAY = [
  `year = date_format(current_date - interval '1' day, '%Y')`,
  `  AND month = date_format(current_date - interval '1' day, '%m')`,
  `  AND day = date_format(current_date - interval '1' day, '%d')`,
].join('\n');

export const TENANTS_OF_A_DAY: ExampleQuery = {
  id: 'TenantsOfADay',
  name: 'tenants-of-a-day',
  description: 'Tenants that used the API yesterday (UTC), with requests and tokens',
  sql: `SELECT tenant_id,
       count(*) AS requests,
       count(DISTINCT user_id) AS users,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens
FROM ${TABLE}
WHERE ${YESTERDAY}
GROUP BY tenant_id
ORDER BY total_tokens DESC`,
};

export const MODELS_USED: ExampleQuery = {
  id: 'ModelsUsed',
  name: 'models-used',
  description: 'Models used over the last 30 days: requests, tenants, tokens and latency',
  sql: `SELECT model_id,
       count(*) AS requests,
       count(DISTINCT tenant_id) AS tenants,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens,
       round(avg(latency_ms)) AS avg_latency_ms,
       approx_percentile(latency_ms, 0.95) AS p95_latency_ms
FROM ${TABLE}
WHERE ${lastDays(30)}
GROUP BY model_id
ORDER BY total_tokens DESC`,
};

export const DAILY_USAGE_PER_TENANT: ExampleQuery = {
  id: 'DailyUsagePerTenant',
  name: 'daily-usage-per-tenant',
  description: 'Tokens per tenant and day (UTC) over the last 30 days',
  sql: `SELECT date(from_iso8601_timestamp("timestamp")) AS usage_date,
       tenant_id,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens
FROM ${TABLE}
WHERE ${lastDays(30)}
GROUP BY date(from_iso8601_timestamp("timestamp")), tenant_id
ORDER BY usage_date, tenant_id`,
};

export const HOURLY_PATTERN_PER_TENANT: ExampleQuery = {
  id: 'HourlyPatternPerTenant',
  name: 'hourly-pattern-per-tenant',
  description: 'When each tenant calls the API: requests and tokens per hour of the day (UTC), last 7 days',
  sql: `SELECT tenant_id,
       extract(hour from from_iso8601_timestamp("timestamp")) AS hour_utc,
       count(*) AS requests,
       sum(total_tokens) AS total_tokens
FROM ${TABLE}
WHERE ${lastDays(7)}
GROUP BY tenant_id, extract(hour from from_iso8601_timestamp("timestamp"))
ORDER BY tenant_id, hour_utc`,
};

export const COST_PER_TENANT_PER_MONTH: ExampleQuery = {
  id: 'CostPerTenantPerMonth',
  name: 'cost-per-tenant-per-month',
  description:
    "Estimated Bedrock cost per tenant and month this year, from each row's cost_usd (priced at export by pricing.json, the usage API's table), and the requests the usage API's counters may lack (counter_outcome failed or unknown)",
  sql: `SELECT date_format(date_trunc('month', from_iso8601_timestamp("timestamp")), '%Y-%m') AS billing_month,
       tenant_id,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
       sum(cache_read_input_tokens) AS cache_read_input_tokens,
       round(sum(cost_usd), 6) AS estimated_cost_usd,
       array_agg(DISTINCT model_id) FILTER (WHERE cost_usd IS NULL) AS models_without_price,
       count(*) FILTER (WHERE counter_outcome IN ('failed', 'unknown')) AS requests_not_in_counters
FROM ${TABLE}
WHERE year = date_format(current_date, '%Y')
GROUP BY 1, 2
ORDER BY billing_month, estimated_cost_usd DESC`,
};

/** In the order the README presents them. */
export const EXAMPLE_QUERIES: readonly ExampleQuery[] = [
  TENANTS_OF_A_DAY,
  MODELS_USED,
  DAILY_USAGE_PER_TENANT,
  HOURLY_PATTERN_PER_TENANT,
  COST_PER_TENANT_PER_MONTH,
];
