//! The Sentinel-compatible endpoint with real clients (redis-py, redis-rs, redis-cli), its
//! Pub/Sub events on failover, hostile input, and the hooks.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use roomguard::{
    config::{Config, Secret},
    hooks::HookSettings,
    lab::{Lab, LabSpec},
    metrics::Metrics,
    sentinel::{self, Discovery, SentinelSettings},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::util::*;

fn sentinel_settings() -> SentinelSettings {
    SentinelSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: None,
        max_connections: sentinel::DEFAULT_MAX_CONNECTIONS,
        max_request_bytes: sentinel::DEFAULT_MAX_REQUEST_BYTES,
        idle_timeout: sentinel::DEFAULT_IDLE_TIMEOUT,
        peers: vec![],
    }
}

fn with_sentinel(lab: &Lab) -> Config {
    let mut config = lab.config.clone();
    config.sentinel = Some(sentinel_settings());
    config
}

/// The venv's python that scripts/ensure-deps creates; never skipped silently.
fn venv_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/ensure-deps (or scripts/test), which creates .venv/ with redis-py",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_sentinel_client_follows_a_room_loss() {
    let mut lab = lab(22000).await;
    let c = Controller::start_with(with_sentinel(&lab)).await;
    let endpoint = c.sentinel.expect("sentinel endpoint");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sentinel_client.py");
    let mut child = tokio::process::Command::new(venv_python())
        .arg(script)
        .args([endpoint.ip().to_string(), endpoint.port().to_string()])
        .args([shard(22001), shard(22002)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let phase1 = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            seen.push(line.clone());
            if line == "phase1 ok" {
                return true;
            }
        }
        false
    })
    .await;
    if phase1 != Ok(true) {
        let _ = child.kill().await;
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
        panic!("redis-py phase 1 failed: {seen:?}\n{stderr}");
    }
    assert!(seen.contains(&ports_in("master shard-22001 127.0.0.11 22001")), "{seen:?}");

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    child.stdin.take().unwrap().write_all(b"go\n").await.unwrap();
    let mut stderr = String::new();
    let mut err_pipe = child.stderr.take().unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            seen.push(line);
        }
        err_pipe.read_to_string(&mut stderr).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("redis-py phase 2 did not finish");
    assert!(rest.success(), "redis-py phase 2 failed: {seen:?}\n{stderr}\n{}", c.report_text());
    assert_eq!(seen.last().map(String::as_str), Some("phase2 ok"));
    for head in [22001, 22002] {
        assert!(seen.contains(&ports_in(&format!("master shard-{head} 127.0.0.12 {head}"))), "{seen:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_sentinel_client_follows_a_room_loss() {
    use redis::sentinel::{SentinelClient, SentinelServerType};
    let mut lab = lab(22010).await;
    let record = record_hook(&lab);
    let mut config = with_sentinel(&lab);
    config.hooks = vec![HookSettings {
        events: roomguard::events::HOOK_EVENTS.iter().map(|s| s.to_string()).collect(),
        command: vec![record.display().to_string()],
        timeout: Duration::from_secs(10),
    }];
    let c = Controller::start_with(config).await;
    let events = subscriber(c.sentinel.unwrap(), &[], &["*"]).await;
    let url = format!("redis://{}", c.sentinel.unwrap());
    let mut master = SentinelClient::build(vec![url.clone()], shard(22011), None, SentinelServerType::Master).unwrap();
    let mut replica = SentinelClient::build(vec![url], shard(22011), None, SentinelServerType::Replica).unwrap();

    let mut con = master.get_async_connection().await.unwrap();
    let () = redis::cmd("SET").arg("k").arg("before").query_async(&mut con).await.unwrap();
    let mut replicated = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !replicated && std::time::Instant::now() < deadline {
        if let Ok(mut con) = replica.get_async_connection().await {
            let got: Option<String> = redis::cmd("GET").arg("k").query_async(&mut con).await.ok().flatten();
            replicated = got.as_deref() == Some("before");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replicated, "a replica found through the sentinel endpoint never had the write");

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let mut written = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !written && std::time::Instant::now() < deadline {
        if let Ok(mut con) = master.get_async_connection().await {
            written = redis::cmd("SET").arg("k").arg("after").query_async::<()>(&mut con).await.is_ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(written, "no write through the sentinel client after the room loss\n{}", c.report_text());
    let mut con = master.get_async_connection().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut con).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
    assert!(is_master(&at(2, 22011)).await);
    let before: Option<String> = redis::cmd("GET").arg("k").query_async(&mut con).await.unwrap();
    assert_eq!(before.as_deref(), Some("after"));

    // Sentinel's events, in order: the master down (subjectively, then objectively: its room
    // is lost), room 2's tail reconfigured, one switch per shard, then every replica of the
    // new master (the old master included), as Sentinel sends them after a switch.
    let expected = [
        ports_in("+sdown|master shard-22011 127.0.0.11 22011"),
        ports_in("+odown|master shard-22011 127.0.0.11 22011 #quorum 1/1"),
        ports_in("+slave-reconf-done|slave 127.0.0.12:22013 127.0.0.12 22013 @ shard-22011 127.0.0.11 22011"),
        ports_in("+switch-master|shard-22011 127.0.0.11 22011 127.0.0.12 22011"),
        ports_in("+slave|slave 127.0.0.12:22013 127.0.0.12 22013 @ shard-22011 127.0.0.12 22011"),
        ports_in("+slave|slave 127.0.0.11:22011 127.0.0.11 22011 @ shard-22011 127.0.0.12 22011"),
        ports_in("+slave|slave 127.0.0.11:22013 127.0.0.11 22013 @ shard-22011 127.0.0.12 22011"),
    ];
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let seen = events.lock().unwrap();
            let positions: Vec<Option<usize>> = expected.iter().map(|e| seen.iter().position(|m| m == e)).collect();
            positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
        })
        .await,
        "{:?}",
        events.lock().unwrap()
    );
    assert_eq!(switches(&events).len(), 2, "{:?}", events.lock().unwrap());
    // No `-odown` for an old master: the switch replaces it (Sentinel sends none either).
    assert!(!events.lock().unwrap().iter().any(|m| m.starts_with("-odown|")), "{:?}", events.lock().unwrap());
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|m| *m == ports_in("+sdown|slave 127.0.0.11:22013 127.0.0.11 22013 @ shard-22011 127.0.0.11 22011")),
        "{:?}",
        events.lock().unwrap()
    );
    // The hooks ran after the failover, with its details.
    let log = lab.dir().join("hooks.log");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            log.lines().any(|l| l == "room_lost||1||||")
                && log.lines().any(|l| l == ports_in("failover|shard-22011|2|127.0.0.11:22011|127.0.0.12:22011|auto|"))
                && log.lines().any(|l| l == ports_in("failover|shard-22012|2|127.0.0.11:22012|127.0.0.12:22012|auto|"))
        })
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(c.metric("roomguard_hook_runs_total", &["event=\"failover\"", "outcome=\"ok\""]), 2.0);
    c.stop().await;
}

