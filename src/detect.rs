//! Detection: which instances are down, which replicas no longer hear their masters, and
//! which rooms are lost.
//!
//! Pure: a function of the topology, one [`Observation`] and the current time.
//!
//! A room is **lost** only when both hold:
//! - every one of its instances has been failing for `down_after` (the controller's view);
//! - every reachable instance in another room that replicates from it (a *witness*) no
//!   longer hears it (see [`Hearing`]).
//!
//! When a witness still hears the room, the controller is the one cut off: the room is
//! [`RoomStatus::CutOff`] and no failover may happen. When there is no witness at all the
//! room is only [`RoomStatus::Down`]: there is no cross-room evidence, and nothing of the
//! room's is replicated elsewhere that a failover could promote.
//!
//! ## Silence at poll resolution
//!
//! A crashed master closes its sockets and its replicas report `master_link_status:down` at
//! once. A silent one (power or fibre loss, a frozen host, SIGSTOP) does not: the link stays
//! "up" until `repl-timeout` (60 s), and `master_last_io_seconds_ago` counts whole seconds. But
//! every byte a master sends advances its replicas' offsets, its PING every
//! `repl-ping-replica-period` included, and a chained replica forwards its master's stream byte
//! for byte (Redis >= 4.0; older versions ping their own replicas with their own period). So
//! the controller times how long each witness's offset has stood still
//! ([`crate::observe::OffsetProgress`]) and compares that with the ping period of the
//! instances that drive its stream plus a margin ([`SilenceRule`]): a healthy link, even an
//! idle one, is never still for longer.
//!
//! The margin covers what separates a healthy link's longest stillness from the period:
//! - the controller sees a new offset up to one `poll_interval` late (plus a probe's round trip);
//! - Redis sends the PING from its 1 Hz replication cron, itself driven by `serverCron`
//!   (every 100 ms at the default `hz 10`), so one ping may come a tick late;
//! - scheduling on loaded hosts.
//!
//! Measured here (period 1 s, idle, two controllers' worth of CPU load): the longest stillness
//! between offset changes, as seen by a 100 ms poller, was 1.10 s; with a 10 ms poller 1.01 s.
//! [`SILENCE_MARGIN_BASE`] plus one `poll_interval` (400 ms by default) leaves 300 ms above that.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    observe::{Observation, PingPeriod},
    topology::{InstanceId, RoomId, ShardId, Topology},
};

/// Today's whole-second rule, used while a shard's ping period is not known: Redis' default
/// period (10 s) plus 2 s for whole-second rounding and a late ping.
pub const FALLBACK_LINK_SILENCE: Duration = Duration::from_secs(12);

/// The part of the silence margin that does not depend on the poll interval (see the module
/// docs): one `serverCron` tick at the default `hz` plus 200 ms of scheduling slack.
pub const SILENCE_MARGIN_BASE: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug)]
pub struct DetectSettings {
    pub down_after: Duration,
    pub silence: SilenceSettings,
}

/// How long a link may be silent before its replica counts as no longer hearing its master.
#[derive(Clone, Copy, Debug)]
pub struct SilenceSettings {
    /// `controller.link_silence`: one threshold for every shard, instead of each shard's ping
    /// period plus [`Self::margin`].
    pub configured: Option<Duration>,
    /// Added to the ping period: [`SILENCE_MARGIN_BASE`] plus one poll interval.
    pub margin: Duration,
}

impl SilenceSettings {
    pub fn new(configured: Option<Duration>, poll_interval: Duration) -> Self {
        SilenceSettings { configured, margin: SILENCE_MARGIN_BASE + poll_interval }
    }
}

