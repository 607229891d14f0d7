//! SIGHUP (`systemctl reload roomguard`): re-read the config file and apply what can change
//! safely in a running controller — the log filter (`controller.log`), the hooks, the
//! cooldown and `auto_failover` — or, when anything else changed (rooms, shards, addresses,
//! timings, the state file, listeners, credentials — also a `password_file` whose contents
//! changed), apply nothing and say in the log which keys need a restart. An invalid file is logged and changes nothing. SIGHUP never stops the
//! process.
//!
//! [`fixed_changes`] and [`Live::changes`] are pure; [`reload`] applies and logs.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::{
    config::{Config, ConfigError, HookSettings},
    metrics::Metrics,
};

/// What a running controller reads from the config at every use, so SIGHUP can change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub auto_failover: bool,
    pub cooldown: Duration,
    pub hooks: Vec<HookSettings>,
    /// `controller.log`.
    pub log: Option<String>,
}

impl Live {
    pub fn of(config: &Config) -> Live {
        let c = &config.controller;
        Live { auto_failover: c.auto_failover, cooldown: c.cooldown, hooks: config.hooks.clone(), log: c.log.clone() }
    }

    /// What differs from `self` in `new`, one phrase each, for the log.
    pub fn changes(&self, new: &Live) -> Vec<String> {
        let mut out = Vec::new();
        let on = |b: bool| if b { "on" } else { "off" };
        if self.auto_failover != new.auto_failover {
            out.push(format!("auto_failover {} -> {}", on(self.auto_failover), on(new.auto_failover)));
        }
        if self.cooldown != new.cooldown {
            out.push(format!(
                "cooldown {} -> {}",
                humantime::format_duration(self.cooldown),
                humantime::format_duration(new.cooldown)
            ));
        }
        if self.hooks != new.hooks {
            out.push(format!("hooks ({} -> {})", self.hooks.len(), new.hooks.len()));
        }
        if self.log != new.log {
            let show = |l: &Option<String>| l.clone().unwrap_or_else(|| "(unset)".into());
            out.push(format!("log {} -> {}", show(&self.log), show(&new.log)));
        }
        out
    }
}

/// The keys that differ between `old` and `new` and that only a restart applies.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (a, b) = (&old.controller, &new.controller);
    if old.topology.rooms != new.topology.rooms {
        out.push("rooms");
    }
    if old.topology != new.topology {
        out.push("[[shard]] (names, instances, addresses)");
    }
    for (key, changed) in [
        ("controller.poll_interval", a.poll_interval != b.poll_interval),
        ("controller.down_after", a.down_after != b.down_after),
        ("controller.timeout", a.timeout != b.timeout),
        ("controller.link_silence", a.link_silence != b.link_silence),
        ("controller.switchover_timeout", a.switchover_timeout != b.switchover_timeout),
        ("controller.state_file", a.state_file != b.state_file),
        ("http.listen", old.http.listen != new.http.listen),
        ("http.admin_token", old.http.admin_token != new.http.admin_token),
    ] {
        if changed {
            out.push(key);
        }
    }
    // TLS settings compare by their files (their loaded contents are a new allocation).
    let redis = |c: &Config| {
        std::iter::once(&c.redis.default)
            .chain(&c.redis.instances)
            .map(|s| (s.username.clone(), s.password.clone(), format!("{:?}", s.tls)))
            .collect::<Vec<_>>()
    };
    if redis(old) != redis(new) {
        out.push("[redis] (credentials, password files included, or TLS)");
    }
    let sentinel = |c: &Config| {
        c.sentinel
            .as_ref()
            .map(|s| (s.listen, s.password.clone(), s.max_connections, s.max_request_bytes, s.idle_timeout))
    };
    if sentinel(old) != sentinel(new) {
        out.push("[sentinel]");
    }
    out
}

/// What a SIGHUP did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file is invalid: nothing applied.
    Invalid(String),
    /// Keys changed that need a restart: nothing applied.
    Refused(Vec<&'static str>),
    Unchanged,
    /// These changes are in effect.
    Applied(Vec<String>),
}

