/**
 * Which Bedrock model or inference profile serves each Anthropic model when the Claude proxy falls back.
 *
 * The stack always passes the map to the function (`BEDROCK_MODEL_MAP`) and grants `bedrock:InvokeModel*`
 * on exactly the ids in it, so the two never disagree. The default is the crate's own default
 * (`DEFAULT_MODEL_MAP` in crates/claude-proxy/src/config.rs; test/claude-proxy.test.ts checks they match):
 * US cross-region profiles. Elsewhere, set the `claudeProxyModelMap` context key (a JSON object).
 */
export const DEFAULT_CLAUDE_PROXY_MODEL_MAP: Readonly<Record<string, string>> = {
  'claude-opus-4-5-20251101': 'us.anthropic.claude-opus-4-5-20251101-v1:0',
  'claude-opus-4-5': 'us.anthropic.claude-opus-4-5-20251101-v1:0',
  'claude-sonnet-4-5-20250929': 'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
  'claude-sonnet-4-5': 'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
  'claude-haiku-4-5-20251001': 'us.anthropic.claude-haiku-4-5-20251001-v1:0',
  'claude-haiku-4-5': 'us.anthropic.claude-haiku-4-5-20251001-v1:0',
  'claude-opus-4-1-20250805': 'us.anthropic.claude-opus-4-1-20250805-v1:0',
  'claude-opus-4-1': 'us.anthropic.claude-opus-4-1-20250805-v1:0',
  'claude-opus-4-20250514': 'us.anthropic.claude-opus-4-20250514-v1:0',
  'claude-sonnet-4-20250514': 'us.anthropic.claude-sonnet-4-20250514-v1:0',
  'claude-sonnet-4-0': 'us.anthropic.claude-sonnet-4-20250514-v1:0',
  'claude-3-7-sonnet-20250219': 'us.anthropic.claude-3-7-sonnet-20250219-v1:0',
  'claude-3-5-haiku-20241022': 'us.anthropic.claude-3-5-haiku-20241022-v1:0',
  'claude-3-haiku-20240307': 'us.anthropic.claude-3-haiku-20240307-v1:0',
};

/** The distinct Bedrock ids of a map, sorted: what IAM must allow. */
export function mappedBedrockModelIds(map: Readonly<Record<string, string>>): string[] {
  return [...new Set(Object.values(map))].sort();
}