/// A replica's silence threshold (or a shard's, as shown) and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SilenceRule {
    /// A witness whose offset stood still longer than this no longer hears its master.
    #[serde(rename = "threshold_ms", serialize_with = "millis")]
    pub threshold: Duration,
    pub source: SilenceSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SilenceSource {
    /// `controller.link_silence` is set.
    Configured,
    /// The longest `repl-ping-replica-period` among the instances that drive the replica's
    /// stream ([`drivers`]), plus the margin.
    PingPeriod { seconds: u64 },
    /// The period of an instance that may drive the stream is not known
    /// ([`FALLBACK_LINK_SILENCE`], or the longest known period plus the margin if longer).
    Fallback { instance: InstanceId, period: PingPeriod },
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The instances whose `repl-ping-replica-period` can set the pace of `id`'s offset, from the
/// replication links last seen (a silent room's instances no longer answer: their last
/// replies are what they were doing when they went silent). Going up from `id`'s master:
/// every replica on the way whose version is not known to forward its master's stream (Redis
/// < 4.0 pings its own replicas with its own period), and the master at the top, whose PING
/// every replica below it receives. `None` when the way up is not known: an instance on it
/// never answered, a master outside the shard, a loop.
fn drivers(topology: &Topology, observation: &Observation, id: InstanceId) -> Option<Vec<InstanceId>> {
    let shard = topology.instance(id).shard;
    let mut link = observation.live(id)?.master.as_ref()?;
    let mut out = Vec::new();
    for _ in topology.shard_members(shard) {
        let up = topology.find_any(&link.host, link.port).filter(|&m| topology.instance(m).shard == shard)?;
        let seen = observation.get(up);
        match seen.info.as_ref()?.master.as_ref() {
            Some(next) => {
                if !seen.version.is_some_and(|v| v.forwards_master_stream()) {
                    out.push(up);
                }
                link = next;
            }
            None => {
                out.push(up);
                return Some(out);
            }
        }
    }
    None
}

impl SilenceRule {
    /// The rule for one replica: the ping periods of the instances that drive its stream
    /// ([`drivers`]; every other instance of its shard when they are not known). An instance
    /// that drives nobody (a dead replica, a lost room that nothing replicates from) does not
    /// matter, however unknown its period.
    pub fn for_replica(
        topology: &Topology,
        observation: &Observation,
        id: InstanceId,
        settings: SilenceSettings,
    ) -> Self {
        if let Some(threshold) = settings.configured {
            return SilenceRule { threshold, source: SilenceSource::Configured };
        }
        let shard = topology.instance(id).shard;
        let drivers = drivers(topology, observation, id)
            .unwrap_or_else(|| topology.shard_members(shard).filter(|&m| m != id).collect());
        Self::from_periods(observation, &drivers, settings.margin)
    }

    /// A shard's rule, as `status` and the metric show it: the longest of its replicas' rules
    /// (`rules`, per instance, for the replicas that answer), or with none answering the rule
    /// of every instance's period.
    pub fn for_shard(
        topology: &Topology,
        observation: &Observation,
        shard: ShardId,
        settings: SilenceSettings,
        rules: &[Option<SilenceRule>],
    ) -> Self {
        if let Some(threshold) = settings.configured {
            return SilenceRule { threshold, source: SilenceSource::Configured };
        }
        let is_fallback = |r: &SilenceRule| matches!(r.source, SilenceSource::Fallback { .. });
        topology
            .shard_members(shard)
            .filter_map(|id| rules[id])
            .max_by_key(|r| (r.threshold, is_fallback(r)))
            .unwrap_or_else(|| {
                let members: Vec<InstanceId> = topology.shard_members(shard).collect();
                Self::from_periods(observation, &members, settings.margin)
            })
    }

    /// The longest known period of `ids` plus `margin`, or the fallback if one of them is not
    /// known (never shorter than a known period allows).
    fn from_periods(observation: &Observation, ids: &[InstanceId], margin: Duration) -> Self {
        let mut longest = 0;
        let mut unknown = None;
        for &id in ids {
            match observation.get(id).ping_period {
                PingPeriod::Known(seconds) => longest = longest.max(seconds),
                period => {
                    unknown.get_or_insert(SilenceSource::Fallback { instance: id, period });
                }
            }
        }
        // Redis treats a period of 0 as 1.
        let seconds = longest.max(1);
        let derived = Duration::from_secs(seconds) + margin;
        match unknown {
            None => SilenceRule { threshold: derived, source: SilenceSource::PingPeriod { seconds } },
            Some(source) => SilenceRule { threshold: FALLBACK_LINK_SILENCE.max(derived), source },
        }
    }

    /// The whole-second fallback: `master_last_io_seconds_ago` above this is silence. For a
    /// derived threshold, rounded up and one more second (Redis rounds both timestamps down to
    /// whole seconds, so a link pinged every second can read 2); a configured or fallback one
    /// is taken as it is, as it always was.
    pub fn quiet_seconds_limit(&self) -> i64 {
        match self.source {
            SilenceSource::PingPeriod { .. } => self.threshold.as_secs_f64().ceil() as i64 + 1,
            _ => self.threshold.as_secs() as i64,
        }
    }
}

/// Whether a replica still hears its master, and if not, the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hearing {
    Hears,
    /// `master_link_status:down`: the connection is gone (or was never made).
    LinkDown,
    /// Its offset has stood still longer than its shard's [`SilenceRule`] allows.
    Stalled {
        offset: i64,
        still_ms: u64,
    },
    /// `master_last_io_seconds_ago` above [`SilenceRule::quiet_seconds_limit`]: Redis' own
    /// whole-second count, the evidence while the controller has no offset history yet.
    Quiet {
        seconds: i64,
    },
}

