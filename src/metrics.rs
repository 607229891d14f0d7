//! Prometheus metrics, one struct registered once (as in kube-rs' controller-rs).
//!
//! The metric names are an interface: dashboards and alert rules in `dashboards/` use them.
//! Counters are registered without `_total` (the client appends it); units go through
//! `register_with_unit` so names end in the base unit.

use std::{
    sync::{Mutex, atomic::AtomicU64},
    time::{Duration, SystemTime},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    detect::{RoomStatus, Verdict},
    info::Role,
    observe::{Observation, PingPeriod, ProbeError, ProbeErrorKind},
    plan::Masters,
    state::Trigger,
    topology::{InstanceId, Topology},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigWarningLabels {
    pub shard: String,
    pub room: String,
    pub instance: String,
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub shard: String,
    pub room: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceInfoLabels {
    pub shard: String,
    pub room: String,
    pub instance: String,
    /// `7.0.15`, or `valkey-8.0.1` on Valkey.
    pub redis_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoomLabels {
    pub room: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub room: String,
    pub trigger: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    pub shard: String,
    /// The room holding the shard's master (lost, or holding the lost master).
    pub room: String,
    /// `cooldown`, `auto_failover_off`, `paused` or `no_target`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeErrorLabels {
    pub instance: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
    /// The git commit built (build.rs), or "unknown".
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DivergedLabels {
    pub shard: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub event: String,
    pub outcome: String,
}

/// `actions_total`'s `action` and `outcome` values ([`crate::plan::Action::label`],
/// [`Metrics::record_action`]).
const ACTIONS: [&str; 3] = ["promote", "demote", "replicaof"];
const ACTION_OUTCOMES: [&str; 3] = ["ok", "failed", "skipped"];

/// Why the Sentinel endpoint closes a connection (`sentinel_connections_closed_total`).
pub const SENTINEL_CLOSE_REASONS: [&str; 8] =
    ["client", "quit", "idle", "too_large", "malformed", "lagged", "write", "shutdown"];

/// Commands of the Sentinel endpoint counted under their own name; anything else is `other`
/// (a label per unknown command would let any client grow the metric without bound).
const SENTINEL_COMMANDS: &[&str] = &[
    "auth",
    "client",
    "command",
    "echo",
    "hello",
    "info",
    "ping",
    "psubscribe",
    "punsubscribe",
    "quit",
    "reset",
    "role",
    "sentinel",
    "subscribe",
    "unsubscribe",
];

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    instance_labels: Vec<InstanceLabels>,
    /// `probe_duration`'s series by instance, looked up once: a probe records without
    /// cloning and hashing its labels (thousands of probes a second in large deployments).
    probe_histograms: Vec<Histogram>,
    room_names: Vec<String>,
    pub instance_up: Family<InstanceLabels, Gauge>,
    pub instance_is_master: Family<InstanceLabels, Gauge>,
    pub instance_master_link_up: Family<InstanceLabels, Gauge>,
    pub instance_replication_lag_bytes: Family<InstanceLabels, Gauge>,
    /// 1 per instance, labelled with its server version (build_info style).
    pub instance_info: Family<InstanceInfoLabels, Gauge>,
    /// The version each instance's `instance_info` series carries, to drop it when it changes.
    instance_versions: Mutex<Vec<Option<String>>>,
    pub room_up: Family<RoomLabels, Gauge>,
    pub room_unreachable_only_from_controller: Family<RoomLabels, Gauge>,
    pub primary_room: Family<RoomLabels, Gauge>,
    pub failovers: Family<FailoverLabels, Counter>,
    pub last_failover_timestamp: FloatGauge,
    pub last_failover_duration: FloatGauge,
    pub failover_held: Family<HeldLabels, Gauge>,
    /// The series of `failover_held` set last round, to remove those no longer held.
    held_now: Mutex<Vec<HeldLabels>>,
    pub state_save_errors: Counter,
    pub state_save_failing: Gauge,
    /// Maintenance mode ([`crate::maintenance`]): 1 while paused, and since when.
    pub paused: Gauge,
    pub paused_since_timestamp: FloatGauge,
    /// `[coordination]` ([`crate::coordination`]); all 0 without it.
    pub coordination_etcd_up: Gauge,
    pub coordination_acting: Gauge,
    pub coordination_holding: Gauge,
    pub coordination_fencing_token: Gauge,
    pub coordination_fenced_instances: Gauge,
    pub coordination_watch_events: Counter,
    /// The session's count when `coordination_watch_events` was last brought up to it.
    watch_events_seen: std::sync::atomic::AtomicU64,
    pub probe_duration: Family<ProbeLabels, Histogram>,
    pub probe_errors: Family<ProbeErrorLabels, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    pub diverged_bytes: Family<DivergedLabels, Counter>,
    pub restarted_empty: Family<InstanceLabels, Counter>,
    pub write_fences_lifted: Family<InstanceLabels, Counter>,
    pub config_warning: Family<ConfigWarningLabels, Gauge>,
    pub link_silence_threshold: Family<ShardLabels, FloatGauge>,
    pub ping_period_refused: Family<InstanceLabels, Gauge>,
    pub rounds: Counter,
    pub round_duration: Histogram,
    /// Liveness ([`crate::health`]): when the loop last completed a round, and the poller's
    /// last tick as that round saw it.
    pub last_round_timestamp: FloatGauge,
    pub last_poll_timestamp: FloatGauge,
    pub sentinel_connections: Gauge,
    pub sentinel_rejected: Counter,
    pub sentinel_closed: Family<ReasonLabels, Counter>,
    pub sentinel_commands: Family<CommandLabels, Counter>,
    pub sentinel_auth_failures: Counter,
    pub hook_runs: Family<HookLabels, Counter>,
}

impl Metrics {
    pub fn new(topology: &Topology) -> Self {
        let mut registry = Registry::with_prefix("roomguard");
        let instance_labels = topology
            .instances
            .iter()
            .map(|i| InstanceLabels {
                shard: topology.shards[i.shard].name.clone(),
                room: topology.rooms[i.room].clone(),
                instance: i.addr.to_string(),
            })
            .collect();
        let m = Metrics {
            registry: Registry::default(),
            instance_labels,
            probe_histograms: Vec::new(),
            room_names: topology.rooms.clone(),
            instance_up: Family::default(),
            instance_is_master: Family::default(),
            instance_master_link_up: Family::default(),
            instance_replication_lag_bytes: Family::default(),
            instance_info: Family::default(),
            instance_versions: Mutex::new(vec![None; topology.instances.len()]),
            room_up: Family::default(),
            room_unreachable_only_from_controller: Family::default(),
            primary_room: Family::default(),
            failovers: Family::default(),
            last_failover_timestamp: FloatGauge::default(),
            last_failover_duration: FloatGauge::default(),
            failover_held: Family::default(),
            held_now: Mutex::new(Vec::new()),
            state_save_errors: Counter::default(),
            state_save_failing: Gauge::default(),
            paused: Gauge::default(),
            paused_since_timestamp: FloatGauge::default(),
            coordination_etcd_up: Gauge::default(),
            coordination_acting: Gauge::default(),
            coordination_holding: Gauge::default(),
            coordination_fencing_token: Gauge::default(),
            coordination_fenced_instances: Gauge::default(),
            coordination_watch_events: Counter::default(),
            watch_events_seen: Default::default(),
            probe_duration: Family::new_with_constructor(|| {
                Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
            }),
            probe_errors: Family::default(),
            actions: Family::default(),
            diverged_bytes: Family::default(),
            restarted_empty: Family::default(),
            write_fences_lifted: Family::default(),
            config_warning: Family::default(),
            link_silence_threshold: Family::default(),
            ping_period_refused: Family::default(),
            rounds: Counter::default(),
            last_round_timestamp: FloatGauge::default(),
            last_poll_timestamp: FloatGauge::default(),
            round_duration: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ]),
            sentinel_connections: Gauge::default(),
            sentinel_rejected: Counter::default(),
            sentinel_closed: Family::default(),
            sentinel_commands: Family::default(),
            sentinel_auth_failures: Counter::default(),
            hook_runs: Family::default(),
        };
        // Every series known at start is created at 0, so `increase()` and `rate()` see the
        // first event: a counter that appears at 2 shows no increase at all (its first sample
        // is 2), and an alert on it stays silent for the controller's first failures.
        for labels in &m.instance_labels {
            let _ = m.restarted_empty.get_or_create(labels);
            let _ = m.write_fences_lifted.get_or_create(labels);
            let diverged = DivergedLabels { shard: labels.shard.clone(), instance: labels.instance.clone() };
            let _ = m.diverged_bytes.get_or_create(&diverged);
            for kind in ProbeErrorKind::ALL {
                let _ = m
                    .probe_errors
                    .get_or_create(&ProbeErrorLabels { instance: labels.instance.clone(), kind: kind.label().into() });
            }
        }
        for room in &topology.rooms {
            for trigger in [Trigger::Auto, Trigger::Manual, Trigger::Adopted] {
                for outcome in ["ok", "failed"] {
                    let _ = m.failovers.get_or_create(&FailoverLabels {
                        room: room.clone(),
                        trigger: trigger.label().into(),
                        outcome: outcome.into(),
                    });
                }
            }
        }
        for action in ACTIONS {
            for outcome in ACTION_OUTCOMES {
                let _ = m.actions.get_or_create(&ActionLabels { action: action.into(), outcome: outcome.into() });
            }
        }
        let r = &mut registry;
        r.register("instance_up", "1 when the last probe of the instance succeeded", m.instance_up.clone());
        r.register("instance_is_master", "1 when the instance reports role master", m.instance_is_master.clone());
        r.register(
            "instance_master_link_up",
            "Replicas: 1 when master_link_status is up",
            m.instance_master_link_up.clone(),
        );
        r.register_with_unit(
            "instance_replication_lag",
            "Shard master's replication offset minus this instance's",
            Unit::Bytes,
            m.instance_replication_lag_bytes.clone(),
        );
        r.register(
            "instance_info",
            "1 per instance, labelled with its server version (redis_version; valkey-X.Y.Z on Valkey)",
            m.instance_info.clone(),
        );
        r.register("room_up", "1 unless the controller judges the room lost", m.room_up.clone());
        r.register(
            "room_unreachable_only_from_controller",
            "1 when the controller cannot reach a room that other rooms still hear",
            m.room_unreachable_only_from_controller.clone(),
        );
        r.register("primary_room", "1 for the room holding the shards' masters", m.primary_room.clone());
        r.register("failovers", "Failovers to a room, by trigger and outcome", m.failovers.clone());
        r.register_with_unit(
            "last_failover_timestamp",
            "Unix time of the last failover",
            Unit::Seconds,
            m.last_failover_timestamp.clone(),
        );
        r.register_with_unit(
            "last_failover_duration",
            "Decision to verified new masters, for the last failover",
            Unit::Seconds,
            m.last_failover_duration.clone(),
        );
        r.register(
            "failover_held",
            "1 while a shard's automatic failover is warranted but held (reason: cooldown, auto_failover_off, paused, no_target)",
            m.failover_held.clone(),
        );
        r.register(
            "state_save_errors",
            "Failed writes of the state file; a decision that cannot be saved is not acted on",
            m.state_save_errors.clone(),
        );
        r.register(
            "state_save_failing",
            "1 while the state file cannot be written (the last write failed): no new decision is acted on",
            m.state_save_failing.clone(),
        );
        r.register(
            "paused",
            "1 while automatic failover is paused (maintenance mode: roomguard pause / resume)",
            m.paused.clone(),
        );
        r.register_with_unit(
            "paused_since_timestamp",
            "Unix time the pause in effect started; 0 when not paused",
            Unit::Seconds,
            m.paused_since_timestamp.clone(),
        );
        r.register(
            "coordination_etcd_up",
            "With [coordination]: 1 while the etcd quorum answers (acting-capable: a round trip within the lease TTL; discovery-only: the watch is open)",
            m.coordination_etcd_up.clone(),
        );
        r.register(
            "coordination_acting",
            "With [coordination]: 1 while this controller holds the acting lease (exactly one controller of a deployment should)",
            m.coordination_acting.clone(),
        );
        r.register(
            "coordination_holding",
            "With [coordination] and on_etcd_unavailable = \"hold\": 1 while etcd is unreachable, so no automatic failover happens",
            m.coordination_holding.clone(),
        );
        r.register(
            "coordination_fencing_token",
            "With [coordination]: the etcd revision of the shared record this controller follows (the fencing token, RG_EPOCH)",
            m.coordination_fencing_token.clone(),
        );
        r.register(
            "coordination_fenced_instances",
            "With [coordination] room: masters of this controller's room whose writes it fences (lost the etcd quorum and the other rooms)",
            m.coordination_fenced_instances.clone(),
        );
        r.register(
            "coordination_watch_events",
            "With [coordination]: etcd watch responses received",
            m.coordination_watch_events.clone(),
        );
        r.register_with_unit("probe_duration", "INFO replication round trips", Unit::Seconds, m.probe_duration.clone());
        r.register("probe_errors", "Failed probes by kind", m.probe_errors.clone());
        r.register("actions", "Commands that change Redis, by outcome", m.actions.clone());
        r.register_with_unit(
            "diverged",
            "Bytes a demoted stale master had written beyond its successor's promotion point (discarded)",
            Unit::Bytes,
            m.diverged_bytes.clone(),
        );
        r.register_with_unit(
            "link_silence_threshold",
            "How long a replica's offset may stand still before it no longer hears its master: the shard's \
             repl-ping-replica-period plus a margin, link_silence when configured, 12 s while a period is unknown",
            Unit::Seconds,
            m.link_silence_threshold.clone(),
        );
        r.register(
            "ping_period_refused",
            "1 while CONFIG GET repl-ping-replica-period is refused (an ACL, a renamed CONFIG): the replicas this \
             instance drives are judged by the 12 s whole-second fallback",
            m.ping_period_refused.clone(),
        );
        r.register(
            "restarted_empty",
            "Times an instance came back as a master without the replication history it had (a restart without data)",
            m.restarted_empty.clone(),
        );
        r.register(
            "write_fences_lifted",
            "Write fences (min-slaves-to-write, Redis < 6.2) left by a switchover or a room fence whose controller \
             died, lifted by the settings audit",
            m.write_fences_lifted.clone(),
        );
        r.register(
            "config_warning",
            "1 while an instance's Redis settings undermine a guarantee (check: repl_ping_replica_period, empty_restart)",
            m.config_warning.clone(),
        );
        r.register("rounds", "Control loop rounds", m.rounds.clone());
        r.register_with_unit(
            "last_round_timestamp",
            "Unix time the control loop last completed a round (stalled: alert RoomguardLoopStalled)",
            Unit::Seconds,
            m.last_round_timestamp.clone(),
        );
        r.register_with_unit(
            "last_poll_timestamp",
            "Unix time of the poller's last tick, as the last round saw it",
            Unit::Seconds,
            m.last_poll_timestamp.clone(),
        );
        r.register_with_unit(
            "round_duration",
            "Time to decide and act in one control loop round (probes excluded)",
            Unit::Seconds,
            m.round_duration.clone(),
        );
        r.register(
            "sentinel_connections",
            "Open connections to the Sentinel-compatible endpoint",
            m.sentinel_connections.clone(),
        );
        r.register(
            "sentinel_connections_rejected",
            "Connections refused because sentinel.max_connections were open",
            m.sentinel_rejected.clone(),
        );
        r.register(
            "sentinel_connections_closed",
            "Sentinel endpoint connections closed, by reason (client, quit, idle, too_large, malformed, lagged, write, shutdown)",
            m.sentinel_closed.clone(),
        );
        r.register("sentinel_commands", "Commands received by the Sentinel endpoint", m.sentinel_commands.clone());
        r.register(
            "sentinel_auth_failures",
            "Wrong passwords presented to the Sentinel endpoint",
            m.sentinel_auth_failures.clone(),
        );
        r.register(
            "hook_runs",
            "Hook runs by event and outcome (ok, failed, timeout, error, dropped)",
            m.hook_runs.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                revision: env!("RG_GIT_REVISION").into(),
            })
            .set(1);
        r.register("build_info", "roomguard's version and git revision", build_info);
        let probe_histograms = m
            .instance_labels
            .iter()
            .map(|l| m.probe_duration.get_or_create(&ProbeLabels { instance: l.instance.clone() }).clone())
            .collect();
        Metrics { registry, probe_histograms, ..m }
    }

    /// Content type of [`Self::encode`]'s output.
    pub const CONTENT_TYPE: &'static str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    pub fn record_probe(&self, id: InstanceId, latency: Duration, error: Option<&ProbeError>) {
        if let Some(error) = error {
            let instance = self.instance_labels[id].instance.clone();
            self.probe_errors.get_or_create(&ProbeErrorLabels { instance, kind: error.kind.label().into() }).inc();
        }
        self.probe_histograms[id].observe(latency.as_secs_f64());
    }

    /// `outcome`: `ok`, `failed`, or `skipped` (a fresh read showed it was no longer needed).
    pub fn record_action(&self, action: &str, outcome: &str) {
        self.actions.get_or_create(&ActionLabels { action: action.into(), outcome: outcome.into() }).inc();
    }

    pub fn record_failover(&self, room: &str, trigger: Trigger, ok: bool, duration: Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        self.failovers
            .get_or_create(&FailoverLabels {
                room: room.into(),
                trigger: trigger.label().into(),
                outcome: outcome.into(),
            })
            .inc();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.last_failover_timestamp.set(now.as_secs_f64());
        self.last_failover_duration.set(duration.as_secs_f64());
    }

    /// Counts a failed write of the state file, or marks it written again.
    pub fn record_state_save(&self, ok: bool) {
        if !ok {
            self.state_save_errors.inc();
        }
        self.state_save_failing.set(i64::from(!ok));
    }

    /// Restores the last-failover gauges from the state file at start: `at` is when it was
    /// decided, `took` how long it took to verify (when known).
    pub fn restore_last_failover(&self, at: SystemTime, took: Option<Duration>) {
        let verified = at + took.unwrap_or_default();
        self.last_failover_timestamp
            .set(verified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        if let Some(took) = took {
            self.last_failover_duration.set(took.as_secs_f64());
        }
    }

    /// Records a completed round at `round` and the poller's last tick at `poll` (wall clock).
    pub fn record_liveness(&self, round: SystemTime, poll: Option<SystemTime>) {
        let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.last_round_timestamp.set(unix(round));
        if let Some(poll) = poll {
            self.last_poll_timestamp.set(unix(poll));
        }
    }

    /// Sets `failover_held` to exactly `held`: 1 for each, and the series of failovers no
    /// longer held removed.
    pub fn set_held(&self, held: Vec<HeldLabels>) {
        let mut now = self.held_now.lock().unwrap_or_else(|e| e.into_inner());
        for gone in now.iter().filter(|l| !held.contains(l)) {
            self.failover_held.remove(gone);
        }
        for labels in &held {
            self.failover_held.get_or_create(labels).set(1);
        }
        *now = held;
    }

    /// Maintenance mode: paused since `since_unix_ms`, or not paused (`None`).
    pub fn set_paused(&self, since_unix_ms: Option<u64>) {
        self.paused.set(i64::from(since_unix_ms.is_some()));
        self.paused_since_timestamp.set(since_unix_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
    }

    /// `[coordination]`: what the session and the loop know now.
    pub fn set_coordination(&self, etcd_up: bool, acting: bool, holding: bool, token: Option<u64>, watch_events: u64) {
        self.coordination_etcd_up.set(i64::from(etcd_up));
        self.coordination_acting.set(i64::from(acting));
        self.coordination_holding.set(i64::from(holding));
        self.coordination_fencing_token.set(token.unwrap_or(0) as i64);
        let seen = self.watch_events_seen.swap(watch_events, std::sync::atomic::Ordering::Relaxed);
        self.coordination_watch_events.inc_by(watch_events.saturating_sub(seen));
    }

    pub fn set_fenced(&self, instances: usize) {
        self.coordination_fenced_instances.set(instances as i64);
    }

    pub fn sentinel_command(&self, command: &str) {
        let command = if SENTINEL_COMMANDS.contains(&command) { command } else { "other" };
        self.sentinel_commands.get_or_create(&CommandLabels { command: command.into() }).inc();
    }

    pub fn sentinel_closed(&self, reason: &str) {
        self.sentinel_closed.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Creates the Sentinel endpoint's counter series at 0 (when it is configured): every
    /// known command, `other`, and every close reason.
    pub fn create_sentinel_series(&self) {
        for command in SENTINEL_COMMANDS.iter().chain(&["other"]) {
            let _ = self.sentinel_commands.get_or_create(&CommandLabels { command: command.to_string() });
        }
        for reason in SENTINEL_CLOSE_REASONS {
            let _ = self.sentinel_closed.get_or_create(&ReasonLabels { reason: reason.into() });
        }
    }

    /// The outcomes of a hook run ([`crate::hooks`]).
    pub const HOOK_OUTCOMES: [&'static str; 5] = ["ok", "failed", "timeout", "error", "dropped"];

    /// Creates `hook_runs_total` at 0 for every outcome of the events a configured hook
    /// runs on, so `increase()` sees its first runs (a series that appears at 2 gives none).
    pub fn create_hook_series(&self, events: &[String]) {
        for event in events {
            for outcome in Self::HOOK_OUTCOMES {
                let _ = self.hook_runs.get_or_create(&HookLabels { event: event.clone(), outcome: outcome.into() });
            }
        }
    }

    pub fn record_hook(&self, event: &str, outcome: &str) {
        self.hook_runs.get_or_create(&HookLabels { event: event.into(), outcome: outcome.into() }).inc();
    }

    pub fn record_divergence(&self, id: InstanceId, bytes: u64) {
        let l = &self.instance_labels[id];
        self.diverged_bytes
            .get_or_create(&DivergedLabels { shard: l.shard.clone(), instance: l.instance.clone() })
            .inc_by(bytes);
    }

    pub fn set_config_warning(&self, id: InstanceId, check: &str, warning: bool) {
        let l = &self.instance_labels[id];
        let labels = ConfigWarningLabels {
            shard: l.shard.clone(),
            room: l.room.clone(),
            instance: l.instance.clone(),
            check: check.into(),
        };
        self.config_warning.get_or_create(&labels).set(i64::from(warning));
    }

    pub fn record_write_fence_lifted(&self, id: InstanceId) {
        self.write_fences_lifted.get_or_create(&self.instance_labels[id]).inc();
    }

    pub fn record_restarted_empty(&self, id: InstanceId) {
        self.restarted_empty.get_or_create(&self.instance_labels[id]).inc();
    }

    /// Refreshes every gauge from one round's observation and verdict.
    pub fn update(&self, topology: &Topology, observation: &Observation, verdict: &Verdict, masters: &Masters) {
        let mut versions = self.instance_versions.lock().expect("metrics lock poisoned");
        for (id, labels) in self.instance_labels.iter().enumerate() {
            let obs = observation.get(id);
            let version = obs.version.map(|v| v.to_string());
            if version != versions[id] {
                let info_labels = |redis_version: String| InstanceInfoLabels {
                    shard: labels.shard.clone(),
                    room: labels.room.clone(),
                    instance: labels.instance.clone(),
                    redis_version,
                };
                if let Some(old) = versions[id].take() {
                    self.instance_info.remove(&info_labels(old));
                }
                if let Some(new) = &version {
                    self.instance_info.get_or_create(&info_labels(new.clone())).set(1);
                }
                versions[id] = version;
            }
            let info = obs.live_info();
            self.instance_up.get_or_create(labels).set(i64::from(obs.reachable));
            self.ping_period_refused.get_or_create(labels).set(i64::from(obs.ping_period == PingPeriod::Refused));
            self.instance_is_master.get_or_create(labels).set(i64::from(info.is_some_and(|i| i.role == Role::Master)));
            let link_up = info.and_then(|i| i.master.as_ref()).is_some_and(|l| l.link_up);
            self.instance_master_link_up.get_or_create(labels).set(i64::from(link_up));
            let master_offset = masters[topology.instance(id).shard]
                .and_then(|m| observation.live(m))
                .filter(|m| m.role == Role::Master)
                .map(|m| m.repl_offset);
            if let (Some(master_offset), Some(info)) = (master_offset, info) {
                self.instance_replication_lag_bytes
                    .get_or_create(labels)
                    .set((master_offset - info.repl_offset).max(0));
            }
        }
        for (shard, rule) in verdict.silence.iter().enumerate() {
            let labels = ShardLabels { shard: topology.shards[shard].name.clone() };
            self.link_silence_threshold.get_or_create(&labels).set(rule.threshold.as_secs_f64());
        }
        for (room, name) in self.room_names.iter().enumerate() {
            let labels = RoomLabels { room: name.clone() };
            let status = verdict.room(room).status;
            self.room_up.get_or_create(&labels).set(i64::from(!matches!(status, RoomStatus::Lost | RoomStatus::Down)));
            self.room_unreachable_only_from_controller
                .get_or_create(&labels)
                .set(i64::from(status == RoomStatus::CutOff));
            let primary = masters.iter().flatten().any(|&m| topology.instance(m).room == room);
            self.primary_room.get_or_create(&labels).set(i64::from(primary));
        }
    }
}
