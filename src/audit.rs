//! The Redis settings roomguard's guarantees rest on, read from every instance with
//! `CONFIG GET` at start and every [`AUDIT_PERIOD`], and reported when they undermine them.
//! roomguard never changes them: they belong in the instances' config files, which an
//! operator owns (a `CONFIG SET` would be lost at the next restart anyway).
//!
//! Two checks:
//! - `repl_ping_replica_period`: an idle master pings its replicas this often, and the
//!   cross-room evidence ("room 2 no longer hears room 1") counts a link as silent after
//!   `link_silence`. A period that is not clearly shorter makes a healthy idle link look
//!   silent: a controller cut off from room 1 would then fail over (a split brain).
//! - `empty_restart`: no persistence, and a full sync that starts streaming at once. If such a
//!   master is restarted (by systemd, say) faster than `down_after`, its replicas full-sync the
//!   empty dataset before roomguard can promote one of them (README, fault-matrix row 10).
//!
//! An instance that refuses `CONFIG` (a minimal ACL user) is simply not audited.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{act::Node, config::Config, controller::Shared, metrics::Metrics, topology::InstanceId};

pub const AUDIT_PERIOD: Duration = Duration::from_secs(600);

/// The settings read from one instance (`None`: not readable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub ping_period_secs: Option<u64>,
    pub diskless_sync: Option<bool>,
    pub diskless_sync_delay_secs: Option<u64>,
    /// RDB snapshots (`save` not empty) or AOF (`appendonly yes`).
    pub persistent: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    PingPeriodTooLong { period_secs: u64, link_silence_secs: u64 },
    EmptyRestartUnprotected { diskless_sync: bool, delay_secs: u64 },
}

/// Every check, for the metric's label set.
pub const CHECKS: [&str; 2] = ["repl_ping_replica_period", "empty_restart"];

impl Finding {
    pub fn check(&self) -> &'static str {
        match self {
            Finding::PingPeriodTooLong { .. } => CHECKS[0],
            Finding::EmptyRestartUnprotected { .. } => CHECKS[1],
        }
    }

    pub fn advice(&self) -> String {
        match self {
            Finding::PingPeriodTooLong { period_secs, link_silence_secs } => format!(
                "repl-ping-replica-period is {period_secs}s but link_silence is {link_silence_secs}s: a healthy idle \
                 link can look silent, and a controller cut off from this room could fail over; set the period \
                 at least 2s below link_silence (the lab uses 1s with link_silence 3s)"
            ),
            Finding::EmptyRestartUnprotected { diskless_sync, delay_secs } => format!(
                "no persistence (save \"\", appendonly no) and a full sync that streams at once ({}): if this \
                 instance restarts faster than down_after it comes back empty and its replicas are wiped before \
                 roomguard can promote one; enable persistence, or keep repl-diskless-sync yes with \
                 repl-diskless-sync-delay of at least 1s (Redis' default is 5s), or do not restart it automatically",
                if *diskless_sync {
                    format!("repl-diskless-sync-delay {delay_secs}")
                } else {
                    "disk-based sync".into()
                }
            ),
        }
    }
}

/// What is wrong with one instance's settings, given the controller's.
pub fn findings(seen: &Seen, link_silence: Duration, poll_interval: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    let link_silence_secs = link_silence.as_secs();
    if let Some(period_secs) = seen.ping_period_secs {
        // `master_last_io_seconds_ago` is whole seconds and a busy server pings late: keep a
        // margin of 2 s.
        if period_secs + 2 > link_silence_secs {
            out.push(Finding::PingPeriodTooLong { period_secs, link_silence_secs });
        }
    }
    if let (Some(false), Some(diskless_sync)) = (seen.persistent, seen.diskless_sync) {
        let delay_secs = seen.diskless_sync_delay_secs.unwrap_or(0);
        // roomguard needs a couple of poll rounds to see the restart and promote.
        if !diskless_sync || Duration::from_secs(delay_secs) <= 2 * poll_interval {
            out.push(Finding::EmptyRestartUnprotected { diskless_sync, delay_secs });
        }
    }
    out
}