impl Hearing {
    pub fn hears(self) -> bool {
        self == Hearing::Hears
    }

    /// Judges one replica's link from what the controller has seen of it.
    pub fn judge(observation: &Observation, id: InstanceId, rule: &SilenceRule) -> Option<Hearing> {
        let link = observation.live(id)?.master.as_ref()?;
        if !link.link_up {
            return Some(Hearing::LinkDown);
        }
        if let Some(p) = observation.get(id).progress.filter(|p| p.still_for() > rule.threshold) {
            return Some(Hearing::Stalled { offset: p.offset, still_ms: p.still_for().as_millis() as u64 });
        }
        match link.last_io_seconds_ago {
            Some(seconds) if seconds >= 0 && seconds <= rule.quiet_seconds_limit() => Some(Hearing::Hears),
            Some(seconds) => Some(Hearing::Quiet { seconds }),
            None => Some(Hearing::Quiet { seconds: -1 }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    /// Every instance answers.
    Up,
    /// Some instances fail (repeatedly: [`crate::observe::InstanceObservation::failing_repeatedly`]), but not
    /// all.
    Degraded,
    /// Every instance is down and no other room replicates from it: no evidence either way.
    Down,
    /// Every instance is down and every witness in other rooms agrees.
    Lost,
    /// The controller cannot reach the room, but other rooms still hear it.
    CutOff,
}

impl RoomStatus {
    pub fn label(self) -> &'static str {
        match self {
            RoomStatus::Up => "up",
            RoomStatus::Degraded => "degraded",
            RoomStatus::Down => "down",
            RoomStatus::Lost => "lost",
            RoomStatus::CutOff => "cut off from controller",
        }
    }
}

/// A replica in another room whose master is in the judged room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Witness {
    pub instance: InstanceId,
    /// It still hears its master (link up and recent I/O).
    pub hears: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomVerdict {
    pub status: RoomStatus,
    /// Instances failing for at least `down_after`.
    pub down: usize,
    pub total: usize,
    /// The room's instances that are down or fail repeatedly: what makes it degraded.
    pub failing: Vec<InstanceId>,
    pub witnesses: Vec<Witness>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `down[instance]`: failing for at least `down_after`.
    pub down: Vec<bool>,
    /// `rooms[room]`.
    pub rooms: Vec<RoomVerdict>,
    /// `hearing[instance]`, for every replica that answers.
    pub hearing: Vec<Option<Hearing>>,
    /// `silence[shard]`: the longest of its replicas' rules (what `status` shows).
    pub silence: Vec<SilenceRule>,
    /// `rules[instance]`, for every replica that answers: what its hearing was judged by.
    pub rules: Vec<Option<SilenceRule>>,
}

impl Verdict {
    pub fn room(&self, room: RoomId) -> &RoomVerdict {
        &self.rooms[room]
    }

    /// A replica that answers and no longer hears its master.
    pub fn deaf(&self, id: InstanceId) -> bool {
        self.hearing[id].is_some_and(|h| !h.hears())
    }
}

pub fn assess(topology: &Topology, observation: &Observation, now: Instant, settings: DetectSettings) -> Verdict {
    let down: Vec<bool> = observation.instances.iter().map(|i| i.is_down(now, settings.down_after)).collect();
    let rules: Vec<Option<SilenceRule>> = (0..topology.instances.len())
        .map(|id| {
            observation.live(id)?.master.as_ref()?;
            Some(SilenceRule::for_replica(topology, observation, id, settings.silence))
        })
        .collect();
    let silence: Vec<SilenceRule> = (0..topology.shards.len())
        .map(|shard| SilenceRule::for_shard(topology, observation, shard, settings.silence, &rules))
        .collect();
    let hearing: Vec<Option<Hearing>> =
        (0..topology.instances.len()).map(|id| Hearing::judge(observation, id, rules[id].as_ref()?)).collect();
    let rooms = (0..topology.rooms.len())
        .map(|room| {
            let members: Vec<InstanceId> = topology.room_members(room).collect();
            let down_count = members.iter().filter(|&&id| down[id]).count();
            // One failed probe is no news (see `failing_repeatedly`); a room with an instance
            // that fails again is degraded.
            let failing: Vec<InstanceId> =
                members.iter().copied().filter(|&id| down[id] || observation.get(id).failing_repeatedly()).collect();
            let witnesses: Vec<Witness> = topology
                .instances
                .iter()
                .enumerate()
                .filter(|(_, inst)| inst.room != room)
                .filter_map(|(id, _)| {
                    let link = observation.live(id)?.master.as_ref()?;
                    let master = topology.find_any(&link.host, link.port)?;
                    (topology.instance(master).room == room)
                        .then(|| Witness { instance: id, hears: hearing[id].is_some_and(Hearing::hears) })
                })
                .collect();
            let status = if down_count == members.len() {
                if witnesses.iter().any(|w| w.hears) {
                    RoomStatus::CutOff
                } else if witnesses.is_empty() {
                    RoomStatus::Down
                } else {
                    RoomStatus::Lost
                }
            } else if !failing.is_empty() {
                RoomStatus::Degraded
            } else {
                RoomStatus::Up
            };
            RoomVerdict { status, down: down_count, total: members.len(), failing, witnesses }
        })
        .collect();
    Verdict { down, rooms, hearing, silence, rules }
}

#[cfg(test)]
pub(crate) mod scenario {
    //! Builders for observations of the seed deployment, shared by detect and plan tests.
    use std::time::{Duration, Instant};

    use crate::{
        info::{MasterLink, NO_REPLID, ReplicationInfo, Role},
        observe::{Observation, ProbeError, ProbeErrorKind},
        topology::{InstanceId, Topology},
    };

    pub const T0_AGO: Duration = Duration::from_secs(10);

    pub struct Scenario {
        pub topology: Topology,
        pub observation: Observation,
        pub now: Instant,
    }

    impl Scenario {
        /// The seed deployment, healthy: room 1 heads are masters, chains as configured.
        pub fn healthy() -> Self {
            let topology = crate::topology::fixtures::seed();
            let now = Instant::now() + T0_AGO;
            let mut s = Scenario { observation: Observation::new(topology.instances.len()), topology, now };
            for shard in 0..s.topology.shards.len() {
                let master = s.topology.head(shard, 0);
                let replid = format!("{:040}", shard + 1);
                let order = s.topology.chain_order(master);
                s.set_master(master, &replid, "", 1000);
                for pair in order.windows(2) {
                    s.set_replica(pair[1], pair[0], &replid, true, 1);
                }
            }
            s
        }

        fn info(
            &self,
            role: Role,
            master: Option<MasterLink>,
            replid: &str,
            replid2: &str,
            offset: i64,
        ) -> ReplicationInfo {
            ReplicationInfo {
                role,
                master,
                replicas: vec![],
                replid: Some(replid.into()),
                replid2: Some(if replid2.is_empty() { NO_REPLID.into() } else { replid2.into() }),
                repl_offset: offset,
                second_repl_offset: if replid2.is_empty() { -1 } else { offset / 2 },
            }
        }

        pub fn set_master(&mut self, id: InstanceId, replid: &str, replid2: &str, offset: i64) {
            let info = self.info(Role::Master, None, replid, replid2, offset);
            self.observation.instances[id].record(self.now, Duration::from_millis(1), Ok(info));
        }

        pub fn set_replica(&mut self, id: InstanceId, master: InstanceId, replid: &str, link_up: bool, last_io: i64) {
            let addr = self.topology.addr(master).clone();
            let link = MasterLink {
                host: addr.host,
                port: addr.port,
                link_up,
                last_io_seconds_ago: Some(if link_up { last_io } else { -1 }),
                link_down_since_seconds: (!link_up).then_some(5),
                sync_in_progress: false,
                repl_offset: 1000,
                read_offset: Some(1000),
            };
            let info = self.info(Role::Replica, Some(link), replid, "", 1000);
            self.observation.instances[id].record(self.now, Duration::from_millis(1), Ok(info));
        }

        /// Every reply as Redis < 4.0 sends it: no replication IDs.
        pub fn without_replids(&mut self) {
            for obs in &mut self.observation.instances {
                if let Some(info) = obs.info.as_mut() {
                    (info.replid, info.replid2, info.second_repl_offset) = (None, None, -1);
                }
                if let Some(lost) = obs.lost_history.as_mut() {
                    lost.replid = None;
                }
            }
        }

        /// Every instance's `repl-ping-replica-period` is `seconds`.
        pub fn ping_period(mut self, seconds: u64) -> Self {
            for i in &mut self.observation.instances {
                i.ping_period = crate::observe::PingPeriod::Known(seconds);
            }
            self
        }

        /// The `repl-ping-replica-period` of the instance at `addr`, as the audit read it.
        pub fn set_period(&mut self, addr: &str, period: crate::observe::PingPeriod) {
            let id = self.id(addr);
            self.observation.instances[id].ping_period = period;
        }

        /// Every instance runs `version`.
        pub fn version(mut self, version: crate::version::ServerVersion) -> Self {
            for i in &mut self.observation.instances {
                i.version = Some(version);
            }
            self
        }

        /// The replica's offset (as it is now) has been seen standing still for `for_`: a
        /// first probe `for_` ago and one now, both showing it.
        pub fn still(&mut self, id: InstanceId, for_: Duration) {
            let obs = &mut self.observation.instances[id];
            let info = obs.info.clone().expect("observed");
            let latency = Duration::from_millis(1);
            obs.progress = None;
            obs.record(self.now - for_ - latency, latency, Ok(info.clone()));
            obs.record(self.now, latency, Ok(info));
        }

        /// The instance has been failing for `for_` (refused connections): a first failed
        /// probe `for_` ago and, when `for_` is not zero, the latest one now.
        pub fn fail(&mut self, id: InstanceId, for_: Duration) {
            let obs = &mut self.observation.instances[id];
            obs.failing_since = None;
            for at in [self.now - for_, self.now] {
                let refused = ProbeError::new(ProbeErrorKind::Refused, "refused");
                obs.record(at, Duration::from_millis(1), Err(refused));
            }
        }

        pub fn id(&self, addr: &str) -> InstanceId {
            self.topology.instances.iter().position(|i| i.addr.to_string() == addr).unwrap()
        }

        /// Room 1 killed: its instances fail, room 2's heads report the link down.
        pub fn room1_killed(for_: Duration) -> Self {
            let mut s = Scenario::healthy();
            for id in s.topology.room_members(0).collect::<Vec<_>>() {
                s.fail(id, for_);
            }
            for shard in 0..2 {
                let head2 = s.topology.head(shard, 1);
                let tail1 = *s.topology.shards[shard].chains[0].last().unwrap();
                let replid = format!("{:040}", shard + 1);
                s.set_replica(head2, tail1, &replid, false, -1);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{scenario::Scenario, *};
    use crate::version::ServerVersion;

    const SETTINGS: DetectSettings = DetectSettings {
        down_after: Duration::from_secs(1),
        silence: SilenceSettings { configured: Some(Duration::from_secs(12)), margin: Duration::from_millis(400) },
    };
    /// The default: thresholds derived from the ping periods.
    const DERIVED: DetectSettings = DetectSettings {
        down_after: Duration::from_secs(1),
        silence: SilenceSettings { configured: None, margin: Duration::from_millis(400) },
    };

    fn statuses(s: &Scenario) -> Vec<RoomStatus> {
        assess(&s.topology, &s.observation, s.now, SETTINGS).rooms.iter().map(|r| r.status).collect()
    }

    #[test]
    fn table() {
        let second = Duration::from_secs(1);
        let half = Duration::from_millis(500);
        let cases: Vec<(&str, Scenario, [RoomStatus; 2])> = vec![
            ("healthy", Scenario::healthy(), [RoomStatus::Up, RoomStatus::Up]),
            ("room 1 killed, within down_after", Scenario::room1_killed(half), [RoomStatus::Degraded, RoomStatus::Up]),
            ("room 1 killed, past down_after", Scenario::room1_killed(second), [RoomStatus::Lost, RoomStatus::Up]),
            (
                "controller cut off from room 1",
                {
                    let mut s = Scenario::healthy();
                    for id in s.topology.room_members(0).collect::<Vec<_>>() {
                        s.fail(id, second * 5);
                    }
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "room 1 hung: room 2 still 'up' but silent past link_silence",
                {
                    let mut s = Scenario::room1_killed(second * 20);
                    for shard in 0..2 {
                        let (head2, tail1) = (s.topology.head(shard, 1), s.topology.shards[shard].chains[0][1]);
                        s.set_replica(head2, tail1, &format!("{:040}", shard + 1), true, 13);
                    }
                    s
                },
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "room 1 hung, silent but within link_silence (an idle master pings every 10 s)",
                {
                    let mut s = Scenario::room1_killed(second * 20);
                    for shard in 0..2 {
                        let (head2, tail1) = (s.topology.head(shard, 1), s.topology.shards[shard].chains[0][1]);
                        s.set_replica(head2, tail1, &format!("{:040}", shard + 1), true, 10);
                    }
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "one witness still hears room 1",
                {
                    let mut s = Scenario::room1_killed(second * 5);
                    let (head2, tail1) = (s.topology.head(1, 1), s.topology.shards[1].chains[0][1]);
                    s.set_replica(head2, tail1, &format!("{:040}", 2), true, 0);
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "room 2 killed: no witness, so merely down",
                {
                    let mut s = Scenario::healthy();
                    for id in s.topology.room_members(1).collect::<Vec<_>>() {
                        s.fail(id, second * 5);
                    }
                    s
                },
                [RoomStatus::Up, RoomStatus::Down],
            ),
            (
                "one failed probe (a connection our own CLIENT KILL closed): still up",
                {
                    let mut s = Scenario::healthy();
                    s.fail(0, Duration::ZERO);
                    s
                },
                [RoomStatus::Up, RoomStatus::Up],
            ),
            (
                "a second failed probe in a row: degraded",
                {
                    let mut s = Scenario::healthy();
                    s.fail(0, Duration::from_millis(100));
                    s
                },
                [RoomStatus::Degraded, RoomStatus::Up],
            ),
            (
                "answering -LOADING (alive, but no INFO): degraded",
                {
                    let mut s = Scenario::healthy();
                    let loading = crate::observe::ProbeError::new(crate::observe::ProbeErrorKind::Loading, "LOADING");
                    let id = s.id("192.168.99.12:6403");
                    s.observation.instances[id].record(s.now, Duration::from_millis(1), Err(loading));
                    s
                },
                [RoomStatus::Up, RoomStatus::Degraded],
            ),
        ];
        for (name, scenario, expected) in cases {
            assert_eq!(statuses(&scenario), expected, "{name}");
        }
    }

    #[test]
    fn a_degraded_room_names_its_failing_instances() {
        let mut s = Scenario::healthy();
        let (a, b) = (s.id("192.168.99.11:6403"), s.id("192.168.99.11:6402"));
        s.fail(a, Duration::from_millis(200));
        s.fail(b, Duration::from_secs(2));
        s.fail(s.id("192.168.99.11:6404"), Duration::ZERO);
        let verdict = assess(&s.topology, &s.observation, s.now, SETTINGS);
        let room1 = verdict.room(0);
        assert_eq!((room1.status, room1.down), (RoomStatus::Degraded, 1));
        let mut failing = room1.failing.clone();
        failing.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(failing, expected, "the instance that failed once is not named");
        assert!(verdict.room(1).failing.is_empty());
    }

    /// Room 1 black-holed `for_` ago: every instance of it fails, and room 2's heads keep their
    /// links "up" with whole-second I/O counters that say little.
    fn room1_silent(for_: Duration, still: Duration, last_io: i64, period: u64) -> Scenario {
        let mut s = Scenario::room1_killed(for_).ping_period(period);
        for shard in 0..2 {
            let (head2, tail1) = (s.topology.head(shard, 1), s.topology.shards[shard].chains[0][1]);
            s.set_replica(head2, tail1, &format!("{:040}", shard + 1), true, last_io);
            s.still(head2, still);
        }
        s
    }

    fn derived(s: &Scenario) -> Vec<RoomStatus> {
        assess(&s.topology, &s.observation, s.now, DERIVED).rooms.iter().map(|r| r.status).collect()
    }

    #[test]
    fn offset_silence_table() {
        let ms = Duration::from_millis;
        let cases: Vec<(&str, Scenario, [RoomStatus; 2])> = vec![
            (
                "period 1s: still 1.5s > 1.4s: lost",
                room1_silent(ms(1500), ms(1500), 1, 1),
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "period 1s: still 1.3s: still heard",
                room1_silent(ms(1500), ms(1300), 1, 1),
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "period 10s: still 5s: heard",
                room1_silent(ms(5000), ms(5000), 5, 10),
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "period 10s: still 10.5s: lost",
                room1_silent(ms(10500), ms(10500), 10, 10),
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "period 1s, no offset history yet (a controller just started): whole seconds decide",
                {
                    let mut s = room1_silent(ms(1500), ms(0), 1, 1);
                    for id in 0..s.topology.instances.len() {
                        s.observation.instances[id].progress = None;
                    }
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "period 1s, no offset history, but Redis' own counter says 4s: lost",
                {
                    let mut s = room1_silent(ms(1500), ms(0), 4, 1);
                    for id in 0..s.topology.instances.len() {
                        s.observation.instances[id].progress = None;
                    }
                    s
                },
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "room 1's head's period unknown (it drives the chain): the fallback, 1.5s of stillness is not silence",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1);
                    s.set_period("192.168.99.11:6401", PingPeriod::Unknown);
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "room 1's tail's period refused, its version unknown (before 4.0 it pings room 2 itself): the fallback",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1);
                    s.set_period("192.168.99.11:6403", PingPeriod::Refused);
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "room 1's tail's period refused on Redis 7 (it forwards the head's stream): not a driver",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1).version(ServerVersion::redis(7, 0, 15));
                    s.set_period("192.168.99.11:6403", PingPeriod::Refused);
                    s.set_period("192.168.99.11:6404", PingPeriod::Refused);
                    s
                },
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "room 2's tails dead since the controller started (periods unknown, drive nobody): derived",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1);
                    for tail in ["192.168.99.12:6403", "192.168.99.12:6404"] {
                        let id = s.id(tail);
                        s.fail(id, Duration::from_secs(5));
                        s.observation.instances[id].info = None;
                        s.set_period(tail, PingPeriod::Unknown);
                    }
                    s
                },
                [RoomStatus::Lost, RoomStatus::Degraded],
            ),
            (
                "the way up not known (room 1's tail never answered, its period unknown): the fallback",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1);
                    let tail = s.id("192.168.99.11:6403");
                    s.observation.instances[tail].info = None;
                    s.set_period("192.168.99.11:6403", PingPeriod::Unknown);
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "the longest period of the drivers counts (room 1's head pings every 5s)",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1).version(ServerVersion::redis(7, 0, 15));
                    s.set_period("192.168.99.11:6401", PingPeriod::Known(5));
                    s
                },
                [RoomStatus::CutOff, RoomStatus::Up],
            ),
            (
                "a longer period where it drives nobody does not count (room 2's tails ping every 5s)",
                {
                    let mut s = room1_silent(ms(1500), ms(1500), 1, 1);
                    s.set_period("192.168.99.12:6403", PingPeriod::Known(5));
                    s.set_period("192.168.99.12:6404", PingPeriod::Known(5));
                    s
                },
                [RoomStatus::Lost, RoomStatus::Up],
            ),
            (
                "within down_after the room is not lost however silent",
                room1_silent(ms(900), ms(3000), 3, 1),
                [RoomStatus::Degraded, RoomStatus::Up],
            ),
        ];
        for (name, scenario, expected) in cases {
            assert_eq!(derived(&scenario), expected, "{name}");
        }
    }

