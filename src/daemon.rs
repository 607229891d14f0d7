//! The one place where the process is assembled, as kube-rs' controller-rs does in `main` and
//! mini-redis in `server::run`: [`Daemon::start`] loads the state file, binds the listeners
//! (so a port clash is a start-up error, not a log line) and starts every task;
//! [`Daemon::run_until`] supervises them and stops them. `roomguard run`, `roomguard lab`,
//! the integration tests and the benchmark all start the controller through it.
//!
//! The tasks ([`Task`]), all critical:
//!
//! | task | what | ends |
//! |---|---|---|
//! | poller | probes every instance ([`crate::probe::poller`]) | at shutdown |
//! | loop | decides and acts ([`crate::controller`]) | at shutdown, after its round |
//! | http | `/healthz`, `/metrics`, `/topology`, the admin API ([`crate::http`]) | at shutdown |
//! | sentinel | the Sentinel-compatible endpoint, when configured ([`crate::sentinel`]) | at shutdown |
//! | hooks | `[[hook]]` runs (the hooks SIGHUP reloads) ([`crate::hooks`]) | at shutdown |
//! | audit | Redis settings and ping periods ([`crate::audit`]) | at shutdown |
//! | coordination | with `[coordination]`: the etcd lease and watch ([`crate::coordination`]) | at shutdown |
//! | fence | with `[coordination] room`: fences the room when it loses the quorum ([`crate::fence`]) | at shutdown |
//! | reload | `roomguard run`: re-reads the config file at every SIGHUP ([`crate::reload`]) | at shutdown |
//!
//! A discovery-only controller (`[coordination] role = "discovery"`) runs no poller, loop,
//! audit or fence: its "loop" is [`crate::follower`], fed by the etcd watch.
//!
//! **Supervision.** A task that ends before shutdown was asked for (it returned, or it
//! panicked) leaves the controller blind or mute: a dead poller would freeze the last
//! picture, a dead loop would never fail over. Rather than run on crippled, the daemon logs
//! which task ended and how, stops the others (the loop's round in progress finishes) and
//! [`Daemon::run_until`] returns [`DaemonError::TaskEnded`]; `roomguard run` then exits with
//! [`crate::cli::EXIT_TASK_FAILED`] and systemd (`Restart=always`) starts it again. That is
//! safe because every decision is in the state file before it is acted on, and every action
//! is conditioned on what Redis says now. A task that is alive but stuck does not end; the
//! heartbeats of [`crate::health`] catch that (`/healthz` 503, alert `RoomguardLoopStalled`;
//! under systemd, the loop's stops the watchdog pings of [`crate::notify`]).
//!
//! Shutdown order: the loop first (no new action; the round in flight finishes), then
//! everything else, then the work that must not be cut short (an admin-API failover, a hook
//! run in progress, both on [`Shared::tasks`]), and last the etcd session, which revokes the
//! lease: another controller may act at once, and nothing here acts any more.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    task::{AbortHandle, JoinError, JoinHandle, JoinSet},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    audit,
    config::Config,
    controller::{self, Controller, Shared},
    health::Heartbeat,
    hooks, http,
    metrics::Metrics,
    observe::ObservationStore,
    probe::{self, PollSettings},
    sentinel::{self, Discovery},
    state::{self, State, StateError},
};

/// The supervised tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Poller,
    Loop,
    Http,
    Sentinel,
    Hooks,
    Audit,
    Coordination,
    Fence,
    Reload,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Poller => "poller",
            Task::Loop => "control loop",
            Task::Http => "HTTP server",
            Task::Sentinel => "Sentinel endpoint",
            Task::Hooks => "hook runner",
            Task::Audit => "settings audit",
            Task::Coordination => "etcd session",
            Task::Fence => "room fence",
            Task::Reload => "SIGHUP reloader",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a task ended before it was asked to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Returned,
    Panicked(String),
    /// Aborted through its [`AbortHandle`] (only tests do that).
    Aborted,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Returned => f.write_str("returned"),
            Ended::Panicked(message) => write!(f, "panicked: {message}"),
            Ended::Aborted => f.write_str("was aborted"),
        }
    }
}

impl Ended {
    fn of(joined: Result<(), JoinError>) -> Ended {
        match joined {
            Ok(()) => Ended::Returned,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Ended::Panicked(message)
            }
            Err(_) => Ended::Aborted,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr} ([http] listen): {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("cannot listen on {addr} ([sentinel] listen): {error}")]
    SentinelBind { addr: SocketAddr, error: std::io::Error },
    #[error("[coordination]: {0}")]
    Coordination(String),
    #[error("the {task} ended while the controller was running ({how})")]
    TaskEnded { task: Task, how: Ended },
}

