//! Benchmark: what the controller costs. Starts `shards` × 2 rooms × 2 real redis-server
//! instances, runs the release `roomguard run` against them as a separate process, and after
//! a warm-up samples its CPU time and memory from /proc over a window; poll-round cost comes
//! from its own metrics.
//!
//!     cargo build --release && cargo run --release --example cost -- --shards 2 --seconds 30
//!     cargo run --release --example cost -- --shards 64 --seconds 30   # 256 instances
//!     cargo run --release --example cost -- --shards 2 --seconds 30 --tls # TLS everywhere
//!
//! Needs the release binary at target/release/roomguard.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use roomguard::lab::{Lab, LabSpec, LabTls};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect(name))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then(|| out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// A throwaway CA and one certificate for every instance (and for roomguard as a client):
/// `tls-auth-clients yes`, replication over TLS. Returns the lab's TLS and `[redis]` section.
fn throwaway_pki(dir: &std::path::Path, ips: &[String]) -> (LabTls, String) {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "roomguard bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(ips.to_vec()).unwrap().signed_by(&key, &ca).unwrap();
    let tls = LabTls {
        ca_file: write("ca.pem", ca.pem()),
        cert_file: write("server.pem", cert.pem()),
        key_file: write("server.key", key.serialize_pem()),
        auth_clients: true,
    };
    let section = format!(
        "tls = true\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        tls.ca_file.display(),
        tls.cert_file.display(),
        tls.key_file.display()
    );
    (tls, section)
}

#[tokio::main]
async fn main() {
    let shards = arg("--shards", 2) as u16;
    let seconds = arg("--seconds", 30);
    let base_port = arg("--base-port", 23000) as u16;
    let http = format!("127.0.0.1:{}", base_port - 1);
    let mut spec = LabSpec { base_port, shards, http_listen: http.clone(), ..LabSpec::default() };
    let pki_dir = tempfile::tempdir().unwrap();
    if std::env::args().any(|a| a == "--tls") {
        let (tls, section) = throwaway_pki(pki_dir.path(), &spec.room_ips);
        spec.tls = Some(tls);
        spec.redis_section = Some(section);
    }
    let started = Instant::now();
    let lab = Lab::start(&spec).await.expect("lab");
    eprintln!("{} instances up and chained in {:?}", lab.servers.len(), started.elapsed());
    let config = lab.dir().join("controller.toml");
    std::fs::write(&config, spec.config_toml()).unwrap();
    let mut child = Command::new("target/release/roomguard")
        .args(["--log", "warn", "run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .expect("target/release/roomguard (cargo build --release first)");
    let pid = child.id();
    while http_get(&http, "/healthz").is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
    let before_metrics = http_get(&http, "/metrics").unwrap();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (elapsed, c1) = (t0.elapsed(), cpu_ticks(pid));
    let after_metrics = http_get(&http, "/metrics").unwrap();
    let ticks_per_sec = 100.0; // Linux USER_HZ
    let cpu = (c1 - c0) as f64 / ticks_per_sec / elapsed.as_secs_f64() * 100.0;
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let delta = |name: &str| metric(&after_metrics, name) - metric(&before_metrics, name);
    let rounds = delta("roomguard_round_duration_seconds_count");
    let round_ms = delta("roomguard_round_duration_seconds_sum") / rounds * 1000.0;
    let probes = delta("roomguard_probe_duration_seconds_count");
    let probe_ms = delta("roomguard_probe_duration_seconds_sum") / probes * 1000.0;
    println!(
        "instances={}{} window={:.0}s cpu={cpu:.2}% of one core rss={rss:.1} MiB peak_rss={hwm:.1} MiB \
         rounds/s={:.1} round_mean={round_ms:.3} ms probes/s={:.0} probe_mean={probe_ms:.3} ms",
        lab.servers.len(),
        if spec.tls.is_some() { " (TLS)" } else { "" },
        elapsed.as_secs_f64(),
        rounds / elapsed.as_secs_f64(),
        probes / elapsed.as_secs_f64(),
    );
    let _ = child.kill();
    let _ = child.wait();
}
