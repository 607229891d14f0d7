//! Coordination through etcd (issue 16), measured beside the quorum-free mode:
//!
//! - `coord-failover`: room 1 lost, time until every shard's room-2 instance accepts writes,
//!   for one quorum-free controller, for two acting-capable controllers with `[coordination]`
//!   against one etcd member, and for those two with the acting one SIGKILLed at the moment of
//!   the fault (the lease handover). Trials of the three modes are interleaved so that they
//!   see the same background load.
//! - `coord-cost`: what controllers cost the Redis instances they serve — N discovery-only
//!   controllers (beside one acting controller, which a coordinated deployment always has)
//!   against N polling quorum-free controllers, on one lab of 8 instances.
//!
//! Every controller is a `roomguard run` process (release build), as deployed: the handover
//! needs a process to SIGKILL, and the cost needs one RSS and one CPU count per controller.
//! etcd is one member on 127.0.0.13 (a third site: room 1's black hole covers only the lab's
//! Redis ports on 127.0.0.11, so it never cuts etcd off from room 2's controllers). Children
//! die with the harness (`PR_SET_PDEATHSIG`) and are SIGKILLed when dropped, however the run
//! ends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use roomguard::lab::{Lab, LabSpec, dies_with_parent, spawn_child};

use crate::{
    Fault, Recovery, Stats,
    cost::{cpu_ticks, http_get, info, info_field, metric, status_kib},
};

/// Room-loss labs: instances 14001-14008; controllers' HTTP on 127.0.0.1:14900-14901.
pub const FAILOVER_BASE: u16 = 14000;
/// The cost lab: instances 14441-14448; controllers' HTTP from 14500 (the actor on 14499).
pub const COST_BASE: u16 = 14440;
/// etcd's client and peer ports on 127.0.0.13.
pub const ETCD_PORTS: (u16, u16) = (14990, 14991);
const ETCD_IP: &str = "127.0.0.13";
/// The acting lease of the coordinated controllers (roomguard's default).
const LEASE_TTL: &str = "3s";

fn roomguard_binary() -> PathBuf {
    match std::env::var_os("BENCH_ROOMGUARD") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("roomguard"),
    }
}

