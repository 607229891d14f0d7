//! The control loop: every `poll_interval`, take the pollers' observation, judge it, decide,
//! plan, act, and publish what happened (logs, metrics, the `/topology` report, the events).
//!
//! This module only decides and acts; [`crate::daemon`] assembles the process around it
//! (pollers, HTTP, Sentinel endpoint, hooks, audit) and supervises every task. What the loop
//! publishes lives in [`Shared`], which the HTTP server reads: the web layer depends on the
//! loop, never the reverse (as in kube-rs' controller-rs). Shutdown never interrupts a
//! round: actions in flight finish and the state file stays consistent.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn};

use crate::{
    act::{self, Applied},
    config::Config,
    coordination::{Authority, Coordinator, PublishError},
    detect::{self, RoomStatus, Verdict},
    events::{Event, Snapshot},
    health::Heartbeat,
    info::Role,
    metrics::Metrics,
    observe::{self, Observation, ObservationStore, PingPeriod},
    plan::{self, Action, Decision, MasterChange, Masters, Policy, Reason},
    report::{Report, ReportInput},
    sentinel::Discovery,
    state::{FailoverRecord, State, Trigger, unix_ms},
    topology::{InstanceId, RoomId, ShardId, Topology},
};

/// What the loop shares with the HTTP server (and the other tasks [`crate::daemon`] starts).
pub struct Shared {
    /// The configuration the process started with; what SIGHUP may change is in `live`.
    pub config: Config,
    /// Settings read at every use, replaced by SIGHUP ([`crate::reload`]).
    pub live: tokio::sync::watch::Sender<crate::reload::Live>,
    pub metrics: Arc<Metrics>,
    /// Held while Redis is being changed: by the loop around its actions, and by a manual
    /// failover through the admin API for its whole duration, so the two never interleave.
    pub action_lock: tokio::sync::Mutex<()>,
    /// True once every instance has been probed and a first round has run.
    pub ready: AtomicBool,
    pub report: RwLock<Option<Report>>,
    /// What the controller verified, as events ([`crate::events`]): the Sentinel endpoint
    /// and the hooks subscribe.
    pub events: tokio::sync::broadcast::Sender<Event>,
    /// The masters and replicas the Sentinel endpoint reports, replaced every round.
    pub discovery: tokio::sync::watch::Sender<Discovery>,
    /// The process's tasks, waited for at shutdown. Work that must not be cancelled with the
    /// request that started it (a failover through the admin API) runs here.
    pub tasks: TaskTracker,
    /// Beaten by the loop after every round ([`crate::health`]).
    pub rounds: Heartbeat,
    /// The poller's heartbeat ([`ObservationStore::ticks`]).
    pub polls: Heartbeat,
    /// `[coordination]`: etcd ([`crate::coordination`]); `None`: quorum-free.
    pub coordination: Option<Arc<Coordinator>>,
}

/// Events buffered per subscriber; a subscriber that falls further behind is told so
/// (the Sentinel endpoint then closes that client's connection).
pub const EVENT_BUFFER: usize = 1024;

/// A failover decided and not yet verified: one per (trigger, target room) of a round.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    started: Instant,
    room: RoomId,
    trigger: Trigger,
    shards: Vec<ShardId>,
    /// Its record in the state file (`last_failover.at_unix_ms`), to store its duration.
    at_unix_ms: u64,
}

/// One round's master changes grouped by trigger and target room, in decision order: each
/// group is one failover to count and verify.
fn group_changes(t: &Topology, changes: &[MasterChange]) -> Vec<(Trigger, RoomId, Vec<ShardId>)> {
    let mut groups: Vec<(Trigger, RoomId, Vec<ShardId>)> = Vec::new();
    for change in changes {
        let trigger = match change.reason {
            Reason::Adopted { .. } => Trigger::Adopted,
            Reason::RoomLost { .. } | Reason::MasterLost { .. } | Reason::RestartedEmpty { .. } => Trigger::Auto,
        };
        let room = t.instance(change.to).room;
        match groups.iter_mut().find(|(tr, r, _)| *tr == trigger && *r == room) {
            Some((_, _, shards)) => shards.push(change.shard),
            None => groups.push((trigger, room, vec![change.shard])),
        }
    }
    groups
}

/// How an in-flight failover ended, when it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Verified,
    /// Not verified within [`FAILOVER_VERIFY_BOUND`].
    TimedOut,
}

/// Splits the in-flight failovers into those still running and those that ended: verified
/// when `done(shard)` holds for every shard they moved, timed out past the bound.
fn settle(
    flights: Vec<InFlight>,
    done: impl Fn(ShardId) -> bool,
    now: Instant,
) -> (Vec<InFlight>, Vec<(InFlight, Settled)>) {
    let mut running = Vec::new();
    let mut ended = Vec::new();
    for f in flights {
        if f.shards.iter().all(|&s| done(s)) {
            ended.push((f, Settled::Verified));
        } else if now.saturating_duration_since(f.started) > FAILOVER_VERIFY_BOUND {
            ended.push((f, Settled::TimedOut));
        } else {
            running.push(f);
        }
    }
    (running, ended)
}

/// What a file another writer may replace holds (the state file: a `roomguard failover`
/// beside us; the pause file: `roomguard pause`). A change is told by the content, not the
/// metadata: a rewrite in the same mtime tick, of the same length, on a reused inode changes
/// none of those. The files are small (under a kilobyte for a few shards), so reading one
/// every round costs some 10 µs, off the async workers; it is parsed only when it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileContent(Vec<u8>);

impl FileContent {
    /// `None`: missing or unreadable (reading it for real then says which).
    fn of(path: &Path) -> Option<FileContent> {
        std::fs::read(path).ok().map(FileContent)
    }
}