/// Collects every Pub/Sub message a subscriber receives, as "channel|payload".
async fn subscriber(addr: SocketAddr, channels: &[&str], patterns: &[&str]) -> Arc<Mutex<Vec<String>>> {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    for c in channels {
        pubsub.subscribe(*c).await.unwrap();
    }
    for p in patterns {
        pubsub.psubscribe(*p).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            let payload: String = msg.get_payload().unwrap();
            out.lock().unwrap().push(format!("{}|{payload}", msg.get_channel_name()));
        }
    });
    seen
}

fn switches(seen: &Mutex<Vec<String>>) -> Vec<String> {
    seen.lock().unwrap().iter().filter(|m| m.starts_with("+switch-master|")).cloned().collect()
}

async fn redis_cli_master(endpoint: SocketAddr, shard: &str) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-h", &endpoint.ip().to_string(), "-p", &endpoint.port().to_string()])
        .args(["SENTINEL", "get-master-addr-by-name", shard])
        .output()
        .await
        .expect("redis-cli (scripts/ensure-deps installs redis-tools)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_master_is_published_once_per_shard_for_cli_and_http_failovers_and_hooks_run() {
    let lab = lab(22020).await;
    let dir = lab.dir().to_path_buf();
    let record = record_hook(&lab);
    let mut config = with_sentinel(&lab);
    config.http.admin_token = Some(Secret::new("a-long-enough-admin-token"));
    config.hooks = vec![
        HookSettings {
            events: roomguard::events::HOOK_EVENTS.iter().map(|s| s.to_string()).collect(),
            command: vec![record.display().to_string()],
            timeout: Duration::from_secs(10),
        },
        // Hangs, and so does a child it starts: both are killed at the timeout.
        HookSettings {
            events: vec!["switchover".into()],
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("sleep 60 & echo $! >> {}/hang.pids; wait", dir.display()),
            ],
            timeout: Duration::from_millis(500),
        },
    ];
    let c = Controller::start_with(config).await;
    let endpoint = c.sentinel.unwrap();
    let exact = subscriber(endpoint, &["+switch-master"], &[]).await;
    let pattern = subscriber(endpoint, &[], &["*"]).await;
    assert_eq!(redis_cli_master(endpoint, &shard(22021)).await, at(1, 22021));
    assert_eq!(redis_cli_master(endpoint, &shard(22022)).await, at(1, 22022));
    assert_eq!(redis_cli_master(endpoint, "no-such-shard").await, "");

    // A CLI failover in another process: the controller follows the state file.
    let out = run({
        let mut cmd = roomguard(&["failover", "--room", "2", "--config"]);
        cmd.arg(config_path(&lab));
        cmd
    })
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_until(Duration::from_secs(10), || async { switches(&exact).len() >= 2 }).await);
    tokio::time::sleep(Duration::from_secs(2)).await; // duplicates would arrive meanwhile
    let mut got = switches(&exact);
    got.sort();
    assert_eq!(
        got,
        [
            ports_in("+switch-master|shard-22021 127.0.0.11 22021 127.0.0.12 22021"),
            ports_in("+switch-master|shard-22022 127.0.0.11 22022 127.0.0.12 22022")
        ]
    );
    assert_eq!(redis_cli_master(endpoint, &shard(22021)).await, at(2, 22021));

    // POST /failover, in-process.
    let (status, body) = http_post(c.http, "/failover?room=1", Some("a-long-enough-admin-token")).await;
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(10), || async { switches(&exact).len() >= 4 }).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = switches(&exact);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.contains(&ports_in("+switch-master|shard-22021 127.0.0.12 22021 127.0.0.11 22021")));
    assert_eq!(redis_cli_master(endpoint, &shard(22022)).await, at(1, 22022));
    // The pattern subscriber got the same switches (and the old masters' conversions).
    let by_pattern = pattern.lock().unwrap().clone();
    assert_eq!(by_pattern.iter().filter(|m| m.starts_with("+switch-master|")).count(), 4, "{by_pattern:?}");
    assert!(
        by_pattern.iter().any(|m| m.starts_with(&ports_in("+convert-to-slave|slave 127.0.0.11:22021 "))),
        "{by_pattern:?}"
    );

    // Hooks: every switch and every demotion recorded, with the details; the hanging hook
    // was killed at its timeout, once per switchover.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c.metric("roomguard_hook_runs_total", &["event=\"switchover\"", "outcome=\"timeout\""]) == 4.0
        })
        .await,
        "{}\n{}",
        c.metrics(),
        std::fs::read_to_string(dir.join("hooks.log")).unwrap_or_default()
    );
    let pids = std::fs::read_to_string(dir.join("hang.pids")).unwrap();
    assert_eq!(pids.lines().count(), 4, "{pids}");
    for pid in pids.lines() {
        // Gone, or a zombie waiting for whoever inherited it to reap it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
        };
        assert!(wait_until(Duration::from_secs(5), || async { !alive() }).await, "the hook's child {pid} survived");
    }
    let log = std::fs::read_to_string(dir.join("hooks.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.contains(&ports_in("switchover|shard-22021|2|127.0.0.11:22021|127.0.0.12:22021|manual|").as_str()),
        "{log}"
    );
    assert!(
        lines.contains(&ports_in("switchover|shard-22022|1|127.0.0.12:22022|127.0.0.11:22022|manual|").as_str()),
        "{log}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("switchover|")).count(), 4, "{log}");
    assert!(lines.contains(&ports_in("demote|shard-22021|1||127.0.0.12:22023||127.0.0.11:22021").as_str()), "{log}");
    assert_eq!(c.metric("roomguard_hook_runs_total", &["event=\"switchover\"", "outcome=\"ok\""]), 4.0);
    assert!(c.metric("roomguard_hook_runs_total", &["event=\"demote\"", "outcome=\"ok\""]) >= 4.0);
    c.stop().await;
}

// === hostile input, on a standalone endpoint ===

struct Endpoint {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn endpoint(settings: SentinelSettings) -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let config = LabSpec { base_port: 22100, ..LabSpec::default() }.config(dir.path()).unwrap();
    let t = &config.topology;
    let metrics = Arc::new(Metrics::new(t));
    let masters = vec![Some(t.head(0, 0)), Some(t.head(1, 0))];
    let (_view_tx, view) = tokio::sync::watch::channel(Discovery::initial(t, &masters, Duration::from_secs(1)));
    let events = tokio::sync::broadcast::channel(16).0;
    let listener = sentinel::bind(&settings).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sentinel::serve(listener, settings, view, events, metrics.clone(), stop.clone()));
    // Keep the sender alive as long as the endpoint.
    std::mem::forget(_view_tx);
    Endpoint { addr, metrics, stop }
}

