//! Manual failover (`roomguard failover --room R`): make room R primary.
//!
//! When a shard's current master answers, the switchover is **graceful** and loses no
//! acknowledged write:
//! 1. `CLIENT PAUSE <t> WRITE` on every current master (the pause expires by itself if we
//!    die, so a crashed switchover never leaves writes blocked for good); on Redis < 6.2,
//!    which has no write-only pause, a `min-slaves-to-write` fence instead: writes fail with
//!    `NOREPLICAS` rather than wait (see [`act::WriteFence`]);
//! 2. wait until room R's heads have processed the masters' full offset (bounded by
//!    `switchover_timeout`; on timeout: unpause, change nothing, fail);
//! 3. persist the new masters (state file), promote room R's heads;
//! 4. once this host's Sentinel endpoint (if configured and running) names the new masters,
//!    demote each old master in one transaction with the closing of its clients (`MULTI;
//!    REPLICAOF host port; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub; EXEC`, as Sentinel
//!    reconfigures an instance): the writes the pause held there are never executed (Redis
//!    checks `READONLY` before the pause, so they would fail), clients re-send them to the new
//!    master after rediscovering it; the promotion in step 3 closed the new master's clients
//!    the same way. The old masters are replicas *before* they are unpaused, so a write that
//!    reaches them afterwards fails (`READONLY`) instead of being lost;
//! 5. re-chain everything else to the mirror chain (`R-head -> R-tail -> old-head ->
//!    old-tail`) and close the old masters' clients again (any that connected meanwhile);
//! 6. unpause (or restore `min-slaves-to-write`) and verify the desired topology.
//!
//! Every outcome after the pause unpauses (steps 3–5 never return early): a failed save
//! changes nothing, a refused promotion gives that shard its old master back (every shard
//! is promoted, none is cancelled mid-command by another's failure), and the error says why.
//!
//! When a shard's master does not answer, its room R head is promoted without waiting
//! (**forced**), but only if that head no longer hears its master either — otherwise the
//! controller is probably the one cut off, and `--force` is needed.
//!
//! Everything is validated before the first command is sent: a bad room, a shard without a
//! reachable instance in room R, or a head that still hears its master changes nothing.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{
    act::{self, ActError, Node, WriteFence},
    audit,
    config::Config,
    coordination::Coordinator,
    detect::{self, DetectSettings},
    info::Role,
    observe::Observation,
    plan::{self, Masters},
    probe,
    state::{FailoverRecord, State, StateError, Trigger},
    topology::{InstanceId, Parent, ShardId, Topology},
};

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("unknown room \"{room}\": the configured rooms are {known}")]
    UnknownRoom { room: String, known: String },
    #[error("shard \"{shard}\": no master is known (none answers and the state file names none); nothing changed")]
    NoMaster { shard: String },
    #[error("shard \"{shard}\": no instance of room \"{room}\" answers; nothing changed")]
    NoTarget { shard: String, room: String },
    #[error(
        "shard \"{shard}\": the master {master} does not answer, but {head} still hears {its_master}: \
         this host is probably cut off from room \"{room}\", which may still be serving writes. \
         Nothing changed. Re-run with --force only if you are sure that room is down"
    )]
    StillHeard { shard: String, master: String, head: String, its_master: String, room: String },
    #[error(
        "shard \"{shard}\": {head} did not catch up with {master} within {timeout} ({behind} bytes behind); \
         writes were unpaused and nothing changed"
    )]
    NotCaughtUp { shard: String, head: String, master: String, behind: i64, timeout: String },
    #[error(
        "shard \"{shard}\": {head} does not replicate from {master} through the configured chain ({why}); \
         writes were unpaused and nothing changed"
    )]
    NoChain { shard: String, head: String, master: String, why: String },
    #[error(transparent)]
    Act(#[from] ActError),
    /// A master or head that stopped answering once writes were paused.
    #[error("{error}; writes were unpaused and nothing changed")]
    AfterPause { error: ActError },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{error}; nothing changed and writes were unpaused")]
    NotSaved { error: StateError },
    #[error("the decision could not be published to etcd ({error}); nothing changed and writes were unpaused")]
    NotPublished { error: String },
    #[error(
        "the decision could not be published to etcd ({error}), and the state file, which holds it, \
         could not be written back ({file}): writes were unpaused; fix the state file before \
         restarting this controller"
    )]
    NotPublishedNotRestored { error: String, file: StateError },
    #[error("{why}; nothing changed")]
    NotActing { why: String },
    #[error(
        "shard \"{shard}\": promoting {head} failed: {error}; the shard keeps its old master {master} \
         and writes were unpaused{moved}"
    )]
    PromotionFailed { shard: String, head: String, master: String, error: ActError, moved: String },
    #[error(
        "making room \"{room}\" primary would put instances under masters of a newer Redis: {links}. \
         A replica cannot load a newer master's RDB (and Redis < 4.0 empties its dataset trying). \
         Nothing changed; upgrade the older instances first"
    )]
    IncompatibleVersions { room: String, links: String },
    #[error("the new topology was not verified within {timeout}: {details}")]
    NotVerified { timeout: String, details: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardOutcome {
    pub shard: String,
    pub from: String,
    pub to: String,
    /// `already`, `graceful` or `forced`.
    pub how: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverReport {
    pub room: String,
    pub shards: Vec<ShardOutcome>,
    /// How long clients' writes were paused (graceful shards).
    pub writes_paused_ms: Option<u64>,
    /// Some masters (Redis < 6.2) refused writes (`NOREPLICAS`) instead of pausing them.
    #[serde(default)]
    pub writes_refused: bool,
    pub epoch: u64,
}

impl FailoverReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.shards {
            out.push_str(&match s.how.as_str() {
                "already" => format!("{}: already in room {} (master {})\n", s.shard, self.room, s.to),
                how => format!("{}: {how} failover {} -> {}\n", s.shard, s.from, s.to),
            });
        }
        if let Some(ms) = self.writes_paused_ms {
            if self.writes_refused {
                out.push_str(&format!("writes were paused, or refused with NOREPLICAS on Redis < 6.2, for {ms} ms\n"));
            } else {
                out.push_str(&format!("writes were paused for {ms} ms\n"));
            }
        }
        out.push_str(&format!("room {} is primary (epoch {}); topology verified\n", self.room, self.epoch));
        out
    }
}