/// After a task failed, how long the others get to stop before [`Daemon::run_until`]
/// returns anyway (a stuck task must not keep a crippled process alive; systemd's
/// `TimeoutStopSec` bounds a normal shutdown the same way).
const FAILURE_GRACE: Duration = Duration::from_secs(10);

/// A started controller: every task running, supervised by [`Daemon::run_until`].
pub struct Daemon {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    sentinel_addr: Option<SocketAddr>,
    /// The loop, apart: it is stopped first and waited for alone.
    control_loop: Option<JoinHandle<()>>,
    stop_loop: CancellationToken,
    /// Every other critical task, and which is which.
    tasks: JoinSet<()>,
    names: Vec<(tokio::task::Id, Task)>,
    aborts: Vec<(Task, AbortHandle)>,
    stop_rest: CancellationToken,
    /// The etcd session, apart like the loop: stopped after everything else ([`Daemon::stop`]).
    session: Option<JoinHandle<()>>,
    stop_session: CancellationToken,
}

impl Daemon {
    /// Loads the state file, binds the HTTP (and Sentinel) listener, and starts every task.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let topology = config.topology.clone();
        let state = State::load(&config.controller.state_file, &topology)?;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|error| DaemonError::Bind { addr: config.http.listen, error })?;
        let http_addr = listener.local_addr().map_err(|error| DaemonError::Bind { addr: config.http.listen, error })?;
        let sentinel_listener = match &config.sentinel {
            Some(s) => {
                Some(sentinel::bind(s).await.map_err(|error| DaemonError::SentinelBind { addr: s.listen, error })?)
            }
            None => None,
        };
        let sentinel_addr = sentinel_listener.as_ref().and_then(|l| l.local_addr().ok());
        info!(
            config = %config.origin,
            http = %http_addr,
            instances = topology.instances.len(),
            state_epoch = ?state.as_ref().map(|s| s.epoch),
            "roomguard controller starting"
        );
        if config.http.admin_token.is_some() && !http_addr.ip().is_loopback() {
            warn!(http = %http_addr, "the admin API is enabled on a non-loopback address: its token travels in clear text");
        }

        let coordination = match &config.coordination {
            Some(settings) => Some(
                crate::coordination::Coordinator::new(settings.clone(), topology.clone())
                    .await
                    .map_err(DaemonError::Coordination)?,
            ),
            None => None,
        };
        let discovery_only =
            config.coordination.as_ref().is_some_and(|c| c.role == crate::coordination::Role::Discovery);
        let store = ObservationStore::new(topology.instances.len());
        let initial = Discovery::initial(
            &topology,
            &state.as_ref().map(|s| s.masters.clone()).unwrap_or_default(),
            config.controller.down_after,
        );
        let shared = Arc::new(Shared {
            tasks: TaskTracker::new(),
            live: tokio::sync::watch::channel(crate::reload::Live::of(&config)).0,
            config,
            action_lock: tokio::sync::Mutex::new(()),
            metrics: Arc::new(Metrics::new(&topology)),
            ready: false.into(),
            report: Default::default(),
            events: tokio::sync::broadcast::channel(controller::EVENT_BUFFER).0,
            discovery: tokio::sync::watch::channel(initial).0,
            rounds: Heartbeat::default(),
            polls: store.ticks().clone(),
            coordination: coordination.clone(),
        });
        if let Some(f) = state.as_ref().and_then(|s| s.last_failover.as_ref()) {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(f.at_unix_ms);
            shared.metrics.restore_last_failover(at, f.took_ms.map(Duration::from_millis));
        }
        // Not fatal: the controller still observes and reports; it cannot take a new decision
        // until the file can be written, and says so (log, metric, alert).
        if discovery_only {
            // Nothing to write: a discovery-only controller decides nothing.
        } else if let Err(e) = state::check_writable(&shared.config.controller.state_file) {
            error!(error = %e, "the state file cannot be written: no failover can be decided until it can");
            shared.metrics.record_state_save(false);
        }

        let (stop_loop, stop_rest) = (CancellationToken::new(), CancellationToken::new());
        let mut daemon = Daemon {
            shared: shared.clone(),
            http_addr,
            sentinel_addr,
            control_loop: None,
            stop_loop: stop_loop.clone(),
            tasks: JoinSet::new(),
            names: Vec::new(),
            aborts: Vec::new(),
            stop_rest: stop_rest.clone(),
            session: None,
            stop_session: CancellationToken::new(),
        };
        let c = &shared.config;
        let poll = PollSettings {
            redis: c.redis.clone(),
            timeout: c.controller.timeout,
            interval: c.controller.poll_interval,
        };
        // Every answer reaches the endpoint's view at once (a demotion made elsewhere stops
        // the demoted master being named before the next round).
        let discovery = shared.clone();
        let instances: Vec<_> = topology.instances.iter().map(|i| (i.shard, i.addr.clone())).collect();
        let on_answer = move |id: usize, info: &crate::info::ReplicationInfo| {
            let (shard, addr) = &instances[id];
            discovery.discovery.send_if_modified(|view| view.observe(*shard, addr, info));
        };
        if let Some(coordination) = &coordination {
            // Stopped last (`stop_session`): an admin-API failover still running at shutdown
            // publishes through it, and the lease is revoked only once nothing acts any more.
            let session = tokio::spawn(coordination.clone().run(daemon.stop_session.clone()));
            daemon.aborts.push((Task::Coordination, session.abort_handle()));
            daemon.session = Some(session);
            if coordination.settings.role == crate::coordination::Role::Acting && coordination.settings.room.is_none() {
                warn!(
                    "[coordination] without `room`: this controller fences no room when a partition cuts it \
                     from the quorum (docs/coordination.md#fencing)"
                );
            }
        }
        let control_loop = match &coordination {
            Some(coordination) if discovery_only => {
                info!(name = %coordination.settings.name, "discovery-only: serving the acting controller's view from etcd; no Redis is polled");
                tokio::spawn(crate::follower::run(coordination.clone(), shared.clone(), stop_loop))
            }
            _ => {
                daemon.spawn(
                    Task::Poller,
                    probe::poller(&topology, &poll, &store, &shared.metrics, &stop_rest, on_answer),
                );
                if let Some((coordination, room)) =
                    coordination.as_ref().and_then(|k| k.settings.room.map(|room| (k.clone(), room)))
                {
                    let fence = crate::fence::run(
                        coordination,
                        c.clone(),
                        room,
                        store.clone(),
                        shared.metrics.clone(),
                        stop_rest.clone(),
                    );
                    daemon.spawn(Task::Fence, fence);
                }
                daemon.spawn(
                    Task::Audit,
                    audit::run(c.clone(), shared.metrics.clone(), store.clone(), stop_rest.clone()),
                );
                tokio::spawn(Controller::new(shared.clone(), state).run(store, stop_loop))
            }
        };
        daemon.aborts.push((Task::Loop, control_loop.abort_handle()));
        daemon.control_loop = Some(control_loop);
        daemon.spawn(Task::Http, http::serve(listener, shared.clone(), stop_rest.clone()));
        let nofile = sentinel::raise_nofile_limit();
        if let (Some(listener), Some(settings)) = (sentinel_listener, &c.sentinel) {
            let serve = sentinel::serve(
                listener,
                settings.clone().fitted(nofile, topology.instances.len()),
                shared.discovery.subscribe(),
                shared.events.clone(),
                shared.metrics.clone(),
                stop_rest.clone(),
            );
            daemon.spawn(Task::Sentinel, serve);
        }
        for hook in &c.hooks {
            shared.metrics.create_hook_series(&hook.events);
        }
        if c.sentinel.is_some() {
            shared.metrics.create_sentinel_series();
        }
        // Always running, even with no hook configured: SIGHUP may add some.
        let run = hooks::run(
            shared.live.subscribe(),
            shared.events.subscribe(),
            shared.metrics.clone(),
            shared.tasks.clone(),
            stop_rest.clone(),
        );
        daemon.spawn(Task::Hooks, run);
        Ok(daemon)
    }

    /// `roomguard run`: re-reads the config file at `path` at every SIGHUP of `hangups` and
    /// applies what can change ([`crate::reload`]); whatever happens is logged, and the process
    /// runs on. Supervised like every other task.
    pub fn reload_on_sighup(&mut self, mut hangups: tokio::signal::unix::Signal, path: PathBuf, log_from_cli: bool) {
        let (shared, stop) = (self.shared.clone(), self.stop_rest.clone());
        self.spawn(Task::Reload, async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    hangup = hangups.recv() => {
                        if hangup.is_none() {
                            break;
                        }
                        info!(config = %path.display(), "SIGHUP: reloading the configuration");
                        crate::reload::reload(&shared.config, &shared.live, &shared.metrics, Config::load(&path), log_from_cli);
                    }
                }
            }
        });
    }

    fn spawn(&mut self, task: Task, future: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(future);
        self.names.push((handle.id(), task));
        self.aborts.push((task, handle));
    }

    fn task(&self, id: tokio::task::Id) -> Task {
        self.names.iter().find(|(i, _)| *i == id).map_or(Task::Loop, |(_, t)| *t)
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the Sentinel-compatible endpoint listens, when `[sentinel]` is configured.
    pub fn sentinel_addr(&self) -> Option<SocketAddr> {
        self.sentinel_addr
    }

    /// A handle that aborts one task, to check in tests that its death is noticed. Nothing in
    /// roomguard calls it.
    pub fn abort_handle(&self, task: Task) -> Option<AbortHandle> {
        self.aborts.iter().find(|(t, _)| *t == task).map(|(_, h)| h.clone())
    }

    /// Supervises the tasks until `shutdown` completes (then stops them in order and returns
    /// `Ok`) or a task ends on its own (then logs it, stops the others and returns
    /// [`DaemonError::TaskEnded`]).
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let mut control_loop = self.control_loop.take().expect("set by start");
        let mut session = self.session.take();
        let session_ended = async {
            match session.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        let failure = tokio::select! {
            _ = shutdown => None,
            joined = &mut control_loop => Some((Task::Loop, Ended::of(joined))),
            joined = session_ended => Some((Task::Coordination, Ended::of(joined))),
            Some(joined) = self.tasks.join_next_with_id() => Some(match joined {
                Ok((id, ())) => (self.task(id), Ended::Returned),
                Err(e) => (self.task(e.id()), Ended::of(Err(e))),
            }),
        };
        crate::notify::stopping();
        let loop_done = matches!(failure, Some((Task::Loop, _)));
        // A session that ended is not awaited again.
        let session = if matches!(failure, Some((Task::Coordination, _))) { None } else { session };
        let failure = failure.map(|(task, how)| DaemonError::TaskEnded { task, how });
        match &failure {
            None => info!("shutting down: no new actions; stopping the loop, then the other tasks"),
            Some(e) => error!(
                error = %e,
                "{e}: stopping the controller; it exits non-zero so that its supervisor (systemd) restarts it \
                 (safe: decisions are in the state file before they are acted on)"
            ),
        }
        let stop = self.stop(control_loop, loop_done, session);
        match failure {
            None => match stop.await {
                Some(e) => Err(e),
                None => Ok(()),
            },
            Some(e) => {
                if tokio::time::timeout(FAILURE_GRACE, stop).await.is_err() {
                    warn!("some tasks did not stop within {FAILURE_GRACE:?}; leaving them");
                }
                Err(e)
            }
        }
    }

    /// Stops the loop (its round finishes), then everything else; returns the first task that
    /// panicked meanwhile.
    async fn stop(
        mut self,
        control_loop: JoinHandle<()>,
        loop_done: bool,
        session: Option<JoinHandle<()>>,
    ) -> Option<DaemonError> {
        let mut panicked = None;
        self.stop_loop.cancel();
        if !loop_done && let how @ Ended::Panicked(_) = Ended::of(control_loop.await) {
            panicked = Some(DaemonError::TaskEnded { task: Task::Loop, how });
        }
        self.stop_rest.cancel();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let Err(e) = joined else { continue };
            let task = self.task(e.id());
            if let how @ Ended::Panicked(_) = Ended::of(Err(e)) {
                error!(task = task.name(), "the {task} {how} while stopping");
                panicked.get_or_insert(DaemonError::TaskEnded { task, how });
            }
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.stop_session.cancel();
        if let Some(session) = session
            && let how @ Ended::Panicked(_) = Ended::of(session.await)
        {
            error!("the etcd session {how} while stopping");
            panicked.get_or_insert(DaemonError::TaskEnded { task: Task::Coordination, how });
        }
        info!("stopped");
        panicked
    }
}

/// Starts the controller and supervises it until `shutdown` completes or a task fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    Daemon::start(config).await?.run_until(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn how_a_task_ended_is_told_apart() {
        let panicked = tokio::spawn(async { panic!("the poller broke") }).await;
        assert_eq!(Ended::of(panicked), Ended::Panicked("the poller broke".into()));
        let code = 7;
        let formatted = tokio::spawn(async move { panic!("code {code}") }).await;
        assert_eq!(Ended::of(formatted), Ended::Panicked("code 7".into()));
        assert_eq!(Ended::of(tokio::spawn(async {}).await), Ended::Returned);
        let forever = tokio::spawn(std::future::pending::<()>());
        forever.abort();
        assert_eq!(Ended::of(forever.await), Ended::Aborted);
        let e = DaemonError::TaskEnded { task: Task::Poller, how: Ended::Panicked("boom".into()) };
        assert_eq!(e.to_string(), "the poller ended while the controller was running (panicked: boom)");
    }
}
