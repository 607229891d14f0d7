//! Issue 15: client connections end where their role says after every failover path. A
//! promotion closes the new master's clients (replica-role connections there must reconnect);
//! a graceful switchover closes the old masters' clients while writes are still paused, so the
//! writes the pause held are re-sent to the new master instead of failing with `READONLY`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::MultiplexedConnection;
use roomguard::probe;

use crate::util::*;

/// A connection named `name` (as an application's replica client) that has answered a read.
async fn named_reader(a: &str, name: &str) -> MultiplexedConnection {
    let mut con = connect(a).await;
    let () = redis::cmd("CLIENT").arg("SETNAME").arg(name).query_async(&mut con).await.unwrap();
    let _: Option<String> = redis::cmd("GET").arg("k").query_async(&mut con).await.unwrap();
    con
}

async fn client_list(a: &str) -> String {
    let mut con = connect(a).await;
    redis::cmd("CLIENT").arg("LIST").query_async(&mut con).await.unwrap()
}

/// The reader's connection was closed by the server: its next command fails, and the server
/// no longer lists it.
async fn assert_closed(reader: &mut MultiplexedConnection, a: &str, name: &str) {
    let next = redis::cmd("GET").arg("k").query_async::<Option<String>>(reader).await;
    assert!(next.is_err(), "the replica-role connection on {a} is still open: {next:?}");
    let list = client_list(a).await;
    assert!(!list.contains(&format!("name={name} ")), "{a} still lists {name}:\n{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_after_a_room_loss_closes_the_new_masters_replica_clients() {
    let mut lab = lab(27000).await;
    let head = at(2, 27001);
    let mut reader = named_reader(&head, "app-replica").await;
    let mut other = named_reader(&at(2, 27002), "app-replica-2").await;
    let c = Controller::start(&lab).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { is_master(&head).await && is_master(&at(2, 27002)).await })
            .await,
        "room 2's heads were not promoted: {}",
        c.report_text()
    );
    assert_closed(&mut reader, &head, "app-replica").await;
    assert_closed(&mut other, &at(2, 27002), "app-replica-2").await;
    // The promoted master answers and keeps its replica (a replication link is not a normal
    // client).
    let mut con = connect(&head).await;
    let () = redis::cmd("SET").arg("after").arg(1).query_async(&mut con).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { replicates(&at(2, 27003), &head).await }).await);
    c.stop().await;
}

