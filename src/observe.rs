//! What the pollers saw: the latest outcome of every instance's probe, plus how long it has
//! been failing. This is the only input the pure decision steps ([`crate::detect`],
//! [`crate::plan`]) read about Redis.
//!
//! The pollers write into an [`ObservationStore`]; the control loop takes a consistent
//! [`Observation`] snapshot each round. A std `Mutex` suffices: critical sections are a few
//! field copies and never span an `.await`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    health::Heartbeat,
    info::{ReplicationInfo, Role},
    topology::{InstanceId, Topology},
    version::ServerVersion,
};

/// Why a probe failed. The label is used in metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeErrorKind {
    /// Nothing listens on the port (the process is gone).
    Refused,
    /// No answer within the timeout (a hung process, a frozen host, a black hole).
    Timeout,
    /// `NOAUTH`, `WRONGPASS` or a failed handshake.
    Auth,
    /// `-LOADING`: Redis is loading its dataset (after a restart, or a replica loading a full
    /// sync). The process is alive: see [`InstanceObservation::record`].
    Loading,
    /// The peer sent more than [`crate::wire::MAX_REPLY_BYTES`] without finishing a reply.
    Oversized,
    /// The TLS handshake failed: untrusted or misnamed certificate, or not a TLS port.
    Tls,
    /// The command is unknown: renamed or disabled with `rename-command`.
    UnknownCommand,
    /// The reply was not RESP (not a Redis, or a broken one).
    Protocol,
    /// A Redis reply that is not a usable `INFO replication` section.
    Info,
    /// Another network error (reset, unreachable).
    Io,
    /// Another error reply from Redis.
    Redis,
    /// No probe of the instance finished for longer than [`max_age`]: the controller's own
    /// poller is stuck, so what it last saw is history, not evidence (see [`Observation::aged`]).
    Stale,
}

impl ProbeErrorKind {
    /// Every kind (for the metrics' series at 0).
    pub const ALL: [ProbeErrorKind; 12] = [
        ProbeErrorKind::Refused,
        ProbeErrorKind::Timeout,
        ProbeErrorKind::Auth,
        ProbeErrorKind::Loading,
        ProbeErrorKind::Oversized,
        ProbeErrorKind::Tls,
        ProbeErrorKind::UnknownCommand,
        ProbeErrorKind::Protocol,
        ProbeErrorKind::Info,
        ProbeErrorKind::Io,
        ProbeErrorKind::Redis,
        ProbeErrorKind::Stale,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ProbeErrorKind::Refused => "refused",
            ProbeErrorKind::Timeout => "timeout",
            ProbeErrorKind::Auth => "auth",
            ProbeErrorKind::Loading => "loading",
            ProbeErrorKind::Oversized => "oversized",
            ProbeErrorKind::Tls => "tls",
            ProbeErrorKind::UnknownCommand => "unknown_command",
            ProbeErrorKind::Protocol => "protocol",
            ProbeErrorKind::Info => "info",
            ProbeErrorKind::Io => "io",
            ProbeErrorKind::Redis => "redis",
            ProbeErrorKind::Stale => "stale",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} ({message})", kind.label())]
pub struct ProbeError {
    pub kind: ProbeErrorKind,
    pub message: String,
}

impl ProbeError {
    pub fn new(kind: ProbeErrorKind, message: impl Into<String>) -> Self {
        ProbeError { kind, message: message.into() }
    }
}

/// Everything known about one instance.
#[derive(Clone, Debug, Default)]
pub struct InstanceObservation {
    /// When the latest finished probe started.
    pub probed_at: Option<Instant>,
    /// Whether the latest finished probe succeeded.
    pub reachable: bool,
    /// The reply of the latest successful probe (kept while failing, as the last known state).
    pub info: Option<ReplicationInfo>,
    /// Start of the first failed probe of the current run of failures; `None` while healthy.
    pub failing_since: Option<Instant>,
    pub last_error: Option<ProbeError>,
    pub last_latency: Option<Duration>,
    /// Start of the first probe of the current run in which it answered as a master. A
    /// failed probe resets it: an instance that comes back as a master (a restart) starts a
    /// new run.
    pub master_since: Option<Instant>,
    /// Set when the instance came back as a master that lost the replication history it had
    /// before (see [`LostHistory`]); cleared once it replicates again.
    pub lost_history: Option<LostHistory>,
    /// Start of the latest successful probe.
    pub answered_at: Option<Instant>,
    /// How its master's stream has been arriving, while it is a replica that answers.
    pub progress: Option<OffsetProgress>,
    /// Its `repl-ping-replica-period`, read by the settings audit.
    pub ping_period: PingPeriod,
    /// The server's version, read once per connection (kept while failing).
    pub version: Option<ServerVersion>,
    /// The `run_id` of the process that answers (read once per connection; a restart changes
    /// it). `None` until read.
    pub run_id: Option<String>,
    /// The `run_id` of the process when it last answered as a replica.
    pub replica_run_id: Option<String>,
    /// When the process that answers started (`uptime_in_seconds`, read with the version).
    pub started_at: Option<Instant>,
}

/// The controller's record of one replica's offset: the value, when it was first seen, and
/// when it was last seen unchanged. `first_seen` is the *end* of the first probe that showed
/// the value and `last_seen` the *start* of the latest one: the instance's offset read happens
/// between a probe's start and end, so `last_seen - first_seen` never exceeds the time the
/// offset truly stood still, however late the probes ran. A controller that stalls (a loaded
/// host) therefore sees less silence, never more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetProgress {
    pub offset: i64,
    pub first_seen: Instant,
    pub last_seen: Instant,
}