pub struct Controller {
    /// The configuration lives in `shared` (the admin API needs it too).
    shared: Arc<Shared>,
    state: Option<State>,
    /// The state file as we last read or wrote it, to notice a `roomguard failover` run
    /// beside us.
    state_seen: Option<FileContent>,
    in_flight: Vec<InFlight>,
    /// The last state-file write error, logged once until it changes or the file is written.
    last_save_error: Option<String>,
    /// The decision last held because it could not be saved (logged once).
    last_unsaved: Vec<MasterChange>,
    /// Last logged room statuses and held reasons, so that warnings are logged on change.
    last_rooms: Vec<RoomStatus>,
    /// Each shard's silence rule as last logged.
    last_silence: Vec<detect::SilenceRule>,
    /// Per instance, the lost histories already logged while it stays flagged as restarted
    /// empty (to log and count each restart once: after a second one the replicas hold
    /// another history; the recorded and the inferred evidence may take turns).
    restarted_empty: Vec<Vec<Option<String>>>,
    /// The failovers held when a decision was last taken (logged on change). A round that
    /// takes none (an action or a manual failover in progress) keeps reporting them.
    held: Vec<plan::Held>,
    last_vetoed: Vec<String>,
    /// Held-back actions logged at debug level while following a switchover.
    vetoed_quietly: Vec<String>,
    /// When we last sent a command to an instance. Its observation is stale until a probe
    /// that started after that comes back, and no further action is planned on it until then.
    acted_at: HashMap<InstanceId, Instant>,
    /// The last failure of an action per instance: a failure that repeats every round (a
    /// disabled `REPLICAOF`, a missing ACL permission) is logged once, then counted only.
    last_failed: HashMap<InstanceId, String>,
    /// When the state file last changed under us (a `roomguard failover` run elsewhere).
    followed_at: Option<Instant>,
    /// The masters that state-file change replaced: the switchover that wrote it demotes them
    /// itself, paused, on the connection that fenced their writes (see `round`).
    handed_over: Vec<InstanceId>,
    /// The last round's verified view, to derive events from.
    snapshot: Option<Snapshot>,
    /// systemd: READY=1 after the first round, WATCHDOG=1 from the heartbeat.
    notifier: crate::notify::Notifier,
    /// Why each shard's designated master last moved, until the move is verified.
    triggers: Vec<Option<Trigger>>,
    /// Maintenance mode as last read from the pause file ([`crate::maintenance`]).
    pause: Option<crate::maintenance::Pause>,
    /// The pause file as last read (`None`: absent), to re-read it only when it changes.
    pause_seen: Option<Option<FileContent>>,
    /// `[coordination]`: what this controller may do, as last logged.
    authority: Option<Authority>,
    /// `[coordination]`: decisions taken without etcd (quorum-free fallback, or a failover
    /// committed through the state file) that the shared record does not have yet.
    unpublished: bool,
    /// The last failed publication, logged once.
    last_publish_error: Option<String>,
}

impl Controller {
    /// The loop's state, from the state file as loaded at start (`None`: no file yet).
    pub fn new(shared: Arc<Shared>, state: Option<State>) -> Controller {
        let shards = shared.config.topology.shards.len();
        Controller {
            state_seen: FileContent::of(&shared.config.controller.state_file),
            shared,
            state,
            in_flight: Vec::new(),
            last_save_error: None,
            last_unsaved: Vec::new(),
            last_rooms: vec![],
            last_silence: vec![],
            restarted_empty: vec![],
            held: vec![],
            last_vetoed: vec![],
            vetoed_quietly: vec![],
            acted_at: HashMap::new(),
            last_failed: HashMap::new(),
            followed_at: None,
            handed_over: Vec::new(),
            snapshot: None,
            triggers: vec![None; shards],
            pause: None,
            pause_seen: None,
            authority: None,
            unpublished: false,
            last_publish_error: None,
            notifier: crate::notify::Notifier::from_env(),
        }
    }

    /// Runs a round every `poll_interval` until `stop` is cancelled; a round in progress is
    /// never interrupted. Each round reads the observation as aged at its start
    /// ([`Observation::aged`]): a stuck poller's last picture stops counting as evidence.
    pub async fn run(mut self, store: ObservationStore, stop: CancellationToken) {
        let c = &self.shared.config.controller;
        let max_age = observe::max_age(c.poll_interval, c.timeout);
        let mut ticker = tokio::time::interval(c.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let observation = store.snapshot().aged(Instant::now(), max_age).with_inferred_losses(self.topology());
            store.keep_inferred_losses(&observation);
            self.round(&observation, &store).await;
            self.beat();
        }
        info!("control loop stopped: no new actions");
    }

    /// Records that a round completed (for `/healthz`, the stall alert and systemd's
    /// watchdog), with the poller's last tick as the loop saw it.
    fn beat(&mut self) {
        let shared = &self.shared;
        shared.rounds.beat();
        self.notifier.round_completed(shared.ready.load(Ordering::Acquire));
        let now = (Instant::now(), SystemTime::now());
        let poll = shared.polls.age(now.0).map(|age| now.1 - age);
        shared.metrics.record_liveness(now.1, poll);
    }

    fn topology(&self) -> &Topology {
        &self.shared.config.topology
    }