struct Move {
    shard: ShardId,
    from: InstanceId,
    to: InstanceId,
    graceful: bool,
}

/// `coordination`: with `[coordination]`, the acting controller's handle; the decision is
/// published to etcd (compare-and-swap) before anything is promoted. A failover with
/// `[coordination]` and no handle (run from the command line with `--direct`) is refused.
pub async fn failover(
    config: &Config,
    room: &str,
    force: bool,
    coordination: Option<&Coordinator>,
) -> Result<FailoverReport, FailoverError> {
    if config.coordination.is_some() && coordination.is_none() {
        return Err(FailoverError::NotActing {
            why: "with [coordination], a failover is run by the acting controller: \
                  `roomguard failover --via http://<acting controller>` (or without --direct)"
                .into(),
        });
    }
    let t = &config.topology;
    let c = &config.controller;
    let room_id = t.room_id(room).ok_or_else(|| FailoverError::UnknownRoom {
        room: room.to_string(),
        known: t.rooms.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "),
    })?;
    let observation = audit::probe_all_with_periods(config).await;
    let mut state = load(config).await?.unwrap_or_else(|| State::new(vec![None; t.shards.len()]));
    let inferred = plan::infer_masters(t, &observation);
    for (shard, slot) in state.masters.iter_mut().enumerate() {
        *slot = match *slot {
            // Redis wins over the file only where the controller itself would follow it
            // (someone else moved the master). A lone master that Redis shows is not enough: it
            // may be an instance that restarted empty while the designated master is down.
            Some(designated) => Some(plan::adopted(t, &observation, shard, designated).unwrap_or(designated)),
            None => inferred[shard],
        };
    }

    // Validate every shard before touching anything.
    let mut moves = Vec::new();
    let mut outcomes = Vec::new();
    for shard in 0..t.shards.len() {
        let name = t.shards[shard].name.clone();
        let from = state.masters[shard].ok_or(FailoverError::NoMaster { shard: name.clone() })?;
        let from_live = observation.live(from).is_some_and(|i| i.role == Role::Master);
        if t.instance(from).room == room_id && from_live {
            outcomes.push(ShardOutcome {
                shard: name,
                from: t.addr(from).to_string(),
                to: t.addr(from).to_string(),
                how: "already".into(),
            });
            continue;
        }
        let to = t.shards[shard].chains[room_id]
            .iter()
            .copied()
            .find(|&id| observation.live(id).is_some())
            .ok_or_else(|| FailoverError::NoTarget { shard: name.clone(), room: room.to_string() })?;
        if !from_live && !force {
            let info = observation.live(to).expect("found live");
            let rule = detect::SilenceRule::for_replica(t, &observation, to, c.silence());
            let hears = detect::Hearing::judge(&observation, to, &rule).is_some_and(detect::Hearing::hears);
            if let Some(link) = info.master.as_ref().filter(|_| hears) {
                return Err(FailoverError::StillHeard {
                    shard: name,
                    master: t.addr(from).to_string(),
                    head: t.addr(to).to_string(),
                    its_master: format!("{}:{}", link.host, link.port),
                    room: t.room_name(t.instance(from).room).to_string(),
                });
            }
        }
        moves.push(Move { shard, from, to, graceful: from_live });
    }

    // A graceful switchover is planned work: it must not put an instance under a master whose
    // RDB it cannot load (a forced one goes on, as the automatic path does: availability).
    let incompatible: Vec<String> = moves
        .iter()
        .flat_map(|m| observation.incompatible_links(t, m.to).into_iter().map(move |link| (m.graceful, link)))
        .map(|(graceful, ((id, v), (parent, pv)))| {
            (graceful, format!("{} ({v}) would replicate from {} ({pv})", t.addr(id), t.addr(parent)))
        })
        .filter_map(|(graceful, link)| {
            if !graceful {
                warn!("{link}, whose RDB it cannot load: it will not sync until it is upgraded");
            }
            graceful.then_some(link)
        })
        .collect();
    if !incompatible.is_empty() {
        return Err(FailoverError::IncompatibleVersions { room: room.to_string(), links: incompatible.join("; ") });
    }

    let mut writes_paused_ms = None;
    let mut writes_refused = false;
    if !moves.is_empty() {
        let graceful: Vec<&Move> = moves.iter().filter(|m| m.graceful).collect();
        let mut paused = pause_and_catch_up(config, &graceful).await?;
        let pause_started = Instant::now();
        writes_refused = paused.iter().any(|(_, f)| matches!(f, WriteFence::MinReplicas { .. }));
        // No early return until every paused master is unpaused.
        let committed = commit(config, &mut state, &moves, room, &mut paused, coordination).await;
        // Still paused, the old masters demoted (their clients closed with the demotion): close
        // the clients that connected since, so that no write held by the pause runs there
        // (it would fail with READONLY); clients re-send them to the new master.
        disconnect_moved(config, &state, &moves, &mut paused).await;
        unpause_all(&mut paused).await;
        if !paused.is_empty() {
            writes_paused_ms = Some(pause_started.elapsed().as_millis() as u64);
        }
        committed?;
        for m in &moves {
            outcomes.push(ShardOutcome {
                shard: t.shards[m.shard].name.clone(),
                from: t.addr(m.from).to_string(),
                to: t.addr(m.to).to_string(),
                how: if m.graceful { "graceful" } else { "forced" }.into(),
            });
        }
    } else {
        converge(config, &state.masters, c.switchover_timeout).await?;
    }
    outcomes.sort_by(|a, b| a.shard.cmp(&b.shard));
    Ok(FailoverReport {
        room: room.to_string(),
        shards: outcomes,
        writes_paused_ms,
        writes_refused,
        epoch: state.epoch,
    })
}

