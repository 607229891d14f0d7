//! Acting: the commands that change Redis, each conditioned on a fresh read of the instance
//! it changes, and each safe to repeat.
//!
//! Several controllers may run at once (one beside each app server). Two that decide the
//! same thing send the same idempotent command (`REPLICAOF host port` to the parent it
//! already has is a no-op in Redis; `REPLICAOF NO ONE` on a master is too). The fresh read
//! makes a stale plan harmless: a promotion is sent only if the instance is still a replica
//! that does not hear its master, a demotion only if it is still a master.
//!
//! A command that times out may or may not have taken effect (notably `REPLICAOF NO ONE`):
//! nothing here retries blindly; the next round re-reads the role and decides again.
//!
//! Versions: `REPLICAOF` came with Redis 5.0; older versions (and servers that renamed it)
//! only know `SLAVEOF`. An instance that answers "unknown command" to one name gets the other
//! (nothing ran, so the retry is safe), and the name that worked is remembered per instance.
//! Stopping writes for a switchover is a [`WriteFence`]: `CLIENT PAUSE WRITE` since 6.2,
//! `min-slaves-to-write` before.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant, SystemTime},
};

use redis::aio::MultiplexedConnection;

use crate::{
    config::{RedisConfig, RedisSettings},
    detect::Hearing,
    dial::{classify, connect},
    info::{self, ReplicationInfo, Role},
    observe::{ProbeError, ProbeErrorKind},
    plan::Action,
    topology::{Addr, Topology},
    version::ServerVersion,
};

/// The two names of the replication command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplicaofName {
    Replicaof,
    Slaveof,
}

impl ReplicaofName {
    fn as_str(self) -> &'static str {
        match self {
            ReplicaofName::Replicaof => "REPLICAOF",
            ReplicaofName::Slaveof => "SLAVEOF",
        }
    }

    fn other(self) -> Self {
        match self {
            ReplicaofName::Replicaof => ReplicaofName::Slaveof,
            ReplicaofName::Slaveof => ReplicaofName::Replicaof,
        }
    }
}

/// Per instance, the name of the replication command that worked last (process-wide: every
/// action opens a fresh connection).
static REPLICAOF_NAMES: LazyLock<Mutex<HashMap<Addr, ReplicaofName>>> = LazyLock::new(Default::default);

/// Per instance, when this process last closed its client connections (a promotion or a
/// demotion): the pollers' connections are among them, and the probe failure that follows is
/// our own doing, not news (see [`disconnected_by_us`]).
static OWN_DISCONNECTS: LazyLock<Mutex<HashMap<Addr, Instant>>> = LazyLock::new(Default::default);

/// How long after closing an instance's clients a probe's connection error is put down to it.
const OWN_DISCONNECT_WINDOW: Duration = Duration::from_secs(10);

fn note_own_disconnect(addr: &Addr) {
    if let Ok(mut at) = OWN_DISCONNECTS.lock() {
        at.insert(addr.clone(), Instant::now());
    }
}

/// This process closed `addr`'s client connections within the last few seconds: a dropped
/// probe connection there is expected (logged at debug level).
pub fn disconnected_by_us(addr: &Addr) -> bool {
    OWN_DISCONNECTS
        .lock()
        .ok()
        .and_then(|at| at.get(addr).copied())
        .is_some_and(|t| t.elapsed() < OWN_DISCONNECT_WINDOW)
}

fn unknown_command(error: &ActError) -> bool {
    matches!(error, ActError::Command { error, .. } if error.kind == ProbeErrorKind::UnknownCommand)
}

