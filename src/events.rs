//! One stream of what the controller verified or decided, for everything that reacts to it:
//! the Sentinel-compatible endpoint ([`crate::sentinel`]) publishes it to subscribed Redis
//! clients, the hook runner ([`crate::hooks`]) runs commands on it.
//!
//! Events are derived, not logged by hand: every round the controller takes a [`Snapshot`]
//! of what it verified, and [`diff`] (pure, table-tested) turns two consecutive snapshots
//! into events. So an event is emitted exactly once per change, whichever path made the
//! change — the loop itself, `POST /failover` in-process, or a `roomguard failover` run in
//! another process whose state file the loop reloads.
//!
//! Events name instances by address and shards and rooms by name, so a subscriber needs no
//! topology to use them.

use crate::{
    detect::{RoomStatus, Verdict},
    info::Role,
    observe::Observation,
    plan::Masters,
    state::Trigger,
    topology::{Addr, InstanceId, Topology},
};

/// One instance, as events name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRef {
    pub shard: String,
    pub room: String,
    pub addr: Addr,
    /// The instance is its shard's verified master (Sentinel's `master` type), not a replica.
    pub is_master: bool,
    /// The shard's verified master at the time of the event.
    pub shard_master: Option<Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A shard's verified master changed: the new one answers as a master.
    MasterSwitched {
        shard: String,
        old: Addr,
        new: Addr,
        room: String,
        trigger: Trigger,
        /// Every other instance of the shard, the old master included, in the new chain's
        /// order: the new master's replicas, as Sentinel announces them (`+slave`) after the
        /// switch.
        replicas: Vec<Addr>,
        /// The replicas that answer as replicas with their link up at the switch (the old
        /// master and down instances excluded): reconfigured for the new master, as Sentinel
        /// announces them (`+slave-reconf-done`) before the switch.
        reconfigured: Vec<Addr>,
        /// The decision's epoch: with `[coordination]` its fencing token (the etcd revision),
        /// else the state file's epoch. Hooks get it as `RG_EPOCH`.
        epoch: u64,
    },
    /// An instance has been failing for `down_after` (Sentinel's `+sdown`), or is back.
    SubjectivelyDown { instance: InstanceRef, down: bool },
    /// A shard's master is down and the evidence agrees (`+odown`): its room is lost, or
    /// every instance that replicates from it no longer hears it. Or that ended.
    ObjectivelyDown { instance: InstanceRef, down: bool },
    /// A room was judged lost (every instance down, every witness agrees) or down.
    RoomLost { room: String },
    /// A lost or down room answers again.
    RoomBack { room: String },
    /// The controller cannot reach a room that other rooms still hear.
    CutOff { room: String },
    /// An instance that answered as a master now answers as a replica (a returning stale
    /// master, an old master after a switchover, or a restarted instance re-chained).
    /// `master` is the instance it replicates; `shard_master` the shard's verified master.
    Demoted { shard: String, room: String, instance: Addr, master: Addr, shard_master: Option<Addr> },
}

impl Event {
    /// The name hooks subscribe to, if hooks can subscribe to this event.
    pub fn hook_name(&self) -> Option<&'static str> {
        Some(match self {
            Event::MasterSwitched { trigger: Trigger::Manual, .. } => "switchover",
            Event::MasterSwitched { .. } => "failover",
            Event::RoomLost { .. } => "room_lost",
            Event::RoomBack { .. } => "room_back",
            Event::CutOff { .. } => "cut_off",
            Event::Demoted { .. } => "demote",
            Event::SubjectivelyDown { .. } | Event::ObjectivelyDown { .. } => return None,
        })
    }
}

/// Every event name a `[[hook]]` may list.
pub const HOOK_EVENTS: &[&str] = &["failover", "switchover", "demote", "room_lost", "room_back", "cut_off"];

