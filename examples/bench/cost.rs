//! What the controller costs: the release `roomguard run` as its own process against
//! `shards` × 2 rooms × 2 real instances; after a warm-up, CPU time and RSS from /proc over
//! a window, round and probe latencies from its own metrics (quantiles interpolated within
//! the histogram buckets).

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use roomguard::lab::{Lab, LabSpec};

use crate::sentinel::Sentinels;

pub struct Cost {
    pub instances: usize,
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub rounds_per_s: f64,
    pub round_p50_ms: f64,
    pub round_p99_ms: f64,
    pub probes_per_s: f64,
    pub probe_p50_ms: f64,
    pub probe_p99_ms: f64,
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then(|| out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative bucket counts of a histogram, summed over its label sets: (le, count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        match out.iter_mut().find(|(l, _)| *l == le) {
            Some(slot) => slot.1 += n,
            None => out.push((le, n)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Quantile `q` of the observations between two scrapes, in ms (linear within a bucket).
fn quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let (b, a) = (buckets(before, name), buckets(after, name));
    let delta: Vec<(f64, f64)> =
        a.iter().map(|(le, n)| (*le, n - b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1))).collect();
    let total = delta.last().map_or(0.0, |x| x.1);
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return prev.0 * 1000.0;
            }
            let frac = if n > prev.1 { (rank - prev.1) / (n - prev.1) } else { 0.0 };
            return (prev.0 + (le - prev.0) * frac) * 1000.0;
        }
        prev = (le, n);
    }
    f64::NAN
}

/// What three Redis Sentinels (`down-after-milliseconds` = `down_after`) cost watching the
/// same number of instances, every shard flat (64 masters with 3 direct replicas each for 64
/// shards: what Sentinel can watch), measured like roomguard: CPU over a window after a
/// warm-up, RSS; summed over the three, and the largest one.
pub struct SentinelCost {
    pub instances: usize,
    pub cpu_pct_total: f64,
    pub rss_mib_total: f64,
    pub rss_mib_max: f64,
}

pub async fn measure_sentinels(shards: u16, seconds: u64, base_port: u16, down_after: Duration) -> SentinelCost {
    let spec = LabSpec { base_port, shards, http_listen: "127.0.0.1:0".into(), flat: true, ..LabSpec::default() };
    let lab = Lab::start(&spec).await.expect("lab");
    let sentinels = Sentinels::start(&lab, crate::SENTINEL_BASE, down_after, lab.dir());
    assert!(sentinels.wait_ready(3, Duration::from_secs(60)).await, "sentinels not ready in 60 s");
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
    let pids = sentinels.pids();
    let (t0, c0) = (Instant::now(), pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (elapsed, c1) = (t0.elapsed(), pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>());
    let rss: Vec<f64> = pids.iter().map(|&p| status_kib(p, "VmRSS:") as f64 / 1024.0).collect();
    SentinelCost {
        instances: lab.servers.len(),
        cpu_pct_total: (c1 - c0) as f64 / 100.0 / elapsed.as_secs_f64() * 100.0,
        rss_mib_total: rss.iter().sum(),
        rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
    }
}

/// `poll_interval` of the measured controller: `BENCH_POLL_INTERVAL` (default the lab's 100 ms).
fn poll_interval() -> Option<String> {
    std::env::var("BENCH_POLL_INTERVAL").ok()
}

pub async fn measure(shards: u16, seconds: u64, base_port: u16) -> Cost {
    let http = format!("127.0.0.1:{}", base_port - 1);
    let spec = LabSpec { base_port, shards, http_listen: http.clone(), ..LabSpec::default() };
    let started = Instant::now();
    let lab = Lab::start(&spec).await.expect("lab");
    eprintln!("  {} instances up and chained in {:.1?}", lab.servers.len(), started.elapsed());
    let config = lab.dir().join("controller.toml");
    let mut toml = spec.config_toml();
    if let Some(interval) = poll_interval() {
        toml = toml.replace("[controller]\n", &format!("[controller]\npoll_interval = \"{interval}\"\n"));
    }
    std::fs::write(&config, toml).unwrap();
    // BENCH_ROOMGUARD=path measures another build (before/after comparisons).
    let roomguard = match std::env::var_os("BENCH_ROOMGUARD") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("roomguard"),
    };
    let mut child = Command::new(&roomguard)
        .args(["--log", "warn", "run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", roomguard.display()));
    let pid = child.id();
    while http_get(&http, "/healthz").is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
    let before = http_get(&http, "/metrics").unwrap();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (elapsed, c1) = (t0.elapsed(), cpu_ticks(pid));
    let after = http_get(&http, "/metrics").unwrap();
    let secs = elapsed.as_secs_f64();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let cost = Cost {
        instances: lab.servers.len(),
        cpu_pct: (c1 - c0) as f64 / 100.0 / secs * 100.0, // USER_HZ = 100
        rss_mib: status_kib(pid, "VmRSS:") as f64 / 1024.0,
        peak_rss_mib: status_kib(pid, "VmHWM:") as f64 / 1024.0,
        rounds_per_s: delta("roomguard_round_duration_seconds_count") / secs,
        round_p50_ms: quantile(&before, &after, "roomguard_round_duration_seconds", 0.5),
        round_p99_ms: quantile(&before, &after, "roomguard_round_duration_seconds", 0.99),
        probes_per_s: delta("roomguard_probe_duration_seconds_count") / secs,
        probe_p50_ms: quantile(&before, &after, "roomguard_probe_duration_seconds", 0.5),
        probe_p99_ms: quantile(&before, &after, "roomguard_probe_duration_seconds", 0.99),
    };
    let _ = child.kill();
    let _ = child.wait();
    cost
}

