//! A Redis-Sentinel-compatible endpoint, so that existing Redis clients (redis-py, Jedis,
//! Lettuce, ioredis, go-redis, redis-rs) find the masters roomguard verified and follow its
//! failovers with a configuration change and no code change.
//!
//! roomguard runs beside every app server, so the endpoint listens on localhost
//! (`[sentinel] listen`). Shard names are the Sentinel master names. It answers what clients
//! send to discover masters and replicas (`SENTINEL get-master-addr-by-name`, `masters`,
//! `master`, `replicas`/`slaves`, `sentinels`, `myid`, `ROLE`, `INFO`), the connection
//! handshake (`HELLO` with RESP2/RESP3, `AUTH`, `CLIENT SETNAME/SETINFO`, `PING`), and Pub/Sub
//! (`SUBSCRIBE`/`PSUBSCRIBE`) with Sentinel's event messages (`+switch-master`, `+slave`,
//! `+slave-reconf-done`, `+sdown`, `-sdown`, `+odown`, `-odown`, `+convert-to-slave`), fed by
//! the controller's event stream
//! ([`crate::events`]). The addresses it reports come from a `watch` the controller updates
//! every round: always the verified master, so during a failover the old master is reported
//! (flagged down) until the new one answers as a master — as Sentinel does.
//!
//! The request parser is hand-written: requests are only arrays of bulk strings (or inline
//! commands), and it must refuse an oversized length (`$2147483647`, `*2147483647`) from its
//! header, before buffering or allocating anything; `scripts/fuzz` fuzzes it
//! (`fuzz/fuzz_targets/sentinel_request.rs`). Connections are capped
//! (`max_connections`), requests are capped (`max_request_bytes`), idle connections that are
//! not subscribed are closed after `idle_timeout`, and a client that does not read its
//! replies is dropped after a write timeout; each is counted in a metric.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, broadcast, watch},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    config::Secret,
    detect::Verdict,
    events::{Event, InstanceRef, LiveRole, Snapshot},
    info::Role,
    metrics::Metrics,
    observe::Observation,
    topology::{Addr, Topology},
};

// === configuration ===

/// `[sentinel]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub listen: String,
    pub password: Option<Secret>,
    pub max_connections: Option<usize>,
    pub max_request_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
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
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that does not read what it asked for is dropped after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies buffered per connection before they are written (and the rest of a pipeline is
/// answered only once they are): bounds the output memory of a client that does not read.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// Most channels and patterns one connection may subscribe to (Sentinel has a handful of
/// channels; a client subscribing to thousands is misbehaving or hostile).
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most arguments a request may have (a Sentinel request has at most a handful).
const MAX_ARGS: i64 = 1024;

impl RawSentinel {
    pub fn validate(self) -> Result<SentinelSettings, String> {
        let listen = self
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
        Ok(SentinelSettings { listen, password, max_connections, max_request_bytes, idle_timeout })
    }
}

// === file descriptors ===

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

// === the view the endpoint serves ===

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

    fn shard(&self, name: &[u8]) -> Option<&ShardView> {
        self.shards.iter().find(|s| s.name.as_bytes() == name)
    }
}

// === RESP: requests ===

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("invalid bulk length")]
    BulkLength,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("request larger than {0} bytes")]
    TooLarge(usize),
    #[error("unbalanced quotes or missing CRLF")]
    Malformed,
}

impl ProtocolError {
    fn label(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge(_) | ProtocolError::MultibulkLength | ProtocolError::BulkLength => "too_large",
            _ => "malformed",
        }
    }
}

