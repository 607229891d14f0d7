//! The persisted decisions: each shard's designated master, a failover epoch and the last
//! failover. Written atomically (temp file in the same directory, fsync, rename, fsync of
//! the directory), and written *before* acting on a decision, so a controller that dies
//! half-way through a failover finishes it on restart instead of deciding afresh.
//!
//! The file names instances by address and shards by name, so it stays readable and
//! survives reordering of the config; an entry that no longer matches the config is an
//! error naming the file, the shard and the instance.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{plan::Masters, topology::Topology};

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is not valid roomguard state: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error(
        "state file {path}: {problem} (the config changed? move the file away to let roomguard re-read the masters from Redis)"
    )]
    Mismatch { path: PathBuf, problem: String },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The controller failed over a lost room by itself.
    Auto,
    /// `roomguard failover` (CLI or HTTP).
    Manual,
    /// The controller followed a change made by someone else.
    Adopted,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Manual => "manual",
            Trigger::Adopted => "adopted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    /// Milliseconds since the Unix epoch (wall clock, so the cooldown survives restarts).
    pub at_unix_ms: u64,
    pub trigger: Trigger,
    /// The room the moved shards' masters are in now.
    pub to_room: String,
    pub shards: Vec<String>,
}

impl FailoverRecord {
    pub fn now(trigger: Trigger, to_room: &str, shards: Vec<String>) -> Self {
        FailoverRecord { at_unix_ms: unix_ms(SystemTime::now()), trigger, to_room: to_room.to_string(), shards }
    }

    /// Time left in `cooldown` after this failover, if any.
    pub fn cooldown_left(&self, cooldown: Duration, now: SystemTime) -> Option<Duration> {
        let elapsed = Duration::from_millis(unix_ms(now).saturating_sub(self.at_unix_ms));
        cooldown.checked_sub(elapsed).filter(|left| !left.is_zero())
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    epoch: u64,
    /// shard name -> master address
    masters: BTreeMap<String, String>,
    last_failover: Option<FailoverRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Bumped on every change of a designated master.
    pub epoch: u64,
    pub masters: Masters,
    pub last_failover: Option<FailoverRecord>,
}

impl State {
    pub fn new(masters: Masters) -> Self {
        State { epoch: 0, masters, last_failover: None }
    }

    /// Reads the state file; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path, topology: &Topology) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path: path.into(), source }),
        };
        let file: StateFile =
            serde_json::from_str(&text).map_err(|source| StateError::Parse { path: path.into(), source })?;
        let mismatch = |problem: String| StateError::Mismatch { path: path.into(), problem };
        if file.version != VERSION {
            return Err(mismatch(format!("version {} is not supported (expected {VERSION})", file.version)));
        }
        let mut masters = vec![None; topology.shards.len()];
        for (shard_name, addr) in &file.masters {
            // A shard removed from the config is simply forgotten.
            let Some(shard) = topology.shard_id(shard_name) else { continue };
            let id =
                topology.shard_members(shard).find(|&id| topology.addr(id).to_string() == *addr).ok_or_else(|| {
                    mismatch(format!("shard \"{shard_name}\" names master {addr}, which is not one of its instances"))
                })?;
            masters[shard] = Some(id);
        }
        Ok(Some(State { epoch: file.epoch, masters, last_failover: file.last_failover }))
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path, topology: &Topology) -> Result<(), StateError> {
        let file = StateFile {
            version: VERSION,
            epoch: self.epoch,
            masters: self
                .masters
                .iter()
                .enumerate()
                .filter_map(|(shard, m)| {
                    m.map(|id| (topology.shards[shard].name.clone(), topology.addr(id).to_string()))
                })
                .collect(),
            last_failover: self.last_failover.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("state serializes");
        write_atomically(path, text.as_bytes()).map_err(|source| StateError::Write { path: path.into(), source })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::fixtures::seed;

    #[test]
    fn round_trip_and_mismatch() {
        let t = seed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path, &t).unwrap(), None);
        let state = State {
            epoch: 3,
            masters: vec![Some(2), None],
            last_failover: Some(FailoverRecord::now(Trigger::Auto, "2", vec!["shard-6401".into()])),
        };
        state.save(&path, &t).unwrap();
        assert_eq!(State::load(&path, &t).unwrap(), Some(state));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"shard-6401\": \"192.168.99.12:6401\""), "{text}");

        std::fs::write(&path, text.replace("192.168.99.12:6401", "192.168.99.12:6402")).unwrap();
        let err = State::load(&path, &t).unwrap_err().to_string();
        assert!(err.contains("shard \"shard-6401\" names master 192.168.99.12:6402"), "{err}");
        std::fs::write(&path, "{").unwrap();
        assert!(State::load(&path, &t).unwrap_err().to_string().contains("is not valid roomguard state"));
    }

    #[test]
    fn cooldown() {
        let rec = FailoverRecord::now(Trigger::Manual, "1", vec![]);
        let now = SystemTime::now();
        assert!(rec.cooldown_left(Duration::from_secs(300), now).unwrap() > Duration::from_secs(290));
        assert_eq!(rec.cooldown_left(Duration::from_secs(300), now + Duration::from_secs(301)), None);
    }
}