/// Sends raw bytes and reads what comes back until the server closes or is quiet for 300 ms.
async fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> (String, bool) {
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    exchange(&mut s, b"*1\r\n$4\r\nPING\r\n").await.0 == "+PONG\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_answers_in_resp2_and_resp3() {
    let e = endpoint(sentinel_settings()).await;
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    let (reply, _) =
        exchange(&mut s, b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$11\r\nshard-22101\r\n").await;
    assert_eq!(reply, "*2\r\n$10\r\n127.0.0.11\r\n$5\r\n22101\r\n");
    let (reply, _) = exchange(&mut s, b"SENTINEL get-master-addr-by-name nope\r\n").await;
    assert_eq!(reply, "*-1\r\n");
    let (reply, _) = exchange(&mut s, b"HELLO 3 SETNAME app\r\n").await;
    assert!(reply.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), "{reply}");
    assert!(reply.contains("$5\r\nproto\r\n:3\r\n"), "{reply}");
    let (reply, _) = exchange(&mut s, b"SENTINEL get-master-addr-by-name nope\r\nCLIENT GETNAME\r\n").await;
    assert_eq!(reply, "_\r\n$3\r\napp\r\n");
    let (reply, _) = exchange(&mut s, b"SENTINEL master shard-22102\r\n").await;
    assert!(reply.starts_with("%20\r\n$4\r\nname\r\n$11\r\nshard-22102\r\n"), "{reply}");
    // The view is the initial one (the state file's masters, not verified yet): flagged down.
    assert!(reply.contains("$5\r\nflags\r\n$26\r\nmaster,s_down,disconnected\r\n"), "{reply}");
    let (reply, _) = exchange(&mut s, b"ROLE\r\nSENTINEL sentinels shard-22101\r\nSENTINEL sentinels x\r\n").await;
    assert_eq!(
        reply,
        "*2\r\n$8\r\nsentinel\r\n*2\r\n$11\r\nshard-22101\r\n$11\r\nshard-22102\r\n*0\r\n-ERR No such master with that name\r\n"
    );
    // Valkey 8's names answer as the old ones do.
    for (old, new) in [
        (
            &b"SENTINEL get-master-addr-by-name shard-22101\r\n"[..],
            &b"SENTINEL GET-PRIMARY-ADDR-BY-NAME shard-22101\r\n"[..],
        ),
        (b"SENTINEL masters\r\n", b"SENTINEL PRIMARIES\r\n"),
        (b"SENTINEL master shard-22102\r\n", b"SENTINEL primary shard-22102\r\n"),
        (b"SENTINEL slaves shard-22102\r\n", b"SENTINEL REPLICAS shard-22102\r\n"),
        (b"SENTINEL master nope\r\n", b"SENTINEL primary nope\r\n"),
    ] {
        let (expected, _) = exchange(&mut s, old).await;
        let (reply, _) = exchange(&mut s, new).await;
        assert_eq!(reply, expected, "{}", String::from_utf8_lossy(new));
        assert!(!reply.contains("unknown subcommand"), "{reply}");
    }
    let (reply, _) = exchange(&mut s, b"SENTINEL primary\r\n").await;
    assert_eq!(reply, "-ERR wrong number of arguments for 'sentinel|primary' command\r\n");
    let (reply, _) = exchange(&mut s, b"INFO sentinel\r\n").await;
    assert!(reply.contains("# Sentinel\r\nsentinel_masters:2\r\n"), "{reply}");
    assert!(reply.contains("master0:name=shard-22101,status=sdown,address=127.0.0.11:22101,slaves=0,sentinels=1"));
    let (reply, closed) =
        exchange(&mut s, b"FLUSHALL\r\nGET k\r\nCLIENT SETINFO LIB-NAME x\r\nSENTINEL myid\r\n").await;
    assert!(!closed);
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(lines[0], "-ERR unknown command 'FLUSHALL', with args beginning with: ");
    assert_eq!(lines[1], "-ERR unknown command 'GET', with args beginning with: 'k'");
    assert_eq!(lines[2], "+OK");
    assert_eq!((lines[3], lines[4].len()), ("$40", 40));
    let (reply, closed) = exchange(&mut s, b"QUIT\r\n").await;
    assert_eq!((reply.as_str(), closed), ("+OK\r\n", true));

    // A redis-rs client over RESP3 (HELLO 3 and CLIENT SETINFO in its handshake).
    let client = redis::Client::open(format!("redis://{}/?protocol=resp3", e.addr)).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let addr: Vec<String> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg("shard-22102").query_async(&mut con).await.unwrap();
    assert_eq!(addr, ["127.0.0.11", "22102"]);
    let masters: Vec<std::collections::HashMap<String, String>> =
        redis::cmd("SENTINEL").arg("masters").query_async(&mut con).await.unwrap();
    assert_eq!(masters.len(), 2);
    assert_eq!(masters[1]["ip"], "127.0.0.11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_required_when_set() {
    let e = endpoint(SentinelSettings { password: Some(Secret::new("s3cret")), ..sentinel_settings() }).await;
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    let (reply, _) = exchange(&mut s, b"SENTINEL masters\r\n").await;
    assert_eq!(reply, "-NOAUTH Authentication required.\r\n");
    let (reply, _) = exchange(&mut s, b"AUTH wrong\r\nHELLO 3 AUTH default wrong\r\n").await;
    assert!(reply.starts_with("-WRONGPASS") && reply.matches("-WRONGPASS").count() == 2, "{reply}");
    let (reply, _) = exchange(&mut s, b"AUTH s3cret\r\nPING\r\n").await;
    assert_eq!(reply, "+OK\r\n+PONG\r\n");
    assert_eq!(e.metrics.sentinel_auth_failures.get(), 2);
    // redis-rs with a password in the URL (AUTH in its handshake).
    let client = redis::Client::open(format!("redis://:s3cret@{}", e.addr)).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let id: String = redis::cmd("SENTINEL").arg("myid").query_async(&mut con).await.unwrap();
    assert_eq!(id.len(), 40);
    assert!(!e.metrics.encode().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_closes_only_that_connection() {
    let settings =
        SentinelSettings { max_connections: 300, idle_timeout: Duration::from_secs(2), ..sentinel_settings() };
    let e = endpoint(settings).await;
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$2147483647\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*2147483647\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*2\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*1\r\n$4\r\nPINGxx", "-ERR Protocol error: unbalanced quotes or missing CRLF\r\n"),
        (b"SET \"unbalanced\r\n", "-ERR Protocol error: unbalanced quotes or missing CRLF\r\n"),
    ];
    for (bytes, expected) in cases {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        let (reply, closed) = exchange(&mut s, bytes).await;
        assert_eq!((reply.as_str(), closed), (*expected, true), "{}", String::from_utf8_lossy(bytes));
    }
    // A request larger than max_request_bytes, sent in full: refused, not buffered.
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    let mut huge = b"*2\r\n$4\r\nECHO\r\n$100000\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100_000));
    let _ = s.write_all(&huge).await;
    let (reply, closed) = exchange(&mut s, b"").await;
    assert!(reply.starts_with("-ERR Protocol error: invalid bulk length") && closed, "{reply}");
    // An endless inline line without a newline.
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    let _ = s.write_all(&vec![b'a'; 70_000]).await;
    let (reply, closed) = exchange(&mut s, b"").await;
    assert!(reply.starts_with("-ERR Protocol error: request larger than") && closed, "{reply}");
    // Binary garbage, and a half-written request left hanging: nothing else is disturbed.
    let mut garbage = TcpStream::connect(e.addr).await.unwrap();
    let (reply, _) = exchange(&mut garbage, b"\x16\x03\x01\x00\xff\xfe\n").await;
    assert!(reply.starts_with("-ERR unknown command"), "{reply}");
    let mut half = TcpStream::connect(e.addr).await.unwrap();
    half.write_all(b"*2\r\n$8\r\nSENTINEL\r\n$4\r\nmy").await.unwrap();
    assert!(ping(e.addr).await);
    // The half-written request completes later, on the same connection.
    let (reply, _) = exchange(&mut half, b"id\r\n").await;
    assert!(reply.starts_with("$40\r\n"), "{reply}");

    // Thousands of idle connections: at most max_connections are served, the rest refused
    // with an error and counted.
    let mut idle = Vec::new();
    for _ in 0..3000 {
        idle.push(TcpStream::connect(e.addr).await.unwrap());
    }
    // `garbage` and `half` hold two slots.
    assert!(
        wait_until(Duration::from_secs(10), || async { e.metrics.sentinel_rejected.get() >= 2702 }).await,
        "rejected: {}",
        e.metrics.sentinel_rejected.get()
    );
    assert_eq!(e.metrics.sentinel_connections.get(), 300);
    let mut refused = TcpStream::connect(e.addr).await.unwrap();
    let (reply, closed) = exchange(&mut refused, b"").await;
    assert_eq!((reply.as_str(), closed), ("-ERR max number of clients reached\r\n", true));
    drop(idle);
    assert!(wait_until(Duration::from_secs(10), || async { ping(e.addr).await }).await);
    let metrics = e.metrics.encode();
    assert!(metric_value(&metrics, "roomguard_sentinel_connections_rejected_total", &[]) >= 2703.0);
    assert!(metric_value(&metrics, "roomguard_sentinel_connections_closed_total", &["reason=\"too_large\""]) >= 4.0);
    assert!(metric_value(&metrics, "roomguard_sentinel_connections_closed_total", &["reason=\"malformed\""]) >= 3.0);
    assert!(metric_value(&metrics, "roomguard_sentinel_commands_total", &["command=\"other\""]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_subscribers_are_not() {
    let e = endpoint(SentinelSettings { idle_timeout: Duration::from_secs(1), ..sentinel_settings() }).await;
    let mut subscribed = TcpStream::connect(e.addr).await.unwrap();
    let (reply, _) = exchange(&mut subscribed, b"SUBSCRIBE +switch-master\r\n").await;
    assert_eq!(reply, "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(e.addr).await.unwrap());
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { e.metrics.sentinel_connections.get() == 1 }).await,
        "idle connections were not closed: {}",
        e.metrics.sentinel_connections.get()
    );
    assert!(
        metric_value(&e.metrics.encode(), "roomguard_sentinel_connections_closed_total", &["reason=\"idle\""]) >= 500.0
    );
    // The subscriber survived its silence; in RESP2 subscribed mode PING answers "pong".
    let (reply, closed) = exchange(&mut subscribed, b"PING\r\nGET x\r\n").await;
    assert!(!closed);
    assert!(reply.starts_with("*2\r\n$4\r\npong\r\n$0\r\n\r\n-ERR Can't execute 'get'"), "{reply}");
}
