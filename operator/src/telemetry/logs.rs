//! berth's log filter: `RUST_LOG` as the user sets it, minus what would print secrets.
//!
//! bollard logs every request body at `trace` (a container's create body carries its env,
//! secret values included) and decoded response bodies at `debug` (an inspect carries the
//! env too). Those directives are pinned to `info` whatever `RUST_LOG` says, so that no level
//! of logging, `RUST_LOG=trace` included, prints a secret. berth's own `debug` shows every
//! Docker step without the bodies.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Targets whose verbose levels print request or response bodies.
const BODY_LOGGERS: [&str; 1] = ["bollard"];

/// The filter from `rust_log` (`warn` when unset or invalid), body loggers capped at `info`.
pub fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter = rust_log.and_then(|s| EnvFilter::try_new(s).ok()).unwrap_or_else(|| EnvFilter::new("warn"));
    for target in BODY_LOGGERS {
        let cap: Directive = format!("{target}=info").parse().expect("a valid directive");
        filter = filter.add_directive(cap);
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bollard_bodies_stay_out_at_every_level() {
        for rust_log in [Some("trace"), Some("bollard=trace"), Some("debug,bollard=trace"), None] {
            let text = log_filter(rust_log).to_string();
            assert!(text.contains("bollard=info"), "{rust_log:?}: {text}");
            assert!(!text.contains("bollard=trace") && !text.contains("bollard=debug"), "{rust_log:?}: {text}");
        }
        assert!(log_filter(Some("berth=debug")).to_string().contains("berth=debug"));
    }
}
