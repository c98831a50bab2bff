//! Server-sent events of the Messages API: an incremental parser (the proxy forwards Anthropic's bytes
//! untouched and reads a copy), the usage those events carry, and the encoder for events from Bedrock.
//!
//! Usage in a stream: input and cache tokens in `message_start` (`message.usage`), output tokens in
//! `message_delta` (`usage.output_tokens`, cumulative; the last one is final). Newer API versions repeat
//! the input and cache counts in `message_delta`; when present they win.

use std::borrow::Cow;
use std::fmt;

use metering_core::usage::TokenCounts;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Splits a byte stream into `(event, data)` pairs, whatever the chunk boundaries.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: String,
}

/// Longest line kept while waiting for its end; a larger one is dropped (the bytes are still forwarded).
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

impl SseParser {
    /// Calls `on_event(event, data)` for every event completed by `chunk`. Lines are read in place (from the
    /// chunk itself when no partial line is pending); only an unfinished line is copied, to wait for its end.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&str, &str)) {
        let mut rest = chunk;
        if !self.pending.is_empty() {
            // Complete the pending line first.
            let Some(end) = rest.iter().position(|byte| *byte == b'\n') else {
                self.keep_partial(rest);
                return;
            };
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(&rest[..end]);
            self.line_bytes(&pending, &mut on_event);
            pending.clear();
            self.pending = pending;
            rest = &rest[end + 1..];
        }
        while let Some(end) = rest.iter().position(|byte| *byte == b'\n') {
            self.line_bytes(&rest[..end], &mut on_event);
            rest = &rest[end + 1..];
        }
        self.keep_partial(rest);
    }

    fn keep_partial(&mut self, partial: &[u8]) {
        self.pending.extend_from_slice(partial);
        if self.pending.len() > MAX_LINE_BYTES {
            tracing::warn!(bytes = self.pending.len(), "dropping an over-long server-sent event line");
            self.pending.clear();
        }
    }

    fn line_bytes(&mut self, line: &[u8], on_event: &mut impl FnMut(&str, &str)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Borrowed when the line is valid UTF-8 (always, from a well-behaved upstream).
        let line = String::from_utf8_lossy(line);
        self.line(&line, on_event);
    }

    fn line(&mut self, line: &str, on_event: &mut impl FnMut(&str, &str)) {
        if line.is_empty() {
            if !self.data.is_empty() || !self.event.is_empty() {
                on_event(&self.event, &self.data);
            }
            self.event.clear();
            self.data.clear();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// One server-sent event as the Anthropic API writes it.
pub fn encode_event(event_type: &str, data: &str) -> String {
    format!("event: {event_type}\ndata: {data}\n\n")
}

/// Characters per token of the estimate used when a stream ends early: the usual rule of thumb for
/// Claude's tokenizer on English text and code (about 3.5-4), rounded up, the same for both upstreams.
pub const ESTIMATED_CHARS_PER_TOKEN: u64 = 4;

/// Tokens a text is estimated to hold: its characters (Unicode scalar values) / 4, rounded up.
pub fn estimate_tokens(chars: u64) -> u64 {
    chars.div_ceil(ESTIMATED_CHARS_PER_TOKEN)
}

/// The token counts of a stream, from the events seen so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsageTap {
    tokens: TokenCounts,
    pub saw_message_start: bool,
    pub saw_message_stop: bool,
    /// The `error.type` of an `error` event, if the stream carried one.
    pub error: Option<String>,
    /// Characters of generated content seen in `content_block_delta` events (text, thinking, tool input).
    pub delivered_chars: u64,
}

/// The events of a Messages API stream, as far as the usage needs them: `message_start` (input and cache
/// counts), `message_delta` (the counts so far), `content_block_delta` (the generated text, for the estimate
/// of a stream that ends early), `message_stop`, `error` (its type); every other event is `Other`.
///
/// Read leniently, as the usage reading always was: a count that is not an unsigned integer, a text that is
/// not a string, a field that is not an object counts as absent; a repeated key counts as its last value.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent<'a> {
    MessageStart(MessageStart),
    MessageDelta(MessageDelta),
    #[serde(borrow)]
    ContentBlockDelta(ContentBlockDelta<'a>),
    MessageStop(MessageStop),
    Error(ErrorEvent),
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessageStart {
    message: MessageUsage,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessageDelta {
    usage: DeltaUsage,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContentBlockDelta<'a> {
    delta: DeltaText<'a>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MessageStop {}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorEvent {
    error: ErrorType,
}

// Each event reads the one field the usage needs (its last occurrence; absent or not an object: the
// default), as the untyped reading did.
impl<'de> Deserialize<'de> for MessageStart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_field(deserializer, "message").map(|message| Self { message })
    }
}

impl<'de> Deserialize<'de> for MessageDelta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_field(deserializer, "usage").map(|usage| Self { usage })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ContentBlockDelta<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_field(deserializer, "delta").map(|delta| Self { delta })
    }
}