    /// A stuck poller (issue 12): the last picture it left, however healthy, ages into failed
    /// probes. Rooms then go down, but with no live witness none is ever judged lost, so
    /// nothing fails over on the strength of a frozen picture, in either direction.
    #[test]
    fn a_stuck_pollers_last_picture_ages_into_failed_probes() {
        let ms = Duration::from_millis;
        let max_age = crate::observe::max_age(ms(100), ms(250));
        assert_eq!(max_age, ms(1050));
        let (up, degraded, down, lost) = (RoomStatus::Up, RoomStatus::Degraded, RoomStatus::Down, RoomStatus::Lost);
        let cases: Vec<(&str, Scenario, Duration, [RoomStatus; 2], usize)> = vec![
            ("healthy, fresh", Scenario::healthy(), ms(0), [up, up], 8),
            ("healthy, as old as a live poller allows", Scenario::healthy(), max_age, [up, up], 8),
            ("healthy, stale: failing, not yet down", Scenario::healthy(), max_age + ms(500), [degraded, degraded], 0),
            ("healthy, stale past down_after", Scenario::healthy(), max_age + ms(1100), [down, down], 0),
            ("room 1 lost, fresh", Scenario::room1_killed(ms(1000)), ms(0), [lost, up], 4),
            (
                "room 1 lost, stale: no witness left",
                Scenario::room1_killed(ms(1000)),
                max_age + ms(1100),
                [down, down],
                0,
            ),
        ];
        for (name, s, later, expected, live) in cases {
            let now = s.now + later;
            let aged = s.observation.clone().aged(now, max_age);
            let v = assess(&s.topology, &aged, now, SETTINGS);
            assert_eq!(v.rooms.iter().map(|r| r.status).collect::<Vec<_>>(), expected, "{name}");
            assert_eq!((0..8).filter(|&id| aged.live(id).is_some()).count(), live, "{name}: live instances");
            if live == 0 {
                let e = aged.get(0).last_error.as_ref().expect("an error");
                assert_eq!(e.kind, crate::observe::ProbeErrorKind::Stale, "{name}");
            }
        }
        // An instance already failing keeps the start of its failure.
        let s = Scenario::room1_killed(ms(3000));
        let aged = s.observation.clone().aged(s.now + max_age * 2, max_age);
        assert_eq!(aged.get(0).failing_since, s.observation.get(0).failing_since);
    }

