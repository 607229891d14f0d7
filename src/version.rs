//! Which server an instance runs (Redis 2.8 to 7.x, Valkey 8), and what that version can do.
//!
//! The version comes from `INFO server` (once per connection, see [`crate::probe`]) or, for
//! the lab, from `redis-server --version`. Capabilities are decided on the Redis version the
//! server is compatible with: Valkey 8 reports `redis_version:7.2.4` beside its own
//! `valkey_version`, and has every Redis 7.2 command roomguard uses.

use std::fmt;

use serde::Serialize;

/// A server's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerVersion {
    /// The Redis version it is compatible with (`redis_version`).
    pub redis: (u32, u32, u32),
    /// Valkey's own version, on Valkey.
    pub valkey: Option<(u32, u32, u32)>,
}

/// The Redis version Valkey's `--version` stands for (it prints only its own).
const VALKEY_COMPAT: (u32, u32, u32) = (7, 2, 4);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("no version in {0:?} (expected `Redis server v=X.Y.Z ...` or `Valkey server v=X.Y.Z ...`)")]
    Unrecognized(String),
}

impl ServerVersion {
    pub const fn redis(major: u32, minor: u32, patch: u32) -> Self {
        ServerVersion { redis: (major, minor, patch), valkey: None }
    }

    /// From an `INFO server` (or full `INFO`) reply: `redis_version`, and `valkey_version` on
    /// Valkey. `None` when there is no `redis_version` line.
    pub fn from_info(text: &str) -> Option<ServerVersion> {
        let field = |key: &str| {
            text.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix(key)?.strip_prefix(':').and_then(triple))
        };
        Some(ServerVersion { redis: field("redis_version")?, valkey: field("valkey_version") })
    }

    /// From `redis-server --version`: `Redis server v=2.8.17 sha=...` or `Valkey server v=8.0.1 ...`.
    pub fn from_version_output(text: &str) -> Result<ServerVersion, VersionError> {
        let unrecognized = || VersionError::Unrecognized(text.trim().chars().take(120).collect());
        let v = text.split_whitespace().find_map(|w| w.strip_prefix("v=")).and_then(triple).ok_or_else(unrecognized)?;
        if text.trim_start().starts_with("Valkey") {
            Ok(ServerVersion { redis: VALKEY_COMPAT, valkey: Some(v) })
        } else if text.trim_start().starts_with("Redis") {
            Ok(ServerVersion::redis(v.0, v.1, v.2))
        } else {
            Err(unrecognized())
        }
    }

    /// At least Redis `major.minor` (or compatible with it).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.redis.0, self.redis.1) >= (major, minor)
    }

    /// `REPLICAOF` exists (Redis 5.0); before, only `SLAVEOF`.
    pub fn has_replicaof(&self) -> bool {
        self.at_least(5, 0)
    }

    /// `CLIENT PAUSE ms WRITE` and `CLIENT UNPAUSE` exist (Redis 6.2).
    pub fn has_pause_write(&self) -> bool {
        self.at_least(6, 2)
    }

    /// Replication IDs (`master_replid`, PSYNC2) exist (Redis 4.0).
    pub fn has_replids(&self) -> bool {
        self.at_least(4, 0)
    }

    /// A replica forwards its master's stream to its own replicas byte for byte and pings
    /// them only when it is a master itself (PSYNC2, Redis 4.0); before, it pings them every
    /// `repl-ping-slave-period` of its own.
    pub fn forwards_master_stream(&self) -> bool {
        self.has_replids()
    }

    /// `bind-source-addr` exists (Redis 7.0). Redis 3.0 to 6.2 bind replication to their first
    /// `bind` address anyway; 2.8 binds it to nothing (the kernel picks the source).
    pub fn has_bind_source_addr(&self) -> bool {
        self.at_least(7, 0)
    }

    /// `protected-mode` exists (Redis 3.2).
    pub fn has_protected_mode(&self) -> bool {
        self.at_least(3, 2)
    }

    /// `repl-diskless-sync-delay` exists (Redis 2.8.18).
    pub fn has_diskless_sync(&self) -> bool {
        self.redis >= (2, 8, 18)
    }

    /// The name of the ping period setting: `repl-ping-replica-period` since 5.0.
    pub fn ping_period_name(&self) -> &'static str {
        if self.at_least(5, 0) { "repl-ping-replica-period" } else { "repl-ping-slave-period" }
    }

    /// The RDB format version the server writes (`RDB_VERSION`), `None` past the versions
    /// known here. A replica loads its master's RDB in a full sync only if it knows that
    /// format.
    pub fn rdb_version(&self) -> Option<u32> {
        if let Some((major, _, _)) = self.valkey {
            // Valkey 7.2 and 8 write Redis 7.2's format.
            return (major <= 8).then_some(11);
        }
        Some(match (self.redis.0, self.redis.1) {
            (0..=2, _) | (3, 0) => 6,
            (3, _) => 7,
            (4, _) => 8,
            (5 | 6, _) => 9,
            (7, 0) => 10,
            (7, 1..=2) => 11,
            (7, _) | (8, 0..=2) => 12,
            _ => return None,
        })
    }

    /// A server of this version can replicate from a master of version `master`: it can load
    /// the master's RDB. The same or a newer version always can (Valkey counts as the Redis it
    /// is compatible with); an older one only if it knows the master's RDB format (a 3.0
    /// replica of a 2.8 master, or 5.0 of 6.2: yes; 2.8 of 3.2, or 6.2 of 7.0: no). Otherwise
    /// the replica refuses the master's full sync, and Redis < 4.0 empties its dataset first.
    pub fn can_replicate_from(&self, master: &ServerVersion) -> bool {
        let key = |v: &ServerVersion| (v.redis, v.valkey);
        if key(self) >= key(master) && (self.valkey.is_some() || master.valkey.is_none()) {
            return true;
        }
        match (self.rdb_version(), master.rdb_version()) {
            (Some(replica), Some(master)) => replica >= master,
            _ => false,
        }
    }

    /// The configuration directive that makes a server a replica at start.
    pub fn replicaof_directive(&self) -> &'static str {
        if self.has_replicaof() { "replicaof" } else { "slaveof" }
    }
}

