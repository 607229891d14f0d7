//! Benchmark: room-loss recovery time. For each trial: start the seed deployment (8 real
//! redis-server processes), start the controller in-process with the lab's settings, fault
//! every instance of room 1 (SIGKILL, or SIGSTOP for a silent hang), and time until *both*
//! room-2 heads accept a write (`SET` answers OK instead of READONLY).
//!
//!     cargo run --release --example recovery -- --trials 20 [--fault kill|hang] [--down-after 1s]
//!
//! Prints one line per trial and a summary (median, p90, max). Numbers go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use roomguard::{
    config::RedisSettings,
    controller,
    lab::{Lab, LabSpec},
    probe,
};

struct Args {
    trials: usize,
    fault: String,
    base_port: u16,
    down_after: Option<String>,
}

fn args() -> Args {
    let mut a = Args { trials: 5, fault: "kill".into(), base_port: 22400, down_after: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--trials" => a.trials = value().parse().expect("--trials N"),
            "--fault" => a.fault = value(),
            "--base-port" => a.base_port = value().parse().expect("--base-port P"),
            "--down-after" => a.down_after = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}; see the file's doc comment"),
        }
    }
    assert!(a.fault == "kill" || a.fault == "hang", "--fault kill|hang");
    a
}

async fn accepts_write(addr: &roomguard::topology::Addr, settings: &RedisSettings) -> bool {
    let Ok(mut con) = probe::connect(addr, settings, Duration::from_millis(200)).await else {
        return false;
    };
    redis::cmd("SET").arg("bench").arg(1).query_async::<()>(&mut con).await.is_ok()
}

async fn trial(args: &Args) -> Duration {
    let spec = LabSpec { base_port: args.base_port, http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let mut lab = Lab::start(&spec).await.expect("lab");
    let mut config = lab.config.clone();
    if let Some(d) = &args.down_after {
        config.controller.down_after = humantime::parse_duration(d).expect("--down-after DURATION");
    }
    let running = controller::start(config).await.expect("controller");
    let shared = running.shared();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        running.run_until(async move { stop.cancelled().await })
    });
    while !shared.ready.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the controller see a healthy deployment for a while, as in production.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let heads: Vec<_> = (0..2).map(|shard| lab.topology().head(shard, 1)).collect();
    let room1 = lab.room(0);
    let t0 = Instant::now();
    for id in room1 {
        match args.fault.as_str() {
            "kill" => lab.servers[id].kill(),
            _ => lab.servers[id].hang(),
        }
    }
    let mut done = [false, false];
    while !done.iter().all(|d| *d) {
        for (i, head) in heads.iter().enumerate() {
            if !done[i] {
                done[i] = accepts_write(lab.topology().addr(*head), lab.config.redis.instance(*head)).await;
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            panic!("no recovery within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t0.elapsed();
    stop.cancel();
    let _ = task.await;
    drop(lab);
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut times = Vec::new();
    for i in 0..args.trials {
        let t = trial(&args).await;
        println!("trial {:>2}: {} ms", i + 1, t.as_millis());
        times.push(t);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fault={} down_after={} trials={}: median {:.0} ms, p90 {:.0} ms, max {:.0} ms, min {:.0} ms",
        args.fault,
        args.down_after.as_deref().unwrap_or("1s (default)"),
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(*times.last().unwrap()),
        ms(times[0]),
    );
}
