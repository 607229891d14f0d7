//! The persisted decisions: each shard's designated master, a failover epoch and the last
//! failover. Written atomically (temp file in the same directory, fsync, rename, fsync of
//! the directory), and written *before* acting on a decision, so a controller that dies
//! half-way through a failover finishes it on restart instead of deciding afresh.
//!
//! The file names instances by address and shards by name, so it stays readable and
//! survives reordering of the config; an entry that no longer matches the config is an
//! error naming the file, the shard and the instance.
//!
//! It also keeps, per room, when the room last *failed* (was judged lost, or an automatic
//! failover moved masters away from it): the anti-flap rule holds automatic failovers
//! toward such a room for the cooldown, and that must survive a restart. Fields added after
//! version 1 are `#[serde(default)]`, so older files still load.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{plan::Masters, topology::Topology};

const VERSION: u32 = 1;

/// Each cause is part of the message, not a `source`: `{:#}` (how the CLI prints errors) would
/// print it a second time.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("state file {path} is not valid roomguard state: {error}")]
    Parse { path: PathBuf, error: serde_json::Error },
    #[error(
        "state file {path}: {problem} (the config changed? move the file away to let roomguard re-read the masters from Redis)"
    )]
    Mismatch { path: PathBuf, problem: String },
    #[error("cannot write state file {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("state file {path}: its directory {dir} {problem}")]
    Directory { path: PathBuf, dir: PathBuf, problem: String },
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
    /// Decision to verified new masters, once verified (restores the duration metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

impl FailoverRecord {
    pub fn now(trigger: Trigger, to_room: &str, shards: Vec<String>) -> Self {
        FailoverRecord {
            at_unix_ms: unix_ms(SystemTime::now()),
            trigger,
            to_room: to_room.to_string(),
            shards,
            took_ms: None,
        }
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
    /// room name -> when it last failed (Unix ms): judged lost, or failed away from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    room_failures: BTreeMap<String, u64>,
    /// With `[coordination]`: the etcd revision of the shared record these masters came
    /// from ([`crate::coordination`]), the fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fencing_token: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Bumped on every change of a designated master.
    pub epoch: u64,
    pub masters: Masters,
    pub last_failover: Option<FailoverRecord>,
    /// By room index: when it last failed (Unix ms); `None` (or no entry): not since the
    /// file was created.
    pub room_failures: Vec<Option<u64>>,
    /// With `[coordination]`: the etcd revision of the shared record that holds these
    /// masters. A later decision has a larger one; hooks get it as `RG_EPOCH`.
    pub fencing_token: Option<u64>,
}

impl State {
    pub fn new(masters: Masters) -> Self {
        State { epoch: 0, masters, last_failover: None, room_failures: Vec::new(), fencing_token: None }
    }

    /// Records that `room` failed at `at_unix_ms` (never moves the time back).
    pub fn record_room_failure(&mut self, room: usize, at_unix_ms: u64) {
        if self.room_failures.len() <= room {
            self.room_failures.resize(room + 1, None);
        }
        let slot = &mut self.room_failures[room];
        *slot = Some(slot.map_or(at_unix_ms, |t| t.max(at_unix_ms)));
    }

    /// Reads the state file; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path, topology: &Topology) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StateError::Read { path: path.into(), error }),
        };
        State::from_json(&text, topology).map_err(|e| match e {
            JsonError::Parse(error) => StateError::Parse { path: path.into(), error },
            JsonError::Mismatch(problem) => StateError::Mismatch { path: path.into(), problem },
        })
    }

    /// Reads the state file's text (also the shared record of [`crate::coordination`]).
    pub fn from_json(text: &str, topology: &Topology) -> Result<Option<State>, JsonError> {
        let file: StateFile = serde_json::from_str(text).map_err(JsonError::Parse)?;
        if file.version != VERSION {
            return Err(JsonError::Mismatch(format!("version {} is not supported (expected {VERSION})", file.version)));
        }
        let mut masters = vec![None; topology.shards.len()];
        for (shard_name, addr) in &file.masters {
            // A shard removed from the config is simply forgotten.
            let Some(shard) = topology.shard_id(shard_name) else { continue };
            let id =
                topology.shard_members(shard).find(|&id| topology.addr(id).to_string() == *addr).ok_or_else(|| {
                    JsonError::Mismatch(format!(
                        "shard \"{shard_name}\" names master {addr}, which is not one of its instances"
                    ))
                })?;
            masters[shard] = Some(id);
        }
        // A room removed from the config is simply forgotten, as a shard is.
        let room_failures = topology.rooms.iter().map(|room| file.room_failures.get(room).copied()).collect();
        Ok(Some(State {
            epoch: file.epoch,
            masters,
            last_failover: file.last_failover,
            room_failures,
            fencing_token: file.fencing_token,
        }))
    }

    /// Writes the state file atomically; returns the bytes written (what the file holds now,
    /// unless another writer replaces it).
    pub fn save(&self, path: &Path, topology: &Topology) -> Result<Vec<u8>, StateError> {
        let mut bytes = self.to_json(topology).into_bytes();
        bytes.push(b'\n');
        write_atomically(path, &bytes).map_err(|error| StateError::Write { path: path.into(), error })?;
        Ok(bytes)
    }

    /// The state file's text.
    pub fn to_json(&self, topology: &Topology) -> String {
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
            room_failures: self
                .room_failures
                .iter()
                .zip(&topology.rooms)
                .filter_map(|(at, room)| at.map(|at| (room.clone(), at)))
                .collect(),
            fencing_token: self.fencing_token,
        };
        serde_json::to_string_pretty(&file).expect("state serializes")
    }
}