/// The part of a failover that runs while writes are paused: save the decision, promote every
/// target head, converge. It does what it can and never returns early; the caller unpauses.
/// A shard whose promotion failed keeps its old master (in the state file too), so that after
/// the unpause every shard has one writable master.
async fn commit(
    config: &Config,
    state: &mut State,
    moves: &[Move],
    room: &str,
    paused: &mut [(Node, WriteFence)],
    coordination: Option<&Coordinator>,
) -> Result<(), FailoverError> {
    let t = &config.topology;
    let c = &config.controller;
    let before = state.clone();
    for m in moves {
        state.masters[m.shard] = Some(m.to);
    }
    state.epoch += 1;
    let names = moves.iter().map(|m| t.shards[m.shard].name.clone()).collect();
    state.last_failover = Some(FailoverRecord::now(Trigger::Manual, room, names));
    // The state file first, then the shared record: nothing reaches etcd (where the running
    // controller, or another, would act on it once writes are unpaused) before it is on disk.
    // The file keeps the token it derives from meanwhile, so that the loop in this process,
    // which reads the file, does not take it for a decision etcd lacks and publish it itself.
    save(config, state.clone()).await.map_err(|error| {
        *state = before.clone();
        FailoverError::NotSaved { error }
    })?;
    if let Some(coordination) = coordination {
        // Against the record the state file's masters derive from (the running controller
        // keeps the file on the shared record): a decision on an old picture is refused.
        match coordination.publish_state(state).await {
            Ok(token) => {
                state.fencing_token = Some(token);
                if let Err(e) = save(config, state.clone()).await {
                    // Etcd holds the decision and the file its masters: a restart follows etcd.
                    warn!(error = %e, "could not write the fencing token to the state file");
                }
            }
            Err(e) => {
                // The file back to the old masters, at a newer epoch than the decision's so
                // that the loop, which may have read the decision meanwhile, follows it back.
                let restored = State { epoch: state.epoch + 1, ..before.clone() };
                let restored_ok = save(config, restored.clone()).await;
                *state = restored;
                return Err(match restored_ok {
                    Ok(()) => FailoverError::NotPublished { error: e.to_string() },
                    Err(error) => FailoverError::NotPublishedNotRestored { error: e.to_string(), file: error },
                });
            }
        }
    }

    // Every promotion runs to its end: one shard's failure must not cancel another's mid-command.
    let promotions = moves.iter().map(|m| async move {
        let mut node = Node::connect(t.addr(m.to), config.redis.instance(m.to), c.timeout).await?;
        node.promote().await?;
        info!(shard = %t.shards[m.shard].name, new_master = %t.addr(m.to), "promoted");
        Ok::<_, ActError>(())
    });
    let results = futures::future::join_all(promotions).await;
    let mut failed = Vec::new();
    for (m, result) in moves.iter().zip(results) {
        if let Err(error) = result {
            warn!(shard = %t.shards[m.shard].name, head = %t.addr(m.to), %error, "promotion failed; the shard keeps its old master");
            state.masters[m.shard] = Some(m.from);
            failed.push((m, error));
        }
    }
    // The old masters of the shards that moved: once this host's endpoint names the new
    // masters (clients rediscover there), each is demoted in one transaction with the closing
    // of its clients.
    wait_for_local_endpoint(config, state, moves).await;
    demote_old_masters(config, state, moves, paused).await;
    if !failed.is_empty() {
        let moved: Vec<String> = moves
            .iter()
            .filter(|m| state.masters[m.shard] == Some(m.to))
            .map(|m| t.shards[m.shard].name.clone())
            .collect();
        state.last_failover = if moved.is_empty() {
            before.last_failover.clone()
        } else {
            Some(FailoverRecord::now(Trigger::Manual, room, moved.clone()))
        };
        // The file first, as above.
        if let Err(e) = save(config, state.clone()).await {
            warn!(error = %e, "could not write the old masters back to the state file");
        }
        if let Some(coordination) = coordination {
            match coordination.publish_state(state).await {
                Ok(token) => {
                    state.fencing_token = Some(token);
                    if let Err(e) = save(config, state.clone()).await {
                        warn!(error = %e, "could not write the fencing token to the state file");
                    }
                }
                Err(e) => warn!(error = %e, "could not publish the old masters back to etcd"),
            }
        }
        // Converge what moved, and leave what did not where it was, before the unpause.
        if let Err(e) = converge(config, &state.masters, c.switchover_timeout).await {
            warn!(error = %e, "after a failed promotion");
        }
        let (m, error) = failed.swap_remove(0);
        let moved = if moved.is_empty() { String::new() } else { format!("; moved: {}", moved.join(", ")) };
        return Err(FailoverError::PromotionFailed {
            shard: t.shards[m.shard].name.clone(),
            head: t.addr(m.to).to_string(),
            master: t.addr(m.from).to_string(),
            error,
            moved,
        });
    }
    converge(config, &state.masters, c.switchover_timeout).await
}

