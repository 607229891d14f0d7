//! A client that writes under a steady load: `SET <prefix>:<seq> <seq>`, one command at a
//! time, at a target rate (or as fast as the server answers). A write counts as
//! acknowledged only when `OK` came back. On any error it tries the next candidate address
//! with the same key, like a client re-discovering the master, so acknowledged keys are
//! exactly `0..acked`.

use std::time::{Duration, Instant};

use roomguard::{config::RedisSettings, probe, topology::Addr};
use tokio_util::sync::CancellationToken;

pub struct Writes {
    pub prefix: String,
    pub acked: u64,
    /// Longest time between two consecutive acknowledgements.
    pub max_gap: Duration,
    pub elapsed: Duration,
}

pub async fn run(candidates: Vec<Addr>, prefix: String, rate: Option<f64>, stop: CancellationToken) -> Writes {
    let period = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let (mut idx, mut con, mut seq) = (0usize, None, 0u64);
    let started = Instant::now();
    let (mut last_ack, mut max_gap) = (None::<Instant>, Duration::ZERO);
    let mut next = Instant::now();
    'writes: while !stop.is_cancelled() {
        if let Some(p) = period {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.cancelled() => break,
            }
            next = (next + p).max(Instant::now());
        }
        loop {
            if con.is_none() {
                // Generous timeouts: a write held by CLIENT PAUSE must wait, not fail.
                match probe::connect(&candidates[idx], &RedisSettings::default(), Duration::from_secs(3)).await {
                    Ok(c) => con = Some(c),
                    Err(_) => {
                        idx = (idx + 1) % candidates.len();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(1)) => continue,
                            _ = stop.cancelled() => break 'writes,
                        }
                    }
                }
            }
            let c = con.as_mut().expect("connected");
            let key = format!("{prefix}:{seq}");
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(seq);
            let reply = tokio::select! {
                r = set.query_async::<()>(c) => r,
                _ = stop.cancelled() => break 'writes,
            };
            match reply {
                Ok(()) => {
                    let now = Instant::now();
                    if let Some(prev) = last_ack {
                        max_gap = max_gap.max(now - prev);
                    }
                    last_ack = Some(now);
                    seq += 1;
                    break;
                }
                Err(_) => {
                    con = None;
                    idx = (idx + 1) % candidates.len();
                }
            }
        }
    }
    Writes { prefix, acked: seq, max_gap, elapsed: started.elapsed() }
}

/// How many of `writes`' acknowledged keys are missing on `addr`.
pub async fn missing(addr: &Addr, writes: &Writes) -> u64 {
    let mut con = probe::connect(addr, &RedisSettings::default(), Duration::from_secs(5)).await.expect("connect");
    let mut missing = 0;
    let mut from = 0;
    while from < writes.acked {
        let to = (from + 1000).min(writes.acked);
        let mut cmd = redis::cmd("MGET");
        for seq in from..to {
            cmd.arg(format!("{}:{seq}", writes.prefix));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut con).await.expect("MGET");
        missing += values.iter().filter(|v| v.is_none()).count() as u64;
        from = to;
    }
    missing
}