/// How a master's clients were stopped from writing for a graceful switchover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFence {
    /// `CLIENT PAUSE ms WRITE` (Redis >= 6.2, Valkey): writes wait, reads and replication go
    /// on; lifted with `CLIENT UNPAUSE`, and it expires by itself if the controller dies.
    PauseWrite,
    /// Redis < 6.2: `min-slaves-to-write` raised to a count no master reaches ([`FenceMark`]),
    /// so that every write command fails at once with `NOREPLICAS` while reads go on; the
    /// previous values are restored afterwards. Not `CLIENT PAUSE` (3.0 to 6.0): there it also
    /// blocks the controller's own commands on that master and cannot be lifted early, so the
    /// old master could not be demoted before the clients' queued writes ran on it. Unlike a
    /// pause this does not expire in Redis: the value carries a lease instead, and a fence
    /// whose lease has run out (its controller died) is lifted by any controller's settings
    /// audit. Lua scripts are not checked by these versions, nor is an `EXEC` whose writes were
    /// queued before the fence (only commands as they arrive are).
    MinReplicas { to_write: String, max_lag: String },
}

/// roomguard's write fence as a `min-slaves-to-write` value: every value from
/// [`FenceMark::MIN`] (a million replicas, which no master has) is roomguard's. From
/// [`FenceMark::LEASED_BASE`] on, the value also says until when its owner holds it: the
/// seconds since [`FenceMark::LEASE_EPOCH`], so that a fence left by a controller that died
/// can be told from one in force without knowing who set it. Redis keeps the setting in a C
/// `int`: the lease's seconds run out in 2058, after which the value saturates (a fence that
/// never expires, lifted by hand or by a promotion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceMark {
    /// Held until this time (plus [`FenceMark::GRACE`] for the clocks of other hosts).
    Leased(SystemTime),
    /// A fence without a lease (`1000000`, set by roomguard before leases).
    Unleased,
}

impl FenceMark {
    const MIN: i64 = 1_000_000;
    const LEASED_BASE: i64 = 1_000_000_000;
    /// 2024-01-01T00:00:00Z.
    const LEASE_EPOCH: u64 = 1_704_067_200;
    /// How long after its lease a fence is still taken to be in force: the hosts' clocks may
    /// differ by this much.
    pub const GRACE: Duration = Duration::from_secs(30);

    /// The mark a `min-slaves-to-write` value carries, if it is roomguard's.
    pub fn parse(value: &str) -> Option<FenceMark> {
        let n: i64 = value.trim().parse().ok()?;
        if n < Self::MIN {
            None
        } else if n < Self::LEASED_BASE {
            Some(FenceMark::Unleased)
        } else {
            let secs = Self::LEASE_EPOCH + (n - Self::LEASED_BASE) as u64;
            Some(FenceMark::Leased(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
        }
    }

    /// The `min-slaves-to-write` value of a fence held until `until` (rounded up to the second).
    pub fn value(until: SystemTime) -> String {
        let since_epoch = until.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
        let lease = secs.saturating_sub(Self::LEASE_EPOCH) as i64;
        (Self::LEASED_BASE + lease).min(i64::from(i32::MAX)).to_string()
    }

    /// The fence is left over: its lease ran out more than [`FenceMark::GRACE`] ago, or it has
    /// none and was already there at the previous look (`seen_before`), at least a settings
    /// audit earlier: longer than any switchover of an older roomguard takes.
    pub fn left_over(self, now: SystemTime, seen_before: bool) -> bool {
        match self {
            FenceMark::Leased(until) => until + Self::GRACE < now,
            FenceMark::Unleased => seen_before,
        }
    }
}

/// What [`Node::fence_writes`] does when it finds a roomguard fence in force (its lease not
/// run out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InForce {
    /// Refuse: another switchover, or a partitioned room's fence, holds it.
    Refuse,
    /// Take it over (a room's fence, which any of the room's controllers may hold).
    TakeOver,
}

impl WriteFence {
    /// What to run by hand if lifting it failed.
    pub fn manual_lift(&self) -> String {
        match self {
            WriteFence::PauseWrite => "CLIENT UNPAUSE (or wait for the pause to expire)".into(),
            WriteFence::MinReplicas { to_write, max_lag } => {
                format!("CONFIG SET min-slaves-to-write {to_write} and CONFIG SET min-slaves-max-lag {max_lag}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    #[error("{addr}: cannot connect: {error}")]
    Connect { addr: Addr, error: ProbeError },
    #[error("{addr}: `{command}` failed: {error}")]
    Command { addr: Addr, command: String, error: ProbeError },
    #[error("{addr}: not done, the instance changed since it was observed: {why}")]
    Changed { addr: Addr, why: String },
    #[error("{addr}: sent, but the result is not verified: {why}")]
    NotVerified { addr: Addr, why: String },
    #[error(
        "{addr}: another write fence is in force (min-slaves-to-write {value}, held until {until}): \
         another switchover is running, or a partitioned room is fenced; nothing changed"
    )]
    FencedElsewhere { addr: Addr, value: String, until: String },
}

impl ActError {
    /// The metric outcome: `skipped` when a fresh read showed the plan was stale (nothing
    /// was sent), `failed` otherwise.
    pub fn outcome(&self) -> &'static str {
        match self {
            ActError::Changed { .. } => "skipped",
            _ => "failed",
        }
    }
}

/// What an action did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command was sent and took effect.
    Done,
    /// The fresh read showed the change was already made (by us earlier, or by someone else).
    AlreadyDone,
}

/// One connection to one instance, for commands that change it.
pub struct Node {
    pub addr: Addr,
    connection: MultiplexedConnection,
}

impl Node {
    pub async fn connect(addr: &Addr, auth: &RedisSettings, timeout: Duration) -> Result<Node, ActError> {
        let connection =
            connect(addr, auth, timeout).await.map_err(|error| ActError::Connect { addr: addr.clone(), error })?;
        Ok(Node { addr: addr.clone(), connection })
    }

