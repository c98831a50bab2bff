//! A Messages API body made acceptable to Bedrock's `InvokeModel` for Anthropic models:
//! `anthropic_version: bedrock-2023-05-31` instead of `model` and `stream`; only the fields Bedrock knows
//! (anything else, such as `metadata` or `service_tier`, is refused by Bedrock as an extraneous key);
//! `anthropic-beta` header values that Bedrock accepts move into `anthropic_beta`; messages whose content
//! is empty are dropped (Bedrock rejects them), except a final assistant message (a prefill).
//! `cache_control` and everything inside the kept fields pass through untouched.

use serde_json::{Map, Value};

pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Top-level fields Bedrock's Anthropic `InvokeModel` body accepts (besides `anthropic_version` and
/// `anthropic_beta`, which the proxy sets).
const BEDROCK_FIELDS: [&str; 10] = [
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
];

/// The body for Bedrock and what was left out of it (for the debug log).
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockBody {
    pub body: Value,
    pub dropped_fields: Vec<String>,
    pub dropped_messages: Vec<usize>,
    pub dropped_betas: Vec<String>,
}

impl BedrockBody {
    pub fn log_dropped(&self, request_id: &str) {
        if !(self.dropped_fields.is_empty() && self.dropped_messages.is_empty() && self.dropped_betas.is_empty()) {
            tracing::debug!(
                request_id,
                dropped_fields = ?self.dropped_fields,
                dropped_empty_messages = ?self.dropped_messages,
                dropped_betas = ?self.dropped_betas,
                "left out of the Bedrock request"
            );
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

fn is_empty_content(content: &Value) -> bool {
    match content {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        Value::Array(blocks) => blocks.is_empty(),
        _ => false,
    }
}

/// Empty text blocks are refused too; they go, and a message left with no blocks is then empty.
fn drop_empty_text_blocks(message: &mut Value) {
    if let Some(blocks) = message.get_mut("content").and_then(Value::as_array_mut) {
        blocks.retain(|block| !(block["type"] == "text" && block["text"].as_str().is_some_and(|t| t.trim().is_empty())));
    }
}

/// `anthropic_beta` for Bedrock: the requested betas (header values, comma-separated) it accepts.
fn betas_for_bedrock(requested: &[String], allowed: &[String]) -> (Vec<String>, Vec<String>) {
    requested
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|beta| !beta.is_empty())
        .map(str::to_owned)
        .partition(|beta| allowed.iter().any(|ok| ok == beta))
}

pub fn to_bedrock_body(request: &Map<String, Value>, requested_betas: &[String], allowed_betas: &[String]) -> BedrockBody {
    let mut body = Map::new();
    body.insert("anthropic_version".into(), Value::String(BEDROCK_ANTHROPIC_VERSION.into()));
    let mut dropped_fields = Vec::new();
    for (name, value) in request {
        if BEDROCK_FIELDS.contains(&name.as_str()) {
            body.insert(name.clone(), value.clone());
        } else if name != "anthropic_version" {
            dropped_fields.push(name.clone());
        }
    }
    let mut dropped_messages = Vec::new();
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        let last = messages.len().saturating_sub(1);
        let mut kept = Vec::with_capacity(messages.len());
        for (index, mut message) in std::mem::take(messages).into_iter().enumerate() {
            let is_final_assistant = index == last && message["role"] == "assistant";
            drop_empty_text_blocks(&mut message);
            if is_empty_content(&message["content"]) && !is_final_assistant {
                dropped_messages.push(index);
            } else {
                kept.push(message);
            }
        }
        *messages = kept;
    }
    let (betas, dropped_betas) = betas_for_bedrock(requested_betas, allowed_betas);
    if !betas.is_empty() {
        body.insert("anthropic_beta".into(), Value::Array(betas.into_iter().map(Value::String).collect()));
    }
    BedrockBody { body: Value::Object(body), dropped_fields, dropped_messages, dropped_betas }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(request: Value, betas: &[&str]) -> BedrockBody {
        let betas: Vec<String> = betas.iter().map(|b| (*b).to_owned()).collect();
        let allowed = vec!["interleaved-thinking-2025-05-14".to_owned()];
        to_bedrock_body(request.as_object().unwrap(), &betas, &allowed)
    }

    #[test]
    fn model_stream_and_unknown_fields_go_and_the_bedrock_version_comes() {
        let converted = convert(
            json!({"model": "claude-x", "stream": true, "max_tokens": 10, "metadata": {"user_id": "u"},
                   "service_tier": "auto", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        );
        assert_eq!(converted.body["anthropic_version"], BEDROCK_ANTHROPIC_VERSION);
        assert_eq!(converted.body["max_tokens"], 10);
        assert_eq!(converted.body["temperature"], 0.5);
        for gone in ["model", "stream", "metadata", "service_tier"] {
            assert!(converted.body.get(gone).is_none(), "{gone} must not reach Bedrock");
        }
        let mut dropped = converted.dropped_fields.clone();
        dropped.sort();
        assert_eq!(dropped, ["metadata", "model", "service_tier", "stream"]);
    }

    #[test]
    fn empty_messages_go_except_a_final_assistant_prefill() {
        let converted = convert(
            json!({"max_tokens": 5, "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": []},
                {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": " "}]},
                {"role": "assistant", "content": ""}
            ]}),
            &[],
        );
        assert_eq!(converted.dropped_messages, [1, 2, 3]);
        let messages = converted.body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"], json!([{"type": "text", "text": "second"}]));
        assert_eq!(messages[2], json!({"role": "assistant", "content": ""}));
    }

    #[test]
    fn cache_control_passes_through_untouched() {
        let system = json!([{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]);
        let converted = convert(json!({"max_tokens": 5, "system": system.clone(), "messages": [{"role": "user", "content": "q"}]}), &[]);
        assert_eq!(converted.body["system"], system);
    }

    #[test]
    fn only_betas_bedrock_accepts_are_sent() {
        let converted = convert(
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}),
            &["claude-code-20250219,interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"],
        );
        assert_eq!(converted.body["anthropic_beta"], json!(["interleaved-thinking-2025-05-14"]));
        assert_eq!(converted.dropped_betas, ["claude-code-20250219", "fine-grained-tool-streaming-2025-05-14"]);
        let none = convert(json!({"max_tokens": 5, "messages": []}), &[]);
        assert!(none.body.get("anthropic_beta").is_none());
    }
}