/// Why a state text was refused (the caller names where it came from).
#[derive(Debug)]
pub enum JsonError {
    Parse(serde_json::Error),
    Mismatch(String),
}

/// Checks that the state file can be written where it is configured: its directory exists,
/// is a directory, and a file can be created in it (by trying: permission bits alone do not
/// say what root, ACLs or a read-only mount allow).
pub fn check_writable(path: &Path) -> Result<(), StateError> {
    let dir = parent_dir(path);
    let problem = |problem: String| StateError::Directory { path: path.into(), dir: dir.into(), problem };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(problem("does not exist".into())),
        Err(e) => return Err(problem(format!("cannot be read: {e}"))),
        Ok(m) if !m.is_dir() => return Err(problem("is not a directory".into())),
        Ok(_) => {}
    }
    tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|e| problem(format!("is not writable by this user: {e}")))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically, mode 0644: the file holds no secret, and whoever writes
/// it (the service's dynamic user, or root's `roomguard failover`), the others must read it. A
/// temp file is created 0600, and a state file root left 0600 kept the packaged service (a
/// `DynamicUser=`) from reading it: from following the failover, and from starting at all.
/// The state directory (0700 with the package) keeps other users out.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
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
            room_failures: vec![Some(1_700_000_000_000), None],
            fencing_token: Some(12),
        };
        state.save(&path, &t).unwrap();
        assert_eq!(State::load(&path, &t).unwrap(), Some(state));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by the service's user when root wrote it");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"shard-6401\": \"192.168.99.12:6401\""), "{text}");

        std::fs::write(&path, text.replace("192.168.99.12:6401", "192.168.99.12:6402")).unwrap();
        let err = State::load(&path, &t).unwrap_err().to_string();
        assert!(err.contains("shard \"shard-6401\" names master 192.168.99.12:6402"), "{err}");
        std::fs::write(&path, "{").unwrap();
        assert!(State::load(&path, &t).unwrap_err().to_string().contains("is not valid roomguard state"));
    }

    /// A file written before the fields below existed still loads, with them empty.
    #[test]
    fn a_version_1_file_without_the_newer_fields_loads() {
        let t = seed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = r#"{"version":1,"epoch":2,"masters":{"shard-6401":"192.168.99.12:6401"},
            "last_failover":{"at_unix_ms":5,"trigger":"auto","to_room":"2","shards":["shard-6401"]}}"#;
        std::fs::write(&path, old).unwrap();
        let state = State::load(&path, &t).unwrap().unwrap();
        assert_eq!(state.room_failures, vec![None, None]);
        assert_eq!(state.last_failover.as_ref().unwrap().took_ms, None);
        // Room failures round-trip by room name; an unknown room is forgotten.
        let mut state = state;
        state.record_room_failure(0, 10);
        state.record_room_failure(0, 7);
        assert_eq!(state.room_failures, vec![Some(10), None], "never moves back");
        state.save(&path, &t).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"room_failures\": {\n    \"1\": 10\n  }"), "{text}");
        std::fs::write(&path, text.replace("\"1\": 10", "\"1\": 10, \"9\": 3")).unwrap();
        assert_eq!(State::load(&path, &t).unwrap().unwrap().room_failures, vec![Some(10), None]);
    }

    #[test]
    fn check_writable_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("state.json")).is_ok());
        let missing = dir.path().join("nope").join("state.json");
        let err = check_writable(&missing).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}", dir.path().join("nope").display())) && err.contains("does not exist"),
            "{err}"
        );
        // A parent that is a regular file: not writable even by root.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = check_writable(&file.join("state.json")).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