    async fn run<T: redis::FromRedisValue>(&mut self, cmd: &mut redis::Cmd, text: &str) -> Result<T, ActError> {
        cmd.query_async(&mut self.connection).await.map_err(|e| ActError::Command {
            addr: self.addr.clone(),
            command: text.to_string(),
            error: classify(&e),
        })
    }

    pub async fn info(&mut self) -> Result<ReplicationInfo, ActError> {
        let text: String = self.run(redis::cmd("INFO").arg("replication"), "INFO replication").await?;
        info::parse(&text).map_err(|e| ActError::Command {
            addr: self.addr.clone(),
            command: "INFO replication".into(),
            error: ProbeError::new(ProbeErrorKind::Info, e.to_string()),
        })
    }

    /// `master_repl_offset`: the offset of the stream this instance sends its own replicas.
    /// Before Redis 4.0 a replica numbers that stream itself (it forwards its master's writes
    /// but sends its own pings), so offsets compare only between the two ends of one link.
    pub async fn own_stream_offset(&mut self) -> Result<i64, ActError> {
        let text: String = self.run(redis::cmd("INFO").arg("replication"), "INFO replication").await?;
        let value = text.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix("master_repl_offset:"));
        value.and_then(|v| v.trim().parse().ok()).ok_or_else(|| ActError::Command {
            addr: self.addr.clone(),
            command: "INFO replication".into(),
            error: ProbeError::new(ProbeErrorKind::Info, "no usable master_repl_offset"),
        })
    }

    /// `CONFIG GET parameter`: its value, `None` when the server does not know it.
    pub async fn config_get(&mut self, parameter: &str) -> Result<Option<String>, ActError> {
        let pairs: Vec<String> =
            self.run(redis::cmd("CONFIG").arg("GET").arg(parameter), &format!("CONFIG GET {parameter}")).await?;
        Ok(pairs.into_iter().nth(1))
    }

    /// `REPLICAOF NO ONE` (`None`) or `REPLICAOF host port`; `SLAVEOF` where `REPLICAOF` is
    /// unknown (Redis < 5.0, or renamed), and the name that worked is remembered.
    pub async fn replicaof(&mut self, master: Option<&Addr>) -> Result<(), ActError> {
        let remembered = REPLICAOF_NAMES.lock().ok().and_then(|names| names.get(&self.addr).copied());
        let first = remembered.unwrap_or(ReplicaofName::Replicaof);
        let name = match self.replicaof_as(first, master).await {
            Err(unknown @ ActError::Command { .. }) if unknown_command(&unknown) => {
                match self.replicaof_as(first.other(), master).await {
                    Ok(()) => first.other(),
                    // Both names disabled: report the first.
                    Err(e) if unknown_command(&e) => return Err(unknown),
                    Err(e) => return Err(e),
                }
            }
            other => other.map(|()| first)?,
        };
        if remembered != Some(name)
            && let Ok(mut names) = REPLICAOF_NAMES.lock()
        {
            names.insert(self.addr.clone(), name);
        }
        Ok(())
    }