impl OffsetProgress {
    /// How long the offset has been seen standing still.
    pub fn still_for(&self) -> Duration {
        self.last_seen.saturating_duration_since(self.first_seen)
    }

    fn next(previous: Option<OffsetProgress>, offset: i64, started: Instant, finished: Instant) -> OffsetProgress {
        match previous {
            Some(p) if p.offset == offset => OffsetProgress { last_seen: started.max(p.last_seen), ..p },
            _ => OffsetProgress { offset, first_seen: finished, last_seen: finished },
        }
    }
}

/// An instance's `repl-ping-replica-period` (`repl-ping-slave-period` before Redis 5), as far
/// as the controller knows it. An idle master sends its replicas nothing but a PING this often,
/// so it bounds how long a healthy link can be silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "seconds", rename_all = "snake_case")]
pub enum PingPeriod {
    /// Not read yet (not reachable since the controller started).
    #[default]
    Unknown,
    /// `CONFIG GET` was refused (an ACL without `+config|get`, a renamed `CONFIG`).
    Refused,
    Known(u64),
}

/// How recent the previous answer must be for an offset that went back to count as a restart
/// (see [`LostHistory`]): across a longer gap (a controller cut off for minutes) the instance
/// may have been demoted, resynced to a shorter history and promoted again, all unseen.
pub const RESTART_EVIDENCE_WINDOW: Duration = Duration::from_secs(60);

/// The history an instance had before it came back as a master with less of it: a restart
/// with no persistence (empty), or from an RDB older than what its replicas hold. Its
/// replicas are ahead of it, and the moment they full-sync from it they are wiped or rolled
/// back, and pass that on down the chain; see [`crate::plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostHistory {
    /// The replication ID it had, which its replicas still follow (`None` before Redis 4.0).
    pub replid: Option<String>,
    /// Its offset in that history, last seen.
    pub offset: i64,
}

impl LostHistory {
    /// `previous` and `current` are two consecutive successful replies of one instance.
    /// Replication offsets only grow, through promotions too (a promoted replica continues
    /// its master's offset); a master whose offset went back has restarted with less data
    /// than it had, whatever its replication IDs say (Redis 7 restores them from the RDB).
    pub fn between(previous: &ReplicationInfo, current: &ReplicationInfo) -> Option<LostHistory> {
        (current.role == Role::Master && current.repl_offset < previous.repl_offset)
            .then(|| LostHistory { replid: previous.replid.clone(), offset: previous.repl_offset })
    }
}

impl InstanceObservation {
    /// The current reply, only while the instance answers. Decisions use this; the stale
    /// `info` of an unreachable instance is history, not evidence.
    pub fn live_info(&self) -> Option<&ReplicationInfo> {
        if self.reachable { self.info.as_ref() } else { None }
    }

