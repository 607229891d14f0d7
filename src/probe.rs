//! Probing: `INFO replication` on every instance, each on its own task and connection, each
//! bounded by its own timeout, so a hung instance never delays the others.
//!
//! Every failure mode is a typed [`ProbeError`]: a refused connection (process gone) is
//! told apart from a timeout (process hung), bad credentials, `-LOADING`, a non-Redis peer
//! and an INFO reply that could not be understood.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError, aio::MultiplexedConnection};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    config::{RedisConfig, RedisSettings},
    info::{self, ReplicationInfo},
    metrics::Metrics,
    observe::{Observation, ObservationStore, ProbeError, ProbeErrorKind},
    topology::{Addr, Topology},
    wire,
};

/// Opens a connection: TCP, TLS when configured, `AUTH`, all within `timeout`, with
/// `timeout` as the per-command response timeout too (redis-rs' defaults, 1 s and 500 ms,
/// are too slow for a 100 ms poller). Every reply on it is capped (see [`crate::wire`]).
pub async fn connect(
    addr: &Addr,
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<MultiplexedConnection, ProbeError> {
    let mut redis_settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(user) = &settings.username {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis_settings = redis_settings.set_password(password.expose());
    }
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    let attempt = async {
        let stream = wire::open(&addr.host, addr.port, settings.tls.as_ref()).await.map_err(|e| match e {
            wire::OpenError::Io(e) => classify(&RedisError::from(e)),
            wire::OpenError::Tls(message) => ProbeError::new(ProbeErrorKind::Tls, message),
        })?;
        let (connection, driver) =
            MultiplexedConnection::new_with_config(&redis_settings, stream, config).await.map_err(|e| classify(&e))?;
        // The driver ends when the last handle to the connection is dropped.
        tokio::spawn(driver);
        Ok(connection)
    };
    // Name resolution, TCP, TLS and `AUTH` together, within one `timeout`.
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::new(ProbeErrorKind::Timeout, "connect timed out")),
    }
}

/// Maps a redis-rs error onto the kinds the controller reasons about.
pub fn classify(error: &RedisError) -> ProbeError {
    use redis::ErrorKind;
    let code = error.code().unwrap_or("");
    let text = error.to_string();
    let kind = if error.is_connection_refusal() {
        ProbeErrorKind::Refused
    } else if error.is_timeout() {
        ProbeErrorKind::Timeout
    } else if text.contains(wire::OVERSIZED) {
        ProbeErrorKind::Oversized
    } else if matches!(error.kind(), ErrorKind::AuthenticationFailed)
        || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
    {
        ProbeErrorKind::Auth
    } else if code == "LOADING" {
        ProbeErrorKind::Loading
    } else if text.contains("unknown command") {
        // `rename-command REPLICAOF ""` and friends.
        ProbeErrorKind::UnknownCommand
    } else if matches!(error.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        ProbeErrorKind::Protocol
    } else if error.is_io_error() || error.is_connection_dropped() {
        ProbeErrorKind::Io
    } else {
        ProbeErrorKind::Redis
    };
    ProbeError::new(kind, text)
}

/// One instance's connection, re-established after any failure.
pub struct Prober {
    addr: Addr,
    auth: RedisSettings,
    timeout: Duration,
    connection: Option<MultiplexedConnection>,
}

impl Prober {
    pub fn new(addr: Addr, auth: RedisSettings, timeout: Duration) -> Self {
        Prober { addr, auth, timeout, connection: None }
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
            let connection = connect(&self.addr, &self.auth, self.timeout).await?;
            self.connection = Some(connection);
        }
        let connection = self.connection.as_mut().expect("connected above");
        let text: String =
            redis::cmd("INFO").arg("replication").query_async(connection).await.map_err(|e| classify(&e))?;
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

/// Spawns one poller task per instance on `tracker`; they stop when `token` is cancelled.
pub fn spawn_pollers(
    topology: &Topology,
    settings: &PollSettings,
    store: &ObservationStore,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    token: &CancellationToken,
) {
    for (id, instance) in topology.instances.iter().enumerate() {
        let mut prober = Prober::new(instance.addr.clone(), settings.redis.instance(id).clone(), settings.timeout);
        let addr = instance.addr.clone();
        let interval = settings.interval;
        let store = store.clone();
        let metrics = metrics.clone();
        let token = token.clone();
        tracker.spawn(async move {
            let mut last_kind = None;
            loop {
                let started = Instant::now();
                let outcome = tokio::select! {
                    outcome = prober.probe() => outcome,
                    _ = token.cancelled() => return,
                };
                let latency = started.elapsed();
                let kind = outcome.as_ref().err().map(|e| e.kind);
                if kind != last_kind {
                    match &outcome {
                        Err(e) => warn!(instance = %addr, kind = e.kind.label(), error = %e.message, "probe of {addr} failed: {e}"),
                        Ok(_) => info!(instance = %addr, "{addr} answers INFO again"),
                    }
                    last_kind = kind;
                }
                metrics.record_probe(id, latency, outcome.as_ref().err());
                store.record(id, started, latency, outcome);
                tokio::select! {
                    _ = tokio::time::sleep_until((started + interval).into()) => {}
                    _ = token.cancelled() => return,
                }
            }
        });
    }
}

/// Probes every instance once, concurrently (for `status`, `failover` and verification).
pub async fn probe_all(topology: &Topology, redis: &RedisConfig, timeout: Duration) -> Observation {
    let probes = topology.instances.iter().enumerate().map(|(id, instance)| {
        let mut prober = Prober::new(instance.addr.clone(), redis.instance(id).clone(), timeout);
        async move {
            let started = Instant::now();
            let outcome = prober.probe().await;
            (started, started.elapsed(), outcome)
        }
    });
    let results = futures::future::join_all(probes).await;
    let mut observation = Observation::new(topology.instances.len());
    for (id, (started, latency, outcome)) in results.into_iter().enumerate() {
        observation.instances[id].record(started, latency, outcome);
    }
    observation
}

/// Probes one instance once with a fresh connection (actions re-read state right before
/// they change it).
pub async fn probe_once(addr: &Addr, auth: &RedisSettings, timeout: Duration) -> Result<ReplicationInfo, ProbeError> {
    Prober::new(addr.clone(), auth.clone(), timeout).probe().await
}