    async fn replicaof_as(&mut self, name: ReplicaofName, master: Option<&Addr>) -> Result<(), ActError> {
        let command = name.as_str();
        match master {
            None => self.run::<()>(redis::cmd(command).arg("NO").arg("ONE"), &format!("{command} NO ONE")).await,
            Some(m) => {
                let text = format!("{command} {} {}", m.host, m.port);
                self.run::<()>(redis::cmd(command).arg(&m.host).arg(m.port), &text).await
            }
        }
    }

    /// The server's version from `INFO server` (`None` when it does not say).
    pub async fn server_version(&mut self) -> Result<Option<ServerVersion>, ActError> {
        let text: String = self.run(redis::cmd("INFO").arg("server"), "INFO server").await?;
        Ok(ServerVersion::from_info(&text))
    }

    /// Stops clients' writes for a switchover, the way `version` allows (see [`WriteFence`]).
    /// The fence lasts at most `hold_for` (a pause expires then; a `min-slaves-to-write` fence's
    /// lease runs out, see [`FenceMark`]). An unknown version is treated as a recent one. A
    /// roomguard fence already in place is replaced if it is left over; if it is in force,
    /// `in_force` decides.
    pub async fn fence_writes(
        &mut self,
        version: Option<ServerVersion>,
        hold_for: Duration,
        in_force: InForce,
    ) -> Result<WriteFence, ActError> {
        if version.is_none_or(|v| v.has_pause_write()) {
            self.renew_fence(&WriteFence::PauseWrite, hold_for).await?;
            return Ok(WriteFence::PauseWrite);
        }
        let mut to_write = self.config_get("min-slaves-to-write").await?.unwrap_or_else(|| "0".into());
        if let Some(mark) = FenceMark::parse(&to_write) {
            let in_force_until = match mark {
                FenceMark::Leased(until) if !mark.left_over(SystemTime::now(), false) => Some(until),
                _ => None,
            };
            if let (Some(until), InForce::Refuse) = (in_force_until, in_force) {
                return Err(ActError::FencedElsewhere {
                    addr: self.addr.clone(),
                    value: to_write,
                    until: humantime::format_rfc3339_seconds(until).to_string(),
                });
            }
            // The value to restore is not this one but Redis' default.
            if in_force_until.is_none() {
                tracing::warn!(instance = %self.addr, value = %to_write, "a write fence left in place (min-slaves-to-write {to_write}): replaced, and 0 restored afterwards");
            }
            to_write = "0".into();
        }
        let max_lag = self.config_get("min-slaves-max-lag").await?.unwrap_or_else(|| "10".into());
        let fence = WriteFence::MinReplicas { to_write, max_lag: max_lag.clone() };
        // The check is off while min-slaves-max-lag is 0.
        if max_lag.trim() == "0" {
            self.config_set("min-slaves-max-lag", "10").await?;
        }
        if let Err(e) = self.renew_fence(&fence, hold_for).await {
            let _ = self.lift_fence(&fence).await;
            return Err(e);
        }
        Ok(fence)
    }

