//! The lab: the seed's eight Redis instances as real local `redis-server` processes, chained
//! as the seed chains them, on 127.0.0.11 (room 1) and 127.0.0.12 (room 2). All of
//! 127.0.0.0/8 is loopback on Linux, so two "hosts" need no setup.
//!
//! `roomguard lab` runs the controller against it; the integration tests use the same
//! [`Lab`] on their own ports, so the demo and the tests exercise one harness.
//!
//! Every server is started with `--bind <room ip> --bind-source-addr <room ip>` so that
//! replication between rooms leaves from the room's own address (masters list replicas at
//! the right address, as on real hosts), `--protected-mode no` so Redis 7 does not refuse
//! peers from 127.0.0.12, `--repl-diskless-sync-delay 0` so a chain comes up in a second
//! instead of 5 s per hop, and `--repl-ping-replica-period 1` so an idle master is never
//! silent for more than a second: the production recommendation, with which a silent room is
//! detected in about a second (see [`crate::detect`]).
//!
//! Any server from Redis 2.8 to 7.x or Valkey 8 will do (`--redis-server PATH`, or
//! `ROOMGUARD_REDIS_SERVER`): the arguments follow its `--version`. Older versions lack some
//! of them: `bind-source-addr` came with 7.0 (3.0 to 6.2 bind replication to their first
//! `bind` address anyway; 2.8 does not, so masters list room 2's replicas as 127.0.0.1, which
//! roomguard never relies on), `protected-mode` with 3.2, `repl-diskless-sync-delay` with
//! 2.8.18, and before 5.0 the names are `slaveof` and `repl-ping-slave-period`.
//!
//! Nothing the lab starts outlives the process that started it: every `redis-server` is run
//! through util-linux `setpriv --pdeathsig KILL` (when it is installed) from one long-lived
//! thread (the death signal fires when the *thread* that forked exits), and every iptables
//! rule lives in one chain, [`IPTABLES_CHAIN`], where a rule left by a killed run is removed
//! before the same ports are used again.

mod slow;

pub use slow::SlowRoom;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    config::{Config, ConfigError, RedisSettings},
    info::Role,
    probe,
    topology::{Addr, Topology},
    version::{ServerVersion, VersionError},
};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "neither `redis-server` nor `valkey-server` was found on PATH ({0}). Install one: `apt-get install -y redis-server` \
         (Debian/Ubuntu), or set ROOMGUARD_REDIS_SERVER to its path"
    )]
    NoRedisServer(String),
    #[error("cannot create the lab directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot start redis-server for {addr}: {error}")]
    Spawn { addr: Addr, error: std::io::Error },
    #[error("cannot run `{} --version`: {error}", binary.display())]
    VersionRun { binary: PathBuf, error: std::io::Error },
    #[error("`{} --version`: {error}", binary.display())]
    Version { binary: PathBuf, error: VersionError },
    #[error("redis-server for {addr} did not become ready within {secs}s; see its log {log}")]
    NotReady { addr: Addr, secs: u64, log: PathBuf },
    #[error(
        "port {port} of {addr} is answered by another redis-server (pid {theirs}), not the one \
         started here (pid {ours}): a leftover of a killed run? Stop it (`kill {theirs}`) and retry"
    )]
    NotOurs { addr: Addr, port: u16, theirs: u32, ours: u32 },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot black-hole {ip}: `iptables {rule}` failed: {why} (it needs root and iptables)")]
    Iptables { ip: String, rule: String, why: String },
    #[error("cannot put a latency proxy in front of {addr}: {why}")]
    Proxy { addr: Addr, why: String },
}

