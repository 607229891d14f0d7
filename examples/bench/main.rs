//! The benchmark suite: room-loss recovery time, data loss on a crash and graceful switchover
//! under write load, side by side with Redis Sentinel, and what the controller costs. Real
//! `redis-server` processes on loopback (127.0.0.11 = room 1, 127.0.0.12 = room 2, Sentinels
//! on 127.0.0.13); ports 24000-25999 for Redis, 30000-30999 for Sentinel.
//!
//!     scripts/bench [--quick]                  # everything, a Markdown report on stdout
//!     cargo run --release --example bench -- recovery --system sentinel --fault hang --trials 5
//!     cargo run --release --example bench -- compare --fault blackhole --down-after 1s --trials 10
//!
//! Subcommands: `suite [--quick]`, `recovery`, `compare` (roomguard and Sentinel, trials
//! interleaved, with the ratio), `dataloss`, `switchover`, `cost`, `load` (what N controllers
//! cost one Redis instance: `--controllers 1,4,16`), `coord-failover` (room loss with and
//! without `[coordination]`, and the lease handover: `--faults kill,blackhole --modes
//! quorum-free,etcd,handover`), `coord-cost` (discovery-only vs polling controllers:
//! `--controllers 10,100`; both in `coord.rs`, ports 14000-14999); flags: `--trials N
//! --system roomguard|sentinel --topology chained|flat --fault kill|hang|blackhole
//! --down-after D --shards N --rate R|max --writers N --seconds S --ping-period SECONDS`. `blackhole` drops every
//! packet to and from room 1 with iptables (root).

mod coord;
mod cost;
mod sentinel;
mod writer;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use roomguard::{
    config::RedisSettings,
    controller::Shared,
    daemon::{Daemon, DaemonError},
    lab::{Lab, LabSpec},
    probe,
    topology::Addr,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BASE: u16 = 24000; // labs of up to 64 shards: 24001..24256
const BASE_BIG: u16 = 24300; // the cost lab (its HTTP listener on 24299)
const LOAD_BASE: u16 = 24440; // the load lab: instances 24441-24444, controllers' HTTP from 24460
pub const SENTINEL_BASE: u16 = 30001;

/// How room 1 is lost.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// SIGKILL: sockets close, replicas see their links drop at once.
    Kill,
    /// SIGSTOP: the processes freeze, connections stay open and silent.
    Hang,
    /// iptables DROP of everything to and from room 1: power or fibre loss.
    BlackHole,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Hang => "SIGSTOP",
            Fault::BlackHole => "black hole",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum System {
    Roomguard,
    Sentinel,
}

#[derive(Clone, Debug)]
struct Opts {
    trials: usize,
    system: System,
    flat: bool,
    fault: Fault,
    down_after: Duration,
    /// `repl-ping-replica-period` of every instance (the lab's is 1 s).
    ping_period: Option<u64>,
    shards: u16,
    rate: Option<f64>,
    writers: usize,
    seconds: u64,
    quick: bool,
    /// Where the cost lab lives (`cost` only).
    cost_base: u16,
    /// `load`: the numbers of controllers to measure, one after the other.
    controllers: Vec<usize>,
    /// `coord-failover`: the faults and the modes, each fault's trials interleaved by mode.
    faults: Vec<Fault>,
    modes: Vec<coord::Mode>,
}

impl Default for Opts {
    /// One scenario's defaults: roomguard, chained, SIGKILL, `down_after` 1 s, 2 shards.
    fn default() -> Self {
        Opts {
            trials: 5,
            system: System::Roomguard,
            flat: false,
            fault: Fault::Kill,
            ping_period: None,
            down_after: Duration::from_secs(1),
            shards: 2,
            rate: None,
            writers: 1,
            seconds: 20,
            quick: false,
            cost_base: BASE_BIG,
            controllers: vec![1, 4, 16],
            faults: vec![Fault::Kill, Fault::BlackHole],
            modes: vec![coord::Mode::QuorumFree, coord::Mode::Etcd, coord::Mode::Handover],
        }
    }
}

fn parse() -> (String, Opts) {
    let mut o = Opts::default();
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    let command = it.next().unwrap_or_else(|| "suite".into());
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--trials" => o.trials = value().parse().expect("--trials N"),
            "--system" => {
                o.system = match value().as_str() {
                    "roomguard" => System::Roomguard,
                    "sentinel" => System::Sentinel,
                    v => panic!("--system roomguard|sentinel, not {v}"),
                }
            }
            "--topology" => o.flat = value() == "flat",
            "--fault" => {
                o.fault = match value().as_str() {
                    "kill" => Fault::Kill,
                    "hang" => Fault::Hang,
                    "blackhole" => Fault::BlackHole,
                    v => panic!("--fault kill|hang|blackhole, not {v}"),
                }
            }
            "--ping-period" => o.ping_period = Some(value().parse().expect("--ping-period SECONDS")),
            "--down-after" => o.down_after = humantime::parse_duration(&value()).expect("--down-after DURATION"),
            "--shards" => o.shards = value().parse().expect("--shards N"),
            "--rate" => o.rate = Some(value()).filter(|v| v != "max").map(|v| v.parse().expect("--rate R|max")),
            "--writers" => o.writers = value().parse().expect("--writers N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            "--quick" => o.quick = true,
            "--base-port" => o.cost_base = value().parse().expect("--base-port P"),
            "--controllers" => {
                o.controllers = value().split(',').map(|n| n.parse().expect("--controllers N[,N...]")).collect()
            }
            "--faults" => {
                o.faults = value()
                    .split(',')
                    .map(|f| match f {
                        "kill" => Fault::Kill,
                        "blackhole" => Fault::BlackHole,
                        v => panic!("--faults kill,blackhole, not {v}"),
                    })
                    .collect()
            }
            "--modes" => {
                o.modes = value()
                    .split(',')
                    .map(|m| match m {
                        "quorum-free" => coord::Mode::QuorumFree,
                        "etcd" => coord::Mode::Etcd,
                        "handover" => coord::Mode::Handover,
                        v => panic!("--modes quorum-free,etcd,handover, not {v}"),
                    })
                    .collect()
            }
            other => panic!("unknown argument {other}; see examples/bench/main.rs"),
        }
    }
    (command, o)
}

