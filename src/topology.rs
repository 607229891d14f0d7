//! The deployment model: shards as per-room replication chains, and the one pure function
//! everything else is derived from — the desired parent of every instance.
//!
//! A shard lists, for every room, an ordered chain of instances (head first). Rooms are
//! ordered by preference. Given the instance that should be the shard's master, the whole
//! shard is one chain: that master, the rest of its room's chain, then every other room's
//! chain in preference order. With room 1's head as master this is the seed's chain
//! `11:6401 -> 11:6403 -> 12:6401 -> 12:6403`; with room 2's head it is the mirror
//! `12:6401 -> 12:6403 -> 11:6401 -> 11:6403`.

use std::fmt;

/// Index of a room in the configured preference order (0 = preferred primary).
pub type RoomId = usize;
/// Index of a shard in the configuration.
pub type ShardId = usize;
/// Index of an instance in [`Topology::instances`].
pub type InstanceId = usize;

/// `host:port` of a Redis instance, exactly as configured. Redis reports `master_host` as the
/// string given to `REPLICAOF`, and roomguard only ever gives it these strings, so matching
/// an observed master to an instance is a plain comparison.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Addr { host: host.into(), port }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("missing ']' after an IPv6 host")?;
            let port = after.strip_prefix(':').ok_or("expected host:port")?;
            (host, port)
        } else {
            s.rsplit_once(':').ok_or("expected host:port")?
        };
        if host.is_empty() {
            return Err("the host is empty".into());
        }
        if host.contains(char::is_whitespace) {
            return Err("the host contains white space".into());
        }
        let port: u16 = port.parse().map_err(|_| format!("'{port}' is not a port number (1-65535)"))?;
        if port == 0 {
            return Err("port 0 is not a valid Redis port".into());
        }
        Ok(Addr::new(host, port))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub addr: Addr,
    pub shard: ShardId,
    pub room: RoomId,
    /// Position in its room's chain (0 = the room's head).
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub name: String,
    /// `chains[room]`: that room's instances, head first.
    pub chains: Vec<Vec<InstanceId>>,
}

/// The validated deployment. Built only by [`crate::config`], which guarantees that every
/// shard has a non-empty chain in every room and that no instance appears twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub rooms: Vec<String>,
    pub shards: Vec<Shard>,
    pub instances: Vec<Instance>,
}

/// What an instance should replicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    /// It should be the shard's master (`REPLICAOF NO ONE`).
    None,
    /// It should replicate this instance.
    Instance(InstanceId),
}

impl Topology {
    /// Builds a topology from `rooms` and `(shard name, per-room chains of addresses)`.
    /// The caller (config validation) has already checked the input.
    pub fn new(rooms: Vec<String>, shards: Vec<(String, Vec<Vec<Addr>>)>) -> Self {
        let mut instances = Vec::new();
        let mut out = Vec::new();
        for (shard_id, (name, chains)) in shards.into_iter().enumerate() {
            let mut ids = Vec::new();
            for (room, chain) in chains.into_iter().enumerate() {
                let mut room_ids = Vec::new();
                for (position, addr) in chain.into_iter().enumerate() {
                    room_ids.push(instances.len());
                    instances.push(Instance { addr, shard: shard_id, room, position });
                }
                ids.push(room_ids);
            }
            out.push(Shard { name, chains: ids });
        }
        Topology { rooms, shards: out, instances }
    }

    pub fn instance(&self, id: InstanceId) -> &Instance {
        &self.instances[id]
    }

    pub fn addr(&self, id: InstanceId) -> &Addr {
        &self.instances[id].addr
    }

    pub fn room_name(&self, room: RoomId) -> &str {
        &self.rooms[room]
    }

    pub fn room_id(&self, name: &str) -> Option<RoomId> {
        self.rooms.iter().position(|r| r == name)
    }

    pub fn shard_id(&self, name: &str) -> Option<ShardId> {
        self.shards.iter().position(|s| s.name == name)
    }

    /// The instance of `shard` configured at `host:port`, if any.
    pub fn find(&self, shard: ShardId, host: &str, port: u16) -> Option<InstanceId> {
        self.shard_members(shard)
            .find(|&id| self.instances[id].addr.host == host && self.instances[id].addr.port == port)
    }

    /// Any configured instance at `host:port`.
    pub fn find_any(&self, host: &str, port: u16) -> Option<InstanceId> {
        self.instances.iter().position(|i| i.addr.host == host && i.addr.port == port)
    }