/// One parsed request: its arguments and how many bytes of the buffer it used.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// A header line (`*3`, `$5`) ending in CRLF, from `start`; `Ok(None)` while incomplete.
fn header(buf: &[u8], start: usize, err: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    const MAX_HEADER: usize = 32;
    let rest = &buf[start..];
    let Some(end) = rest.iter().take(MAX_HEADER).position(|&b| b == b'\r') else {
        return if rest.len() >= MAX_HEADER { Err(err) } else { Ok(None) };
    };
    if rest.len() < end + 2 {
        return Ok(None);
    }
    if rest[end + 1] != b'\n' {
        return Err(err);
    }
    let n = std::str::from_utf8(&rest[1..end]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(err)?;
    Ok(Some((n, start + end + 2)))
}

/// Parses one request from the front of `buf`: its arguments and the bytes it used.
/// `Ok(None)`: incomplete, read more. Refuses anything larger than `max` bytes from the
/// header, without waiting for (or allocating) the announced bytes.
pub fn parse_request(buf: &[u8], max: usize) -> Result<Option<Parsed>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, max);
    }
    let Some((count, mut pos)) = header(buf, 0, ProtocolError::MultibulkLength)? else { return Ok(None) };
    if count > MAX_ARGS {
        return Err(ProtocolError::MultibulkLength);
    }
    let mut args = Vec::new();
    for _ in 0..count.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError::ExpectedBulk(buf[pos] as char));
        }
        let Some((len, start)) = header(buf, pos, ProtocolError::BulkLength)? else { return Ok(None) };
        if len < 0 || len as u64 > max as u64 || start + len as usize > max {
            return Err(ProtocolError::BulkLength);
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Malformed);
        }
        args.push(buf[start..end].to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// An inline command (`PING\r\n`, as telnet or `redis-cli` in a pipe might send).
fn parse_inline(buf: &[u8], max: usize) -> Result<Option<Parsed>, ProtocolError> {
    let Some(nl) = buf.iter().take(max + 1).position(|&b| b == b'\n') else {
        return if buf.len() > max { Err(ProtocolError::TooLarge(max)) } else { Ok(None) };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    if line.contains(&b'"') || line.contains(&b'\'') {
        return Err(ProtocolError::Malformed);
    }
    let args = line.split(|b| b.is_ascii_whitespace()).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect();
    Ok(Some((args, nl + 1)))
}

// === RESP: replies ===

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A null bulk (RESP2 `$-1`, RESP3 `_`).
    Null,
    /// A null array (RESP2 `*-1`, RESP3 `_`).
    NullArray,
    Array(Vec<Reply>),
    /// A map (RESP3 `%`, RESP2 a flat array of keys and values).
    Map(Vec<(Reply, Reply)>),
    /// An out-of-band Pub/Sub message (RESP3 `>`, RESP2 an array).
    Push(Vec<Reply>),
}

fn bulk(s: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(s.as_ref().to_vec())
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn err(s: impl Into<String>) -> Reply {
    Reply::Error(s.into())
}

impl Reply {
    pub fn encode(&self, resp3: bool, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, prefix: char, body: &str| {
            out.push(prefix as u8);
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::Simple(s) => line(out, '+', &s.replace(['\r', '\n'], " ")),
            Reply::Error(s) => line(out, '-', &s.replace(['\r', '\n'], " ")),
            Reply::Int(n) => line(out, ':', &n.to_string()),
            Reply::Bulk(b) => {
                line(out, '$', &b.len().to_string());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) | Reply::Push(items) => {
                let prefix = if resp3 && matches!(self, Reply::Push(_)) { '>' } else { '*' };
                line(out, prefix, &items.len().to_string());
                for item in items {
                    item.encode(resp3, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, '%', &pairs.len().to_string());
                } else {
                    line(out, '*', &(pairs.len() * 2).to_string());
                }
                for (k, v) in pairs {
                    k.encode(resp3, out);
                    v.encode(resp3, out);
                }
            }
        }
    }
}

// === Pub/Sub ===

/// Redis' glob-style pattern matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as PSUBSCRIBE uses.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Backtracking point for the last `*`: (pattern position after it, text position).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => class_match(pattern, p, text[t]),
                b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
                c => (c == text[t]).then_some(p + 1),
            }
        } else {
            None
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; the position after
/// the class when it matches.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    // An unterminated class ends the pattern, as in Redis.
    let end = if i < pattern.len() { i + 1 } else { i };
    (matched != negate).then_some(end)
}

/// Sentinel's name for an instance in event messages: `master <name> <ip> <port>` or
/// `slave <ip:port> <ip> <port> @ <master-name> <master-ip> <master-port>`.
fn instance_text(i: &InstanceRef) -> String {
    let (ip, port) = (&i.addr.host, i.addr.port);
    if i.is_master {
        format!("master {} {ip} {port}", i.shard)
    } else {
        let m = i.shard_master.as_ref().map(|m| format!(" @ {} {} {}", i.shard, m.host, m.port)).unwrap_or_default();
        format!("slave {ip}:{port} {ip} {port}{m}")
    }
}

/// `slave <ip:port> <ip> <port> @ <master-name> <master-ip> <master-port>`, Sentinel's `%@`
/// for a replica: the address after `@` is the shard's master (not the replica's parent).
fn replica_text(replica: &Addr, shard: &str, master: &Addr) -> String {
    let (ip, port) = (&replica.host, replica.port);
    format!("slave {ip}:{port} {ip} {port} @ {shard} {} {}", master.host, master.port)
}

/// The Sentinel Pub/Sub messages (channel, payload) for one event, in Sentinel's order and
/// formats (redis `src/sentinel.c`, `sentinelEvent`'s `%@`).
pub fn messages(event: &Event) -> Vec<(String, String)> {
    match event {
        // Sentinel: `+slave-reconf-done` per reconfigured replica (named under the old
        // master), `+switch-master`, then `+slave` per replica of the new master, the old
        // master included (`sentinelResetMasterAndChangeAddress`).
        Event::MasterSwitched { shard, old, new, replicas, reconfigured, .. } => {
            let mut out: Vec<(String, String)> =
                reconfigured.iter().map(|r| ("+slave-reconf-done".into(), replica_text(r, shard, old))).collect();
            out.push(("+switch-master".into(), format!("{shard} {} {} {} {}", old.host, old.port, new.host, new.port)));
            out.extend(replicas.iter().map(|r| ("+slave".into(), replica_text(r, shard, new))));
            out
        }
        Event::SubjectivelyDown { instance, down } => {
            vec![(if *down { "+sdown" } else { "-sdown" }.into(), instance_text(instance))]
        }
        // Sentinel adds the quorum to `+odown` only; roomguard is its own quorum of one.
        Event::ObjectivelyDown { instance, down: true } => {
            vec![("+odown".into(), format!("{} #quorum 1/1", instance_text(instance)))]
        }
        Event::ObjectivelyDown { instance, down: false } => vec![("-odown".into(), instance_text(instance))],
        Event::Demoted { shard, instance, master, shard_master, .. } => {
            vec![("+convert-to-slave".into(), replica_text(instance, shard, shard_master.as_ref().unwrap_or(master)))]
        }
        Event::RoomLost { .. } | Event::RoomBack { .. } | Event::CutOff { .. } => vec![],
    }
}

// === the server ===

/// What every connection shares.
struct Endpoint {
    settings: SentinelSettings,
    view: watch::Receiver<Discovery>,
    events: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
    myid: String,
    started: Instant,
    next_id: AtomicU64,
}

/// Binds `[sentinel] listen` (the caller turns an error into a start-up failure).
pub async fn bind(settings: &SentinelSettings) -> std::io::Result<TcpListener> {
    TcpListener::bind(settings.listen).await
}