impl<'de> Deserialize<'de> for ErrorEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_field(deserializer, "error").map(|error| Self { error })
    }
}

/// The field `name` of an object, read as `T` (its last occurrence); `T::default()` when the object has no
/// such field or the value is not an object.
fn one_field<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
    name: &'static str,
) -> Result<T, D::Error> {
    struct OneField<T> {
        name: &'static str,
        field: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for OneField<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                if key == self.name {
                    found = Some(entries.next_value::<T>()?);
                } else {
                    entries.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found.unwrap_or_default())
        }

        crate::json_visit::any_non_object_is!(T::default());
    }
    deserializer.deserialize_any(OneField { name, field: std::marker::PhantomData })
}

impl<'a> StreamEvent<'a> {
    /// One event of the byte stream: `event_type` is its `event:` line (empty when it had none: then the
    /// data's own `type` decides). A named event is read straight into its own shape, and one that carries no
    /// usage (`ping`, `content_block_start`, ...) is not parsed at all: the tap keeps to one pass over
    /// the bytes. `None` when the data is not JSON of that shape.
    pub fn parse(event_type: &str, data: &'a str) -> Option<Self> {
        if !Self::carries_usage(event_type) {
            return Some(Self::Other);
        }
        let mut deserializer = serde_json::Deserializer::from_str(data);
        let event = Self::read(event_type, &mut deserializer).ok()?;
        deserializer.end().ok()?;
        Some(event)
    }

    /// The same, from an event already parsed (Bedrock's, whose stream events are JSON documents).
    pub fn of_value(event_type: &str, value: &'a Value) -> Option<Self> {
        if !Self::carries_usage(event_type) {
            return Some(Self::Other);
        }
        Self::read(event_type, value).ok()
    }

    fn carries_usage(event_type: &str) -> bool {
        matches!(event_type, "" | "message_start" | "message_delta" | "content_block_delta" | "message_stop" | "error")
    }

    fn read<D: Deserializer<'a>>(event_type: &str, deserializer: D) -> Result<Self, D::Error> {
        Ok(match event_type {
            "message_start" => Self::MessageStart(MessageStart::deserialize(deserializer)?),
            "message_delta" => Self::MessageDelta(MessageDelta::deserialize(deserializer)?),
            "content_block_delta" => Self::ContentBlockDelta(ContentBlockDelta::deserialize(deserializer)?),
            // Any JSON at all: only its end matters.
            "message_stop" => {
                IgnoredAny::deserialize(deserializer)?;
                Self::MessageStop(MessageStop {})
            }
            "error" => Self::Error(ErrorEvent::deserialize(deserializer)?),
            _ => Self::deserialize(deserializer)?,
        })
    }
}

impl UsageTap {
    /// Reads one server-sent event; `event_type` may be empty (then the data's own `type` is used).
    pub fn observe(&mut self, event_type: &str, data: &str) {
        if let Some(event) = StreamEvent::parse(event_type, data) {
            self.apply(event);
        }
    }

    /// Reads one event already parsed (a Bedrock stream event).
    pub fn observe_value(&mut self, event_type: &str, value: &Value) {
        if let Some(event) = StreamEvent::of_value(event_type, value) {
            self.apply(event);
        }
    }

    pub fn apply(&mut self, event: StreamEvent<'_>) {
        match event {
            StreamEvent::MessageStart(start) => {
                self.saw_message_start = true;
                let usage = start.message.0.unwrap_or_default();
                self.tokens = usage;
            }
            StreamEvent::MessageDelta(delta) => {
                let usage = delta.usage;
                let counts = [
                    (&mut self.tokens.output_tokens, usage.output_tokens),
                    (&mut self.tokens.input_tokens, usage.input_tokens),
                    (&mut self.tokens.cache_creation_input_tokens, usage.cache_creation_input_tokens),
                    (&mut self.tokens.cache_read_input_tokens, usage.cache_read_input_tokens),
                ];
                for (slot, reported) in counts {
                    if let Some(reported) = reported {
                        *slot = reported;
                    }
                }
            }
            StreamEvent::ContentBlockDelta(ContentBlockDelta { delta }) => {
                let generated = delta.text.or(delta.thinking).or(delta.partial_json);
                self.delivered_chars += generated.map_or(0, |text| text.chars().count() as u64);
            }
            StreamEvent::MessageStop(_) => self.saw_message_stop = true,
            StreamEvent::Error(event) => self.error = Some(event.error.0.unwrap_or_else(|| "error".to_owned())),
            StreamEvent::Other => {}
        }
    }

