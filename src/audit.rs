//! The Redis settings roomguard's guarantees rest on, read from every instance with
//! `CONFIG GET` at start and every [`AUDIT_PERIOD`], and reported when they undermine them.
//! roomguard never changes them: they belong in the instances' config files, which an
//! operator owns (a `CONFIG SET` would be lost at the next restart anyway).
//!
//! The ping period is also *used*: it sets how long a link may be silent before a replica
//! counts as no longer hearing its master ([`crate::detect::SilenceRule`]), so it is passed to
//! the observation store, and read again soon while some instance's period is not known.
//!
//! Two checks:
//! - `repl_ping_replica_period`: an idle master pings its replicas this often. A long period
//!   makes a silent room (power or fibre loss) slow to detect: the warning states the detection
//!   time it implies. With `link_silence` configured, a period that is not clearly shorter
//!   makes a healthy idle link look silent: a controller cut off from room 1 would then fail
//!   over (a split brain).
//! - `empty_restart`: no persistence, and a full sync that starts streaming at once. If such a
//!   master is restarted (by systemd, say) faster than `down_after`, its replicas full-sync the
//!   empty dataset before roomguard can promote one of them (README, fault-matrix row 10).
//!
//! An instance that refuses `CONFIG` (a minimal ACL user) is not audited, and its shard falls
//! back to the whole-second silence rule (logged once).
//!
//! One exception to "never changes them": a write fence that roomguard itself set
//! (`min-slaves-to-write` raised for a switchover or a room fence on Redis < 6.2, see
//! [`crate::act::FenceMark`]) and that its controller left behind when it died. Redis does
//! not expire it, and a master under it refuses every write; the audit lifts it once its
//! lease has run out, restoring the value it read there before the fence (or Redis' default
//! 0), and counts it in `roomguard_write_fences_lifted_total`. A fence whose lease runs is in
//! force (a switchover, a partitioned room) and is left alone.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    act::{ActError, FenceMark, Node},
    config::Config,
    detect::SilenceSettings,
    info::Role,
    metrics::Metrics,
    observe::{Observation, ObservationStore, PingPeriod, ProbeErrorKind},
    topology::InstanceId,
};

pub const AUDIT_PERIOD: Duration = Duration::from_secs(60);

/// How soon an instance whose settings could not be read is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// How often the ping period of the instances that drive replicas is read again between two
/// audits: a period raised at runtime (`CONFIG SET`) is followed within this (plus a read), so
/// for that long a healthy idle link may look silent (docs/detection.md).
pub const PERIOD_REFRESH: Duration = Duration::from_secs(5);

/// The period Redis recommends against nothing and roomguard recommends for production: one
/// PING per second per replica, detection of a silent room in about a second.
pub const RECOMMENDED_PING_PERIOD_SECS: u64 = 1;

