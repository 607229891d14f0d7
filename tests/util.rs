//! Test harness: the lab's real Redis processes plus an in-process controller.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;
use roomguard::{
    config::RedisSettings,
    controller::Shared,
    daemon::{self, DaemonError},
    info::{ReplicationInfo, Role},
    lab::{Lab, LabSpec},
    probe,
    topology::Addr,
};
use tokio_util::sync::CancellationToken;

/// Every port the suite's labs use goes through here: tests name ports as they are at offset 0
/// (`lab(21100)`, `at(1, 21101)`) and get `port + $RG_TEST_PORT_OFFSET` (default 0), so
/// two worktrees can run the suite at once (e.g. `RG_TEST_PORT_OFFSET=-10000` in one; an
/// offset may be negative). (Not
/// `ROOMGUARD_...`: those are config overrides, and an unknown key is an error.)
/// Labs take 10 ports from their base (instances on base+1..=base+4, a daemon's HTTP on
/// base+9). Ranges in use at offset 0: 21000-21349, 22000-22589 and 24800-24879 (the scripted
/// suite), 24880-24949 (`tests/coordination.rs`, one etcd each), 23000-23999 (the Redis version tests), 25000-25299 (maintenance mode, secrets from files,
/// the ops features of issue 14), 25500-25799 (logs, configuration errors, docs), 25800-25999
/// (clients, issue 15's last items), 26000-26019
/// (supervision), 26100-26999 (etcd clusters for coordination, issue 16: 10 ports per cluster,
/// see `tests/etcd.rs`), 27000-27309, 27700-27709 (following another writer of the state file),
/// 28000-28299, 28300-28349 (`tests/silence.rs`) and 28500-28599 (issue 12's last gaps).
pub fn port(logical: u16) -> u16 {
    static OFFSET: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| match std::env::var("RG_TEST_PORT_OFFSET") {
        Err(_) => 0,
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("RG_TEST_PORT_OFFSET={v:?} is not a port offset")),
    });
    // Below 1024 lie system services. Linux hands out ephemeral ports from 32768 by default,
    // so a negative offset (ranges below 21000) is the safer choice for a second suite.
    u16::try_from(i32::from(logical) + offset)
        .ok()
        .filter(|p| (1024..60000).contains(p))
        .unwrap_or_else(|| panic!("RG_TEST_PORT_OFFSET={offset} puts port {logical} outside 1024..60000"))
}

/// Gives the calling test a deadline: `$RG_TEST_TIMEOUT_SECS` (default 300 s) from its first
/// call. A test still running then makes a watchdog print its name and exit the test binary
/// with code 101 (its redis-servers and daemons die with it, its iptables rules and every
/// [`roomguard::lab::BlackHole`] of the process are removed),
/// instead of hanging the suite. libtest runs every test on its own thread,
/// named after the test; the deadline ends with that thread. Called by [`lab`], [`lab_with`],
/// [`Controller::start_with`], [`Daemon::start`] and [`run`], so every test that starts
/// Redis, a controller or a process has one.
pub fn deadline() {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Running(Arc<AtomicBool>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    thread_local! {
        static REGISTERED: std::cell::RefCell<Option<Running>> = const { std::cell::RefCell::new(None) };
    }
    type Tests = std::sync::Mutex<Vec<(String, Instant, Arc<AtomicBool>)>>;
    static TESTS: std::sync::OnceLock<Tests> = std::sync::OnceLock::new();
    let name = std::thread::current().name().unwrap_or("").to_string();
    if name.is_empty() || name == "main" || name.starts_with("tokio-") {
        return;
    }
    if REGISTERED.with(|r| r.borrow().is_some()) {
        return;
    }
    let tests = TESTS.get_or_init(|| {
        let limit =
            Duration::from_secs(std::env::var("RG_TEST_TIMEOUT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(300));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let tests = TESTS.get().unwrap().lock().unwrap();
                for (name, started, done) in tests.iter() {
                    if !done.load(Ordering::Acquire) && started.elapsed() > limit {
                        // Straight to the process's stderr: eprintln! is captured by libtest.
                        use std::io::Write;
                        let _ = writeln!(
                            std::io::stderr(),
                            "\ntest {name} has run for more than {limit:?} (RG_TEST_TIMEOUT_SECS): \
                             exiting the test binary"
                        );
                        // Black holes, partitions and cut-offs carry their own owners.
                        roomguard::lab::remove_live_black_holes();
                        if let Ok(labs) = LABS_WITH_RULES.try_lock() {
                            for base in labs.iter() {
                                for table in ["filter", "nat"] {
                                    let owner = format!("roomguard test lab {}", port(*base));
                                    roomguard::lab::delete_iptables_owner(table, &owner);
                                }
                            }
                        }
                        std::process::exit(101);
                    }
                }
            }
        });
        std::sync::Mutex::new(Vec::new())
    });
    let done = Arc::new(AtomicBool::new(false));
    tests.lock().unwrap().push((name, Instant::now(), done.clone()));
    REGISTERED.with(|r| *r.borrow_mut() = Some(Running(done)));
}

