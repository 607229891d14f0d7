//! Fencing: a controller that lives in a room (`[coordination] room`) and has lost both the
//! etcd quorum and every other room stops its room's masters from accepting writes.
//!
//! Why: with one etcd member per site, a partition between the rooms leaves the room without
//! the quorum on the losing side. The other side's acting controller fails that room over
//! (its witnesses no longer hear it) while the room's masters still take writes from the
//! clients in the room — writes that the heal will discard. Fencing bounds that window.
//!
//! How: `CLIENT PAUSE <3 periods> WRITE`, renewed every period (`lease_ttl / 3`) while the
//! condition holds. Writes wait (clients time out; nothing is acknowledged), reads and
//! replication go on, and the pause expires by itself if this controller dies, so a dead
//! controller never leaves a room unwritable for longer than one lease. Redis < 6.2 has no
//! write-only pause: the `min-slaves-to-write` fence of the switchover ([`WriteFence`]), whose
//! value carries a lease of the same length, renewed the same way; Redis does not expire it,
//! but once the lease has run out any controller's settings audit lifts it.
//!
//! When: no successful etcd round trip for [`crate::coordination::CoordinationSettings::fence_after`]
//! *and* the last probe of every instance outside the room failed. The second condition keeps
//! an etcd outage (every member down, every room still connected) from fencing every room at
//! once: only a room that is cut off from the others fences itself.
//!
//! Lifted: when the condition ends, for a master that the shared record still names; a
//! master that the record no longer names (the other side failed over) stays fenced until the
//! acting controller has demoted it, so that its writes stay refused until it replicates.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    act::{InForce, Node, WriteFence},
    config::Config,
    coordination::Coordinator,
    info::Role,
    metrics::Metrics,
    observe::{Observation, ObservationStore},
    plan::Masters,
    topology::{InstanceId, RoomId, Topology},
};

/// Pure: the instances of `room` to keep fenced now. `cut`: the quorum has not answered for
/// `fence_after`; `fenced`: those fenced so far; `designated`: the shared record's masters
/// (read afresh before anything is lifted).
///
/// A room is partitioned when the quorum is cut, every instance outside the room fails its
/// probes, *and* Redis agrees: every replica in another room that replicates from this room
/// has stopped acknowledging (its `lag` is [`QUIET_LAG`] seconds or more; replicas acknowledge
/// every second). The last condition keeps a controller whose own host lost the network from
/// pausing a room whose links to the other rooms are fine.
///
/// A fence stays while the quorum is cut (whatever the probes say), and after, on a master the
/// record no longer names, until it answers as a replica.
pub fn to_fence(
    topology: &Topology,
    observation: &Observation,
    room: RoomId,
    cut: bool,
    fenced: &[InstanceId],
    designated: Option<&Masters>,
) -> Vec<InstanceId> {
    let isolated = topology
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.room != room)
        .all(|(id, _)| !observation.get(id).reachable);
    let answers_as_master =
        |id: InstanceId| observation.get(id).info.as_ref().is_some_and(|info| info.role == Role::Master);
    // A replica line that names no instance of the topology (Redis 2.8 and NAT show the
    // connection's source address) may be a cross-room replica: it must be quiet too, and
    // without a lag it is no evidence of quiet. Never fence on missing evidence.
    let other_rooms_quiet = topology.room_members(room).all(|id| {
        let replicas = observation.get(id).info.as_ref().map(|i| i.replicas.as_slice()).unwrap_or_default();
        replicas.iter().all(|r| match topology.find_any(&r.host, r.port).map(|other| topology.instance(other).room) {
            Some(r_room) if r_room == room => true,
            Some(_) => r.lag.is_none_or(|lag| lag >= QUIET_LAG),
            None => r.lag.is_some_and(|lag| lag >= QUIET_LAG),
        })
    });
    topology
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.room == room)
        .map(|(id, _)| id)
        .filter(|&id| answers_as_master(id))
        .filter(|&id| {
            let partitioned = cut && isolated && other_rooms_quiet;
            let held = fenced.contains(&id) && cut;
            let superseded = fenced.contains(&id)
                && designated.is_some_and(|m| m.get(topology.instance(id).shard).copied().flatten() != Some(id));
            partitioned || held || superseded
        })
        .collect()
}

/// A replica's `lag` (seconds since its last acknowledgement) from which it no longer hears
/// its master: replicas acknowledge every second, so 0 or 1 is a live link.
pub const QUIET_LAG: i64 = 2;

