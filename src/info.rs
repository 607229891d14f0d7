//! Parser for the `INFO replication` section (Redis 2.8 to 7.x, Valkey 8).
//!
//! Written by hand because it is ours to get right: it runs on every probe, must never
//! panic on whatever bytes come back (a proxy, a half-written reply, a non-Redis service),
//! and must say precisely which field is missing or malformed so that no decision is ever
//! taken on a reply that was not understood. Unknown fields are ignored: every Redis
//! release adds some. Fields that only some versions have are optional: replication IDs
//! (`master_replid`, `master_replid2`, `second_repl_offset`) came with Redis 4.0.

/// Redis' placeholder for "no secondary replication ID": 40 zeros.
pub const NO_REPLID: &str = "0000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MasterLink {
    pub host: String,
    pub port: u16,
    /// `master_link_status:up`.
    pub link_up: bool,
    /// `master_last_io_seconds_ago`; Redis reports -1 while the link is down.
    pub last_io_seconds_ago: Option<i64>,
    /// `master_link_down_since_seconds`, present only while the link is down.
    pub link_down_since_seconds: Option<i64>,
    pub sync_in_progress: bool,
    /// `slave_repl_offset`: how much of the master's stream this replica has processed.
    pub repl_offset: i64,
    /// `slave_read_repl_offset` (Redis >= 7.0, Valkey): how much it has *read*, which moves as
    /// soon as bytes arrive, before they are applied.
    pub read_offset: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaEntry {
    pub host: String,
    pub port: u16,
    pub state: String,
    pub offset: i64,
    pub lag: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplicationInfo {
    pub role: Role,
    /// Present exactly when `role` is [`Role::Replica`].
    pub master: Option<MasterLink>,
    pub replicas: Vec<ReplicaEntry>,
    /// The replication history this instance belongs to. A chain shares one ID. `None`
    /// before Redis 4.0, which has no replication IDs: decisions that use them fall back to
    /// offsets and the state file (see [`crate::plan`]).
    pub replid: Option<String>,
    /// The previous history: a promoted replica keeps its old master's ID here, which is
    /// how roomguard tells a newer master (promoted from X) from a stale one (X itself).
    /// [`NO_REPLID`] when there is none; `None` before Redis 4.0.
    pub replid2: Option<String>,
    /// `master_repl_offset`: how much of its history this instance holds. Before Redis 4.0 a
    /// replica's `master_repl_offset` only counts what it passed on to replicas of its own
    /// (0 without one), so there it is `slave_repl_offset`, the offset it has processed
    /// (which 4.0+ replicas report in both fields).
    pub repl_offset: i64,
    /// First offset that belongs to `replid` rather than `replid2` (-1 when there is none).
    pub second_repl_offset: i64,
}

impl MasterLink {
    /// The offset that shows the master's stream arriving: every byte the master sends, its
    /// periodic PING included, advances it (see [`crate::detect`]). The read offset where the
    /// version reports one, else the processed offset, which every version reports.
    pub fn progress_offset(&self) -> i64 {
        self.read_offset.unwrap_or(self.repl_offset)
    }

    /// True when this link points at `host:port` (as given to `REPLICAOF`).
    pub fn points_to(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port == port
    }
}

impl ReplicationInfo {
    /// True when this instance's history forked from `older`'s: it was promoted from a
    /// replica of `older`'s stream. False when either ID is unknown (Redis < 4.0).
    pub fn descends_from(&self, older_replid: Option<&str>) -> bool {
        self.second_history().is_some_and(|r2| Some(r2) == older_replid)
    }

    /// True when the reply carries replication IDs (Redis >= 4.0).
    pub fn has_replids(&self) -> bool {
        self.replid.is_some()
    }

    /// The previous history's ID, when there is one and the version reports it.
    pub fn second_history(&self) -> Option<&str> {
        self.replid2.as_deref().filter(|r| *r != NO_REPLID)
    }

    /// True when the version reports IDs and there is no previous history: this instance
    /// was never promoted from a replica since its history started. False when unknown.
    pub fn fresh_history(&self) -> bool {
        self.replid2.as_deref() == Some(NO_REPLID)
    }

    /// Whether this instance belongs to (or was promoted from) history `replid`: `None` when
    /// either side has no replication IDs (Redis < 4.0).
    pub fn shares_history(&self, replid: Option<&str>) -> Option<bool> {
        let (mine, theirs) = (self.replid.as_deref()?, replid?);
        Some(mine == theirs || self.second_history() == Some(theirs))
    }

    /// True when this replica does not hear its master: the link is down, or nothing came
    /// for longer than `silence_secs`.
    pub fn master_silent(&self, silence_secs: u64) -> bool {
        match &self.master {
            None => false,
            Some(link) => !link.link_up || link.last_io_seconds_ago.is_none_or(|s| s < 0 || s as u64 > silence_secs),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error("reply is not an INFO replication section (no `role` field)")]
    NotInfo,
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` has an unexpected value {value:?}")]
    Malformed { field: &'static str, value: String },
}

/// Parses an `INFO replication` reply (either `\r\n` or `\n` line endings).
/// One `key:value` field of any `INFO` section's text (`INFO server`'s `run_id`).
pub fn server_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix(key)?.strip_prefix(':'))
}

pub fn parse(text: &str) -> Result<ReplicationInfo, InfoError> {
    let mut fields = Fields::default();
    let mut replica_lines = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        if is_replica_key(key) {
            replica_lines.push(value);
        } else {
            fields.insert(key, value);
        }
    }

    let role = match fields.get("role") {
        None => return Err(InfoError::NotInfo),
        Some("master") => Role::Master,
        Some("slave") | Some("replica") => Role::Replica,
        Some(other) => return Err(malformed("role", other)),
    };
    let master = match role {
        Role::Master => None,
        Role::Replica => Some(MasterLink {
            host: required(&fields, "master_host")?.to_string(),
            port: number(&fields, "master_port")?,
            link_up: match required(&fields, "master_link_status")? {
                "up" => true,
                "down" => false,
                other => return Err(malformed("master_link_status", other)),
            },
            last_io_seconds_ago: optional(&fields, "master_last_io_seconds_ago")?,
            link_down_since_seconds: optional(&fields, "master_link_down_since_seconds")?,
            sync_in_progress: optional::<i64>(&fields, "master_sync_in_progress")?.unwrap_or(0) != 0,
            repl_offset: optional(&fields, "slave_repl_offset")?.unwrap_or(0),
            read_offset: optional(&fields, "slave_read_repl_offset")?,
        }),
    };
    let replicas = replica_lines.into_iter().filter_map(parse_replica).collect::<Result<_, _>>()?;
    let replid = fields.get("master_replid").map(str::to_string);
    // Before 4.0 (no replication IDs), a replica's own history is its processed offset.
    let own_offset = match (&replid, role) {
        (None, Role::Replica) => optional(&fields, "slave_repl_offset")?,
        _ => None,
    };
    Ok(ReplicationInfo {
        role,
        master,
        replicas,
        replid2: replid.as_ref().map(|_| fields.get("master_replid2").unwrap_or(NO_REPLID).to_string()),
        replid,
        repl_offset: match own_offset {
            Some(offset) => offset,
            None => number(&fields, "master_repl_offset")?,
        },
        second_repl_offset: optional(&fields, "second_repl_offset")?.unwrap_or(-1),
    })
}

/// The fields the parser reads; every other key is ignored. A fixed table instead of a
/// map: this runs on every probe (thousands per second in large deployments).
const KEYS: [&str; 13] = [
    "role",
    "master_host",
    "master_port",
    "master_link_status",
    "master_last_io_seconds_ago",
    "master_link_down_since_seconds",
    "master_sync_in_progress",
    "slave_repl_offset",
    "slave_read_repl_offset",
    "master_replid",
    "master_replid2",
    "master_repl_offset",
    "second_repl_offset",
];

#[derive(Default)]
struct Fields<'a>([Option<&'a str>; KEYS.len()]);

impl<'a> Fields<'a> {
    /// Keeps the last value of a repeated key, as a map would.
    fn insert(&mut self, key: &str, value: &'a str) {
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            self.0[i] = Some(value);
        }
    }

    fn get(&self, key: &'static str) -> Option<&'a str> {
        let i = KEYS.iter().position(|k| *k == key).expect("parser reads a key missing from KEYS");
        self.0[i]
    }
}

/// `slave0`, `slave12`, ...: one connected replica per line.
fn is_replica_key(key: &str) -> bool {
    key.strip_prefix("slave").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `ip=10.0.0.2,port=6380,state=online,offset=123,lag=0` (Valkey 8 adds `,type=...`).
/// `None` for the second connection of a Valkey dual-channel full sync (`type=rdb-channel`):
/// the same replica is listed again on its main channel.
fn parse_replica(value: &str) -> Option<Result<ReplicaEntry, InfoError>> {
    // The last occurrence wins, as with the top-level fields (searched from the end).
    let lookup = |k: &str| value.split(',').filter_map(|p| p.split_once('=')).rfind(|(key, _)| *key == k);
    if lookup("type").is_some_and(|(_, t)| t == "rdb-channel") {
        return None;
    }
    Some(parse_replica_fields(value, lookup))
}

fn parse_replica_fields<'a>(
    value: &'a str,
    lookup: impl Fn(&str) -> Option<(&'a str, &'a str)>,
) -> Result<ReplicaEntry, InfoError> {
    let get = |k: &'static str| lookup(k).map(|(_, v)| v).ok_or(InfoError::Missing("slaveN.ip/port/state/offset"));
    Ok(ReplicaEntry {
        host: get("ip")?.to_string(),
        port: get("port")?.parse().map_err(|_| malformed("slaveN.port", value))?,
        state: get("state")?.to_string(),
        offset: get("offset")?.parse().map_err(|_| malformed("slaveN.offset", value))?,
        lag: lookup("lag").and_then(|(_, l)| l.parse().ok()),
    })
}

fn malformed(field: &'static str, value: &str) -> InfoError {
    // At most 64 characters of whatever the peer sent (never cut inside a UTF-8 character:
    // `String::truncate` would panic there, and the fuzzer found it).
    InfoError::Malformed { field, value: value.chars().take(64).collect() }
}

fn required<'a>(fields: &Fields<'a>, key: &'static str) -> Result<&'a str, InfoError> {
    fields.get(key).ok_or(InfoError::Missing(key))
}

fn number<T: std::str::FromStr>(fields: &Fields, key: &'static str) -> Result<T, InfoError> {
    let raw = required(fields, key)?;
    raw.trim().parse().map_err(|_| malformed(key, raw))
}

fn optional<T: std::str::FromStr>(fields: &Fields, key: &'static str) -> Result<Option<T>, InfoError> {
    match fields.get(key) {
        None => Ok(None),
        Some(raw) => raw.trim().parse().map(Some).map_err(|_| malformed(key, raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=127.0.0.11,port=6403,state=online,offset=1234,lag=0\r\n\
        master_failover_state:no-failover\r\n\
        master_replid:8d5e1dbd0b4fee5b2c7ffaac4fb1e2e8a2b2a8b1\r\n\
        master_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:1234\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n";

    #[test]
    fn master() {
        let info = parse(MASTER).unwrap();
        assert_eq!(info.role, Role::Master);
        assert_eq!(info.master, None);
        assert_eq!(info.repl_offset, 1234);
        assert_eq!(info.replicas.len(), 1);
        assert_eq!(info.replicas[0].host, "127.0.0.11");
        assert_eq!(info.replicas[0].port, 6403);
        assert_eq!(info.replicas[0].lag, Some(0));
        assert!(!info.descends_from(Some(NO_REPLID)));
    }

    #[test]
    fn a_long_non_ascii_value_is_an_error_not_a_panic() {
        let value = format!("{}\u{1e25a}", "1".repeat(62));
        let text = MASTER.replace("master_repl_offset:1234", &format!("master_repl_offset:{value}"));
        let Err(InfoError::Malformed { field, value }) = parse(&text) else { panic!("accepted") };
        assert_eq!((field, value.chars().count()), ("master_repl_offset", 63));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(parse("HTTP/1.1 400 Bad Request\r\n\r\n"), Err(InfoError::NotInfo));
        assert_eq!(parse("# Replication\r\nrole:slave\r\n"), Err(InfoError::Missing("master_host")));
        assert!(matches!(
            parse(&MASTER.replace("master_repl_offset:1234", "master_repl_offset:12x")),
            Err(InfoError::Malformed { field: "master_repl_offset", .. })
        ));
        assert!(matches!(parse("role:sentinel\r\n"), Err(InfoError::Malformed { field: "role", .. })));
    }

    #[test]
    fn silence() {
        let replica = "role:slave\nmaster_host:h\nmaster_port:1\nmaster_link_status:up\n\
            master_last_io_seconds_ago:4\nmaster_replid:a\nmaster_repl_offset:0\n";
        let info = parse(replica).unwrap();
        assert!(!info.master_silent(4));
        assert!(info.master_silent(3));
        let down = parse(&replica.replace(":up", ":down").replace("ago:4", "ago:-1")).unwrap();
        assert!(down.master_silent(100));
    }

    fn fixture(name: &str) -> Result<ReplicationInfo, InfoError> {
        let path = format!("{}/tests/fixtures/info/{name}", env!("CARGO_MANIFEST_DIR"));
        parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// Real replies (Redis 7.0 captured here; 5.0 and 6.2 rebuilt from their sources, see
    /// tests/fixtures/info/SOURCES.md).
    #[test]
    fn fixtures_from_redis_5_6_7() {
        for name in ["redis5-master.txt", "redis6-master.txt", "redis7-master.txt", "redis7-promoted.txt"] {
            let info = fixture(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(info.role, Role::Master, "{name}");
            assert!(info.master.is_none());
            assert_eq!(info.replid.as_ref().map(String::len), Some(40), "{name}");
        }
        assert_eq!(fixture("redis5-master.txt").unwrap().replicas.len(), 2);
        assert_eq!(fixture("redis7-master.txt").unwrap().replicas.len(), 1);
        let promoted = fixture("redis7-promoted.txt").unwrap();
        assert!(promoted.second_history().is_some(), "a promoted replica keeps its old master's ID");
        assert!(promoted.second_repl_offset > 0);

        for name in ["redis5-replica.txt", "redis6-replica.txt", "redis7-replica.txt", "redis7-chained-replica.txt"] {
            let info = fixture(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(info.role, Role::Replica, "{name}");
            let link = info.master.as_ref().unwrap();
            // `slave_read_repl_offset` is new in 7.0.
            assert_eq!(link.read_offset.is_some(), name.starts_with("redis7"), "{name}");
            assert!(link.link_up && !link.sync_in_progress, "{name}");
            assert!(!info.master_silent(12), "{name}");
        }
        let r5 = fixture("redis5-replica.txt").unwrap();
        assert_eq!((r5.master.as_ref().unwrap().host.as_str(), r5.master.as_ref().unwrap().port), ("10.20.1.11", 6379));
        assert_eq!(r5.repl_offset, 48213375912);
        assert_eq!(fixture("redis7-replica.txt").unwrap().replicas.len(), 1, "a chained middle lists its replica");

        let down = fixture("redis7-link-down.txt").unwrap();
        let link = down.master.as_ref().unwrap();
        assert!(!link.link_up && link.link_down_since_seconds.is_some() && down.master_silent(100));

        for name in ["redis7-syncing.txt", "redis7-syncing-waiting.txt"] {
            let info = fixture(name).unwrap();
            assert!(info.master.as_ref().unwrap().sync_in_progress, "{name}");
        }
        assert_eq!(fixture("garbage.txt"), Err(InfoError::NotInfo));
        assert_eq!(fixture("missing-fields.txt"), Err(InfoError::Missing("master_host")));
    }

    /// Redis 2.8, 3.0, 3.2 (no replication IDs) and Valkey 8 (`type=` on replica lines),
    /// captured here (tests/fixtures/info/SOURCES.md).
    #[test]
    fn fixtures_from_redis_2_8_to_3_2_and_valkey_8() {
        for v in ["redis28", "redis30", "redis32"] {
            let master = fixture(&format!("{v}-master.txt")).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!((master.role, master.replid.as_deref(), master.replid2.as_deref()), (Role::Master, None, None));
            assert!(!master.has_replids() && !master.fresh_history() && master.second_history().is_none(), "{v}");
            assert_eq!((master.repl_offset, master.second_repl_offset, master.replicas.len()), (1556, -1, 1), "{v}");
            assert_eq!(master.shares_history(Some("x")), None);
            assert!(!master.descends_from(None));

            // The last replica of the chain has no backlog: its offset is what it processed.
            let chained = fixture(&format!("{v}-chained-replica.txt")).unwrap();
            let link = chained.master.as_ref().unwrap();
            assert!(link.link_up && !chained.master_silent(12), "{v}");
            // No `slave_read_repl_offset` before 7.0: silence is timed on the processed offset.
            assert_eq!((link.read_offset, link.progress_offset()), (None, link.repl_offset), "{v}");
            assert_eq!(chained.repl_offset, link.repl_offset, "{v}");
            assert!(chained.repl_offset > 1500, "{v}");
            let middle = fixture(&format!("{v}-replica.txt")).unwrap();
            assert_eq!((middle.role, middle.replicas.len()), (Role::Replica, 1), "{v}");
            assert_eq!(middle.master.as_ref().unwrap().read_offset, None, "{v}");

            // Promoted: the offset continues from the old master's.
            let promoted = fixture(&format!("{v}-promoted.txt")).unwrap();
            assert_eq!(promoted.role, Role::Master);
            assert!(promoted.repl_offset > master.repl_offset, "{v}");
        }
        assert_eq!(fixture("redis28-master.txt").unwrap().replicas[0].host, "127.0.0.1");

        let valkey = fixture("valkey8-master.txt").unwrap();
        assert_eq!(valkey.replicas.len(), 1);
        assert_eq!((valkey.replicas[0].port, valkey.replicas[0].state.as_str()), (23151, "online"));
        assert!(valkey.fresh_history());
        let replica = fixture("valkey8-replica.txt").unwrap();
        assert_eq!(replica.shares_history(valkey.replid.as_deref()), Some(true));
        let link = replica.master.as_ref().unwrap();
        assert!(link.read_offset.is_some_and(|read| read >= link.repl_offset), "Valkey reports the read offset");
        // A dual-channel full sync lists the replica twice; it is one replica.
        let dual = fixture("valkey8-dual-channel.txt").unwrap();
        assert_eq!(dual.replicas.len(), 1);
        assert_eq!(dual.replicas[0].state, "bg_transfer");
    }

    #[test]
    fn lineage_helpers() {
        let promoted = fixture("redis7-promoted.txt").unwrap();
        let old = promoted.second_history().map(str::to_string);
        assert!(promoted.descends_from(old.as_deref()));
        assert!(!promoted.descends_from(None));
        assert_eq!(promoted.shares_history(old.as_deref()), Some(true));
        assert_eq!(promoted.shares_history(Some("other")), Some(false));
        assert_eq!(promoted.shares_history(None), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_info_like_lines(lines in proptest::collection::vec(
            ("(role|master_host|master_port|master_link_status|master_replid|master_repl_offset|slave0|master_last_io_seconds_ago)",
             "[a-z0-9=,:-]{0,20}"), 0..12)) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect();
            let _ = parse(&text);
        }
    }
}
