//! Detection: which instances are down, and which rooms are lost.
//!
//! Pure: a function of the topology, one [`Observation`] and the current time.
//!
//! A room is **lost** only when both hold:
//! - every one of its instances has been failing for `down_after` (the controller's view);
//! - every reachable instance in another room that replicates from it (a *witness*) no
//!   longer hears it: `master_link_status:down`, or `master_last_io_seconds_ago` above
//!   `link_silence`.
//!
//! When a witness still hears the room, the controller is the one cut off: the room is
//! [`RoomStatus::CutOff`] and no failover may happen. When there is no witness at all the
//! room is only [`RoomStatus::Down`]: there is no cross-room evidence, and nothing of the
//! room's is replicated elsewhere that a failover could promote.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    observe::Observation,
    topology::{InstanceId, RoomId, Topology},
};

#[derive(Clone, Copy, Debug)]
pub struct DetectSettings {
    pub down_after: Duration,
    pub link_silence: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    /// Every instance answers.
    Up,
    /// Some instances fail, but not all.
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
    pub witnesses: Vec<Witness>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `down[instance]`: failing for at least `down_after`.
    pub down: Vec<bool>,
    /// `rooms[room]`.
    pub rooms: Vec<RoomVerdict>,
}

impl Verdict {
    pub fn room(&self, room: RoomId) -> &RoomVerdict {
        &self.rooms[room]
    }
}

pub fn assess(topology: &Topology, observation: &Observation, now: Instant, settings: DetectSettings) -> Verdict {
    let down: Vec<bool> = observation.instances.iter().map(|i| i.is_down(now, settings.down_after)).collect();
    let silence_secs = settings.link_silence.as_secs();
    let rooms = (0..topology.rooms.len())
        .map(|room| {
            let members: Vec<InstanceId> = topology.room_members(room).collect();
            let down_count = members.iter().filter(|&&id| down[id]).count();
            let all_answer = members.iter().all(|&id| observation.get(id).reachable);
            let witnesses: Vec<Witness> = topology
                .instances
                .iter()
                .enumerate()
                .filter(|(_, inst)| inst.room != room)
                .filter_map(|(id, _)| {
                    let info = observation.live(id)?;
                    let link = info.master.as_ref()?;
                    let master = topology.find_any(&link.host, link.port)?;
                    (topology.instance(master).room == room)
                        .then(|| Witness { instance: id, hears: !info.master_silent(silence_secs) })
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
            } else if down_count > 0 || !all_answer {
                RoomStatus::Degraded
            } else {
                RoomStatus::Up
            };
            RoomVerdict { status, down: down_count, total: members.len(), witnesses }
        })
        .collect();
    Verdict { down, rooms }
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

        /// The instance has been failing for `for_` (refused connections).
        pub fn fail(&mut self, id: InstanceId, for_: Duration) {
            let obs = &mut self.observation.instances[id];
            obs.failing_since = None;
            obs.record(
                self.now - for_,
                Duration::from_millis(1),
                Err(ProbeError::new(ProbeErrorKind::Refused, "refused")),
            );
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

    const SETTINGS: DetectSettings =
        DetectSettings { down_after: Duration::from_secs(1), link_silence: Duration::from_secs(12) };

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
        ];
        for (name, scenario, expected) in cases {
            assert_eq!(statuses(&scenario), expected, "{name}");
        }
    }
}