/// What the controller verified in one round: the input of [`diff`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The master clients should use, per shard: the designated master once it answers as a
    /// master; until then the previous verified one (as Sentinel keeps reporting the old
    /// master until the promoted replica is verified).
    pub masters: Masters,
    /// Per shard: its reported master has answered as a master (now, or since it was
    /// first reported). Not yet when it is only what the state file named: the endpoint
    /// then flags it down, so that a stale state file does not hand clients a replica.
    pub verified: Vec<bool>,
    /// Per instance: failing for `down_after`.
    pub sdown: Vec<bool>,
    /// Per instance: a verified master that is down in a lost room.
    pub odown: Vec<bool>,
    /// Per instance: the role it last answered with (`None`: it never answered); a
    /// replica's parent as `host:port`.
    pub roles: Vec<Option<LiveRole>>,
    pub rooms: Vec<RoomStatus>,
    /// The designated masters' epoch: the fencing token with `[coordination]`, else the
    /// state file's epoch (set by the loop after [`Snapshot::take`]).
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LiveRole {
    Master,
    Replica(Addr),
}

impl Snapshot {
    /// `previous` is the last round's snapshot (`None` on the first round).
    pub fn take(
        topology: &Topology,
        observation: &Observation,
        verdict: &Verdict,
        designated: &Masters,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let answers_as_master = |id: InstanceId| observation.live(id).is_some_and(|i| i.role == Role::Master);
        let masters: Masters = designated
            .iter()
            .enumerate()
            .map(|(shard, &d)| match d {
                Some(m) if answers_as_master(m) => Some(m),
                // Not verified (yet): keep what clients were told; on the first round, the
                // designated master (Sentinel reports a master it cannot reach, flagged down).
                _ => previous.and_then(|p| p.masters.get(shard).copied().flatten()).or(d),
            })
            .collect();
        let verified = masters
            .iter()
            .enumerate()
            .map(|(shard, &m)| match m {
                Some(m) if answers_as_master(m) => true,
                Some(m) => previous
                    .is_some_and(|p| p.masters.get(shard) == Some(&Some(m)) && p.verified.get(shard) == Some(&true)),
                None => false,
            })
            .collect();
        let rooms: Vec<RoomStatus> = verdict.rooms.iter().map(|r| r.status).collect();
        let odown = (0..topology.instances.len())
            .map(|id| {
                let i = topology.instance(id);
                // Once a failover away from it is decided, it stays objectively down until the
                // switch replaces it: the promotion removes the evidence (its witnesses become
                // masters), and a `-odown` then would send clients back to it.
                let moving_away = designated[i.shard].is_some_and(|d| d != id)
                    && previous.is_some_and(|p| p.odown.get(id) == Some(&true));
                masters[i.shard] == Some(id)
                    && verdict.down[id]
                    && (moving_away
                        || rooms[i.room] == RoomStatus::Lost
                        || crate::plan::master_lost(topology, observation, verdict, id))
            })
            .collect();
        // A probe that fails between two answers (a demotion closes every client connection,
        // the pollers' too) must not hide the change: an instance that does not answer keeps
        // its last known role.
        let roles = (0..topology.instances.len())
            .map(|id| {
                observation
                    .live(id)
                    .map(|info| match (&info.role, &info.master) {
                        (Role::Replica, Some(link)) => LiveRole::Replica(Addr::new(link.host.clone(), link.port)),
                        _ => LiveRole::Master,
                    })
                    .or_else(|| previous.and_then(|p| p.roles.get(id).cloned().flatten()))
            })
            .collect();
        Snapshot { masters, verified, sdown: verdict.down.clone(), odown, roles, rooms, epoch: 0 }
    }
}