/// Serves the endpoint until `token` is cancelled.
pub async fn serve(
    listener: TcpListener,
    settings: SentinelSettings,
    view: watch::Receiver<Discovery>,
    events: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let endpoint = Arc::new(Endpoint {
        settings,
        view,
        events,
        metrics,
        myid: random_id(),
        started: Instant::now(),
        next_id: AtomicU64::new(1),
    });
    info!(listen = ?listener.local_addr().ok(), "Sentinel-compatible endpoint listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "sentinel endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            endpoint.metrics.sentinel_rejected.inc();
            refuse(stream);
            continue;
        };
        let endpoint = endpoint.clone();
        let token = token.clone();
        tokio::spawn(async move {
            // Released however the task ends (even by a panic): the slot and the gauge.
            let _open = Open::new(endpoint.metrics.clone(), permit);
            let reason = Connection::new(&endpoint).run(stream, &token).await;
            debug!(%peer, reason, "sentinel endpoint: connection closed");
            endpoint.metrics.sentinel_closed(reason);
        });
    }
}

/// One open connection: holds its slot and counts in `roomguard_sentinel_connections`.
struct Open {
    metrics: Arc<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: Arc<Metrics>, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics.sentinel_connections.inc();
        Open { metrics, _permit: permit }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.sentinel_connections.dec();
    }
}

/// Over the connection cap: one error line, then close (as Redis with `maxclients`). Written
/// without waiting (a new connection's send buffer is empty, so it fits), and the descriptor
/// is closed at once: refusals hold no task and no descriptor, however many arrive.
fn refuse(stream: TcpStream) {
    // A direct non-blocking write: tokio's `try_write` would refuse before the reactor has
    // seen the new socket writable.
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, b"-ERR max number of clients reached\r\n");
    }
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut id = String::new();
    for i in 0..3u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        let _ = write!(id, "{:016x}", h.finish());
    }
    id.truncate(40);
    id
}

struct Connection<'a> {
    endpoint: &'a Endpoint,
    id: u64,
    resp3: bool,
    authed: bool,
    name: Option<Vec<u8>>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    events: Option<broadcast::Receiver<Event>>,
    quit: bool,
}

impl<'a> Connection<'a> {
    fn new(endpoint: &'a Endpoint) -> Self {
        Connection {
            endpoint,
            id: endpoint.next_id.fetch_add(1, Ordering::Relaxed),
            resp3: false,
            authed: endpoint.settings.password.is_none(),
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            events: None,
            quit: false,
        }
    }

    fn subscribed(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Serves one client; returns why the connection ended (a metric label).
    async fn run(mut self, mut stream: TcpStream, token: &CancellationToken) -> &'static str {
        let max = self.endpoint.settings.max_request_bytes;
        let (mut reader, mut stream) = stream.split();
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        loop {
            let mut out = Vec::new();
            let more = match self.answer(&mut buf, max, &mut out) {
                Ok(more) => more,
                Err(e) => {
                    err(format!("ERR Protocol error: {e}")).encode(self.resp3, &mut out);
                    let _ = self.write(&mut stream, &out).await;
                    return e.label();
                }
            };
            if !out.is_empty() && self.write(&mut stream, &out).await.is_err() {
                return "write";
            }
            if self.quit {
                return "quit";
            }
            // Replies were cut at OUTPUT_CHUNK: answer the rest of the buffer before reading.
            if more {
                continue;
            }
            // A large request is done with: give its memory back.
            if buf.is_empty() && buf.capacity() > 16 * 1024 {
                buf = Vec::with_capacity(1024);
            }
            // Subscribers wait for events and are never idle; others are closed when idle.
            let idle = (self.subscribed() == 0).then_some(self.endpoint.settings.idle_timeout);
            let subscribed = self.subscribed() > 0;
            // Unparsed bytes stay below max_request_bytes (the parser refuses more), so the
            // buffer is bounded by that plus one read.
            buf.reserve(4096);
            let read = async {
                match idle {
                    Some(idle) => tokio::time::timeout(idle, reader.read_buf(&mut buf)).await.ok(),
                    None => Some(reader.read_buf(&mut buf).await),
                }
            };
            tokio::select! {
                _ = token.cancelled() => return "shutdown",
                read = read => match read {
                    None => return "idle",
                    Some(Ok(0)) | Some(Err(_)) => return "client",
                    Some(Ok(_)) => {}
                },
                event = recv(&mut self.events), if subscribed => match event {
                    Ok(event) => {
                        let mut out = Vec::new();
                        self.publish(&event, &mut out);
                        if !out.is_empty() && self.write(&mut stream, &out).await.is_err() {
                            return "write";
                        }
                    }
                    // The client missed events: close so that it reconnects and rediscovers.
                    Err(broadcast::error::RecvError::Lagged(_)) => return "lagged",
                    Err(broadcast::error::RecvError::Closed) => return "shutdown",
                },
            }
        }
    }

    /// Answers the complete requests at the front of `buf` into `out`, stopping once `out`
    /// holds [`OUTPUT_CHUNK`] bytes (or at `QUIT`); `Ok(true)` when it stopped there with
    /// requests possibly left, to be answered after `out` is written. So a client that
    /// pipelines many requests and never reads holds at most one chunk of replies.
    ///
    /// The requests are parsed with a cursor and the answered bytes are removed from `buf` once,
    /// at the end: removing them request by request would move the rest of a pipelined buffer
    /// once per request (quadratic, on the runtime that runs the control loop).
    fn answer(&mut self, buf: &mut Vec<u8>, max: usize, out: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        let mut cursor = 0;
        let answered = self.answer_from(buf, &mut cursor, max, out);
        buf.drain(..cursor);
        answered
    }