    /// Holds a fence for `hold_for` from now: a pause is set again, a `min-slaves-to-write`
    /// fence's lease moved on.
    pub async fn renew_fence(&mut self, fence: &WriteFence, hold_for: Duration) -> Result<(), ActError> {
        match fence {
            WriteFence::PauseWrite => {
                let ms = hold_for.as_millis().max(1) as u64;
                self.run::<()>(redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE"), "CLIENT PAUSE WRITE").await
            }
            WriteFence::MinReplicas { .. } => {
                self.config_set("min-slaves-to-write", &FenceMark::value(SystemTime::now() + hold_for)).await
            }
        }
    }

    /// Lifts a roomguard fence found with `min-slaves-to-write` `found` (read just before) if
    /// it is still the value there: `min-slaves-to-write` back to `to_write`, and
    /// `min-slaves-max-lag` to `max_lag` when known. `false` when the value changed meanwhile
    /// (someone renewed or lifted it): nothing is done. Redis has no compare-and-set for a
    /// setting, so this narrows the race to one round trip.
    pub async fn lift_left_over_fence(
        &mut self,
        found: &str,
        to_write: &str,
        max_lag: Option<&str>,
    ) -> Result<bool, ActError> {
        if self.config_get("min-slaves-to-write").await?.as_deref().map(str::trim) != Some(found.trim()) {
            return Ok(false);
        }
        self.config_set("min-slaves-to-write", to_write).await?;
        if let Some(max_lag) = max_lag {
            self.config_set("min-slaves-max-lag", max_lag).await?;
        }
        Ok(true)
    }

    /// Lets writes through again after [`Self::fence_writes`].
    pub async fn lift_fence(&mut self, fence: &WriteFence) -> Result<(), ActError> {
        match fence {
            WriteFence::PauseWrite => self.run::<()>(redis::cmd("CLIENT").arg("UNPAUSE"), "CLIENT UNPAUSE").await,
            WriteFence::MinReplicas { to_write, max_lag } => {
                self.config_set("min-slaves-to-write", to_write).await?;
                self.config_set("min-slaves-max-lag", max_lag).await
            }
        }
    }

    async fn config_set(&mut self, parameter: &str, value: &str) -> Result<(), ActError> {
        let text = format!("CONFIG SET {parameter} {value}");
        self.run::<()>(redis::cmd("CONFIG").arg("SET").arg(parameter).arg(value), &text).await
    }

    /// `CLIENT KILL TYPE normal` (our own connection is skipped) and `CLIENT KILL TYPE pubsub`:
    /// after a demotion, so that clients still connected to the old master (subscribers too)
    /// reconnect and rediscover the new one, as Sentinel does. Returns how many connections
    /// were closed.
    pub async fn kill_clients(&mut self) -> Result<i64, ActError> {
        note_own_disconnect(&self.addr);
        let normal: i64 =
            self.run(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal"), "CLIENT KILL TYPE normal").await?;
        let pubsub: i64 =
            self.run(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"), "CLIENT KILL TYPE pubsub").await?;
        Ok(normal + pubsub)
    }

    /// Demotes this master to a replica of `master` as Sentinel reconfigures an instance:
    /// `MULTI; REPLICAOF host port; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub; EXEC`.
    /// No client connection ever sees it as a replica: a write held by a pause is dropped with
    /// its connection instead of failing with `READONLY` (Redis checks `READONLY` before the
    /// pause), and clients reconnect to rediscover the master.
    pub async fn demote(&mut self, master: &Addr) -> Result<(), ActError> {
        self.replicaof_and_disconnect(Some(master)).await
    }

    /// `REPLICAOF` (`None`: `NO ONE`) and the closing of every normal and Pub/Sub client, in one
    /// transaction (see [`Self::promote`] for the fallbacks).
    async fn replicaof_and_disconnect(&mut self, master: Option<&Addr>) -> Result<(), ActError> {
        let remembered = REPLICAOF_NAMES.lock().ok().and_then(|names| names.get(&self.addr).copied());
        let first = remembered.unwrap_or(ReplicaofName::Replicaof);
        note_own_disconnect(&self.addr);
        let done = match self.replicaof_in_transaction(first, master).await {
            Err(e) if unknown_command(&e) => match self.replicaof_in_transaction(first.other(), master).await {
                Ok(()) => {
                    if let Ok(mut names) = REPLICAOF_NAMES.lock() {
                        names.insert(self.addr.clone(), first.other());
                    }
                    Ok(())
                }
                Err(other) if unknown_command(&other) => Err(e),
                Err(other) => Err(other),
            },
            Ok(()) => {
                if remembered.is_none()
                    && let Ok(mut names) = REPLICAOF_NAMES.lock()
                {
                    names.insert(self.addr.clone(), first);
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let refused = matches!(&e, ActError::Command { error, .. } if error.kind == ProbeErrorKind::Auth);
            if !unknown_command(&e) && !refused {
                return Err(e);
            }
            // Both names of the transaction were refused (`CLIENT` or `MULTI` renamed), or an
            // ACL without `+multi +exec`: one command after the other (all idempotent).
            self.replicaof(master).await?;
            if let Err(e) = self.kill_clients().await {
                tracing::warn!(instance = %self.addr, error = %e, "its role changed, but its clients could not be disconnected");
            }
        }
        Ok(())
    }

    /// One `MULTI ... EXEC` for [`Self::replicaof_and_disconnect`], sent command by command (a refused `MULTI`
    /// queues nothing, and a refused queued command is followed by `DISCARD`: nothing runs). A
    /// `CLIENT KILL TYPE` the server does not understand (Redis < 2.8.12) fails alone inside
    /// `EXEC` and is ignored, as Sentinel does.
    async fn replicaof_in_transaction(&mut self, name: ReplicaofName, master: Option<&Addr>) -> Result<(), ActError> {
        let command = name.as_str();
        let target = master.map_or_else(|| "NO ONE".to_string(), |m| format!("{} {}", m.host, m.port));
        let text = format!("MULTI; {command} {target}; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub; EXEC");
        self.run::<()>(&mut redis::cmd("MULTI"), &text).await?;
        let mut replicaof = redis::cmd(command);
        match master {
            None => replicaof.arg("NO").arg("ONE"),
            Some(m) => replicaof.arg(&m.host).arg(m.port),
        };
        let mut kill_normal = redis::cmd("CLIENT");
        kill_normal.arg("KILL").arg("TYPE").arg("normal");
        let mut kill_pubsub = redis::cmd("CLIENT");
        kill_pubsub.arg("KILL").arg("TYPE").arg("pubsub");
        for cmd in [&mut replicaof, &mut kill_normal, &mut kill_pubsub] {
            if let Err(e) = self.run::<redis::Value>(cmd, &text).await {
                let _ = self.run::<redis::Value>(&mut redis::cmd("DISCARD"), "DISCARD").await;
                return Err(e);
            }
        }
        let replies: Vec<redis::Value> = match self.run::<redis::Value>(&mut redis::cmd("EXEC"), &text).await? {
            redis::Value::Array(replies) => replies,
            other => vec![other],
        };
        let failed = |v: &redis::Value| match v {
            redis::Value::ServerError(e) => Some(e.to_string()),
            _ => None,
        };
        if let Some(why) = replies.first().and_then(failed) {
            let kind =
                if why.contains("unknown command") { ProbeErrorKind::UnknownCommand } else { ProbeErrorKind::Redis };
            return Err(ActError::Command {
                addr: self.addr.clone(),
                command: text,
                error: ProbeError::new(kind, why),
            });
        }
        for why in replies.iter().skip(1).filter_map(failed) {
            tracing::debug!(instance = %self.addr, error = %why, "CLIENT KILL TYPE refused inside the transaction");
        }
        Ok(())
    }

    fn changed(&self, why: impl Into<String>) -> ActError {
        ActError::Changed { addr: self.addr.clone(), why: why.into() }
    }

    /// Promotes a replica that no longer hears its master, then verifies the new role. The
    /// evidence the plan was made on is re-checked on a fresh read: a link that is down must
    /// still be down, an offset that stood still must not have moved, a whole-second silence
    /// must not have shrunk.
    pub async fn promote_if_orphaned(&mut self, because: Hearing) -> Result<Applied, ActError> {
        let before = self.info().await?;
        let link = match (&before.role, &before.master) {
            (Role::Master, _) | (_, None) => return Ok(Applied::AlreadyDone),
            (Role::Replica, Some(link)) => link,
        };
        let still_deaf = !link.link_up
            || match because {
                Hearing::Hears | Hearing::LinkDown => false,
                Hearing::Stalled { offset, .. } => link.progress_offset() == offset,
                Hearing::Quiet { seconds } => link.last_io_seconds_ago.is_none_or(|s| s < 0 || s >= seconds),
            };
        if !still_deaf {
            return Err(self.changed("it hears its master again"));
        }
        self.promote().await.map(|()| Applied::Done)
    }

    /// Promotes as Sentinel does: `MULTI; REPLICAOF NO ONE; CLIENT KILL TYPE normal; CLIENT
    /// KILL TYPE pubsub; EXEC`, then a read-back of the role. Closing the clients in the same
    /// transaction means no client that connected to this instance as a replica (redis-py's
    /// `slave_for()`, ioredis' `role: 'slave'`) stays on it once it is a master: they reconnect
    /// and ask the endpoint again. Our own connection is skipped (`SKIPME yes` is the default);
    /// the pollers' connections are closed too, and their next probe reconnects.
    ///
    /// `SLAVEOF` where `REPLICAOF` is unknown (a queued unknown command aborts the whole
    /// transaction, so nothing ran). When `CLIENT` or `MULTI` is renamed away or refused by an
    /// ACL, the promotion and the kill are sent one after the other (a failed kill is logged).
    pub async fn promote(&mut self) -> Result<(), ActError> {
        self.replicaof_and_disconnect(None).await?;
        let after = self.info().await?;
        if after.role != Role::Master {
            return Err(ActError::NotVerified { addr: self.addr.clone(), why: "it still reports role replica".into() });
        }
        self.lift_fence_on_new_master().await;
        Ok(())
    }

    /// A new master must take writes: a roomguard fence on it (left by a switchover that
    /// died after demoting it, or from an earlier life as a fenced master) is lifted whatever
    /// its lease, since the promotion supersedes whoever set it. Best effort: an instance that
    /// refuses `CONFIG` (a minimal ACL user) is left as it is.
    async fn lift_fence_on_new_master(&mut self) {
        let found = match self.config_get("min-slaves-to-write").await {
            Ok(Some(value)) if FenceMark::parse(&value).is_some() => value,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(instance = %self.addr, error = %e, "write fence not checked on the new master");
                return;
            }
        };
        match self.config_set("min-slaves-to-write", "0").await {
            Ok(()) => tracing::warn!(
                instance = %self.addr,
                value = %found,
                "lifted a write fence on the new master {} (min-slaves-to-write {found} -> 0)",
                self.addr
            ),
            Err(e) => tracing::error!(
                instance = %self.addr,
                error = %e,
                "the new master {} has a write fence (min-slaves-to-write {found}) that could not be lifted: it \
                 refuses writes until CONFIG SET min-slaves-to-write 0",
                self.addr
            ),
        }
    }
}

/// Executes one planned action.
pub async fn execute(
    topology: &Topology,
    redis: &RedisConfig,
    timeout: Duration,
    action: &Action,
) -> Result<Applied, ActError> {
    let id = action.instance();
    let result = execute_once(topology, redis, timeout, action).await;
    // Two controllers acting on the same instance race: the first one's `CLIENT KILL` closes the
    // second one's connection under its `REPLICAOF` (a demotion, or a promotion's `MULTI`: two
    // controllers rescuing the same shard), or during its handshake. That command may have taken
    // effect, or the other controller's did the same: read again on a new connection before
    // calling it failed. The other controller's follow-up `CLIENT KILL` (a demoted instance's
    // clients are disconnected) may close that one too: a few reads.
    match &result {
        Err(ActError::Command { error, .. } | ActError::Connect { error, .. }) if error.kind == ProbeErrorKind::Io => {
            let again = async {
                let mut attempts = 3;
                loop {
                    attempts -= 1;
                    let read =
                        async { Node::connect(topology.addr(id), redis.instance(id), timeout).await?.info().await };
                    match read.await {
                        Err(ActError::Command { error, .. } | ActError::Connect { error, .. })
                            if error.kind == ProbeErrorKind::Io && attempts > 0 => {}
                        other => break other,
                    }
                }
            };
            let done = match (again.await, action) {
                (Ok(info), Action::Promote { .. }) => info.role == Role::Master,
                (Ok(info), Action::Demote { to, .. } | Action::Repoint { to, .. }) => {
                    let target = topology.addr(*to);
                    info.master.as_ref().is_some_and(|l| l.points_to(&target.host, target.port))
                }
                (Err(_), _) => false,
            };
            if done { Ok(Applied::AlreadyDone) } else { result }
        }
        _ => result,
    }
}

async fn execute_once(
    topology: &Topology,
    redis: &RedisConfig,
    timeout: Duration,
    action: &Action,
) -> Result<Applied, ActError> {
    let id = action.instance();
    let mut node = Node::connect(topology.addr(id), redis.instance(id), timeout).await?;
    match *action {
        Action::Promote { because, .. } => node.promote_if_orphaned(because).await,
        Action::Demote { to, .. } => {
            let target = topology.addr(to);
            match node.info().await?.master {
                None => node.demote(target).await.map(|()| Applied::Done),
                // Another controller got there first.
                Some(link) if link.points_to(&target.host, target.port) => Ok(Applied::AlreadyDone),
                Some(link) => {
                    Err(node.changed(format!("it is no longer a master (replica of {}:{})", link.host, link.port)))
                }
            }
        }
        Action::Repoint { to, .. } => {
            let target = topology.addr(to);
            let info = node.info().await?;
            if info.master.as_ref().is_some_and(|l| l.points_to(&target.host, target.port)) {
                return Ok(Applied::AlreadyDone);
            }
            node.replicaof(Some(target)).await.map(|()| Applied::Done)
        }
    }
}

/// Executes actions concurrently: promotions of different shards never wait on each other.
pub async fn execute_all(
    topology: &Topology,
    redis: &RedisConfig,
    timeout: Duration,
    actions: &[Action],
) -> Vec<Result<Applied, ActError>> {
    futures::future::join_all(actions.iter().map(|a| execute(topology, redis, timeout, a))).await
}

/// Closes the client connections (normal and Pub/Sub) of a demoted instance, so that its
/// clients reconnect and rediscover the master (best effort: a failure is logged, nothing else
/// depends on it). Used by the loop and by the manual failover.
pub async fn disconnect_clients(t: &Topology, redis: &RedisConfig, timeout: Duration, id: crate::topology::InstanceId) {
    let addr = t.addr(id);
    let result = async { Node::connect(addr, redis.instance(id), timeout).await?.kill_clients().await }.await;
    match result {
        Ok(n) => tracing::info!(
            instance = %addr,
            clients = n,
            "disconnected the demoted instance's clients so they rediscover the master"
        ),
        Err(e) => tracing::warn!(instance = %addr, error = %e, "could not disconnect the demoted instance's clients"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_marks_carry_their_lease() {
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let until = at(1_800_000_000);
        let value = FenceMark::value(until);
        assert_eq!(value, "1095932800");
        assert_eq!(FenceMark::parse(&value), Some(FenceMark::Leased(until)));
        // Rounded up: a lease never ends before it was asked to.
        assert_eq!(FenceMark::value(until + Duration::from_millis(1)), "1095932801");
        assert_eq!(FenceMark::parse("1000000"), Some(FenceMark::Unleased));
        for not_ours in ["0", "1", "3", "999999", "", "x", "-5"] {
            assert_eq!(FenceMark::parse(not_ours), None, "{not_ours:?}");
        }
        // Redis keeps it in a C int: far leases saturate there.
        assert_eq!(FenceMark::value(at(4_000_000_000)), i32::MAX.to_string());
        // Left over once the lease and the grace have run out.
        let mark = FenceMark::Leased(until);
        assert!(!mark.left_over(until, false));
        assert!(!mark.left_over(until + FenceMark::GRACE, false));
        assert!(mark.left_over(until + FenceMark::GRACE + Duration::from_secs(1), false));
        assert!(!FenceMark::Unleased.left_over(until, false) && FenceMark::Unleased.left_over(until, true));
    }
}