/// The Redis server binary: `$ROOMGUARD_REDIS_SERVER`, else `redis-server` from `PATH`, else
/// `valkey-server` (a machine with only Valkey installed).
pub fn redis_server_binary() -> Result<PathBuf, LabError> {
    if let Some(path) = std::env::var_os("ROOMGUARD_REDIS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path(&path, &["redis-server", "valkey-server"])
        .ok_or_else(|| LabError::NoRedisServer(std::env::var("PATH").unwrap_or_default()))
}

/// The first of `names` found in a directory of `path`, in the order of `names`.
fn find_on_path(path: &std::ffi::OsStr, names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

/// The version a `redis-server` binary reports with `--version`.
pub fn binary_version(binary: &Path) -> Result<ServerVersion, LabError> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| LabError::VersionRun { binary: binary.to_owned(), error })?;
    ServerVersion::from_version_output(&String::from_utf8_lossy(&output.stdout))
        .map_err(|error| LabError::Version { binary: binary.to_owned(), error })
}

/// One `redis-server` child process, killed when dropped.
pub struct RedisServer {
    pub addr: Addr,
    /// What the binary reported with `--version`; the start arguments follow it.
    pub version: ServerVersion,
    binary: PathBuf,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server; `replicaof` makes it a replica from the start.
    pub fn start(
        binary: &Path,
        addr: &Addr,
        dir: &Path,
        replicaof: Option<&Addr>,
        extra: &[String],
    ) -> Result<Self, LabError> {
        let mut server = RedisServer {
            addr: addr.clone(),
            version: binary_version(binary)?,
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            extra: extra.to_vec(),
            child: None,
        };
        server.spawn(replicaof)?;
        Ok(server)
    }