/// Applies `loaded` (the config file read again) to the running controller, which started
/// with `running` and reads `live` at every use, and logs what happened. `log_from_cli`:
/// `--log`/`ROOMGUARD_LOG` set the filter, which then wins over `controller.log`.
pub fn reload(
    running: &Config,
    live: &watch::Sender<Live>,
    metrics: &Metrics,
    loaded: Result<Config, ConfigError>,
    log_from_cli: bool,
) -> Outcome {
    let outcome = decide(running, live, metrics, loaded);
    match &outcome {
        Outcome::Invalid(e) => error!("SIGHUP: the configuration is invalid; nothing was reloaded: {e}"),
        Outcome::Refused(keys) => error!(
            "SIGHUP: not reloaded: {} changed, which only a restart applies (systemctl restart roomguard); \
             nothing was applied (reloadable: controller.log, controller.cooldown, controller.auto_failover, [[hook]])",
            keys.join(", ")
        ),
        Outcome::Unchanged => info!("SIGHUP: configuration reloaded: nothing changed"),
        Outcome::Applied(changes) => {
            let new = live.borrow().clone();
            if changes.iter().any(|c| c.starts_with("log ")) {
                if log_from_cli {
                    info!("SIGHUP: controller.log changed, but --log/ROOMGUARD_LOG sets the filter and wins");
                } else if let Err(e) =
                    crate::logging::set_filter(new.log.as_deref().unwrap_or(crate::logging::DEFAULT_LOG))
                {
                    error!("SIGHUP: {e}");
                }
            }
            info!("SIGHUP: configuration reloaded: {}", changes.join(", "));
            tracing::debug!(settings = ?new, "SIGHUP: settings now in effect");
        }
    }
    outcome
}

fn decide(
    running: &Config,
    current: &watch::Sender<Live>,
    metrics: &Metrics,
    loaded: Result<Config, ConfigError>,
) -> Outcome {
    let new = match loaded {
        Ok(new) => new,
        Err(e) => return Outcome::Invalid(e.to_string()),
    };
    let fixed = fixed_changes(running, &new);
    if !fixed.is_empty() {
        return Outcome::Refused(fixed);
    }
    let live = Live::of(&new);
    let changes = current.borrow().changes(&live);
    if changes.is_empty() {
        return Outcome::Unchanged;
    }
    for hook in &live.hooks {
        metrics.create_hook_series(&hook.events);
    }
    current.send_replace(live);
    Outcome::Applied(changes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SEED: &str = r#"
rooms = ["1", "2"]
[controller]
cooldown = "5m"
[[shard]]
name = "shard-6401"
room.1 = ["192.168.99.11:6401", "192.168.99.11:6403"]
room.2 = ["192.168.99.12:6401", "192.168.99.12:6403"]
"#;

    fn load(text: &str) -> Config {
        Config::from_toml(text, "test.toml", Path::new("/etc/roomguard")).unwrap()
    }

    #[test]
    fn what_changed_is_named() {
        let old = load(SEED);
        assert!(fixed_changes(&old, &load(SEED)).is_empty());
        let safe = load(&format!(
            "{}\n[[hook]]\nevents = [\"failover\"]\ncommand = [\"/bin/true\"]",
            SEED.replace("cooldown = \"5m\"", "cooldown = \"10s\"\nauto_failover = false\nlog = \"debug\"")
        ));
        assert!(fixed_changes(&old, &safe).is_empty());
        assert_eq!(
            Live::of(&old).changes(&Live::of(&safe)),
            ["auto_failover on -> off", "cooldown 5m -> 10s", "hooks (0 -> 1)", "log (unset) -> debug"]
        );
        for (text, key) in [
            (SEED.replace("192.168.99.12:6403", "192.168.99.12:6405"), "[[shard]]"),
            (SEED.replace("cooldown = \"5m\"", "down_after = \"2s\""), "controller.down_after"),
            (SEED.replace("cooldown = \"5m\"", "state_file = \"/tmp/x.json\""), "controller.state_file"),
            (format!("{SEED}\n[http]\nlisten = \"127.0.0.1:1\""), "http.listen"),
            (format!("{SEED}\n[redis]\npassword = \"new\""), "[redis]"),
            (format!("{SEED}\n[sentinel]\nlisten = \"127.0.0.1:26379\""), "[sentinel]"),
        ] {
            let fixed = fixed_changes(&old, &load(&text));
            assert!(fixed.iter().any(|k| k.starts_with(key)), "{key}: {fixed:?}");
        }
    }

    /// A password read from a file is read again by SIGHUP: a changed file is refused (the
    /// log says a restart applies it), an unchanged one reloads.
    #[test]
    fn a_changed_password_file_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("redis.password"), "old\n").unwrap();
        let text = format!("{SEED}\n[redis]\npassword_file = \"redis.password\"");
        let load = || Config::from_toml(&text, "test.toml", dir.path()).unwrap();
        let old = load();
        assert!(fixed_changes(&old, &load()).is_empty());
        std::fs::write(dir.path().join("redis.password"), "new\n").unwrap();
        assert_eq!(fixed_changes(&old, &load()), ["[redis] (credentials, password files included, or TLS)"]);
    }
}