/// Reads the state file off the async workers (a failover through the admin API runs on them).
async fn load(config: &Config) -> Result<Option<State>, StateError> {
    let (path, topology) = (config.controller.state_file.clone(), config.topology.clone());
    tokio::task::spawn_blocking(move || State::load(&path, &topology)).await.unwrap_or_else(|e| {
        Err(StateError::Read { path: config.controller.state_file.clone(), error: std::io::Error::other(e) })
    })
}

/// Writes the state file (two fsyncs and a rename) off the async workers.
async fn save(config: &Config, state: State) -> Result<(), StateError> {
    let (path, topology) = (config.controller.state_file.clone(), config.topology.clone());
    tokio::task::spawn_blocking(move || state.save(&path, &topology).map(drop)).await.unwrap_or_else(|e| {
        Err(StateError::Write { path: config.controller.state_file.clone(), error: std::io::Error::other(e) })
    })
}

/// Pauses (or fences) writes on the graceful shards' masters and waits until every target
/// head has their full offset. On failure everything is unpaused and the error says who lagged.
async fn pause_and_catch_up(config: &Config, moves: &[&Move]) -> Result<Vec<(Node, WriteFence)>, FailoverError> {
    let t = &config.topology;
    let c = &config.controller;
    let mut masters = Vec::new();
    let mut heads = Vec::new();
    // Every connection is made before the pause: a failure then changes nothing.
    for m in moves {
        masters.push(Node::connect(t.addr(m.from), config.redis.instance(m.from), c.timeout).await?);
        heads.push(Node::connect(t.addr(m.to), config.redis.instance(m.to), c.timeout).await?);
    }
    // The pause outlives our wait by a margin, and expires by itself if we crash.
    let pause_for = c.switchover_timeout * 2 + Duration::from_secs(5);
    let mut paused = Vec::new();
    for mut node in masters {
        let fenced = match node.server_version().await {
            Ok(version) => node.fence_writes(version, pause_for, act::InForce::Refuse).await,
            Err(e) => Err(e),
        };
        match fenced {
            Ok(fence) => paused.push((node, fence)),
            Err(e) => {
                unpause_all(&mut paused).await;
                return Err(FailoverError::AfterPause { error: e });
            }
        }
    }
    let deadline = Instant::now() + c.switchover_timeout;
    for (i, m) in moves.iter().enumerate() {
        let master_info = match paused[i].0.info().await {
            Ok(info) => info,
            Err(e) => {
                unpause_all(&mut paused).await;
                return Err(FailoverError::AfterPause { error: e });
            }
        };
        if !master_info.has_replids() {
            // Redis < 4.0: every link of the chain numbers its own stream; follow it link by link.
            if let Err(e) = catch_up_link_by_link(config, m, &mut paused[i].0, deadline).await {
                unpause_all(&mut paused).await;
                return Err(match e {
                    FailoverError::Act(error) => FailoverError::AfterPause { error },
                    other => other,
                });
            }
            continue;
        }
        loop {
            let (master, head) = match (paused[i].0.info().await, heads[i].info().await) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    unpause_all(&mut paused).await;
                    return Err(FailoverError::AfterPause { error: e });
                }
            };
            let behind = master.repl_offset - head.repl_offset;
            if behind <= 0 {
                break;
            }
            if Instant::now() >= deadline {
                unpause_all(&mut paused).await;
                return Err(FailoverError::NotCaughtUp {
                    shard: t.shards[m.shard].name.clone(),
                    head: t.addr(m.to).to_string(),
                    master: t.addr(m.from).to_string(),
                    behind,
                    timeout: humantime::format_duration(c.switchover_timeout).to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(paused)
}

/// Redis < 4.0: waits until room R's head has everything the fenced master wrote, one link of
/// the chain at a time. A replica there forwards its master's writes but numbers the stream it
/// sends with its own offsets (its own pings are in it, its master's are not), so the master's
/// offset means nothing two links down: each replica must reach what its parent had sent when
/// the parent itself was caught up.
async fn catch_up_link_by_link(
    config: &Config,
    m: &Move,
    master: &mut Node,
    deadline: Instant,
) -> Result<(), FailoverError> {
    let t = &config.topology;
    let c = &config.controller;
    let shard = t.shards[m.shard].name.clone();
    let no_chain = |why: String| FailoverError::NoChain {
        shard: shard.clone(),
        head: t.addr(m.to).to_string(),
        master: t.addr(m.from).to_string(),
        why,
    };
    // The observed path from the head up to the master.
    let mut path = vec![m.to];
    let mut current = m.to;
    while current != m.from {
        if path.len() > t.shard_members(m.shard).count() {
            return Err(no_chain("the chain loops".into()));
        }
        let info = probe::probe_once(t.addr(current), config.redis.instance(current), c.timeout)
            .await
            .map_err(|e| no_chain(format!("{}: {e}", t.addr(current))))?;
        let link = info.master.ok_or_else(|| no_chain(format!("{} is a master", t.addr(current))))?;
        current = t
            .find(m.shard, &link.host, link.port)
            .ok_or_else(|| no_chain(format!("{} replicates {}:{}", t.addr(current), link.host, link.port)))?;
        path.push(current);
    }
    path.pop();
    path.reverse();
    let mut sent = master.own_stream_offset().await?;
    let mut parent = m.from;
    for id in path {
        let mut node = Node::connect(t.addr(id), config.redis.instance(id), c.timeout).await?;
        loop {
            let received = node.info().await?.master.map_or(0, |l| l.repl_offset);
            if received >= sent {
                break;
            }
            if Instant::now() >= deadline {
                return Err(FailoverError::NotCaughtUp {
                    shard,
                    head: t.addr(id).to_string(),
                    master: t.addr(parent).to_string(),
                    behind: sent - received,
                    timeout: humantime::format_duration(c.switchover_timeout).to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent = node.own_stream_offset().await?;
        parent = id;
    }
    Ok(())
}

/// Closes the clients of every graceful shard's old master whose shard moved (a shard whose
/// promotion failed keeps its master and its clients), on the connection that fenced it:
/// `CLIENT KILL` is not a write, so the pause does not hold it, and it skips that connection.
async fn disconnect_moved(config: &Config, state: &State, moves: &[Move], paused: &mut [(Node, WriteFence)]) {
    let t = &config.topology;
    let graceful = moves.iter().filter(|m| m.graceful);
    for (m, (node, _)) in graceful.zip(paused.iter_mut()) {
        if state.masters[m.shard] != Some(m.to) {
            continue;
        }
        match node.kill_clients().await {
            Ok(n) => info!(
                instance = %node.addr,
                clients = n,
                "disconnected the old master's clients before unpausing, so they rediscover the new master"
            ),
            Err(e) => {
                warn!(shard = %t.shards[m.shard].name, error = %e, "could not disconnect the old master's clients")
            }
        }
    }
}

/// Demotes each graceful shard's old master (its shard moved) under its new master's chain,
/// closing its clients in the same transaction ([`Node::demote`]): a client connection never
/// sees it as a replica, so a write the pause holds there is dropped with the connection (the
/// client re-sends it after rediscovering) instead of failing with `READONLY`. What fails here
/// is left to [`converge`]. Sent on the connection that fenced it (`paused`, in the order of
/// the graceful moves): `CLIENT KILL` skips only the connection it is sent on, and that one
/// must live to lift the fence.
async fn demote_old_masters(config: &Config, state: &State, moves: &[Move], paused: &mut [(Node, WriteFence)]) {
    let t = &config.topology;
    let c = &config.controller;
    let graceful = moves.iter().filter(|m| m.graceful);
    let old: Vec<(&Move, &mut Node)> = graceful
        .zip(paused.iter_mut())
        .filter(|(m, _)| state.masters[m.shard] == Some(m.to))
        .map(|(m, (node, _))| (m, node))
        .collect();
    if old.is_empty() {
        return;
    }
    let observation = probe::probe_all(t, &config.redis, c.timeout).await;
    let demotions = old.into_iter().map(|(m, node)| {
        let observation = &observation;
        async move {
            let parents = t.desired_parents(m.to, |id| observation.live(id).is_none());
            let Some(&(_, Parent::Instance(parent))) = parents.iter().find(|(id, _)| *id == m.from) else {
                return;
            };
            match node.demote(t.addr(parent)).await {
                Ok(()) => info!(
                    instance = %t.addr(m.from),
                    master = %t.addr(parent),
                    "demoted the old master and closed its clients in one transaction"
                ),
                Err(e) => warn!(instance = %t.addr(m.from), error = %e, "could not demote the old master yet"),
            }
        }
    });
    futures::future::join_all(demotions).await;
}

/// How long a switchover waits, writes paused, for this host's Sentinel endpoint to name the
/// new masters: a running controller reports them after its next poll and round.
const ENDPOINT_WAIT: Duration = Duration::from_secs(2);

/// Waits until this host's Sentinel-compatible endpoint (`[sentinel] listen`, served by the
/// controller running beside this command, or by this process for `POST /failover`) names
/// every moved shard's new master, at most [`ENDPOINT_WAIT`]. Otherwise a client whose
/// connection is closed next asks the endpoint before the controller has seen the switch, is
/// sent back to the demoted master and gets `READONLY`. Nothing to wait for when no endpoint
/// is configured or none answers (no controller runs here).
async fn wait_for_local_endpoint(config: &Config, state: &State, moves: &[Move]) {
    let t = &config.topology;
    let Some(sentinel) = &config.sentinel else { return };
    let listen = sentinel.listen;
    if listen.port() == 0 {
        return;
    }
    let ip = if listen.ip().is_unspecified() {
        if listen.is_ipv4() { "127.0.0.1".to_string() } else { "::1".to_string() }
    } else {
        listen.ip().to_string()
    };
    let endpoint = crate::topology::Addr::new(ip, listen.port());
    let auth = crate::config::RedisSettings { username: None, password: sentinel.password.clone(), tls: None };
    let timeout = config.controller.timeout.min(Duration::from_millis(500));
    let Ok(mut con) = crate::dial::connect(&endpoint, &auth, timeout).await else { return };
    let expected: Vec<(String, String)> = moves
        .iter()
        .filter(|m| m.graceful && state.masters[m.shard] == Some(m.to))
        .map(|m| (t.shards[m.shard].name.clone(), t.addr(m.to).to_string()))
        .collect();
    let started = Instant::now();
    for (shard, master) in &expected {
        loop {
            let reply: Result<Option<(String, u16)>, _> =
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(shard).query_async(&mut con).await;
            match reply {
                Ok(Some((host, port))) if format!("{host}:{port}") == *master => break,
                Ok(_) if started.elapsed() < ENDPOINT_WAIT => tokio::time::sleep(Duration::from_millis(10)).await,
                Ok(_) => {
                    warn!(%shard, %endpoint, "the local Sentinel endpoint does not name the new master yet; disconnecting clients anyway");
                    return;
                }
                Err(_) => return,
            }
        }
    }
    if !expected.is_empty() {
        info!(%endpoint, waited_ms = started.elapsed().as_millis() as u64, "the local Sentinel endpoint names the new masters");
    }
}

/// Lifts every fence; one that cannot be lifted is logged with what to run by hand.
async fn unpause_all(nodes: &mut [(Node, WriteFence)]) {
    for (node, fence) in nodes {
        if let Err(e) = node.lift_fence(fence).await {
            match fence {
                WriteFence::PauseWrite => warn!(error = %e, "could not unpause; the pause expires by itself"),
                WriteFence::MinReplicas { .. } => error!(
                    instance = %node.addr,
                    error = %e,
                    "could not lift the write fence: {} still refuses writes; run {} on it",
                    node.addr,
                    fence.manual_lift()
                ),
            }
        }
    }
}

/// Probes, plans and acts until Redis matches the desired chains for `masters`, or the
/// timeout passes. Instances that do not answer are left out of the chains.
pub async fn converge(config: &Config, masters: &Masters, timeout: Duration) -> Result<(), FailoverError> {
    let t = &config.topology;
    let c = &config.controller;
    let deadline = Instant::now() + timeout;
    loop {
        let observation = probe::probe_all(t, &config.redis, c.timeout).await;
        let remaining = outstanding(t, &observation, masters, c.silence(), c.down_after);
        let (actions, problems) = match remaining {
            Ok(()) => return Ok(()),
            Err(x) => x,
        };
        if Instant::now() >= deadline {
            return Err(FailoverError::NotVerified {
                timeout: humantime::format_duration(timeout).to_string(),
                details: problems.join("; "),
            });
        }
        for (action, result) in actions.iter().zip(act::execute_all(t, &config.redis, c.timeout, &actions).await) {
            match result {
                Ok(_) => info!("{}", action.describe(t)),
                Err(e) => warn!(error = %e, "{}", action.describe(t)),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Outstanding = (Vec<plan::Action>, Vec<String>);

/// `Ok` when every answering instance is where it should be with its link up.
fn outstanding(
    t: &Topology,
    observation: &Observation,
    masters: &Masters,
    silence: detect::SilenceSettings,
    grace: Duration,
) -> Result<(), Outstanding> {
    let verdict =
        detect::assess(t, observation, Instant::now(), DetectSettings { down_after: Duration::ZERO, silence });
    let settings = plan::PlanSettings { newer_master_grace: grace, now: Instant::now() };
    let plan = plan::plan(t, observation, &verdict, masters, &settings);
    let mut problems: Vec<String> = plan.actions.iter().map(|a| a.describe(t).to_string()).collect();
    problems.extend(plan.vetoed.iter().map(|v| format!("{} ({})", v.action.describe(t), v.why)));
    for (shard, m) in masters.iter().enumerate() {
        let Some(m) = *m else { continue };
        if observation.live(m).is_none_or(|i| i.role != Role::Master) {
            problems.push(format!("{} is not an answering master", t.addr(m)));
        }
        for id in t.shard_members(shard) {
            if let Some(link) = observation.live(id).and_then(|i| i.master.as_ref()).filter(|l| !l.link_up) {
                problems.push(format!("{}'s link to {}:{} is down", t.addr(id), link.host, link.port));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err((plan.actions, problems)) }
}