/// Runs the fence for `room` until `stop`.
pub async fn run(
    coordinator: Arc<Coordinator>,
    config: Config,
    room: RoomId,
    store: ObservationStore,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let settings = &coordinator.settings;
    let period = settings.request_timeout();
    let pause_for = period * 3;
    let t = &config.topology;
    let mut fenced: BTreeMap<InstanceId, WriteFence> = BTreeMap::new();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_cut = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let status = coordinator.status();
        let now = Instant::now();
        let silent = status.silent_for(now);
        let cut = silent > settings.fence_after();
        let observation = store.snapshot();
        let designated = coordinator.shared_state().map(|s| s.state.masters);
        let current: Vec<InstanceId> = fenced.keys().copied().collect();
        let wanted = to_fence(t, &observation, room, cut, &current, designated.as_ref());
        if cut != was_cut && cut {
            warn!(
                room = t.room_name(room),
                silent = ?silent,
                "etcd has not answered for {silent:?}: if this room is also cut off from the other rooms, its masters are fenced"
            );
        }
        was_cut = cut;
        // Every master at once: the bound must not grow with the number of masters. A fence
        // held is renewed (a pause set again, a `min-slaves-to-write` lease moved on).
        let fences = wanted.iter().map(|&id| {
            let (addr, version) = (t.addr(id), observation.get(id).version);
            let (config, held) = (&config, fenced.get(&id).cloned());
            async move {
                let fenced = async {
                    let mut node = Node::connect(addr, config.redis.instance(id), config.controller.timeout).await?;
                    match held {
                        Some(fence) => node.renew_fence(&fence, pause_for).await.map(|()| fence),
                        None => node.fence_writes(version, pause_for, InForce::TakeOver).await,
                    }
                };
                (id, fenced.await)
            }
        });
        for (id, outcome) in futures::future::join_all(fences).await {
            let addr = t.addr(id);
            match outcome {
                Ok(fence) => {
                    if !fenced.contains_key(&id) {
                        error!(
                            instance = %addr,
                            room = t.room_name(room),
                            "FENCED {addr}: this controller lost the etcd quorum and every other room, \
                             so the other side may have failed this room over; its writes are refused \
                             until etcd answers again (and it is still the designated master) or it is demoted"
                        );
                    }
                    fenced.insert(id, fence);
                }
                Err(e) => error!(instance = %addr, error = %e, "cannot fence {addr}"),
            }
        }
        // Lifting needs the record as etcd holds it now, not as the watch last delivered it: a
        // master the other side replaced during the partition must stay fenced.
        let mut lift: Vec<InstanceId> = fenced.keys().copied().filter(|id| !wanted.contains(id)).collect();
        if !lift.is_empty() {
            match coordinator.read_once().await {
                Ok(_) => {
                    let designated = coordinator.shared_state().map(|s| s.state.masters);
                    let current: Vec<InstanceId> = fenced.keys().copied().collect();
                    let still = to_fence(t, &observation, room, cut, &current, designated.as_ref());
                    lift.retain(|id| !still.contains(id));
                }
                Err(_) => lift.clear(),
            }
        }
        for id in lift {
            let addr = t.addr(id);
            let fence = fenced[&id].clone();
            let lifted = async {
                let mut node = Node::connect(addr, config.redis.instance(id), config.controller.timeout).await?;
                node.lift_fence(&fence).await
            };
            match lifted.await {
                Ok(()) => {
                    info!(instance = %addr, "fence lifted on {addr}");
                    fenced.remove(&id);
                }
                Err(e) => {
                    warn!(instance = %addr, error = %e, "cannot lift the fence on {addr} yet ({})", fence.manual_lift())
                }
            }
        }
        metrics.set_fenced(fenced.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{observe::InstanceObservation, topology::fixtures::seed};

    fn observed(master: bool, reachable: bool) -> InstanceObservation {
        observed_with(master, reachable, "")
    }

    fn observed_with(master: bool, reachable: bool, replica_lines: &str) -> InstanceObservation {
        let text = if master {
            &format!("role:master\r\n{replica_lines}master_repl_offset:0\r\n")
        } else if !replica_lines.is_empty() {
            &format!(
                "role:slave\r\nmaster_host:x\r\nmaster_port:1\r\nmaster_link_status:up\r\nslave_repl_offset:0\r\n\
                 {replica_lines}master_repl_offset:0\r\n"
            )
        } else {
            "role:slave\r\nmaster_host:x\r\nmaster_port:1\r\nmaster_link_status:up\r\nslave_repl_offset:0\r\nmaster_repl_offset:0\r\n"
        };
        InstanceObservation { reachable, info: Some(crate::info::parse(text).unwrap()), ..Default::default() }
    }

    #[test]
    fn a_room_is_fenced_only_when_cut_from_etcd_and_from_every_other_room() {
        let t = seed();
        let id =
            |a: &str| t.find_any(a.split(':').next().unwrap(), a.split(':').nth(1).unwrap().parse().unwrap()).unwrap();
        let (m1, m2) = (id("192.168.99.11:6401"), id("192.168.99.11:6402"));
        let (h1, h2) = (id("192.168.99.12:6401"), id("192.168.99.12:6402"));
        // Room 1 answers (its two masters, its replicas); room 2 does not.
        let mut o = Observation::new(8);
        for (i, obs) in o.instances.iter_mut().enumerate() {
            let room_1 = t.instance(i).room == 0;
            *obs = observed(i == m1 || i == m2, room_1);
        }
        assert_eq!(to_fence(&t, &o, 0, true, &[], None), vec![m1, m2]);
        // etcd down but a room-2 instance still answers: an outage, not a partition.
        o.instances[h1].reachable = true;
        assert!(to_fence(&t, &o, 0, true, &[], None).is_empty());
        o.instances[h1].reachable = false;
        assert!(to_fence(&t, &o, 0, false, &[], None).is_empty());
        // Only this controller lost the network: room 2's head still acknowledges room 1's tail.
        let tail = id("192.168.99.11:6403");
        let line = |lag| format!("slave0:ip=192.168.99.12,port=6401,state=online,offset=0,lag={lag}\r\n");
        o.instances[tail] = observed_with(false, true, &line(1));
        assert!(to_fence(&t, &o, 0, true, &[], None).is_empty());
        o.instances[tail] = observed_with(false, true, &line(QUIET_LAG));
        assert_eq!(to_fence(&t, &o, 0, true, &[], None), vec![m1, m2]);
        // A replica line that names no instance (Redis 2.8, NAT: the connection's source
        // address) counts unless it is quiet too.
        let unplaced = |lag: &str| format!("slave1:ip=10.0.0.1,port=6401,state=online,offset=0{lag}\r\n");
        o.instances[tail] = observed_with(false, true, &(line(QUIET_LAG) + &unplaced(",lag=0")));
        assert!(to_fence(&t, &o, 0, true, &[], None).is_empty());
        o.instances[tail] = observed_with(false, true, &(line(QUIET_LAG) + &unplaced("")));
        assert!(to_fence(&t, &o, 0, true, &[], None).is_empty(), "no lag, no evidence of quiet");
        o.instances[tail] = observed_with(false, true, &(line(QUIET_LAG) + &unplaced(",lag=5")));
        assert_eq!(to_fence(&t, &o, 0, true, &[], None), vec![m1, m2]);
        // A replica in the room itself (room 1's replica of its master) is not evidence either way.
        let in_room = "slave1:ip=192.168.99.11,port=6403,state=online,offset=0,lag=0\r\n";
        o.instances[m1] = InstanceObservation { reachable: true, ..observed_with(true, true, in_room) };
        assert_eq!(to_fence(&t, &o, 0, true, &[], None), vec![m1, m2]);
        o.instances[m1] = observed(true, true);
        // Fenced stays fenced while etcd is cut, even if room 2 answers again.
        o.instances[h1].reachable = true;
        assert_eq!(to_fence(&t, &o, 0, true, &[m1, m2], None), vec![m1, m2]);
        o.instances[h1].reachable = false;
        // etcd back: a fenced master the record no longer names stays fenced until demoted.
        let failed_over = vec![Some(h1), Some(h2)];
        assert_eq!(to_fence(&t, &o, 0, false, &[m1], Some(&failed_over)), vec![m1]);
        assert!(to_fence(&t, &o, 0, false, &[m1], Some(&vec![Some(m1), Some(m2)])).is_empty());
        o.instances[m1] = observed(false, true);
        assert!(to_fence(&t, &o, 0, false, &[m1], Some(&failed_over)).is_empty());
    }
}
