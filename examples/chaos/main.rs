//! A randomized fault soak, in the manner of Jepsen's nemesis and checker: real Redis on
//! loopback (the lab), K controllers with their own state files and Sentinel endpoints, one
//! writer per shard that finds its master through a Sentinel endpoint as a client would, and a
//! nemesis that injects random faults (SIGKILL, SIGSTOP and black holes of rooms and
//! instances, partitions between rooms, the controllers cut off from a room or slowed down
//! toward it (latency and jitter through a proxy: the kernel has no netem), masters restarted
//! empty, controllers restarted gracefully or killed mid-round, manual failovers through the
//! CLI's path and `POST /failover`), some overlapping. Each controller runs on a runtime of its
//! own and logs tagged `[c<k>]` (the harness's own calls `[chaos]`). After each episode every
//! fault is healed and the harness waits for a quiet point, where it checks the invariants:
//!
//! - the deployment settles within [`SETTLE`]: every instance answers, exactly one master per
//!   shard, every chain as the desired topology says, every link up (`status`'s "healthy");
//! - every controller's view agrees with Redis (`/topology`'s masters) and every Sentinel
//!   endpoint names that master;
//! - no controller task ended (a crash or a panic);
//! - no action loop: no controller sends a command in the [`QUIET_CHECK`] after the quiet
//!   point;
//! - no automatic failover in an episode where nothing was lost (only partitions, cut-off
//!   controllers, controller restarts or manual failovers): the cross-room evidence held;
//! - every event ran its hooks: every controller runs a hook for every event that appends a
//!   line to `hooks-<k>.log`; no run failed, timed out or was dropped, and every run that
//!   ended ok left its line;
//! - every acknowledged write is still there, except in a documented window: a master that was
//!   SIGKILLed or restarted empty may lose what it acknowledged but had not yet replicated; a
//!   master that restarts empty with `repl-diskless-sync-delay 0` may wipe its replicas before
//!   anyone can act (the restart-empty race, README row 10), losing everything. Those losses
//!   are counted per cause; any other loss is a violation. A write is *verified* at a quiet
//!   point once every replica of its shard has reached the master's offset (waited for up to
//!   [`CATCH_UP`]): it is then in every room, and losing it later is a violation whatever
//!   the fault (the chain's promise).
//!
//! `--etcd` runs the same soak coordinated (issue 16, docs/coordination.md): three etcd members
//! on 127.0.0.11-13 (the soak's own, clients on `--etcd-port`, `--base-port` + 900 by
//! default, peers one above), every controller with `[coordination]`, `room` round-robin
//! (controller k in room k mod rooms) and `on_etcd_unavailable` from `--on-etcd-unavailable`
//! or else chosen by the seed (printed). Extra faults: an etcd member killed, or two (the
//! quorum: the controllers hold or act quorum-free), restarted from their data dirs when
//! healed; the acting controller killed (while a room is killed, frozen or black-holed, and
//! in half the controller restarts); manual failovers go through `POST /failover` (the CLI's direct path is refused
//! with `[coordination]`), to the acting controller every other time. Extra invariants at each
//! quiet point: every etcd member answers, exactly one controller acts, none holds or fences
//! its room, every one follows the same shared record, and its fencing token never goes back.
//! The invariants that count per controller hold as they are: the automatic failovers are
//! summed over every controller (one acting controller counts them once), and the hooks and
//! the commands after a quiet point are counted per controller against its own.
//!
//! A run is reproducible from its seed (the choice and timing of faults; not the timing of
//! Redis and the controllers). On a violation it prints the seed and the timeline and exits 1.
//!
//!     scripts/chaos [--minutes N] [--seed S] [--rooms 2|3] [--controllers K] [--base-port P]
//!                   [--etcd [--etcd-port P] [--on-etcd-unavailable hold|quorum-free]]
//!
//! Ports: 29001-29004 on 127.0.0.11-13 (Redis), 29100.. (the controllers' Sentinel endpoints),
//! with `--etcd` 29900 and 29901 on the same addresses (etcd);
//! another `--base-port` runs a second soak beside the first.
//! Needs root (iptables, for the black hole).

mod etcd;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use roomguard::{
    config::{Config, RedisSettings},
    daemon::Daemon,
    lab::{BlackHole, Lab, LabSpec},
    probe,
    topology::{Addr, InstanceId},
};
use tokio_util::sync::CancellationToken;

/// The lab's ports are `base + 1..=base + 4` (`--base-port`, default 29000); controller k's
/// Sentinel endpoint listens on 127.0.0.1:`base + 100 + k`.
const BASE_PORT: u16 = 29000;
/// How long the deployment may take to settle after every fault is healed: a failover
/// (about a second), a returning room's full syncs, and the chain re-linking one hop at a time.
const SETTLE: Duration = Duration::from_secs(40);
/// Redis' default `repl-diskless-sync-delay`: killed instances come back with it, as a real
/// restart would (the lab runs with 0 so its chains come up fast).
const RESTART_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "5"];