/// One etcd member (its data in a temporary directory, gone with it).
pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        let dir = tempfile::Builder::new().prefix("roomguard-bench-etcd-").tempdir().unwrap();
        let url = format!("http://{ETCD_IP}:{}", ETCD_PORTS.0);
        let peer = format!("http://{ETCD_IP}:{}", ETCD_PORTS.1);
        let mut cmd = dies_with_parent(Path::new("etcd"));
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap());
        let child = spawn_child(cmd).expect("etcd starts (scripts/ensure-deps installs etcd-server)");
        let health = format!("{ETCD_IP}:{}", ETCD_PORTS.0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_get(&health, "/health").is_some_and(|b| b.contains("true")) {
            assert!(Instant::now() < deadline, "etcd not healthy in 20 s ({})", dir.path().display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Etcd { child, url, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `roomguard run` process with its own directory (config, state file, log).
struct Controller {
    child: Child,
    http: String,
    killed: bool,
}

impl Controller {
    fn spawn(dir: &Path, toml: &str, http: &str) -> Controller {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("controller.toml");
        std::fs::write(&config, toml).unwrap();
        let mut cmd = dies_with_parent(&roomguard_binary());
        cmd.args(["--log", "warn", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).unwrap());
        let child = spawn_child(cmd).unwrap_or_else(|e| panic!("roomguard run: {e} (cargo build --release first)"));
        Controller { child, http: http.to_string(), killed: false }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its HTTP server answers (a discovery-only controller polls nothing, so `/healthz`,
    /// which judges the poller, is not the test of "up").
    async fn wait_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while http_get(&self.http, "/metrics").is_none() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    fn acting(&self) -> bool {
        http_get(&self.http, "/metrics").is_some_and(|m| metric(&m, "roomguard_coordination_acting") == 1.0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if !self.killed {
            self.kill();
        }
    }
}

/// The lab's config for one controller: its HTTP port, and with `coordination` the section
/// (`role`, a per-deployment `prefix` so that trials sharing one etcd never see each other).
fn controller_toml(spec: &LabSpec, http: &str, coordination: Option<(&str, &str, &str, &str)>) -> String {
    let mut toml = LabSpec { http_listen: http.to_string(), ..spec.clone() }.config_toml();
    if let Some((url, prefix, name, role)) = coordination {
        toml.push_str(&format!(
            "\n[coordination]\netcd = [\"{url}\"]\nprefix = \"{prefix}\"\nname = \"{name}\"\nrole = \"{role}\"\n\
             lease_ttl = \"{LEASE_TTL}\"\n"
        ));
    }
    toml
}

// ---------------------------------------------------------------------------------------
// Failover time.

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// One controller without `[coordination]`.
    QuorumFree,
    /// Two acting-capable controllers, one etcd member.
    Etcd,
    /// The same, and the acting one SIGKILLed at the moment of the fault.
    Handover,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::QuorumFree => "quorum-free, 1 controller",
            Mode::Etcd => "etcd (1 member), 2 acting-capable controllers",
            Mode::Handover => "etcd, 2 controllers, the acting one SIGKILLed with room 1",
        }
    }
}

/// One trial: a fresh lab and controllers, room 1 lost, the time until every shard's room-2
/// instance answers `SET` with OK (as in [`crate::recovery_trial`]).
async fn failover_trial(mode: Mode, fault: Fault, etcd: &Etcd, trial: usize) -> Option<Duration> {
    let spec = LabSpec { base_port: FAILOVER_BASE, http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let mut lab = Lab::start(&spec).await.expect("lab");
    let prefix = format!("/bench/{}-{trial}-{:?}", std::process::id(), mode).to_lowercase();
    let count = if mode == Mode::QuorumFree { 1 } else { 2 };
    let mut controllers: Vec<Controller> = (0..count)
        .map(|i| {
            let http = format!("127.0.0.1:{}", 14900 + i as u16);
            let name = format!("c{i}");
            let coordination =
                (mode != Mode::QuorumFree).then_some((etcd.url.as_str(), prefix.as_str(), &*name, "acting"));
            Controller::spawn(&lab.dir().join(&name), &controller_toml(&spec, &http, coordination), &http)
        })
        .collect();
    for c in &controllers {
        assert!(c.wait_up(Duration::from_secs(20)).await, "controller on {} not up in 20 s", c.http);
    }
    // Coordinated: one of them holds the lease (and has published what it read from Redis).
    let mut actor = None;
    if mode != Mode::QuorumFree {
        let deadline = Instant::now() + Duration::from_secs(20);
        while actor.is_none() {
            assert!(Instant::now() < deadline, "no controller acting within 20 s");
            actor = controllers.iter().position(Controller::acting);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the controllers watch a healthy deployment for a while, as in `deploy`, plus a
    // random 0-1 s: the lease is renewed every second from the controller's start and the
    // masters ping every second, so without it the fault would fall at the same phase of both
    // in every trial (the handover would measure one point of its range, not its spread).
    tokio::time::sleep(Duration::from_millis(1500) + jitter(Duration::from_secs(1))).await;

    let mut hole = None;
    let mut pids: Vec<String> =
        lab.room(0).iter().filter_map(|&id| lab.servers[id].pid()).map(|p| p.to_string()).collect();
    if fault == Fault::BlackHole {
        hole = Some(lab.black_hole(0).expect("iptables (run as root)"));
        pids.clear();
    }
    if mode == Mode::Handover {
        pids.push(controllers[actor.unwrap()].pid().to_string());
    }
    if !pids.is_empty() {
        // One `kill` call: room 1's servers and (handover) the acting controller together.
        std::process::Command::new("kill").arg("-KILL").args(&pids).status().expect("kill");
    }
    let t0 = Instant::now();
    if fault == Fault::Kill {
        for id in lab.room(0) {
            lab.servers[id].kill(); // reap
        }
    }
    if mode == Mode::Handover {
        controllers[actor.unwrap()].kill(); // reap
    }
    let took = crate::wait_writable(crate::room2_candidates(&lab), t0, Duration::from_secs(30)).await;
    drop(controllers);
    drop(hole);
    took.map(|(t, _)| t)
}

/// Uniform in `[0, max)`, from the clock's nanoseconds (no generator needed for this).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    Duration::from_nanos(mixed % max.as_nanos() as u64)
}

/// `trials` rounds of every mode in `modes`, interleaved, for each fault: one table row per
/// (fault, mode).
pub async fn failover(modes: &[Mode], faults: &[Fault], trials: usize) -> String {
    let etcd = Etcd::start().await;
    let mut out = String::from(
        "| fault | controllers | trials | recovered | median | p90 | max | min |\n|---|---|---|---|---|---|---|---|\n",
    );
    for &fault in faults {
        let mut stats: Vec<Stats> = modes.iter().map(|_| Stats::default()).collect();
        for trial in 0..trials {
            let mut line = format!("  [{} trial {}]", fault.label(), trial + 1);
            for (m, &mode) in modes.iter().enumerate() {
                let took = failover_trial(mode, fault, &etcd, trial).await;
                line.push_str(&format!(
                    " {:?}: {}",
                    mode,
                    took.map_or("none".into(), |t| format!("{} ms", t.as_millis()))
                ));
                stats[m].add(Recovery { took, acked: 0, lost: 0, events: String::new() });
            }
            eprintln!("{line}");
        }
        for (m, &mode) in modes.iter().enumerate() {
            out.push_str(&format!("| {} | {} | {}\n", fault.label(), mode.label(), stats[m].cells()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// What controllers cost Redis.

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fleet {
    /// No controller: Redis' own replication traffic, the baseline.
    None,
    /// One acting-capable controller with `[coordination]`: what a coordinated deployment
    /// always has, whatever its discovery-only controllers.
    Actor,
    /// That actor and N discovery-only controllers.
    Discovery(usize),
    /// N quorum-free controllers, each polling every instance.
    Polling(usize),
}

impl Fleet {
    fn label(self) -> String {
        match self {
            Fleet::None => "no controller (baseline)".into(),
            Fleet::Actor => "1 acting controller (etcd)".into(),
            Fleet::Discovery(n) => format!("1 acting + {n} discovery-only"),
            Fleet::Polling(n) => format!("{n} polling (quorum-free)"),
        }
    }
}

pub struct FleetCost {
    fleet: Fleet,
    /// Per instance: commands processed per second, and its `INFO` calls per second.
    commands: Vec<f64>,
    infos: Vec<f64>,
    /// Per instance: redis-server CPU, % of one core.
    cpu: Vec<f64>,
    /// The fleet's controllers (the actor only in `Actor`, excluded in `Discovery`): RSS in
    /// MiB, CPU summed.
    rss: Vec<f64>,
    controllers_cpu: f64,
    etcd_cpu: f64,
    load: String,
}

/// Starts `fleet` beside the lab, waits until every process is up, warms up 5 s, and
/// measures over `seconds`; kills the fleet (also when this panics: `Controller` drops).
async fn measure_fleet(lab: &Lab, spec: &LabSpec, etcd: &Etcd, fleet: Fleet, seconds: u64) -> FleetCost {
    let prefix = format!("/bench/cost-{}", std::process::id());
    let actor_http = format!("127.0.0.1:{}", 14499);
    let mut actor = None;
    if matches!(fleet, Fleet::Actor | Fleet::Discovery(_)) {
        let toml = controller_toml(spec, &actor_http, Some((&etcd.url, &prefix, "actor", "acting")));
        let c = Controller::spawn(&lab.dir().join("actor"), &toml, &actor_http);
        assert!(c.wait_up(Duration::from_secs(30)).await, "the actor is not up");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.acting() {
            assert!(Instant::now() < deadline, "the actor does not act within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        actor = Some(c);
    }
    let (n, role) = match fleet {
        Fleet::Discovery(n) => (n, Some("discovery")),
        Fleet::Polling(n) => (n, None),
        _ => (0, None),
    };
    let started = Instant::now();
    let mut fleet_procs = Vec::new();
    for i in 0..n {
        let http = format!("127.0.0.1:{}", 14500 + i as u16);
        let name = format!("c{i}");
        let toml = controller_toml(spec, &http, role.map(|r| (etcd.url.as_str(), prefix.as_str(), &*name, r)));
        fleet_procs.push(Controller::spawn(&lab.dir().join(&name), &toml, &http));
        // Staggered: 100 processes starting at once on 2 cores would time their first probes out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in &fleet_procs {
        assert!(c.wait_up(Duration::from_secs(60)).await, "controller on {} not up in 60 s", c.http);
    }
    if n > 0 {
        eprintln!("  {}: all {n} up after {:.1?}", fleet.label(), started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
    let ids: Vec<usize> = (0..lab.servers.len()).collect();
    let redis_pid = |id: usize| lab.servers[id].pid().expect("running");
    let sample = |id: usize| {
        let stats = info(&lab.servers[id].addr, "all");
        let total = info_field(&stats, "total_commands_processed:", "total_commands_processed:");
        let infos = info_field(&stats, "cmdstat_info:", "calls=");
        (total, infos, cpu_ticks(redis_pid(id)))
    };
    // The controllers measured: the fleet, or the actor when it is the whole fleet.
    let fleet_pids: Vec<u32> = match (&actor, fleet) {
        (Some(a), Fleet::Actor) => vec![a.pid()],
        _ => fleet_procs.iter().map(Controller::pid).collect(),
    };
    let t0 = Instant::now();
    let before: Vec<_> = ids.iter().map(|&id| sample(id)).collect();
    let (c0, e0) = (fleet_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>(), cpu_ticks(etcd.pid()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after: Vec<_> = ids.iter().map(|&id| sample(id)).collect();
    let (c1, e1) = (fleet_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>(), cpu_ticks(etcd.pid()));
    let secs = t0.elapsed().as_secs_f64();
    let pct = |ticks: u64| ticks as f64 / 100.0 / secs * 100.0; // USER_HZ = 100
    let cost = FleetCost {
        fleet,
        // Our own `INFO all` before is counted in the reading after (the one after is not):
        // one command and one INFO call per instance are ours.
        commands: before.iter().zip(&after).map(|(b, a)| (a.0 - b.0).saturating_sub(1) as f64 / secs).collect(),
        infos: before.iter().zip(&after).map(|(b, a)| (a.1 - b.1).saturating_sub(1) as f64 / secs).collect(),
        cpu: before.iter().zip(&after).map(|(b, a)| pct(a.2 - b.2)).collect(),
        rss: fleet_pids.iter().map(|&p| status_kib(p, "VmRSS:") as f64 / 1024.0).collect(),
        controllers_cpu: pct(c1 - c0),
        etcd_cpu: pct(e1 - e0),
        load: crate::load(),
    };
    drop(fleet_procs);
    drop(actor);
    tokio::time::sleep(Duration::from_secs(2)).await; // their connections close
    cost
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// The baseline, one actor, then for each N in `counts` N discovery-only and N polling
/// controllers, on one lab of 8 instances (2 shards × 2 rooms × 2) and one etcd member.
pub async fn cost(counts: &[usize], seconds: u64) -> String {
    let spec = LabSpec { base_port: COST_BASE, http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.expect("lab");
    let etcd = Etcd::start().await;
    let mut fleets = vec![Fleet::None, Fleet::Actor];
    for &n in counts {
        fleets.extend([Fleet::Discovery(n), Fleet::Polling(n)]);
    }
    let mut rows: Vec<FleetCost> = Vec::new();
    for fleet in fleets {
        let c = measure_fleet(&lab, &spec, &etcd, fleet, seconds).await;
        eprintln!(
            "  {}: {:.0} commands/s per instance (INFO {:.0}/s), redis CPU {:.2} % mean, controllers {:.1} %, etcd {:.1} %, load {}",
            fleet.label(),
            mean(&c.commands),
            mean(&c.infos),
            mean(&c.cpu),
            c.controllers_cpu,
            c.etcd_cpu,
            c.load
        );
        rows.push(c);
    }
    let base = &rows[0];
    let mut out = String::from(
        "| controllers | commands/s per instance caused by them (mean / max of 8) | of which `INFO`/s (mean) | \
         redis-server CPU per instance (mean / max, % of a core) | controller RSS (mean / max) | the controllers' CPU (sum) | \
         etcd CPU | load average |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let caused: Vec<f64> = r.commands.iter().zip(&base.commands).map(|(a, b)| a - b).collect();
        let rss = if r.rss.is_empty() { "–".into() } else { format!("{:.1} / {:.1} MiB", mean(&r.rss), max(&r.rss)) };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} / {:.2} % | {} | {} | {:.1} % | {} |\n",
            r.fleet.label(),
            if r.fleet == Fleet::None {
                format!("({:.1} / {:.1} without controllers)", mean(&r.commands), max(&r.commands))
            } else {
                format!("{:.1} / {:.1}", mean(&caused), max(&caused))
            },
            mean(&r.infos),
            mean(&r.cpu),
            max(&r.cpu),
            rss,
            if r.rss.is_empty() { "–".into() } else { format!("{:.1} %", r.controllers_cpu) },
            r.etcd_cpu,
            r.load
        ));
    }
    out
}