    /// `store` is re-read when the round's view is published (see [`Controller::publish`]).
    async fn round(&mut self, observation: &Observation, store: &ObservationStore) {
        if !observation.complete() {
            return;
        }
        let started = Instant::now();
        let settings = self.shared.config.controller.clone();
        let now = Instant::now();
        let authority = self.authority(now);
        let verdict = detect::assess(self.topology(), observation, now, settings.detect());
        let newly_lost: Vec<RoomId> = (0..verdict.rooms.len())
            .filter(|&r| {
                verdict.room(r).status == RoomStatus::Lost && self.last_rooms.get(r) != Some(&RoomStatus::Lost)
            })
            .collect();
        self.log_rooms(&verdict);
        self.log_silence(&verdict);
        self.log_restarted_empty(observation);
        self.reload_state_if_changed().await;
        self.follow_shared_state(&authority).await;
        self.follow_pause().await;
        self.fill_unknown_masters(observation).await;
        self.record_room_failures(&newly_lost).await;
        self.publish_unpublished(&authority).await;

        // A manual failover run by this process (the admin API) holds the lock until it has
        // converged: decide and act on nothing meanwhile, it is deciding. Otherwise the round
        // holds it until its actions are done.
        let shared = self.shared.clone();
        let action_guard = shared.action_lock.try_lock().ok();
        // An instance we just changed is stale until a probe that started after the command
        // comes back: no action on it before that, and no new master decision at all (a
        // just-promoted head still reads as a replica, which would look like someone else's
        // switchover and be "adopted" back).
        self.acted_at.retain(|&id, at| observation.get(id).probed_at.is_none_or(|p| p < *at));
        let state = self.state.as_ref().expect("filled above");
        let live = self.shared.live.borrow().clone();
        let policy = Policy {
            auto_failover: live.auto_failover,
            paused: self.pause.is_some(),
            adopt: self.followed_at.is_none_or(|at| at.elapsed() >= settings.switchover_timeout),
            cooling: plan::cooling(
                &state.room_failures,
                self.topology().rooms.len(),
                live.cooldown,
                unix_ms(SystemTime::now()),
            ),
        };
        // With [coordination], only the acting controller decides (or every controller, in the
        // quorum-free fallback); the others follow the shared record.
        let decision = if !authority.may_act() {
            Decision::default()
        } else if action_guard.is_none() || !self.acted_at.is_empty() {
            Decision { held: self.held.clone(), ..Decision::default() }
        } else {
            plan::decide(self.topology(), observation, &verdict, &state.masters, &policy)
        };
        self.apply_decision(&decision, observation, &authority).await;

        let masters = self.state.as_ref().expect("filled").masters.clone();
        let plan_settings = plan::PlanSettings { newer_master_grace: settings.down_after, now };
        let plan = plan::plan(self.topology(), observation, &verdict, &masters, &plan_settings);
        self.log_vetoes(&plan);
        // A switchover run by another process (`roomguard failover --direct`) demotes the old
        // masters itself, writes still paused, on the connections that paused them: a demotion
        // from here would close those connections (CLIENT KILL), leaving the pause to expire by
        // itself. So the old masters it replaced are left to it for `switchover_timeout`.
        let handing_over = self.followed_at.is_some_and(|at| at.elapsed() < settings.switchover_timeout);
        let actions: Vec<Action> = plan
            .actions
            .iter()
            .filter(|a| !self.acted_at.contains_key(&a.instance()))
            .filter(|a| {
                !(handing_over && matches!(a, Action::Demote { .. }) && self.handed_over.contains(&a.instance()))
            })
            .cloned()
            .collect();
        // What clients are told goes out before the round acts: the plan demotes an old master
        // only once its successor answers as a master, which this view then names; published
        // after the demotion, the endpoint would name a replica in between (issue 15).
        self.publish(observation, &verdict, &masters, now, store, &authority);
        // Asked again: the round's etcd calls and file writes may have outlasted the lease.
        let still = authority.may_act() && self.authority(Instant::now()).may_act();
        match action_guard {
            Some(_guard) if still => self.act(&actions).await,
            Some(_) => {}
            None if !actions.is_empty() => debug!("a manual failover is in progress; acting next round"),
            None => {}
        }
        self.verify_in_flight(observation, &masters).await;

        let metrics = &self.shared.metrics;
        metrics.update(self.topology(), observation, &verdict, &masters);
        metrics.rounds.inc();
        metrics.round_duration.observe(started.elapsed().as_secs_f64());
        let state = self.state.as_ref().expect("filled");
        let report = Report::build(ReportInput {
            topology: self.topology(),
            observation,
            verdict: &verdict,
            masters: &masters,
            decision: &decision,
            plan: &plan,
            epoch: state.epoch,
            last_failover: state.last_failover.as_ref(),
            cooling: &policy.cooling,
            pause: self.pause.as_ref(),
            coordination: self.coordination_report(&authority, now),
        });
        *self.shared.report.write().expect("report lock") = Some(report);
        self.shared.ready.store(true, Ordering::Release);
    }

    /// What this round may do: always act without `[coordination]`; with it, what the etcd
    /// session allows (logged on change, with the metrics).
    fn authority(&mut self, now: Instant) -> Authority {
        let Some(coordination) = self.shared.coordination.clone() else { return Authority::Act };
        let authority = coordination.authority(now);
        if self.authority.as_ref() != Some(&authority) {
            match &authority {
                Authority::Act => info!("acting: this controller holds the etcd lease and decides"),
                Authority::Observe { acting } => info!(
                    acting = acting.as_deref().unwrap_or("nobody yet"),
                    "observing: another controller acts; following the shared record"
                ),
                Authority::Hold => error!(
                    "etcd UNREACHABLE: holding (on_etcd_unavailable = \"hold\"): no automatic failover \
                     and no action until etcd answers again"
                ),
                Authority::QuorumFree => warn!(
                    "etcd unreachable: acting QUORUM-FREE meanwhile (on_etcd_unavailable = \"quorum-free\"); \
                     decisions are published when etcd answers again"
                ),
            }
            self.authority = Some(authority.clone());
        }
        let status = coordination.status();
        self.shared.metrics.set_coordination(
            crate::coordination::reachable(&coordination.settings, &status, now),
            authority == Authority::Act,
            authority == Authority::Hold,
            self.state.as_ref().and_then(|s| s.fencing_token),
            coordination.watch_events(),
        );
        authority
    }

    fn coordination_report(&self, authority: &Authority, now: Instant) -> Option<crate::report::CoordinationReport> {
        let coordination = self.shared.coordination.as_ref()?;
        let status = coordination.status();
        Some(crate::report::CoordinationReport::new(
            &coordination.settings,
            authority.label(),
            status.acting_name.clone(),
            crate::coordination::reachable(&coordination.settings, &status, now),
            self.state.as_ref().and_then(|s| s.fencing_token),
        ))
    }

    /// `[coordination]`: takes the shared record when it is newer than what this controller
    /// holds (another controller acted, or this one before a restart). Decisions of this
    /// controller that etcd does not have yet go first while it may act.
    async fn follow_shared_state(&mut self, authority: &Authority) {
        let Some(shared) = self.shared.coordination.as_ref().and_then(|c| c.shared_state()) else { return };
        if self.unpublished {
            // Decisions etcd does not have: published first while this controller may act
            // (against the record they derive from: if etcd moved on, they lose); dropped for
            // the record as soon as another controller acts.
            if authority.may_act() {
                return;
            }
        } else if self.state.as_ref().and_then(|s| s.fencing_token).is_some_and(|t| t >= shared.revision) {
            return;
        }
        let mut next = shared.state.clone();
        if let Some(current) = &self.state {
            // The anti-flap memory is the union of both (it only ever holds failovers back).
            for (room, at) in current.room_failures.iter().enumerate() {
                if let Some(at) = at {
                    next.record_room_failure(room, *at);
                }
            }
        }
        self.note_moves(&next);
        debug!(fencing_token = shared.revision, epoch = next.epoch, "following the shared record");
        self.unpublished = false;
        self.state = Some(next.clone());
        self.save(&next).await;
    }

