//! `[[hook]]`: what serde reads and what validation makes of it. Running the hooks is
//! [`crate::hooks`]'; the settings live here, with the rest of the configuration, so that
//! loading a config never depends on the code that runs it.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::events::HOOK_EVENTS;

/// `[[hook]]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// Event names (see [`HOOK_EVENTS`]).
    pub events: Vec<String>,
    /// The program and its arguments (no shell: `["/bin/sh", "-c", "..."]` for one).
    pub command: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSettings {
    pub events: Vec<String>,
    pub command: Vec<String>,
    pub timeout: Duration,
}

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

impl RawHook {
    /// `number` is 1-based, for messages. Relative program paths (containing a `/`) are
    /// relative to the config file's directory, `base`.
    pub fn validate(self, number: usize, base: &std::path::Path) -> Result<HookSettings, String> {
        let culprit = format!("[[hook]] number {number}");
        if self.events.is_empty() {
            return Err(format!("{culprit}: `events` is empty; name one of {}", HOOK_EVENTS.join(", ")));
        }
        for event in &self.events {
            if !HOOK_EVENTS.contains(&event.as_str()) {
                return Err(format!(
                    "{culprit}: unknown event \"{event}\" in `events` (known: {})",
                    HOOK_EVENTS.join(", ")
                ));
            }
        }
        let mut command = self.command;
        match command.first() {
            None => return Err(format!("{culprit}: `command` is empty; give the program and its arguments")),
            Some(p) if p.trim().is_empty() => return Err(format!("{culprit}: `command` has an empty program")),
            Some(p) if p.contains('/') && !p.starts_with('/') => {
                command[0] = base.join(PathBuf::from(p)).display().to_string();
            }
            Some(_) => {}
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT);
        if timeout.is_zero() {
            return Err(format!("{culprit}: `timeout` must be greater than zero"));
        }
        Ok(HookSettings { events: self.events, command, timeout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(events: &[&str], command: &[&str]) -> RawHook {
        RawHook {
            events: events.iter().map(|s| s.to_string()).collect(),
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: None,
        }
    }

    #[test]
    fn validation_names_the_hook() {
        let base = std::path::Path::new("/etc/roomguard");
        let ok = raw(&["failover"], &["hooks/proxy.sh", "x"]).validate(1, base).unwrap();
        assert_eq!(ok.command, ["/etc/roomguard/hooks/proxy.sh", "x"]);
        assert_eq!(ok.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(raw(&["failover"], &["logger"]).validate(1, base).unwrap().command, ["logger"]);
        let e = raw(&["failovr"], &["x"]).validate(2, base).unwrap_err();
        assert!(e.contains("[[hook]] number 2") && e.contains("failovr"), "{e}");
        assert!(raw(&[], &["x"]).validate(1, base).unwrap_err().contains("`events` is empty"));
        assert!(raw(&["demote"], &[]).validate(1, base).unwrap_err().contains("`command` is empty"));
        let zero = RawHook { timeout: Some(Duration::ZERO), ..raw(&["demote"], &["x"]) };
        assert!(zero.validate(1, base).unwrap_err().contains("timeout"));
    }
}