    pub fn tokens(&self) -> TokenCounts {
        self.tokens
    }

    /// The counts of a stream that ended before `message_stop`: the input as reported, the output as the
    /// larger of the last reported count and the estimate of the content seen.
    pub fn estimated_tokens(&self) -> TokenCounts {
        let mut tokens = self.tokens;
        tokens.output_tokens = tokens.output_tokens.max(estimate_tokens(self.delivered_chars));
        tokens
    }
}

fn count(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// The usage of a whole (non-streaming) Messages API answer.
pub fn usage_of_message(message: &Value) -> Option<TokenCounts> {
    let usage = message.get("usage")?;
    Some(TokenCounts {
        input_tokens: count(&usage["input_tokens"]).unwrap_or_default(),
        output_tokens: count(&usage["output_tokens"]).unwrap_or_default(),
        cache_creation_input_tokens: count(&usage["cache_creation_input_tokens"]).unwrap_or_default(),
        cache_read_input_tokens: count(&usage["cache_read_input_tokens"]).unwrap_or_default(),
    })
}

/// The usage of a whole (non-streaming) Messages API answer, read from its bytes in one pass that builds
/// nothing but the four counts (the content is checked to be JSON and skipped). Reads what
/// [`usage_of_message`] reads from the parsed value: `None` unless the answer is a JSON object with `usage`;
/// a count that is not an unsigned integer is 0; a repeated key counts as its last occurrence.
pub fn usage_of_message_json(answer: &[u8]) -> Option<TokenCounts> {
    serde_json::from_slice::<MessageUsage>(answer).ok()?.0
}

/// The `usage` of an answer (or of `message_start`'s message), when it is an object that has one.
#[derive(Debug, Default, PartialEq, Eq)]
struct MessageUsage(Option<TokenCounts>);

/// The counts a `message_delta` reports (each only when it is an unsigned integer).
#[derive(Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_field_names)] // Anthropic's own field names
struct DeltaUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// The generated text of a `content_block_delta`: borrowed from the event unless it holds escapes.
#[derive(Debug, Default, PartialEq, Eq)]
struct DeltaText<'a> {
    text: Option<Cow<'a, str>>,
    thinking: Option<Cow<'a, str>>,
    partial_json: Option<Cow<'a, str>>,
}

/// The `type` of an `error` event's `error`.
#[derive(Debug, Default, PartialEq, Eq)]
struct ErrorType(Option<String>);

/// A string, borrowed when it can be; any other JSON value is nothing.
struct Text<'a>(Option<Cow<'a, str>>);

/// The four counts of a `usage` value (all 0 when it is not an object).
struct UsageCounts(TokenCounts);

/// A count as `Value::as_u64` reads it: an unsigned integer, else nothing.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for MessageUsage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnswerVisitor;
        impl<'de> Visitor<'de> for AnswerVisitor {
            type Value = MessageUsage;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut usage = None;
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    if key == "usage" {
                        usage = Some(entries.next_value::<UsageCounts>()?.0);
                    } else {
                        entries.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(MessageUsage(usage))
            }

            crate::json_visit::any_non_object_is!(MessageUsage(None));
        }
        deserializer.deserialize_any(AnswerVisitor)
    }
}

impl<'de> Deserialize<'de> for UsageCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsageVisitor;
        impl<'de> Visitor<'de> for UsageVisitor {
            type Value = UsageCounts;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut tokens = TokenCounts::default();
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "input_tokens" => &mut tokens.input_tokens,
                        "output_tokens" => &mut tokens.output_tokens,
                        "cache_creation_input_tokens" => &mut tokens.cache_creation_input_tokens,
                        "cache_read_input_tokens" => &mut tokens.cache_read_input_tokens,
                        _ => {
                            entries.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = entries.next_value::<Count>()?.0.unwrap_or_default();
                }
                Ok(UsageCounts(tokens))
            }

            crate::json_visit::any_non_object_is!(UsageCounts(TokenCounts::default()));
        }
        deserializer.deserialize_any(UsageVisitor)
    }
}

