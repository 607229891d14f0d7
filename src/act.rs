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

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::{
    config::{RedisConfig, RedisSettings},
    detect::Hearing,
    info::{self, ReplicationInfo, Role},
    observe::{ProbeError, ProbeErrorKind},
    plan::Action,
    probe::{classify, connect},
    topology::{Addr, Topology},
};

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

    /// `CONFIG GET parameter`: its value, `None` when the server does not know it.
    pub async fn config_get(&mut self, parameter: &str) -> Result<Option<String>, ActError> {
        let pairs: Vec<String> =
            self.run(redis::cmd("CONFIG").arg("GET").arg(parameter), &format!("CONFIG GET {parameter}")).await?;
        Ok(pairs.into_iter().nth(1))
    }

    /// `REPLICAOF NO ONE` (`None`) or `REPLICAOF host port`.
    pub async fn replicaof(&mut self, master: Option<&Addr>) -> Result<(), ActError> {
        match master {
            None => self.run::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE"), "REPLICAOF NO ONE").await,
            Some(m) => {
                let text = format!("REPLICAOF {} {}", m.host, m.port);
                self.run::<()>(redis::cmd("REPLICAOF").arg(&m.host).arg(m.port), &text).await
            }
        }
    }

    /// `CLIENT PAUSE ms WRITE`: clients' writes block, replication keeps flowing (Redis 6.2+).
    pub async fn pause_writes(&mut self, for_: Duration) -> Result<(), ActError> {
        let ms = for_.as_millis().max(1) as u64;
        self.run::<()>(redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE"), "CLIENT PAUSE WRITE").await
    }

    pub async fn unpause(&mut self) -> Result<(), ActError> {
        self.run::<()>(redis::cmd("CLIENT").arg("UNPAUSE"), "CLIENT UNPAUSE").await
    }

    /// `CLIENT KILL TYPE normal` (our own connection is skipped) and `CLIENT KILL TYPE pubsub`:
    /// after a demotion, so that clients still connected to the old master (subscribers too)
    /// reconnect and rediscover the new one, as Sentinel does. Returns how many connections
    /// were closed.
    pub async fn kill_clients(&mut self) -> Result<i64, ActError> {
        let normal: i64 =
            self.run(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal"), "CLIENT KILL TYPE normal").await?;
        let pubsub: i64 =
            self.run(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"), "CLIENT KILL TYPE pubsub").await?;
        Ok(normal + pubsub)
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

    /// `REPLICAOF NO ONE` and a read-back of the role.
    pub async fn promote(&mut self) -> Result<(), ActError> {
        self.replicaof(None).await?;
        let after = self.info().await?;
        if after.role != Role::Master {
            return Err(ActError::NotVerified { addr: self.addr.clone(), why: "it still reports role replica".into() });
        }
        Ok(())
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
    let mut node = Node::connect(topology.addr(id), redis.instance(id), timeout).await?;
    match *action {
        Action::Promote { because, .. } => node.promote_if_orphaned(because).await,
        Action::Demote { to, .. } => {
            let target = topology.addr(to);
            match node.info().await?.master {
                None => node.replicaof(Some(target)).await.map(|()| Applied::Done),
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