/// A small deterministic generator (xorshift64*): the run's choices follow from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL a room; healed by restarting it, empty.
    KillRoom(usize),
    /// SIGSTOP a room; healed by SIGCONT.
    HangRoom(usize),
    /// Every packet to and from a room dropped; healed by removing the rules.
    BlackHoleRoom(usize),
    /// Every packet between two rooms dropped (both alive, the controllers reach both).
    Partition(usize, usize),
    /// SIGKILL one instance; healed by restarting it, empty.
    KillInstance(InstanceId),
    /// SIGSTOP one instance.
    HangInstance(InstanceId),
    /// A shard's master restarts at once, empty (no persistence), with Redis' default
    /// `repl-diskless-sync-delay` (5 s: roomguard promotes its replica first) or with 0 (its
    /// replicas full-sync the empty dataset before anyone can act: README, row 10). A master
    /// that was a replica once comes back from the RDB of its last full sync instead (a
    /// replica writes it to disk whatever `save` says), behind its replicas: Redis 7 restores
    /// that RDB's replication ID as its second one, so it looks promoted.
    RestartMasterEmpty { shard: usize, sync_delay_secs: u8 },
    /// Latency and jitter between this host (controllers, writers) and one room: one reply in
    /// three held back up to `max_delay_ms` (beyond the probe timeout at times) by a proxy.
    /// The room is alive: no failover may follow.
    SlowRoom { room: usize, max_delay_ms: u64 },
    /// The controllers (and the writers: everything on 127.0.0.1) cut off from one room; the
    /// rooms still replicate. No failover may follow (the room is alive: cross-room evidence).
    CutOffControllers(usize),
    /// A controller is stopped and started again from its state file: gracefully, or
    /// `abrupt`ly (its runtime is dropped mid-round, as SIGKILL would: no orderly stop).
    /// `acting` (`--etcd` only): whichever controller holds the etcd lease when the fault
    /// starts, instead of controller `k` (`k` when none does).
    RestartController { k: usize, abrupt: bool, acting: bool },
    /// `--etcd`: SIGKILL etcd member `member` (0-based), and with `quorum` the next one too (the
    /// quorum is lost: the controllers hold, or act quorum-free, as `on_etcd_unavailable`
    /// says); healed by restarting them from their data dirs.
    KillEtcd { member: usize, quorum: bool },
    /// `failover --room R` (graceful when the masters answer), during whatever else happens:
    /// the CLI's path, or `POST /failover` to a controller (`http`).
    ManualFailover { room: usize, http: bool },
}

impl Fault {
    /// Whether acknowledged writes may be lost: a master that dies or restarts empty loses what
    /// it had not replicated yet (asynchronous replication).
    fn may_lose_writes(self) -> bool {
        matches!(self, Fault::KillRoom(_) | Fault::KillInstance(_) | Fault::RestartMasterEmpty { .. })
    }
    /// Whether an automatic failover may follow: something was lost (killed, frozen, silent,
    /// or restarted empty), not merely cut off from the controllers or from another room.
    fn may_fail_over(self) -> bool {
        matches!(
            self,
            Fault::KillRoom(_)
                | Fault::HangRoom(_)
                | Fault::BlackHoleRoom(_)
                | Fault::KillInstance(_)
                | Fault::HangInstance(_)
                | Fault::RestartMasterEmpty { .. }
        )
    }
    /// Why even writes that every instance held may be lost, if they may: the documented
    /// restart-empty race (the restarted master streams its empty dataset at once, before
    /// anyone can act: README, row 10).
    fn may_wipe(self) -> Option<&'static str> {
        match self {
            Fault::RestartMasterEmpty { sync_delay_secs: 0, .. } => Some("restart-empty race (sync delay 0)"),
            _ => None,
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Fault::KillRoom(_) => "kill room",
            Fault::HangRoom(_) => "hang room",
            Fault::BlackHoleRoom(_) => "black hole room",
            Fault::Partition(..) => "partition between rooms",
            Fault::KillInstance(_) => "kill instance",
            Fault::HangInstance(_) => "hang instance",
            Fault::RestartMasterEmpty { sync_delay_secs: 0, .. } => "restart master empty, sync delay 0",
            Fault::RestartMasterEmpty { .. } => "restart master empty, sync delay 5s",
            Fault::CutOffControllers(_) => "controllers cut off from a room",
            Fault::SlowRoom { .. } => "latency and jitter to a room",
            Fault::RestartController { abrupt: false, acting: false, .. } => "restart controller",
            Fault::RestartController { abrupt: true, acting: false, .. } => "kill and restart controller",
            Fault::RestartController { abrupt: false, acting: true, .. } => "restart the acting controller",
            Fault::RestartController { abrupt: true, acting: true, .. } => "kill and restart the acting controller",
            Fault::KillEtcd { quorum: false, .. } => "kill an etcd member",
            Fault::KillEtcd { quorum: true, .. } => "kill two etcd members (quorum lost)",
            Fault::ManualFailover { http: false, .. } => "manual failover (CLI)",
            Fault::ManualFailover { http: true, .. } => "manual failover (POST /failover)",
        }
    }
}

struct Controller {
    /// The controller's own runtime runs on this thread until `stop` (or `kill`).
    daemon_thread: std::thread::JoinHandle<Result<(), roomguard::daemon::DaemonError>>,
    stop: CancellationToken,
    /// Drops the controller's runtime where it stands: no orderly stop, as SIGKILL.
    kill: CancellationToken,
    http: std::net::SocketAddr,
    sentinel: Addr,
    shared: Arc<roomguard::controller::Shared>,
}

/// The chaos log, shared by the harness and every controller.
type LogFile = Arc<Mutex<std::fs::File>>;

/// Hands `tracing` one buffer per event and writes it to the log with `tag` in front when
/// the event is done, so that each line says who logged it (`c0`, `c1`, `chaos`).
#[derive(Clone)]
struct TaggedLog {
    tag: String,
    file: LogFile,
}

struct TaggedLine {
    tag: String,
    file: LogFile,
    buf: Vec<u8>,
}

impl std::io::Write for TaggedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TaggedLine {
    fn drop(&mut self) {
        use std::io::Write;
        let mut file = self.file.lock().expect("chaos log");
        let _ = write!(file, "[{}] ", self.tag).and_then(|()| file.write_all(&self.buf));
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TaggedLog {
    type Writer = TaggedLine;
    fn make_writer(&'a self) -> TaggedLine {
        TaggedLine { tag: self.tag.clone(), file: self.file.clone(), buf: Vec::new() }
    }
}

fn log_dispatch(tag: &str, file: &LogFile) -> tracing::Dispatch {
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("roomguard=info"))
            .with_writer(TaggedLog { tag: tag.into(), file: file.clone() })
            .with_ansi(false)
            .finish(),
    )
}

