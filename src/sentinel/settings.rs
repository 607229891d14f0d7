//! `[sentinel]` settings and the open-files budget the endpoint's connections fit in.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use tracing::{info, warn};

use crate::{secret::Secret, topology::Addr};

/// `[sentinel]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub listen: String,
    pub password: Option<Secret>,
    /// A file holding `password`, read into it by [`crate::config`].
    pub password_file: Option<std::path::PathBuf>,
    pub max_connections: Option<usize>,
    pub max_request_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    pub peers: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct SentinelSettings {
    pub listen: SocketAddr,
    /// Clients must `AUTH` (or `HELLO ... AUTH default <password>`) with it.
    pub password: Option<Secret>,
    /// Further connections are refused with `-ERR max number of clients reached`.
    pub max_connections: usize,
    /// Largest request (all its arguments); a longer one closes the connection.
    pub max_request_bytes: usize,
    /// A connection that sends nothing this long and is not subscribed is closed (a
    /// subscriber waits for events, possibly for months, and is never timed out).
    pub idle_timeout: Duration,
    /// The other controllers' endpoints (`host:port`), answered to `SENTINEL SENTINELS` as
    /// Sentinel names the other Sentinels: clients add them to their list and ask the next
    /// one when this one cannot help (ioredis and iovalkey then stop reporting "All sentinels
    /// are unreachable" at every reconnect). This endpoint's own address is left out.
    pub peers: Vec<Addr>,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that does not read what it asked for is dropped after this long.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies buffered per connection before they are written (and the rest of a pipeline is
/// answered only once they are): bounds the output memory of a client that does not read.
pub(crate) const OUTPUT_CHUNK: usize = 64 * 1024;
/// Most channels and patterns one connection may subscribe to (Sentinel has a handful of
/// channels; a client subscribing to thousands is misbehaving or hostile).
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
/// Most arguments a request may have (a Sentinel request has at most a handful).
pub(super) const MAX_ARGS: i64 = 1024;

impl RawSentinel {
    /// A `[sentinel]` section that names only its address: every other key at its default.
    pub fn listening_on(listen: &str) -> RawSentinel {
        RawSentinel {
            listen: listen.into(),
            password: None,
            password_file: None,
            max_connections: None,
            max_request_bytes: None,
            idle_timeout: None,
            peers: None,
        }
    }

    pub fn validate(self) -> Result<SentinelSettings, String> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| format!("`sentinel.listen` = \"{}\" is not an ip:port address", self.listen))?;
        let password = self.password.filter(|p| !p.expose().is_empty());
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err("`sentinel.max_connections` must be greater than zero".into());
        }
        let max_request_bytes = self.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 1024 {
            return Err("`sentinel.max_request_bytes` must be at least 1024".into());
        }
        let idle_timeout = self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        if idle_timeout.is_zero() {
            return Err("`sentinel.idle_timeout` must be greater than zero".into());
        }
        let mut peers = Vec::new();
        for (i, peer) in self.peers.unwrap_or_default().iter().enumerate() {
            let addr: Addr = peer.parse().map_err(|e| format!("`sentinel.peers[{i}]` = \"{peer}\": {e}"))?;
            // A list shared by every host names this one too.
            let this = listen.ip().to_string() == addr.host && listen.port() == addr.port;
            if !this && !peers.contains(&addr) {
                peers.push(addr);
            }
        }
        Ok(SentinelSettings { listen, password, max_connections, max_request_bytes, idle_timeout, peers })
    }
}

/// Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit, so that a
/// reconnect storm of Sentinel clients cannot leave the controller unable to open Redis
/// connections (EMFILE) when it must fail over. Returns the soft limit now in force (`None`
/// if it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"),
            Err(e) => warn!(soft, hard, error = %e, "could not raise the open-files limit (RLIMIT_NOFILE)"),
        }
    }
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// File descriptors kept for everything but Sentinel clients: per instance a poller
/// connection, an action connection and one spare (a CLI-triggered switchover, the audit),
/// plus 64 for the HTTP server, the state file, hooks' pipes, logs and the listeners.
pub fn reserved_fds(instances: usize) -> u64 {
    instances as u64 * 3 + 64
}

/// `max_connections` fitted to the open-files limit `nofile`, leaving [`reserved_fds`]:
/// `Some(clamped)` when it had to be lowered.
pub fn fit_connections(max_connections: usize, nofile: u64, instances: usize) -> Option<usize> {
    let room = nofile.saturating_sub(reserved_fds(instances)).max(1);
    (max_connections as u64 > room).then_some(room as usize)
}

impl SentinelSettings {
    /// These settings with `max_connections` fitted to the open-files limit (logged when lowered).
    pub fn fitted(mut self, nofile: Option<u64>, instances: usize) -> Self {
        if let Some(clamped) = nofile.and_then(|n| fit_connections(self.max_connections, n, instances)) {
            warn!(
                configured = self.max_connections,
                effective = clamped,
                open_files_limit = nofile,
                reserved = reserved_fds(instances),
                "sentinel.max_connections lowered to fit the open-files limit, keeping descriptors for Redis connections (raise `ulimit -n` / LimitNOFILE)"
            );
            self.max_connections = clamped;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_fit_the_open_files_limit() {
        // 8 instances: 24 + 64 reserved.
        assert_eq!(reserved_fds(8), 88);
        assert_eq!(fit_connections(1024, 1024, 8), Some(936));
        assert_eq!(fit_connections(1024, 1024 * 1024, 8), None);
        assert_eq!(fit_connections(100, 1024, 8), None);
        assert_eq!(fit_connections(1024, 50, 8), Some(1), "never zero");
        let settings = RawSentinel::listening_on("127.0.0.1:0").validate().unwrap();
        assert_eq!(settings.clone().fitted(Some(1024), 8).max_connections, 936);
        assert_eq!(settings.clone().fitted(None, 8).max_connections, DEFAULT_MAX_CONNECTIONS);
        // The process' own limit is raised (to the hard limit where the system allows it).
        let (before, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_nofile_limit().unwrap() >= before);
    }

    #[test]
    fn peers_are_addresses_without_this_endpoint() {
        let with = |peers: &[&str]| {
            let mut raw = RawSentinel::listening_on("127.0.0.1:26379");
            raw.peers = Some(peers.iter().map(|p| p.to_string()).collect());
            raw.validate()
        };
        let settings = with(&["10.0.0.2:26379", "127.0.0.1:26379", "10.0.0.2:26379", "app-3:26379"]).unwrap();
        assert_eq!(settings.peers, [Addr::new("10.0.0.2", 26379), Addr::new("app-3", 26379)]);
        assert!(with(&[]).unwrap().peers.is_empty());
        let e = with(&["10.0.0.2"]).unwrap_err();
        assert!(e.contains("`sentinel.peers[0]` = \"10.0.0.2\"") && e.contains("host:port"), "{e}");
    }
}