/// Writes `w:<n>` keys to whichever of `candidates` answers as a master, as a client that
/// rediscovers after a connection error: an unacknowledged write is re-sent after reconnecting.
/// Counts the `READONLY` errors it sees.
async fn rediscovering_writer(
    candidates: [String; 2],
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    readonly: Arc<AtomicU64>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    let (mut n, mut pending) = (0u64, None);
    while !stop.load(Ordering::Relaxed) {
        if con.is_none() {
            for c in &candidates {
                if is_master(c).await {
                    con = Some(connect(c).await);
                    break;
                }
            }
        }
        let Some(connection) = con.as_mut() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let key = pending.take().unwrap_or_else(|| {
            n += 1;
            n
        });
        match redis::cmd("SET").arg(format!("w:{key}")).arg(key).query_async::<()>(connection).await {
            Ok(()) => acked.lock().unwrap().push(key),
            Err(e) => {
                if e.code() == Some("READONLY") {
                    readonly.fetch_add(1, Ordering::Relaxed);
                }
                pending = Some(key);
                con = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_failover_under_writes_gives_no_readonly_and_closes_the_new_masters_readers() {
    let lab = lab(27010).await;
    let head = at(2, 27011);
    let mut reader = named_reader(&head, "app-replica").await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let readonly = Arc::new(AtomicU64::new(0));
    let writer =
        tokio::spawn(rediscovering_writer([at(1, 27011), at(2, 27011)], stop.clone(), acked.clone(), readonly.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config = config_path(&lab);
    graceful_failover_cli(&config, "2").await;
    // The writer goes on against the new master.
    let at_switch = acked.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(5), || async { acked.lock().unwrap().len() > at_switch + 20 }).await,
        "the writer did not resume on the new master"
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    assert_eq!(readonly.load(Ordering::Relaxed), 0, "the writer saw READONLY");
    let acked = acked.lock().unwrap().clone();
    let mut con = connect(&head).await;
    let keys: Vec<String> = acked.iter().map(|n| format!("w:{n}")).collect();
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await.unwrap();
    let lost = values.iter().filter(|v| v.is_none()).count();
    assert_eq!(lost, 0, "{lost} of {} acknowledged writes lost", acked.len());
    assert_closed(&mut reader, &head, "app-replica").await;
    assert!(replicates(&at(1, 27011), &at(2, 27013)).await);
}

/// The Node.js Sentinel clients application teams use (ioredis, iovalkey, node-redis'
/// `createSentinel`), from `tests/node/` (scripts/ensure-deps installs them), through a
/// graceful failover to room 2 and then room 2's loss (back to room 1), under writes every
/// 20 ms: after each, master clients write to the master the endpoint names, the ioredis and
/// iovalkey replica connections are on replicas, no acknowledged write is missing on the
/// master (at the room loss, bar those acknowledged in the second before the kill:
/// replication is asynchronous), no client ever saw `READONLY`, and in the graceful failover
/// no write failed at all (each library re-sends the commands of a closed connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_clients_follow_a_graceful_failover_and_a_room_loss() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let node_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        ["ioredis", "iovalkey", "redis"].iter().all(|m| node_dir.join("node_modules").join(m).is_dir()),
        "{} has no node_modules: run scripts/ensure-deps (or scripts/test), which installs ioredis, iovalkey and redis with npm",
        node_dir.display()
    );
    // The endpoint on a fixed port, in the config file too: the CLI's failover waits until the
    // controller's endpoint names the new masters before it closes the old masters' clients.
    let sentinel_listen = Some(format!("127.0.0.1:{}", port(27029)));
    let mut lab = lab_with(roomguard::lab::LabSpec { base_port: 27020, sentinel_listen, ..Default::default() }).await;
    let c = Controller::start(&lab).await;
    let endpoint = c.sentinel.expect("sentinel endpoint");
    let shards: Vec<String> = [27021, 27022].iter().map(|&p| format!("shard-{}", addr(&at(1, p)).port)).collect();
    let mut child = tokio::process::Command::new("node")
        .arg(node_dir.join("sentinel_clients.mjs"))
        .args([endpoint.ip().to_string(), endpoint.port().to_string()])
        .args(&shards)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js 18 or later)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let mut next_line = async || match tokio::time::timeout(Duration::from_secs(45), stdout.next_line()).await {
        Ok(Ok(Some(line))) => line,
        other => {
            let mut err = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
            panic!("the node clients stopped ({other:?}):\n{err}");
        }
    };
    assert_eq!(next_line().await, "ready");

    let config_file = config_path(&lab);
    let mut failover = roomguard(&["failover", "--room", "2", "--config", config_file.to_str().unwrap()]);
    failover.env("ROOMGUARD_LOG", "info");
    let out = run(failover).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if std::env::var_os("RG_NODE_DEBUG").is_some() {
        eprintln!("the CLI's log:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(c.wait_healthy_primary("2", Duration::from_secs(10)).await, "{}", c.report_text());
    stdin.write_all(b"graceful\n").await.unwrap();
    let graceful = next_line().await;
    assert!(graceful.starts_with("check 1 ok {} "), "errors in a graceful failover: {graceful}");
    assert!(graceful.ends_with(" lost {} inFlight {}"), "acknowledged writes lost: {graceful}");

    for id in lab.room(1) {
        lab.servers[id].kill();
    }
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert!(c.wait_one_failover_to("1", Duration::from_secs(15)).await, "{}", c.report_text());
    stdin.write_all(format!("room 2 lost {killed_at}\n").as_bytes()).await.unwrap();
    let lost = next_line().await;
    assert!(lost.starts_with("check 2 ok "), "{lost}");
    assert!(!lost.contains("readonly"), "READONLY reached a client: {lost}");
    assert!(lost.contains(" lost {} "), "acknowledged writes lost: {lost}");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    eprintln!("node clients' errors: after the graceful failover {graceful}; after room 2's loss {lost}");
    c.stop().await;
}

/// What a client polling the endpoint saw ([`poll_endpoint`]).
#[derive(Default)]
struct Polled {
    /// Addresses the endpoint named as a master, in order (each change once).
    named: Vec<String>,
    /// Replies naming no master.
    nulls: u64,
    /// Addresses seen answering `ROLE` as a replica after the endpoint named them.
    replicas: std::collections::HashSet<String>,
    /// The endpoint named an address that had already answered as a replica: (address, how
    /// many times).
    stale: std::collections::HashMap<String, u64>,
    rounds: u64,
}

/// The first element of `ROLE` (`master`, `slave`), or `None` when `con` does not answer.
async fn role_of(con: &mut MultiplexedConnection) -> Option<String> {
    match redis::cmd("ROLE").query_async::<redis::Value>(con).await {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A client asking the endpoint for `shard`'s master as fast as it can and checking with
/// `ROLE` that every address it is given answers as a master (or not at all). An address
/// that answered as a replica, is named *again* afterwards and still answers as a replica was
/// named while it was a replica: recorded in `stale`. (An address named just before its
/// demotion, whose `ROLE` then says slave, is the ordinary race of any discovery and is not
/// counted.)
async fn poll_endpoint(endpoint: String, shard: String, stop: Arc<AtomicBool>, polled: Arc<Mutex<Polled>>) {
    let mut sentinel = connect(&endpoint).await;
    let mut nodes: std::collections::HashMap<String, MultiplexedConnection> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let reply: Option<(String, u16)> =
            match redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&shard).query_async(&mut sentinel).await {
                Ok(reply) => reply,
                Err(e) => panic!("the endpoint failed: {e}"),
            };
        let Some((host, port)) = reply else {
            polled.lock().unwrap().nulls += 1;
            continue;
        };
        let named = format!("{host}:{port}");
        let was_replica = {
            let mut p = polled.lock().unwrap();
            p.rounds += 1;
            if p.named.last() != Some(&named) {
                p.named.push(named.clone());
            }
            p.replicas.contains(&named)
        };
        if !nodes.contains_key(&named) {
            match probe::connect(&addr(&named), &Default::default(), Duration::from_millis(500)).await {
                Ok(con) => drop(nodes.insert(named.clone(), con)),
                Err(_) => continue,
            }
        }
        let role = role_of(nodes.get_mut(&named).unwrap()).await;
        let mut p = polled.lock().unwrap();
        match role.as_deref() {
            // It answered as a replica before the endpoint named it, and still does.
            Some("slave") if was_replica => *p.stale.entry(named).or_default() += 1,
            Some("slave") => drop(p.replicas.insert(named)),
            // Promoted since (a failback): naming it is right.
            Some(_) => drop(p.replicas.remove(&named)),
            // Closed (a demotion kills every client): reconnect next time.
            None => drop(nodes.remove(&named)),
        }
    }
}

/// Item 3 of issue 15: a `roomguard failover` run in another process beside a running
/// controller never leaves that controller's endpoint naming a master that answers as a
/// replica, neither through the controller (the default when it answers on `[http] listen`)
/// nor acting directly (`--direct`: it waits for the endpoint to name the new masters before
/// it demotes the old ones). Clients poll `get-master-addr-by-name` as fast as they can and
/// `ROLE` every address they are given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_failover_never_leaves_the_endpoint_naming_a_replica() {
    const TOKEN: &str = "clients-test-admin-token-0123456789";
    let sentinel_listen = format!("127.0.0.1:{}", port(25808));
    let lab = lab_with(roomguard::lab::LabSpec {
        base_port: 25800,
        sentinel_listen: Some(sentinel_listen.clone()),
        ..Default::default()
    })
    .await;
    // The controller's HTTP server on a known port with an admin token, in the file the CLI
    // reads too: the CLI finds it there.
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", port(25809)).parse().unwrap();
    let config_file = config_path(&lab);
    let toml = std::fs::read_to_string(&config_file).unwrap().replace(
        "[http]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[http]\nlisten = \"{http}\"\nadmin_token = \"{TOKEN}\"\n"),
    );
    assert!(toml.contains(TOKEN), "{toml}");
    std::fs::write(&config_file, toml).unwrap();
    let mut config = lab.config.clone();
    config.http.listen = http;
    config.http.admin_token = Some(roomguard::config::Secret::new(TOKEN));
    let c = Controller::start_with(config).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    let mut seen = Vec::new();
    for head in [25801, 25802] {
        for _ in 0..2 {
            let polled = Arc::new(Mutex::new(Polled::default()));
            pollers.push(tokio::spawn(poll_endpoint(
                sentinel_listen.clone(),
                shard(head),
                stop.clone(),
                polled.clone(),
            )));
            seen.push((head, polled));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let file = config_file.to_str().unwrap();
    // Through the running controller (found on its [http] listen), back acting directly, then
    // through the controller again, named by `--via` alone.
    let mut via = 0;
    for (room, how) in [("2", None), ("1", Some("--direct")), ("2", Some("--via"))] {
        let mut args = vec!["failover", "--room", room, "--config", file];
        args.extend(how);
        let mut cmd = roomguard(&args);
        cmd.env("ROOMGUARD_LOG", "info");
        let out = run(cmd).await;
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("the CLI (failover to room {room}):\n{stderr}");
        assert!(out.status.success() && stdout.contains("graceful failover"), "{stdout}\n{stderr}");
        assert_eq!(stderr.contains("through the controller running at"), how.is_none(), "{stderr}");
        // Only a failover through the admin API is counted by the controller as its own.
        via += u32::from(how != Some("--direct"));
        assert_eq!(c.metric("roomguard_failovers_total", &["trigger=\"manual\""]), f64::from(via), "{how:?}");
        // The controller's loop left the old masters to the CLI, which demoted them on the
        // connections that paused them and lifted the pause (the loop's own demotion closed
        // those connections: the pause then outlived the failover by switchover_timeout × 2).
        assert!(!stderr.contains("could not unpause") && !stderr.contains("could not demote"), "{stderr}");
        assert!(c.wait_healthy_primary(room, Duration::from_secs(10)).await, "{}", c.report_text());
        // The pollers see the new masters.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await.unwrap();
    }
    for (head, polled) in seen {
        let p = polled.lock().unwrap();
        eprintln!(
            "{}: {} answers, {} null, named {:?}, seen as replicas {:?}",
            shard(head),
            p.rounds,
            p.nulls,
            p.named,
            p.replicas
        );
        assert_eq!(p.named, [at(1, head), at(2, head), at(1, head), at(2, head)], "the pollers missed a failover");
        assert!(p.stale.is_empty(), "the endpoint named instances that answered as replicas: {:?}", p.stale);
    }
    c.stop().await;
}

/// Issue 15, item 5: `SENTINEL SENTINELS` names the other controllers' endpoints
/// (`[sentinel] peers`), and ioredis adds them to its list: given only this endpoint, it
/// reconnects through the next one. ioredis never rewinds its list after a successful
/// connect, so it runs off the end once per pass over the list, and reports each time as an
/// `error` event ("All sentinels are unreachable. Retrying from scratch after 10ms"): with one
/// endpoint at every reconnect, with two at every second one (a client limitation; a fix
/// needs ioredis to rewind). The endpoint without peers is the control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_adds_the_peer_endpoints_and_reconnects_without_errors() {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/sentinel_peers.mjs");
    assert!(script.with_file_name("node_modules").join("ioredis").is_dir(), "run scripts/ensure-deps");
    let lab = lab(25810).await;
    let (a, b) = (format!("127.0.0.1:{}", port(25818)), format!("127.0.0.1:{}", port(25819)));
    // Two controllers of the same deployment, each with its endpoint and state file; only A
    // names B as its peer (its own address in the list is left out).
    let endpoint = |listen: &str, peers: Vec<String>| {
        let mut raw = roomguard::sentinel::RawSentinel::listening_on(listen);
        raw.peers = Some(peers);
        raw.validate().unwrap()
    };
    let mut config_a = lab.config.clone();
    config_a.sentinel = Some(endpoint(&a, vec![a.clone(), b.clone()]));
    assert_eq!(config_a.sentinel.as_ref().unwrap().peers, [addr(&b)]);
    let mut config_b = lab.config.clone();
    config_b.sentinel = Some(endpoint(&b, vec![]));
    config_b.controller.state_file = lab.dir().join("state-b.json");
    let (ca, cb) = (Controller::start_with(config_a).await, Controller::start_with(config_b).await);

    // What the endpoint answers (the redis crate): Sentinel's fields for another Sentinel.
    let mut con = connect(&a).await;
    let peers: Vec<std::collections::HashMap<String, String>> =
        redis::cmd("SENTINEL").arg("sentinels").arg(shard(25811)).query_async(&mut con).await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let (ip, p) = b.split_once(':').unwrap();
    assert_eq!((peers[0]["ip"].as_str(), peers[0]["port"].as_str(), peers[0]["flags"].as_str()), (ip, p, "sentinel"));
    let none: Vec<redis::Value> =
        redis::cmd("SENTINEL").arg("sentinels").arg(shard(25811)).query_async(&mut connect(&b).await).await.unwrap();
    assert!(none.is_empty());

    let ioredis = async |endpoint: &str| {
        let (host, p) = endpoint.split_once(':').unwrap();
        let mut node = std::process::Command::new("node");
        node.args([script.to_str().unwrap(), host, p, &shard(25811), "5"]);
        let out = tokio::time::timeout(Duration::from_secs(60), run(node)).await.expect("the ioredis client hangs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let with_peer = ioredis(&a).await;
    let alone = ioredis(&b).await;
    eprintln!("ioredis given A (peer B): {with_peer}; given B (no peers): {alone}");
    assert_eq!(with_peer["sentinels"], serde_json::json!([a, b]), "ioredis did not add the peer");
    // Five reconnects: through B, then off the end (error) and A, B, off the end and A.
    assert_eq!(with_peer["unreachable"], 2, "{with_peer}");
    assert_eq!(alone["unreachable"], 5, "the control: {alone}");
    ca.stop().await;
    cb.stop().await;
}