/// Starts controller `k` on a runtime of its own (as its own process would be), whose
/// threads log tagged `c<k>`.
async fn start_controller(config: Config, k: usize, log: &LogFile) -> Controller {
    let dispatch = log_dispatch(&format!("c{k}"), log);
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let (started, ready) = tokio::sync::oneshot::channel();
    let daemon_thread = std::thread::Builder::new()
        .name(format!("controller-{k}"))
        .spawn({
            let (stop, kill) = (stop.clone(), kill.clone());
            move || {
                let for_threads = dispatch.clone();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    // Every thread of this runtime (workers, blocking pool) logs tagged. The
                    // guard lives as long as the thread.
                    .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&for_threads)))
                    .build()
                    .expect("controller runtime");
                let _tagged = tracing::dispatcher::set_default(&dispatch);
                let ended = runtime.block_on(async move {
                    let daemon = Daemon::start(config).await.expect("controller starts");
                    let sentinel = daemon.sentinel_addr().expect("the chaos config has a Sentinel endpoint");
                    let _ = started.send((daemon.shared(), sentinel, daemon.http_addr()));
                    tokio::select! {
                        ended = daemon.run_until(async move { stop.cancelled().await }) => ended,
                        () = kill.cancelled() => Ok(()),
                    }
                });
                // Killed: every task is dropped where it stands (a round, an action, a hook).
                runtime.shutdown_timeout(Duration::from_secs(1));
                ended
            }
        })
        .expect("controller thread");
    let (shared, sentinel, http) = ready.await.expect("controller started");
    let sentinel = Addr::new(sentinel.ip().to_string(), sentinel.port());
    Controller { daemon_thread, stop, kill, http, sentinel, shared }
}

/// Stops a controller as SIGKILL would.
async fn kill_controller(c: Controller) {
    c.kill.cancel();
    let _ = tokio::task::spawn_blocking(move || c.daemon_thread.join()).await;
}

/// `POST /failover?room=R` to a controller's admin API; the status line and body.
async fn post_failover(http: std::net::SocketAddr, room: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(http).await?;
        let request = format!(
            "POST /failover?room={room} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(Ok(answer)) => {
            let status = answer.lines().next().unwrap_or_default().to_string();
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_string();
            format!("{status} {body}")
        }
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "no answer in 30 s".into(),
    }
}

/// The controllers' admin token (`POST /failover`).
const ADMIN_TOKEN: &str = "chaos-admin";