    /// `[coordination]`: while acting, publishes what etcd does not have yet: the masters read
    /// from Redis on a first start, decisions taken in the quorum-free fallback, a failover
    /// committed through the state file.
    async fn publish_unpublished(&mut self, authority: &Authority) {
        let Some(coordination) = self.shared.coordination.clone() else { return };
        let shared = coordination.shared_state();
        let Some(state) = self.state.clone() else { return };
        let first = shared.is_none() && state.masters.iter().any(Option::is_some);
        if *authority != Authority::Act || !(self.unpublished || first) {
            return;
        }
        // Against the record this state derives from; on a first start none, or the one etcd
        // holds but this controller cannot read (another layout: it is replaced, loudly).
        match coordination.publish_state(&state).await {
            Ok(token) => {
                info!(fencing_token = token, epoch = state.epoch, "decisions published to etcd");
                let next = State { fencing_token: Some(token), ..state };
                self.state = Some(next.clone());
                self.unpublished = false;
                self.last_publish_error = None;
                self.save(&next).await;
            }
            Err(e @ PublishError::Conflict { .. }) => {
                // Etcd moved on since these decisions' record: follow it (next round).
                self.publish_failed(&e, "local decisions not published: the shared record is newer");
                self.unpublished = false;
            }
            // Not acting any more: `follow_shared_state` drops them for the record.
            Err(e) => self.publish_failed(&e, "cannot publish to etcd yet"),
        }
    }

    fn publish_failed(&mut self, error: &PublishError, what: &str) {
        let text = error.to_string();
        if self.last_publish_error.as_ref() != Some(&text) {
            warn!(error = %text, "{what}");
            self.last_publish_error = Some(text);
        }
    }

    /// Notes, per shard, why its designated master moved in `next` (for the events).
    fn note_moves(&mut self, next: &State) {
        for (shard, master) in next.masters.iter().enumerate() {
            if self.state.as_ref().is_some_and(|s| s.masters[shard] != *master) {
                let name = &self.shared.config.topology.shards[shard].name;
                self.triggers[shard] = Some(
                    next.last_failover
                        .as_ref()
                        .filter(|f| f.shards.contains(name))
                        .map_or(Trigger::Manual, |f| f.trigger),
                );
            }
        }
    }

    /// Logs every change of a room's status; a controller cut off from a room says so loudly.
    fn log_rooms(&mut self, verdict: &Verdict) {
        let statuses: Vec<RoomStatus> = verdict.rooms.iter().map(|r| r.status).collect();
        if statuses == self.last_rooms {
            return;
        }
        for (room, v) in verdict.rooms.iter().enumerate() {
            if self.last_rooms.get(room) == Some(&v.status) {
                continue;
            }
            let name = self.topology().room_name(room);
            let witnesses: Vec<String> = v
                .witnesses
                .iter()
                .map(|w| format!("{}:{}", self.topology().addr(w.instance), if w.hears { "hears" } else { "deaf" }))
                .collect();
            match v.status {
                RoomStatus::CutOff => warn!(
                    room = name,
                    ?witnesses,
                    "controller cannot reach room {name}, but other rooms still replicate from it: \
                     the controller is cut off, not the room; no failover will happen"
                ),
                RoomStatus::Lost => warn!(
                    room = name,
                    ?witnesses,
                    down = v.down,
                    "room {name} is LOST: every instance down and every witness agrees"
                ),
                RoomStatus::Down => {
                    warn!(room = name, down = v.down, "room {name} is down (no other room replicates from it)")
                }
                RoomStatus::Degraded => {
                    let failing: Vec<String> =
                        v.failing.iter().map(|&id| self.topology().addr(id).to_string()).collect();
                    let failing = failing.join(", ");
                    warn!(
                        room = name,
                        down = v.down,
                        total = v.total,
                        %failing,
                        "room {name} is degraded: {failing} not answering ({} of {} down for down_after)",
                        v.down,
                        v.total
                    )
                }
                RoomStatus::Up => info!(room = name, "room {name} is up"),
            }
        }
        self.last_rooms = statuses;
    }

    /// Logs each change of a shard's silence rule: a period read (or changed) at last, or the
    /// fallback while the period of an instance that drives its replicas is not known. A
    /// refused `CONFIG GET` is the audit's to say (once per instance).
    fn log_silence(&mut self, verdict: &Verdict) {
        if verdict.silence == self.last_silence {
            return;
        }
        let t = self.topology();
        for (shard, rule) in verdict.silence.iter().enumerate() {
            if self.last_silence.get(shard) == Some(rule) {
                continue;
            }
            let name = &t.shards[shard].name;
            let threshold = humantime::format_duration(rule.threshold);
            match rule.source {
                detect::SilenceSource::Fallback { instance, period: PingPeriod::Unknown } => info!(
                    shard = %name,
                    instance = %t.addr(instance),
                    "shard {name}: the ping period of {} is not known yet (not read since the controller started): \
                     silence evidence after {threshold}, Redis' whole-second count, until it is",
                    t.addr(instance)
                ),
                detect::SilenceSource::Fallback { .. } => {
                    debug!(shard = %name, "shard {name}: silence evidence after {threshold} (fallback)")
                }
                detect::SilenceSource::PingPeriod { seconds } => info!(
                    shard = %name,
                    "shard {name}: silence evidence after {threshold} (repl-ping-replica-period {seconds}s + margin)"
                ),
                detect::SilenceSource::Configured => {}
            }
        }
        self.last_silence.clone_from(&verdict.silence);
    }

    /// Logs and counts each instance that came back as a master without its history.
    fn log_restarted_empty(&mut self, observation: &Observation) {
        self.restarted_empty.resize(observation.instances.len(), Vec::new());
        for (id, obs) in observation.instances.iter().enumerate() {
            let logged = &mut self.restarted_empty[id];
            let Some(lost) = obs.lost_history.as_ref() else {
                logged.clear();
                continue;
            };
            if logged.contains(&lost.replid) {
                continue;
            }
            logged.push(lost.replid.clone());
            self.shared.metrics.record_restarted_empty(id);
            warn!(
                instance = %self.topology().addr(id),
                lost_replid = lost.replid.as_deref().unwrap_or("-"),
                lost_offset = lost.offset,
                "{} came back as a master WITHOUT its data (new replication history, offset went back): \
                 nothing will replicate from it until it has resynced",
                self.topology().addr(id)
            );
        }
    }