impl<'de> Deserialize<'de> for DeltaUsage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeltaUsageVisitor;
        impl<'de> Visitor<'de> for DeltaUsageVisitor {
            type Value = DeltaUsage;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut usage = DeltaUsage::default();
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "input_tokens" => &mut usage.input_tokens,
                        "output_tokens" => &mut usage.output_tokens,
                        "cache_creation_input_tokens" => &mut usage.cache_creation_input_tokens,
                        "cache_read_input_tokens" => &mut usage.cache_read_input_tokens,
                        _ => {
                            entries.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = entries.next_value::<Count>()?.0;
                }
                Ok(usage)
            }

            crate::json_visit::any_non_object_is!(DeltaUsage::default());
        }
        deserializer.deserialize_any(DeltaUsageVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for DeltaText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeltaTextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for DeltaTextVisitor<'a> {
            type Value = DeltaText<'a>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut delta = DeltaText::default();
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "text" => &mut delta.text,
                        "thinking" => &mut delta.thinking,
                        "partial_json" => &mut delta.partial_json,
                        _ => {
                            entries.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = entries.next_value::<Text<'a>>()?.0;
                }
                Ok(delta)
            }

            crate::json_visit::any_non_object_is!(DeltaText::default());
        }
        deserializer.deserialize_any(DeltaTextVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for ErrorType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ErrorTypeVisitor;
        impl<'de> Visitor<'de> for ErrorTypeVisitor {
            type Value = ErrorType;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut error_type = None;
                while let Some(key) = entries.next_key::<Cow<'de, str>>()? {
                    if key == "type" {
                        error_type = entries.next_value::<Text<'de>>()?.0.map(Cow::into_owned);
                    } else {
                        entries.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ErrorType(error_type))
            }

            crate::json_visit::any_non_object_is!(ErrorType(None));
        }
        deserializer.deserialize_any(ErrorTypeVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(text))))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(text.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(text))))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_u64<E: de::Error>(self, count: u64) -> Result<Self::Value, E> {
                Ok(Count(Some(count)))
            }
            // serde_json hands a non-negative integer to visit_u64; what comes here is negative.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\r\n\r\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn tap_of(chunks: &[&[u8]]) -> (UsageTap, Vec<String>) {
        let mut parser = SseParser::default();
        let mut tap = UsageTap::default();
        let mut names = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |event, data| {
                names.push(event.to_owned());
                tap.observe(event, data);
            });
        }
        (tap, names)
    }

    #[test]
    fn input_comes_from_message_start_and_output_from_the_last_message_delta() {
        let (tap, names) = tap_of(&[STREAM.as_bytes()]);
        assert_eq!(names, ["message_start", "ping", "content_block_delta", "message_delta", "message_stop"]);
        assert_eq!(
            tap.tokens(),
            TokenCounts { input_tokens: 12, output_tokens: 7, cache_creation_input_tokens: 100, cache_read_input_tokens: 0 }
        );
        assert!(tap.saw_message_start && tap.saw_message_stop);
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_events() {
        let bytes = STREAM.as_bytes();
        let whole = tap_of(&[bytes]);
        for split in [1, 5, 17, 40, 200, bytes.len() - 1] {
            assert_eq!(tap_of(&[&bytes[..split], &bytes[split..]]), whole, "split at {split}");
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(tap_of(&single_bytes), whole);
    }

    #[test]
    fn a_stream_cut_before_message_delta_keeps_the_input_count() {
        let cut = STREAM.find("event: message_delta").unwrap();
        let (tap, _) = tap_of(&[&STREAM.as_bytes()[..cut]]);
        assert_eq!((tap.tokens().input_tokens, tap.tokens().output_tokens), (12, 1));
        assert!(!tap.saw_message_stop);
    }

    #[test]
    fn a_cut_stream_is_estimated_from_the_content_it_delivered() {
        let cut = STREAM.find("event: message_delta").unwrap();
        let (tap, _) = tap_of(&[&STREAM.as_bytes()[..cut]]);
        assert_eq!(tap.delivered_chars, 2);
        assert_eq!(tap.estimated_tokens().output_tokens, 1, "max(reported 1, ceil(2 / 4) = 1)");
        let long = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"é123456789\"}}\n\n";
        let (tap, _) = tap_of(&[&STREAM.as_bytes()[..cut], long.as_bytes()]);
        assert_eq!((tap.delivered_chars, tap.estimated_tokens().output_tokens, tap.estimated_tokens().input_tokens), (12, 3, 12));
        assert_eq!(estimate_tokens(0), 0);
    }

    /// The reference reading: every event parsed whole into an untyped value and indexed, as the tap did
    /// before it read typed events.
    fn tap_by_whole_value(events: &[(&str, &str)]) -> UsageTap {
        let mut tap = UsageTap::default();
        for (event_type, data) in events {
            let Ok(value) = serde_json::from_str::<Value>(data) else { continue };
            let kind = if event_type.is_empty() { value["type"].as_str().unwrap_or_default() } else { event_type };
            match kind {
                "message_start" => {
                    tap.saw_message_start = true;
                    let usage = &value["message"]["usage"];
                    tap.tokens.input_tokens = count(&usage["input_tokens"]).unwrap_or_default();
                    tap.tokens.cache_creation_input_tokens = count(&usage["cache_creation_input_tokens"]).unwrap_or_default();
                    tap.tokens.cache_read_input_tokens = count(&usage["cache_read_input_tokens"]).unwrap_or_default();
                    tap.tokens.output_tokens = count(&usage["output_tokens"]).unwrap_or_default();
                }
                "message_delta" => {
                    let usage = &value["usage"];
                    if let Some(output) = count(&usage["output_tokens"]) {
                        tap.tokens.output_tokens = output;
                    }
                    if let Some(input) = count(&usage["input_tokens"]) {
                        tap.tokens.input_tokens = input;
                    }
                    if let Some(created) = count(&usage["cache_creation_input_tokens"]) {
                        tap.tokens.cache_creation_input_tokens = created;
                    }
                    if let Some(read) = count(&usage["cache_read_input_tokens"]) {
                        tap.tokens.cache_read_input_tokens = read;
                    }
                }
                "content_block_delta" => {
                    let delta = &value["delta"];
                    let generated = ["text", "thinking", "partial_json"].iter().find_map(|field| delta[*field].as_str());
                    tap.delivered_chars += generated.map_or(0, |text| text.chars().count() as u64);
                }
                "message_stop" => tap.saw_message_stop = true,
                "error" => tap.error = Some(value["error"]["type"].as_str().unwrap_or("error").to_owned()),
                _ => {}
            }
        }
        tap
    }

    #[test]
    fn the_partial_reading_counts_exactly_what_the_whole_value_reading_counts() {
        let cases: &[&[(&str, &str)]] = &[
            &[(
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"h\u00e9llo \"x\""}}"#,
            )],
            &[("content_block_delta", r#"{"delta":{"thinking":"abc"}}"#)],
            &[("content_block_delta", r#"{"delta":{"partial_json":"{\"a\":1}"}}"#)],
            &[("content_block_delta", r#"{"delta":{"text":null,"thinking":"xy"}}"#)],
            &[("content_block_delta", r#"{"delta":{"text":5,"thinking":"xyz"}}"#)],
            &[("content_block_delta", r#"{"delta":{"text":"a","text":"bcd"}}"#)],
            &[("content_block_delta", r#"{"delta":"text"}"#)],
            &[("content_block_delta", r#"{"delta":null}"#)],
            &[("content_block_delta", r"not json")],
            &[("message_stop", r#"{"type":"message_stop"}"#)],
            &[("message_stop", r"garbled")],
            &[("ping", r#"{"type":"message_stop"}"#), ("content_block_stop", r#"{"type":"error"}"#)],
            &[("", r#"{"type":"message_stop"}"#), ("", r#"{"type":"content_block_delta","delta":{"text":"abcd"}}"#)],
            &[("error", r#"{"type":"error","error":{"type":"overloaded_error"}}"#)],
            &[("error", r#"{"type":"error","error":{"type":5}}"#), ("error", r#"{"error":"overloaded"}"#)],
            &[("", r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#)],
            &[
                ("", r#"{"type":"message_start","message":{"usage":{"input_tokens":4,"cache_read_input_tokens":9}}}"#),
                ("", r#"{"type":"ping"}"#),
                ("", r#"{"type":"message_delta","usage":{"output_tokens":6,"input_tokens":"5"}}"#),
                ("", r#"{"type":"message_stop"}"#),
            ],
            &[
                ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":4,"output_tokens":1}}}"#),
                ("message_delta", r#"{"usage":{"output_tokens":8,"output_tokens":9,"cache_creation_input_tokens":-1}}"#),
                ("message_delta", r#"{"usage":null}"#),
            ],
            &[("message_start", r#"{"message":{"usage":{"input_tokens":2}},"message":{"id":"x"}}"#)],
            &[("message_start", r#"{"message":null}"#), ("message_delta", r#"{"usage":{"output_tokens":3}} x"#)],
            &[("", r#"{"type":5}"#), ("", r#"{"no_type":true}"#), ("", "[]")],
        ];
        for events in cases {
            let mut tap = UsageTap::default();
            for (event, data) in *events {
                tap.observe(event, data);
            }
            assert_eq!(tap, tap_by_whole_value(events), "{events:?}");
        }
    }

    #[test]
    fn events_are_read_into_their_types_with_the_text_borrowed() {
        let data = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
        for event_type in ["content_block_delta", ""] {
            let Some(StreamEvent::ContentBlockDelta(event)) = StreamEvent::parse(event_type, data) else {
                panic!("a content_block_delta ({event_type:?})")
            };
            assert!(matches!(event.delta.text, Some(Cow::Borrowed("hi"))), "read in place, not copied");
        }
        let start = r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3,"output_tokens":1}}}"#;
        let Some(StreamEvent::MessageStart(event)) = StreamEvent::parse("", start) else { panic!("a message_start") };
        assert_eq!(event.message.0.map(|usage| (usage.input_tokens, usage.output_tokens)), Some((3, 1)));
        let error = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            StreamEvent::parse("", error),
            Some(StreamEvent::Error(ErrorEvent { error: ErrorType(Some("overloaded_error".into())) }))
        );
        assert_eq!(StreamEvent::parse("ping", "not even JSON"), Some(StreamEvent::Other), "not parsed at all");
        assert_eq!(StreamEvent::parse("", r#"{"type":"content_block_stop","index":0}"#), Some(StreamEvent::Other));
        assert_eq!(StreamEvent::parse("message_delta", "{"), None);
    }

    #[test]
    fn a_parsed_event_is_read_as_its_bytes_are() {
        // Bedrock's events arrive as JSON documents and are read from the parsed value.
        for (event_type, data) in [
            ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","delta":{"text":"h\u00e9"}}"#),
            ("message_delta", r#"{"type":"message_delta","usage":{"output_tokens":7}}"#),
            ("error", r#"{"type":"error","error":{"type":"overloaded_error"}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            let value: Value = serde_json::from_str(data).unwrap();
            assert_eq!(StreamEvent::of_value(event_type, &value), StreamEvent::parse(event_type, data), "{data}");
        }
    }

    #[test]
    fn error_events_are_noted() {
        let (tap, _) = tap_of(&[
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n",
        ]);
        assert_eq!(tap.error.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn the_one_pass_usage_reads_exactly_what_the_whole_value_reading_reads() {
        for answer in [
            r#"{"id":"msg_1","content":[{"type":"text","text":"a \"quoted\" {usage}"}],"usage":{"input_tokens":3,"output_tokens":5}}"#,
            r#"{"usage":{"input_tokens":3,"output_tokens":5,"cache_creation_input_tokens":7,"cache_read_input_tokens":8,"server_tool_use":{"web_search_requests":1}}}"#,
            r#"{"usage":{"input_tokens":3,"input_tokens":4}}"#,
            r#"{"usage":{"input_tokens":3},"usage":{"output_tokens":9}}"#,
            r#"{"usage":{"input_tokens":-3,"output_tokens":5.0,"cache_read_input_tokens":"8","cache_creation_input_tokens":null}}"#,
            r#"{"usage":{"output_tokens":18446744073709551615}}"#,
            r#"{"usage":null}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":"none"}"#,
            r#"{"usag\u0065":{"input_tokens":1}}"#,
            r#"{"nested":{"usage":{"input_tokens":1}}}"#,
            r"{}",
            r#"[{"usage":{"input_tokens":1}}]"#,
            r#"{"usage":{"input_tokens":1}} trailing"#,
            r#"{"usage":{"input_tokens":1}"#,
            "",
            "null",
        ] {
            let reference = serde_json::from_str::<Value>(answer).ok().as_ref().and_then(usage_of_message);
            assert_eq!(usage_of_message_json(answer.as_bytes()), reference, "{answer}");
        }
    }

    #[test]
    fn a_whole_message_reports_its_usage() {
        let message = serde_json::json!({"usage": {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 8}});
        let tokens = usage_of_message(&message).unwrap();
        assert_eq!((tokens.input_tokens, tokens.output_tokens, tokens.cache_read_input_tokens), (3, 5, 8));
        assert_eq!(tokens.total(), 16);
    }
}
