//! Three Redis Sentinels watching a lab's shard masters, for the side-by-side runs. They live
//! on 127.0.0.13, a third site, so losing room 1 or 2 never costs Sentinel its majority:
//! the best case for Sentinel.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use roomguard::{config::RedisSettings, lab::Lab, probe, topology::Addr};

pub const HOST: &str = "127.0.0.13";

pub struct Sentinels {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    pub addrs: Vec<Addr>,
    names: Vec<String>,
}

fn binary() -> (PathBuf, Vec<String>) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).map(|d| d.join("redis-sentinel")).find(|p| p.exists()) {
        Some(p) => (p, vec![]),
        // Debian's redis-sentinel is the same binary as redis-server.
        None => (roomguard::lab::redis_server_binary().expect("redis-server"), vec!["--sentinel".into()]),
    }
}

impl Sentinels {
    /// Starts three sentinels (ports `base..base+3`) monitoring every shard's room-1 head with
    /// quorum 2 and `down-after-milliseconds` = `down_after`.
    pub fn start(lab: &Lab, base: u16, down_after: Duration, dir: &Path) -> Sentinels {
        let t = lab.topology();
        let (bin, extra) = binary();
        let mut s = Sentinels { children: vec![], logs: vec![], addrs: vec![], names: vec![] };
        for shard in 0..t.shards.len() {
            s.names.push(t.shards[shard].name.clone());
        }
        for i in 0..3u16 {
            let port = base + i;
            let log = dir.join(format!("sentinel-{port}.log"));
            let mut conf = format!(
                "port {port}\nbind {HOST}\nsentinel announce-ip {HOST}\nprotected-mode no\ndaemonize no\ndir {}\nlogfile {}\n",
                dir.display(),
                log.display()
            );
            for shard in 0..t.shards.len() {
                let name = &t.shards[shard].name;
                let master = t.addr(t.head(shard, 0));
                conf.push_str(&format!(
                    "sentinel monitor {name} {} {} 2\nsentinel down-after-milliseconds {name} {}\n\
                     sentinel failover-timeout {name} 60000\nsentinel parallel-syncs {name} 1\n",
                    master.host,
                    master.port,
                    down_after.as_millis()
                ));
            }
            let path = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(&path, conf).expect("sentinel config");
            let child = Command::new(&bin)
                .arg(&path)
                .args(&extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-sentinel");
            s.children.push(child);
            s.logs.push(log);
            s.addrs.push(Addr::new(HOST, port));
        }
        s
    }

    /// Waits until every sentinel knows `replicas` replicas and the two other sentinels for
    /// every shard: only then can it fail over.
    pub async fn wait_ready(&self, replicas: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut ready = true;
            'outer: for addr in &self.addrs {
                let Ok(mut con) = probe::connect(addr, &RedisSettings::default(), Duration::from_millis(500)).await
                else {
                    ready = false;
                    break;
                };
                for name in &self.names {
                    let reply: Result<Vec<String>, _> =
                        redis::cmd("SENTINEL").arg("MASTER").arg(name).query_async(&mut con).await;
                    let Ok(kv) = reply else {
                        ready = false;
                        break 'outer;
                    };
                    let get = |k: &str| {
                        kv.chunks(2).find(|c| c[0] == k).and_then(|c| c.get(1)).and_then(|v| v.parse::<usize>().ok())
                    };
                    if get("num-slaves").unwrap_or(0) < replicas || get("num-other-sentinels").unwrap_or(0) < 2 {
                        ready = false;
                        break 'outer;
                    }
                }
            }
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The sentinels' process ids (for the cost comparison).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The distinct Sentinel events (`+odown`, `+failover-end`, `-failover-abort-no-good-slave`,
    /// ...) its logs recorded.
    pub fn events(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for log in &self.logs {
            for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
                if let Some(ev) = line.split_whitespace().find(|w| w.starts_with('+') || w.starts_with('-')) {
                    out.insert(ev.to_string());
                }
            }
        }
        out
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        // BENCH_KEEP_LOGS=DIR keeps the last run's Sentinel logs and configs for inspection.
        if let Some(keep) = std::env::var_os("BENCH_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for log in &self.logs {
                let _ = std::fs::copy(log, Path::new(&keep).join(log.file_name().unwrap()));
                let conf = log.with_extension("conf");
                let _ = std::fs::copy(&conf, Path::new(&keep).join(conf.file_name().unwrap()));
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