/// `7.0.15`, or `valkey-8.0.1`: the label roomguard shows and exports.
impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.valkey {
            Some((a, b, c)) => write!(f, "valkey-{a}.{b}.{c}"),
            None => write!(f, "{}.{}.{}", self.redis.0, self.redis.1, self.redis.2),
        }
    }
}

impl Serialize for ServerVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `7.0.15` (a missing patch counts as 0; anything after the digits is ignored, as in `7.4.0-rc1`).
fn triple(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_version_output_of_every_server() {
        let v = |t: &str| ServerVersion::from_version_output(t).unwrap();
        let r28 = v("Redis server v=2.8.17 sha=00000000:0 malloc=libc bits=64 build=9b201bc80402efe2\n");
        assert_eq!(r28, ServerVersion::redis(2, 8, 17));
        assert!(
            !r28.has_replicaof() && !r28.has_pause_write() && !r28.has_diskless_sync() && !r28.has_protected_mode()
        );
        assert_eq!((r28.ping_period_name(), r28.replicaof_directive()), ("repl-ping-slave-period", "slaveof"));
        let r50 = v("Redis server v=5.0.6 sha=00000000:0 malloc=libc bits=64 build=77085524276f2049");
        assert!(r50.has_replicaof() && !r50.has_pause_write() && r50.has_replids() && !r50.has_bind_source_addr());
        let r62 = v("Redis server v=6.2.14 sha=00000000:0 malloc=libc bits=64 build=cd5830e255784a9e");
        assert!(r62.has_pause_write() && !r62.has_bind_source_addr());
        let valkey = v("Valkey server v=8.0.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=39f7c371e0a96e3d");
        assert_eq!(valkey.to_string(), "valkey-8.0.1");
        assert!(valkey.has_pause_write() && valkey.has_bind_source_addr());
        assert_eq!(v("Redis server v=7.0.15 sha=0").to_string(), "7.0.15");
        for bad in ["", "KeyDB server v=6.3.4", "Redis server", "Redis server v=x.y"] {
            assert!(ServerVersion::from_version_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn which_replica_can_load_which_master() {
        let r = |a, b, c| ServerVersion::redis(a, b, c);
        let valkey8 = ServerVersion { redis: VALKEY_COMPAT, valkey: Some((8, 0, 1)) };
        let (r28, r30, r32, r50, r62, r70, r74) =
            (r(2, 8, 17), r(3, 0, 5), r(3, 2, 6), r(5, 0, 6), r(6, 2, 14), r(7, 0, 15), r(7, 4, 0));
        let ok = [
            (r28, r28),
            (r70, r28),
            (r30, r28),
            (r28, r30), // both RDB 6
            (r50, r62), // both RDB 9
            (valkey8, r70),
            (r74, valkey8),
            (r(2, 8, 19), r(2, 8, 17)),
            (r(2, 8, 17), r(2, 8, 19)),
        ];
        for (replica, master) in ok {
            assert!(replica.can_replicate_from(&master), "{replica} under {master}");
        }
        let refused =
            [(r28, r32), (r28, r70), (r32, r50), (r62, r70), (r70, valkey8), (valkey8, r74), (r74, r(9, 0, 0))];
        for (replica, master) in refused {
            assert!(!replica.can_replicate_from(&master), "{replica} under {master}");
        }
        let valkey9 = ServerVersion { redis: VALKEY_COMPAT, valkey: Some((9, 0, 0)) };
        assert!(!valkey8.can_replicate_from(&valkey9) && valkey9.can_replicate_from(&valkey8));
    }

    #[test]
    fn from_info_server() {
        let redis = "# Server\r\nredis_version:2.8.17\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(ServerVersion::from_info(redis), Some(ServerVersion::redis(2, 8, 17)));
        let valkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n";
        let v = ServerVersion::from_info(valkey).unwrap();
        assert_eq!((v.redis, v.valkey), ((7, 2, 4), Some((8, 0, 1))));
        assert_eq!(ServerVersion::from_info("# Server\r\nredis_mode:standalone\r\n"), None);
        assert_eq!(ServerVersion::from_info("redis_version:7.4.0-rc1"), Some(ServerVersion::redis(7, 4, 0)));
    }
}