    /// Takes the state file's masters when someone else (the `failover` command) wrote a
    /// newer epoch since we last looked.
    async fn reload_state_if_changed(&mut self) {
        let shared = self.shared.clone();
        let seen = self.state_seen.take();
        // File I/O runs off the async workers (a slow disk must not stall the pollers).
        let read = tokio::task::spawn_blocking(move || {
            let path = &shared.config.controller.state_file;
            let current = FileContent::of(path);
            let file = (current != seen).then(|| State::load(path, &shared.config.topology));
            (current, file)
        })
        .await;
        // A failed read task leaves nothing seen: the next round reads the file and compares epochs.
        let Ok((current, file)) = read else { return };
        self.state_seen = current;
        let Some(file) = file else { return };
        match file {
            Ok(Some(file)) if self.state.as_ref().is_none_or(|s| file.epoch > s.epoch) => {
                // A `roomguard failover` on this host wrote it; the switch itself is logged when
                // clients are told the new masters, and a hook or event follows.
                debug!(epoch = file.epoch, "state file changed on disk with a newer epoch; following it");
                self.followed_at = Some(Instant::now());
                self.handed_over.clear();
                // The masters it replaced, left to the switchover that wrote it (see `round`).
                for (shard, master) in file.masters.iter().enumerate() {
                    if let Some(old) =
                        self.state.as_ref().and_then(|s| s.masters[shard]).filter(|m| Some(*m) != *master)
                    {
                        self.handed_over.push(old);
                    }
                }
                // The move's trigger, for the events: what the file's last failover says.
                self.note_moves(&file);
                // A failover committed through the file: etcd must have it too.
                if let Some(c) = &self.shared.coordination {
                    self.unpublished = c.shared_state().is_none_or(|s| file.fencing_token != Some(s.revision));
                }
                self.state = Some(file);
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "ignoring unreadable state file change"),
        }
    }