    /// [`Self::answer`] from `buf[*cursor..]`, moving `cursor` past each request answered.
    fn answer_from(
        &mut self,
        buf: &[u8],
        cursor: &mut usize,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProtocolError> {
        while let Some((args, used)) = parse_request(&buf[*cursor..], max)? {
            *cursor += used;
            if !args.is_empty() {
                self.handle(&args, out);
            }
            if self.quit {
                return Ok(false);
            }
            if out.len() >= OUTPUT_CHUNK {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn write(&self, stream: &mut tokio::net::tcp::WriteHalf<'_>, out: &[u8]) -> Result<(), ()> {
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(out)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    fn publish(&self, event: &Event, out: &mut Vec<u8>) {
        for (channel, payload) in messages(event) {
            let c = channel.as_bytes();
            if self.channels.contains(c) {
                Reply::Push(vec![bulk("message"), bulk(c), bulk(&payload)]).encode(self.resp3, out);
            }
            for pattern in self.patterns.iter().filter(|p| glob_match(p, c)) {
                Reply::Push(vec![bulk("pmessage"), bulk(pattern), bulk(c), bulk(&payload)]).encode(self.resp3, out);
            }
        }
    }

    fn handle(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let command = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        self.endpoint.metrics.sentinel_command(&command);
        let reply = self.dispatch(&command, args, out);
        if let Some(reply) = reply {
            reply.encode(self.resp3, out);
        }
    }

    /// Returns the reply, or `None` when replies were written to `out` already.
    fn dispatch(&mut self, command: &str, args: &[Vec<u8>], out: &mut Vec<u8>) -> Option<Reply> {
        let wrong_args = || Some(err(format!("ERR wrong number of arguments for '{command}' command")));
        match command {
            "quit" => {
                self.quit = true;
                return Some(ok());
            }
            "auth" => return Some(self.auth(&args[1..])),
            "hello" => return Some(self.hello(&args[1..])),
            _ => {}
        }
        if !self.authed {
            return Some(err("NOAUTH Authentication required."));
        }
        // RESP2 subscribers may only (un)subscribe, ping, quit and reset (RESP3 allows all).
        if self.subscribed() > 0
            && !self.resp3
            && !matches!(command, "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ping" | "reset")
        {
            return Some(err(format!(
                "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )));
        }
        match command {
            "ping" => match args.len() {
                1 | 2 if self.subscribed() > 0 && !self.resp3 => {
                    Some(Reply::Array(vec![bulk("pong"), bulk(args.get(1).map(Vec::as_slice).unwrap_or_default())]))
                }
                1 => Some(Reply::Simple("PONG".into())),
                2 => Some(bulk(&args[1])),
                _ => wrong_args(),
            },
            "echo" if args.len() == 2 => Some(bulk(&args[1])),
            "echo" => wrong_args(),
            "client" => Some(self.client(&args[1..])),
            "reset" => {
                let password = self.endpoint.settings.password.is_some();
                *self = Connection { id: self.id, ..Connection::new(self.endpoint) };
                self.authed = !password;
                Some(Reply::Simple("RESET".into()))
            }
            "sentinel" => Some(self.sentinel(&args[1..])),
            "role" => {
                let view = self.endpoint.view.borrow();
                Some(Reply::Array(vec![
                    bulk("sentinel"),
                    Reply::Array(view.shards.iter().map(|s| bulk(&s.name)).collect()),
                ]))
            }
            "info" => Some(Reply::Bulk(self.info(args.get(1)).into_bytes())),
            "subscribe" | "psubscribe" if args.len() < 2 => wrong_args(),
            "subscribe" | "psubscribe" => {
                let pattern = command == "psubscribe";
                if self.events.is_none() {
                    self.events = Some(self.endpoint.events.subscribe());
                }
                for name in &args[1..] {
                    let full = self.subscribed() >= MAX_SUBSCRIPTIONS;
                    let set = if pattern { &mut self.patterns } else { &mut self.channels };
                    if full && !set.contains(name) {
                        err(format!(
                            "ERR too many subscriptions: at most {MAX_SUBSCRIPTIONS} channels and patterns per connection"
                        ))
                        .encode(self.resp3, out);
                        continue;
                    }
                    set.insert(name.clone());
                    Reply::Push(vec![bulk(command), bulk(name), Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                None
            }
            "unsubscribe" | "punsubscribe" => {
                let pattern = command == "punsubscribe";
                let set = if pattern { &self.patterns } else { &self.channels };
                let names: Vec<Vec<u8>> =
                    if args.len() > 1 { args[1..].to_vec() } else { set.iter().cloned().collect() };
                if names.is_empty() {
                    Reply::Push(vec![bulk(command), Reply::Null, Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                for name in names {
                    if pattern {
                        self.patterns.remove(&name);
                    } else {
                        self.channels.remove(&name);
                    }
                    Reply::Push(vec![bulk(command), bulk(&name), Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                if self.subscribed() == 0 {
                    self.events = None;
                }
                None
            }
            "command" => Some(Reply::Array(vec![])),
            _ => {
                let shown: Vec<String> =
                    args[1..].iter().take(8).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                Some(err(format!(
                    "ERR unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    shown.join(" ")
                )))
            }
        }
    }

    fn check_password(&self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let Some(expected) = &self.endpoint.settings.password else {
            return false;
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        let p = expected.expose().as_bytes();
        // Constant-time comparison: the reply time reveals nothing about a guess.
        let same = p.len() == password.len() && p.iter().zip(password).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        user_ok && same
    }

    fn auth(&mut self, args: &[Vec<u8>]) -> Reply {
        let (user, password) = match args {
            [p] => (None, p),
            [u, p] => (Some(u.as_slice()), p),
            _ => return err("ERR wrong number of arguments for 'auth' command"),
        };
        // Without a password the default user is `nopass`, as in Redis: `AUTH default <any>`
        // succeeds, a bare `AUTH <password>` is a configuration mistake worth reporting.
        if self.endpoint.settings.password.is_none() {
            return match user {
                Some(_) => ok(),
                None => err(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ),
            };
        }
        if self.check_password(user, password) {
            self.authed = true;
            ok()
        } else {
            self.endpoint.metrics.sentinel_auth_failures.inc();
            err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        let mut resp3 = self.resp3;
        let mut rest = args;
        if let Some(v) = args.first() {
            match v.as_slice() {
                b"2" => resp3 = false,
                b"3" => resp3 = true,
                _ if std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).is_some() => {
                    return err("NOPROTO unsupported protocol version");
                }
                _ => return err("ERR Protocol version is not an integer or out of range"),
            }
            rest = &args[1..];
        }
        let mut name = None;
        while let Some(option) = rest.first() {
            match option.to_ascii_lowercase().as_slice() {
                b"auth" if rest.len() >= 3 => {
                    let nopass = self.endpoint.settings.password.is_none();
                    if !nopass && !self.check_password(Some(&rest[1]), &rest[2]) {
                        self.endpoint.metrics.sentinel_auth_failures.inc();
                        return err("WRONGPASS invalid username-password pair or user is disabled.");
                    }
                    self.authed = true;
                    rest = &rest[3..];
                }
                b"setname" if rest.len() >= 2 => {
                    name = Some(rest[1].clone());
                    rest = &rest[2..];
                }
                _ => return err(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option))),
            }
        }
        if !self.authed {
            return err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        self.resp3 = resp3;
        if name.is_some() {
            self.name = name;
        }
        Reply::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk(SENTINEL_REDIS_VERSION)),
            (bulk("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
            (bulk("id"), Reply::Int(self.id as i64)),
            (bulk("mode"), bulk("sentinel")),
            (bulk("role"), bulk("sentinel")),
            (bulk("modules"), Reply::Array(vec![])),
        ])
    }

    fn client(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some(sub) = args.first() else {
            return err("ERR wrong number of arguments for 'client' command");
        };
        match (sub.to_ascii_lowercase().as_slice(), args.len()) {
            (b"setname", 2) => {
                self.name = Some(args[1].clone()).filter(|n| !n.is_empty());
                ok()
            }
            (b"getname", 1) => self.name.as_ref().map_or(Reply::Null, bulk),
            (b"id", 1) => Reply::Int(self.id as i64),
            // Library name/version, eviction and touch flags: harmless, accepted and ignored.
            (b"setinfo", 3) | (b"no-evict", 2) | (b"no-touch", 2) => ok(),
            (b"reply", 2) if args[1].eq_ignore_ascii_case(b"on") => ok(),
            _ => err(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. roomguard answers CLIENT SETNAME, GETNAME, SETINFO, ID, NO-EVICT, NO-TOUCH, REPLY ON",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    fn sentinel(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some(sub) = args.first() else {
            return err("ERR wrong number of arguments for 'sentinel' command");
        };
        let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
        // Valkey 8's names answer as the old ones do (REPLICAS is a name both share).
        let canonical = match sub.as_str() {
            "primary" => "master",
            "primaries" => "masters",
            "get-primary-addr-by-name" => "get-master-addr-by-name",
            other => other,
        };
        let view = self.endpoint.view.borrow();
        let named = |f: &dyn Fn(&ShardView) -> Reply| match args {
            [_, name] => view.shard(name).map_or_else(|| err("ERR No such master with that name"), f),
            _ => err(format!("ERR wrong number of arguments for 'sentinel|{sub}' command")),
        };
        match canonical {
            "get-master-addr-by-name" => match args {
                [_, name] => match view.shard(name).and_then(|s| s.master.as_ref()) {
                    Some(m) => Reply::Array(vec![bulk(&m.addr.host), bulk(m.addr.port.to_string())]),
                    None => Reply::NullArray,
                },
                _ => err(format!("ERR wrong number of arguments for 'sentinel|{sub}' command")),
            },
            "masters" => Reply::Array(view.shards.iter().map(|s| master_state(s, &view)).collect()),
            "master" => named(&|s| master_state(s, &view)),
            "replicas" | "slaves" => {
                named(&|s| Reply::Array(s.replicas.iter().map(|r| replica_state(r, view.down_after_ms)).collect()))
            }
            "sentinels" => named(&|_| Reply::Array(vec![])),
            "myid" => bulk(&self.endpoint.myid),
            "ckquorum" => named(&|_| {
                Reply::Simple("OK 1 usable Sentinels. Quorum and failover authorization can be reached".into())
            }),
            "failover" => {
                err("ERR roomguard decides failovers itself: use `roomguard failover --room R` or POST /failover")
            }
            "help" => Reply::Array(
                [
                    "SENTINEL <subcommand> (roomguard's Sentinel-compatible endpoint)",
                    "GET-MASTER-ADDR-BY-NAME <name>, MASTERS, MASTER <name>, REPLICAS <name>,",
                    "SLAVES <name>, SENTINELS <name>, MYID, CKQUORUM <name>",
                    "Valkey's names: GET-PRIMARY-ADDR-BY-NAME <name>, PRIMARIES, PRIMARY <name>",
                ]
                .iter()
                .map(|l| Reply::Simple((*l).into()))
                .collect(),
            ),
            _ => err(format!(
                "ERR unknown subcommand '{sub}': roomguard answers discovery queries only (try SENTINEL HELP)"
            )),
        }
    }

    fn info(&self, section: Option<&Vec<u8>>) -> String {
        let section = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        let want =
            |name: &str| section.as_deref().is_none_or(|s| matches!(s, "all" | "default" | "everything") || s == name);
        let view = self.endpoint.view.borrow();
        let mut out = String::new();
        if want("server") {
            let _ = write!(
                out,
                "# Server\r\nredis_version:{SENTINEL_REDIS_VERSION}\r\nredis_mode:sentinel\r\nroomguard_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.endpoint.settings.listen.port(),
                self.endpoint.started.elapsed().as_secs()
            );
        }
        if want("clients") {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\n\r\n",
                self.endpoint.metrics.sentinel_connections.get()
            );
        }
        if want("sentinel") {
            let _ = write!(
                out,
                "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\n",
                view.shards.len()
            );
            for (i, s) in view.shards.iter().enumerate() {
                let (status, address) = match &s.master {
                    Some(m) => (
                        if m.odown {
                            "odown"
                        } else if m.sdown {
                            "sdown"
                        } else {
                            "ok"
                        },
                        m.addr.to_string(),
                    ),
                    None => ("unknown", String::new()),
                };
                let _ = write!(
                    out,
                    "master{i}:name={},status={status},address={address},slaves={},sentinels=1\r\n",
                    s.name,
                    s.replicas.len()
                );
            }
        }
        out
    }
}

/// The Redis version roomguard's endpoint claims in `HELLO` and `INFO`: it speaks the
/// Sentinel protocol of Redis 7.0.
pub const SENTINEL_REDIS_VERSION: &str = "7.0.0";

async fn recv(rx: &mut Option<broadcast::Receiver<Event>>) -> Result<Event, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn flags(base: &str, n: &NodeView) -> String {
    let mut f = base.to_string();
    // A "replica" that answers as a master (a returning stale master not yet demoted) is not
    // one to read from: flagged down so clients skip it.
    if n.sdown || (base == "slave" && n.answers_as_master) {
        f.push_str(",s_down");
    }
    if n.odown {
        f.push_str(",o_down");
    }
    if n.disconnected {
        f.push_str(",disconnected");
    }
    f
}

fn pairs(kv: Vec<(&str, String)>) -> Reply {
    Reply::Map(kv.into_iter().map(|(k, v)| (bulk(k), bulk(v))).collect())
}

fn master_state(s: &ShardView, view: &Discovery) -> Reply {
    let Some(m) = &s.master else {
        return pairs(vec![
            ("name", s.name.clone()),
            ("ip", String::new()),
            ("port", "0".into()),
            ("flags", "master,s_down,disconnected".into()),
            ("num-slaves", s.replicas.len().to_string()),
            ("num-other-sentinels", "0".into()),
            ("quorum", "1".into()),
        ]);
    };
    pairs(vec![
        ("name", s.name.clone()),
        ("ip", m.addr.host.clone()),
        ("port", m.addr.port.to_string()),
        ("runid", String::new()),
        ("flags", flags("master", m)),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", m.silent_ms.to_string()),
        ("last-ping-reply", m.silent_ms.to_string()),
        ("down-after-milliseconds", view.down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", if m.answers_as_master || m.disconnected { "master" } else { "slave" }.into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", s.replicas.len().to_string()),
        ("num-other-sentinels", "0".into()),
        ("quorum", "1".into()),
        ("failover-timeout", "0".into()),
        ("parallel-syncs", "1".into()),
    ])
}

fn replica_state(r: &NodeView, down_after_ms: u64) -> Reply {
    let (master_host, master_port) =
        r.master.as_ref().map_or(("?".to_string(), "0".to_string()), |m| (m.host.clone(), m.port.to_string()));
    pairs(vec![
        ("name", format!("{}:{}", r.addr.host, r.addr.port)),
        ("ip", r.addr.host.clone()),
        ("port", r.addr.port.to_string()),
        ("runid", String::new()),
        ("flags", flags("slave", r)),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", r.silent_ms.to_string()),
        ("last-ping-reply", r.silent_ms.to_string()),
        ("down-after-milliseconds", down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", if r.answers_as_master { "master" } else { "slave" }.into()),
        ("role-reported-time", "0".into()),
        ("master-link-down-time", "0".into()),
        ("master-link-status", if r.link_up { "ok" } else { "err" }.into()),
        ("master-host", master_host),
        ("master-port", master_port),
        ("slave-priority", "100".into()),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Vec<String>, usize)>, ProtocolError> {
        parse_request(s.as_bytes(), 1024)
            .map(|o| o.map(|(args, used)| (args.into_iter().map(|a| String::from_utf8(a).unwrap()).collect(), used)))
    }

    #[test]
    fn requests() {
        assert_eq!(parse("*1\r\n$4\r\nPING\r\n"), Ok(Some((vec!["PING".into()], 14))));
        assert_eq!(parse("PING\r\n"), Ok(Some((vec!["PING".into()], 6))));
        assert_eq!(parse("  sentinel  myid \n"), Ok(Some((vec!["sentinel".into(), "myid".into()], 18))));
        assert_eq!(parse("*0\r\n"), Ok(Some((vec![], 4))));
        for partial in ["*", "*2", "*2\r", "*2\r\n$4\r\nPI", "*2\r\n$4\r\nPING\r\n", "PING", "*1\r\n$4\r\nPING\r"] {
            assert_eq!(parse(partial), Ok(None), "{partial:?}");
        }
        assert_eq!(parse("*1\r\n$2147483647\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse("*2147483647\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse("*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse("*x\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse("*1\r\n:1\r\n"), Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(parse("*1\r\n$4\r\nPINGxx"), Err(ProtocolError::Malformed));
        assert_eq!(parse("*11111111111111111111111111111111111111"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse(&"A".repeat(2000)), Err(ProtocolError::TooLarge(1024)));
        assert_eq!(parse("SET \"a b\"\r\n"), Err(ProtocolError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics_and_respects_the_cap(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(Some((args, used))) = parse_request(&bytes, 1024) {
                proptest::prop_assert!(used <= bytes.len());
                proptest::prop_assert!(args.iter().map(Vec::len).sum::<usize>() <= 1024);
            }
        }

        #[test]
        fn encoded_commands_parse_back(args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..6)) {
            let mut out = Vec::new();
            Reply::Array(args.iter().map(|a| Reply::Bulk(a.clone())).collect()).encode(false, &mut out);
            proptest::prop_assert_eq!(parse_request(&out, 1024).unwrap(), Some((args, out.len())));
        }
    }

    #[test]
    fn replies_in_both_protocols() {
        let enc = |r: Reply, resp3| {
            let mut out = Vec::new();
            r.encode(resp3, &mut out);
            String::from_utf8(out).unwrap()
        };
        let map = Reply::Map(vec![(bulk("a"), Reply::Int(1))]);
        assert_eq!(enc(map.clone(), false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(map, true), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(Reply::NullArray, false), "*-1\r\n");
        assert_eq!(enc(Reply::Null, false), "$-1\r\n");
        assert_eq!(enc(Reply::Null, true), "_\r\n");
        assert_eq!(enc(Reply::Push(vec![bulk("x")]), true), ">1\r\n$1\r\nx\r\n");
        assert_eq!(enc(Reply::Push(vec![bulk("x")]), false), "*1\r\n$1\r\nx\r\n");
        assert_eq!(enc(err("ERR a\r\nb"), false), "-ERR a  b\r\n");
    }

    fn endpoint(view: Discovery) -> Endpoint {
        let topology = crate::topology::fixtures::seed();
        Endpoint {
            settings: RawSentinel {
                listen: "127.0.0.1:0".into(),
                password: None,
                max_connections: None,
                max_request_bytes: None,
                idle_timeout: None,
            }
            .validate()
            .unwrap(),
            view: watch::channel(view).1,
            events: broadcast::channel(16).0,
            metrics: Arc::new(Metrics::new(&topology)),
            myid: random_id(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
        }
    }

    fn seed_view() -> Discovery {
        let topology = crate::topology::fixtures::seed();
        let masters = (0..topology.shards.len()).map(|s| topology.shard_members(s).next()).collect();
        Discovery::initial(&topology, &masters, Duration::from_secs(5))
    }

    #[test]
    fn a_pipeline_is_answered_one_bounded_chunk_at_a_time() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let requests = 4000;
        let mut buf = b"SENTINEL MASTERS\n".repeat(requests);
        let mut one = Vec::new();
        connection.handle(&[b"SENTINEL".to_vec(), b"MASTERS".to_vec()], &mut one);
        let (mut total, mut chunks) = (0, 0);
        loop {
            let mut out = Vec::new();
            let more = connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            assert!(out.len() < OUTPUT_CHUNK + one.len(), "{} bytes buffered", out.len());
            total += out.len();
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(buf.is_empty());
        assert_eq!(total, one.len() * requests, "every request answered");
        assert!(chunks > 1);
    }

    /// Complete requests are answered and removed; a partial one stays, whole, for the next
    /// read, wherever the read cut it.
    #[test]
    fn a_partial_request_stays_in_the_buffer_for_the_next_read() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let pipeline = b"PING\r\n*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n".to_vec();
        let mut whole = Vec::new();
        connection.answer(&mut pipeline.clone(), DEFAULT_MAX_REQUEST_BYTES, &mut whole).unwrap();
        assert_eq!(String::from_utf8_lossy(&whole), "+PONG\r\n+PONG\r\n$5\r\nhello\r\n");
        for cut in 0..=pipeline.len() {
            let (mut buf, mut out) = (pipeline[..cut].to_vec(), Vec::new());
            connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            let answered = cut - buf.len();
            assert!(pipeline[answered..cut] == buf[..], "cut at {cut}: the unanswered rest stays as it was");
            buf.extend_from_slice(&pipeline[cut..]);
            connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            assert!(buf.is_empty(), "cut at {cut}");
            assert_eq!(out, whole, "cut at {cut}: the same answers, in order");
        }
    }

    #[test]
    fn subscriptions_per_connection_are_capped() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let mut args = vec![b"SUBSCRIBE".to_vec()];
        args.extend((0..MAX_SUBSCRIPTIONS - 1).map(|i| format!("c{i}").into_bytes()));
        let mut out = Vec::new();
        connection.handle(&args, &mut out);
        connection.handle(&[b"PSUBSCRIBE".to_vec(), b"+*".to_vec(), b"-*".to_vec()], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(connection.subscribed(), MAX_SUBSCRIPTIONS);
        assert_eq!(text.matches("-ERR too many subscriptions").count(), 1, "{text}");
        // Already subscribed: no error, no growth.
        let mut out = Vec::new();
        connection.handle(&[b"SUBSCRIBE".to_vec(), b"c0".to_vec(), b"new".to_vec()], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("-ERR").count(), 1, "{text}");
        assert_eq!(connection.subscribed(), MAX_SUBSCRIPTIONS);
    }

    fn flags_of(reply: &Reply) -> String {
        let Reply::Map(pairs) = reply else { panic!("{reply:?}") };
        match pairs.iter().find(|(k, _)| *k == bulk("flags")) {
            Some((_, Reply::Bulk(b))) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_master_only_the_state_file_names_is_reported_down_until_verified() {
        let topology = crate::topology::fixtures::seed();
        let initial = seed_view();
        let s = &initial.shards[0];
        assert_eq!(flags_of(&master_state(s, &initial)), "master,s_down,disconnected");
        let endpoint = endpoint(initial.clone());
        let mut connection = Connection::new(&endpoint);
        let mut out = Vec::new();
        connection.handle(
            &[b"SENTINEL".to_vec(), b"get-master-addr-by-name".to_vec(), s.name.clone().into_bytes()],
            &mut out,
        );
        let master = s.master.as_ref().unwrap();
        assert!(String::from_utf8_lossy(&out).contains(&master.addr.host), "the address is still given");

        // The first round: the named master answers, but as a replica (a stale state file).
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/info/{name}", env!("CARGO_MANIFEST_DIR"));
            crate::info::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let now = Instant::now();
        let mut observation = Observation::new(topology.instances.len());
        for id in 0..topology.instances.len() {
            observation.instances[id].record(now, Duration::ZERO, Ok(fixture("redis7-replica.txt")));
        }
        let settings = crate::detect::DetectSettings {
            down_after: Duration::from_secs(1),
            silence: crate::detect::SilenceSettings::new(None, Duration::from_millis(100)),
        };
        let verdict = crate::detect::assess(&topology, &observation, now, settings);
        let designated = vec![Some(0), Some(4)];
        let snapshot = Snapshot::take(&topology, &observation, &verdict, &designated, None);
        let view = Discovery::build(&topology, &observation, &verdict, &snapshot, 1, Duration::from_secs(5), now);
        assert!(flags_of(&master_state(&view.shards[0], &view)).contains("s_down"), "{view:?}");
        // Once it answers as a master it is reported up.
        observation.instances[0].record(now, Duration::ZERO, Ok(fixture("redis7-master.txt")));
        let snapshot = Snapshot::take(&topology, &observation, &verdict, &designated, Some(&snapshot));
        let view = Discovery::build(&topology, &observation, &verdict, &snapshot, 1, Duration::from_secs(5), now);
        assert_eq!(flags_of(&master_state(&view.shards[0], &view)), "master");
    }

    #[test]
    fn max_connections_fit_the_open_files_limit() {
        // 8 instances: 24 + 64 reserved.
        assert_eq!(reserved_fds(8), 88);
        assert_eq!(fit_connections(1024, 1024, 8), Some(936));
        assert_eq!(fit_connections(1024, 1024 * 1024, 8), None);
        assert_eq!(fit_connections(100, 1024, 8), None);
        assert_eq!(fit_connections(1024, 50, 8), Some(1), "never zero");
        let settings = endpoint(seed_view()).settings;
        assert_eq!(settings.clone().fitted(Some(1024), 8).max_connections, 936);
        assert_eq!(settings.clone().fitted(None, 8).max_connections, DEFAULT_MAX_CONNECTIONS);
        // The process' own limit is raised (to the hard limit where the system allows it).
        let (before, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_nofile_limit().unwrap() >= before);
    }

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", "+switch-master"));
        assert!(m("+switch-*", "+switch-master"));
        assert!(m("?sdown", "+sdown") && m("?sdown", "-sdown"));
        assert!(m("[+-]odown", "-odown") && !m("[^+-]odown", "-odown"));
        assert!(m("[a-z]*", "x") && !m("[a-c]", "d"));
        assert!(m("\\*", "*") && !m("\\*", "x"));
        assert!(!m("+sdown", "+odown") && !m("a*b", "ac") && m("a*b*c", "aXbYbc"));
        assert!(m("", "") && !m("", "a") && m("**", ""));
    }

    #[test]
    fn event_messages_use_sentinel_formats() {
        let master = Addr::new("127.0.0.11", 6401);
        let replica = InstanceRef {
            shard: "shard-6401".into(),
            room: "1".into(),
            addr: Addr::new("127.0.0.11", 6403),
            is_master: false,
            shard_master: Some(master.clone()),
        };
        let as_master = InstanceRef { addr: master.clone(), is_master: true, ..replica.clone() };
        assert_eq!(
            messages(&Event::MasterSwitched {
                shard: "shard-6401".into(),
                old: master.clone(),
                new: Addr::new("127.0.0.12", 6401),
                room: "2".into(),
                trigger: crate::state::Trigger::Auto,
                replicas: vec![Addr::new("127.0.0.12", 6403), master.clone()],
                reconfigured: vec![Addr::new("127.0.0.12", 6403)],
            }),
            [
                ("+slave-reconf-done", "slave 127.0.0.12:6403 127.0.0.12 6403 @ shard-6401 127.0.0.11 6401"),
                ("+switch-master", "shard-6401 127.0.0.11 6401 127.0.0.12 6401"),
                ("+slave", "slave 127.0.0.12:6403 127.0.0.12 6403 @ shard-6401 127.0.0.12 6401"),
                ("+slave", "slave 127.0.0.11:6401 127.0.0.11 6401 @ shard-6401 127.0.0.12 6401"),
            ]
            .map(|(c, p)| (c.to_string(), p.to_string()))
        );
        assert_eq!(
            messages(&Event::ObjectivelyDown { instance: as_master.clone(), down: true }),
            [("+odown".to_string(), "master shard-6401 127.0.0.11 6401 #quorum 1/1".to_string())]
        );
        // A demoted old master chained under room 2's tail is named under the shard's master.
        assert_eq!(
            messages(&Event::Demoted {
                shard: "shard-6401".into(),
                room: "1".into(),
                instance: master.clone(),
                master: Addr::new("127.0.0.12", 6403),
                shard_master: Some(Addr::new("127.0.0.12", 6401)),
            }),
            [(
                "+convert-to-slave".to_string(),
                "slave 127.0.0.11:6401 127.0.0.11 6401 @ shard-6401 127.0.0.12 6401".to_string()
            )]
        );
        assert_eq!(
            messages(&Event::SubjectivelyDown { instance: replica, down: true }),
            [("+sdown".to_string(), "slave 127.0.0.11:6403 127.0.0.11 6403 @ shard-6401 127.0.0.11 6401".to_string())]
        );
        assert_eq!(
            messages(&Event::ObjectivelyDown { instance: as_master, down: false }),
            [("-odown".to_string(), "master shard-6401 127.0.0.11 6401".to_string())]
        );
    }
}
