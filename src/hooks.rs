//! Hooks: external commands run on the controller's events (`[[hook]]`), for what roomguard
//! does not do itself — rewriting a proxy's configuration, paging someone, updating DNS.
//!
//! A hook runs *after* the action, from the event stream ([`crate::events`]), on its own
//! task: it never blocks or delays a promotion. Its details are in environment variables
//! (`RG_EVENT`, `RG_SHARD`, `RG_ROOM`, `RG_OLD_MASTER`, `RG_NEW_MASTER`, `RG_TRIGGER`,
//! `RG_INSTANCE`; not `ROOMGUARD_*`, which would be read as configuration overrides by a hook
//! that runs `roomguard` itself). A hook that outlives its `timeout` is killed with its
//! whole process group. Every run's outcome is logged and counted in
//! `roomguard_hook_runs_total{event,outcome}`.

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    events::{Event, HOOK_EVENTS},
    metrics::Metrics,
};

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

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(format!("{culprit}: `timeout` must be greater than zero"));
        }
        Ok(HookSettings { events: self.events, command, timeout })
    }
}

/// The environment a hook gets for an event.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![("RG_EVENT", event.hook_name().unwrap_or_default().to_string())];
    match event {
        Event::MasterSwitched { shard, old, new, room, trigger } => env.extend([
            ("RG_SHARD", shard.clone()),
            ("RG_ROOM", room.clone()),
            ("RG_OLD_MASTER", old.to_string()),
            ("RG_NEW_MASTER", new.to_string()),
            ("RG_TRIGGER", trigger.label().to_string()),
        ]),
        Event::Demoted { shard, room, instance, master } => env.extend([
            ("RG_SHARD", shard.clone()),
            ("RG_ROOM", room.clone()),
            ("RG_INSTANCE", instance.to_string()),
            ("RG_NEW_MASTER", master.to_string()),
        ]),
        Event::RoomLost { room } | Event::RoomBack { room } | Event::CutOff { room } => {
            env.push(("RG_ROOM", room.clone()))
        }
        Event::SubjectivelyDown { .. } | Event::ObjectivelyDown { .. } => {}
    }
    env
}

/// Runs the hooks for every event until `token` is cancelled. Each run is a task on
/// `tracker`, so shutdown waits for running hooks (each bounded by its timeout).
pub async fn run(
    hooks: Vec<HookSettings>,
    mut events: broadcast::Receiver<Event>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = token.cancelled() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "hooks: {n} events were missed (too many at once); their hooks did not run");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(name) = event.hook_name() else { continue };
        for hook in hooks.iter().filter(|h| h.events.iter().any(|e| e == name)) {
            let (hook, env, metrics) = (hook.clone(), environment(&event), metrics.clone());
            tracker.spawn(async move {
                let outcome = run_one(&hook, &env).await;
                metrics.record_hook(name, outcome);
            });
        }
    }
}

/// Runs one hook; returns its outcome label: `ok`, `failed` (non-zero exit), `timeout`
/// (killed), `error` (could not be started).
async fn run_one(hook: &HookSettings, env: &[(&'static str, String)]) -> &'static str {
    let program = &hook.command[0];
    let event = &env[0].1;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&hook.command[1..])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(hook = %program, event, error = %e, "hook could not be started");
            return "error";
        }
    };
    let pid = child.id();
    match tokio::time::timeout(hook.timeout, child.wait_with_output()).await {
        Ok(Ok(output)) if output.status.success() => {
            info!(hook = %program, event, "hook ran");
            "ok"
        }
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
            warn!(hook = %program, event, status = %output.status, stderr = %tail.trim(), "hook failed");
            "failed"
        }
        Ok(Err(e)) => {
            warn!(hook = %program, event, error = %e, "hook: waiting for it failed");
            "error"
        }
        Err(_) => {
            if let Some(pid) = pid {
                // The group id is the child's pid (process_group(0)).
                let _ = tokio::process::Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pid}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            warn!(hook = %program, event, timeout = ?hook.timeout, "hook timed out and was killed");
            "timeout"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{state::Trigger, topology::Addr};

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
        assert_eq!(ok.timeout, DEFAULT_TIMEOUT);
        assert_eq!(raw(&["failover"], &["logger"]).validate(1, base).unwrap().command, ["logger"]);
        let e = raw(&["failovr"], &["x"]).validate(2, base).unwrap_err();
        assert!(e.contains("[[hook]] number 2") && e.contains("failovr"), "{e}");
        assert!(raw(&[], &["x"]).validate(1, base).unwrap_err().contains("`events` is empty"));
        assert!(raw(&["demote"], &[]).validate(1, base).unwrap_err().contains("`command` is empty"));
        let zero = RawHook { timeout: Some(Duration::ZERO), ..raw(&["demote"], &["x"]) };
        assert!(zero.validate(1, base).unwrap_err().contains("timeout"));
    }

    #[test]
    fn environment_of_events() {
        let env = environment(&Event::MasterSwitched {
            shard: "s1".into(),
            old: Addr::new("10.0.0.1", 6401),
            new: Addr::new("10.0.0.2", 6401),
            room: "2".into(),
            trigger: Trigger::Manual,
        });
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RG_EVENT"), Some("switchover"));
        assert_eq!(get("RG_OLD_MASTER"), Some("10.0.0.1:6401"));
        assert_eq!(get("RG_NEW_MASTER"), Some("10.0.0.2:6401"));
        assert_eq!(get("RG_TRIGGER"), Some("manual"));
        assert_eq!(
            environment(&Event::CutOff { room: "1".into() }),
            [("RG_EVENT", "cut_off".into()), ("RG_ROOM", "1".into())]
        );
    }
}
