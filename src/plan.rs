//! Deciding and planning: who should be each shard's master, and which commands bring Redis
//! to the desired chains. Pure: no I/O, no clock.
//!
//! Three steps, each a function:
//! - [`infer_masters`]: with no state file, read each shard's master from Redis itself
//!   (replication IDs break ties: a promoted replica keeps its old master's ID as
//!   `master_replid2`, so the newer of two masters is the one that descends from the other);
//! - [`decide`]: change a shard's designated master, either by *adopting* a change someone
//!   else made (another controller, the CLI, an operator) or by *failing over* because the
//!   master's room is lost;
//! - [`plan`]: diff the desired chains ([`Topology::desired_parents`]) against what Redis
//!   reports, and emit actions. Each action carries a guard (the *safety rules*): no
//!   promotion of a replica that still hears a master, no demotion of a master unless the
//!   shard's designated master is up and is not older than it, no re-pointing onto a parent
//!   that is not itself in sync.
//!
//! Replication IDs exist since Redis 4.0. Before (2.8 to 3.2) every rule that reads them
//! falls back to what those versions offer: offsets (which continue through a promotion) and
//! the state file. What that weakens is said at each rule and in the README's version table.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    detect::{Hearing, RoomStatus, Verdict},
    info::{ReplicationInfo, Role},
    observe::Observation,
    topology::{InstanceId, Parent, RoomId, ShardId, Topology},
};

/// The designated master of every shard (`None`: not known yet).
pub type Masters = Vec<Option<InstanceId>>;

// === infer ===

/// Reads each shard's master from what Redis reports; used when there is no state file.
pub fn infer_masters(topology: &Topology, observation: &Observation) -> Masters {
    (0..topology.shards.len()).map(|shard| infer_master(topology, observation, shard)).collect()
}

fn infer_master(topology: &Topology, observation: &Observation, shard: ShardId) -> Option<InstanceId> {
    let masters: Vec<InstanceId> = topology
        .shard_members(shard)
        .filter(|&id| observation.live(id).is_some_and(|i| i.role == Role::Master))
        .collect();
    if masters.is_empty() {
        return infer_from_replicas(topology, observation, shard);
    }
    // Drop every master another master was promoted from: those are stale.
    let newest: Vec<InstanceId> = masters
        .iter()
        .copied()
        .filter(|&old| {
            // Redis < 4.0: no IDs, nothing is dropped here (the replicas' rule below decides).
            let old_id = observation.live(old).expect("live").replid.as_deref();
            !masters.iter().any(|&new| observation.live(new).expect("live").descends_from(old_id))
        })
        .collect();
    match newest.as_slice() {
        [one] => Some(*one),
        _ => {
            // Unrelated histories: trust the one that replicas follow; a master restarted
            // empty has none.
            let followed: Vec<InstanceId> =
                newest.iter().copied().filter(|&id| !observation.live(id).expect("live").replicas.is_empty()).collect();
            (followed.len() == 1).then(|| followed[0])
        }
    }
}

/// No master answers: follow the replicas' `master_host` pointers up to the first instance
/// that does not answer, and take the head of that instance's room.
fn infer_from_replicas(topology: &Topology, observation: &Observation, shard: ShardId) -> Option<InstanceId> {
    let start = topology.shard_members(shard).find(|&id| observation.live(id).is_some())?;
    let mut current = start;
    for _ in 0..=topology.instances.len() {
        let Some(info) = observation.live(current) else {
            return Some(topology.head(shard, topology.instance(current).room));
        };
        let link = info.master.as_ref()?;
        current = topology.find(shard, &link.host, link.port)?;
    }
    None
}

// === decide ===

#[derive(Clone, Debug)]
pub struct Policy {
    pub auto_failover: bool,
    /// Maintenance mode ([`crate::maintenance`]): automatic failover off until resumed.
    pub paused: bool,
    /// Follow master changes made elsewhere. Off while someone else's failover is still
    /// converging: its state file names the new master before it is promoted, and for that
    /// moment the old one looks like the shard's only master.
    pub adopt: bool,
    /// By room index: `Some` while the room is in its cooldown ([`cooling`]); no automatic
    /// failover goes toward it meanwhile. A missing entry is `None`.
    pub cooling: Vec<Option<Cooling>>,
}

/// A room that failed (was judged lost, or an automatic failover moved masters away from it)
/// less than the cooldown ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooling {
    pub failed_at_unix_ms: u64,
    pub until_unix_ms: u64,
}

/// The anti-flap rule's input: which rooms are in their cooldown at `now_unix_ms`, given when
/// each last failed (the state file's `room_failures`).
///
/// Anti-flap exists to stop ping-pong between rooms, so it is scoped to the room a failover
/// would go *to*: a room that failed recently is not trusted with the masters yet, but a room
/// that has not failed takes them at once (a global hold, as Sentinel's failover-timeout and
/// orchestrator's RecoveryPeriodBlockSeconds have, leaves every shard without a writable master
/// when a second room is lost, although a healthy room holds the data). A manual switchover
/// does not count as a failure of the room it leaves: the operator chose it, the room is
/// healthy.
pub fn cooling(
    room_failures: &[Option<u64>],
    rooms: usize,
    cooldown: Duration,
    now_unix_ms: u64,
) -> Vec<Option<Cooling>> {
    let cooldown_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX);
    (0..rooms)
        .map(|room| {
            let failed_at_unix_ms = room_failures.get(room).copied().flatten()?;
            let until_unix_ms = failed_at_unix_ms.saturating_add(cooldown_ms);
            (now_unix_ms < until_unix_ms).then_some(Cooling { failed_at_unix_ms, until_unix_ms })
        })
        .collect()
}

fn rfc3339(unix_ms: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The master's room is lost; `to` is the first reachable instance of the next room.
    RoomLost { room: RoomId },
    /// The master alone is lost (down, and every replica that followed it no longer hears
    /// it); `to` is the next answering instance of its room's chain.
    MasterLost { instance: InstanceId },
    /// Someone else changed the master; roomguard follows, never undoes.
    Adopted { why: String },
    /// The master came back from a restart without its data (a fresh replication history),
    /// and `to`, next in its room's chain, still holds the lost history: it is promoted
    /// before it full-syncs the empty dataset and passes that on down the chain.
    RestartedEmpty { instance: InstanceId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterChange {
    pub shard: ShardId,
    pub from: Option<InstanceId>,
    pub to: InstanceId,
    pub reason: Reason,
}

/// A failover that is warranted but not done, and why. Its text holds no countdown, so
/// "log on change" logs it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    pub shard: ShardId,
    /// The room the shard's master is in (lost, or holding the lost master).
    pub room: RoomId,
    pub kind: HeldKind,
    pub why: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeldKind {
    /// `auto_failover = false`.
    AutoFailoverOff,
    /// Maintenance mode (`roomguard pause`).
    Paused,
    /// No answering instance to promote.
    NoTarget,
    /// Every room that could take over failed within the cooldown; `toward` is the first.
    Cooldown { toward: RoomId },
}

impl HeldKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HeldKind::AutoFailoverOff => "auto_failover_off",
            HeldKind::Paused => "paused",
            HeldKind::NoTarget => "no_target",
            HeldKind::Cooldown { .. } => "cooldown",
        }
    }
}

