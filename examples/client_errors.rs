//! Errors that Node.js Sentinel clients see through a failover, under a steady write load
//! (BENCHMARKS.md, "Client errors"). Per trial: a fresh lab (2 shards, 8 `redis-server`
//! processes on 127.0.0.11/12) with the controller and its Sentinel endpoint, then
//! `tests/node/sentinel_clients.mjs` with `RG_NODE_RATE`: ioredis, iovalkey and node-redis
//! (`createSentinel`) each write RATE keys per second in all (not waiting for replies), plus
//! replica reads; after 2 s of load the failover, 2 s more, then every client must be where
//! its role says and every acknowledged write is looked up on the new master.
//!
//! - `graceful`: `roomguard failover --room 2` run as its own process beside the controller
//!   (the case the issue measured; the config has no admin token, so it acts directly and
//!   waits for the endpoint);
//! - `roomloss`: every room-1 process SIGKILLed; the controller fails over to room 2.
//!
//! Run:
//!
//!     cargo build --release --bin roomguard --example client_errors
//!     target/release/examples/client_errors --rates 20,1000 --scenarios graceful,roomloss --trials 3
//!
//! Prints a Markdown table (progress on stderr). Ports 24701-24709 on 127.0.0.11/12 and
//! 127.0.0.1. Needs node and `tests/node/node_modules` (scripts/ensure-deps).

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use roomguard::{
    daemon::Daemon,
    lab::{Lab, LabSpec},
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BASE: u16 = 24700;

#[derive(Debug, thiserror::Error)]
enum TrialError {
    #[error("the lab: {0}")]
    Lab(String),
    #[error("the node clients: {0}")]
    Node(String),
    #[error("the failover: {0}")]
    Failover(String),
}

/// One trial's outcome, as the node script reports it.
struct Outcome {
    /// Errors per client and kind (JSON), e.g. `{"ioredis":{"readonly":2}}`.
    errors: serde_json::Value,
    lost: serde_json::Value,
    in_flight: serde_json::Value,
    /// Acknowledged writes per second per library over the load.
    rates: serde_json::Value,
}

fn field(line: &str, name: &str) -> serde_json::Value {
    line.split_once(&format!(" {name} "))
        .and_then(|(_, rest)| serde_json::Deserializer::from_str(rest).into_iter().next())
        .and_then(Result::ok)
        .unwrap_or(serde_json::Value::Null)
}

async fn trial(scenario: &str, rate: u32) -> Result<Outcome, TrialError> {
    let spec = LabSpec {
        base_port: BASE,
        http_listen: format!("127.0.0.1:{}", BASE + 8),
        sentinel_listen: Some(format!("127.0.0.1:{}", BASE + 9)),
        ..LabSpec::default()
    };
    let mut lab = Lab::start(&spec).await.map_err(|e| TrialError::Lab(e.to_string()))?;
    let config_file = lab.dir().join("controller.toml");
    std::fs::write(&config_file, spec.config_toml()).map_err(|e| TrialError::Lab(e.to_string()))?;
    let daemon = Daemon::start(lab.config.clone()).await.map_err(|e| TrialError::Lab(e.to_string()))?;
    let shared = daemon.shared();
    let stop = tokio_util::sync::CancellationToken::new();
    let controller = tokio::spawn(daemon.run_until(stop.clone().cancelled_owned()));
    let primary = Primary(shared);
    // Whatever happens, the controller is stopped before the next trial (its ports).
    let driven = match primary.is("1").await {
        true => drive(scenario, rate, &mut lab, &config_file, &primary).await,
        false => Err(TrialError::Lab("the controller never got ready".into())),
    };
    stop.cancel();
    let _ = controller.await;
    let line = driven?;
    let errors = serde_json::Deserializer::from_str(line.trim_start_matches("check 1 ok "))
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or(serde_json::Value::Null);
    Ok(Outcome {
        errors,
        lost: field(&line, "lost"),
        in_flight: field(&line, "inFlight"),
        rates: field(&line, "writes/s"),
    })
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rates: Vec<u32> =
        arg(&args, "--rates", "20,1000").split(',').map(|r| r.parse().expect("--rates 20,1000")).collect();
    let scenarios = arg(&args, "--scenarios", "graceful,roomloss");
    let trials: usize = arg(&args, "--trials", "3").parse().expect("--trials N");
    println!(
        "| scenario | writes/s per library (target) | trial | errors seen by clients | acknowledged writes lost | lost in flight at the kill | writes/s acknowledged |"
    );
    println!("|---|---|---|---|---|---|---|");
    for scenario in scenarios.split(',') {
        for &rate in &rates {
            for i in 1..=trials {
                match trial(scenario, rate).await {
                    Ok(o) => {
                        let row = format!(
                            "| {scenario} | {rate} | {i} | `{}` | `{}` | `{}` | `{}` |",
                            o.errors, o.lost, o.in_flight, o.rates
                        );
                        eprintln!("{row}");
                        println!("{row}");
                    }
                    Err(e) => {
                        eprintln!("{scenario} {rate}/s trial {i}: {e}");
                        println!(
                            "| {scenario} | {rate} | {i} | trial failed: {} | | | |",
                            e.to_string().replace('\n', " ")
                        );
                    }
                }
            }
        }
    }
}

/// Waits (at most 20 s) until the controller reports `room` primary.
struct Primary(std::sync::Arc<roomguard::controller::Shared>);

impl Primary {
    async fn is(&self, room: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let report = self.0.report.read().expect("report").clone();
            if report.is_some_and(|r| r.primary_room.as_deref() == Some(room)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// The node clients through one failover: their report line.
async fn drive(
    scenario: &str,
    rate: u32,
    lab: &mut Lab,
    config_file: &std::path::Path,
    primary: &Primary,
) -> Result<String, TrialError> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shards: Vec<String> = lab.topology().shards.iter().map(|s| s.name.clone()).collect();
    let mut node = tokio::process::Command::new("node")
        .arg(repo.join("tests/node/sentinel_clients.mjs"))
        .args(["127.0.0.1".to_string(), (BASE + 9).to_string()])
        .args(&shards)
        .env("RG_NODE_RATE", rate.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TrialError::Node(format!("node: {e}")))?;
    let mut stdin = node.stdin.take().expect("piped");
    let mut stdout = BufReader::new(node.stdout.take().expect("piped")).lines();
    let mut stderr = node.stderr.take().expect("piped");
    let mut next_line = async || match tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await {
        Ok(Ok(Some(line))) => Ok(line),
        other => {
            let mut err = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
            Err(TrialError::Node(format!("{other:?}: {err}")))
        }
    };
    if next_line().await? != "ready" {
        return Err(TrialError::Node("not ready".into()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut killed_at = String::new();
    match scenario {
        "graceful" => {
            let roomguard = std::env::current_exe()
                .ok()
                .and_then(|p| Some(p.parent()?.parent()?.join("roomguard")))
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    TrialError::Failover("build the roomguard binary first (cargo build --release)".into())
                })?;
            let out = tokio::process::Command::new(roomguard)
                .args(["failover", "--room", "2", "--config"])
                .arg(config_file)
                .env_remove("ROOMGUARD_CONFIG")
                .env("ROOMGUARD_LOG", "warn")
                .output()
                .await
                .map_err(|e| TrialError::Failover(e.to_string()))?;
            if !out.status.success() {
                return Err(TrialError::Failover(String::from_utf8_lossy(&out.stderr).into_owned()));
            }
        }
        _ => {
            for id in lab.room(0) {
                lab.servers[id].kill();
            }
            let ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis();
            killed_at = format!(" {ms}");
        }
    }
    if !primary.is("2").await {
        return Err(TrialError::Failover("room 2 never became primary".into()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stdin
        .write_all(format!("{scenario}{killed_at}\n").as_bytes())
        .await
        .map_err(|e| TrialError::Node(e.to_string()))?;
    let line = next_line().await?;
    if !line.starts_with("check 1 ok ") {
        return Err(TrialError::Node(line));
    }
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(20), node.wait()).await;
    Ok(line)
}
