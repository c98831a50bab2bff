-- The monthly statement of bedrock_metering_db.token_usage_logs: per tenant, model and request type, the
-- requests, tokens and estimated cost (each row's cost_usd, priced at export by pricing.json) of one UTC month,
-- and the counter outcomes of its rows. Installed as the Athena named query `monthly-statement`
-- (infra/lib/analytics/statement-query.ts) and run by scripts/statement in DuckDB locally, unchanged.
-- Parameters, in order: year 'YYYY', month 'MM', tenant id ('' for every tenant), the same tenant id again.
SELECT tenant_id,
       model_id,
       request_type,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
       sum(cache_read_input_tokens) AS cache_read_input_tokens,
       sum(total_tokens) AS total_tokens,
       sum(cost_usd) AS estimated_cost_usd,
       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_requests,
       count(*) FILTER (WHERE counter_outcome = 'applied') AS counter_applied,
       count(*) FILTER (WHERE counter_outcome = 'failed') AS counter_failed,
       count(*) FILTER (WHERE counter_outcome = 'unknown') AS counter_unknown,
       count(*) FILTER (WHERE counter_outcome IS NULL) AS counter_not_recorded
FROM bedrock_metering_db.token_usage_logs
WHERE year = ?
  AND month = ?
  AND (? = '' OR tenant_id = ?)
GROUP BY tenant_id, model_id, request_type
ORDER BY tenant_id, model_id, request_type