impl Policy {
    /// Why automatic failover is off, if it is: the pause first (it is the operator's latest
    /// word), then the configuration.
    fn automatic_off(&self) -> Option<(HeldKind, &'static str)> {
        if self.paused {
            Some((HeldKind::Paused, "automatic failover is paused (maintenance mode: `roomguard resume` ends it)"))
        } else if !self.auto_failover {
            Some((HeldKind::AutoFailoverOff, "auto_failover is off"))
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub changes: Vec<MasterChange>,
    pub held: Vec<Held>,
}

pub fn decide(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    masters: &Masters,
    policy: &Policy,
) -> Decision {
    let mut decision = Decision::default();
    for (shard, master) in masters.iter().enumerate() {
        let Some(master) = *master else { continue };
        if let Some((to, why)) = adoption(topology, observation, shard, master).filter(|_| policy.adopt) {
            decision.changes.push(MasterChange { shard, from: Some(master), to, reason: Reason::Adopted { why } });
            continue;
        }
        let room = topology.instance(master).room;
        if let Some(to) = rescuer(topology, observation, verdict, master) {
            // Not held by the cooldown: waiting means the replicas are wiped, and a restart
            // is a fact, not a flapping signal.
            match policy.automatic_off() {
                None => {
                    let reason = Reason::RestartedEmpty { instance: master };
                    decision.changes.push(MasterChange { shard, from: Some(master), to, reason });
                }
                Some((kind, off)) => decision.held.push(Held {
                    shard,
                    room,
                    kind,
                    why: format!(
                        "the master {} restarted empty and its replicas will full-sync the empty dataset; {off}",
                        topology.addr(master)
                    ),
                }),
            }
            continue;
        }
        let held = |kind: HeldKind, why: String| Held { shard, room, kind, why };
        let (target, reason) = match verdict.room(room).status {
            RoomStatus::Lost => {
                let target = failover_target(topology, observation, verdict, shard, room, policy);
                (target, Reason::RoomLost { room })
            }
            // Within the master's room: no room changes, so the cooldown does not apply.
            RoomStatus::Degraded if master_lost(topology, observation, verdict, master) => (
                successor_in_room(topology, observation, verdict, master).map(|to| (to, None)),
                Reason::MasterLost { instance: master },
            ),
            _ => continue,
        };
        let Some((to, cooling)) = target else {
            let what = match reason {
                Reason::MasterLost { .. } => "no other instance of the master's room answers",
                _ => "no reachable instance of this shard in a room that is up",
            };
            decision.held.push(held(HeldKind::NoTarget, what.into()));
            continue;
        };
        if let Some((kind, off)) = policy.automatic_off() {
            decision.held.push(held(kind, format!("{off}; run `roomguard failover --room ROOM`")));
        } else if let Some(c) = cooling {
            let toward = topology.instance(to).room;
            let name = topology.room_name(toward);
            decision.held.push(held(
                HeldKind::Cooldown { toward },
                format!(
                    "room {name} would take over, but it failed itself at {} and no room that has not failed \
                     can: no automatic failover toward it before {} (the cooldown); \
                     `roomguard failover --room {name}` overrides",
                    rfc3339(c.failed_at_unix_ms),
                    rfc3339(c.until_unix_ms)
                ),
            ));
        } else {
            decision.changes.push(MasterChange { shard, from: Some(master), to, reason });
        }
    }
    decision
}

/// The master is down from here, and the instances that replicate from it — at least one —
/// all agree that it is gone (the same cross-evidence rule as for a room, for one instance).
pub fn master_lost(topology: &Topology, observation: &Observation, verdict: &Verdict, master: InstanceId) -> bool {
    if !verdict.down[master] {
        return false;
    }
    let addr = topology.addr(master);
    let witnesses: Vec<InstanceId> = topology
        .shard_members(topology.instance(master).shard)
        .filter(|&id| {
            observation.live(id).and_then(|i| i.master.as_ref()).is_some_and(|l| l.points_to(&addr.host, addr.port))
        })
        .collect();
    !witnesses.is_empty() && witnesses.iter().all(|&id| verdict.deaf(id))
}

/// When `master` restarted without its data: the nearest instance of its chain (its room's
/// first) that still holds the lost history (it has not full-synced from the empty master yet).
fn rescuer(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    master: InstanceId,
) -> Option<InstanceId> {
    let lost = observation.get(master).lost_history.as_ref()?;
    let now = observation.live(master).filter(|i| i.role == Role::Master)?;
    // Redis < 4.0 (no IDs): the offset alone. A replica that has full-synced from the restarted
    // master is never ahead of it, so being ahead means it still holds the lost history.
    // Its room's chain. Only when every other instance of the room is down or came back empty
    // too (a power blip, restarts faster than `down_after`) the next rooms', in chain order: the
    // data lives on only there (the soak found roomguard re-pointing that last copy at the
    // empty master). Never past a live room successor: two controllers that see it at slightly
    // different moments would otherwise pick different rooms (the soak found that fight too).
    let whole_room_gone =
        room_successors(topology, master).all(|id| verdict.down[id] || observation.get(id).lost_history.is_some());
    let reach = if whole_room_gone { usize::MAX } else { room_successors(topology, master).count() };
    topology.chain_order(master).into_iter().skip(1).take(reach).filter(|&id| !verdict.down[id]).find(|&id| {
        observation.live(id).is_some_and(|i| {
            i.role == Role::Replica
                && i.shares_history(lost.replid.as_deref()).unwrap_or(true)
                && i.repl_offset > now.repl_offset
        })
    })
}

/// `master` (answering `now`) restarted with less data than it had, and `other` holds more of
/// the history it lost. Needs replication IDs (Redis >= 4.0).
fn holds_lost_history(
    observation: &Observation,
    master: InstanceId,
    now: &ReplicationInfo,
    other: &ReplicationInfo,
) -> bool {
    observation.get(master).lost_history.as_ref().is_some_and(|lost| {
        other.shares_history(lost.replid.as_deref()) == Some(true) && other.repl_offset > now.repl_offset
    })
}

/// The instances after `master` in its room's chain, in order.
fn room_successors(topology: &Topology, master: InstanceId) -> impl Iterator<Item = InstanceId> + '_ {
    let room = topology.instance(master).room;
    topology.chain_order(master).into_iter().skip(1).take_while(move |&id| topology.instance(id).room == room)
}

/// The next answering instance after `master` in its room's chain.
fn successor_in_room(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    master: InstanceId,
) -> Option<InstanceId> {
    room_successors(topology, master).find(|&id| !verdict.down[id] && observation.live(id).is_some())
}

/// The master someone else moved this shard to, if the adoption rules below say so.
pub fn adopted(
    topology: &Topology,
    observation: &Observation,
    shard: ShardId,
    master: InstanceId,
) -> Option<InstanceId> {
    adoption(topology, observation, shard, master).map(|(to, _)| to)
}

/// Did someone else move this shard's master? Returns the new master and the evidence.
fn adoption(
    topology: &Topology,
    observation: &Observation,
    shard: ShardId,
    master: InstanceId,
) -> Option<(InstanceId, String)> {
    let other_masters: Vec<(InstanceId, &ReplicationInfo)> = topology
        .shard_members(shard)
        .filter(|&id| id != master)
        // One that restarted with less data than it had is not followed while another
        // instance still holds what it lost (once none does, the data is gone either way).
        .filter(|&id| !observation.lost_history_still_held(topology, id))
        .filter_map(|id| observation.live(id).filter(|i| i.role == Role::Master).map(|i| (id, i)))
        .collect();
    let master_serving = observation.live(master).is_some_and(|i| i.role == Role::Master);
    // A replica restarted from its RDB also comes back as a master whose `master_replid2` is
    // the shard's history: lineage alone cannot tell it from a promotion. While the
    // designated master still serves, it stays authoritative (a switchover elsewhere demotes
    // it within milliseconds, and then the second rule below applies). Otherwise a promoted
    // master must also carry its chain: a restarted instance starts with no replica.
    // Redis < 4.0 shows no lineage: nothing counts as promoted, and a change made elsewhere is
    // followed only once the old master answers as a replica (the last rule).
    let promoted = |info: &ReplicationInfo| info.second_history().is_some() && !info.replicas.is_empty();
    if let (false, Some(old)) = (master_serving, observation.get(master).info.as_ref()) {
        let promoted_from_it = other_masters
            .iter()
            .filter(|(_, info)| info.descends_from(old.replid.as_deref()) && promoted(info))
            .max_by_key(|(_, info)| info.repl_offset);
        if let Some((id, _)) = promoted_from_it {
            return Some((*id, format!("it was promoted from {}'s replication stream", topology.addr(master))));
        }
    }
    // A master promoted in place from the designated master's stream (this controller saw the
    // same process answer as a replica before, so it was not restarted from an RDB): another
    // controller's failover or switchover. It wins even while the old master still serves (it
    // was hung or cut off from its replicas, and returns): waiting for the old one to be
    // demoted let two controllers demote each other's master every round (found by the soak).
    // The old master's writes since the fork are discarded when it is demoted, and counted.
    if let Some(designated) = observation.live(master).filter(|i| i.role == Role::Master) {
        let newer = other_masters
            .iter()
            .filter(|(id, info)| {
                info.descends_from(designated.replid.as_deref()) && observation.get(*id).promoted_in_place()
            })
            .max_by_key(|(_, info)| info.repl_offset);
        if let Some((id, _)) = newer {
            return Some((
                *id,
                format!(
                    "it was promoted in place from the replication stream of {}, which still serves",
                    topology.addr(master)
                ),
            ));
        }
    }
    // The designated master restarted without its data and another controller has already
    // rescued the shard. Either this controller saw the restart (the designated master lost
    // a history, recorded or read from its replicas) and the other master holds more of that
    // history — even before its chain is attached: a restart from an older RDB looks promoted
    // too (Redis 7 restores the RDB's ID as the second one), so lineage alone would leave two
    // controllers demoting each other's master — or it serves a fresh history (no second ID)
    // that is shorter than the history another master was promoted from, and knows nothing
    // of it.
    if let Some(designated) = observation.live(master).filter(|i| i.role == Role::Master) {
        let rescued = other_masters
            .iter()
            .filter(|(_, info)| {
                holds_lost_history(observation, master, designated, info)
                    || (designated.fresh_history()
                        && promoted(info)
                        && info.replid2 != designated.replid
                        && designated.repl_offset < info.second_repl_offset - 1)
            })
            .max_by_key(|(_, info)| info.repl_offset);
        if let Some((id, _)) = rescued {
            return Some((
                *id,
                format!(
                    "{} serves a fresh history shorter than the one {} was promoted from: it restarted without its data",
                    topology.addr(master),
                    topology.addr(*id)
                ),
            ));
        }
    }
    let [(only, only_info)] = other_masters.as_slice() else { return None };
    match observation.live(master) {
        Some(info) if info.role == Role::Replica => {
            Some((*only, format!("{} is now a replica and it is the shard's only master", topology.addr(master))))
        }
        None if promoted(only_info) => Some((
            *only,
            format!(
                "{} does not answer and it is the shard's only master, promoted from a replica",
                topology.addr(master)
            ),
        )),
        _ => None,
    }
}

/// The first reachable instance of the first other room (in preference order) that is up;
/// when that room is in its cooldown, the first of a later room that is not and that can take
/// over now: its instance no longer hears a master (only such a replica is ever promoted, and
/// one that still hears a live room would be chained in a circle). Failing that, the first
/// room's, with its cooldown (the failover is then held).
fn failover_target(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    shard: ShardId,
    lost: RoomId,
    policy: &Policy,
) -> Option<(InstanceId, Option<Cooling>)> {
    let mut candidates = (0..topology.rooms.len())
        .filter(|&room| room != lost && matches!(verdict.room(room).status, RoomStatus::Up | RoomStatus::Degraded))
        .filter_map(|room| {
            let to = topology.shards[shard].chains[room].iter().copied().find(|&id| observation.live(id).is_some())?;
            Some((to, policy.cooling.get(room).copied().flatten()))
        });
    let first = candidates.next()?;
    if first.1.is_none() {
        return Some(first);
    }
    let orphaned = |id: InstanceId| observation.live(id).is_some_and(|i| i.role == Role::Master) || verdict.deaf(id);
    Some(candidates.find(|&(to, cooling)| cooling.is_none() && orphaned(to)).unwrap_or(first))
}

// === plan ===

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// `REPLICAOF NO ONE` on a replica that should be its shard's master. `because` is the
    /// evidence that it no longer hears its master, which [`crate::act`] re-checks on a fresh
    /// read before sending anything.
    Promote { instance: InstanceId, because: Hearing },
    /// `REPLICAOF to` on a master that must become a replica. `diverged_bytes` is how far
    /// it wrote beyond the point the new master was promoted from (those writes are
    /// discarded by the resync); `None` when the histories are unrelated.
    Demote { instance: InstanceId, to: InstanceId, offset: i64, diverged_bytes: Option<i64> },
    /// `REPLICAOF to` on a replica that follows the wrong parent.
    Repoint { instance: InstanceId, to: InstanceId },
}