    /// It answers as a master, and this controller saw the same process (`run_id`) answer as
    /// a replica before: it was promoted in place (`REPLICAOF NO ONE`), not restarted. A
    /// replica that restarts from its RDB also comes back as a master whose second ID is the
    /// shard's history; only the process tells the two apart.
    pub fn promoted_in_place(&self) -> bool {
        self.live_info().is_some_and(|i| i.role == Role::Master)
            && self.run_id.is_some()
            && self.run_id == self.replica_run_id
    }

    /// Its process started less than [`RESTART_EVIDENCE_WINDOW`] before its latest answer.
    pub fn just_started(&self) -> bool {
        match (self.started_at, self.answered_at) {
            (Some(started), Some(answered)) => answered.saturating_duration_since(started) < RESTART_EVIDENCE_WINDOW,
            _ => false,
        }
    }

    /// Failing continuously for at least `down_after`.
    pub fn is_down(&self, now: Instant, down_after: Duration) -> bool {
        self.failing_since.is_some_and(|since| now.saturating_duration_since(since) >= down_after)
    }

    /// Not answering, and not just for one probe: at least two probes in a row failed, or
    /// no probe finished for too long ([`Self::expire`]), or it answers `-LOADING` (alive,
    /// but not answering `INFO`). A single failed probe is often our own doing: a
    /// switchover's `CLIENT KILL` closes the poller's connection and the next probe
    /// reconnects.
    pub fn failing_repeatedly(&self) -> bool {
        if self.reachable {
            return false;
        }
        let stale = self.last_error.as_ref().is_some_and(|e| e.kind == ProbeErrorKind::Stale);
        match (self.failing_since, self.probed_at) {
            (Some(since), Some(probed_at)) => probed_at > since || stale,
            // `-LOADING` (it leaves `failing_since` unset), or nothing finished yet.
            _ => true,
        }
    }

    /// Treats a latest probe that finished more than `max_age` before `now` as a failure that
    /// began once it became that old: not reachable, not live, failing since then (or since
    /// an earlier failure). `probed_at` is kept: no probe started after it has come back.
    pub fn expire(&mut self, now: Instant, max_age: Duration) {
        let Some(probed_at) = self.probed_at else { return };
        let stale_since = probed_at + self.last_latency.unwrap_or_default() + max_age;
        if now <= stale_since {
            return;
        }
        self.reachable = false;
        self.master_since = None;
        self.progress = None;
        self.failing_since.get_or_insert(stale_since);
        let age = now.saturating_duration_since(probed_at);
        self.last_error = Some(ProbeError::new(
            ProbeErrorKind::Stale,
            format!("no probe finished for {}: the controller's poller is stuck", humantime::format_duration(age)),
        ));
    }

    /// Records one finished probe that started at `started`.
    ///
    /// An instance answering `-LOADING` is alive, as Redis Sentinel also counts it: a master
    /// restarting with its dataset, or a replica loading a full sync, is not down, so it never
    /// counts towards a room or master being lost and its replicas are not re-pointed around
    /// it. But its role is unknown, so it is not *live* either: nothing is decided from it and
    /// nothing is sent to it until it answers `INFO` again.
    pub fn record(&mut self, started: Instant, latency: Duration, outcome: Result<ReplicationInfo, ProbeError>) {
        self.probed_at = Some(started);
        self.last_latency = Some(latency);
        match outcome {
            Ok(info) => {
                self.reachable = true;
                if info.role == Role::Master {
                    self.master_since.get_or_insert(started);
                    let recent = self
                        .answered_at
                        .is_some_and(|at| started.saturating_duration_since(at) <= RESTART_EVIDENCE_WINDOW);
                    // Keep the first loss: a second restart must not replace the history its
                    // replicas still hold with the short-lived one in between.
                    if self.lost_history.is_none() && recent {
                        self.lost_history =
                            self.info.as_ref().and_then(|previous| LostHistory::between(previous, &info));
                    }
                } else {
                    self.master_since = None;
                    self.lost_history = None;
                    self.replica_run_id.clone_from(&self.run_id);
                }
                self.progress = info.master.as_ref().map(|link| {
                    OffsetProgress::next(self.progress, link.progress_offset(), started, started + latency)
                });
                self.info = Some(info);
                self.answered_at = Some(started);
                self.failing_since = None;
                self.last_error = None;
            }
            Err(error) => {
                self.reachable = false;
                self.master_since = None;
                // Silence is measured over answers only: after a gap, start again.
                self.progress = None;
                if error.kind == ProbeErrorKind::Loading {
                    self.failing_since = None;
                } else {
                    self.failing_since.get_or_insert(started);
                }
                self.last_error = Some(error);
            }
        }
    }
}