/// The settings read from one instance (`None`: not readable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub ping_period: PingPeriod,
    /// The name the server knows the ping period by (`repl-ping-slave-period` before 5.0).
    pub ping_period_name: &'static str,
    /// `None` on a server without diskless sync (before 2.8.18): its full sync is disk-based.
    pub diskless_sync: Option<bool>,
    pub diskless_sync_delay_secs: Option<u64>,
    /// RDB snapshots (`save` not empty) or AOF (`appendonly yes`).
    pub persistent: Option<bool>,
    /// `min-slaves-to-write` and `min-slaves-max-lag`, for the write fence.
    pub min_replicas: Option<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// `link_silence` is configured and not clearly above the period.
    PingPeriodTooLong { setting: &'static str, period_secs: u64, link_silence_secs: u64 },
    /// The period makes a silent room slow to detect: about `detection` at worst.
    PingPeriodSlow { setting: &'static str, period_secs: u64, detection: Duration },
    EmptyRestartUnprotected {
        /// `None`: the server has no diskless sync (Redis < 2.8.18), so no delay to set.
        diskless_sync: Option<bool>,
        delay_secs: u64,
    },
}

/// Every check, for the metric's label set.
pub const CHECKS: [&str; 2] = ["repl_ping_replica_period", "empty_restart"];

impl Finding {
    pub fn check(&self) -> &'static str {
        match self {
            Finding::PingPeriodTooLong { .. } | Finding::PingPeriodSlow { .. } => CHECKS[0],
            Finding::EmptyRestartUnprotected { .. } => CHECKS[1],
        }
    }

    pub fn advice(&self) -> String {
        match self {
            Finding::PingPeriodTooLong { setting, period_secs, link_silence_secs } => format!(
                "{setting} is {period_secs}s but link_silence is {link_silence_secs}s: a healthy idle \
                 link can look silent, and a controller cut off from this room could fail over; set the period \
                 at least 2s below link_silence, or remove link_silence to derive it from the period"
            ),
            Finding::PingPeriodSlow { setting, period_secs, detection } => format!(
                "{setting} is {period_secs}s: a room that goes silent (power or fibre loss, a frozen \
                 host) is detected only after up to {} of silence; set {setting} {} in redis.conf \
                 (one PING per second per replica) to detect it in about a second",
                humantime::format_duration(*detection),
                RECOMMENDED_PING_PERIOD_SECS
            ),
            Finding::EmptyRestartUnprotected { diskless_sync: None, .. } => "no persistence (save \"\", appendonly \
                 no) and a disk-based full sync (this version has no repl-diskless-sync-delay, which came with Redis \
                 2.8.18): if this instance restarts faster than down_after it comes back empty and its replicas are \
                 wiped before roomguard can promote one; enable persistence, upgrade, or do not restart it \
                 automatically"
                .into(),
            Finding::EmptyRestartUnprotected { diskless_sync: Some(diskless_sync), delay_secs } => format!(
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
pub fn findings(seen: &Seen, silence: SilenceSettings, poll_interval: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    if let PingPeriod::Known(period_secs) = seen.ping_period {
        match silence.configured {
            // `master_last_io_seconds_ago` is whole seconds and a busy server pings late: keep
            // a margin of 2 s.
            Some(link_silence) if period_secs + 2 > link_silence.as_secs() => {
                let link_silence_secs = link_silence.as_secs();
                out.push(Finding::PingPeriodTooLong { setting: seen.ping_period_name, period_secs, link_silence_secs });
            }
            Some(_) => {}
            None if period_secs > RECOMMENDED_PING_PERIOD_SECS => {
                let detection = Duration::from_secs(period_secs) + silence.margin;
                out.push(Finding::PingPeriodSlow { setting: seen.ping_period_name, period_secs, detection });
            }
            None => {}
        }
    }
    match (seen.persistent, seen.diskless_sync) {
        (Some(false), Some(diskless_sync)) => {
            let delay_secs = seen.diskless_sync_delay_secs.unwrap_or(0);
            // roomguard needs a couple of poll rounds to see the restart and promote.
            if !diskless_sync || Duration::from_secs(delay_secs) <= 2 * poll_interval {
                out.push(Finding::EmptyRestartUnprotected { diskless_sync: Some(diskless_sync), delay_secs });
            }
        }
        (Some(false), None) => out.push(Finding::EmptyRestartUnprotected { diskless_sync: None, delay_secs: 0 }),
        _ => {}
    }
    out
}

/// Reads one instance's `repl-ping-replica-period` (`repl-ping-slave-period` before Redis 5),
/// with the name the server knows it by: [`PingPeriod::Refused`] when `CONFIG GET` is refused
/// (`NOPERM`, a renamed or disabled `CONFIG`).
pub async fn read_ping_period(node: &mut Node) -> Result<(PingPeriod, &'static str), ActError> {
    let mut ping_period_name = "repl-ping-replica-period";
    let period = match node.config_get(ping_period_name).await {
        // Before Redis 5 the parameter had only its old name.
        Ok(None) => {
            ping_period_name = "repl-ping-slave-period";
            node.config_get(ping_period_name).await
        }
        other => other,
    };
    match period {
        Ok(value) => Ok((
            value.and_then(|v| v.trim().parse::<u64>().ok()).map_or(PingPeriod::Unknown, PingPeriod::Known),
            ping_period_name,
        )),
        Err(ActError::Command { error, .. })
            if matches!(error.kind, ProbeErrorKind::Auth | ProbeErrorKind::UnknownCommand | ProbeErrorKind::Redis) =>
        {
            Ok((PingPeriod::Refused, ping_period_name))
        }
        Err(e) => Err(e),
    }
}

/// Reads the audited settings of one instance. The ping period first: an instance that
/// refuses `CONFIG GET` has it [`PingPeriod::Refused`] and nothing else read.
pub async fn read(node: &mut Node) -> Result<Seen, ActError> {
    let number = |v: Option<String>| v.and_then(|v| v.trim().parse::<u64>().ok());
    let yes = |v: Option<String>| v.map(|v| v.trim() == "yes");
    let (ping_period, ping_period_name) = read_ping_period(node).await?;
    if ping_period == PingPeriod::Refused {
        return Ok(Seen { ping_period, ping_period_name, ..Seen::default() });
    }
    let save = node.config_get("save").await?;
    let appendonly = yes(node.config_get("appendonly").await?);
    let min_replicas = match node.config_get("min-slaves-to-write").await? {
        Some(to_write) => Some((to_write, node.config_get("min-slaves-max-lag").await?)),
        None => None,
    };
    Ok(Seen {
        ping_period,
        ping_period_name,
        min_replicas,
        diskless_sync: yes(node.config_get("repl-diskless-sync").await?),
        diskless_sync_delay_secs: number(node.config_get("repl-diskless-sync-delay").await?),
        persistent: match (save, appendonly) {
            (Some(save), Some(aof)) => Some(!save.trim().is_empty() || aof),
            _ => None,
        },
    })
}

/// The instances whose ping period drives some replica's offset, as the pollers see them now:
/// those that answer as masters, and replicas with replicas of their own that may ping them
/// (a version before 4.0, or not known). See [`crate::detect::SilenceRule::for_replica`].
fn drivers(observation: &Observation) -> Vec<InstanceId> {
    (0..observation.instances.len())
        .filter(|&id| {
            observation.live(id).is_some_and(|info| {
                info.role == Role::Master
                    || (!info.replicas.is_empty()
                        && !observation.get(id).version.is_some_and(|v| v.forwards_master_stream()))
            })
        })
        .collect()
}

/// What the audit remembers of one instance's `min-slaves-to-write` between audits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FenceMemory {
    /// The last values seen without a fence: what to restore.
    unfenced: Option<(String, Option<String>)>,
    /// The last audit found a fence without a lease.
    unleased: bool,
}

/// A fence to lift: the value found, and the values to set back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeftOver {
    found: String,
    to_write: String,
    max_lag: Option<String>,
}

/// Pure: whether `seen` shows a roomguard write fence left over (see [`FenceMark::left_over`]),
/// and the memory for the next audit.
fn judge_fence(seen: &Seen, memory: &FenceMemory, now: SystemTime) -> (Option<LeftOver>, FenceMemory) {
    let Some((to_write, max_lag)) = &seen.min_replicas else { return (None, memory.clone()) };
    match FenceMark::parse(to_write) {
        None => (None, FenceMemory { unfenced: Some((to_write.clone(), max_lag.clone())), unleased: false }),
        Some(mark) => {
            let next = FenceMemory { unleased: mark == FenceMark::Unleased, ..memory.clone() };
            if !mark.left_over(now, memory.unleased) {
                return (None, next);
            }
            let (restore, restore_lag) = match &memory.unfenced {
                Some((to_write, max_lag)) => (to_write.clone(), max_lag.clone()),
                None => ("0".to_string(), None),
            };
            (Some(LeftOver { found: to_write.clone(), to_write: restore, max_lag: restore_lag }), next)
        }
    }
}

/// Audits every instance now and every [`AUDIT_PERIOD`] (every [`RETRY`] while some instance
/// could not be read), and re-reads the ping period of the instances that drive replicas every
/// [`PERIOD_REFRESH`] in between; passes the ping periods to `store`, logs a finding when it
/// appears (one line naming every instance it appeared on; at debug level in the lab, whose
/// settings are deliberate) and exports `roomguard_config_warning{check}` (1 while it holds).
pub async fn run(config: Config, metrics: Arc<Metrics>, store: ObservationStore, token: CancellationToken) {
    let (config, metrics): (&Config, &Metrics) = (&config, &metrics);
    let c = &config.controller;
    let mut known: Vec<Vec<Finding>> = vec![Vec::new(); config.topology.instances.len()];
    let mut periods = Periods::new(config.topology.instances.len());
    let mut fences = vec![FenceMemory::default(); config.topology.instances.len()];
    loop {
        let memory = &fences;
        let audits = (0..config.topology.instances.len()).map(|id| async move {
            let addr = config.topology.addr(id);
            let seen = async {
                let mut node = Node::connect(addr, config.redis.instance(id), c.timeout).await?;
                let seen = read(&mut node).await?;
                let (left_over, next) = judge_fence(&seen, &memory[id], SystemTime::now());
                if let Some(fence) = left_over {
                    lift(metrics, &mut node, id, &fence).await;
                }
                Ok::<_, ActError>((seen, next))
            };
            (id, tokio::time::timeout(c.timeout * 10, seen).await)
        });
        let mut incomplete = false;
        let mut audited = Vec::new();
        let mut read = Vec::new();
        for (id, result) in futures::future::join_all(audits).await {
            let addr = config.topology.addr(id);
            match result {
                Ok(Ok((seen, memory))) => {
                    fences[id] = memory;
                    read.push((id, seen.ping_period));
                    incomplete |= seen.ping_period == PingPeriod::Unknown;
                    audited.push((id, findings(&seen, c.silence(), c.poll_interval)));
                }
                Ok(Err(e)) => {
                    debug!(instance = %addr, error = %e, "settings not audited");
                    incomplete = true;
                }
                Err(_) => {
                    debug!(instance = %addr, "settings not audited: no answer");
                    incomplete = true;
                }
            }
        }
        periods.note(config, &store, &read);
        for (finding, ids) in new_findings(&known, &audited) {
            let instances: Vec<String> = ids.iter().map(|&id| config.topology.addr(id).to_string()).collect();
            let (n, instances) = (instances.len(), instances.join(", "));
            let plural = if n == 1 { "" } else { "s" };
            if config.lab {
                debug!(check = finding.check(), %instances, "deliberate lab setting on {n} instance{plural}: {}", finding.advice());
            } else {
                warn!(
                    check = finding.check(),
                    %instances,
                    "Redis setting undermines roomguard on {n} instance{plural}: {}",
                    finding.advice()
                );
            }
        }
        for (id, found) in audited {
            record(metrics, id, &found);
            known[id] = found;
        }
        let next_audit = tokio::time::Instant::now() + if incomplete { RETRY } else { AUDIT_PERIOD };
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(PERIOD_REFRESH) => {}
            }
            if tokio::time::Instant::now() + PERIOD_REFRESH / 2 >= next_audit {
                break;
            }
            periods.note(config, &store, &read_periods(config, &store.snapshot()).await);
        }
    }
}