    fn spawn(&mut self, replicaof: Option<&Addr>) -> Result<(), LabError> {
        let (a, v) = (&self.addr, &self.version);
        let mut cmd = dies_with_parent(&self.binary);
        cmd.args(["--port", &a.port.to_string(), "--bind", &a.host]);
        if v.has_bind_source_addr() {
            cmd.args(["--bind-source-addr", &a.host]);
        }
        if v.has_protected_mode() {
            cmd.args(["--protected-mode", "no"]);
        }
        if v.has_diskless_sync() {
            cmd.args(["--repl-diskless-sync-delay", "0"]);
        }
        cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args([&format!("--{}", v.ping_period_name()), "1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--dbfilename")
            .arg(format!("dump-{}-{}.rdb", a.host, a.port))
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(m) = replicaof {
            cmd.args([&format!("--{}", v.replicaof_directive()), &m.host, &m.port.to_string()]);
        }
        let child = spawn_child(cmd).map_err(|error| LabError::Spawn { addr: a.clone(), error })?;
        self.child = Some(child);
        Ok(())
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}-{}.log", self.addr.host, self.addr.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
        }
    }

    /// SIGKILL: a crash. Sockets close, replicas see their link drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: a silent hang. Sockets stay open and nothing answers.
    pub fn hang(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::hang`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts a killed server again, empty (no persistence): as a master, or as a replica.
    pub fn restart(&mut self, replicaof: Option<&Addr>) -> Result<(), LabError> {
        self.kill();
        self.spawn(replicaof)
    }

    /// [`Self::restart`], with `args` added to the command line from now on (later
    /// arguments win over the lab's defaults).
    pub fn restart_with(&mut self, replicaof: Option<&Addr>, args: &[&str]) -> Result<(), LabError> {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self.restart(replicaof)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits until the server answers `INFO replication`, and checks that the server answering
    /// is this child (`INFO server` `process_id`), not a leftover on the same port.
    pub async fn wait_ready(&self, auth: &RedisSettings, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if probe::probe_once(&self.addr, auth, Duration::from_millis(200)).await.is_ok()
                && let Some(theirs) = self.answering_pid(auth).await
            {
                let ours = self.pid().unwrap_or(0);
                if theirs != ours {
                    return Err(LabError::NotOurs { addr: self.addr.clone(), port: self.addr.port, theirs, ours });
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LabError::NotReady { addr: self.addr.clone(), secs: timeout.as_secs(), log: self.log_path() })
    }
}

impl RedisServer {
    /// The `process_id` of the server answering on this address (`INFO server`).
    async fn answering_pid(&self, auth: &RedisSettings) -> Option<u32> {
        let mut con = probe::connect(&self.addr, auth, Duration::from_millis(500)).await.ok()?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut con).await.ok()?;
        info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|p| p.trim().parse().ok())
    }
}

/// `binary` as a command that dies with this process: `setpriv --pdeathsig KILL -- binary`
/// when util-linux' `setpriv` is installed (it sets `PR_SET_PDEATHSIG` and execs, so the pid
/// is the server's), else `binary` alone. Spawn it with [`spawn_child`].
pub fn dies_with_parent(binary: &Path) -> Command {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|dir| dir.join("setpriv")).find(|p| p.is_file())
    });
    match setpriv {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(binary);
            cmd
        }
        None => Command::new(binary),
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one thread that lives as long as the process. `PR_SET_PDEATHSIG` fires
/// when the thread that forked the child exits, not the process: a child forked from a
/// short-lived thread (tokio's `spawn_blocking` pool retires idle threads after 10 s) would be
/// killed under a running test.
pub fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                // The sender lives in a static: this loop ends only with the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the lab's spawner thread starts");
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = std::sync::mpsc::channel();
    spawner.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, reply)).map_err(std::io::Error::other)?;
    answer.recv().map_err(std::io::Error::other)?
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Where the lab's instances live.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// One IP per room: room `i` is named `i + 1`.
    pub room_ips: Vec<String>,
    /// Shard `i` (1-based) has its head on `base + i` and its tail on `base + shards + i`:
    /// with 2 shards and base 6400 these are the seed's 6401/6403 and 6402/6404.
    pub base_port: u16,
    /// Number of shards (2 in the seed; more for scale benchmarks).
    pub shards: u16,
    /// `[http] listen` of the lab's controller.
    pub http_listen: String,
    /// Extra `redis-server` arguments for every instance.
    pub redis_args: Vec<String>,
    /// `requirepass`/`masterauth` on every instance, and `[redis] password` in the config.
    pub password: Option<String>,
    /// The config's `[redis]` section body, verbatim (replaces the one `password` writes):
    /// for ACL users, TLS files and overrides.
    pub redis_section: Option<String>,
    /// Serve TLS only, on the instances' ports, and replicate over TLS.
    pub tls: Option<LabTls>,
    /// `[sentinel] listen`: the Sentinel-compatible endpoint (off when `None`).
    pub sentinel_listen: Option<String>,
    /// Start every instance as a direct replica of its shard's room-1 head instead of the
    /// seed's chain: the topology Redis Sentinel can fail over (benchmarks compare them).
    pub flat: bool,
    /// The `redis-server` binary; `None`: [`redis_server_binary`].
    pub redis_server: Option<PathBuf>,
}

/// Certificate files for a TLS lab (`redis-server --tls-port`).
#[derive(Clone, Debug)]
pub struct LabTls {
    pub ca_file: PathBuf,
    /// The server certificate; with `auth_clients`, also what replicas present to masters.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `tls-auth-clients yes`: clients must present a certificate signed by the CA.
    pub auth_clients: bool,
}

impl LabTls {
    fn args(&self, port: u16) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&self.cert_file),
            "--tls-key-file".into(),
            path(&self.key_file),
            "--tls-ca-cert-file".into(),
            path(&self.ca_file),
            "--tls-replication".into(),
            "yes".into(),
            "--tls-auth-clients".into(),
            if self.auth_clients { "yes" } else { "no" }.into(),
        ]
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            room_ips: vec!["127.0.0.11".into(), "127.0.0.12".into()],
            base_port: 6400,
            shards: 2,
            http_listen: "127.0.0.1:9480".into(),
            redis_args: vec![],
            password: None,
            redis_section: None,
            tls: None,
            sentinel_listen: None,
            flat: false,
            redis_server: None,
        }
    }
}

impl LabSpec {
    /// The lab's `controller.toml`: the seed deployment on the lab's addresses. The silence
    /// threshold is derived from the masters' 1 s ping period; the cooldown is 10 s instead of
    /// 5 min so that a demo can lose one room after the other.
    pub fn config_toml(&self) -> String {
        let rooms: Vec<String> = (1..=self.room_ips.len()).map(|r| format!("\"{r}\"")).collect();
        let mut out = format!(
            "rooms = [{}]\n\n[controller]\ncooldown = \"10s\"\nstate_file = \"roomguard-state.json\"\n\n\
             [http]\nlisten = \"{}\"\n",
            rooms.join(", "),
            self.http_listen
        );
        if let Some(section) = &self.redis_section {
            out.push_str(&format!("\n[redis]\n{section}\n"));
        } else if let Some(password) = &self.password {
            out.push_str(&format!("\n[redis]\npassword = \"{password}\"\n"));
        }
        if let Some(listen) = &self.sentinel_listen {
            out.push_str(&format!("\n[sentinel]\nlisten = \"{listen}\"\n"));
        }
        for shard in 1..=self.shards {
            let (head, tail) = (self.base_port + shard, self.base_port + self.shards + shard);
            out.push_str(&format!("\n[[shard]]\nname = \"shard-{head}\"\n"));
            for (room, ip) in self.room_ips.iter().enumerate() {
                out.push_str(&format!("room.{} = [\"{ip}:{head}\", \"{ip}:{tail}\"]\n", room + 1));
            }
        }
        out
    }

    /// The lab's validated config, marked as the lab's ([`Config::lab`]: the settings audit
    /// does not warn about the lab's deliberate Redis settings).
    pub fn config(&self, dir: &Path) -> Result<Config, LabError> {
        let mut config = Config::from_toml(&self.config_toml(), "<lab>", dir)?;
        config.lab = true;
        Ok(config)
    }
}

/// A running lab deployment. Dropping it stops every server.
pub struct Lab {
    pub config: Config,
    pub servers: Vec<RedisServer>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Starts every instance, chained as the config's first room primary, and waits until
    /// every link is up.
    pub async fn start(spec: &LabSpec) -> Result<Lab, LabError> {
        let binary = match &spec.redis_server {
            Some(path) => path.clone(),
            None => redis_server_binary()?,
        };
        let dir = tempfile::Builder::new().prefix("roomguard-lab-").tempdir().map_err(LabError::Dir)?;
        let config = spec.config(dir.path())?;
        let t = &config.topology;
        // A black hole a killed run left on these ports would keep the servers from linking.
        for room in 0..t.rooms.len() {
            let (ip, ports) = black_hole_scope(t, room);
            delete_iptables_owner("filter", &black_hole_owner(&ip, &ports));
        }
        let mut args = spec.redis_args.clone();
        if let Some(password) = &spec.password {
            args.extend(["--requirepass", password, "--masterauth", password].map(String::from));
        }
        let mut servers = Vec::new();
        for (id, instance) in t.instances.iter().enumerate() {
            let parent = if spec.flat { flat_parent(t, id) } else { seed_parent(t, id) };
            let mut args = args.clone();
            if let Some(tls) = &spec.tls {
                args.extend(tls.args(instance.addr.port));
            }
            servers.push(RedisServer::start(&binary, &instance.addr, dir.path(), parent.as_ref(), &args)?);
        }
        let lab = Lab { config, servers, dir };
        for (id, s) in lab.servers.iter().enumerate() {
            s.wait_ready(lab.config.redis.instance(id), Duration::from_secs(10)).await?;
        }
        lab.wait_linked(Duration::from_secs(20)).await;
        Ok(lab)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn topology(&self) -> &Topology {
        &self.config.topology
    }

    /// Waits until every running replica reports its link up (best effort).
    pub async fn wait_linked(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let obs = probe::probe_all(self.topology(), &self.config.redis, Duration::from_millis(300)).await;
            let linked = self.servers.iter().enumerate().filter(|(_, s)| s.is_running()).all(|(id, _)| {
                obs.live(id).is_some_and(|i| i.role == Role::Master || i.master.as_ref().is_some_and(|l| l.link_up))
            });
            if linked || Instant::now() >= deadline {
                return linked;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An instance's parent in the seed's chains (`None` for the masters).
    pub fn seed_parent(&self, id: usize) -> Option<Addr> {
        seed_parent(self.topology(), id)
    }

    /// Indices of the servers in a room (room index, 0 = room "1").
    pub fn room(&self, room: usize) -> Vec<usize> {
        self.topology().room_members(room).collect()
    }

    /// Drops every packet to and from `room`'s address on the lab's ports until the returned
    /// guard is dropped: a room gone silent (power or fibre loss), no RST.
    pub fn black_hole(&self, room: usize) -> Result<BlackHole, LabError> {
        let (ip, ports) = black_hole_scope(self.topology(), room);
        BlackHole::start(&ip, ports)
    }

    /// Drops every packet between two rooms on the lab's ports until the guard is dropped.
    pub fn partition(&self, a: usize, b: usize) -> Result<BlackHole, LabError> {
        let (ip_a, ports) = black_hole_scope(self.topology(), a);
        let (ip_b, _) = black_hole_scope(self.topology(), b);
        BlackHole::between(&ip_a, &ip_b, ports)
    }

    /// Drops every packet between this host's 127.0.0.1 (the controllers and clients of the
    /// lab, and the harness) and a room on the lab's ports, both ways, until the guard is
    /// dropped; the rooms still replicate from each other (their instances connect from their
    /// own addresses).
    pub fn cut_off(&self, room: usize) -> Result<BlackHole, LabError> {
        let (ip, ports) = black_hole_scope(self.topology(), room);
        BlackHole::between("127.0.0.1", &ip, ports)
    }

    pub fn server(&mut self, addr: &str) -> &mut RedisServer {
        self.servers.iter_mut().find(|s| s.addr.to_string() == addr).expect("no such lab instance")
    }
}

/// What [`Lab::black_hole`] cuts off: the room's address on the lab's port range.
fn black_hole_scope(t: &Topology, room: usize) -> (String, std::ops::RangeInclusive<u16>) {
    let ip = t.addr(t.room_members(room).next().expect("a room has instances")).host.clone();
    let ports = t.instances.iter().map(|i| i.addr.port);
    let (low, high) = (ports.clone().min().expect("instances"), ports.max().expect("instances"));
    (ip, low..=high)
}

fn black_hole_owner(ip: &str, ports: &std::ops::RangeInclusive<u16>) -> String {
    format!("roomguard black hole {ip} {}:{}", ports.start(), ports.end())
}

/// The flat topology's parent of an instance: its shard's room-1 head (none for the head).
fn flat_parent(t: &Topology, id: usize) -> Option<Addr> {
    let head = t.head(t.instance(id).shard, 0);
    (head != id).then(|| t.addr(head).clone())
}

/// The seed's parent of an instance: its predecessor in room 1's chain order.
fn seed_parent(t: &Topology, id: usize) -> Option<Addr> {
    let shard = t.instance(id).shard;
    let order = t.chain_order(t.head(shard, 0));
    let pos = order.iter().position(|&x| x == id)?;
    pos.checked_sub(1).map(|p| t.addr(order[p]).clone())
}

/// The iptables chain (in the `filter` and `nat` tables) that holds every rule the lab and the
/// tests add, jumped to once from `OUTPUT`: nothing is added to `OUTPUT` itself, and
/// One etcd member (`name`) of a cluster on loopback addresses, as the coordination tests and
/// `scripts/chaos --etcd` run them: a child killed with its parent ([`dies_with_parent`]),
/// `cluster` the members' `name=peer-url` pairs, a cluster `token` unique to the caller (members
/// of another cluster can never join), etcd's default timings (production's), its log on stderr
/// (for the caller to redirect) and none of this process' `ETCD*` variables (etcd reads its
/// flags from them too).
pub fn etcd_member(
    binary: &Path,
    name: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
    cluster: &[String],
    token: &str,
) -> Command {
    let mut cmd = dies_with_parent(binary);
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client_url, "--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &cluster.join(",")])
        .args(["--initial-cluster-state", "new", "--initial-cluster-token", token])
        .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `iptables -F ROOMGUARD_LAB; iptables -t nat -F ROOMGUARD_LAB` removes whatever a killed run
/// left. Each rule carries a comment naming its owner (a black-holed room, a test's lab), and
/// an owner's leftovers are deleted before it adds rules again.
pub const IPTABLES_CHAIN: &str = "ROOMGUARD_LAB";

/// `iptables -w -t <table> <args>`; the error is iptables' own message.
fn iptables(table: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("iptables").args(["-w", "-t", table]).args(args).stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates [`IPTABLES_CHAIN`] in `table` and its one jump from `OUTPUT` (loopback packets pass
/// `OUTPUT` once), unless they exist.
pub fn ensure_iptables_chain(table: &str) -> Result<(), String> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serialized = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if iptables(table, &["-S", IPTABLES_CHAIN]).is_err() {
        // Another process may create it at the same moment: only its absence afterwards counts.
        let _ = iptables(table, &["-N", IPTABLES_CHAIN]);
        iptables(table, &["-S", IPTABLES_CHAIN])?;
    }
    if iptables(table, &["-C", "OUTPUT", "-j", IPTABLES_CHAIN]).is_err() {
        iptables(table, &["-I", "OUTPUT", "1", "-j", IPTABLES_CHAIN])?;
    }
    // Two processes that both found no jump both added one: keep one.
    let jump = format!("-A OUTPUT -j {IPTABLES_CHAIN}");
    let jumps = iptables(table, &["-S", "OUTPUT"])?.lines().filter(|l| l.trim() == jump).count();
    for _ in 1..jumps {
        let _ = iptables(table, &["-D", "OUTPUT", "-j", IPTABLES_CHAIN]);
    }
    Ok(())
}

/// Appends `rule` (match and target, without chain) to [`IPTABLES_CHAIN`] in `table`, with
/// the comment `owner`; returns the full rule, for [`delete_iptables_rule`].
pub fn add_iptables_rule(table: &str, owner: &str, rule: &[&str]) -> Result<Vec<String>, String> {
    ensure_iptables_chain(table)?;
    let mut full: Vec<String> = vec!["-t".into(), table.into(), IPTABLES_CHAIN.into()];
    full.extend(rule.iter().map(|s| s.to_string()));
    full.extend(["-m", "comment", "--comment", owner].map(String::from));
    let args: Vec<&str> = full[3..].iter().map(String::as_str).collect();
    iptables(table, &[&["-A", IPTABLES_CHAIN][..], &args].concat())
        .map_err(|e| format!("-A {}: {e}", full.join(" ")))?;
    Ok(full)
}

/// Deletes one rule returned by [`add_iptables_rule`] (by its content: safe while others add
/// and delete theirs).
pub fn delete_iptables_rule(rule: &[String]) {
    let args: Vec<&str> = rule[3..].iter().map(String::as_str).collect();
    let _ = iptables(&rule[1], &[&["-D", IPTABLES_CHAIN][..], &args].concat());
}

/// Deletes every rule of [`IPTABLES_CHAIN`] in `table` whose comment is `owner`: what a killed
/// run left.
pub fn delete_iptables_owner(table: &str, owner: &str) {
    let Ok(listing) = iptables(table, &["-S", IPTABLES_CHAIN]) else { return };
    for line in listing.lines() {
        let Some(spec) = line.strip_prefix(&format!("-A {IPTABLES_CHAIN} ")) else { continue };
        let words = shell_words(spec);
        if !words.windows(2).any(|w| w[0] == "--comment" && w[1] == owner) {
            continue;
        }
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        let _ = iptables(table, &[&["-D", IPTABLES_CHAIN][..], &args].concat());
    }
}

/// Splits `iptables -S` output into words (double quotes group, as iptables prints comments).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The rules of every [`BlackHole`] alive in this process, for [`remove_live_black_holes`].
static LIVE_BLACK_HOLES: std::sync::Mutex<Vec<Vec<String>>> = std::sync::Mutex::new(Vec::new());

/// Deletes the rules of every [`BlackHole`] this process holds, for a process about to exit
/// without dropping them (a test harness' timeout watchdog calls `exit`).
pub fn remove_live_black_holes() {
    let rules = std::mem::take(&mut *LIVE_BLACK_HOLES.lock().unwrap_or_else(|e| e.into_inner()));
    for rule in &rules {
        delete_iptables_rule(rule);
    }
}

/// iptables rules that drop every TCP packet to and from one address on a port range, in both
/// directions and whichever side opened the connection: the address's servers, and its
/// instances as clients of other rooms (replication). They live in [`IPTABLES_CHAIN`]. Removed
/// when dropped; rules left by a killed run for the same address and ports are removed before
/// the new ones are added, so rules never pile up.
pub struct BlackHole {
    rules: Vec<Vec<String>>,
}

impl BlackHole {
    pub fn start(ip: &str, ports: std::ops::RangeInclusive<u16>) -> Result<BlackHole, LabError> {
        let range = format!("{}:{}", ports.start(), ports.end());
        let rules = [("-d", "--dport"), ("-s", "--sport"), ("-s", "--dport"), ("-d", "--sport")].map(|(side, port)| {
            vec![side.to_string(), ip.to_string(), "-p".into(), "tcp".into(), port.into(), range.clone()]
        });
        Self::drop_all(ip, &black_hole_owner(ip, &ports), &rules)
    }

    /// Every packet between `a` and `b` on `ports` dropped, both ways: a partition between two
    /// rooms (each still reachable from elsewhere, the controller's host included).
    pub fn between(a: &str, b: &str, ports: std::ops::RangeInclusive<u16>) -> Result<BlackHole, LabError> {
        let range = format!("{}:{}", ports.start(), ports.end());
        let mut rules = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            for port in ["--dport", "--sport"] {
                rules.push(["-s", from, "-d", to, "-p", "tcp", port, &range].map(String::from).to_vec());
            }
        }
        Self::drop_all(a, &format!("roomguard partition {a} {b} {range}"), &rules)
    }

    /// Adds `rules` (matches; the target is DROP) under `owner`, after deleting what a killed
    /// run left under the same owner.
    fn drop_all(ip: &str, owner: &str, rules: &[Vec<String>]) -> Result<BlackHole, LabError> {
        delete_iptables_owner("filter", owner);
        let mut hole = BlackHole { rules: Vec::new() };
        for rule in rules {
            let mut rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            rule.extend(["-j", "DROP"]);
            match add_iptables_rule("filter", owner, &rule) {
                Ok(full) => {
                    LIVE_BLACK_HOLES.lock().unwrap_or_else(|e| e.into_inner()).push(full.clone());
                    hole.rules.push(full);
                }
                // `hole` is dropped here: the rules added so far are removed.
                Err(why) => {
                    return Err(LabError::Iptables { ip: ip.to_string(), rule: rule.join(" "), why });
                }
            }
        }
        Ok(hole)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        LIVE_BLACK_HOLES.lock().unwrap_or_else(|e| e.into_inner()).retain(|rule| !self.rules.contains(rule));
        for rule in &self.rules {
            delete_iptables_rule(rule);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn valkey_server_is_found_where_redis_server_is_not() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        let names = ["redis-server", "valkey-server"];
        assert_eq!(super::find_on_path(&path, &names), None);
        std::fs::write(b.path().join("valkey-server"), "").unwrap();
        assert_eq!(super::find_on_path(&path, &names), Some(b.path().join("valkey-server")));
        // redis-server first, wherever it is on PATH.
        std::fs::write(b.path().join("redis-server"), "").unwrap();
        std::fs::write(a.path().join("valkey-server"), "").unwrap();
        assert_eq!(super::find_on_path(&path, &names), Some(b.path().join("redis-server")));
    }
}