impl Action {
    pub fn instance(&self) -> InstanceId {
        match *self {
            Action::Promote { instance, .. } | Action::Demote { instance, .. } | Action::Repoint { instance, .. } => {
                instance
            }
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Action::Promote { .. } => "promote",
            Action::Demote { .. } => "demote",
            Action::Repoint { .. } => "replicaof",
        }
    }

    pub fn describe<'a>(&'a self, topology: &'a Topology) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Action, &'a Topology);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let t = self.1;
                match *self.0 {
                    Action::Promote { instance, .. } => write!(f, "promote {} (REPLICAOF NO ONE)", t.addr(instance)),
                    Action::Demote { instance, to, .. } => {
                        write!(f, "demote {} to a replica of {}", t.addr(instance), t.addr(to))
                    }
                    Action::Repoint { instance, to } => {
                        write!(f, "re-point {} to replicate {}", t.addr(instance), t.addr(to))
                    }
                }
            }
        }
        D(self, topology)
    }
}

/// An action the diff asked for but a safety rule refused, for now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Veto {
    pub action: Action,
    pub why: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub vetoed: Vec<Veto>,
}

/// What the plan's safety rules need besides the observation.
#[derive(Clone, Copy, Debug)]
pub struct PlanSettings {
    /// How long a master that looks newer than the designated one (its `master_replid2` is
    /// the designated master's ID) is left alone before it is treated as stale: a switchover
    /// run elsewhere passes through that state for milliseconds, a replica restarted from its
    /// RDB stays in it.
    pub newer_master_grace: Duration,
    pub now: Instant,
}

pub fn plan(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    masters: &Masters,
    settings: &PlanSettings,
) -> Plan {
    let mut out = Plan::default();
    for &master in masters.iter().flatten() {
        plan_shard(topology, observation, verdict, master, settings, &mut out);
    }
    out
}

fn plan_shard(
    topology: &Topology,
    observation: &Observation,
    verdict: &Verdict,
    master: InstanceId,
    settings: &PlanSettings,
    out: &mut Plan,
) {
    // An instance that restarted empty is bridged like a dead one: a replica that full-syncs
    // from it is wiped, and so is everything below. It gets a parent of its own all the same.
    let desired: HashMap<InstanceId, Parent> = topology
        .desired_parents_bridging(master, |id| verdict.down[id], |id| observation.get(id).lost_history.is_none())
        .into_iter()
        .collect();
    let addr_of = |id: InstanceId| topology.addr(id);
    // A parent is ready to take a replica when it is itself where it should be, in sync.
    let ready = |parent: InstanceId| -> bool {
        let Some(info) = observation.live(parent) else { return false };
        match (desired.get(&parent), &info.master) {
            (Some(Parent::None), None) => true,
            (Some(Parent::Instance(p)), Some(link)) => {
                link.link_up && !link.sync_in_progress && link.points_to(&addr_of(*p).host, addr_of(*p).port)
            }
            _ => false,
        }
    };
    let master_info = observation.live(master).filter(|i| i.role == Role::Master);

    for (&instance, &parent) in sorted(&desired) {
        let Some(info) = observation.live(instance) else { continue };
        let mut push = |action: Action, veto: Option<String>| match veto {
            None => out.actions.push(action),
            Some(why) => out.vetoed.push(Veto { action, why }),
        };
        match parent {
            Parent::None => {
                if info.role == Role::Replica {
                    let because = verdict.hearing[instance].unwrap_or(Hearing::Hears);
                    let veto = because.hears().then(|| {
                        let link = info.master.as_ref().expect("replica has a master");
                        format!("it still hears its master {}:{}", link.host, link.port)
                    });
                    push(Action::Promote { instance, because }, veto);
                }
            }
            Parent::Instance(to) => match &info.master {
                None => {
                    // Unknown before Redis 4.0 (no promotion point is reported).
                    let diverged_bytes = master_info.and_then(|m| {
                        m.descends_from(info.replid.as_deref())
                            .then(|| (info.repl_offset - (m.second_repl_offset - 1)).max(0))
                    });
                    let action = Action::Demote { instance, to, offset: info.repl_offset, diverged_bytes };
                    let veto = match master_info {
                        None => {
                            Some(format!("the designated master {} is not an answering master yet", addr_of(master)))
                        }
                        // A restarted instance whose offset went back is no switchover in
                        // flight: no grace for it.
                        // Redis < 4.0 has no IDs, and offsets do not tell either (each link of a
                        // chain numbers its own stream): no master looks newer, the designated
                        // one is trusted. So on those versions controllers must not disagree on
                        // it: run one controller with automatic failover (README).
                        Some(m)
                            if info.descends_from(m.replid.as_deref())
                                && observation.get(instance).lost_history.is_none()
                                && observation.get(instance).master_since.is_none_or(|since| {
                                    settings.now.saturating_duration_since(since) < settings.newer_master_grace
                                }) =>
                        {
                            Some(format!("it looks newer than the designated master {}; waiting", addr_of(master)))
                        }
                        // The designated master restarted with less than it had, and this
                        // one holds more of what it lost: another controller's rescue (or an
                        // instance restarted from a newer RDB). Demoting it would replace that
                        // data with the shorter copy; the rescue is adopted instead.
                        Some(m) if holds_lost_history(observation, master, m, info) => Some(format!(
                            "it holds more of the history the designated master {} lost when it restarted; \
                             not demoting",
                            addr_of(master)
                        )),
                        // The designated master's history is fresh, unrelated and shorter: it
                        // is the one that looks restarted empty, not this one (another
                        // controller saw the restart, this one did not).
                        Some(m)
                            if m.fresh_history()
                                && info.replid != m.replid
                                && !info.descends_from(m.replid.as_deref())
                                && !m.descends_from(info.replid.as_deref())
                                && info.repl_offset > m.repl_offset =>
                        {
                            Some(format!(
                                "it holds more data than the designated master {}, whose history is fresh and \
                                 unrelated (did it restart empty?); not demoting",
                                addr_of(master)
                            ))
                        }
                        Some(_) if !ready(to) => Some(format!("its new parent {} is not in sync yet", addr_of(to))),
                        Some(_) => None,
                    };
                    push(action, veto);
                }
                Some(link) if !link.points_to(&addr_of(to).host, addr_of(to).port) => {
                    let veto = (!ready(to)).then(|| format!("its new parent {} is not in sync yet", addr_of(to)));
                    push(Action::Repoint { instance, to }, veto);
                }
                Some(_) => {}
            },
        }
    }
}

