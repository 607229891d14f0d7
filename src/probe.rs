//! Probing: `INFO replication` on every instance, each on its own connection and bounded by
//! its own timeout, so a hung instance never delays the others.
//!
//! The probes' connections are not redis-rs' (which [`connect`] opens for the commands that
//! change Redis): each probe writes its request and reads the reply itself, on the poller's task
//! ([`crate::resp`]), so a probe costs no hop through a per-connection driver task.
//!
//! Every failure mode is a typed [`ProbeError`]: a refused connection (process gone) is
//! told apart from a timeout (process hung), bad credentials, `-LOADING`, a non-Redis peer
//! and an INFO reply that could not be understood.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::stream::{FuturesUnordered, StreamExt};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    config::{RedisConfig, RedisSettings},
    info::{self, ReplicationInfo},
    metrics::Metrics,
    observe::{Observation, ObservationStore, ProbeError, ProbeErrorKind},
    resp,
    topology::{Addr, InstanceId, Topology},
    version::ServerVersion,
};

/// How a probe connects and names its failures, kept under the name callers know.
pub use crate::dial::{classify, client_name, connect};

/// `INFO replication` and `INFO server`, packed once (see the test below).
const INFO_REPLICATION: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";
const INFO_SERVER: &[u8] = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n";

/// The probe's connection ([`crate::resp`]: request and reply on the prober's own task, no
/// driver task), opened like [`connect`]'s: the same stream, `AUTH`, name, and one `timeout`
/// for all of it.
async fn connect_direct(
    addr: &Addr,
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<resp::Connection, ProbeError> {
    let attempt = async {
        let mut connection = resp::Connection::new(crate::dial::open_stream(addr, settings).await?);
        authenticate(&mut connection, settings, timeout).await.map_err(|e| classify(&e))?;
        let setname = redis::cmd("CLIENT").arg("SETNAME").arg(client_name()).get_packed_command();
        match connection.request(&setname, timeout).await {
            Err(e) if e.code().is_none() => Err(classify(&e)),
            _ => Ok(connection),
        }
    };
    crate::dial::within(timeout, attempt).await
}

/// `AUTH` as redis-rs sends it when it opens a RESP2 connection (what [`connect`] gets): none
/// without a password; with the username when one is set, once more without it when the server
/// predates ACLs (Redis 5 refuses two arguments); any other refusal is `AuthenticationFailed`.
async fn authenticate(
    connection: &mut resp::Connection,
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<(), RedisError> {
    let Some(password) = &settings.password else { return Ok(()) };
    let mut username = settings.username.as_deref();
    loop {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = username {
            auth.arg(user);
        }
        auth.arg(password.expose());
        match connection.request(&auth.get_packed_command(), timeout).await {
            Ok(Value::Okay) => return Ok(()),
            Ok(_) => {
                return Err((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "Redis server refused to authenticate, returns Ok() != Value::Okay",
                )
                    .into());
            }
            Err(e) if e.code().is_some() => {
                let old_server = e.detail().is_some_and(|d| d.contains("wrong number of arguments for 'auth' command"));
                if username.is_some() && old_server {
                    username = None;
                    continue;
                }
                return Err((ErrorKind::AuthenticationFailed, "Password authentication failed").into());
            }
            Err(e) => return Err(e),
        }
    }
}

/// One `INFO` request; its reply as text.
async fn info_text(connection: &mut resp::Connection, command: &[u8], timeout: Duration) -> Result<String, ProbeError> {
    let reply = connection.request(command, timeout).await.map_err(|e| classify(&e))?;
    redis::from_redis_value(reply).map_err(|e| classify(&e.into()))
}

/// One instance's connection, re-established after any failure.
pub struct Prober {
    addr: Addr,
    auth: RedisSettings,
    timeout: Duration,
    connection: Option<resp::Connection>,
    /// Read with `INFO server` when the connection is (re)opened.
    version: Option<ServerVersion>,
    /// The process's `run_id` (a restart changes it), read with the version.
    run_id: Option<String>,
    /// When that process started, from its `uptime_in_seconds` (whole seconds: up to a second
    /// early).
    started_at: Option<Instant>,
}

impl Prober {
    pub fn new(addr: Addr, auth: RedisSettings, timeout: Duration) -> Self {
        Prober { addr, auth, timeout, connection: None, version: None, run_id: None, started_at: None }
    }

    /// The `run_id` of the process behind the current or last connection.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// The server's version, as read on the current or last connection.
    pub fn version(&self) -> Option<ServerVersion> {
        self.version
    }

    /// When the process behind the current or last connection started.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// One `INFO replication` round trip. Any error drops the connection, so the next probe
    /// starts from a clean one: a half-read reply never poisons later probes.
    pub async fn probe(&mut self) -> Result<ReplicationInfo, ProbeError> {
        let result = self.probe_inner().await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn probe_inner(&mut self) -> Result<ReplicationInfo, ProbeError> {
        if self.connection.is_none() {
            let mut connection = connect_direct(&self.addr, &self.auth, self.timeout).await?;
            // Once per connection, not per poll: a restart (an upgrade) reconnects. Its failure is
            // the probe's (a hung or non-Redis peer costs one timeout, not two); a reply without
            // a version leaves the version unknown.
            let server = info_text(&mut connection, INFO_SERVER, self.timeout).await?;
            if let Some(version) = ServerVersion::from_info(&server) {
                self.version = Some(version);
            }
            self.run_id = info::server_field(&server, "run_id").map(str::to_owned);
            self.started_at = info::server_field(&server, "uptime_in_seconds")
                .and_then(|s| s.parse().ok())
                .and_then(|secs| Instant::now().checked_sub(Duration::from_secs(secs)));
            self.connection = Some(connection);
        }
        let connection = self.connection.as_mut().expect("connected above");
        let text = info_text(connection, INFO_REPLICATION, self.timeout).await?;
        info::parse(&text).map_err(|e| ProbeError::new(ProbeErrorKind::Info, e.to_string()))
    }
}

/// How pollers probe.
#[derive(Clone, Debug)]
pub struct PollSettings {
    pub redis: RedisConfig,
    pub timeout: Duration,
    pub interval: Duration,
}

/// Instances probed together at one tick of the poller (see [`poller`]).
const PROBE_GROUP: usize = 32;

/// The poller, to be spawned (and supervised) by [`crate::daemon`]; it returns when `token` is
/// cancelled, and beats the store's heartbeat ([`ObservationStore::ticks`]) at every tick. The
/// instances are
/// split into groups of at most [`PROBE_GROUP`], spread evenly over the poll interval: at each
/// tick the group whose turn it is probes every member whose previous probe has finished, so
/// every instance is probed once per interval.
///
/// One task and one timer for all instances, not a task each: the probes of a group leave
/// together and their replies arrive together, so the runtime handles them in a few wake-ups
/// instead of one per probe (at 256 instances and 100 ms, 2,560 wake-ups and context switches
/// a second were most of the controller's CPU). Groups rather than one burst keep the queueing
/// within a burst (replies handled one after the other) small next to the probe timeout. A hung
/// instance still delays no other: its probe stays in flight (bounded by the timeout) and it
/// misses its turns meanwhile. Each probe reads and writes its socket from this task (no driver
/// task per connection), so a reply wakes this task and nothing else.
///
/// `on_answer` is called with every answer right after it is recorded (the Sentinel endpoint
/// reacts to a demotion at once, not at the next round: [`crate::sentinel::Discovery::observe`]).
pub fn poller(
    topology: &Topology,
    settings: &PollSettings,
    store: &ObservationStore,
    metrics: &Arc<Metrics>,
    token: &CancellationToken,
    on_answer: impl Fn(InstanceId, &ReplicationInfo) + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let mut idle: Vec<Option<Prober>> = topology
        .instances
        .iter()
        .enumerate()
        .map(|(id, instance)| {
            Some(Prober::new(instance.addr.clone(), settings.redis.instance(id).clone(), settings.timeout))
        })
        .collect();
    let groups = idle.len().div_ceil(PROBE_GROUP).max(1);
    let period = settings.interval / groups as u32;
    let store = store.clone();
    let metrics = metrics.clone();
    let token = token.clone();
    let addrs: Vec<_> = topology.instances.iter().map(|i| i.addr.clone()).collect();
    async move {
        // The kind of the last failure per instance: a change is logged once.
        let mut last_kind: Vec<Option<ProbeErrorKind>> = vec![None; addrs.len()];
        // Whether the instance's previous probe failed.
        let mut failed_before = vec![false; addrs.len()];
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight = FuturesUnordered::new();
        let mut turn = 0;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = ticks.tick() => {
                    store.ticks().beat();
                    let group = idle.iter_mut().enumerate().skip(turn).step_by(groups);
                    turn = (turn + 1) % groups;
                    for (id, slot) in group {
                        if let Some(mut prober) = slot.take() {
                            in_flight.push(async move {
                                let started = Instant::now();
                                let outcome = prober.probe().await;
                                (id, prober, started, started.elapsed(), outcome)
                            });
                        }
                    }
                }
                Some((id, prober, started, latency, outcome)) = in_flight.next() => {
                    let kind = outcome.as_ref().err().map(|e| e.kind);
                    // Our own promotion or demotion closed this connection: not news.
                    let ours = kind == Some(ProbeErrorKind::Io) && crate::act::disconnected_by_us(&addrs[id]);
                    let news = is_news(kind, last_kind[id], failed_before[id]);
                    failed_before[id] = kind.is_some();
                    if ours {
                        debug!(instance = %addrs[id], "probe connection closed by our own CLIENT KILL; reconnecting");
                    } else if news {
                        let addr = &addrs[id];
                        match &outcome {
                            Err(e) => warn!(instance = %addr, kind = e.kind.label(), error = %e.message, "probe of {addr} failed: {e}"),
                            Ok(_) => info!(instance = %addr, "{addr} answers INFO again"),
                        }
                        last_kind[id] = kind;
                    } else if let Err(e) = &outcome {
                        debug!(instance = %addrs[id], error = %e, "probe failed; not news yet");
                    }
                    metrics.record_probe(id, latency, outcome.as_ref().err());
                    // The process first: the reply is recorded as that process's.
                    store.set_server(id, prober.version(), prober.run_id(), prober.started_at());
                    // Recorded before the endpoint's view hears of it: the loop re-reads the
                    // store when it publishes a round's view, so an answer is either in that
                    // view or applied after it.
                    let answer = outcome.as_ref().ok().cloned();
                    store.record(id, started, latency, outcome);
                    if let Some(info) = &answer {
                        on_answer(id, info);
                    }
                    idle[id] = Some(prober);
                }
            }
        }
    }
}

/// Whether a finished probe with outcome `kind` (`None`: it answered) is worth a log line,
/// given the outcome last logged and whether the previous probe failed. A change is news, once.
/// But a connection that drops under an instance that was answering (`io`: a reset, a broken
/// pipe) is not news yet: a switchover's `CLIENT KILL`, run by `roomguard failover` or another
/// controller, closes every client connection, and the next probe reconnects. It is news when
/// the next probe fails too (a process that died is then `refused`).
fn is_news(kind: Option<ProbeErrorKind>, last_logged: Option<ProbeErrorKind>, failed_before: bool) -> bool {
    let dropped_once = kind == Some(ProbeErrorKind::Io) && !failed_before;
    kind != last_logged && !dropped_once
}

/// Probes every instance once, concurrently (for `status`, `failover` and verification).
pub async fn probe_all(topology: &Topology, redis: &RedisConfig, timeout: Duration) -> Observation {
    let probes = topology.instances.iter().enumerate().map(|(id, instance)| {
        let mut prober = Prober::new(instance.addr.clone(), redis.instance(id).clone(), timeout);
        async move {
            let started = Instant::now();
            let outcome = prober.probe().await;
            (started, started.elapsed(), outcome, prober.version(), prober.started_at())
        }
    });
    let results = futures::future::join_all(probes).await;
    let mut observation = Observation::new(topology.instances.len());
    for (id, (started, latency, outcome, version, started_at)) in results.into_iter().enumerate() {
        observation.instances[id].record(started, latency, outcome);
        observation.instances[id].version = version;
        observation.instances[id].started_at = started_at;
    }
    observation
}

/// Probes one instance once with a fresh connection (actions re-read state right before
/// they change it).
pub async fn probe_once(addr: &Addr, auth: &RedisSettings, timeout: Duration) -> Result<ReplicationInfo, ProbeError> {
    Prober::new(addr.clone(), auth.clone(), timeout).probe().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_commands_are_packed_as_redis_rs_packs_them() {
        assert_eq!(INFO_REPLICATION, redis::cmd("INFO").arg("replication").get_packed_command());
        assert_eq!(INFO_SERVER, redis::cmd("INFO").arg("server").get_packed_command());
    }

    #[test]
    fn a_dropped_connection_is_news_only_when_the_next_probe_fails_too() {
        use ProbeErrorKind::{Io, Refused, Timeout};
        // (kind, last logged, previous probe failed) -> logged
        let table = [
            (Some(Io), None, false, false),
            (None, None, true, false),
            (Some(Io), None, true, true),
            (Some(Refused), None, true, true),
            (Some(Refused), None, false, true),
            (Some(Timeout), None, false, true),
            (Some(Refused), Some(Refused), true, false),
            (None, Some(Refused), true, true),
            (Some(Io), Some(Io), true, false),
        ];
        for (kind, last, failed_before, logged) in table {
            assert_eq!(
                is_news(kind, last, failed_before),
                logged,
                "{kind:?} after {last:?} (failed before: {failed_before})"
            );
        }
    }
}