/// What N controllers cost one Redis instance: `INFO` calls per second and the CPU of its
/// `redis-server`, with `controllers` separate `roomguard run` processes (each its own state
/// file and HTTP port, as one beside each app server) polling the seed's 8 instances. Measured
/// on room 1's master of the first shard (the chain's busiest: it is also written to) and on
/// room 2's tail, after a warm-up, over `seconds`.
pub struct Load {
    pub controllers: usize,
    pub info_per_s: f64,
    pub master_cpu_pct: f64,
    pub tail_cpu_pct: f64,
    pub clients: u64,
}

/// `INFO <section>` of `addr`, raw.
pub fn info(addr: &roomguard::topology::Addr, section: &str) -> String {
    let mut s = TcpStream::connect((addr.host.as_str(), addr.port)).unwrap();
    write!(s, "INFO {section}\r\nQUIT\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn info_field(text: &str, prefix: &str, key: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or("");
    let rest = line.split_once(key).map_or("0", |(_, r)| r);
    rest.split([',', '\r']).next().unwrap_or("0").parse().unwrap_or(0)
}

pub async fn measure_load(controllers: &[usize], seconds: u64, base_port: u16) -> Vec<Load> {
    let spec = LabSpec { base_port, http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.expect("lab");
    let roomguard = match std::env::var_os("BENCH_ROOMGUARD") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("roomguard"),
    };
    let (master, tail) = (0, lab.servers.len() - 1);
    let pid = |id: usize| lab.servers[id].pid().expect("running");
    let mut rows = Vec::new();
    for &n in controllers {
        let mut children = Vec::new();
        for i in 0..n {
            let http = format!("127.0.0.1:{}", base_port + 20 + i as u16);
            let dir = lab.dir().join(format!("controller-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let config = dir.join("controller.toml");
            std::fs::write(&config, LabSpec { http_listen: http.clone(), ..spec.clone() }.config_toml()).unwrap();
            let child = Command::new(&roomguard)
                .args(["--log", "warn", "run", "--config", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", roomguard.display()));
            children.push((child, http));
        }
        for (_, http) in &children {
            while http_get(http, "/healthz").is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
        let calls = |id: usize| info_field(&info(&lab.servers[id].addr, "commandstats"), "cmdstat_info:", "calls=");
        let (t0, i0, m0, t0c) = (Instant::now(), calls(master), cpu_ticks(pid(master)), cpu_ticks(pid(tail)));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (i1, m1, t1c) = (calls(master), cpu_ticks(pid(master)), cpu_ticks(pid(tail)));
        let clients =
            info_field(&info(&lab.servers[master].addr, "clients"), "connected_clients:", "connected_clients:");
        let row = Load {
            controllers: n,
            // Our own two INFO calls (`calls` before and after) are not the controllers'.
            info_per_s: (i1 - i0).saturating_sub(1) as f64 / secs,
            master_cpu_pct: (m1 - m0) as f64 / 100.0 / secs * 100.0,
            tail_cpu_pct: (t1c - t0c) as f64 / 100.0 / secs * 100.0,
            clients,
        };
        eprintln!(
            "  {n} controllers: {:.0} INFO/s, master {:.1} %, tail {:.1} % of a core, {} clients",
            row.info_per_s, row.master_cpu_pct, row.tail_cpu_pct, row.clients
        );
        rows.push(row);
        for (mut child, _) in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    rows
}