/// A snapshot of every instance, indexed by [`InstanceId`].
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub instances: Vec<InstanceObservation>,
}

impl Observation {
    pub fn new(count: usize) -> Self {
        Observation { instances: vec![InstanceObservation::default(); count] }
    }

    pub fn get(&self, id: InstanceId) -> &InstanceObservation {
        &self.instances[id]
    }

    /// The current reply of an instance, while it answers.
    pub fn live(&self, id: InstanceId) -> Option<&ReplicationInfo> {
        self.instances[id].live_info()
    }

    /// The links of the chains under `master` (every instance of its shard, down ones too)
    /// whose replica cannot load its parent's RDB ([`ServerVersion::can_replicate_from`]), as
    /// `(replica, parent)`, with the versions last read; a link with an unknown version is not
    /// judged. Mixed versions replicate only from the older to the newer.
    pub fn incompatible_links(
        &self,
        t: &Topology,
        master: InstanceId,
    ) -> Vec<((InstanceId, ServerVersion), (InstanceId, ServerVersion))> {
        t.desired_parents(master, |_| false)
            .into_iter()
            .filter_map(|(id, parent)| match parent {
                crate::topology::Parent::Instance(parent) => Some((id, parent)),
                crate::topology::Parent::None => None,
            })
            .filter_map(|(id, parent)| {
                let (replica, source) = (self.get(id).version?, self.get(parent).version?);
                (!replica.can_replicate_from(&source)).then_some(((id, replica), (parent, source)))
            })
            .collect()
    }

    /// True once every instance has been probed at least once.
    pub fn complete(&self) -> bool {
        self.instances.iter().all(|i| i.probed_at.is_some())
    }

    /// Adds the lost histories that the shard's other instances show, for masters whose own
    /// earlier replies do not (see [`LostHistory::between`]): a controller that started after
    /// the restart never saw the offset go back, and a master that restarted empty twice is
    /// remembered with its first loss while its replicas, resynced in between, hold the second
    /// history.
    ///
    /// The evidence is a master that restarted — it has never been promoted since its history
    /// began (no second ID: a fresh start), or its process started less than
    /// [`RESTART_EVIDENCE_WINDOW`] ago (`uptime_in_seconds`; Redis 7 restores an RDB's ID as
    /// the second one) — and another instance of its shard that holds more of a history the
    /// master is no longer in. Either
    /// - a replica that points at it and is not in sync with it (its link is down, or a full
    ///   sync is under way): a healthy replica is never ahead of its master; or
    /// - for a fresh master that just started, any instance of the shard: when a whole room
    ///   restarts, the master's only direct replica is the room's tail, itself restarted, and
    ///   the history lives on in the next room, which replicates from that tail (finding E of
    ///   RELIABILITY.md). The window keeps an instance that returns days later with an old
    ///   dataset from outweighing a master that has served writes since.
    ///
    /// A promoted master that is behind a former sibling (a failover that discarded writes) has
    /// a second ID and a process that did not restart (or was seen answering as a replica), so
    /// it is not this case. Needs replication IDs (Redis >= 4.0); older versions
    /// rely on the recorded evidence alone. An inferred loss is kept like a recorded one
    /// ([`ObservationStore::keep_inferred_losses`]).
    ///
    /// A recorded history stays unless no other instance of the shard still holds it.
    pub fn with_inferred_losses(mut self, topology: &Topology) -> Observation {
        for master in 0..self.instances.len() {
            let Some(lost) = self.inferred_loss(topology, master) else { continue };
            if !self.lost_history_still_held(topology, master) {
                self.instances[master].lost_history = Some(lost);
            }
        }
        self
    }

