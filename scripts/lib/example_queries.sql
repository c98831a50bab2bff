-- The example queries of bedrock_metering_db.token_usage_logs, exactly as the Athena workgroup's named
-- queries (infra/lib/analytics/example-queries.ts; tests/e2e/test_export.py fails when the two drift apart).
-- They run unchanged on the local export: scripts/query --example NAME (or --example all).
-- Each query starts at a `-- name:` line, followed by its description, and ends with `;`.

-- name: tenants-of-a-day
-- Tenants that used the API yesterday (UTC), with requests and tokens
SELECT tenant_id,
       count(*) AS requests,
       count(DISTINCT user_id) AS users,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens
FROM bedrock_metering_db.token_usage_logs
WHERE year = date_format(current_date - interval '1' day, '%Y')
  AND month = date_format(current_date - interval '1' day, '%m')
  AND day = date_format(current_date - interval '1' day, '%d')
GROUP BY tenant_id
ORDER BY total_tokens DESC;

-- name: models-used
-- Models used over the last 30 days: requests, tenants, tokens and latency
SELECT model_id,
       count(*) AS requests,
       count(DISTINCT tenant_id) AS tenants,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens,
       round(avg(latency_ms)) AS avg_latency_ms,
       approx_percentile(latency_ms, 0.95) AS p95_latency_ms
FROM bedrock_metering_db.token_usage_logs
WHERE concat(year, '-', month, '-', day) >= date_format(current_date - interval '30' day, '%Y-%m-%d')
GROUP BY model_id
ORDER BY total_tokens DESC;

-- name: daily-usage-per-tenant
-- Tokens per tenant and day (UTC) over the last 30 days
SELECT date(from_iso8601_timestamp("timestamp")) AS usage_date,
       tenant_id,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(total_tokens) AS total_tokens
FROM bedrock_metering_db.token_usage_logs
WHERE concat(year, '-', month, '-', day) >= date_format(current_date - interval '30' day, '%Y-%m-%d')
GROUP BY date(from_iso8601_timestamp("timestamp")), tenant_id
ORDER BY usage_date, tenant_id;

-- name: hourly-pattern-per-tenant
-- When each tenant calls the API: requests and tokens per hour of the day (UTC), last 7 days
SELECT tenant_id,
       extract(hour from from_iso8601_timestamp("timestamp")) AS hour_utc,
       count(*) AS requests,
       sum(total_tokens) AS total_tokens
FROM bedrock_metering_db.token_usage_logs
WHERE concat(year, '-', month, '-', day) >= date_format(current_date - interval '7' day, '%Y-%m-%d')
GROUP BY tenant_id, extract(hour from from_iso8601_timestamp("timestamp"))
ORDER BY tenant_id, hour_utc;

-- name: cost-per-tenant-per-month
-- Estimated Bedrock cost per tenant and month this year, from each row's cost_usd (priced at export by pricing.json, the usage API's table), and the requests the usage API's counters may lack (counter_outcome failed or unknown)
SELECT date_format(date_trunc('month', from_iso8601_timestamp("timestamp")), '%Y-%m') AS billing_month,
       tenant_id,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
       sum(cache_read_input_tokens) AS cache_read_input_tokens,
       round(sum(cost_usd), 6) AS estimated_cost_usd,
       array_agg(DISTINCT model_id) FILTER (WHERE cost_usd IS NULL) AS models_without_price,
       count(*) FILTER (WHERE counter_outcome IN ('failed', 'unknown')) AS requests_not_in_counters
FROM bedrock_metering_db.token_usage_logs
WHERE year = date_format(current_date, '%Y')
GROUP BY 1, 2
ORDER BY billing_month, estimated_cost_usd DESC;
