//! The discovery view: what the endpoint reports, rebuilt by the controller every round and
//! shared with every connection through a `watch`.
//!
//! Between two rounds the pollers' answers are applied at once ([`Discovery::observe`]), in
//! the safe direction only: the moment a probe sees the reported master answer as a replica
//! (another process demoted it: `roomguard failover` run elsewhere, a second controller), the
//! endpoint stops naming it, rather than a round later. A client that rediscovers in that gap
//! would otherwise be sent to a replica and get `READONLY`.

use std::time::{Duration, Instant};

use crate::{
    detect::Verdict,
    events::{LiveRole, Snapshot},
    info::{ReplicationInfo, Role},
    observe::Observation,
    topology::{Addr, Topology},
};

/// One instance as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub addr: Addr,
    /// Failing for `down_after`.
    pub sdown: bool,
    /// The shard's master, down in a lost room.
    pub odown: bool,
    /// The last probe failed.
    pub disconnected: bool,
    /// It answers as a master (a replica entry that does is not a usable replica).
    pub answers_as_master: bool,
    /// A replica: its link to its master is up.
    pub link_up: bool,
    /// A replica: the master it reports (the last one it reported while it does not answer).
    /// On a shard's master entry, `Some` means that it answers as a replica: see
    /// [`NodeView::answers_as_replica`].
    pub master: Option<Addr>,
    pub offset: i64,
    /// Milliseconds since it last answered (0 while it answers).
    pub silent_ms: u64,
}

impl NodeView {
    /// It last answered as a replica. A master entry that does is never named as the master
    /// (`get-master-addr-by-name` answers null, `SENTINEL MASTER` flags it `s_down`): clients
    /// retry until the controller names the new master.
    pub fn answers_as_replica(&self) -> bool {
        self.master.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardView {
    pub name: String,
    /// The verified master (`None` before one is known).
    pub master: Option<NodeView>,
    /// Every other instance of the shard, in chain order.
    pub replicas: Vec<NodeView>,
}

/// What the endpoint reports; replaced by the controller every round.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discovery {
    pub shards: Vec<ShardView>,
    pub epoch: u64,
    pub down_after_ms: u64,
}

impl Discovery {
    /// Shards with the masters the state file names, before the first round: not verified
    /// yet, so flagged `s_down,disconnected` (clients that check flags wait; the address is
    /// still given, as Sentinel gives a master it cannot reach).
    pub fn initial(topology: &Topology, masters: &crate::plan::Masters, down_after: Duration) -> Self {
        let node = |id| NodeView {
            addr: topology.addr(id).clone(),
            sdown: true,
            odown: false,
            disconnected: true,
            answers_as_master: false,
            link_up: false,
            master: None,
            offset: 0,
            silent_ms: 0,
        };
        let shards = topology
            .shards
            .iter()
            .enumerate()
            .map(|(s, shard)| ShardView {
                name: shard.name.clone(),
                master: masters.get(s).copied().flatten().map(node),
                replicas: vec![],
            })
            .collect();
        Discovery { shards, epoch: 0, down_after_ms: down_after.as_millis() as u64 }
    }

    /// Pure: the view of one round.
    pub fn build(
        topology: &Topology,
        observation: &Observation,
        verdict: &Verdict,
        snapshot: &Snapshot,
        epoch: u64,
        down_after: Duration,
        now: Instant,
    ) -> Self {
        let node = |id| {
            let obs = observation.get(id);
            let info = obs.live_info();
            let master = match &snapshot.roles[id] {
                Some(LiveRole::Replica(parent)) => Some(parent.clone()),
                _ => None,
            };
            NodeView {
                addr: topology.addr(id).clone(),
                sdown: verdict.down[id],
                odown: snapshot.odown[id],
                disconnected: !obs.reachable,
                answers_as_master: info.is_some_and(|i| i.role == Role::Master),
                link_up: info.and_then(|i| i.master.as_ref()).is_some_and(|l| l.link_up),
                master,
                offset: obs.info.as_ref().map_or(0, |i| i.repl_offset),
                silent_ms: obs.failing_since.map_or(0, |s| now.saturating_duration_since(s).as_millis() as u64),
            }
        };
        let shards = topology
            .shards
            .iter()
            .enumerate()
            .map(|(s, shard)| {
                let master = snapshot.masters[s];
                let order = match master {
                    Some(m) => topology.chain_order(m),
                    None => topology.shard_members(s).collect(),
                };
                let verified = snapshot.verified.get(s).copied().unwrap_or(false);
                ShardView {
                    name: shard.name.clone(),
                    // Named by the state file but never seen answering as a master: down.
                    master: master
                        .map(node)
                        .map(|n| if verified { n } else { NodeView { sdown: true, disconnected: true, ..n } }),
                    replicas: order.into_iter().filter(|&id| Some(id) != master).map(node).collect(),
                }
            })
            .collect();
        Discovery { shards, epoch, down_after_ms: down_after.as_millis() as u64 }
    }

    /// Applies one probe's answer from `addr` at once, between rounds, in the safe direction
    /// only: a reported master that answers as a replica stops being named as the master, and
    /// a replica entry that answers as a master is flagged (clients skip it). The other
    /// direction (a node that answers as a master again) waits for the round, which verifies
    /// it. `shard` is the instance's shard (its index in the topology, as in `shards`): the
    /// pollers call this for every answer. Returns whether the view changed.
    pub fn observe(&mut self, shard: usize, addr: &Addr, info: &ReplicationInfo) -> bool {
        let mut changed = false;
        if let Some(shard) = self.shards.get_mut(shard) {
            if let Some(m) = shard.master.as_mut().filter(|m| m.addr == *addr)
                && info.role == Role::Replica
                && let Some(link) = &info.master
            {
                let parent = Some(Addr::new(link.host.clone(), link.port));
                if m.master != parent || m.answers_as_master || m.disconnected {
                    *m = NodeView {
                        answers_as_master: false,
                        disconnected: false,
                        master: parent,
                        link_up: link.link_up,
                        offset: info.repl_offset,
                        silent_ms: 0,
                        ..m.clone()
                    };
                    changed = true;
                }
            }
            for r in shard.replicas.iter_mut().filter(|r| r.addr == *addr) {
                if info.role == Role::Master && !r.answers_as_master {
                    *r = NodeView {
                        answers_as_master: true,
                        disconnected: false,
                        master: None,
                        link_up: false,
                        ..r.clone()
                    };
                    changed = true;
                }
            }
        }
        changed
    }

    pub(super) fn shard(&self, name: &[u8]) -> Option<&ShardView> {
        self.shards.iter().find(|s| s.name.as_bytes() == name)
    }
}