// ---------------------------------------------------------------------------------------
// A deployment under test: the lab plus either roomguard (in-process) or three Sentinels.

enum Guard {
    Roomguard { shared: Arc<Shared>, stop: CancellationToken, task: JoinHandle<Result<(), DaemonError>> },
    Sentinel(sentinel::Sentinels),
}

struct Deployment {
    guard: Guard,
    lab: Lab,
    /// Room 1's black hole, while it lasts (its rules go with it).
    hole: Option<roomguard::lab::BlackHole>,
}

async fn deploy(o: &Opts) -> Deployment {
    let base_port = if o.shards > 2 { BASE + 100 } else { BASE };
    let redis_args = o.ping_period.map(|p| vec!["--repl-ping-replica-period".to_string(), p.to_string()]);
    let spec = LabSpec {
        base_port,
        shards: o.shards,
        http_listen: "127.0.0.1:0".into(),
        flat: o.flat,
        redis_args: redis_args.unwrap_or_default(),
        ..LabSpec::default()
    };
    let lab = Lab::start(&spec).await.expect("lab");
    let guard = match o.system {
        System::Roomguard => {
            let mut config = lab.config.clone();
            config.controller.down_after = o.down_after;
            let daemon = Daemon::start(config).await.expect("controller");
            let shared = daemon.shared();
            let stop = CancellationToken::new();
            let task = tokio::spawn({
                let stop = stop.clone();
                daemon.run_until(async move { stop.cancelled().await })
            });
            while !shared.ready.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Let the controller watch a healthy deployment for a while, as in production.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Guard::Roomguard { shared, stop, task }
        }
        System::Sentinel => {
            let sentinels = sentinel::Sentinels::start(&lab, SENTINEL_BASE, o.down_after, lab.dir());
            let replicas = if o.flat { 3 } else { 1 };
            assert!(sentinels.wait_ready(replicas, Duration::from_secs(30)).await, "sentinels not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(1000)).await;
            Guard::Sentinel(sentinels)
        }
    };
    Deployment { guard, lab, hole: None }
}

impl Deployment {
    /// SIGKILL (or SIGSTOP) every room-1 instance with one `kill` call, or black-holes room 1;
    /// returns right after.
    fn fault_room1(&mut self, fault: Fault) -> Instant {
        if fault == Fault::BlackHole {
            self.hole = Some(self.lab.black_hole(0).expect("iptables (run as root)"));
            return Instant::now();
        }
        let hang = fault == Fault::Hang;
        let room1 = self.lab.room(0);
        let pids: Vec<String> =
            room1.iter().filter_map(|&id| self.lab.servers[id].pid()).map(|p| p.to_string()).collect();
        let signal = if hang { "-STOP" } else { "-KILL" };
        std::process::Command::new("kill").arg(signal).args(&pids).status().expect("kill");
        let t0 = Instant::now();
        if !hang {
            for id in room1 {
                self.lab.servers[id].kill(); // reap
            }
        }
        t0
    }

    fn room2_candidates(&self) -> Vec<Vec<Addr>> {
        room2_candidates(&self.lab)
    }

    async fn stop(self) {
        if let Guard::Roomguard { stop, task, .. } = self.guard {
            stop.cancel();
            if let Ok(Err(e)) = task.await {
                eprintln!("  the controller failed during the trial: {e}");
            }
        }
    }
}

/// Per shard, its room-2 instances: one of them must become the writable master.
fn room2_candidates(lab: &Lab) -> Vec<Vec<Addr>> {
    let t = lab.topology();
    (0..t.shards.len())
        .map(|s| {
            let head = t.head(s, 1);
            let mut v = vec![t.addr(head).clone()];
            v.extend(t.shard_members(s).filter(|&i| i != head && t.instance(i).room == 1).map(|i| t.addr(i).clone()));
            v
        })
        .collect()
}

/// Waits until, in every shard, one of its candidates answers `SET` with OK. Returns the time
/// from `t0` until the last shard got there, and each shard's new master.
async fn wait_writable(candidates: Vec<Vec<Addr>>, t0: Instant, timeout: Duration) -> Option<(Duration, Vec<Addr>)> {
    let tasks = candidates.into_iter().map(|cands| async move {
        let mut cons: Vec<Option<redis::aio::MultiplexedConnection>> = cands.iter().map(|_| None).collect();
        loop {
            for (i, addr) in cands.iter().enumerate() {
                if cons[i].is_none() {
                    cons[i] = probe::connect(addr, &RedisSettings::default(), Duration::from_millis(200)).await.ok();
                }
                if let Some(con) = cons[i].as_mut() {
                    match redis::cmd("SET").arg("bench:probe").arg(1).query_async::<()>(con).await {
                        Ok(()) => return (Instant::now(), addr.clone()),
                        Err(e) if e.code() == Some("READONLY") => {}
                        Err(_) => cons[i] = None,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(timeout, all).await.ok()?;
    let last = done.iter().map(|(t, _)| *t).max()?;
    Some((last.saturating_duration_since(t0), done.into_iter().map(|(_, a)| a).collect()))
}

// ---------------------------------------------------------------------------------------
// Scenarios.

struct Recovery {
    took: Option<Duration>,
    /// Acknowledged writes before the fault, and how many of them the new masters lack.
    acked: u64,
    lost: u64,
    events: String,
}

/// One room-loss trial; with `writers > 0`, `writers` writers per shard load the masters
/// until the fault and the new masters are checked for their acknowledged writes.
async fn recovery_trial(o: &Opts, writers: usize) -> Recovery {
    let mut d = deploy(o).await;
    let t = d.lab.topology().clone();
    let stop = CancellationToken::new();
    let mut handles = vec![];
    for shard in 0..t.shards.len() {
        for w in 0..writers {
            let master = t.addr(t.head(shard, 0)).clone();
            let prefix = format!("w{shard}-{w}");
            handles.push(tokio::spawn(writer::run(vec![master], prefix, o.rate, stop.clone())));
        }
    }
    if writers > 0 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let t0 = d.fault_room1(o.fault);
    let timeout = Duration::from_secs(if o.system == System::Sentinel && !o.flat { 20 } else { 60 });
    let result = wait_writable(d.room2_candidates(), t0, timeout).await;
    stop.cancel();
    let (mut acked, mut lost) = (0, 0);
    for (i, h) in handles.into_iter().enumerate() {
        let writes = h.await.unwrap();
        acked += writes.acked;
        if let Some((_, masters)) = &result {
            lost += writer::missing(&masters[i / writers], &writes).await;
        }
    }
    let events = match &d.guard {
        Guard::Sentinel(s) if result.is_none() => s.events().into_iter().collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    d.stop().await;
    Recovery { took: result.map(|r| r.0), acked, lost, events }
}

struct Switch {
    acked: u64,
    lost: u64,
    max_gap: Duration,
    reported_pause_ms: Option<u64>,
    rate: f64,
}

/// A graceful switchover to room 2 under `writers` writers per shard, through the running
/// controller (as `POST /failover` does it).
async fn switchover_trial(o: &Opts) -> Switch {
    let d = deploy(&Opts { system: System::Roomguard, ..o.clone() }).await;
    let t = d.lab.topology().clone();
    let stop = CancellationToken::new();
    let mut handles = vec![];
    for shard in 0..t.shards.len() {
        for w in 0..o.writers {
            let cands = vec![t.addr(t.head(shard, 0)).clone(), t.addr(t.head(shard, 1)).clone()];
            handles.push(tokio::spawn(writer::run(cands, format!("s{shard}-{w}"), o.rate, stop.clone())));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let Guard::Roomguard { shared, .. } = &d.guard else { unreachable!() };
    let report = {
        let _guard = shared.action_lock.lock().await;
        roomguard::switchover::failover(&shared.config, "2", false, None).await.expect("switchover")
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let mut s =
        Switch { acked: 0, lost: 0, max_gap: Duration::ZERO, reported_pause_ms: report.writes_paused_ms, rate: 0.0 };
    for (i, h) in handles.into_iter().enumerate() {
        let writes = h.await.unwrap();
        let new_master = t.addr(t.head(i / o.writers, 1));
        s.lost += writer::missing(new_master, &writes).await;
        s.acked += writes.acked;
        s.max_gap = s.max_gap.max(writes.max_gap);
        s.rate += writes.acked as f64 / writes.elapsed.as_secs_f64();
    }
    d.stop().await;
    s
}

// ---------------------------------------------------------------------------------------
// Statistics and report.

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default, Clone)]
struct Stats {
    trials: usize,
    times: Vec<Duration>,
    acked: u64,
    lost: Vec<u64>,
    events: String,
}

impl Stats {
    fn add(&mut self, r: Recovery) {
        self.trials += 1;
        if let Some(t) = r.took {
            self.times.push(t);
        } else if self.events.is_empty() {
            self.events = r.events;
        }
        self.acked += r.acked;
        self.lost.push(r.lost);
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.times.clone();
        v.sort();
        v
    }
    fn median(&self) -> Option<f64> {
        (!self.times.is_empty()).then(|| ms(pct(&self.sorted(), 0.5)))
    }
    fn p90(&self) -> Option<f64> {
        (!self.times.is_empty()).then(|| ms(pct(&self.sorted(), 0.9)))
    }
    fn cells(&self) -> String {
        let s = self.sorted();
        if s.is_empty() {
            return format!("{} | 0 | – | – | – | – |", self.trials);
        }
        format!(
            "{} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            self.trials,
            s.len(),
            ms(pct(&s, 0.5)),
            ms(pct(&s, 0.9)),
            ms(*s.last().unwrap()),
            ms(s[0])
        )
    }
}

fn label(o: &Opts) -> String {
    let sys = match (o.system, o.flat) {
        (System::Roomguard, _) => "roomguard (chained)",
        (System::Sentinel, true) => "Sentinel (flat)",
        (System::Sentinel, false) => "Sentinel (chained)",
    };
    format!(
        "{}{} | {} | {} | {}",
        o.fault.label(),
        o.ping_period.map(|p| format!(" (ping period {p}s)")).unwrap_or_default(),
        humantime::format_duration(o.down_after),
        o.shards,
        sys
    )
}

async fn recovery(o: &Opts, writers: usize) -> Stats {
    let mut st = Stats::default();
    for i in 0..o.trials {
        let r = recovery_trial(o, writers).await;
        eprintln!(
            "  [{}] trial {}: {} acked={} lost={}",
            label(o),
            i + 1,
            r.took.map_or("no recovery".into(), |t| format!("{:.0} ms", ms(t))),
            r.acked,
            r.lost
        );
        st.add(r);
    }
    st
}

async fn switchover(o: &Opts) -> String {
    let (mut gaps, mut lost, mut acked, mut pauses, mut rate) = (vec![], 0, 0, vec![], 0.0);
    for i in 0..o.trials {
        let s = switchover_trial(o).await;
        eprintln!(
            "  [switchover rate={:?} writers={}] trial {}: max gap {:.0} ms, controller pause {:?} ms, acked {}, lost {}",
            o.rate,
            o.writers,
            i + 1,
            ms(s.max_gap),
            s.reported_pause_ms,
            s.acked,
            s.lost
        );
        gaps.push(s.max_gap);
        pauses.extend(s.reported_pause_ms);
        lost += s.lost;
        acked += s.acked;
        rate += s.rate / o.trials as f64;
    }
    gaps.sort();
    pauses.sort();
    format!(
        "| {} | {} | {:.0} /s | {} | {:.0} ms | {:.0} ms | {} ms | {} | **{}** |",
        o.rate.map_or("max".into(), |r| format!("{r:.0} /s")),
        o.writers * o.shards as usize,
        rate,
        o.trials,
        ms(pct(&gaps, 0.5)),
        ms(*gaps.last().unwrap()),
        pauses.get(pauses.len() / 2).map_or("–".into(), |p| p.to_string()),
        acked,
        lost
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn suite(quick: bool) {
    let n = if quick { 3 } else { 20 };
    let base = Opts { trials: n, seconds: if quick { 5 } else { 20 }, quick, ..Opts::default() };
    let mut out = String::new();
    let started = Instant::now();
    out.push_str(&format!("Load average at start: {}\n\n", load()));

    // 1 + 2: recovery, roomguard and Sentinel trials interleaved so both see the same noise.
    out.push_str("### Room-loss recovery (fault → both new masters accept writes)\n\n");
    out.push_str("| fault | down_after | shards | system | trials | recovered | median | p90 | max | min |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let mut ratios = String::new();
    for fault in [Fault::Kill, Fault::Hang, Fault::BlackHole] {
        for down_after in [Duration::from_secs(1), Duration::from_millis(300)] {
            let (rows, ratio) = compare(&Opts { fault, down_after, ..base.clone() }, n).await;
            out.push_str(&rows);
            ratios.push_str(&ratio);
        }
    }
    // A silent room with Redis' default ping period: roomguard's threshold is 10.4 s.
    let default_period =
        Opts { fault: Fault::BlackHole, ping_period: Some(10), trials: if quick { 2 } else { 10 }, ..base.clone() };
    let st = recovery(&default_period, 0).await;
    out.push_str(&format!("| {} | {}\n", label(&default_period), st.cells()));
    // Sentinel on the seed's chained topology: it only knows the masters' direct replicas.
    let chained = Opts { system: System::Sentinel, flat: false, trials: if quick { 1 } else { 3 }, ..base.clone() };
    let st = recovery(&chained, 0).await;
    out.push_str(&format!("| {} | {}\n", label(&chained), st.cells()));
    // Scale: 64 shards, every master in room 1.
    let big = Opts { shards: if quick { 8 } else { 64 }, trials: if quick { 2 } else { 10 }, ..base.clone() };
    for down_after in [Duration::from_secs(1), Duration::from_millis(300)] {
        let st = recovery(&Opts { down_after, ..big.clone() }, 0).await;
        out.push_str(&format!("| {} | {}\n", label(&Opts { down_after, ..big.clone() }), st.cells()));
    }
    out.push_str(&format!(
        "\nSentinel on the chained topology, events seen when it did not recover: `{}`\n\n",
        st_events(&st, &chained).await
    ));
    out.push_str("Ratio roomguard / Sentinel (flat), same run, interleaved trials:\n\n| fault | down_after | median roomguard / Sentinel | ratio median | ratio p90 |\n|---|---|---|---|---|\n");
    out.push_str(&ratios);

    // 4: data loss on a crash under load.
    out.push_str("\n### Acknowledged writes lost on a SIGKILL of room 1 under write load\n\n");
    out.push_str("| system | writers per shard | trials | acked writes (total) | lost per trial (each) | lost total |\n|---|---|---|---|---|---|\n");
    for (system, flat) in [(System::Roomguard, false), (System::Sentinel, true)] {
        for writers in [1, 4] {
            let o = Opts { system, flat, writers, trials: if quick { 2 } else { 10 }, ..base.clone() };
            let st = recovery(&o, writers).await;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:?} | {} |\n",
                label(&o).rsplit(" | ").next().unwrap(),
                writers,
                st.trials,
                st.acked,
                st.lost,
                st.lost.iter().sum::<u64>()
            ));
        }
    }

    // 3: graceful switchover.
    out.push_str("\n### Graceful switchover to room 2 under write load (2 shards)\n\n");
    out.push_str("| rate per writer | writers | achieved (all writers) | trials | longest gap between acks, median | max | controller's pause, median | acked | lost |\n|---|---|---|---|---|---|---|---|---|\n");
    for (rate, writers) in [(Some(100.0), 1), (Some(1000.0), 1), (None, 1), (None, 8)] {
        let o = Opts { rate, writers, trials: if quick { 2 } else { 5 }, ..base.clone() };
        out.push_str(&switchover(&o).await);
        out.push('\n');
    }

    // 5: cost.
    out.push_str("\n### Controller cost (`roomguard run`, release, 100 ms polling)\n\n");
    out.push_str("| instances | CPU (% of one core) | RSS | peak RSS | rounds/s | round p50 | round p99 | probes/s | probe p50 | probe p99 |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for shards in if quick { vec![2, 16] } else { vec![2, 32, 64] } {
        out.push_str(&cost_row(shards, base.seconds, BASE_BIG).await);
    }
    // 6: coordination through etcd (issue 16): failover time beside quorum-free, and what
    // discovery-only controllers cost Redis compared with polling ones.
    out.push_str("\n### Room loss with `[coordination]` (one etcd member on 127.0.0.13)\n\n");
    let faults = [Fault::Kill, Fault::BlackHole];
    let modes = [coord::Mode::QuorumFree, coord::Mode::Etcd, coord::Mode::Handover];
    out.push_str(&coord::failover(&modes, &faults, if quick { 2 } else { 10 }).await);
    out.push_str("\n### What controllers cost Redis (8 instances)\n\n");
    out.push_str(&coord::cost(if quick { &[10] } else { &[10, 100] }, base.seconds).await);
    out.push_str(&format!("\nLoad average at end: {}; suite took {:.0?}.\n", load(), started.elapsed()));
    println!("{out}");
}

/// `n` trials of roomguard (chained) and of Sentinel (flat), interleaved so that both see the
/// same noise: the two table rows, and the ratio row.
async fn compare(o: &Opts, n: usize) -> (String, String) {
    let rg = Opts { trials: 1, system: System::Roomguard, flat: false, ..o.clone() };
    let se = Opts { system: System::Sentinel, flat: true, ..rg.clone() };
    let (mut a, mut b) = (Stats::default(), Stats::default());
    for _ in 0..n {
        a.add(recovery_trial(&rg, 0).await);
        b.add(recovery_trial(&se, 0).await);
        eprintln!(
            "  [{}] rg {:?} / sentinel {:?}",
            label(&rg),
            a.times.last().map(|t| ms(*t) as u64),
            b.times.last().map(|t| ms(*t) as u64)
        );
    }
    let rows = format!("| {} | {}\n| {} | {}\n", label(&rg), a.cells(), label(&se), b.cells());
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{:.2}", x / y),
        _ => "–".into(),
    };
    let ratios = format!(
        "| {} | {} | {} | {} | {} |\n",
        o.fault.label(),
        humantime::format_duration(o.down_after),
        a.median().map_or("–".into(), |m| format!("{m:.0} / {:.0} ms", b.median().unwrap_or(f64::NAN))),
        ratio(a.median(), b.median()),
        ratio(a.p90(), b.p90()),
    );
    (rows, ratios)
}

async fn st_events(st: &Stats, o: &Opts) -> String {
    if st.times.len() == st.trials {
        return format!("recovered in {} of {} trials", st.times.len(), o.trials);
    }
    st.events.clone()
}

async fn cost_row(shards: u16, seconds: u64, base_port: u16) -> String {
    let c = cost::measure(shards, seconds, base_port).await;
    let row = format!(
        "| {} | {:.1} % | {:.1} MiB | {:.1} MiB | {:.1} | {:.3} ms | {:.3} ms | {:.0} | {:.2} ms | {:.2} ms |\n",
        c.instances,
        c.cpu_pct,
        c.rss_mib,
        c.peak_rss_mib,
        c.rounds_per_s,
        c.round_p50_ms,
        c.round_p99_ms,
        c.probes_per_s,
        c.probe_p50_ms,
        c.probe_p99_ms
    );
    eprint!("  {row}");
    row
}

#[tokio::main]
async fn main() {
    let (command, o) = parse();
    match command.as_str() {
        "suite" => suite(o.quick).await,
        "recovery" => {
            let st = recovery(&o, 0).await;
            println!("| {} | {}", label(&o), st.cells());
            if !st.events.is_empty() {
                println!("events: {}", st.events);
            }
        }
        "dataloss" => {
            let st = recovery(&o, o.writers).await;
            println!("| {} | acked {} | lost per trial {:?}", label(&o), st.acked, st.lost);
        }
        "compare" => {
            let (rows, ratio) = compare(&o, o.trials).await;
            println!(
                "{rows}\n| fault | down_after | median roomguard / Sentinel | ratio median | ratio p90 |\n|---|---|---|---|---|\n{ratio}"
            );
        }
        "switchover" => println!("{}", switchover(&o).await),
        "cost" if o.system == System::Sentinel => {
            let c = cost::measure_sentinels(o.shards, o.seconds, o.cost_base, o.down_after).await;
            println!(
                "| {} | 3 sentinels | {:.1} % (sum) | {:.1} MiB (sum), {:.1} MiB (largest) |",
                c.instances, c.cpu_pct_total, c.rss_mib_total, c.rss_mib_max
            );
        }
        "cost" => print!("{}", cost_row(o.shards, o.seconds, o.cost_base).await),
        // What N controllers (one beside each app server) cost one Redis instance.
        "load" => {
            let rows = cost::measure_load(&o.controllers, o.seconds, LOAD_BASE).await;
            println!(
                "| controllers | INFO calls/s on one instance | its redis-server CPU (master / tail) | connected clients |"
            );
            println!("|---|---|---|---|");
            for r in rows {
                println!(
                    "| {} | {:.0} | {:.1} % / {:.1} % of a core | {} |",
                    r.controllers, r.info_per_s, r.master_cpu_pct, r.tail_cpu_pct, r.clients
                );
            }
        }
        "coord-failover" => print!("{}", coord::failover(&o.modes, &o.faults, o.trials).await),
        "coord-cost" => print!("{}", coord::cost(&o.controllers, o.seconds).await),
        other => panic!(
            "unknown command {other}: suite, recovery, dataloss, switchover, cost, load, coord-failover or coord-cost"
        ),
    }
}