    /// Reads the pause file when it appeared, changed or went away (`roomguard pause` or
    /// `POST /pause` here or by another controller sharing the state file), logs the change
    /// and sets the metrics.
    async fn follow_pause(&mut self) {
        let path = crate::maintenance::path(&self.shared.config.controller.state_file);
        // A clone of a few hundred bytes a round.
        let seen = self.pause_seen.clone();
        let state_file = self.shared.config.controller.state_file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let current = FileContent::of(&path);
            let pause = (seen.as_ref() != Some(&current)).then(|| crate::maintenance::load(&state_file));
            (current, pause)
        })
        .await;
        let Ok((current, Some(loaded))) = read else { return };
        let pause = match loaded {
            Ok(pause) => pause,
            Err(e) => {
                error!(error = %e, "ignoring an unreadable pause file change");
                return;
            }
        };
        self.pause_seen = Some(current);
        let now = SystemTime::now();
        match (&self.pause, &pause) {
            (_, Some(p)) if self.pause.as_ref() != Some(p) => warn!(
                since_unix_ms = p.since_unix_ms,
                by = %p.by,
                reason = p.reason.as_deref().unwrap_or(""),
                "MAINTENANCE MODE: automatic failover is PAUSED {}; manual failovers still work; \
                 `roomguard resume` ends it",
                p.describe(now)
            ),
            (Some(p), None) => {
                info!("maintenance mode ended: automatic failover is on again (it was paused {})", p.describe(now))
            }
            _ => {}
        }
        self.shared.metrics.set_paused(pause.as_ref().map(|p| p.since_unix_ms));
        self.pause = pause;
    }

    /// Shards with no designated master yet (first start, no state file) take the one Redis
    /// reports.
    async fn fill_unknown_masters(&mut self, observation: &Observation) {
        // Reading masters from Redis is only needed until every shard has one: not every round.
        if self.state.as_ref().is_some_and(|s| s.masters.iter().all(Option::is_some)) {
            return;
        }
        let inferred = plan::infer_masters(self.topology(), observation);
        let state = self.state.get_or_insert_with(|| State::new(vec![None; inferred.len()]));
        let mut changed = false;
        for (shard, slot) in state.masters.iter_mut().enumerate() {
            if let (None, Some(m)) = (*slot, inferred[shard]) {
                info!(shard = %self.shared.config.topology.shards[shard].name, master = %self.shared.config.topology.addr(m), "master read from Redis");
                *slot = Some(m);
                changed = true;
            }
        }
        // Kept even if it cannot be saved: it is what Redis says, and implies no action.
        if changed {
            let state = self.state.clone().expect("filled");
            self.save(&state).await;
        }
    }

    /// Records the rooms judged lost this round (the anti-flap rule reads it). Kept in memory
    /// even when it cannot be saved: it only ever holds failovers back.
    async fn record_room_failures(&mut self, newly_lost: &[RoomId]) {
        if newly_lost.is_empty() {
            return;
        }
        let now = unix_ms(SystemTime::now());
        let state = self.state.as_mut().expect("filled");
        for &room in newly_lost {
            state.record_room_failure(room, now);
        }
        let state = state.clone();
        self.save(&state).await;
    }

    /// Writes `state` to the state file (off the async workers). A failure is counted, and
    /// logged once until it changes or a write succeeds again.
    async fn save(&mut self, state: &State) -> bool {
        let shared = self.shared.clone();
        let state = state.clone();
        let written = tokio::task::spawn_blocking(move || {
            let path = &shared.config.controller.state_file;
            // What we wrote is what we have seen (reading it back could see another writer's).
            state.save(path, &shared.config.topology).map(|written| Some(FileContent(written)))
        })
        .await;
        let error = match written {
            Ok(Ok(identity)) => {
                self.state_seen = identity;
                self.shared.metrics.record_state_save(true);
                if self.last_save_error.take().is_some() {
                    info!(path = %self.shared.config.controller.state_file.display(), "the state file is written again");
                }
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the write task failed: {e}"),
        };
        self.shared.metrics.record_state_save(false);
        if self.last_save_error.as_ref() != Some(&error) {
            error!(error = %error, "cannot write the state file: no new decision is acted on until it can be written");
            self.last_save_error = Some(error);
        }
        false
    }

    /// Logs each held failover once (its text has no countdown) and sets the held metric.
    fn log_held(&mut self, decision: &Decision) {
        let t = &self.shared.config.topology;
        for held in decision.held.iter().filter(|h| !self.held.contains(h)) {
            warn!(
                shard = %t.shards[held.shard].name,
                room = t.room_name(held.room),
                reason = held.kind.label(),
                "room lost but no failover: {}", held.why
            );
        }
        self.held = decision.held.clone();
        self.shared.metrics.set_held(
            decision
                .held
                .iter()
                .map(|h| crate::metrics::HeldLabels {
                    shard: t.shards[h.shard].name.clone(),
                    room: t.room_name(h.room).to_string(),
                    reason: h.kind.label().to_string(),
                })
                .collect(),
        );
    }

    /// Records new masters and persists them *before* anything is sent to Redis. A decision
    /// that cannot be saved is not taken: the masters stay as they were (so nothing is
    /// promoted), and the next round decides again.
    async fn apply_decision(&mut self, decision: &Decision, observation: &Observation, authority: &Authority) {
        self.log_held(decision);
        if decision.changes.is_empty() {
            self.last_unsaved.clear();
            return;
        }
        let shared = self.shared.clone();
        let t = &shared.config.topology;
        let mut next = self.state.clone().expect("state");
        let now = unix_ms(SystemTime::now());
        for change in &decision.changes {
            next.masters[change.shard] = Some(change.to);
            // Failed away from: the anti-flap rule holds failovers back toward this room.
            if let Reason::RoomLost { room } = change.reason {
                next.record_room_failure(room, now);
            }
        }
        next.epoch += 1;
        let groups = group_changes(t, &decision.changes);
        let names = |shards: &[ShardId]| shards.iter().map(|&s| t.shards[s].name.clone()).collect();
        // One record in the file: the round's last failover this controller made, else the
        // last one it adopted. Every group is counted and verified below.
        let recorded = groups.iter().rev().find(|g| g.0 != Trigger::Adopted).or(groups.last());
        let record =
            recorded.map(|(trigger, room, shards)| FailoverRecord::now(*trigger, t.room_name(*room), names(shards)));
        next.last_failover = record.clone().or(next.last_failover);
        // The state file first, then (with [coordination]) the shared record, so that nothing
        // reaches etcd, where every controller would act on it, before it is on this host's
        // disk: a save that fails holds the decision with nothing published. The file takes it
        // without a fencing token (the revision is unknown until etcd answers): if etcd then
        // refuses it and the previous state cannot be written back either, a restart still
        // follows etcd's record over the file's (a file without a token never wins over it).
        let acting = self.shared.coordination.is_some() && *authority == Authority::Act;
        if acting {
            next.fencing_token = None;
        }
        if !self.save(&next).await {
            if self.last_unsaved != decision.changes {
                let what: Vec<String> = decision
                    .changes
                    .iter()
                    .map(|c| format!("{} -> {}", t.shards[c.shard].name, t.addr(c.to)))
                    .collect();
                error!(decided = ?what, "FAILOVER HELD: decided, but the decision cannot be saved; not acting on it");
                self.last_unsaved = decision.changes.clone();
            }
            return;
        }
        if let Some(coordination) = self.shared.coordination.clone() {
            if acting {
                // Compare-and-swap: only the holder of the acting lease, only from the record
                // this state derives from, not the newest one seen: if etcd moved on, this
                // decision was taken on an old picture and is dropped. Its revision is the token.
                let base = State { fencing_token: self.state.as_ref().and_then(|s| s.fencing_token), ..next.clone() };
                match coordination.publish_state(&base).await {
                    Ok(token) => {
                        next.fencing_token = Some(token);
                        self.last_publish_error = None;
                        // The token on disk too; without it a restart follows etcd's record,
                        // which is this very decision.
                        self.save(&next).await;
                    }
                    Err(e) => {
                        self.publish_failed(&e, "FAILOVER HELD: decided, but not published to etcd; not acting on it");
                        // The file back to the state the loop goes on from.
                        let previous = self.state.clone().expect("state");
                        self.save(&previous).await;
                        return;
                    }
                }
            } else {
                // The quorum-free fallback: published when etcd answers again.
                self.unpublished = true;
            }
        }
        self.last_unsaved.clear();
        self.state = Some(next);
        for change in &decision.changes {
            let trigger = log_change(t, change, observation);
            // Availability first: the failover goes on, and says what it cannot keep.
            for ((id, version), (parent, parent_version)) in observation.incompatible_links(t, change.to) {
                error!(
                    shard = %t.shards[change.shard].name,
                    instance = %t.addr(id),
                    master = %t.addr(parent),
                    "MIXED VERSIONS: {} ({version}) is to replicate from {} ({parent_version}), whose RDB it cannot \
                     load: it stays out of sync (Redis < 4.0 empties its dataset trying) until it is upgraded",
                    t.addr(id), t.addr(parent)
                );
            }
            // An adoption does not replace a more specific reason still pending: following a
            // `roomguard failover` that is half-way through is still that manual failover.
            if trigger != Trigger::Adopted || self.triggers[change.shard].is_none() {
                self.triggers[change.shard] = Some(trigger);
            }
        }
        let at_unix_ms = record.map_or(0, |r| r.at_unix_ms);
        for (trigger, room, shards) in groups {
            if trigger == Trigger::Adopted {
                self.shared.metrics.record_failover(t.room_name(room), trigger, true, Duration::ZERO);
            } else {
                self.in_flight.push(InFlight { started: Instant::now(), room, trigger, shards, at_unix_ms });
            }
        }
    }

    /// Logs each action the plan holds back, once. While a `roomguard failover` that we
    /// follow from the state file is under way (within `switchover_timeout` of the change),
    /// holding back is expected: that command is making the same changes (a head that still
    /// hears the old master is promoted by it a moment later), so it is debug; a veto that
    /// outlasts the switchover is logged then.
    fn log_vetoes(&mut self, plan: &plan::Plan) {
        let following =
            self.followed_at.is_some_and(|at| at.elapsed() < self.shared.config.controller.switchover_timeout);
        let lines: Vec<String> =
            plan.vetoed.iter().map(|v| format!("{}: {}", v.action.describe(self.topology()), v.why)).collect();
        for line in &lines {
            if following && !self.vetoed_quietly.contains(line) {
                debug!("not yet, a switchover is under way: {line}");
            } else if !following && !self.last_vetoed.contains(line) {
                info!("held back: {line}");
            }
        }
        // What held while following is logged if it still holds afterwards.
        (self.last_vetoed, self.vetoed_quietly) = if following { (vec![], lines) } else { (lines, vec![]) };
    }

    async fn act(&mut self, actions: &[Action]) {
        if actions.is_empty() {
            return;
        }
        let t = &self.shared.config.topology;
        let c = &self.shared.config.controller;
        for action in actions {
            info!(action = action.label(), "acting: {}", action.describe(t));
            if let Action::Demote { instance, offset, diverged_bytes, .. } = *action {
                match diverged_bytes {
                    Some(0) => {
                        info!(instance = %t.addr(instance), "stale master had written nothing beyond the promotion point")
                    }
                    Some(bytes) => warn!(
                        instance = %t.addr(instance),
                        diverged_bytes = bytes,
                        "DATA DISCARDED: stale master {} wrote {bytes} bytes after its successor was promoted; \
                         the resync drops them", t.addr(instance)
                    ),
                    None => warn!(
                        instance = %t.addr(instance),
                        offset,
                        "stale master {} has an unrelated replication history (offset {offset}); \
                         its data is replaced by the shard master's", t.addr(instance)
                    ),
                }
            }
        }
        let results = act::execute_all(t, &self.shared.config.redis, c.timeout, actions).await;
        // Only a probe started after the commands landed shows their effect.
        let done = Instant::now();
        let mut demoted = Vec::new();
        for (action, result) in actions.iter().zip(results) {
            self.acted_at.insert(action.instance(), done);
            match result {
                Ok(Applied::AlreadyDone) => info!(action = action.label(), "already done: {}", action.describe(t)),
                Ok(Applied::Done) => {
                    self.shared.metrics.record_action(action.label(), "ok");
                    info!(action = action.label(), "done: {}", action.describe(t));
                    if let Action::Demote { instance, diverged_bytes, .. } = *action {
                        if let Some(bytes) = diverged_bytes {
                            self.shared.metrics.record_divergence(instance, bytes as u64);
                        }
                        demoted.push(instance);
                    }
                }
                Err(e) => {
                    self.shared.metrics.record_action(action.label(), e.outcome());
                    let line = format!("{}: {e}", action.describe(t));
                    if self.last_failed.get(&action.instance()) != Some(&line) {
                        warn!(action = action.label(), error = %e, "failed: {}", action.describe(t));
                        self.last_failed.insert(action.instance(), line);
                    } else {
                        debug!(action = action.label(), error = %e, "failed again: {}", action.describe(t));
                    }
                    continue;
                }
            }
            self.last_failed.remove(&action.instance());
        }
        // After every action of the round (promotions first), concurrently.
        futures::future::join_all(
            demoted.into_iter().map(|id| act::disconnect_clients(t, &self.shared.config.redis, c.timeout, id)),
        )
        .await;
    }

    /// A failover is complete once every shard it moved has its new master answering as a
    /// master; it has failed if that takes longer than [`FAILOVER_VERIFY_BOUND`]. Every
    /// failover of a round is verified on its own.
    async fn verify_in_flight(&mut self, observation: &Observation, masters: &Masters) {
        if self.in_flight.is_empty() {
            return;
        }
        let done = |s: ShardId| masters[s].and_then(|m| observation.live(m)).is_some_and(|i| i.role == Role::Master);
        let (running, ended) = settle(std::mem::take(&mut self.in_flight), done, Instant::now());
        self.in_flight = running;
        let shared = self.shared.clone();
        let t = &shared.config.topology;
        for (f, how) in ended {
            let elapsed = f.started.elapsed();
            let room = t.room_name(f.room);
            match how {
                Settled::Verified => {
                    info!(room, trigger = f.trigger.label(), took = ?elapsed, "failover complete: room {room} holds the masters");
                    self.shared.metrics.record_failover(room, f.trigger, true, elapsed);
                    // Its duration goes to the state file, so the metric survives a restart.
                    let state = self.state.as_mut().expect("state");
                    if let Some(record) = state.last_failover.as_mut().filter(|r| r.at_unix_ms == f.at_unix_ms) {
                        record.took_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                        let state = state.clone();
                        self.save(&state).await;
                    }
                }
                Settled::TimedOut => {
                    error!(room, took = ?elapsed, "failover NOT verified: the new masters still do not answer as masters; will keep trying");
                    self.shared.metrics.record_failover(room, f.trigger, false, elapsed);
                }
            }
        }
        if !self.in_flight.is_empty() {
            debug!(failovers = self.in_flight.len(), "failover in progress");
        }
    }
}

