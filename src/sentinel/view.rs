//! The discovery view: what the endpoint reports, rebuilt by the controller every round and
//! shared with every connection through a `watch`.

use std::time::{Duration, Instant};

use crate::{
    detect::Verdict,
    events::{LiveRole, Snapshot},
    info::Role,
    observe::Observation,
    topology::{Addr, Topology},
};

/// One instance as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// A replica: the master it reports.
    pub master: Option<Addr>,
    pub offset: i64,
    /// Milliseconds since it last answered (0 while it answers).
    pub silent_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    pub name: String,
    /// The verified master (`None` before one is known).
    pub master: Option<NodeView>,
    /// Every other instance of the shard, in chain order.
    pub replicas: Vec<NodeView>,
}

/// What the endpoint reports; replaced by the controller every round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

    pub(super) fn shard(&self, name: &[u8]) -> Option<&ShardView> {
        self.shards.iter().find(|s| s.name.as_bytes() == name)
    }
}