    #[test]
    fn rules_say_where_the_threshold_comes_from() {
        let s = Scenario::healthy().ping_period(1);
        let v = assess(&s.topology, &s.observation, s.now, DERIVED);
        assert_eq!(
            v.silence[0],
            SilenceRule { threshold: Duration::from_millis(1400), source: SilenceSource::PingPeriod { seconds: 1 } }
        );
        assert_eq!(v.silence[0].quiet_seconds_limit(), 3);
        let s = Scenario::healthy();
        let v = assess(&s.topology, &s.observation, s.now, DERIVED);
        assert_eq!(v.silence[1].threshold, FALLBACK_LINK_SILENCE);
        assert!(matches!(v.silence[1].source, SilenceSource::Fallback { period: PingPeriod::Unknown, .. }));
        assert_eq!(v.silence[1].quiet_seconds_limit(), 12);
        let v = assess(&s.topology, &s.observation, s.now, SETTINGS);
        assert_eq!(v.silence[0].source, SilenceSource::Configured);

        // A fallback is never shorter than a known period of the drivers allows.
        let mut s = Scenario::healthy().ping_period(1);
        s.set_period("192.168.99.11:6401", PingPeriod::Known(20));
        s.set_period("192.168.99.11:6403", PingPeriod::Unknown);
        let v = assess(&s.topology, &s.observation, s.now, DERIVED);
        let head2 = s.id("192.168.99.12:6401");
        let fallback = SilenceSource::Fallback { instance: s.id("192.168.99.11:6403"), period: PingPeriod::Unknown };
        assert_eq!(v.rules[head2], Some(SilenceRule { threshold: Duration::from_millis(20_400), source: fallback }));
        // The shard shows its longest rule; room 2's tail is driven by the head alone on its
        // way up too (through the tail, whose period is unknown): the same rule.
        assert_eq!(v.silence[0], v.rules[head2].unwrap());
        assert_eq!(v.rules[s.id("192.168.99.11:6401")], None, "a master has no rule");
    }

    #[test]
    fn a_stalled_witness_names_its_offset() {
        let s = room1_silent(Duration::from_secs(2), Duration::from_secs(2), 1, 1);
        let v = assess(&s.topology, &s.observation, s.now, DERIVED);
        let head2 = s.topology.head(0, 1);
        assert!(matches!(v.hearing[head2], Some(Hearing::Stalled { offset: 1000, still_ms }) if still_ms >= 2000));
        assert!(v.deaf(head2));
        // A healthy replica hears; a master has no hearing at all.
        assert_eq!(v.hearing[s.topology.shards[0].chains[1][1]], Some(Hearing::Hears));
        assert_eq!(v.hearing[s.topology.head(0, 0)], None);
    }
}