/// Logs one master change; returns its trigger.
fn log_change(t: &Topology, change: &MasterChange, observation: &Observation) -> Trigger {
    match &change.reason {
        Reason::RoomLost { room } => {
            let witnesses: Vec<String> = t
                .instances
                .iter()
                .enumerate()
                .filter(|(id, i)| i.room != *room && observation.live(*id).is_some())
                .map(|(_, i)| i.addr.to_string())
                .collect();
            warn!(
                shard = %t.shards[change.shard].name,
                from = %change.from.map(|m| t.addr(m).to_string()).unwrap_or_default(),
                to = %t.addr(change.to),
                lost_room = t.room_name(*room),
                reachable_elsewhere = ?witnesses,
                "FAILOVER: room {} is lost; promoting {}", t.room_name(*room), t.addr(change.to)
            );
            Trigger::Auto
        }
        Reason::MasterLost { instance } => {
            warn!(
                shard = %t.shards[change.shard].name,
                from = %t.addr(*instance),
                to = %t.addr(change.to),
                "FAILOVER: master {} is lost and its replicas agree; promoting {} in the same room",
                t.addr(*instance), t.addr(change.to)
            );
            Trigger::Auto
        }
        Reason::RestartedEmpty { instance } => {
            let lost = observation.get(*instance).lost_history.as_ref();
            error!(
                shard = %t.shards[change.shard].name,
                from = %t.addr(*instance),
                to = %t.addr(change.to),
                lost_replid = lost.and_then(|l| l.replid.as_deref()).unwrap_or_default(),
                lost_offset = lost.map(|l| l.offset).unwrap_or_default(),
                "FAILOVER: master {} restarted EMPTY (new replication history, offset went back); \
                 promoting {}, which still holds the data, before it full-syncs the empty dataset",
                t.addr(*instance), t.addr(change.to)
            );
            Trigger::Auto
        }
        Reason::Adopted { why } => {
            info!(
                shard = %t.shards[change.shard].name,
                to = %t.addr(change.to),
                "adopting a master change made elsewhere: {why}"
            );
            Trigger::Adopted
        }
    }
}