/// One probe of every instance, with the ping periods of those that drive replicas: the picture
/// one-shot commands (`status`, `failover`) judge silence by, as the loop would.
pub async fn probe_all_with_periods(config: &Config) -> Observation {
    let mut observation = crate::probe::probe_all(&config.topology, &config.redis, config.controller.timeout).await;
    for (id, period) in read_periods(config, &observation).await {
        observation.instances[id].ping_period = period;
    }
    observation
}

/// Reads the ping period of every instance that drives replicas in `observation` (one `CONFIG
/// GET` each, all at once); those that do not answer in time are left out. The control loop's
/// audit refreshes the periods with it.
async fn read_periods(config: &Config, observation: &Observation) -> Vec<(InstanceId, PingPeriod)> {
    let c = &config.controller;
    let reads = drivers(observation).into_iter().map(|id| async move {
        let read = async {
            let mut node = Node::connect(config.topology.addr(id), config.redis.instance(id), c.timeout).await?;
            read_ping_period(&mut node).await.map(|(period, _)| period)
        };
        (id, tokio::time::timeout(c.timeout * 4, read).await)
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .filter_map(|(id, result)| Some((id, result.ok()?.ok()?)))
        .collect()
}

/// What the audit last read of every instance's ping period, to say a refusal once.
struct Periods {
    refused: Vec<bool>,
}

impl Periods {
    fn new(count: usize) -> Self {
        Periods { refused: vec![false; count] }
    }

    /// Passes the periods read to the store; logs the instances newly refusing `CONFIG GET`
    /// in one line.
    fn note(&mut self, config: &Config, store: &ObservationStore, read: &[(InstanceId, PingPeriod)]) {
        let mut newly_refused = Vec::new();
        for &(id, period) in read {
            store.record_ping_period(id, period);
            let refused = period == PingPeriod::Refused;
            if refused && !self.refused[id] {
                newly_refused.push(config.topology.addr(id).to_string());
            }
            self.refused[id] = refused;
        }
        if !newly_refused.is_empty() {
            warn!(
                instances = %newly_refused.join(", "),
                "CONFIG GET repl-ping-replica-period refused by {}: silence evidence for the replicas they drive \
                 falls back to master_last_io_seconds_ago above {} (grant +config|get for detection at the ping \
                 period)",
                newly_refused.join(", "),
                humantime::format_duration(crate::detect::FALLBACK_LINK_SILENCE)
            );
        }
    }
}

/// The findings in `audited` that `known` (the last audit's, per instance) did not have, each
/// once with every instance it is new on, in the order first met: one log line per finding,
/// not one per instance (the lab's eight instances share every setting).
fn new_findings(known: &[Vec<Finding>], audited: &[(InstanceId, Vec<Finding>)]) -> Vec<(Finding, Vec<InstanceId>)> {
    let mut out: Vec<(Finding, Vec<InstanceId>)> = Vec::new();
    for (id, found) in audited {
        for finding in found.iter().filter(|f| !known[*id].contains(f)) {
            match out.iter_mut().find(|(f, _)| f == finding) {
                Some((_, ids)) => ids.push(*id),
                None => out.push((finding.clone(), vec![*id])),
            }
        }
    }
    out
}

/// Lifts a fence left over on `node` (logged, counted); one that changed meanwhile is left.
async fn lift(metrics: &Metrics, node: &mut Node, id: InstanceId, fence: &LeftOver) {
    let LeftOver { found, to_write, max_lag } = fence;
    let held = match FenceMark::parse(found) {
        Some(FenceMark::Leased(until)) => format!("its lease ran out at {}", humantime::format_rfc3339_seconds(until)),
        _ => "it has no lease and was there at the previous audit".into(),
    };
    match node.lift_left_over_fence(found, to_write, max_lag.as_deref()).await {
        Ok(true) => {
            metrics.record_write_fence_lifted(id);
            warn!(
                instance = %node.addr,
                "lifted a write fence left on {} (min-slaves-to-write {found}; {held}): a switchover or room fence \
                 whose controller died left it, and the instance refused every write while it was a master; \
                 min-slaves-to-write is {to_write} again",
                node.addr
            );
        }
        Ok(false) => debug!(instance = %node.addr, "the write fence changed while it was being lifted: left as it is"),
        Err(e) => warn!(
            instance = %node.addr,
            error = %e,
            "a write fence is left on {} (min-slaves-to-write {found}; {held}) and could not be lifted: run CONFIG \
             SET min-slaves-to-write {to_write} on it",
            node.addr
        ),
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
            ping_period: PingPeriod::Known(10),
            ping_period_name: "repl-ping-replica-period",
            diskless_sync: Some(true),
            diskless_sync_delay_secs: Some(5),
            persistent: Some(true),
            min_replicas: None,
        };
        let lab = Seen {
            ping_period: PingPeriod::Known(1),
            diskless_sync_delay_secs: Some(0),
            persistent: Some(false),
            ..redis_default.clone()
        };
        let configured = |silence: Duration| SilenceSettings { configured: Some(silence), margin: ms(400) };
        let checks = |seen: &Seen, silence: Duration| -> Vec<&str> {
            findings(seen, configured(silence), ms(100)).iter().map(Finding::check).collect()
        };
        assert!(checks(&redis_default, secs(12)).is_empty(), "Redis' defaults with roomguard's");
        assert_eq!(checks(&redis_default, secs(3)), ["repl_ping_replica_period"]);
        assert_eq!(
            checks(&Seen { ping_period: PingPeriod::Known(11), ..redis_default.clone() }, secs(12)),
            ["repl_ping_replica_period"]
        );
        assert_eq!(checks(&lab, secs(3)), ["empty_restart"], "the lab runs without persistence and with no delay");
        assert!(checks(&Seen { diskless_sync_delay_secs: Some(5), ..lab.clone() }, secs(3)).is_empty());
        assert_eq!(
            checks(&Seen { diskless_sync: Some(false), diskless_sync_delay_secs: Some(5), ..lab.clone() }, secs(3)),
            ["empty_restart"]
        );
        assert!(checks(&Seen::default(), secs(3)).is_empty(), "nothing readable, nothing claimed");
        let advice = findings(&lab, configured(secs(3)), ms(100))[0].advice();
        assert!(advice.contains("repl-diskless-sync-delay 0"), "{advice}");

        // Derived thresholds: a period above 1s is flagged with the detection time it implies.
        let derived = SilenceSettings { configured: None, margin: ms(400) };
        let slow = findings(&redis_default, derived, ms(100));
        let setting = "repl-ping-replica-period";
        assert_eq!(slow, [Finding::PingPeriodSlow { setting, period_secs: 10, detection: ms(10_400) }]);
        assert!(slow[0].advice().contains("10s 400ms"), "{}", slow[0].advice());
        // Redis < 5.0 refuses the new name in redis.conf: the advice names the one it knows.
        let old = Seen { ping_period_name: "repl-ping-slave-period", ..redis_default.clone() };
        let advice = findings(&old, derived, ms(100))[0].advice();
        assert!(advice.contains("set repl-ping-slave-period 1") && !advice.contains("repl-ping-replica"), "{advice}");
        // Redis 2.8.17 has no diskless sync: without persistence its disk-based sync is unprotected.
        let r28 = Seen { diskless_sync: None, diskless_sync_delay_secs: None, ..lab.clone() };
        let found = findings(&r28, derived, ms(100));
        assert_eq!(found, [Finding::EmptyRestartUnprotected { diskless_sync: None, delay_secs: 0 }]);
        assert!(found[0].advice().contains("2.8.18"), "{}", found[0].advice());
        assert!(findings(&Seen { persistent: Some(true), ..r28 }, derived, ms(100)).is_empty());
        assert_eq!(findings(&lab, derived, ms(100)).iter().map(Finding::check).collect::<Vec<_>>(), ["empty_restart"]);
    }

    #[test]
    fn one_line_per_finding_listing_the_instances() {
        let empty = |delay_secs| Finding::EmptyRestartUnprotected { diskless_sync: Some(true), delay_secs };
        let slow = Finding::PingPeriodSlow {
            setting: "repl-ping-replica-period",
            period_secs: 10,
            detection: Duration::from_millis(10_400),
        };
        let audited = vec![(0, vec![empty(0)]), (1, vec![empty(0), slow.clone()]), (2, vec![]), (3, vec![empty(0)])];
        let nothing_known = vec![Vec::new(); 4];
        assert_eq!(new_findings(&nothing_known, &audited), [(empty(0), vec![0, 1, 3]), (slow.clone(), vec![1])]);
        // The next audit finds the same: nothing new to say.
        let known: Vec<Vec<Finding>> = audited.iter().map(|(_, f)| f.clone()).collect();
        assert!(new_findings(&known, &audited).is_empty());
        // A finding that changed (another delay) is new on that instance only.
        let changed = vec![(0, vec![empty(0)]), (1, vec![empty(1), slow.clone()]), (3, vec![empty(0)])];
        assert_eq!(new_findings(&known, &changed), [(empty(1), vec![1])]);
    }

    #[test]
    fn a_write_fence_is_lifted_only_once_it_is_left_over() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let seen = |to_write: &str, max_lag: &str| Seen {
            min_replicas: Some((to_write.to_string(), Some(max_lag.to_string()))),
            ..Seen::default()
        };
        let nothing = FenceMemory::default();
        // Not a fence: remembered as the value to restore.
        let (lift, memory) = judge_fence(&seen("1", "10"), &nothing, now);
        assert_eq!(lift, None);
        assert_eq!(memory.unfenced, Some(("1".to_string(), Some("10".to_string()))));
        // A fence whose lease runs (or ran out less than the grace ago) is in force.
        let leased = |until: SystemTime| FenceMark::value(until);
        for until in [now + Duration::from_secs(5), now - FenceMark::GRACE + Duration::from_secs(1)] {
            assert_eq!(judge_fence(&seen(&leased(until), "10"), &memory, now).0, None, "{until:?}");
        }
        // Left over: the values seen before the fence come back.
        let stale = leased(now - FenceMark::GRACE - Duration::from_secs(1));
        let (lift, _) = judge_fence(&seen(&stale, "10"), &memory, now);
        let expected = LeftOver { found: stale.clone(), to_write: "1".into(), max_lag: Some("10".into()) };
        assert_eq!(lift, Some(expected));
        // Nothing seen before the fence: Redis' default, and min-slaves-max-lag left as it is.
        let (lift, _) = judge_fence(&seen(&stale, "10"), &nothing, now);
        assert_eq!(lift, Some(LeftOver { found: stale, to_write: "0".into(), max_lag: None }));
        // Without a lease (an older roomguard's 1000000): only once a previous audit saw it too.
        let (lift, memory) = judge_fence(&seen("1000000", "10"), &nothing, now);
        assert_eq!((lift, memory.unleased), (None, true));
        let (lift, _) = judge_fence(&seen("1000000", "10"), &memory, now);
        assert_eq!(lift.map(|l| l.to_write), Some("0".to_string()));
        // Not readable: nothing claimed, the memory kept.
        assert_eq!(judge_fence(&Seen::default(), &memory, now), (None, memory.clone()));
    }
}
