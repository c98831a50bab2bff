//! A Messages API body made acceptable to Bedrock's `InvokeModel` for Anthropic models:
//! `anthropic_version: bedrock-2023-05-31` instead of `model` and `stream`; only the fields Bedrock knows
//! (anything else, such as `metadata` or `service_tier`, is refused by Bedrock as an extraneous key);
//! `anthropic-beta` header values that Bedrock accepts move into `anthropic_beta`; messages whose content
//! is empty are dropped (Bedrock rejects them), except a final assistant message (a prefill).
//! `cache_control` and everything inside the kept fields pass through untouched.
//!
//! Fields and betas stay consistent: a field that needs a beta (`context_management`, `output_config`)
//! goes to Bedrock only together with a beta of its family that Bedrock accepts; otherwise the field and
//! every beta of its family are dropped. Mid-conversation `system` messages (Claude Code sends them) have
//! no place in Bedrock's `messages`: their blocks are appended, in order, to the top-level `system`.

use serde_json::{Map, Value};

pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Top-level fields Bedrock's Anthropic `InvokeModel` body accepts (besides `anthropic_version` and
/// `anthropic_beta`, which the proxy sets).
const BEDROCK_FIELDS: [&str; 10] =
    ["messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking"];

/// Fields that only work with a beta, and the prefix of that beta's name (its family, any date).
const BETA_FIELDS: [(&str, &str); 2] = [("context_management", "context-management-"), ("output_config", "effort-")];

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

/// Content as a list of blocks (a string is one text block).
fn as_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => vec![serde_json::json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// Moves `system` messages out of `messages`, appending their blocks to the top-level `system`.
fn move_system_messages(body: &mut Map<String, Value>) {
    let Some(Value::Array(messages)) = body.get_mut("messages") else { return };
    if !messages.iter().any(|message| message["role"] == "system") {
        return;
    }
    let (system_messages, others): (Vec<Value>, Vec<Value>) =
        std::mem::take(messages).into_iter().partition(|message| message["role"] == "system");
    *messages = others;
    let mut system = body.get("system").map(as_blocks).unwrap_or_default();
    for message in &system_messages {
        system.extend(
            as_blocks(&message["content"])
                .into_iter()
                .filter(|block| !(block["type"] == "text" && block["text"].as_str().is_some_and(|text| text.trim().is_empty()))),
        );
    }
    body.insert("system".into(), Value::Array(system));
}

pub fn to_bedrock_body(request: &Map<String, Value>, requested_betas: &[String], allowed_betas: &[String]) -> BedrockBody {
    let mut body = Map::new();
    body.insert("anthropic_version".into(), Value::String(BEDROCK_ANTHROPIC_VERSION.into()));
    let (mut betas, mut dropped_betas) = betas_for_bedrock(requested_betas, allowed_betas);
    let mut dropped_fields = Vec::new();
    for (name, value) in request {
        let beta_family = BETA_FIELDS.iter().find(|(field, _)| field == name).map(|(_, family)| *family);
        let kept = match beta_family {
            Some(family) => betas.iter().any(|beta| beta.starts_with(family)),
            None => BEDROCK_FIELDS.contains(&name.as_str()),
        };
        if kept {
            body.insert(name.clone(), value.clone());
        } else if name != "anthropic_version" {
            dropped_fields.push(name.clone());
        }
    }
    // A beta whose field was dropped goes too.
    for (field, family) in BETA_FIELDS {
        if dropped_fields.iter().any(|name| name == field) {
            let (gone, kept): (Vec<String>, Vec<String>) = betas.into_iter().partition(|beta| beta.starts_with(family));
            betas = kept;
            dropped_betas.extend(gone);
        }
    }
    move_system_messages(&mut body);
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
        let converted =
            convert(json!({"max_tokens": 5, "system": system.clone(), "messages": [{"role": "user", "content": "q"}]}), &[]);
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

    #[test]
    fn a_field_goes_with_its_beta_or_both_are_dropped() {
        let request = json!({"max_tokens": 5, "messages": [{"role": "user", "content": "q"}],
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "medium"}});
        let betas = ["context-management-2025-06-27,effort-2025-11-24,interleaved-thinking-2025-05-14"];
        let none_allowed = to_bedrock_body(request.as_object().unwrap(), &[betas[0].to_owned()], &[]);
        assert!(none_allowed.body.get("context_management").is_none() && none_allowed.body.get("output_config").is_none());
        assert!(none_allowed.body.get("anthropic_beta").is_none());
        let allowed: Vec<String> =
            ["context-management-2025-06-27", "interleaved-thinking-2025-05-14", "effort-2025-11-24"].map(str::to_owned).to_vec();
        let context_only = to_bedrock_body(request.as_object().unwrap(), &[betas[0].to_owned()], &allowed[..2]);
        assert_eq!(context_only.body["context_management"], request["context_management"]);
        assert!(context_only.body.get("output_config").is_none());
        assert_eq!(
            context_only.body["anthropic_beta"],
            json!(["context-management-2025-06-27", "interleaved-thinking-2025-05-14"])
        );
        assert!(context_only.dropped_betas.contains(&"effort-2025-11-24".to_owned()));
        let all = to_bedrock_body(request.as_object().unwrap(), &[betas[0].to_owned()], &allowed);
        assert_eq!(all.body["output_config"], json!({"effort": "medium"}));
        // Allowed, but its field was not sent: the beta still goes (it may enable something else, e.g. a tool).
        let no_field =
            to_bedrock_body(json!({"max_tokens": 5, "messages": []}).as_object().unwrap(), &[betas[0].to_owned()], &allowed);
        assert_eq!(no_field.body["anthropic_beta"].as_array().unwrap().len(), 3);
        // With its field dropped, an allowed beta goes too.
        let effort_not_allowed = to_bedrock_body(request.as_object().unwrap(), &["effort-2025-11-24".to_owned()], &allowed[..2]);
        assert!(effort_not_allowed.body.get("anthropic_beta").is_none());
    }

    #[test]
    fn mid_conversation_system_messages_join_the_top_level_system() {
        let converted = convert(
            json!({"max_tokens": 5, "system": "base rules", "messages": [
                {"role": "user", "content": "first"},
                {"role": "system", "content": [{"type": "text", "text": "env notes", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": "ok"},
                {"role": "system", "content": "later note"},
                {"role": "user", "content": "second"}
            ]}),
            &[],
        );
        assert_eq!(
            converted.body["system"],
            json!([
                {"type": "text", "text": "base rules"},
                {"type": "text", "text": "env notes", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "later note"}
            ])
        );
        let roles: Vec<&str> =
            converted.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        let untouched = convert(json!({"max_tokens": 5, "system": "s", "messages": [{"role": "user", "content": "q"}]}), &[]);
        assert_eq!(untouched.body["system"], "s", "a body without system messages keeps its system as it is");
    }
}