    /// `id` restarted with less data than it had, and another live instance of its shard still
    /// holds more of the history it lost. Redis < 4.0 (no IDs): any other instance ahead of it.
    pub fn lost_history_still_held(&self, topology: &Topology, id: InstanceId) -> bool {
        let Some(lost) = self.get(id).lost_history.as_ref() else { return false };
        let offset = self.live(id).map_or(0, |i| i.repl_offset);
        topology.shard_members(topology.instance(id).shard).filter(|&other| other != id).any(|other| {
            self.live(other)
                .is_some_and(|i| i.shares_history(lost.replid.as_deref()).unwrap_or(true) && i.repl_offset > offset)
        })
    }

    /// The history the other instances of `master`'s shard show it lost (see
    /// [`Self::with_inferred_losses`]).
    fn inferred_loss(&self, topology: &Topology, master: InstanceId) -> Option<LostHistory> {
        let now = self.live(master).filter(|i| i.role == Role::Master)?;
        let fresh = now.fresh_history();
        let restarted = self.instances[master].just_started() && !self.instances[master].promoted_in_place();
        if !fresh && !restarted {
            return None;
        }
        let addr = topology.addr(master);
        topology
            .shard_members(topology.instance(master).shard)
            .filter(|&id| id != master)
            .filter_map(|id| self.live(id))
            .filter(|i| {
                let out_of_sync_replica = i.master.as_ref().is_some_and(|link| {
                    link.points_to(&addr.host, addr.port) && (!link.link_up || link.sync_in_progress)
                });
                (out_of_sync_replica || (fresh && restarted))
                    && i.shares_history(now.replid.as_deref()) == Some(false)
                    && i.repl_offset > now.repl_offset
            })
            .max_by_key(|i| i.repl_offset)
            .map(|i| LostHistory { replid: i.replid.clone(), offset: i.repl_offset })
    }

    /// The observation as the decisions must read it at `now`: an instance whose latest
    /// finished probe started more than `max_age` ago counts as failing since then
    /// ([`InstanceObservation::expire`]). A live poller never lets that happen, so this only
    /// matters when the poller is stuck: its last picture, however healthy, then stops being
    /// evidence, and every instance goes down `down_after` later. With no instance live, no
    /// witness hears anything and nothing is promoted (rooms are `Down`, never `Lost`).
    pub fn aged(mut self, now: Instant, max_age: Duration) -> Observation {
        for instance in &mut self.instances {
            instance.expire(now, max_age);
        }
        self
    }
}

/// How long after an instance's latest probe *finished* the next one must have finished while
/// the poller works: it starts within a `poll_interval` and has at most three round trips, each
/// bounded by `timeout` (connect and `AUTH`, `INFO server` on a new connection, `INFO
/// replication`); two more intervals absorb a late tick on a loaded host.
pub fn max_age(poll_interval: Duration, timeout: Duration) -> Duration {
    timeout * 3 + poll_interval * 3
}

/// Shared between the pollers (writers) and the control loop (reader).
#[derive(Clone, Debug)]
pub struct ObservationStore {
    inner: Arc<Mutex<Observation>>,
    /// Beaten by the poller at every tick ([`crate::health`]).
    ticks: Heartbeat,
}

impl ObservationStore {
    pub fn new(count: usize) -> Self {
        ObservationStore { inner: Arc::new(Mutex::new(Observation::new(count))), ticks: Heartbeat::default() }
    }

    /// The poller's heartbeat: it beats at every tick, whatever the probes return.
    pub fn ticks(&self) -> &Heartbeat {
        &self.ticks
    }

    pub fn record(
        &self,
        id: InstanceId,
        started: Instant,
        latency: Duration,
        outcome: Result<ReplicationInfo, ProbeError>,
    ) {
        self.inner.lock().expect("observation lock poisoned").instances[id].record(started, latency, outcome);
    }

    pub fn record_ping_period(&self, id: InstanceId, period: PingPeriod) {
        let mut observation = self.inner.lock().expect("observation lock poisoned");
        let known = &mut observation.instances[id].ping_period;
        // A later failure to read (the instance went away) keeps what was learnt.
        if period != PingPeriod::Unknown {
            *known = period;
        }
    }

