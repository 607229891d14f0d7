//! The process's logs (`tracing` to stderr): the filter is checked (a bad `--log` is an error,
//! not a silent `info`) and can be replaced at run time (SIGHUP, [`crate::reload`]); colours
//! only when stderr is a terminal (never in a pipe or the journal).

use std::{io::IsTerminal, sync::OnceLock};

use tracing_subscriber::{EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("bad log filter \"{filter}\": {reason} (e.g. `info`, `roomguard=debug,warn`)")]
    BadFilter { filter: String, reason: String },
    #[error("the log filter cannot be changed: {0}")]
    Reload(String),
}

/// The log filter when neither `--log` nor the config's `controller.log` sets one.
pub const DEFAULT_LOG: &str = "info";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses tracing directives, strictly: an unknown level or a malformed directive is an error.
/// A bare word must be a level: tracing would read `inf` or `debugg` as a target logged at
/// every level; a target is written `target=level`.
pub fn parse(filter: &str) -> Result<EnvFilter, LogError> {
    let bad = |reason: String| LogError::BadFilter { filter: filter.to_string(), reason };
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[']) && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(bad(format!(
                "`{directive}` is not a level ({}); a target is written `target=level`",
                LEVELS.join(", ")
            )));
        }
    }
    EnvFilter::builder().with_regex(false).parse(filter).map_err(|e| bad(e.to_string()))
}

/// Installs the global subscriber: `filter` (checked first), plain or JSON lines on stderr.
pub fn init(filter: &str, json: bool) -> Result<(), LogError> {
    let (filter, handle) = reload::Layer::new(parse(filter)?);
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let plain = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_ansi(false));
    registry.with(plain).with(json).init();
    let _ = FILTER.set(handle);
    Ok(())
}

/// Replaces the filter of the subscriber [`init`] installed (a no-op without one: tests run
/// the controller in-process with a subscriber of their own).
pub fn set_filter(filter: &str) -> Result<(), LogError> {
    let parsed = parse(filter)?;
    match FILTER.get() {
        Some(handle) => handle.reload(parsed).map_err(|e| LogError::Reload(e.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        for good in ["info", "DEBUG", "roomguard=debug", "warn,roomguard=trace", "roomguard::hooks=debug,info"] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in ["inf", "debugg,roomguard=info", "roomguard=verbose", "roomguard=debug,=", "[{"] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