    /// Every instance of a shard, room by room in preference order.
    pub fn shard_members(&self, shard: ShardId) -> impl Iterator<Item = InstanceId> + '_ {
        self.shards[shard].chains.iter().flatten().copied()
    }

    /// Every instance in a room, all shards.
    pub fn room_members(&self, room: RoomId) -> impl Iterator<Item = InstanceId> + '_ {
        self.instances.iter().enumerate().filter(move |(_, i)| i.room == room).map(|(id, _)| id)
    }

    /// The configured head of `room`'s chain in `shard`.
    pub fn head(&self, shard: ShardId, room: RoomId) -> InstanceId {
        self.shards[shard].chains[room][0]
    }

    /// The whole shard as one chain when `master` is its master: `master`, the rest of its
    /// room's chain in order, then every other room's chain in preference order.
    pub fn chain_order(&self, master: InstanceId) -> Vec<InstanceId> {
        let Instance { shard, room, .. } = self.instances[master];
        let chains = &self.shards[shard].chains;
        let mut order = vec![master];
        order.extend(chains[room].iter().copied().filter(|&id| id != master));
        for (other, chain) in chains.iter().enumerate() {
            if other != room {
                order.extend(chain.iter().copied());
            }
        }
        order
    }

    /// The desired parent of every instance of `master`'s shard that is not down.
    ///
    /// Each instance replicates its nearest ancestor in [`Self::chain_order`] that is not
    /// down, so a dead middle link is bridged and data keeps flowing down the chain. The
    /// master itself is never skipped, even when down: who the master is is decided by
    /// [`crate::plan`] (a failover names a new one), never by this function.
    pub fn desired_parents(
        &self,
        master: InstanceId,
        is_down: impl Fn(InstanceId) -> bool,
    ) -> Vec<(InstanceId, Parent)> {
        self.desired_parents_bridging(master, is_down, |_| true)
    }

    /// [`Self::desired_parents`], where instances that fail `can_feed` (alive, but no fit
    /// source of data, like one that restarted empty) get a parent but feed no one: the
    /// instances below them are bridged to the nearest ancestor that can.
    pub fn desired_parents_bridging(
        &self,
        master: InstanceId,
        is_down: impl Fn(InstanceId) -> bool,
        can_feed: impl Fn(InstanceId) -> bool,
    ) -> Vec<(InstanceId, Parent)> {
        let order = self.chain_order(master);
        let mut out = Vec::with_capacity(order.len());
        let mut last_alive = master;
        for &id in &order {
            if id == master {
                out.push((id, Parent::None));
            } else if !is_down(id) {
                out.push((id, Parent::Instance(last_alive)));
                if can_feed(id) {
                    last_alive = id;
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The seed's deployment: two rooms, shards 6401/6403 and 6402/6404.
    pub fn seed() -> Topology {
        let a = |s: &str| s.parse::<Addr>().unwrap();
        Topology::new(
            vec!["1".into(), "2".into()],
            vec![
                (
                    "shard-6401".into(),
                    vec![
                        vec![a("192.168.99.11:6401"), a("192.168.99.11:6403")],
                        vec![a("192.168.99.12:6401"), a("192.168.99.12:6403")],
                    ],
                ),
                (
                    "shard-6402".into(),
                    vec![
                        vec![a("192.168.99.11:6402"), a("192.168.99.11:6404")],
                        vec![a("192.168.99.12:6402"), a("192.168.99.12:6404")],
                    ],
                ),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::seed;
    use super::*;

    fn names(t: &Topology, ids: &[InstanceId]) -> Vec<String> {
        ids.iter().map(|&id| t.addr(id).to_string()).collect()
    }

    #[test]
    fn addr_parsing() {
        assert_eq!("10.0.0.1:6379".parse::<Addr>(), Ok(Addr::new("10.0.0.1", 6379)));
        assert_eq!("[::1]:6379".parse::<Addr>(), Ok(Addr::new("::1", 6379)));
        assert_eq!(Addr::new("::1", 6379).to_string(), "[::1]:6379");
        for bad in ["", "host", ":6379", "h:0", "h:70000", "h:abc", "a b:1"] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn seed_chain_and_its_mirror() {
        let t = seed();
        let head1 = t.head(0, 0);
        assert_eq!(
            names(&t, &t.chain_order(head1)),
            ["192.168.99.11:6401", "192.168.99.11:6403", "192.168.99.12:6401", "192.168.99.12:6403"]
        );
        let head2 = t.head(0, 1);
        assert_eq!(
            names(&t, &t.chain_order(head2)),
            ["192.168.99.12:6401", "192.168.99.12:6403", "192.168.99.11:6401", "192.168.99.11:6403"]
        );
    }

    #[test]
    fn desired_parents_bridge_dead_links_but_keep_the_master() {
        let t = seed();
        let [m, r1, h2, t2] = [0, 1, 2, 3];
        // Healthy: the seed's chain.
        assert_eq!(
            t.desired_parents(m, |_| false),
            vec![(m, Parent::None), (r1, Parent::Instance(m)), (h2, Parent::Instance(r1)), (t2, Parent::Instance(h2))]
        );
        // Room 1's replica is down: room 2's head bridges to room 1's head.
        assert_eq!(
            t.desired_parents(m, |id| id == r1),
            vec![(m, Parent::None), (h2, Parent::Instance(m)), (t2, Parent::Instance(h2))]
        );
        // The master is down: it stays the master (no promotion is decided here).
        assert_eq!(t.desired_parents(m, |id| id == m)[0], (m, Parent::None));
    }
}