impl Controller {
    /// Updates what the Sentinel endpoint reports, then derives this round's events from what
    /// was verified and publishes them. A master switch is published once, whichever path made
    /// it (this loop, `POST /failover`, a `roomguard failover` elsewhere): it is read from the
    /// verified masters, not from the decision.
    ///
    /// The round's observation was read when the round started; answers that arrived since are
    /// applied on top ([`Discovery::observe`]) under the view's lock, which the pollers take to
    /// apply an answer once it is in the store: so a round never brings back a demoted master
    /// that a probe already saw answer as a replica.
    fn publish(
        &mut self,
        observation: &Observation,
        verdict: &Verdict,
        masters: &Masters,
        now: Instant,
        store: &ObservationStore,
        authority: &Authority,
    ) {
        let t = &self.shared.config.topology;
        let mut snapshot = Snapshot::take(t, observation, verdict, masters, self.snapshot.as_ref());
        snapshot.epoch = self.state.as_ref().map_or(0, |s| s.fencing_token.unwrap_or(s.epoch));
        // The view first: a client that reacts to an event (node-redis re-reads the topology
        // on `+switch-master` and `+slave`) must be told what the event says.
        let epoch = self.state.as_ref().map_or(0, |s| s.epoch);
        let mut view =
            Discovery::build(t, observation, verdict, &snapshot, epoch, self.shared.config.controller.down_after, now);
        self.shared.discovery.send_if_modified(|current| {
            let latest = store.snapshot();
            for (id, obs) in latest.instances.iter().enumerate() {
                let newer = obs.probed_at.is_some_and(|p| observation.get(id).probed_at.is_none_or(|q| p > q));
                if let Some(info) = obs.info.as_ref().filter(|_| newer && obs.reachable) {
                    view.observe(t.instance(id).shard, t.addr(id), info);
                }
            }
            let view = std::mem::take(&mut view);
            let changed = *current != view;
            if changed {
                *current = view;
            }
            changed
        });
        if let Some(coordination) = self.shared.coordination.as_ref().filter(|_| *authority == Authority::Act) {
            coordination.offer_view(crate::coordination::SharedView::new(
                t,
                &self.shared.discovery.borrow(),
                &snapshot,
                &self.triggers,
                self.state.as_ref().and_then(|s| s.fencing_token),
                &coordination.settings.name,
            ));
        }
        if let Some(before) = &self.snapshot {
            let events = crate::events::diff(t, before, &snapshot, &self.triggers);
            for event in events {
                if let Event::MasterSwitched { shard, old, new, trigger, .. } = &event {
                    info!(shard, old = %old, new = %new, trigger = trigger.label(), "clients are now told the new master");
                    if let Some(s) = t.shard_id(shard) {
                        self.triggers[s] = None;
                    }
                }
                // No receiver (no endpoint, no hook) is not an error.
                let _ = self.shared.events.send(event);
            }
        }
        self.snapshot = Some(snapshot);
    }
}

/// How long a decided failover may take before it is counted as failed.
const FAILOVER_VERIFY_BOUND: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::fixtures::seed;

    fn change(shard: ShardId, to: InstanceId, reason: Reason) -> MasterChange {
        MasterChange { shard, from: None, to, reason }
    }

    /// One round, several failovers (item 5 of issue 12): each group is kept, counted and
    /// verified on its own, not only the last one.
    #[test]
    fn every_group_of_a_round_is_kept_and_verified_on_its_own() {
        let t = seed();
        let (h2_6401, h1_6402, h2_6402) = (2, 4, 6);
        assert_eq!((t.instance(h2_6401).room, t.instance(h1_6402).room), (1, 0));
        let adopted = Reason::Adopted { why: String::new() };
        let changes = [
            change(0, h2_6401, Reason::RoomLost { room: 0 }),
            change(1, h1_6402, adopted.clone()),
            change(1, h2_6402, Reason::MasterLost { instance: 1 }),
        ];
        assert_eq!(
            group_changes(&t, &changes),
            vec![(Trigger::Auto, 1, vec![0, 1]), (Trigger::Adopted, 0, vec![1])],
            "same trigger and room: one group"
        );
        let changes = [change(0, h2_6401, Reason::RoomLost { room: 0 }), change(1, h1_6402, adopted)];
        let groups = group_changes(&t, &changes);
        assert_eq!(groups.len(), 2);

        let start = Instant::now();
        let flight = |room, shards: Vec<ShardId>| InFlight {
            started: start,
            room,
            trigger: Trigger::Auto,
            shards,
            at_unix_ms: 1,
        };
        let flights = vec![flight(1, vec![0]), flight(0, vec![1])];
        // Shard 0's new master answers, shard 1's does not yet: one verified, one running.
        let (running, ended) = settle(flights.clone(), |s| s == 0, start + Duration::from_secs(1));
        assert_eq!(running, vec![flight(0, vec![1])]);
        assert_eq!(ended, vec![(flight(1, vec![0]), Settled::Verified)]);
        // Both answer: both verified in the same round.
        let (running, ended) = settle(flights.clone(), |_| true, start);
        assert!(running.is_empty());
        assert_eq!(
            ended.iter().map(|(f, how)| (f.room, *how)).collect::<Vec<_>>(),
            [(1, Settled::Verified), (0, Settled::Verified)]
        );
        // Past the bound, the one still not verified has failed.
        let late = start + FAILOVER_VERIFY_BOUND + Duration::from_secs(1);
        let (running, ended) = settle(flights, |s| s == 0, late);
        assert!(running.is_empty());
        assert_eq!(
            ended.iter().map(|(f, how)| (f.room, *how)).collect::<Vec<_>>(),
            [(1, Settled::Verified), (0, Settled::TimedOut)]
        );
    }
}
