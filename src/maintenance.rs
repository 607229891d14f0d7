//! Maintenance mode (`roomguard pause` / `resume`, `POST /pause` / `POST /resume`): automatic
//! failover off at runtime, for every controller that uses the same state file, until resumed.
//! Manual failovers (`roomguard failover`) still work, and a controller still follows them.
//!
//! The pause lives in a file of its own beside the state file (`<state file>.paused`), not in
//! the state file: the controllers rewrite the state file from memory (a decision, a room
//! failure, a failover's duration), so a flag in it could be overwritten by a controller that
//! had not read it yet, and an operator's pause would be lost without a word. Only `pause` and
//! `resume` write this file, so nothing else can undo them. Its path derives from the state
//! file, so every controller and CLI run that shares the state file shares the pause.
//!
//! The file existing means paused, whatever it holds (`touch` works too; an unreadable one
//! counts as paused since its modification time): when in doubt, stay paused and say so. It
//! is readable by all (it holds no secret), so a pause written by root is seen by the
//! service's own user.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::state::unix_ms;

/// The I/O error is part of the message, not a `source` (which `{:#}` would print again).
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("cannot write the pause file {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("cannot remove the pause file {path}: {error}")]
    Remove { path: PathBuf, error: std::io::Error },
    #[error("cannot read the pause file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
}

/// A pause in effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When it started (Unix ms, wall clock).
    pub since_unix_ms: u64,
    /// Who paused: `user@host (cli)` or `admin API`.
    #[serde(default)]
    pub by: String,
    /// Why, as given with `--reason` (or `?reason=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when the file exists but does not say this (written by hand, or damaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Pause {
    /// One line for people: since when (readable, with its age), by whom, why.
    pub fn describe(&self, now: SystemTime) -> String {
        let mut text = format!("since {}", crate::when::describe(self.since_unix_ms, now));
        if !self.by.is_empty() {
            text.push_str(&format!(" by {}", self.by));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(": {reason}"));
        }
        if let Some(problem) = &self.problem {
            text.push_str(&format!(" ({problem})"));
        }
        text
    }
}

/// The pause file of the controllers that use `state_file`.
pub fn path(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".paused");
    PathBuf::from(name)
}

/// The pause in effect for `state_file`, if any.
pub fn load(state_file: &Path) -> Result<Option<Pause>, MaintenanceError> {
    let path = path(state_file);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            // It exists (or something is in the way): paused, as far as we can tell.
            let Ok(meta) = std::fs::metadata(&path) else { return Err(MaintenanceError::Read { path, error: source }) };
            return Ok(Some(Pause {
                since_unix_ms: meta.modified().map(unix_ms).unwrap_or(0),
                by: String::new(),
                reason: None,
                problem: Some(format!("the pause file cannot be read: {source}")),
            }));
        }
    };
    Ok(Some(serde_json::from_slice::<Pause>(&bytes).unwrap_or_else(|e| {
        let since = std::fs::metadata(&path).and_then(|m| m.modified()).map(unix_ms).unwrap_or(0);
        let problem = if bytes.iter().all(u8::is_ascii_whitespace) {
            "the pause file is empty".to_string()
        } else {
            format!("the pause file is not roomguard's: {e}")
        };
        Pause { since_unix_ms: since, by: String::new(), reason: None, problem: Some(problem) }
    })))
}

/// Pauses automatic failover for `state_file`. Already paused: the pause in effect is kept
/// (its start and author) and returned with `false`.
pub fn pause(state_file: &Path, by: &str, reason: Option<&str>) -> Result<(Pause, bool), MaintenanceError> {
    if let Ok(Some(current)) = load(state_file) {
        return Ok((current, false));
    }
    let pause = Pause {
        since_unix_ms: unix_ms(SystemTime::now()),
        by: by.to_string(),
        reason: reason.filter(|r| !r.trim().is_empty()).map(str::to_string),
        problem: None,
    };
    let path = path(state_file);
    let text = serde_json::to_string_pretty(&pause).expect("a pause serializes") + "\n";
    crate::state::write_atomically(&path, text.as_bytes()).map_err(|error| MaintenanceError::Write { path, error })?;
    Ok((pause, true))
}

/// Ends the pause for `state_file`; returns the pause that was in effect, if any.
pub fn resume(state_file: &Path) -> Result<Option<Pause>, MaintenanceError> {
    let current = load(state_file).ok().flatten();
    let path = path(state_file);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(MaintenanceError::Remove { path, error }),
    }
    // The removal is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(current)
}

/// Who runs this process, for [`Pause::by`]: `user@host (cli)`.
pub fn cli_author() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // No login name in the environment (a service, a bare `su`): the uid at least.
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").map_or_else(|_| "someone".into(), |m| format!("uid {}", m.uid()))
        });
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "?".into());
    format!("{user}@{host} (cli)")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn pause_resume_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        assert_eq!(path(&state), dir.path().join("state.json.paused"));
        assert_eq!(load(&state).unwrap(), None);
        assert_eq!(resume(&state).unwrap(), None, "resuming when not paused is fine");

        let (first, new) = pause(&state, "ops@host (cli)", Some("upgrading room 1")).unwrap();
        assert!(new);
        assert_eq!(load(&state).unwrap(), Some(first.clone()));
        let mode = std::fs::metadata(path(&state)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by the service's user");
        // Pausing again keeps the first pause (its start and author).
        let (again, new) = pause(&state, "someone else", None).unwrap();
        assert!(!new);
        assert_eq!(again, first);

        assert_eq!(resume(&state).unwrap(), Some(first));
        assert_eq!(load(&state).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_roomguards_still_pauses() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        std::fs::write(path(&state), "").unwrap();
        let pause = load(&state).unwrap().unwrap();
        assert_eq!(pause.problem.as_deref(), Some("the pause file is empty"));
        assert!(pause.since_unix_ms > 0);
        std::fs::write(path(&state), "{oops").unwrap();
        let pause = load(&state).unwrap().unwrap();
        assert!(pause.problem.unwrap().starts_with("the pause file is not roomguard's"));
    }
}