/// Stops a controller and waits for its runtime to finish.
async fn stop_controller(c: Controller) -> Result<(), String> {
    c.stop.cancel();
    match tokio::task::spawn_blocking(move || c.daemon_thread.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("its thread panicked".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What a writer has been told OK: key sequence numbers per shard.
type Acked = Arc<Mutex<Vec<u64>>>;

/// Writes `chaos:<shard>:<n>` to the master a Sentinel endpoint names, rediscovering after any
/// error, as a client library does.
async fn writer(shard: String, sentinel: Addr, acked: Acked, stop: CancellationToken) {
    let settings = RedisSettings::default();
    let timeout = Duration::from_millis(500);
    let mut n = 0u64;
    let mut master: Option<(Addr, redis::aio::MultiplexedConnection)> = None;
    while !stop.is_cancelled() {
        if master.is_none() {
            let found = async {
                let mut s = probe::connect(&sentinel, &settings, timeout).await.ok()?;
                let reply: Vec<String> =
                    redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&shard).query_async(&mut s).await.ok()?;
                let addr = Addr::new(reply.first()?, reply.get(1)?.parse().ok()?);
                let con = probe::connect(&addr, &settings, timeout).await.ok()?;
                Some((addr, con))
            };
            master = tokio::time::timeout(Duration::from_secs(2), found).await.ok().flatten();
            if master.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let (_, con) = master.as_mut().expect("set above");
        n += 1;
        let mut set = redis::cmd("SET");
        set.arg(format!("chaos:{shard}:{n}")).arg(n);
        match tokio::time::timeout(timeout, set.query_async::<()>(con)).await {
            Ok(Ok(())) => acked.lock().expect("acked").push(n),
            _ => master = None,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many of the controllers' last log lines a failed run prints.
const LOG_TAIL: usize = 150;

/// How long after a quiet point no controller may send a command (an action loop otherwise).
const QUIET_CHECK: Duration = Duration::from_secs(2);

/// How long a quiet point waits for every replica to reach the master's offset before it
/// calls the writes acknowledged so far "verified" (on every instance of the shard).
const CATCH_UP: Duration = Duration::from_secs(10);

/// `master_repl_offset` of `addr` (a replica's is how much of its master's stream it holds).
async fn repl_offset(addr: &Addr) -> Option<i64> {
    let mut con = probe::connect(addr, &RedisSettings::default(), Duration::from_secs(1)).await.ok()?;
    let text: String = redis::cmd("INFO").arg("replication").query_async(&mut con).await.ok()?;
    roomguard::info::parse(&text).ok().map(|info| info.repl_offset)
}

/// Waits up to [`CATCH_UP`] until every instance in `others` holds the master's history up to
/// the offset the master has now: whatever it acknowledged before this call is then on every
/// instance. A link that reads "up" may still lag behind (a partition that just healed, TCP
/// retransmitting); only then may a later room loss lose nothing of it.
async fn caught_up(master: &Addr, others: &[Addr]) -> bool {
    let Some(target) = repl_offset(master).await else { return false };
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let mut behind = false;
        for addr in others {
            behind |= repl_offset(addr).await.is_none_or(|offset| offset < target);
        }
        if !behind {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys of `acked` that `master` does not hold.
async fn missing(master: &Addr, shard: &str, acked: &[u64]) -> Option<Vec<u64>> {
    let mut con = probe::connect(master, &RedisSettings::default(), Duration::from_secs(1)).await.ok()?;
    let mut out = Vec::new();
    for chunk in acked.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("chaos:{shard}:{n}")).collect();
        let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await.ok()?;
        out.extend(chunk.iter().zip(values).filter(|(_, v)| v.is_none()).map(|(n, _)| *n));
    }
    Some(out)
}

struct Run {
    started: Instant,
    timeline: Vec<String>,
    violations: Vec<String>,
}

impl Run {
    fn log(&mut self, what: String) {
        let line = format!("{:>8.1}s  {what}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.timeline.push(line);
    }
    fn violation(&mut self, what: String) {
        self.log(format!("VIOLATION: {what}"));
        self.violations.push(what);
    }
}

struct Opts {
    minutes: f64,
    seed: u64,
    rooms: usize,
    controllers: usize,
    base_port: u16,
    /// `--etcd`: the controllers run with `[coordination]`.
    etcd: bool,
    /// `--on-etcd-unavailable hold|quorum-free`; chosen by the seed when absent.
    on_etcd_unavailable: Option<roomguard::coordination::Unavailable>,
    /// `--etcd-port P`: the members' client port (peers on P + 1); `--base-port` + 900 by default.
    etcd_port: Option<u16>,
}

fn parse() -> Opts {
    let mut o = Opts {
        minutes: 2.0,
        seed: 1,
        rooms: 2,
        controllers: 2,
        base_port: BASE_PORT,
        etcd: false,
        on_etcd_unavailable: None,
        etcd_port: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => o.minutes = value().parse().expect("--minutes N"),
            "--seed" => o.seed = value().parse().expect("--seed S"),
            "--rooms" => o.rooms = value().parse().expect("--rooms 2|3"),
            "--controllers" => o.controllers = value().parse().expect("--controllers K"),
            "--base-port" => o.base_port = value().parse().expect("--base-port P"),
            "--etcd" => o.etcd = true,
            "--etcd-port" => o.etcd_port = Some(value().parse().expect("--etcd-port P")),
            "--on-etcd-unavailable" => {
                o.on_etcd_unavailable = Some(match value().as_str() {
                    "hold" => roomguard::coordination::Unavailable::Hold,
                    "quorum-free" => roomguard::coordination::Unavailable::QuorumFree,
                    other => panic!("--on-etcd-unavailable hold|quorum-free, not {other}"),
                })
            }
            other => panic!(
                "unknown argument {other}: --minutes N --seed S --rooms 2|3 --controllers K --base-port P \
                 [--etcd [--etcd-port P] [--on-etcd-unavailable hold|quorum-free]]"
            ),
        }
    }
    assert!((2..=3).contains(&o.rooms) && o.controllers >= 1, "--rooms 2|3, --controllers >= 1");
    o
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let o = parse();
    // The controllers' log (every decision and action), for the timeline of a violation:
    // $CHAOS_LOG, else chaos-<seed>.log in the temp directory.
    let log_path = std::env::var_os("CHAOS_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("chaos-{}.log", o.seed)));
    let log: LogFile = Arc::new(Mutex::new(std::fs::File::create(&log_path).expect("chaos log file")));
    // The harness's own roomguard calls (the manual failovers, snapshots) log tagged `chaos`.
    tracing::dispatcher::set_global_default(log_dispatch("chaos", &log)).expect("one subscriber");
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let room_ips: Vec<String> = (0..o.rooms).map(|r| format!("127.0.0.{}", 11 + r)).collect();
    let spec = LabSpec {
        room_ips,
        base_port: o.base_port,
        http_listen: "127.0.0.1:0".into(),
        sentinel_listen: Some("127.0.0.1:0".into()),
        ..LabSpec::default()
    };
    let mut lab = Lab::start(&spec).await.expect("lab (is redis-server installed? are ports 29001-29004 free?)");
    let t = lab.topology().clone();
    // Each controller: its own state file, and its own endpoint on a fixed port, so that a
    // restarted controller is found where clients knew it.
    let (base_config, dir) = (lab.config.clone(), lab.dir().to_path_buf());
    // Every event of every controller runs a hook that appends it to hooks-<k>.log.
    let hook_log = |k: usize| dir.join(format!("hooks-{k}.log"));
    // `--etcd`: three etcd members on the room addresses, and every controller coordinated
    // through them, in room k mod rooms (round-robin), with the same behaviour when etcd is
    // unavailable (the flag's, else one chosen by the seed on a generator of its own, so that
    // the faults of a seed stay those of the uncoordinated mode as far as they can).
    let coordination = o.etcd.then(|| {
        let unavailable = o.on_etcd_unavailable.unwrap_or({
            if Rng((o.seed ^ 0x5eed_e7cd) | 1).below(2) == 0 {
                roomguard::coordination::Unavailable::Hold
            } else {
                roomguard::coordination::Unavailable::QuorumFree
            }
        });
        (o.etcd_port.unwrap_or(o.base_port + 900), unavailable)
    });
    let mut etcd = match coordination {
        Some((port, _)) => Some(
            etcd::Etcd::start(port, dir.join("etcd"))
                .await
                .unwrap_or_else(|e| panic!("etcd (ports {port} and {}): {e}", port + 1)),
        ),
        None => None,
    };
    let etcd_endpoints = etcd.as_ref().map(|e| e.endpoints()).unwrap_or_default();
    let config_of = |k: usize| {
        let mut c = base_config.clone();
        c.controller.state_file = dir.join(format!("state-{k}.json"));
        c.http.admin_token = Some(roomguard::secret::Secret::new(ADMIN_TOKEN));
        c.hooks = vec![roomguard::hooks::HookSettings {
            events: roomguard::events::HOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo \"$RG_EVENT $RG_SHARD\" >> '{}'", hook_log(k).display()),
            ],
            timeout: Duration::from_secs(10),
        }];
        if let Some(s) = c.sentinel.as_mut() {
            s.listen = format!("127.0.0.1:{}", o.base_port + 100 + k as u16).parse().expect("address");
        }
        if let Some((_, on_unavailable)) = coordination {
            c.coordination = Some(roomguard::coordination::CoordinationSettings {
                endpoints: etcd_endpoints.clone(),
                prefix: roomguard::coordination::DEFAULT_PREFIX.into(),
                name: format!("c{k}"),
                role: roomguard::coordination::Role::Acting,
                room: Some(k % o.rooms),
                lease_ttl: roomguard::coordination::DEFAULT_LEASE_TTL,
                on_unavailable,
            });
        }
        c
    };
    let mut controllers = Vec::new();
    for k in 0..o.controllers {
        controllers.push(start_controller(config_of(k), k, &log).await);
    }
    // Hook runs that ended ok, per controller, over its earlier incarnations.
    let mut hooks_ran = vec![0.0; o.controllers];
    // Automatic failovers counted by the controllers' earlier incarnations.
    let mut auto_failovers_of_stopped = 0.0;
    let mut run = Run { started: Instant::now(), timeline: vec![], violations: vec![] };
    let mode = match coordination {
        Some((port, unavailable)) => format!(
            "coordinated through etcd (3 members, client port {port}; controller k in room k mod {}), \
             on_etcd_unavailable = \"{}\"",
            o.rooms,
            unavailable.label()
        ),
        None => "quorum-free".to_string(),
    };
    run.log(format!(
        "seed {}, {} rooms, {} shards, {} controllers, {} minutes, {mode}",
        o.seed,
        o.rooms,
        t.shards.len(),
        o.controllers,
        o.minutes
    ));
    let stop_writers = CancellationToken::new();
    let acked: Vec<Acked> = t.shards.iter().map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let writers: Vec<tokio::task::JoinHandle<()>> = t
        .shards
        .iter()
        .zip(&acked)
        .map(|(s, a)| {
            tokio::spawn(writer(s.name.clone(), controllers[0].sentinel.clone(), a.clone(), stop_writers.clone()))
        })
        .collect();
    // Keys known present at the last quiet point, per shard; and losses by cause.
    let mut verified: Vec<usize> = vec![0; t.shards.len()];
    let mut lost_by_cause: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut faults_by_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut recovery: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    // `--etcd`: the fencing token every controller followed at the last quiet point.
    let mut last_token = 0;

    let deadline = Instant::now() + Duration::from_secs_f64(o.minutes * 60.0);
    let mut episode = 0;
    while Instant::now() < deadline && run.violations.is_empty() {
        episode += 1;
        // One room fault at most (losing every room loses the data), plus sometimes another.
        let mut faults = vec![];
        let room = rng.below(o.rooms as u64) as usize;
        let instance = rng.below(t.instances.len() as u64) as usize;
        let shard = rng.below(t.shards.len() as u64) as usize;
        let other = (room + 1 + rng.below(o.rooms as u64 - 1) as usize) % o.rooms;
        // `--etcd`: half the controller restarts hit the acting controller; a manual failover
        // goes through `POST /failover` (the CLI's path is refused with [coordination]: only the
        // acting controller runs one).
        let restart = |rng: &mut Rng| Fault::RestartController {
            k: rng.below(o.controllers as u64) as usize,
            abrupt: rng.below(2) == 0,
            acting: o.etcd && rng.below(2) == 0,
        };
        let manual = |rng: &mut Rng, room: usize| Fault::ManualFailover { room, http: o.etcd || rng.below(2) == 0 };
        let mut forced_second = None;
        let first = match rng.below(if o.etcd { 14 } else { 11 }) {
            11 => Fault::KillEtcd { member: rng.below(3) as usize, quorum: false },
            // The acting controller killed while a room is lost: the failover waits for its
            // lease to lapse and another controller to take over.
            12 => {
                forced_second = Some(Fault::RestartController { k: 0, abrupt: true, acting: true });
                match rng.below(3) {
                    0 => Fault::KillRoom(room),
                    1 => Fault::HangRoom(room),
                    _ => Fault::BlackHoleRoom(room),
                }
            }
            13 => Fault::KillEtcd { member: rng.below(3) as usize, quorum: true },
            10 => Fault::SlowRoom { room, max_delay_ms: 100 + rng.below(500) },
            9 => Fault::CutOffControllers(room),
            8 => Fault::Partition(room, other),
            0 => Fault::KillRoom(room),
            1 => Fault::HangRoom(room),
            2 => Fault::BlackHoleRoom(room),
            3 => Fault::KillInstance(instance),
            4 => Fault::HangInstance(instance),
            5 => Fault::RestartMasterEmpty { shard, sync_delay_secs: if rng.below(2) == 0 { 0 } else { 5 } },
            6 => restart(&mut rng),
            _ => manual(&mut rng, room),
        };
        faults.push(first);
        if let Some(second) = forced_second {
            faults.push(second);
        } else if rng.below(3) == 0 {
            let second = match rng.below(3) {
                0 => restart(&mut rng),
                1 => {
                    let room = rng.below(o.rooms as u64) as usize;
                    manual(&mut rng, room)
                }
                _ => Fault::HangInstance(rng.below(t.instances.len() as u64) as usize),
            };
            if second != first {
                faults.push(second);
            }
        }
        let duration = rng.millis(500, 8000);
        let gap = rng.millis(0, 1500);
        let diverged_before_episode = diverged_total(&controllers);
        let auto_before_episode = auto_failovers_of_stopped + controllers.iter().map(auto_failovers).sum::<f64>();
        let mut holes: Vec<BlackHole> = vec![];
        let mut slowed: Vec<roomguard::lab::SlowRoom> = vec![];
        let mut hung: Vec<InstanceId> = vec![];
        let mut killed: Vec<InstanceId> = vec![];
        let mut killed_etcd: Vec<usize> = vec![];
        for (i, &fault) in faults.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            *faults_by_kind.entry(fault.kind()).or_default() += 1;
            run.log(format!("episode {episode}: {fault:?} for {duration:?}"));
            match fault {
                Fault::KillRoom(r) => {
                    for id in lab.room(r) {
                        lab.servers[id].kill();
                        killed.push(id);
                    }
                }
                Fault::HangRoom(r) => {
                    for id in lab.room(r) {
                        lab.servers[id].hang();
                        hung.push(id);
                    }
                }
                Fault::BlackHoleRoom(r) => holes.push(lab.black_hole(r).expect("iptables (run as root)")),
                Fault::Partition(a, b) => holes.push(lab.partition(a, b).expect("iptables (run as root)")),
                Fault::CutOffControllers(r) => holes.push(lab.cut_off(r).expect("iptables (run as root)")),
                Fault::SlowRoom { room: r, max_delay_ms } => {
                    let delay = Duration::from_millis(max_delay_ms);
                    slowed
                        .push(lab.slow_room(r, delay, o.seed ^ episode as u64).await.expect("iptables (run as root)"));
                    // Connections opened before keep their direct path: close the clients'
                    // (controllers, writers) so that they reconnect through the proxies.
                    for id in lab.room(r) {
                        let addr = t.addr(id).clone();
                        if let Ok(mut con) =
                            probe::connect(&addr, &RedisSettings::default(), Duration::from_secs(2)).await
                        {
                            let _: Result<i64, _> =
                                redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query_async(&mut con).await;
                        }
                    }
                }
                Fault::KillInstance(id) => {
                    lab.servers[id].kill();
                    killed.push(id);
                }
                Fault::HangInstance(id) => {
                    lab.servers[id].hang();
                    hung.push(id);
                }
                Fault::RestartMasterEmpty { shard: s, sync_delay_secs } => {
                    let report = roomguard::cli::snapshot(&lab.config).await.ok();
                    let master = report.and_then(|r| r.shards[s].master.clone());
                    let id = master.and_then(|m| t.instances.iter().position(|i| i.addr.to_string() == m));
                    if let Some(id) = id.filter(|&id| lab.servers[id].is_running()) {
                        let delay = sync_delay_secs.to_string();
                        let _ = lab.servers[id].restart_with(None, &["--repl-diskless-sync-delay", &delay]);
                    }
                }
                Fault::KillEtcd { member, quorum } => {
                    let etcd = etcd.as_mut().expect("--etcd");
                    for i in std::iter::once(member).chain(quorum.then_some((member + 1) % 3)) {
                        etcd.kill(i);
                        killed_etcd.push(i);
                    }
                    run.log(format!("episode {episode}: etcd members {killed_etcd:?} (0-based) killed"));
                }
                Fault::RestartController { k, abrupt, acting } => {
                    let k = if acting {
                        match controllers.iter().position(is_acting) {
                            Some(a) => {
                                run.log(format!("episode {episode}: the acting controller is c{a}"));
                                a
                            }
                            None => {
                                run.log(format!("episode {episode}: no controller acts: c{k} instead"));
                                k
                            }
                        }
                    } else {
                        k
                    };
                    let old = controllers.remove(k);
                    let old_shared = old.shared.clone();
                    if abrupt {
                        kill_controller(old).await;
                    } else if let Err(e) = stop_controller(old).await {
                        run.violation(format!("controller {k} ended badly when stopped: {e}"));
                    }
                    // Counted once the incarnation is gone: nothing it runs is missed.
                    hooks_ran[k] += hooks_ok_of(&old_shared);
                    auto_failovers_of_stopped +=
                        metric_sum_of(&old_shared, "roomguard_failovers_total{", "trigger=\"auto\"");
                    if abrupt {
                        // A hook run in flight when the runtime was dropped goes on (its shell
                        // is a process of its own, as it would outlive a SIGKILLed controller)
                        // and may leave its line, but its outcome is never counted: once such
                        // runs are done, the lines recorded so far are the new baseline.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let lines = std::fs::read_to_string(hook_log(k)).map_or(0, |t| t.lines().count()) as f64;
                        if lines > hooks_ran[k] {
                            run.log(format!(
                                "episode {episode}: {} hook runs in flight when c{k} was killed left their line uncounted",
                                lines - hooks_ran[k]
                            ));
                            hooks_ran[k] = lines;
                        }
                    }
                    controllers.insert(k, start_controller(config_of(k), k, &log).await);
                }
                Fault::ManualFailover { room: r, http: true } => {
                    let k = rng.below(controllers.len() as u64) as usize;
                    // `--etcd`: only the acting controller runs it (the others answer 409, also
                    // worth sending): to the acting one every other time.
                    let k = match controllers.iter().position(is_acting) {
                        Some(a) if o.etcd && rng.below(2) == 0 => a,
                        _ => k,
                    };
                    let room_name = t.rooms[r].clone();
                    let answer = post_failover(controllers[k].http, &room_name).await;
                    run.log(format!("POST /failover?room={room_name} to controller {k}: {answer}"));
                }
                Fault::ManualFailover { room: r, http: false } => {
                    let config = config_of(0);
                    let room_name = t.rooms[r].clone();
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(30),
                        roomguard::switchover::failover(&config, &room_name, false, None),
                    )
                    .await;
                    run.log(match outcome {
                        Ok(Ok(report)) => format!("manual failover to room {room_name}: ok (epoch {})", report.epoch),
                        Ok(Err(e)) => format!("manual failover to room {room_name} refused: {e}"),
                        Err(_) => format!("manual failover to room {room_name}: no answer in 30 s"),
                    });
                }
            }
        }
        tokio::time::sleep(duration).await;
        let diverged_before = diverged_before_episode;
        drop(holes);
        drop(slowed);
        for id in hung {
            lab.servers[id].resume();
        }
        for id in killed {
            if !lab.servers[id].is_running() {
                let _ = lab.servers[id].restart_with(None, &RESTART_ARGS);
            }
        }
        for &i in &killed_etcd {
            if let Err(e) = etcd.as_mut().expect("--etcd").restart(i) {
                run.violation(format!("episode {episode}: {e}"));
            }
        }
        run.log(format!("episode {episode}: healed"));

        // The quiet point.
        let healed = Instant::now();
        // `--etcd`: every member answers again (a restarted one rejoins from its data dir) and
        // none exited on its own.
        if let Some(etcd) = etcd.as_mut() {
            let crashed: Vec<usize> = (0..3).filter(|&i| !etcd.running(i)).collect();
            if !crashed.is_empty() {
                run.violation(format!("episode {episode}: etcd members {crashed:?} (0-based) exited"));
            } else if let Err(e) = etcd.wait_healthy(SETTLE).await {
                run.violation(format!("episode {episode}: {e}"));
            }
            if !run.violations.is_empty() {
                break;
            }
        }
        let mut settled = false;
        let mut coordination_ok = Ok(0);
        while healed.elapsed() < SETTLE {
            let redis_ok = roomguard::cli::snapshot(&lab.config).await.is_ok_and(|r| r.healthy);
            let views_ok =
                controllers.iter().all(|c| c.shared.report.read().expect("report").as_ref().is_some_and(|r| r.healthy));
            // `--etcd`: one acting controller, none fenced or holding, every one on the same
            // shared record.
            coordination_ok = if o.etcd { coordination_settled(&controllers) } else { Ok(0) };
            if redis_ok && views_ok && coordination_ok.is_ok() {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = healed.elapsed().as_secs_f64();
        for f in &faults {
            recovery.entry(f.kind()).or_default().push(took);
        }
        if !settled {
            let report = roomguard::cli::snapshot(&lab.config).await.map(|r| r.render()).unwrap_or_default();
            let coordination = coordination_ok.err().map(|e| format!("coordination: {e}\n")).unwrap_or_default();
            run.violation(format!("episode {episode}: not settled {SETTLE:?} after healing:\n{coordination}{report}"));
            break;
        }
        // `--etcd`: the fencing token (the shared record's revision) never goes back.
        if let Ok(token) = coordination_ok {
            if token < last_token {
                run.violation(format!("episode {episode}: the fencing token went back from {last_token} to {token}"));
            }
            last_token = token;
        }
        let report = roomguard::cli::snapshot(&lab.config).await.expect("snapshot");
        for (s, shard) in report.shards.iter().enumerate() {
            let masters: Vec<&str> = shard
                .instances
                .iter()
                .filter(|i| i.role == Some(roomguard::info::Role::Master))
                .map(|i| i.instance.as_str())
                .collect();
            if masters.len() != 1 {
                run.violation(format!("episode {episode}: shard {} has masters {masters:?}", shard.name));
                continue;
            }
            for (k, c) in controllers.iter().enumerate() {
                let named = sentinel_master(&c.sentinel, &shard.name).await;
                if named.as_deref() != Some(masters[0]) {
                    run.violation(format!(
                        "episode {episode}: controller {k}'s endpoint names {named:?} for {}, Redis {}",
                        shard.name, masters[0]
                    ));
                }
            }
            // Writes: everything acknowledged so far must be on the master, but for what a
            // killed or emptied master had not replicated.
            let acked_now: Vec<u64> = acked[s].lock().expect("acked").clone();
            let master: Addr = masters[0].parse().expect("address");
            let Some(gone) = missing(&master, &shard.name, &acked_now).await else {
                run.violation(format!("episode {episode}: cannot read back {}", shard.name));
                continue;
            };
            let earlier: std::collections::HashSet<u64> =
                acked_now[..verified[s].min(acked_now.len())].iter().copied().collect();
            let newly: Vec<u64> = gone.iter().copied().filter(|n| earlier.contains(n)).collect();
            let fresh = gone.len() - newly.len();
            if !gone.is_empty() {
                // A master that froze or was cut off after acknowledging writes it had not yet
                // replicated, and was failed over: those writes are discarded when it returns
                // and is demoted, and counted as its divergence.
                let discarded = diverged_total(&controllers) > diverged_before;
                let allowed = discarded || faults.iter().any(|f| f.may_lose_writes());
                let cause = match faults.iter().find(|f| f.may_lose_writes()) {
                    Some(f) => f.kind(),
                    None if discarded => "discarded with a demoted stale master (roomguard_diverged_bytes_total)",
                    None => "none",
                };
                run.log(format!(
                    "episode {episode}: {} of {} acknowledged writes of {} missing ({} verified earlier), cause {cause}",
                    gone.len(),
                    acked_now.len(),
                    shard.name,
                    newly.len()
                ));
                if allowed && newly.is_empty() {
                    *lost_by_cause.entry(cause).or_default() += fresh;
                } else if let Some(why) = faults.iter().find_map(|f| f.may_wipe()) {
                    *lost_by_cause.entry(why).or_default() += gone.len();
                } else if allowed {
                    // A key seen on every instance at an earlier quiet point is lost only if
                    // every copy went: count it, but it is a violation of the chain's promise.
                    run.violation(format!(
                        "episode {episode}: {} writes verified at an earlier quiet point are gone from {}: {:?}",
                        newly.len(),
                        shard.name,
                        &newly[..newly.len().min(10)]
                    ));
                } else {
                    run.violation(format!(
                        "episode {episode}: {} acknowledged writes lost from {} with no crash: {:?}",
                        gone.len(),
                        shard.name,
                        &gone[..gone.len().min(10)]
                    ));
                }
                // Forget the lost ones: they are accounted for.
                acked[s].lock().expect("acked").retain(|n| !gone.contains(n));
            }
            // What the master holds of `acked_now` is verified once every replica has it too
            // (acked is append-only but for the removal above, so they stay its prefix).
            let others: Vec<Addr> = shard
                .instances
                .iter()
                .filter(|i| i.instance != masters[0])
                .filter_map(|i| i.instance.parse().ok())
                .collect();
            if caught_up(&master, &others).await {
                verified[s] = acked_now.len() - gone.len();
            } else {
                run.log(format!(
                    "episode {episode}: the replicas of {} did not reach its offset within {CATCH_UP:?}: \
                     nothing newly verified",
                    shard.name
                ));
            }
        }
        // No automatic failover unless a room or an instance was lost: a partition, a cut-off
        // controller, a slow link, a controller restart or a manual failover alone justify none.
        // `--etcd`: the same sum over every controller, though only the acting one decides
        // (and, in the quorum-free fallback, every one): a failover counted by any of them, or
        // by one since killed, is one too many; killing an etcd member, the quorum or the
        // acting controller justifies none either.
        let autos = auto_failovers_of_stopped + controllers.iter().map(auto_failovers).sum::<f64>();
        if autos > auto_before_episode && !faults.iter().any(|f| f.may_fail_over()) {
            run.violation(format!(
                "episode {episode}: {} automatic failovers, but no room or instance was lost",
                autos - auto_before_episode
            ));
        }
        // No action loop: once quiet, nothing more is sent for a while.
        let acted: Vec<f64> = controllers.iter().map(|c| metric_sum(c, "roomguard_actions_total{", "")).collect();
        tokio::time::sleep(QUIET_CHECK).await;
        for (k, c) in controllers.iter().enumerate() {
            let now = metric_sum(c, "roomguard_actions_total{", "");
            if now != acted[k] {
                run.violation(format!(
                    "episode {episode}: controller {k} sent {} more commands in the {QUIET_CHECK:?} after the quiet point",
                    now - acted[k]
                ));
            }
        }
        // Every event ran its hooks: none failed, timed out or was dropped, and each run that
        // ended ok left its line (hook runs finish in the background: give them a moment).
        // Counted per controller against its own log, so it holds whether every controller
        // sees an event from its own probes or, observing, from the shared record.
        for (k, c) in controllers.iter().enumerate() {
            let not_ok = metric_sum(c, "roomguard_hook_runs_total{", "") - hooks_ok(c);
            if not_ok > 0.0 {
                run.violation(format!("episode {episode}: controller {k}: {not_ok} hook runs did not end ok"));
            }
            let ran = hooks_ran[k] + hooks_ok(c);
            let lines = std::fs::read_to_string(hook_log(k)).map_or(0, |t| t.lines().count()) as f64;
            if lines != ran {
                run.violation(format!("episode {episode}: controller {k}: {ran} hook runs ok, {lines} recorded"));
            }
        }
        for (k, c) in controllers.iter().enumerate() {
            if c.daemon_thread.is_finished() {
                run.violation(format!("episode {episode}: controller {k} stopped on its own"));
            }
        }
        run.log(format!("episode {episode}: quiet after {took:.1}s, invariants hold"));
    }

    stop_writers.cancel();
    for w in writers {
        let _ = w.await;
    }
    let total_acked: usize = acked.iter().map(|a| a.lock().expect("acked").len()).sum();
    println!(
        "\nchaos: seed {}, {} rooms, {} controllers, {episode} episodes in {:.0?}, {mode}",
        o.seed,
        o.rooms,
        o.controllers,
        run.started.elapsed()
    );
    println!("faults injected: {faults_by_kind:?}");
    for (kind, times) in &recovery {
        let mut v = times.clone();
        v.sort_by(f64::total_cmp);
        println!(
            "settled after healing, {kind}: median {:.1}s, max {:.1}s ({} episodes)",
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    }
    println!("acknowledged writes kept: {total_acked}; lost by cause: {lost_by_cause:?}");
    for c in controllers {
        let _ = stop_controller(c).await;
    }
    if run.violations.is_empty() {
        println!("violations: 0");
        std::process::ExitCode::SUCCESS
    } else {
        println!(
            "violations: {} (seed {}; the controllers' log: {})\ntimeline:\n{}",
            run.violations.len(),
            o.seed,
            log_path.display(),
            run.timeline.join("\n")
        );
        // Where the log file is out of reach (a CI machine), its end is the first clue: the
        // decisions and actions of every controller up to the violation.
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("roomguard::audit")).collect();
        println!("the controllers' log, last {LOG_TAIL} lines:");
        for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
            println!("{line}");
        }
        std::process::ExitCode::FAILURE
    }
}

async fn sentinel_master(sentinel: &Addr, shard: &str) -> Option<String> {
    let mut s = probe::connect(sentinel, &RedisSettings::default(), Duration::from_secs(1)).await.ok()?;
    let reply: Vec<String> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(shard).query_async(&mut s).await.ok()?;
    Some(format!("{}:{}", reply.first()?, reply.get(1)?))
}

/// `roomguard_diverged_bytes_total`, summed over every controller: bytes demoted stale masters
/// had written past their successors' promotion points.
/// The hook runs of a controller that ended ok.
fn hooks_ok(c: &Controller) -> f64 {
    hooks_ok_of(&c.shared)
}

fn hooks_ok_of(shared: &roomguard::controller::Shared) -> f64 {
    metric_sum_of(shared, "roomguard_hook_runs_total{", "outcome=\"ok\"")
}

/// The automatic failovers a controller counted (successful or not).
fn auto_failovers(c: &Controller) -> f64 {
    metric_sum(c, "roomguard_failovers_total{", "trigger=\"auto\"")
}

/// The sum of a controller's series whose line starts with `prefix` and contains `filter`.
fn metric_sum(c: &Controller, prefix: &str, filter: &str) -> f64 {
    metric_sum_of(&c.shared, prefix, filter)
}

fn metric_sum_of(shared: &roomguard::controller::Shared, prefix: &str, filter: &str) -> f64 {
    shared
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `--etcd`: whether this controller holds the acting lease now.
fn is_acting(c: &Controller) -> bool {
    metric_sum(c, "roomguard_coordination_acting ", "") == 1.0
}

/// `--etcd`, at a quiet point: exactly one controller acts, none holds (etcd answers every
/// one) or fences its room, and every one follows the same shared record (a non-zero fencing
/// token), which is returned; else why not.
fn coordination_settled(controllers: &[Controller]) -> Result<u64, String> {
    let acting: Vec<usize> = (0..controllers.len()).filter(|&k| is_acting(&controllers[k])).collect();
    let holding: Vec<usize> = (0..controllers.len())
        .filter(|&k| metric_sum(&controllers[k], "roomguard_coordination_holding ", "") > 0.0)
        .collect();
    let fencing: Vec<usize> = (0..controllers.len())
        .filter(|&k| metric_sum(&controllers[k], "roomguard_coordination_fenced_instances ", "") > 0.0)
        .collect();
    let tokens: Vec<u64> =
        controllers.iter().map(|c| metric_sum(c, "roomguard_coordination_fencing_token ", "") as u64).collect();
    if acting.len() != 1
        || !holding.is_empty()
        || !fencing.is_empty()
        || tokens.iter().any(|&t| t != tokens[0] || t == 0)
    {
        return Err(format!(
            "acting controllers {acting:?}, holding {holding:?}, fencing {fencing:?}, fencing tokens {tokens:?}"
        ));
    }
    Ok(tokens[0])
}

fn diverged_total(controllers: &[Controller]) -> f64 {
    controllers.iter().map(|c| metric_sum(c, "roomguard_diverged_bytes_total{", "")).sum()
}