fn sorted(map: &HashMap<InstanceId, Parent>) -> Vec<(&InstanceId, &Parent)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by_key(|(id, _)| **id);
    v
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::detect::{DetectSettings, assess, scenario::Scenario};

    const SETTINGS: DetectSettings = DetectSettings {
        down_after: Duration::from_secs(1),
        silence: crate::detect::SilenceSettings {
            configured: Some(Duration::from_secs(12)),
            margin: Duration::from_millis(400),
        },
    };
    const POLICY: Policy = Policy { auto_failover: true, paused: false, adopt: true, cooling: Vec::new() };
    const COOLING: Option<Cooling> = Some(Cooling { failed_at_unix_ms: 1_000, until_unix_ms: 301_000 });

    /// One control-loop round: decide, then plan with the new masters.
    fn round(s: &Scenario, masters: &Masters, policy: &Policy) -> (Decision, Masters, Plan) {
        // As the control loop reads it (minus the ageing: every probe in a scenario is fresh).
        let observation = s.observation.clone().with_inferred_losses(&s.topology);
        let verdict = assess(&s.topology, &observation, s.now, SETTINGS);
        let decision = decide(&s.topology, &observation, &verdict, masters, policy);
        let mut masters = masters.clone();
        for c in &decision.changes {
            masters[c.shard] = Some(c.to);
        }
        let settings = PlanSettings { newer_master_grace: Duration::from_secs(1), now: s.now };
        let plan = plan(&s.topology, &observation, &verdict, &masters, &settings);
        (decision, masters, plan)
    }

    fn described(s: &Scenario, plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(|a| a.describe(&s.topology).to_string()).collect()
    }

    #[test]
    fn healthy_means_no_action() {
        let s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        assert_eq!(masters, vec![Some(s.id("192.168.99.11:6401")), Some(s.id("192.168.99.11:6402"))]);
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn room_1_lost_promotes_exactly_room_2_heads() {
        let s = Scenario::room1_killed(Duration::from_secs(2));
        let masters = vec![Some(s.id("192.168.99.11:6401")), Some(s.id("192.168.99.11:6402"))];
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes.len(), 2);
        assert!(decision.changes.iter().all(|c| c.reason == Reason::RoomLost { room: 0 }));
        assert_eq!(new_masters, vec![Some(s.id("192.168.99.12:6401")), Some(s.id("192.168.99.12:6402"))]);
        assert_eq!(
            described(&s, &plan),
            ["promote 192.168.99.12:6401 (REPLICAOF NO ONE)", "promote 192.168.99.12:6402 (REPLICAOF NO ONE)"]
        );
        assert!(plan.vetoed.is_empty(), "{:?}", plan.vetoed);
    }

    #[test]
    fn room_1_lost_but_not_for_down_after_yet() {
        let s = Scenario::room1_killed(Duration::from_millis(900));
        let masters = infer_masters(&s.topology, &s.observation);
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn controller_cut_off_means_no_action() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        for id in s.topology.room_members(0).collect::<Vec<_>>() {
            s.fail(id, Duration::from_secs(30));
        }
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert!(plan.actions.is_empty(), "{:?}", described(&s, &plan));
    }

    #[test]
    fn held_when_auto_failover_is_off_or_in_cooldown() {
        let s = Scenario::room1_killed(Duration::from_secs(2));
        let masters = vec![Some(s.id("192.168.99.11:6401")), Some(s.id("192.168.99.11:6402"))];
        for (policy, kind) in [
            (Policy { auto_failover: false, ..POLICY }, HeldKind::AutoFailoverOff),
            (Policy { cooling: vec![None, COOLING], ..POLICY }, HeldKind::Cooldown { toward: 1 }),
            (Policy { paused: true, ..POLICY }, HeldKind::Paused),
            (Policy { paused: true, auto_failover: false, ..POLICY }, HeldKind::Paused),
        ] {
            let (decision, _, plan) = round(&s, &masters, &policy);
            assert!(decision.changes.is_empty());
            assert_eq!(decision.held.len(), 2);
            assert!(decision.held.iter().all(|h| h.kind == kind), "{:?}", decision.held);
            assert!(plan.actions.is_empty());
        }
    }

    #[test]
    fn cooling_is_per_room_and_ends_with_the_cooldown() {
        let cooldown = Duration::from_secs(300);
        type Case = (&'static str, Vec<Option<u64>>, u64, Vec<Option<Cooling>>);
        let cases: Vec<Case> = vec![
            ("nothing failed", vec![], 1_000_000, vec![None, None, None]),
            (
                "room 2 failed 10 s ago",
                vec![None, Some(990_000)],
                1_000_000,
                vec![None, Some(Cooling { failed_at_unix_ms: 990_000, until_unix_ms: 1_290_000 }), None],
            ),
            ("room 2 failed exactly a cooldown ago", vec![None, Some(700_000)], 1_000_000, vec![None, None, None]),
            (
                "room 1 failed just within, room 3 long ago",
                vec![Some(700_001), None, Some(1)],
                1_000_000,
                vec![Some(Cooling { failed_at_unix_ms: 700_001, until_unix_ms: 1_000_001 }), None, None],
            ),
            // A clock that went back: still cooling, never longer than the cooldown past the failure.
            (
                "failure in the future",
                vec![Some(2_000_000)],
                1_000_000,
                vec![Some(Cooling { failed_at_unix_ms: 2_000_000, until_unix_ms: 2_300_000 }), None, None],
            ),
        ];
        for (name, failures, now, expected) in cases {
            assert_eq!(cooling(&failures, 3, cooldown, now), expected, "{name}");
        }
    }

    fn promoted(plan: &Plan) -> Vec<InstanceId> {
        plan.actions.iter().filter(|a| matches!(a, Action::Promote { .. })).map(Action::instance).collect()
    }

    /// Three rooms, one shard, chained 1 -> 2 -> 3; room 1 is lost (its instances fail, room 2's
    /// head hears nothing).
    fn three_rooms_room_1_lost() -> Scenario {
        let a = |s: &str| s.parse::<crate::topology::Addr>().unwrap();
        let topology = Topology::new(
            vec!["1".into(), "2".into(), "3".into()],
            vec![(
                "shard-1".into(),
                vec![
                    vec![a("10.0.0.1:1"), a("10.0.0.1:2")],
                    vec![a("10.0.0.2:1"), a("10.0.0.2:2")],
                    vec![a("10.0.0.3:1"), a("10.0.0.3:2")],
                ],
            )],
        );
        let now = std::time::Instant::now() + crate::detect::scenario::T0_AGO;
        let mut s = Scenario { observation: Observation::new(topology.instances.len()), topology, now };
        let replid = format!("{:040}", 1);
        let order = s.topology.chain_order(0);
        s.set_master(order[0], &replid, "", 1000);
        for pair in order.windows(2) {
            s.set_replica(pair[1], pair[0], &replid, true, 1);
        }
        s.fail(0, Duration::from_secs(2));
        s.fail(1, Duration::from_secs(2));
        s.set_replica(2, 1, &replid, false, -1);
        s
    }

    /// Anti-flap holds a failover only toward a room that itself failed within the cooldown;
    /// it goes to the next room that did not fail, and holds only when every candidate did.
    #[test]
    fn cooldown_holds_only_failovers_toward_rooms_that_failed() {
        let (room2_head, room3_head) = (2, 4);
        let c = COOLING;
        type Case = (&'static str, Vec<Option<Cooling>>, Result<InstanceId, HeldKind>);
        let cases: Vec<Case> = vec![
            ("no room cooling", vec![], Ok(room2_head)),
            ("the lost room itself cooling", vec![c, None, None], Ok(room2_head)),
            ("room 3 cooling", vec![None, None, c], Ok(room2_head)),
            // Room 3 still hears room 2 (alive): it cannot take over without a circle.
            ("room 2 cooling", vec![None, c, None], Err(HeldKind::Cooldown { toward: 1 })),
            ("rooms 2 and 3 cooling", vec![None, c, c], Err(HeldKind::Cooldown { toward: 1 })),
        ];
        for (name, cooling, expected) in cases {
            let s = three_rooms_room_1_lost();
            let policy = Policy { cooling, ..POLICY };
            let (decision, _, plan) = round(&s, &vec![Some(0)], &policy);
            match expected {
                Ok(to) => {
                    assert_eq!(decision.changes.len(), 1, "{name}: {decision:?}");
                    assert_eq!(decision.changes[0].to, to, "{name}");
                    assert_eq!(decision.changes[0].reason, Reason::RoomLost { room: 0 }, "{name}");
                    assert_eq!(promoted(&plan), vec![to], "{name}");
                    assert_eq!(plan.actions.len(), 1, "{name}");
                    assert!(decision.held.is_empty(), "{name}");
                }
                Err(kind) => {
                    assert!(decision.changes.is_empty(), "{name}: {decision:?}");
                    assert_eq!(decision.held.len(), 1, "{name}");
                    assert_eq!(decision.held[0].kind, kind, "{name}");
                    // Stable text (no countdown), naming the room and when it may take over.
                    let why = &decision.held[0].why;
                    assert!(
                        why.contains("room 2 would take over, but it failed itself at 1970-01-01T00:00:01Z"),
                        "{why}"
                    );
                    assert!(why.contains("before 1970-01-01T00:05:01Z"), "{why}");
                    assert!(plan.actions.is_empty(), "{name}");
                }
            }
        }
        // Room 3 no longer hears room 2 (it lost its link): it takes over from cooling room 2.
        let mut s = three_rooms_room_1_lost();
        s.set_replica(room3_head, 3, &format!("{:040}", 1), false, -1);
        let (decision, _, plan) = round(&s, &vec![Some(0)], &Policy { cooling: vec![None, c, None], ..POLICY });
        assert_eq!(decision.changes.iter().map(|c| c.to).collect::<Vec<_>>(), vec![room3_head], "{decision:?}");
        assert_eq!(promoted(&plan), vec![room3_head], "{plan:?}");
        // The cascade: room 2 took over, then was lost too. Room 3 takes over at once, whatever
        // the cooldown of rooms 1 and 2.
        let mut s = three_rooms_room_1_lost();
        s.fail(2, Duration::from_secs(2));
        s.fail(3, Duration::from_secs(2));
        s.set_replica(room3_head, 3, &format!("{:040}", 1), false, -1);
        for cooling in [vec![], vec![c, None, None], vec![c, c, None]] {
            let (decision, _, plan) = round(&s, &vec![Some(room2_head)], &Policy { cooling, ..POLICY });
            assert_eq!(decision.changes.iter().map(|c| c.to).collect::<Vec<_>>(), vec![room3_head], "{decision:?}");
            assert_eq!(decision.changes[0].reason, Reason::RoomLost { room: 1 });
            assert_eq!(promoted(&plan), vec![room3_head]);
            assert_eq!(plan.actions.len(), 1);
        }
        // ... but not toward room 3 if it failed too.
        let policy = Policy { cooling: vec![None, None, c], ..POLICY };
        let (decision, _, _) = round(&s, &vec![Some(room2_head)], &policy);
        assert_eq!(decision.held[0].kind, HeldKind::Cooldown { toward: 2 }, "{decision:?}");
    }

    #[test]
    fn cooldown_never_holds_a_failover_within_the_masters_room() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.fail(m, Duration::from_secs(2));
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        let (decision, new_masters, _) = round(&s, &masters, &Policy { cooling: vec![COOLING, COOLING], ..POLICY });
        assert_eq!(decision.changes[0].reason, Reason::MasterLost { instance: m });
        assert_eq!(new_masters[0], Some(r));
    }

    #[test]
    fn adopts_a_failover_done_by_someone_else_and_never_undoes_it() {
        // Room 1 is gone; someone promoted room 2's heads. Our state still names room 1.
        let mut s = Scenario::room1_killed(Duration::from_secs(60));
        for shard in 0..2 {
            let head2 = s.topology.head(shard, 1);
            let old = format!("{:040}", shard + 1);
            s.set_master(head2, &format!("{:040}", shard + 7), &old, 2000);
            let entry = crate::info::ReplicaEntry {
                host: "192.168.99.12".into(),
                port: 6403 + shard as u16,
                state: "online".into(),
                offset: 2000,
                lag: Some(0),
            };
            s.observation.instances[head2].info.as_mut().unwrap().replicas.push(entry);
        }
        let masters = vec![Some(s.id("192.168.99.11:6401")), Some(s.id("192.168.99.11:6402"))];
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert!(decision.changes.iter().all(|c| matches!(c.reason, Reason::Adopted { .. })), "{decision:?}");
        assert_eq!(new_masters, vec![Some(s.id("192.168.99.12:6401")), Some(s.id("192.168.99.12:6402"))]);
        assert!(plan.actions.is_empty(), "{:?}", described(&s, &plan));
    }

    #[test]
    fn returning_old_master_is_demoted_under_the_new_room_with_divergence_counted() {
        let mut s = Scenario::healthy();
        // Room 2 took over shard 6401; the old master 11:6401 comes back still a master.
        let (old, new, new_tail) = (s.id("192.168.99.11:6401"), s.id("192.168.99.12:6401"), s.id("192.168.99.12:6403"));
        let old_id = format!("{:040}", 1);
        s.set_master(old, &old_id, "", 1500);
        s.set_master(new, &format!("{:040}", 9), &old_id, 3000); // second_repl_offset = 1500
        s.set_replica(new_tail, new, &format!("{:040}", 9), true, 0);
        let masters = vec![Some(new), Some(s.id("192.168.99.11:6402"))];
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert_eq!(
            plan.actions[0],
            Action::Demote { instance: old, to: new_tail, offset: 1500, diverged_bytes: Some(1) }
        );
        // And a controller without state picks the newer master from the replication IDs.
        assert_eq!(infer_masters(&s.topology, &s.observation)[0], Some(new));
    }

    #[test]
    fn lost_master_alone_is_replaced_within_its_room_and_room_2_stays_attached() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.fail(m, Duration::from_secs(2));
        // Its replica has not noticed yet: no decision.
        let (decision, _, _) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        // Now it has: promote the next instance of room 1's chain.
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::MasterLost { instance: m });
        assert_eq!(new_masters[0], Some(r));
        assert_eq!(described(&s, &plan), ["promote 192.168.99.11:6403 (REPLICAOF NO ONE)"]);
    }

    /// Row 10: the master restarts without its data faster than `down_after`.
    #[test]
    fn master_restarted_empty_is_replaced_by_the_replica_that_still_holds_the_data() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r, h2) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"), s.id("192.168.99.12:6401"));
        let fresh = "f".repeat(40);
        s.set_master(m, &fresh, "", 14);
        // Its replica lost the link when it died, and waits for the full sync to start.
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        assert!(s.observation.get(m).lost_history.is_some());
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(r));
        assert_eq!(described(&s, &plan), ["promote 192.168.99.11:6403 (REPLICAOF NO ONE)"]);
        // The next round, before a fresh probe shows the promotion: the empty master is the
        // only master in sight, and it is not adopted back.
        let (decision, _, _) = round(&s, &new_masters, &POLICY);
        assert!(decision.changes.is_empty(), "{decision:?}");
        // Even in the cooldown; but not when automatic failover is off.
        let cooling = Policy { cooling: vec![COOLING, COOLING], ..POLICY };
        assert_eq!(round(&s, &masters, &cooling).1[0], Some(r));
        for policy in [Policy { auto_failover: false, ..POLICY }, Policy { paused: true, ..POLICY }] {
            let (decision, _, plan) = round(&s, &masters, &policy);
            assert!(decision.changes.is_empty() && plan.actions.is_empty());
            assert!(decision.held[0].why.contains("restarted empty"), "{:?}", decision.held);
        }
        // Too late: the replica already full-synced the empty dataset. It is live and did not
        // restart, so the rescue does not look past it into room 2 (two controllers seeing it a
        // moment apart would pick different rooms): nothing is done.
        s.set_replica(r, m, &fresh, true, 1);
        s.set_replica(h2, r, &format!("{:040}", 1), false, -1);
        let (decision, _, _) = round(&s, &masters, &POLICY);
        assert!(decision.changes.is_empty());
        // The whole room came back empty (the replica restarted too): room 2's head, which still
        // holds the data, is the rescuer.
        s.fail(r, Duration::from_millis(100));
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        s.set_master(r, &"e".repeat(40), "", 0);
        assert!(s.observation.get(r).lost_history.is_some());
        let (decision, new_masters, _) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(h2));
    }

    /// Redis < 4.0 has no replication IDs: the rules fall back to offsets.
    #[test]
    fn without_replication_ids_room_loss_stale_masters_and_rescues_use_offsets() {
        let mut s = Scenario::room1_killed(Duration::from_secs(2));
        s.without_replids();
        let masters = vec![Some(s.id("192.168.99.11:6401")), Some(s.id("192.168.99.11:6402"))];
        let (decision, new_masters, _) = round(&s, &masters, &POLICY);
        assert!(decision.changes.iter().all(|c| c.reason == Reason::RoomLost { room: 0 }));
        assert_eq!(new_masters, vec![Some(s.id("192.168.99.12:6401")), Some(s.id("192.168.99.12:6402"))]);

        // The stale master returns behind the promoted one: demoted (divergence unknown).
        let mut s = Scenario::healthy();
        let (old, new, new_tail) = (s.id("192.168.99.11:6401"), s.id("192.168.99.12:6401"), s.id("192.168.99.12:6403"));
        s.set_master(old, "", "", 1500);
        s.set_master(new, "", "", 3000);
        s.set_replica(new_tail, new, "", true, 0);
        s.without_replids();
        let masters = vec![Some(new), Some(s.id("192.168.99.11:6402"))];
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert_eq!(plan.actions[0], Action::Demote { instance: old, to: new_tail, offset: 1500, diverged_bytes: None });
        // Ahead of the designated master it is demoted all the same: offsets of different
        // links are not comparable before 4.0, the designated master is trusted.
        s.set_master(old, "", "", 4000);
        s.without_replids();
        let (_, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(plan.actions[0], Action::Demote { instance: old, to: new_tail, offset: 4000, diverged_bytes: None });

        // The master restarts empty: its replica, still ahead of it, is promoted.
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.set_master(m, "", "", 14);
        s.set_replica(r, m, "", false, -1);
        s.without_replids();
        assert_eq!(s.observation.get(m).lost_history.as_ref().map(|l| l.offset), Some(1000));
        let (decision, new_masters, _) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(r));
        // Too late: it full-synced the empty dataset (its offset is the master's), and so did
        // everything below it: nothing is ahead of the master any more.
        for id in s.topology.shard_members(0).filter(|&id| id != m).collect::<Vec<_>>() {
            s.observation.instances[id].info.as_mut().unwrap().repl_offset = 14;
        }
        let (decision, _, _) = round(&s, &masters, &POLICY);
        assert!(decision.changes.is_empty(), "{decision:?}");
    }

    #[test]
    fn a_master_seen_first_or_continuing_its_history_is_not_restarted_empty() {
        // A controller that starts after the restart has no earlier history: no evidence.
        let mut s = Scenario::healthy();
        let m = s.id("192.168.99.11:6401");
        s.observation.instances[m] = Default::default();
        s.set_master(m, &"f".repeat(40), "", 14);
        assert_eq!(s.observation.get(m).lost_history, None);
        // Promoted, or restarted from an RDB saved at shutdown: the history continues.
        let mut s = Scenario::healthy();
        s.set_master(m, &"f".repeat(40), &format!("{:040}", 1), 1000);
        assert_eq!(s.observation.get(m).lost_history, None);
        // The previous answer is too old to prove anything: unseen, it may have been demoted,
        // resynced to a shorter history and promoted again.
        let mut s = Scenario::healthy();
        s.now += crate::observe::RESTART_EVIDENCE_WINDOW + Duration::from_secs(1);
        s.set_master(m, &"f".repeat(40), "", 14);
        assert_eq!(s.observation.get(m).lost_history, None);
        // An offset that did not go back is not a loss, whatever the IDs.
        let mut s = Scenario::healthy();
        s.set_master(m, &"f".repeat(40), "", 5000);
        assert_eq!(s.observation.get(m).lost_history, None);
    }

    /// A controller that started after the master restarted empty (it never saw the offset
    /// go back) reads the loss from the replica that is ahead of it and resyncing.
    #[test]
    fn a_restart_empty_unseen_by_this_controller_is_read_from_the_replicas() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.observation.instances[m] = Default::default();
        s.set_master(m, &"f".repeat(40), "", 14);
        assert_eq!(s.observation.get(m).lost_history, None, "no evidence of its own");
        // Linked and in sync, a replica is never ahead of its master but for the moment
        // between the two probes: nothing is inferred.
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!(inferred.get(m).lost_history, None);
        assert!(round(&s, &masters, &POLICY).0.changes.is_empty());
        // Its replica lost the link and waits for the full sync: it holds the history.
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        let lost = inferred.get(m).lost_history.clone().expect("inferred");
        assert_eq!((lost.replid.as_deref(), lost.offset), (Some(format!("{:040}", 1).as_str()), 1000));
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(r));
        assert_eq!(described(&s, &plan), ["promote 192.168.99.11:6403 (REPLICAOF NO ONE)"]);
        // Without replication IDs (Redis < 4.0) nothing is inferred: offsets of different
        // links are not comparable there.
        s.without_replids();
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!(inferred.get(m).lost_history, None);
    }

    /// A master that restarts empty twice: its replicas resynced the first (empty) history
    /// and were written to since; the second restart must be judged against that, not against
    /// the first loss, which nobody holds any more (found by the soak: the data written
    /// between the two restarts was wiped).
    #[test]
    fn a_second_restart_empty_is_judged_against_the_history_the_replicas_hold() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let m = s.id("192.168.99.11:6401");
        let chain = s.topology.chain_order(m);
        let (first, second) = ("f".repeat(40), "d".repeat(40));
        // First restart: too fast to rescue, everyone resynced the empty dataset, then writes.
        s.set_master(m, &first, "", 14);
        assert!(s.observation.get(m).lost_history.is_some());
        s.set_master(m, &first, "", 5000);
        for pair in chain.windows(2) {
            s.set_replica(pair[1], pair[0], &first, true, 1);
            s.observation.instances[pair[1]].info.as_mut().unwrap().repl_offset = 5000;
        }
        // Second restart: the first loss is still the one recorded.
        s.set_master(m, &second, "", 10);
        let recorded = s.observation.get(m).lost_history.clone().expect("recorded");
        assert_eq!(recorded.offset, 1000);
        s.set_replica(chain[1], m, &first, false, -1);
        s.observation.instances[chain[1]].info.as_mut().unwrap().repl_offset = 5000;
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        let lost = inferred.get(m).lost_history.clone().expect("lost");
        assert_eq!((lost.replid.as_deref(), lost.offset), (Some(first.as_str()), 5000));
        let (decision, new_masters, _) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(chain[1]));
        // While an instance still holds the first history, the recorded loss stays.
        s.set_replica(chain[2], chain[1], &format!("{:040}", 1), false, -1);
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!(inferred.get(m).lost_history, Some(recorded));
    }

    /// Finding E of RELIABILITY.md: room 1 restarted whole, no persistence, and this controller
    /// never saw it before (it restarted too). The designated master is empty with a new
    /// history; room 1's tail came back as a master from the RDB of its last full sync (its
    /// second ID is the shard's history, its offset 0); room 2's head, which replicates from
    /// that tail, waits for a full sync and is the last copy. Both restarts are read from the
    /// processes' uptimes and the room's data is rescued from room 2, as a controller that had
    /// watched would; a master that has been up for longer than the window is not judged so.
    #[test]
    fn a_whole_room_restart_unseen_by_this_controller_is_read_across_the_chain() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let m = s.id("192.168.99.11:6401");
        let chain = s.topology.chain_order(m);
        let (tail, head2) = (chain[1], chain[2]);
        let history = format!("{:040}", 1);
        s.observation.instances[m] = Default::default();
        s.observation.instances[tail] = Default::default();
        s.set_master(m, &"f".repeat(40), "", 0);
        s.set_master(tail, &"e".repeat(40), &history, 0);
        s.set_replica(head2, tail, &history, false, -1);
        let started = |s: &mut Scenario, id: InstanceId, ago: Duration| {
            s.observation.instances[id].started_at = Some(s.now - ago);
        };
        // Up for long: the old rules only (the tail's replica is ahead of it, but the tail is
        // not fresh; nothing points at the master).
        started(&mut s, m, crate::observe::RESTART_EVIDENCE_WINDOW * 2);
        started(&mut s, tail, crate::observe::RESTART_EVIDENCE_WINDOW * 2);
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!((&inferred.get(m).lost_history, &inferred.get(tail).lost_history), (&None, &None));
        // Just restarted, both.
        started(&mut s, m, Duration::from_secs(2));
        started(&mut s, tail, Duration::from_secs(2));
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        let lost = inferred.get(m).lost_history.clone().expect("the master's loss, from room 2's head");
        assert_eq!((lost.replid.as_deref(), lost.offset), (Some(history.as_str()), 1000));
        assert!(inferred.get(tail).lost_history.is_some(), "the tail's, from its replica");
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision.changes[0].reason, Reason::RestartedEmpty { instance: m });
        assert_eq!(new_masters[0], Some(head2));
        assert!(described(&s, &plan).contains(&format!("promote {} (REPLICAOF NO ONE)", s.topology.addr(head2))));
        // A master promoted in place (this controller saw its process answer as a replica) did
        // not restart, however recent its start.
        s.observation.instances[tail].replica_run_id = Some("tail".into());
        s.observation.instances[tail].run_id = Some("tail".into());
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!(inferred.get(tail).lost_history, None);
    }

    /// A promoted master behind a former sibling (a failover that discarded writes) is not a
    /// restart: it has a second replication ID. Nothing is inferred.
    #[test]
    fn a_promoted_master_behind_a_resyncing_replica_is_not_restarted_empty() {
        let mut s = Scenario::healthy();
        let (m, r) = (s.id("192.168.99.12:6401"), s.id("192.168.99.11:6401"));
        s.set_master(m, &"e".repeat(40), &format!("{:040}", 1), 1000);
        s.set_replica(r, m, &format!("{:040}", 1), false, -1);
        s.observation.instances[r].info.as_mut().unwrap().repl_offset = 1200;
        assert_eq!(s.observation.get(m).lost_history, None);
        let inferred = s.observation.clone().with_inferred_losses(&s.topology);
        assert_eq!(inferred.get(m).lost_history, None);
    }

    /// Row 10 with two controllers: X saw the master restart empty and promoted its replica;
    /// Y did not (it started after the restart). Y must follow X, never demote the rescuer.
    #[test]
    fn a_rescue_seen_by_another_controller_is_followed_not_undone() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        s.observation.instances[m] = Default::default();
        s.set_master(m, &"f".repeat(40), "", 14);
        assert_eq!(s.observation.get(m).lost_history, None, "Y has no evidence of its own");
        // The rescuer: promoted from the shard's history (replid2), at offset 2000.
        s.set_master(r, &"e".repeat(40), &format!("{:040}", 1), 4000);
        // Without its replica attached yet, Y does not adopt it, but does not demote it either.
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert!(decision.changes.is_empty(), "{decision:?}");
        assert!(plan.actions.iter().all(|a| a.instance() != r), "{plan:?}");
        assert!(plan.vetoed.iter().any(|v| v.why.contains("did it restart empty")), "{plan:?}");
        // With its chain (it carries a replica), Y adopts it and demotes the empty master.
        s.observation.instances[r].info.as_mut().unwrap().replicas.push(crate::info::ReplicaEntry {
            host: "192.168.99.12".into(),
            port: 6401,
            state: "online".into(),
            offset: 4000,
            lag: Some(0),
        });
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert!(matches!(decision.changes[..], [MasterChange { reason: Reason::Adopted { .. }, .. }]), "{decision:?}");
        assert_eq!(new_masters[0], Some(r));
        assert_eq!(described(&s, &plan)[0], "demote 192.168.99.11:6401 to a replica of 192.168.99.11:6403");
    }

    /// Row 10 with two controllers that both saw the restart: X promoted the replica first;
    /// for Y the rescuer is a master that holds more of the history the designated master
    /// lost, not yet carrying its chain. The master came back from an older RDB, which Redis 7
    /// restores as a second history: it looks promoted too. Y adopts X's rescue at once and
    /// never demotes it (found by the soak: X and Y demoted each other's master every round).
    #[test]
    fn a_rescue_by_another_controller_is_adopted_when_both_saw_the_restart() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        let shard_history = format!("{:040}", 1);
        // Back from its last full sync's RDB: a new ID, the RDB's as second, offset 700 < 1000.
        s.set_master(m, &"n".repeat(40), &shard_history, 700);
        assert!(s.observation.get(m).lost_history.is_some(), "Y saw the offset go back");
        s.set_master(r, &"e".repeat(40), &shard_history, 1000);
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert!(matches!(decision.changes[..], [MasterChange { reason: Reason::Adopted { .. }, .. }]), "{decision:?}");
        assert_eq!(new_masters[0], Some(r));
        assert_eq!(described(&s, &plan)[0], "demote 192.168.99.11:6401 to a replica of 192.168.99.11:6403");
        // Held to the restarted master (adoption off, e.g. just after following the state
        // file), Y still never demotes the rescuer.
        let (_, _, plan) = round(&s, &masters, &Policy { adopt: false, ..POLICY });
        assert!(plan.actions.iter().all(|a| a.instance() != r), "{plan:?}");
        assert!(plan.vetoed.iter().any(|v| v.why.contains("lost when it restarted")), "{plan:?}");
    }

    /// Two controllers, one master hung: X judged it lost and promoted its replica in place;
    /// Y had not judged yet when the old master came back and serves again. Y adopts the
    /// newer master at once (X demotes the old one), instead of demoting it once the grace for
    /// a switchover in flight is over (found by the soak: X and Y then demoted each other's
    /// master every round). A replica restarted from its RDB looks promoted too, but it is
    /// another process: it is not adopted.
    #[test]
    fn a_master_promoted_in_place_from_the_designated_one_is_adopted_while_the_old_one_serves() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, x) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"));
        let shard_history = format!("{:040}", 1);
        s.observation.instances[x].run_id = Some("x-process".into());
        s.set_replica(x, m, &shard_history, true, 1);
        s.set_master(x, &"e".repeat(40), &shard_history, 1000);
        assert!(s.observation.get(x).promoted_in_place());
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert!(matches!(decision.changes[..], [MasterChange { reason: Reason::Adopted { .. }, .. }]), "{decision:?}");
        assert_eq!(new_masters[0], Some(x));
        assert_eq!(described(&s, &plan)[0], "demote 192.168.99.11:6401 to a replica of 192.168.99.11:6403");
        // The same answer from a new process (a restart from its RDB): not adopted.
        s.observation.instances[x].run_id = Some("restarted".into());
        assert!(!s.observation.get(x).promoted_in_place());
        let (decision, _, _) = round(&s, &masters, &POLICY);
        assert!(decision.changes.is_empty(), "{decision:?}");
        // Nor one whose process this controller never saw as a replica.
        s.observation.instances[x].replica_run_id = None;
        s.observation.instances[x].run_id = Some("x-process".into());
        assert!(round(&s, &masters, &POLICY).0.changes.is_empty());
    }

    /// Row 10, the rescue came too late (the replica had already synced the empty dataset, or
    /// its promotion failed): nothing holds the lost data any more, so the restarted master is
    /// followed again instead of leaving the shard with a designated master that is a replica.
    #[test]
    fn a_rescue_too_late_falls_back_to_the_restarted_master() {
        let mut s = Scenario::healthy();
        let (m, r, h2) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"), s.id("192.168.99.12:6401"));
        let fresh = "f".repeat(40);
        s.set_master(m, &fresh, "", 14);
        s.set_replica(r, m, &fresh, true, 1);
        s.set_replica(h2, r, &fresh, true, 1);
        s.set_replica(s.id("192.168.99.12:6403"), h2, &fresh, true, 1);
        let designated_r = vec![Some(r), Some(s.id("192.168.99.11:6402"))];
        let (decision, new_masters, _) = round(&s, &designated_r, &POLICY);
        assert!(matches!(decision.changes[..], [MasterChange { reason: Reason::Adopted { .. }, .. }]), "{decision:?}");
        assert_eq!(new_masters[0], Some(m));
    }

    /// Row 10, middle of the chain: room 1's replica restarts empty as a master. Room 2 must not
    /// sync from it: it is bridged to room 1's master, and the empty instance is demoted.
    #[test]
    fn middle_instance_restarted_empty_is_bridged() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        let (m, r, h2) = (s.id("192.168.99.11:6401"), s.id("192.168.99.11:6403"), s.id("192.168.99.12:6401"));
        s.set_master(r, &"f".repeat(40), "", 0);
        s.set_replica(h2, r, &format!("{:040}", 1), false, -1);
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert_eq!(
            described(&s, &plan),
            [
                "demote 192.168.99.11:6403 to a replica of 192.168.99.11:6401",
                "re-point 192.168.99.12:6401 to replicate 192.168.99.11:6401"
            ]
        );
        // Once it replicates again it feeds the chain as declared.
        s.set_replica(h2, m, &format!("{:040}", 1), true, 1);
        s.set_replica(r, m, &format!("{:040}", 1), true, 1);
        assert_eq!(s.observation.get(r).lost_history, None);
        let (_, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(described(&s, &plan), ["re-point 192.168.99.12:6401 to replicate 192.168.99.11:6403"]);
    }

    #[test]
    fn a_replica_restarted_as_a_master_is_not_adopted_and_is_demoted() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        // 12:6401 restarted from an old RDB: a master with the shard's history as replid2 and
        // an offset behind what it had. Its replica must not sync from it: demoted at once.
        let (restarted, parent) = (s.id("192.168.99.12:6401"), s.id("192.168.99.11:6403"));
        s.set_master(restarted, &format!("{:040}", 99), &format!("{:040}", 1), 500);
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default(), "never adopted while the designated master serves");
        assert_eq!(
            described(&s, &plan),
            [
                "demote 192.168.99.12:6401 to a replica of 192.168.99.11:6403",
                "re-point 192.168.99.12:6403 to replicate 192.168.99.11:6403"
            ]
        );
        // Seen for the first time (a controller started after the restart): no evidence of a
        // loss, so it may be a switchover in flight. It is left alone for the grace only.
        s.observation.instances[restarted] = Default::default();
        s.set_master(restarted, &format!("{:040}", 99), &format!("{:040}", 1), 500);
        let (_, _, plan) = round(&s, &masters, &POLICY);
        assert!(plan.actions.is_empty() && plan.vetoed.iter().any(|v| v.why.contains("waiting")), "{plan:?}");
        s.now += Duration::from_secs(2);
        let (_, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(
            plan.actions,
            vec![Action::Demote { instance: restarted, to: parent, offset: 500, diverged_bytes: None }]
        );
    }

    #[test]
    fn dead_middle_link_is_bridged() {
        let mut s = Scenario::healthy();
        let masters = infer_masters(&s.topology, &s.observation);
        s.fail(s.id("192.168.99.11:6403"), Duration::from_secs(5));
        let (_, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(described(&s, &plan), ["re-point 192.168.99.12:6401 to replicate 192.168.99.11:6401"]);
    }

    #[test]
    fn no_promotion_while_the_replica_hears_its_master() {
        // A state file names room 2's head as master (say a failover was decided), but the
        // controller is cut off from room 1 and room 2 still hears it: no promotion.
        let mut s = Scenario::healthy();
        for id in s.topology.room_members(0).collect::<Vec<_>>() {
            s.fail(id, Duration::from_secs(30));
        }
        let masters = vec![Some(s.id("192.168.99.12:6401")), Some(s.id("192.168.99.11:6402"))];
        let (decision, _, plan) = round(&s, &masters, &POLICY);
        assert_eq!(decision, Decision::default());
        assert!(plan.actions.is_empty(), "{:?}", described(&s, &plan));
        assert!(plan.vetoed.iter().any(|v| matches!(v.action, Action::Promote { .. })), "{:?}", plan.vetoed);
    }

    #[test]
    fn adopts_a_switchover_when_the_designated_master_became_a_replica() {
        let s = Scenario::healthy();
        // Our state says room 2's head, but it is a replica and room 1's head is the only master.
        let masters = vec![Some(s.id("192.168.99.12:6401")), Some(s.id("192.168.99.11:6402"))];
        let (decision, new_masters, plan) = round(&s, &masters, &POLICY);
        assert!(matches!(decision.changes[..], [MasterChange { reason: Reason::Adopted { .. }, .. }]));
        assert_eq!(new_masters[0], Some(s.id("192.168.99.11:6401")));
        assert!(plan.actions.is_empty());
        // The same picture is also what a `roomguard failover` run elsewhere looks like between
        // writing its state file and promoting: while it converges, nothing is adopted.
        let (decision, _, _) = round(&s, &masters, &Policy { adopt: false, ..POLICY });
        assert!(decision.changes.is_empty());
    }

    proptest! {
        /// Whatever subset of instances is down, every shard's desired topology has exactly
        /// one master and every live instance reaches it by following parents.
        #[test]
        fn desired_chains_have_one_master_and_no_orphans(
            down_mask in 0u8..=255,
            unfit_mask in 0u8..=255,
            master_pick in 0usize..4,
        ) {
            let t = crate::topology::fixtures::seed();
            for shard in 0..2 {
                let members: Vec<_> = t.shard_members(shard).collect();
                let master = members[master_pick];
                let is_down = |id: InstanceId| id != master && down_mask & (1 << id) != 0;
                // Alive but no fit source (restarted empty): bridged, never anyone's parent.
                let can_feed = |id: InstanceId| unfit_mask & (1 << id) == 0;
                let desired: HashMap<_, _> =
                    t.desired_parents_bridging(master, is_down, can_feed).into_iter().collect();
                prop_assert_eq!(desired.values().filter(|p| **p == Parent::None).count(), 1);
                for &id in &members {
                    if is_down(id) { prop_assert!(!desired.contains_key(&id)); continue; }
                    let mut at = id;
                    for _ in 0..members.len() {
                        match desired[&at] {
                            Parent::None => break,
                            Parent::Instance(p) => {
                                prop_assert!(!is_down(p));
                                prop_assert!(p == master || can_feed(p), "{} feeds {}", p, at);
                                at = p
                            }
                        }
                    }
                    prop_assert_eq!(at, master);
                }
            }
        }

        /// A cross-room promotion happens exactly when the master's room is lost. The oracle is
        /// independent of `detect::assess`: it is computed from the scenario's own inputs, by
        /// the DESIGN rule (every instance of room 1 failing for longer than `down_after`, and
        /// at least one reachable witness in room 2 (a room-2 head: it replicates room 1),
        /// none of which hears room 1). Both directions are checked: no cross-room promotion
        /// unless the room is lost, and when it is, every shard whose room-2 head answers
        /// promotes exactly that head.
        #[test]
        fn cross_room_promotion_exactly_on_room_loss(
            // Half the cases fail all of room 1 (else a loss would be one case in 16).
            room_1_mask in prop_oneof![Just(0b1111u8), 0u8..=15],
            room_2_mask in 0u8..=15,
            fail_steps in 0u64..5,
            hears in proptest::bool::ANY,
        ) {
            let mut s = Scenario::healthy();
            let masters = infer_masters(&s.topology, &s.observation);
            let failed_for = Duration::from_millis(fail_steps * 400);
            let (r1, r2): (Vec<InstanceId>, Vec<InstanceId>) = (s.topology.room_members(0).collect(), s.topology.room_members(1).collect());
            let failed = |id: InstanceId| {
                r1.iter().position(|&x| x == id).is_some_and(|i| room_1_mask & (1 << i) != 0)
                    || r2.iter().position(|&x| x == id).is_some_and(|i| room_2_mask & (1 << i) != 0)
            };
            let fail_mask = (0..8).filter(|&id| failed(id)).fold(0u8, |m, id| m | (1 << id));
            for id in 0..8 {
                if failed(id) { s.fail(id, failed_for); }
            }
            if !hears {
                for shard in 0..2 {
                    let (h2, t1) = (s.topology.head(shard, 1), s.topology.shards[shard].chains[0][1]);
                    if !failed(h2) { s.set_replica(h2, t1, &format!("{:040}", shard + 1), false, -1); }
                }
            }
            // The oracle, from the inputs alone.
            let room_1: Vec<InstanceId> = s.topology.room_members(0).collect();
            let heads_2: Vec<InstanceId> = (0..2).map(|shard| s.topology.head(shard, 1)).collect();
            let room_1_down = room_1.iter().all(|&id| failed(id)) && failed_for > SETTINGS.down_after;
            let witness_answers = heads_2.iter().any(|&h2| !failed(h2));
            let lost = room_1_down && witness_answers && !hears;
            let master_down = |id: InstanceId| failed(id) && failed_for > SETTINGS.down_after;

            let (_, _, plan) = round(&s, &masters, &POLICY);
            let promoted: Vec<InstanceId> = plan
                .actions
                .iter()
                .filter_map(|a| match *a { Action::Promote { instance, .. } => Some(instance), _ => None })
                .collect();
            for &instance in &promoted {
                let shard = s.topology.instance(instance).shard;
                let old = masters[shard].unwrap();
                // Another room only when the master's room is lost; within the room only
                // when the master itself is down.
                if s.topology.instance(instance).room != 0 {
                    prop_assert!(lost, "{} promoted, room 1 not lost: mask {:08b}, {:?}, hears {}",
                        s.topology.addr(instance), fail_mask, failed_for, hears);
                } else {
                    prop_assert!(master_down(old), "{} promoted, {} not down", s.topology.addr(instance), s.topology.addr(old));
                }
            }
            if lost {
                for &h2 in heads_2.iter().filter(|&&h2| !failed(h2)) {
                    prop_assert!(promoted.contains(&h2), "room 1 lost but {} not promoted: mask {:08b}, plan {:?}",
                        s.topology.addr(h2), fail_mask, described(&s, &plan));
                }
            }
        }
    }
}