/// The events between two consecutive snapshots. `triggers[shard]` says why a shard's master
/// moved (`None`: it was adopted from a change made elsewhere).
pub fn diff(topology: &Topology, before: &Snapshot, after: &Snapshot, triggers: &[Option<Trigger>]) -> Vec<Event> {
    let t = topology;
    let mut events = Vec::new();
    let instance_ref = |id: InstanceId, snap: &Snapshot| {
        let i = t.instance(id);
        InstanceRef {
            shard: t.shards[i.shard].name.clone(),
            room: t.room_name(i.room).to_string(),
            addr: t.addr(id).clone(),
            is_master: snap.masters[i.shard] == Some(id),
            shard_master: snap.masters[i.shard].map(|m| t.addr(m).clone()),
        }
    };
    for (room, (b, a)) in before.rooms.iter().zip(&after.rooms).enumerate() {
        if b == a {
            continue;
        }
        let room = t.room_name(room).to_string();
        let gone = |s: &RoomStatus| matches!(s, RoomStatus::Lost | RoomStatus::Down);
        match a {
            RoomStatus::Lost if *b != RoomStatus::Down => events.push(Event::RoomLost { room }),
            RoomStatus::Down if *b != RoomStatus::Lost => events.push(Event::RoomLost { room }),
            RoomStatus::CutOff => events.push(Event::CutOff { room }),
            RoomStatus::Up | RoomStatus::Degraded if gone(b) => events.push(Event::RoomBack { room }),
            _ => {}
        }
    }
    // Down flags are judged against the snapshot in which they changed: a master going down
    // is reported as the master, before the switch that follows.
    for id in 0..t.instances.len() {
        if before.sdown[id] != after.sdown[id] {
            let snap = if after.sdown[id] { before } else { after };
            events.push(Event::SubjectivelyDown { instance: instance_ref(id, snap), down: after.sdown[id] });
        }
        // An old master's odown ends with the switch that replaces it: Sentinel resets the
        // master record without a `-odown`, and a client that reacts to one would go back to it.
        let shard = t.instance(id).shard;
        let replaced = before.masters[shard] == Some(id) && after.masters[shard] != Some(id);
        if before.odown[id] != after.odown[id] && (after.odown[id] || !replaced) {
            events.push(Event::ObjectivelyDown { instance: instance_ref(id, before), down: after.odown[id] });
        }
    }
    for (shard, (b, a)) in before.masters.iter().zip(&after.masters).enumerate() {
        if let (Some(old), Some(new)) = (*b, *a)
            && old != new
        {
            let others: Vec<InstanceId> = t.chain_order(new).into_iter().skip(1).collect();
            let reconfigured = others
                .iter()
                .filter(|&&id| id != old && !after.sdown[id] && matches!(after.roles[id], Some(LiveRole::Replica(_))))
                .map(|&id| t.addr(id).clone())
                .collect();
            events.push(Event::MasterSwitched {
                shard: t.shards[shard].name.clone(),
                old: t.addr(old).clone(),
                new: t.addr(new).clone(),
                room: t.room_name(t.instance(new).room).to_string(),
                trigger: triggers.get(shard).copied().flatten().unwrap_or(Trigger::Adopted),
                replicas: others.iter().map(|&id| t.addr(id).clone()).collect(),
                reconfigured,
                epoch: after.epoch,
            });
        }
    }
    for id in 0..t.instances.len() {
        if let (Some(LiveRole::Master), Some(LiveRole::Replica(parent))) = (&before.roles[id], &after.roles[id]) {
            let i = t.instance(id);
            events.push(Event::Demoted {
                shard: t.shards[i.shard].name.clone(),
                room: t.room_name(i.room).to_string(),
                instance: t.addr(id).clone(),
                master: parent.clone(),
                shard_master: after.masters[i.shard].map(|m| t.addr(m).clone()),
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::topology::fixtures;

    const SETTINGS: crate::detect::DetectSettings = crate::detect::DetectSettings {
        down_after: Duration::from_secs(1),
        silence: crate::detect::SilenceSettings {
            configured: Some(Duration::from_secs(12)),
            margin: Duration::from_millis(400),
        },
    };

    /// A lone master down: `+odown` once its replica agrees it is gone, as for a lost room.
    #[test]
    fn a_lone_master_is_objectively_down_when_its_replicas_agree() {
        use crate::detect::{assess, scenario::Scenario};
        let mut s = Scenario::healthy();
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        let odown = |s: &Scenario| {
            let verdict = assess(&s.topology, &s.observation, s.now, SETTINGS);
            Snapshot::take(&s.topology, &s.observation, &verdict, &vec![Some(m), Some(4)], None).odown[m]
        };
        s.fail(m, Duration::from_secs(2));
        assert!(!odown(&s), "down from here only: subjectively");
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        assert!(odown(&s));
    }

    /// Once a failover away from an objectively down master is decided, the promotion removes
    /// the evidence (its witness is a master now), but it stays objectively down until the
    /// switch replaces it; the switch then ends it without a `-odown`.
    #[test]
    fn an_old_master_stays_objectively_down_until_the_switch() {
        use crate::detect::{assess, scenario::Scenario};
        let mut s = Scenario::healthy();
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.fail(m, Duration::from_secs(2));
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        let take = |s: &Scenario, designated: &Masters, previous: Option<&Snapshot>| {
            let verdict = assess(&s.topology, &s.observation, s.now, SETTINGS);
            Snapshot::take(&s.topology, &s.observation, &verdict, designated, previous)
        };
        let down = take(&s, &vec![Some(m), Some(4)], None);
        assert!(down.odown[m]);
        // Decided: r is designated and promoted; the snapshot still reports m until r is
        // seen answering as a master.
        s.set_master(r, &format!("{:040}", 2), &format!("{:040}", 1), 100);
        let designated = vec![Some(r), Some(4)];
        let without_rule = take(&s, &vec![Some(m), Some(4)], None);
        assert!(!without_rule.odown[m], "the evidence is gone");
        let promoted = take(&s, &designated, Some(&down));
        assert_eq!(promoted.masters[0], Some(r), "r answers as a master: switched");
        let events = names(&diff(&s.topology, &down, &promoted, &[Some(Trigger::Auto), None]));
        assert!(!events.iter().any(|e| e.starts_with("odown")), "{events:?}");
        // Not verified yet (r still answers as a replica, and hears m again): m stays
        // objectively down while the failover away from it is decided.
        s.set_replica(r, m, &format!("{:040}", 1), true, 0);
        let moving = take(&s, &designated, Some(&down));
        assert_eq!(moving.masters[0], Some(m));
        assert!(moving.odown[m], "a decided failover keeps the old master objectively down");
    }

    /// The seed: shard 0 is instances 0..4 (11:6401, 11:6403, 12:6401, 12:6403), shard 1
    /// instances 4..8; rooms "1", "2".
    fn healthy() -> Snapshot {
        let t = fixtures::seed();
        let roles = (0..8)
            .map(|id| {
                let order = t.chain_order(t.head(t.instance(id).shard, 0));
                let pos = order.iter().position(|&x| x == id).unwrap();
                Some(if pos == 0 { LiveRole::Master } else { LiveRole::Replica(t.addr(order[pos - 1]).clone()) })
            })
            .collect();
        Snapshot {
            masters: vec![Some(0), Some(4)],
            verified: vec![true, true],
            sdown: vec![false; 8],
            odown: vec![false; 8],
            roles,
            rooms: vec![RoomStatus::Up, RoomStatus::Up],
            epoch: 0,
        }
    }

    fn room1_lost(mut s: Snapshot) -> Snapshot {
        for id in [0, 1, 4, 5] {
            s.sdown[id] = true;
        }
        s.odown[0] = true;
        s.odown[4] = true;
        s.rooms[0] = RoomStatus::Lost;
        s
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::MasterSwitched { shard, old, new, trigger, replicas, reconfigured, .. } => {
                    let list = |l: &[Addr]| l.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
                    format!(
                        "switch {shard} {old} {new} {} replicas [{}] reconfigured [{}]",
                        trigger.label(),
                        list(replicas),
                        list(reconfigured)
                    )
                }
                Event::SubjectivelyDown { instance, down } => {
                    format!("sdown {} {down} {}", instance.addr, instance.is_master)
                }
                Event::ObjectivelyDown { instance, down } => format!("odown {} {down}", instance.addr),
                Event::RoomLost { room } => format!("lost {room}"),
                Event::RoomBack { room } => format!("back {room}"),
                Event::CutOff { room } => format!("cutoff {room}"),
                Event::Demoted { instance, master, .. } => format!("demoted {instance} {master}"),
            })
            .collect()
    }

    #[test]
    fn no_change_no_event() {
        let t = fixtures::seed();
        assert!(diff(&t, &healthy(), &healthy(), &[None, None]).is_empty());
    }

    #[test]
    fn room_loss_then_switch_then_return() {
        let t = fixtures::seed();
        let lost = room1_lost(healthy());
        assert_eq!(
            names(&diff(&t, &healthy(), &lost, &[None, None])),
            [
                "lost 1",
                "sdown 192.168.99.11:6401 true true",
                "odown 192.168.99.11:6401 true",
                "sdown 192.168.99.11:6403 true false",
                "sdown 192.168.99.11:6402 true true",
                "odown 192.168.99.11:6402 true",
                "sdown 192.168.99.11:6404 true false",
            ]
        );
        // Room 2's heads verified as masters: one switch per shard, naming every replica of
        // the new master (the old master included) and the ones reconfigured (room 1 is
        // down). The old masters' odown ends without a `-odown`, as in Sentinel.
        let mut switched = lost.clone();
        switched.masters = vec![Some(2), Some(6)];
        switched.odown = vec![false; 8];
        switched.roles[2] = Some(LiveRole::Master);
        switched.roles[6] = Some(LiveRole::Master);
        assert_eq!(
            names(&diff(&t, &lost, &switched, &[Some(Trigger::Auto), Some(Trigger::Auto)])),
            [
                "switch shard-6401 192.168.99.11:6401 192.168.99.12:6401 auto \
                 replicas [192.168.99.12:6403,192.168.99.11:6401,192.168.99.11:6403] reconfigured [192.168.99.12:6403]",
                "switch shard-6402 192.168.99.11:6402 192.168.99.12:6402 auto \
                 replicas [192.168.99.12:6404,192.168.99.11:6402,192.168.99.11:6404] reconfigured [192.168.99.12:6404]",
            ]
        );
        // Room 1 returns: its old masters answer as masters, then are demoted.
        let mut back = switched.clone();
        back.rooms[0] = RoomStatus::Up;
        for id in [0, 1, 4, 5] {
            back.sdown[id] = false;
            back.roles[id] = Some(LiveRole::Master);
        }
        let events = names(&diff(&t, &switched, &back, &[None, None]));
        assert_eq!(events[0], "back 1");
        assert_eq!(events[1], "sdown 192.168.99.11:6401 false false");
        let mut demoted = back.clone();
        demoted.roles[0] = Some(LiveRole::Replica(Addr::new("192.168.99.12", 6403)));
        assert_eq!(names(&diff(&t, &back, &demoted, &[None, None])), ["demoted 192.168.99.11:6401 192.168.99.12:6403"]);
    }

    /// A master that comes back while it is still the shard's master gets its `-odown`.
    #[test]
    fn odown_ends_with_an_event_while_the_master_stays() {
        let t = fixtures::seed();
        let lost = room1_lost(healthy());
        let mut back = lost.clone();
        back.odown[0] = false;
        back.sdown[0] = false;
        let events = names(&diff(&t, &lost, &back, &[None, None]));
        assert!(events.contains(&"odown 192.168.99.11:6401 false".to_string()), "{events:?}");
    }

    #[test]
    fn cut_off_and_unverified_master() {
        let t = fixtures::seed();
        let mut cut = healthy();
        cut.rooms[0] = RoomStatus::CutOff;
        assert_eq!(names(&diff(&t, &healthy(), &cut, &[None, None])), ["cutoff 1"]);
        // Down, then lost: one room_lost.
        let mut down = healthy();
        down.rooms[0] = RoomStatus::Down;
        let mut lost = healthy();
        lost.rooms[0] = RoomStatus::Lost;
        assert_eq!(names(&diff(&t, &healthy(), &down, &[None, None])), ["lost 1"]);
        assert!(diff(&t, &down, &lost, &[None, None]).is_empty());
        // A master moved without a known trigger is an adoption.
        let mut moved = healthy();
        moved.masters[1] = Some(6);
        assert_eq!(
            names(&diff(&t, &healthy(), &moved, &[None, None])),
            ["switch shard-6402 192.168.99.11:6402 192.168.99.12:6402 adopted \
                 replicas [192.168.99.12:6404,192.168.99.11:6402,192.168.99.11:6404] \
                 reconfigured [192.168.99.12:6404,192.168.99.11:6404]"]
        );
    }

    #[test]
    fn an_unverified_master_is_not_reported_until_it_answers_as_a_master() {
        use std::time::Instant;

        use crate::{
            info,
            observe::{Observation, ProbeError, ProbeErrorKind},
        };
        let t = fixtures::seed();
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/info/{name}", env!("CARGO_MANIFEST_DIR"));
            info::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let now = Instant::now();
        let mut observation = Observation::new(8);
        for id in 0..8 {
            observation.instances[id].record(now, Duration::ZERO, Ok(fixture("redis7-replica.txt")));
        }
        observation.instances[0].record(now, Duration::ZERO, Ok(fixture("redis7-master.txt")));
        observation.instances[4].record(now, Duration::ZERO, Ok(fixture("redis7-master.txt")));
        let verdict = crate::detect::assess(&t, &observation, now, SETTINGS);

        let first = Snapshot::take(&t, &observation, &verdict, &vec![Some(0), Some(4)], None);
        assert_eq!(first.masters, [Some(0), Some(4)]);
        assert_eq!(first.verified, [true, true]);
        // Shard 0 is being moved to 12:6401 (instance 2), which still answers as a replica,
        // and the old master stops answering: clients keep being told the old master.
        observation.instances[0].record(now, Duration::ZERO, Err(ProbeError::new(ProbeErrorKind::Refused, "x")));
        let moving = Snapshot::take(&t, &observation, &verdict, &vec![Some(2), Some(4)], Some(&first));
        assert_eq!(moving.masters, [Some(0), Some(4)]);
        assert_eq!(moving.verified, [true, true], "the old master was verified; it is reported down by its flags");
        assert_eq!(moving.roles[0], Some(LiveRole::Master), "the last known role is kept");
        assert!(diff(&t, &first, &moving, &[None, None]).is_empty());
        // Promoted: one switch.
        observation.instances[2].record(now, Duration::ZERO, Ok(fixture("redis7-promoted.txt")));
        let done = Snapshot::take(&t, &observation, &verdict, &vec![Some(2), Some(4)], Some(&moving));
        assert_eq!(done.masters, [Some(2), Some(4)]);
        assert_eq!(
            names(&diff(&t, &moving, &done, &[Some(Trigger::Manual), None])),
            ["switch shard-6401 192.168.99.11:6401 192.168.99.12:6401 manual \
                 replicas [192.168.99.12:6403,192.168.99.11:6401,192.168.99.11:6403] \
                 reconfigured [192.168.99.12:6403,192.168.99.11:6403]"]
        );
        // On a first round with no answer at all, the designated master is reported.
        let blind = Observation::new(8);
        let unverified = Snapshot::take(&t, &blind, &verdict, &vec![Some(0), None], None);
        assert_eq!(unverified.masters, [Some(0), None]);
        assert_eq!(unverified.verified, [false, false], "named by the state file only");
        // It answers, but as a replica (a stale state file): still not verified.
        let mut stale = Observation::new(8);
        stale.instances[0].record(now, Duration::ZERO, Ok(fixture("redis7-replica.txt")));
        let still = Snapshot::take(&t, &stale, &verdict, &vec![Some(0), None], Some(&unverified));
        assert_eq!((still.masters[0], still.verified[0]), (Some(0), false));
        // Once it answers as a master it is, and stays so while it is the one reported.
        stale.instances[0].record(now, Duration::ZERO, Ok(fixture("redis7-master.txt")));
        let verified = Snapshot::take(&t, &stale, &verdict, &vec![Some(0), None], Some(&still));
        assert!(verified.verified[0]);
        stale.instances[0].record(now, Duration::ZERO, Err(ProbeError::new(ProbeErrorKind::Refused, "x")));
        assert!(Snapshot::take(&t, &stale, &verdict, &vec![Some(0), None], Some(&verified)).verified[0]);
    }

    #[test]
    fn hook_names() {
        let switched = |trigger| Event::MasterSwitched {
            shard: "s".into(),
            old: Addr::new("a", 1),
            new: Addr::new("b", 2),
            room: "2".into(),
            trigger,
            replicas: vec![],
            reconfigured: vec![],
            epoch: 0,
        };
        assert_eq!(switched(Trigger::Manual).hook_name(), Some("switchover"));
        assert_eq!(switched(Trigger::Auto).hook_name(), Some("failover"));
        assert_eq!(switched(Trigger::Adopted).hook_name(), Some("failover"));
        for name in HOOK_EVENTS {
            assert!(!name.is_empty());
        }
    }
}
