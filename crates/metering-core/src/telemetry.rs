//! Structured logs: JSON on standard error (standard output is kept for usage lines), level from `RUST_LOG`.
//!
//! `RUST_LOG` takes `tracing-subscriber`'s `EnvFilter` syntax. A value of targets and levels only (`info`,
//! `claude_proxy=debug,warn`: every value the project documents) is applied with the `Targets` filter, which
//! decides once per call site; only a value with span or field directives (`[request{tenant_id=acme}]=debug`)
//! needs `EnvFilter` itself, which looks up every span in a lock-guarded table each time a span is entered
//! or left — on the proxy's streamed answers, dozens of times per request (each poll of the request's span
//! and of the stream task's span).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The filter `RUST_LOG` asks for.
#[derive(Debug)]
pub enum LogFilter {
    /// Targets and levels only.
    Static(Targets),
    /// With span or field directives.
    Dynamic(Box<EnvFilter>),
}

impl LogFilter {
    /// The filter of a `RUST_LOG` value; `info` when it is unset or not a valid filter.
    pub fn of(rust_log: Option<&str>) -> Self {
        let default = || Self::Static(Targets::new().with_default(tracing::Level::INFO));
        let Some(value) = rust_log.filter(|value| !value.trim().is_empty()) else {
            return default();
        };
        // Span and field directives are the ones in brackets (`target[span{field=value}]=level`); `Targets`
        // would take `target[span]` for a target's name.
        if !value.contains('[') {
            if let Ok(targets) = value.parse::<Targets>() {
                return Self::Static(targets);
            }
        }
        EnvFilter::try_new(value).map_or_else(|_| default(), |filter| Self::Dynamic(Box::new(filter)))
    }
}

pub fn init_json_tracing() {
    let (targets, env_filter) = match LogFilter::of(std::env::var("RUST_LOG").ok().as_deref()) {
        LogFilter::Static(targets) => (Some(targets), None),
        LogFilter::Dynamic(filter) => (None, Some(*filter)),
    };
    let _ = tracing_subscriber::registry()
        .with(targets)
        .with(env_filter)
        .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_current_span(true).with_ansi(false))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn targets(value: Option<&str>) -> Targets {
        match LogFilter::of(value) {
            LogFilter::Static(targets) => targets,
            LogFilter::Dynamic(filter) => panic!("{value:?} read as span directives: {filter}"),
        }
    }

    #[test]
    fn levels_and_targets_need_no_span_lookups() {
        let unset = targets(None);
        assert!(unset.would_enable("claude_proxy::proxy", &Level::INFO));
        assert!(!unset.would_enable("claude_proxy::proxy", &Level::DEBUG));
        assert!(targets(Some("  ")).would_enable("chat_api", &Level::INFO), "blank is the default");

        let documented = targets(Some("claude_proxy=debug,warn"));
        assert!(documented.would_enable("claude_proxy::streaming", &Level::DEBUG));
        assert!(!documented.would_enable("metering_core::metering", &Level::INFO));
        assert!(documented.would_enable("metering_core::metering", &Level::WARN));
        assert!(!targets(Some("off")).would_enable("chat_api", &Level::ERROR));
    }

    #[test]
    fn span_and_field_directives_keep_the_full_filter() {
        for value in ["[request{tenant_id=acme}]=debug", "claude_proxy[proxy_stream]=trace,info"] {
            assert!(matches!(LogFilter::of(Some(value)), LogFilter::Dynamic(_)), "{value}");
        }
    }

    #[test]
    fn an_invalid_value_is_the_default() {
        let invalid = targets(Some("claude_proxy=loud"));
        assert!(invalid.would_enable("claude_proxy", &Level::INFO));
        assert!(!invalid.would_enable("claude_proxy", &Level::DEBUG));
    }
}