    /// The process behind the instance's current connection, as read when it was opened: its
    /// version and `run_id` (`None`: not read; what was learnt before is kept).
    pub fn set_server(
        &self,
        id: InstanceId,
        version: Option<ServerVersion>,
        run_id: Option<&str>,
        started_at: Option<Instant>,
    ) {
        let mut observation = self.inner.lock().expect("observation lock poisoned");
        let instance = &mut observation.instances[id];
        if version.is_some() {
            instance.version = version;
        }
        if started_at.is_some() {
            instance.started_at = started_at;
        }
        if let Some(run_id) = run_id
            && instance.run_id.as_deref() != Some(run_id)
        {
            instance.run_id = Some(run_id.to_owned());
        }
    }

    /// Records the losses `inferred` adds or replaces ([`Observation::with_inferred_losses`]) as
    /// if this controller had seen them happen: they then stay while the instance answers as
    /// the same master, as a loss seen directly does, and the same loss is not inferred anew
    /// from whichever instance is ahead at the next round (a rescuer, once promoted, is in a
    /// history of its own). Inferred from one snapshot, so only while the master still answers
    /// with that snapshot's history (it did not replicate or restart meanwhile).
    pub fn keep_inferred_losses(&self, inferred: &Observation) {
        let mut observation = self.inner.lock().expect("observation lock poisoned");
        for (kept, seen) in observation.instances.iter_mut().zip(&inferred.instances) {
            let (Some(lost), Some(then)) = (&seen.lost_history, seen.live_info()) else { continue };
            if kept.lost_history.as_ref() != Some(lost)
                && kept.live_info().is_some_and(|now| now.role == Role::Master && now.replid == then.replid)
            {
                kept.lost_history = Some(lost.clone());
            }
        }
    }

    pub fn snapshot(&self) -> Observation {
        self.inner.lock().expect("observation lock poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_is_alive_but_not_live() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut obs = InstanceObservation::default();
        obs.record(t0, Duration::ZERO, Err(ProbeError::new(ProbeErrorKind::Timeout, "hung")));
        assert!(obs.is_down(t0 + 2 * second, second));
        // It restarted and loads its dataset: alive again, but nothing is known about it.
        obs.record(t0 + 2 * second, Duration::ZERO, Err(ProbeError::new(ProbeErrorKind::Loading, "LOADING")));
        assert!(!obs.is_down(t0 + 60 * second, second));
        assert!(obs.live_info().is_none());
        assert_eq!(obs.last_error.as_ref().map(|e| e.kind), Some(ProbeErrorKind::Loading));
        // Any other failure starts a new failing run.
        obs.record(t0 + 3 * second, Duration::ZERO, Err(ProbeError::new(ProbeErrorKind::Refused, "gone")));
        assert!(!obs.is_down(t0 + 3 * second, second));
        assert!(obs.is_down(t0 + 4 * second, second));
    }

    /// An inferred loss is kept as a seen one is, but only for the history it was inferred on.
    #[test]
    fn an_inferred_loss_is_kept_while_the_master_keeps_its_history() {
        let t0 = Instant::now();
        let master = |replid: &str| ReplicationInfo {
            role: Role::Master,
            master: None,
            replicas: vec![],
            replid: Some(replid.into()),
            replid2: Some(crate::info::NO_REPLID.into()),
            repl_offset: 14,
            second_repl_offset: -1,
        };
        let store = ObservationStore::new(1);
        store.record(0, t0, Duration::ZERO, Ok(master("a")));
        let mut inferred = store.snapshot();
        let lost = LostHistory { replid: Some("b".into()), offset: 1000 };
        inferred.instances[0].lost_history = Some(lost.clone());
        // It restarted again meanwhile: another history, the inference is about the old one.
        store.record(0, t0, Duration::ZERO, Ok(master("c")));
        store.keep_inferred_losses(&inferred);
        assert_eq!(store.snapshot().instances[0].lost_history, None);
        store.record(0, t0, Duration::ZERO, Ok(master("a")));
        store.keep_inferred_losses(&inferred);
        assert_eq!(store.snapshot().instances[0].lost_history, Some(lost));
    }
}