/// Reads the audited settings of one instance.
pub async fn read(node: &mut Node) -> Result<Seen, crate::act::ActError> {
    let number = |v: Option<String>| v.and_then(|v| v.trim().parse().ok());
    let yes = |v: Option<String>| v.map(|v| v.trim() == "yes");
    let save = node.config_get("save").await?;
    let appendonly = yes(node.config_get("appendonly").await?);
    Ok(Seen {
        ping_period_secs: number(node.config_get("repl-ping-replica-period").await?),
        diskless_sync: yes(node.config_get("repl-diskless-sync").await?),
        diskless_sync_delay_secs: number(node.config_get("repl-diskless-sync-delay").await?),
        persistent: match (save, appendonly) {
            (Some(save), Some(aof)) => Some(!save.trim().is_empty() || aof),
            _ => None,
        },
    })
}

/// Audits every instance now and every [`AUDIT_PERIOD`]; logs a finding when it appears and
/// exports `roomguard_config_warning{check}` (1 while it holds).
pub async fn run(shared: std::sync::Arc<Shared>, token: CancellationToken) {
    let config: &Config = &shared.config;
    let metrics: &Metrics = &shared.metrics;
    let c = &config.controller;
    let mut known: Vec<Vec<Finding>> = vec![Vec::new(); config.topology.instances.len()];
    loop {
        let audits = (0..config.topology.instances.len()).map(|id| async move {
            let addr = config.topology.addr(id);
            let seen = async {
                let mut node = Node::connect(addr, config.redis.instance(id), c.timeout).await?;
                read(&mut node).await
            };
            (id, tokio::time::timeout(c.timeout * 10, seen).await)
        });
        for (id, result) in futures::future::join_all(audits).await {
            let addr = config.topology.addr(id);
            let found = match result {
                Ok(Ok(seen)) => findings(&seen, c.link_silence, c.poll_interval),
                Ok(Err(e)) => {
                    debug!(instance = %addr, error = %e, "settings not audited");
                    continue;
                }
                Err(_) => {
                    debug!(instance = %addr, "settings not audited: no answer");
                    continue;
                }
            };
            for finding in &found {
                if !known[id].contains(finding) {
                    warn!(instance = %addr, check = finding.check(), "Redis setting undermines roomguard: {}", finding.advice());
                }
            }
            record(metrics, id, &found);
            known[id] = found;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(AUDIT_PERIOD) => {}
        }
    }
}

fn record(metrics: &Metrics, id: InstanceId, found: &[Finding]) {
    for check in CHECKS {
        metrics.set_config_warning(id, check, found.iter().any(|f| f.check() == check));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let redis_default = Seen {
            ping_period_secs: Some(10),
            diskless_sync: Some(true),
            diskless_sync_delay_secs: Some(5),
            persistent: Some(true),
        };
        let lab = Seen {
            ping_period_secs: Some(1),
            diskless_sync_delay_secs: Some(0),
            persistent: Some(false),
            ..redis_default.clone()
        };
        let checks = |seen: &Seen, silence: Duration| -> Vec<&str> {
            findings(seen, silence, ms(100)).iter().map(Finding::check).collect()
        };
        assert!(checks(&redis_default, secs(12)).is_empty(), "Redis' defaults with roomguard's");
        assert_eq!(checks(&redis_default, secs(3)), ["repl_ping_replica_period"]);
        assert_eq!(
            checks(&Seen { ping_period_secs: Some(11), ..redis_default.clone() }, secs(12)),
            ["repl_ping_replica_period"]
        );
        assert_eq!(checks(&lab, secs(3)), ["empty_restart"], "the lab runs without persistence and with no delay");
        assert!(checks(&Seen { diskless_sync_delay_secs: Some(5), ..lab.clone() }, secs(3)).is_empty());
        assert_eq!(
            checks(&Seen { diskless_sync: Some(false), diskless_sync_delay_secs: Some(5), ..lab.clone() }, secs(3)),
            ["empty_restart"]
        );
        assert!(checks(&Seen::default(), secs(3)).is_empty(), "nothing readable, nothing claimed");
        let advice = findings(&lab, secs(3), ms(100))[0].advice();
        assert!(advice.contains("repl-diskless-sync-delay 0"), "{advice}");
    }
}