/// `text` with every lab port in it (a 5-digit number from 21000 to 28999) through [`port`]:
/// for expected strings that name instances and shards ("shard-22011 127.0.0.11 22011").
pub fn ports_in(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        match digits.parse::<u16>() {
            Ok(n) if digits.len() == 5 && (21000..29000).contains(&n) => out.push_str(&port(n).to_string()),
            _ => out.push_str(digits),
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Starts the seed deployment on `base_port + 1 ..= base_port + 4` of 127.0.0.11 / .12
/// (through [`port`]). Every test passes its own base port so tests run in parallel.
pub async fn lab(base_port: u16) -> Lab {
    deadline();
    clean_stale_iptables(base_port);
    let spec = LabSpec { base_port: port(base_port), http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.unwrap_or_else(|e| panic!("the lab does not start: {e}"));
    std::fs::write(config_path(&lab), spec.config_toml()).unwrap();
    lab
}

/// [`lab`] with more rooms (one IP each, e.g. 127.0.0.13 for a third room) or other changes;
/// `spec.base_port` goes through [`port`].
pub async fn lab_with(spec: LabSpec) -> Lab {
    deadline();
    clean_stale_iptables(spec.base_port);
    let spec = LabSpec { base_port: port(spec.base_port), http_listen: "127.0.0.1:0".into(), ..spec };
    let lab = Lab::start(&spec).await.unwrap_or_else(|e| panic!("the lab does not start: {e}"));
    std::fs::write(config_path(&lab), spec.config_toml()).unwrap();
    lab
}

/// The lab's config written as a file (for the CLI); its state file is the lab's.
pub fn config_path(lab: &Lab) -> PathBuf {
    lab.dir().join("controller.toml")
}

pub struct Controller {
    pub shared: Arc<Shared>,
    pub http: SocketAddr,
    /// The Sentinel-compatible endpoint, when the config has `[sentinel]`.
    pub sentinel: Option<SocketAddr>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

impl Controller {
    pub async fn start(lab: &Lab) -> Controller {
        Self::start_with(lab.config.clone()).await
    }

    pub async fn start_with(config: roomguard::config::Config) -> Controller {
        deadline();
        // The controller's log, shown with a failing test's output (filter: ROOMGUARD_TEST_LOG).
        let filter = tracing_subscriber::EnvFilter::try_from_env("ROOMGUARD_TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("roomguard=info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_test_writer().try_init();
        let daemon = daemon::Daemon::start(config).await.expect("controller starts");
        let (shared, http, sentinel) = (daemon.shared(), daemon.http_addr(), daemon.sentinel_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            daemon.run_until(async move { stop.cancelled().await })
        });
        let c = Controller { shared, http, sentinel, stop, task };
        assert!(wait_until(Duration::from_secs(5), || async { c.ready() }).await, "controller never ready");
        c
    }

    pub fn ready(&self) -> bool {
        self.shared.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Sum of every sample of a metric whose line contains all of `filters`.
    pub fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        metric_value(&self.metrics(), name, filters)
    }

    /// The status table and verdict, for failure messages.
    pub fn report_text(&self) -> String {
        self.shared.report.read().unwrap().as_ref().map(|r| r.render()).unwrap_or_default()
    }

    /// Waits until the controller reports `room` primary and the deployment healthy.
    pub async fn wait_healthy_primary(&self, room: &str, timeout: Duration) -> bool {
        wait_until(timeout, || async {
            self.shared
                .report
                .read()
                .unwrap()
                .as_ref()
                .is_some_and(|r| r.primary_room.as_deref() == Some(room) && r.healthy)
        })
        .await
    }

    /// Waits until exactly one failover to `room` has been counted as done.
    pub async fn wait_one_failover_to(&self, room: &str, timeout: Duration) -> bool {
        let room = format!("room=\"{room}\"");
        wait_until(timeout, || async { self.metric("roomguard_failovers_total", &[&room, "outcome=\"ok\""]) == 1.0 })
            .await
    }

    /// Stops the controller; every one of its tasks must have run until then.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().expect("no task of the controller ended early");
    }
}

pub fn metric_value(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn addr(s: &str) -> Addr {
    s.parse().unwrap()
}

pub async fn info(a: &str) -> Option<ReplicationInfo> {
    probe::probe_once(&addr(a), &RedisSettings::default(), Duration::from_millis(500)).await.ok()
}

pub async fn is_master(a: &str) -> bool {
    info(a).await.is_some_and(|i| i.role == Role::Master)
}

/// True when `a` replicates `master` with its link up.
pub async fn replicates(a: &str, master: &str) -> bool {
    info(a).await.and_then(|i| i.master).is_some_and(|l| l.link_up && format!("{}:{}", l.host, l.port) == master)
}

pub async fn connect(a: &str) -> MultiplexedConnection {
    probe::connect(&addr(a), &RedisSettings::default(), Duration::from_secs(1)).await.unwrap()
}

/// A lab instance's address: room `room`'s instance on logical port `p` (through [`port`]).
pub fn at(room: u8, p: u16) -> String {
    format!("127.0.0.1{room}:{}", port(p))
}

/// The name of the shard whose room-1 head is on logical port `head`.
pub fn shard(head: u16) -> String {
    format!("shard-{}", port(head))
}

/// `REPLICAOF`/`SLAVEOF` calls `a` has served since it started (`INFO commandstats`, calls
/// plus rejected calls): what any controller or CLI sent it, counted by Redis itself. `None`
/// when it does not answer.
pub async fn replicaof_calls(a: &str) -> Option<u64> {
    replicaof_calls_with(a, &RedisSettings::default()).await
}

async fn replicaof_calls_with(a: &str, settings: &RedisSettings) -> Option<u64> {
    let mut con = probe::connect(&addr(a), settings, Duration::from_secs(1)).await.ok()?;
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut con).await.ok()?;
    let mut calls = 0;
    for line in stats.lines() {
        let Some((name, fields)) = line.split_once(':') else { continue };
        if name != "cmdstat_replicaof" && name != "cmdstat_slaveof" {
            continue;
        }
        for field in fields.split(',') {
            if let Some(("calls" | "rejected_calls", n)) = field.split_once('=') {
                calls += n.parse::<u64>().unwrap();
            }
        }
    }
    Some(calls)
}

/// [`replicaof_calls`] of every instance of the lab that runs and is not in `skip` (each with
/// the lab's credentials); panics naming one that does not answer.
pub async fn replicaof_calls_except(lab: &Lab, skip: &[String]) -> std::collections::BTreeMap<String, u64> {
    let mut calls = std::collections::BTreeMap::new();
    for (id, i) in lab.topology().instances.iter().enumerate() {
        let a = i.addr.to_string();
        if skip.contains(&a) || !lab.servers[id].is_running() {
            continue;
        }
        let n = replicaof_calls_with(&a, lab.config.redis.instance(id))
            .await
            .unwrap_or_else(|| panic!("{a} does not answer INFO commandstats"));
        calls.insert(a, n);
    }
    calls
}

/// [`replicaof_calls_except`] of every running instance.
pub async fn replicaof_calls_all(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    replicaof_calls_except(lab, &[]).await
}

/// Asserts that no running instance of the lab was sent `REPLICAOF`/`SLAVEOF` since it
/// started: no action, judged by Redis (the controller's own counter misses the switchover's
/// commands and any it does not count).
pub async fn assert_no_replicaof(lab: &Lab, context: &str) {
    assert_no_replicaof_except(lab, &[], context).await
}

/// [`assert_no_replicaof`], skipping `skip` (instances replaced by fake servers).
pub async fn assert_no_replicaof_except(lab: &Lab, skip: &[String], context: &str) {
    let calls = replicaof_calls_except(lab, skip).await;
    assert!(calls.values().all(|&n| n == 0), "REPLICAOF/SLAVEOF were sent: {calls:?}\n{context}");
}

/// True when `a` answers and is a replica (of anything, link up or not).
pub async fn is_replica(a: &str) -> bool {
    info(a).await.is_some_and(|i| i.role == Role::Replica)
}

/// The replication state of `a`, for failure messages: `master`, `replica of h:p (up|down)`,
/// or `unreachable`.
pub async fn describe(a: &str) -> String {
    match info(a).await {
        None => "unreachable".into(),
        Some(i) => match i.master {
            None => format!("{:?}", i.role).to_lowercase(),
            Some(l) => format!("replica of {}:{} ({})", l.host, l.port, if l.link_up { "up" } else { "down" }),
        },
    }
}

/// True when every chain (head first) is exactly in place: the head a master, every next
/// instance a replica of the one before it with its link up.
pub async fn chains_are(chains: &[Vec<String>]) -> bool {
    for chain in chains {
        if !is_master(&chain[0]).await {
            return false;
        }
        for pair in chain.windows(2) {
            if !replicates(&pair[1], &pair[0]).await {
                return false;
            }
        }
    }
    true
}

/// Waits until [`chains_are`]; on timeout, panics with every instance's state and `context`.
pub async fn wait_chains(chains: &[Vec<String>], timeout: Duration, context: &str) {
    if wait_until(timeout, || chains_are(chains)).await {
        return;
    }
    let mut seen = String::new();
    for a in chains.iter().flatten() {
        seen.push_str(&format!("\n  {a}: {}", describe(a).await));
    }
    panic!("chains not in place within {timeout:?}: expected {chains:?}; seen:{seen}\n{context}");
}

pub fn roomguard(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roomguard"));
    cmd.args(args).env_remove("ROOMGUARD_CONFIG").env("ROOMGUARD_LOG", "warn");
    cmd
}

/// [`roomguard`] as a process killed when the test binary dies, even by SIGKILL (run through
/// `setpriv --pdeathsig KILL`); spawn it with `roomguard::lab::spawn_child`, whose thread lives
/// as long as the test binary (see `roomguard::lab`).
pub fn roomguard_dying_with_us(args: &[&str]) -> std::process::Command {
    let mut cmd = roomguard::lab::dies_with_parent(std::path::Path::new(env!("CARGO_BIN_EXE_roomguard")));
    cmd.args(args).env_remove("ROOMGUARD_CONFIG").env("ROOMGUARD_LOG", "warn");
    cmd
}

/// Runs `cmd` to its end (its stdin empty; stdout and stderr captured), killed with the test
/// binary: it runs under `setpriv --pdeathsig KILL`, forked from a blocking-pool thread that
/// stays blocked in `output()` until it exits (the signal fires when that thread exits).
pub async fn run(cmd: std::process::Command) -> Output {
    deadline();
    let mut wrapped = roomguard::lab::dies_with_parent(std::path::Path::new(cmd.get_program()));
    wrapped.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    tokio::task::spawn_blocking(move || wrapped.output().unwrap()).await.unwrap()
}

/// Sends one raw HTTP/1.1 request (with `Connection: close`) and returns (status, body).
async fn http_request(addr: SocketAddr, request: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A minimal HTTP/1.1 GET; enough for the controller's endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await
}

/// A minimal HTTP/1.1 POST with an optional bearer token.
pub async fn http_post(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    http_request(
        addr,
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `promtool`, which the test command installs (Debian package `prometheus`).
pub fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: scripts/test installs it (apt-get install -y prometheus)");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// An iptables rule in the lab's own chain ([`roomguard::lab::IPTABLES_CHAIN`], jumped to from
/// `OUTPUT`), deleted when dropped so a failing test never leaves the machine cut off. It is
/// tagged with its lab's base port: the first rule a lab adds first deletes every rule a killed
/// run left for that lab, so a leftover (a DNAT to a proxy long gone, a DROP) never breaks a
/// later run. Restrict every rule to the lab's own ports: other tests run at the same time.
/// scripts/test installs iptables.
pub struct IptablesRule(Vec<String>);

impl IptablesRule {
    /// `iptables -t <table> -A ROOMGUARD_LAB <rule>`, owned by the lab at logical `base`.
    pub fn add(base: u16, table: &str, rule: &[&str]) -> IptablesRule {
        clean_stale_iptables(base);
        let owner = format!("roomguard test lab {}", port(base));
        let full = roomguard::lab::add_iptables_rule(table, &owner, rule)
            .unwrap_or_else(|e| panic!("iptables failed (root and iptables needed): {e}"));
        IptablesRule(full)
    }
}

/// The labs (logical base ports) whose leftover rules this process has cleaned: the ones it
/// may add rules for. The deadline watchdog removes their rules before it exits.
static LABS_WITH_RULES: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Deletes the [`IptablesRule`]s a killed run left for the lab at logical `base` (and the black
/// holes of its ports), once per test binary: [`lab`] and [`lab_with`] do it before starting
/// the servers (a leftover DROP would keep them from linking), the first rule of a lab too.
pub fn clean_stale_iptables(base: u16) {
    let mut cleaned = LABS_WITH_RULES.lock().unwrap();
    if cleaned.contains(&base) {
        return;
    }
    let owner = format!("roomguard test lab {}", port(base));
    for table in ["filter", "nat"] {
        roomguard::lab::delete_iptables_owner(table, &owner);
    }
    cleaned.push(base);
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        roomguard::lab::delete_iptables_rule(&self.0);
    }
}

/// A uid (and gid of the same number) to run one process under, so that iptables can tell it
/// from the others: every process of the lab connects from 127.0.0.1, whatever room it stands
/// for, so a rule by address cannot cut "room 1's controller" from room 2; a rule by owner
/// (`-m owner --uid-owner`, valid in `OUTPUT`, which jumps to the lab's chain) can. The uid
/// needs no passwd entry. Use distinct uids for processes a test cuts differently.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControllerUid {
    pub uid: u32,
    pub gid: u32,
}

impl ControllerUid {
    pub const fn new(uid: u32) -> ControllerUid {
        ControllerUid { uid, gid: uid }
    }

    /// `cmd` to run under this uid and gid, without supplementary groups (std drops them when
    /// the parent is root). Works on [`roomguard_dying_with_us`]'s `setpriv` command: the uid
    /// changes before `setpriv` runs, which then sets the death signal and execs. Spawn it
    /// yourself (`roomguard::lab::spawn_child`, or [`Daemon::start_as`] for `roomguard run`):
    /// [`run`] rebuilds the command and would lose the uid. Files the process needs: see
    /// [`open_to_all`].
    pub fn apply(&self, cmd: &mut std::process::Command) {
        std::os::unix::process::CommandExt::uid(cmd, self.uid);
        std::os::unix::process::CommandExt::gid(cmd, self.gid);
    }
}

/// A temporary directory that processes under other uids can reach: in /tmp (world-traversable
/// on every Linux), not in `$TMPDIR`, which may be private to this user.
pub fn tempdir_for_other_uids(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap()
}

/// chmod 0777 on `dir` (a lab's or test's tempdir, 0700 when created) and 0666 on the files
/// directly in it: what a process under a [`ControllerUid`] needs to read the config and write
/// the state file beside it (the state file is replaced by rename, so the directory must be
/// writable).
pub fn open_to_all(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
}

/// Cuts every TCP connection between processes of `uid` and `ip` on `ports`, both ways, until
/// the rules are dropped (owned by the lab or cluster at logical `base`). A packet the uid
/// sends to `ip` marks its connection (CONNMARK) and every packet of a marked connection is
/// dropped, in either direction: with an owner match alone the peer's packets would still
/// arrive (on loopback they leave from the peer's socket, not the uid's), measured at about
/// 200 ms of server-pushed data (one retransmission timeout) after the cut. New connections
/// hang in `connect` (DROP, not RST). The mark is unique per physical port range, uid and
/// address, so cuts of other tests never match. The owner match is valid only in `OUTPUT` and
/// `POSTROUTING`: the lab's chain is jumped to from `OUTPUT` alone (loopback packets, both
/// ways, pass there), which is why this works; never add a jump to it from `INPUT`.
pub fn cut_uid_from(base: u16, uid: u32, ip: &str, ports: std::ops::RangeInclusive<u16>) -> Vec<IptablesRule> {
    let octet: u32 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).expect("an IPv4 address");
    let mark = format!("0x{:x}", (u32::from(*ports.start()) << 16) | ((uid & 0xff) << 8) | octet);
    let (uid, range) = (uid.to_string(), format!("{}:{}", ports.start(), ports.end()));
    let set = ["-m", "owner", "--uid-owner", &uid, "-d", ip, "-p", "tcp", "--dport", &range];
    vec![
        IptablesRule::add(base, "filter", &[&set[..], &["-j", "CONNMARK", "--set-mark", &mark]].concat()),
        IptablesRule::add(base, "filter", &["-m", "connmark", "--mark", &mark, "-j", "DROP"]),
    ]
}

/// The controller as a separate `roomguard run` process: for what only a process shows (its
/// log, its memory). Killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub http: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    /// Runs `roomguard run --config <config>`; the config's `[http] listen` must be `http`.
    pub async fn start(config: &std::path::Path, http: SocketAddr) -> Daemon {
        Self::start_as(config, http, None).await
    }

    /// [`Self::start`] under `uid` (see [`ControllerUid`]) when given.
    pub async fn start_as(config: &std::path::Path, http: SocketAddr, uid: Option<ControllerUid>) -> Daemon {
        deadline();
        let log = config.with_extension("log");
        let mut cmd = roomguard_dying_with_us(&["run", "--config", config.to_str().unwrap()]);
        if let Some(uid) = uid {
            // The checkout may lie under a directory that uid cannot enter (a CI clone in a
            // 0700 temporary directory): it runs a copy of the binary beside its config.
            let dir = config.parent().expect("a config file in a directory");
            let copy = dir.join("roomguard-as-uid");
            if !copy.exists() {
                std::fs::copy(env!("CARGO_BIN_EXE_roomguard"), &copy).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            cmd = roomguard::lab::dies_with_parent(&copy);
            cmd.args(["run", "--config", config.to_str().unwrap()]).env_remove("ROOMGUARD_CONFIG");
            uid.apply(&mut cmd);
        }
        cmd.env("ROOMGUARD_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null());
        let child = roomguard::lab::spawn_child(cmd).unwrap();
        let d = Daemon { child, http, log };
        assert!(
            wait_until(Duration::from_secs(10), || async { d.metric("roomguard_rounds_total", &[]).await > 0.0 }).await,
            "roomguard run never served metrics on {http}; log:\n{}",
            d.log_text()
        );
        d
    }

    pub async fn metrics(&self) -> String {
        match tokio::net::TcpStream::connect(self.http).await {
            Ok(_) => http_get(self.http, "/metrics").await.1,
            Err(_) => String::new(),
        }
    }

    pub async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        metric_value(&self.metrics().await, name, filters)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`: the peak resident set).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGKILL: the process dies at once (no orderly stop, nothing released).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process runs (it did not crash).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hook script that appends its environment to `hooks.log` in the lab's directory.
pub fn record_hook(lab: &Lab) -> PathBuf {
    let record = lab.dir().join("record.sh");
    std::fs::write(
        &record,
        "#!/bin/sh\necho \"$RG_EVENT|$RG_SHARD|$RG_ROOM|$RG_OLD_MASTER|$RG_NEW_MASTER|$RG_TRIGGER|$RG_INSTANCE\" >> \"$(dirname \"$0\")/hooks.log\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&record).status().unwrap();
    record
}

/// The lab's config with [`record_hook`] on every hook event.
pub fn with_recording_hook(lab: &Lab) -> roomguard::config::Config {
    let mut config = lab.config.clone();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: roomguard::events::HOOK_EVENTS.iter().map(|s| s.to_string()).collect(),
        command: vec![record_hook(lab).display().to_string()],
        timeout: Duration::from_secs(10),
    }];
    config
}

/// What [`record_hook`] recorded so far, one line per run.
pub fn hook_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir().join("hooks.log")).unwrap_or_default()
}

/// `roomguard failover --room <room>` with `config`, which must succeed gracefully; its stdout.
pub async fn graceful_failover_cli(config: &std::path::Path, room: &str) -> String {
    let out = run(roomguard(&["failover", "--room", room, "--config", config.to_str().unwrap()])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failover failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("graceful failover"), "{stdout}");
    stdout
}

/// `chattr +i` on a directory: nothing can be created in it, not even by root. Undone on drop.
pub struct Immutable(std::path::PathBuf);

impl Immutable {
    pub fn set(dir: &std::path::Path) -> Immutable {
        let status = std::process::Command::new("chattr").arg("+i").arg(dir).status().expect("chattr");
        assert!(status.success(), "chattr +i {}", dir.display());
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A `SET` on `a` answered within a second: writes are not paused.
pub async fn accepts_writes(a: &str) -> bool {
    let mut con = connect(a).await;
    let mut set = redis::cmd("SET");
    set.arg("after-failover").arg(1);
    matches!(tokio::time::timeout(Duration::from_secs(1), set.query_async::<()>(&mut con)).await, Ok(Ok(())))
}

/// Every kind of evidence against room 1 that controller `c`'s witnesses (room 2's heads) were
/// judged on, from every report it publishes until room 1 is lost or `within` passes (one report
/// a round; the deciding round's is replaced ~100 ms later, hence the 5 ms sampling).
pub fn sample_room_1_evidence(
    c: &Controller,
    within: Duration,
) -> tokio::task::JoinHandle<std::collections::BTreeSet<String>> {
    let shared = c.shared.clone();
    tokio::spawn(async move {
        let mut evidence = std::collections::BTreeSet::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let report = shared.report.read().unwrap().clone();
            for w in report.iter().flat_map(|r| &r.rooms[0].witnesses) {
                if let Some(e) = w.evidence.filter(|e| !e.hears()) {
                    evidence.insert(serde_json::to_value(e).unwrap()["kind"].as_str().unwrap().to_string());
                }
            }
            if report.is_some_and(|r| r.rooms[0].status == roomguard::detect::RoomStatus::Lost) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        evidence
    })
}
