//! The version matrix's core rows (issue 11): run on whatever server `ROOMGUARD_REDIS_SERVER`
//! names (scripts/test runs them once per version: Redis 2.8, 3.0, 3.2, 5.0, 6.2, 7.0 and
//! Valkey 8). Ports 23500-23599 only. Each test asserts what its version supports and nothing
//! a version lacks: on Redis < 6.2 the graceful switchover refuses writes (`NOREPLICAS`)
//! instead of pausing them, and there is no lineage to count divergence with before 4.0.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use roomguard::{
    lab::{Lab, LabSpec, binary_version, redis_server_binary},
    version::ServerVersion,
};

use crate::util::*;

fn server_version() -> ServerVersion {
    binary_version(&redis_server_binary().unwrap()).unwrap()
}

async fn with_sentinel_lab(base_port: u16) -> Lab {
    let spec = LabSpec {
        base_port: port(base_port),
        http_listen: "127.0.0.1:0".into(),
        sentinel_listen: Some("127.0.0.1:0".into()),
        ..LabSpec::default()
    };
    let lab = Lab::start(&spec).await.expect("lab starts on ROOMGUARD_REDIS_SERVER");
    std::fs::write(config_path(&lab), spec.config_toml()).unwrap();
    lab
}

/// Room loss with the chains kept; the version shown per instance (`/topology`, metric); the
/// Sentinel endpoint names the new masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_room_loss_keeps_chains_and_sentinel_names_the_new_master() {
    let version = server_version();
    let mut lab = with_sentinel_lab(23500).await;
    for head in [23501, 23502] {
        let mut con = connect(&at(1, head)).await;
        let () = redis::cmd("SET").arg("before-loss").arg(head).query_async(&mut con).await.unwrap();
    }
    for (head, tail) in [(23501, 23503), (23502, 23504)] {
        let replicated = wait_until(Duration::from_secs(10), || async {
            let mut con = connect(&at(2, tail)).await;
            redis::cmd("GET").arg("before-loss").query_async::<Option<u16>>(&mut con).await.ok().flatten() == Some(head)
        })
        .await;
        assert!(replicated, "the write did not reach the end of the chain");
    }
    let c = Controller::start(&lab).await;
    let label = format!("redis_version=\"{version}\"");
    assert!(
        wait_until(Duration::from_secs(5), || async { c.metric("roomguard_instance_info", &[&label]) == 8.0 }).await,
        "every instance's version is exported as {label}:\n{}",
        c.metrics()
    );
    let (_, body) = http_get(c.http, "/topology").await;
    let topology: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(topology["shards"][0]["instances"][0]["version"], version.to_string(), "{body}");
    assert!(c.report_text().contains(&version.to_string()), "{}", c.report_text());

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let promoted = wait_until(Duration::from_secs(15), || async {
        is_master(&at(2, 23501)).await && is_master(&at(2, 23502)).await
    })
    .await;
    assert!(promoted, "room 2 heads were not promoted: {}", c.report_text());
    for (head, tail) in [(23501, 23503), (23502, 23504)] {
        let mut con = connect(&at(2, head)).await;
        let before: Option<u16> = redis::cmd("GET").arg("before-loss").query_async(&mut con).await.unwrap();
        assert_eq!(before, Some(head), "data written before the loss is on the new master");
        assert!(
            wait_until(Duration::from_secs(10), || async { replicates(&at(2, tail), &at(2, head)).await }).await,
            "room 2's replica stays attached to its new master: {}",
            c.report_text()
        );
    }
    let sentinel = c.sentinel.expect("the lab config has [sentinel]");
    let names_new_master = wait_until(Duration::from_secs(5), || async {
        let Ok(client) = redis::Client::open(format!("redis://{sentinel}")) else { return false };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else { return false };
        let reply: redis::RedisResult<(String, u16)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(shard(23501)).query_async(&mut con).await;
        reply.is_ok_and(|(host, port)| format!("{host}:{port}") == at(2, 23501))
    })
    .await;
    assert!(names_new_master, "the Sentinel endpoint does not name {}", at(2, 23501));
    c.stop().await;
}

/// A hung room (SIGSTOP) fails over; when it resumes its stale masters are demoted under room 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_hung_room_fails_over_and_its_stale_masters_are_demoted() {
    let lab = lab(23510).await;
    let c = Controller::start(&lab).await;
    for id in lab.room(0) {
        lab.servers[id].hang();
    }
    let promoted = wait_until(Duration::from_secs(15), || async {
        is_master(&at(2, 23511)).await && is_master(&at(2, 23512)).await
    })
    .await;
    for id in lab.room(0) {
        lab.servers[id].resume();
    }
    assert!(promoted, "no failover on a silent hang: {}", c.report_text());
    for (head, tail) in [(23511, 23513), (23512, 23514)] {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                replicates(&at(1, head), &at(2, tail)).await && replicates(&at(1, tail), &at(1, head)).await
            })
            .await,
            "stale master {} not re-chained under room 2: {}",
            at(1, head),
            c.report_text()
        );
        assert!(is_master(&at(2, head)).await);
    }
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"demote\"", "outcome=\"ok\""]), 2.0);
    c.stop().await;
}

/// Room 1 black-holed (iptables DROP both ways, no RST): room 2's heads keep their links "up",
/// so the evidence must be their offsets standing still (`stalled`), read from
/// `slave_repl_offset` where the version has no `slave_read_repl_offset` (< 7.0), with the
/// period of whatever drives them (before 4.0 room 1's tail pings them itself): not a dropped
/// link, and not Redis' whole-second count (the 12 s rule would take 3 s or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_black_hole_fails_over_on_offset_stall() {
    let lab = lab(23570).await;
    let c = Controller::start(&lab).await;
    crate::faults::wait_derived_threshold(&c).await;
    let hole = lab.black_hole(0).expect("iptables");
    let started = std::time::Instant::now();
    let sampler = sample_room_1_evidence(&c, Duration::from_secs(10));
    let promoted = wait_until(Duration::from_secs(10), || async {
        is_master(&at(2, 23571)).await && is_master(&at(2, 23572)).await
    })
    .await;
    let took = started.elapsed();
    let evidence = sampler.await.unwrap();
    drop(hole);
    assert!(promoted, "no failover within 10 s of a black hole: {}", c.report_text());
    assert!(evidence.contains("stalled"), "the offsets were not the evidence: {evidence:?}");
    assert!(!evidence.contains("link_down") && !evidence.contains("quiet"), "{evidence:?}");
    assert!(took < Duration::from_secs(3), "{took:?}: slower than the offsets allow");
    eprintln!("black hole on {}: room 2 writable after {took:?}", server_version());
    c.stop().await;
}

/// `roomguard run` as user nobody, killed when dropped: a controller whose packets an iptables
/// owner rule can drop without touching replication (Redis 2.8 replicates from 127.0.0.1 too,
/// so an address rule cannot tell the two apart).
struct NobodyController {
    child: std::process::Child,
    http: std::net::SocketAddr,
    log: PathBuf,
}

impl NobodyController {
    async fn start(lab: &Lab, base_port: u16) -> NobodyController {
        let dir = lab.dir().join("nobody");
        std::fs::create_dir_all(&dir).unwrap();
        std::process::Command::new("chmod").arg("0777").arg(&dir).status().unwrap();
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", port(base_port + 9)).parse().unwrap();
        let spec = LabSpec { base_port: port(base_port), http_listen: http.to_string(), ..LabSpec::default() };
        let config = dir.join("controller.toml");
        std::fs::write(&config, spec.config_toml()).unwrap();
        let log = dir.join("controller.log");
        // Killed with the test binary, even by SIGKILL (spawned from the lab's long-lived
        // spawner thread: the death signal fires when the forking thread exits).
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--pdeathsig", "KILL", "--"])
            .arg(env!("CARGO_BIN_EXE_roomguard"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("ROOMGUARD_CONFIG")
            .env("ROOMGUARD_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null());
        let child = roomguard::lab::spawn_child(cmd).unwrap();
        let c = NobodyController { child, http, log };
        assert!(
            wait_until(Duration::from_secs(10), || async { c.metric("roomguard_rounds_total", &[]).await > 0.0 }).await,
            "roomguard run (as nobody) never served metrics; log:\n{}",
            c.log_text()
        );
        c
    }

    async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        match tokio::net::TcpStream::connect(self.http).await {
            Ok(_) => metric_value(&http_get(self.http, "/metrics").await.1, name, filters),
            Err(_) => 0.0,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NobodyController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controller is cut off from room 1 while room 2 still replicates from it: no failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_controller_cut_off_never_fails_over() {
    let lab = lab(23520).await;
    let c = NobodyController::start(&lab, 23520).await;
    let ports = format!("{}:{}", port(23521), port(23524));
    let rule = IptablesRule::add(
        23520,
        "filter",
        &["-m", "owner", "--uid-owner", "65534", "-d", "127.0.0.11", "-p", "tcp", "--dport", &ports, "-j", "DROP"],
    );
    let noticed = wait_until(Duration::from_secs(10), || async {
        c.metric("roomguard_room_unreachable_only_from_controller", &["room=\"1\""]).await == 1.0
    })
    .await;
    assert!(noticed, "the controller did not say it is cut off; log:\n{}", c.log_text());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]).await, 0.0, "{}", c.log_text());
    assert_eq!(c.metric("roomguard_actions_total", &[]).await, 0.0, "{}", c.log_text());
    assert!(replicates(&at(2, 23521), &at(1, 23523)).await, "room 2 still follows room 1");
    assert!(is_master(&at(1, 23521)).await && is_master(&at(1, 23522)).await);
    drop(rule);
}

/// Writes `w:<n>` keys to `target` until told to stop or it refuses writes for good (READONLY:
/// demoted). Refusals meanwhile (`NOREPLICAS`, the fence on Redis < 6.2) are not acknowledged.
async fn writer(target: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u64>>>, refused: Arc<Mutex<u64>>) {
    let mut con = connect(&target).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match redis::cmd("SET").arg(format!("w:{n}")).arg(n).query_async::<()>(&mut con).await {
            Ok(()) => acked.lock().unwrap().push(n),
            Err(e) if e.code() == Some("READONLY") => return,
            Err(e) if e.code() == Some("NOREPLICAS") => *refused.lock().unwrap() += 1,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A graceful switchover under a writer loses no acknowledged write, on every version; and the
/// fence (Redis < 6.2) is lifted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_graceful_switchover_under_a_writer_loses_no_acknowledged_write() {
    let version = server_version();
    let lab = lab(23530).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0));
    let writer = tokio::spawn(writer(at(1, 23531), stop.clone(), acked.clone(), refused.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config = config_path(&lab);
    let stdout = graceful_failover_cli(&config, "2").await;
    assert_eq!(stdout.contains("NOREPLICAS"), !version.has_pause_write(), "{stdout}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writer should have been acknowledged some writes: {}", acked.len());
    // The fence holds from before the catch-up to the demotion (which closes the writer's
    // connection): several round trips to several instances, while the writer sends one write
    // per millisecond and a round trip. Refused writes are seen on every run, never on >= 6.2.
    let refused = *refused.lock().unwrap();
    assert_eq!(refused > 0, !version.has_pause_write(), "{refused} writes refused with NOREPLICAS on {version}");
    let mut con = connect(&at(2, 23531)).await;
    let keys: Vec<String> = acked.iter().map(|n| format!("w:{n}")).collect();
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await.unwrap();
    let lost: Vec<&String> = keys.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost (version {version}): {lost:?}", lost.len());

    for (head, tail) in [(23531, 23533), (23532, 23534)] {
        // The mirror chain. A demoted master drops its own replicas when it attaches to its
        // new master (they reconnect and resync at once): wait for the links, do not sample.
        let chain = [at(2, head), at(2, tail), at(1, head), at(1, tail)];
        assert!(
            wait_until(Duration::from_secs(10), || async {
                is_master(&chain[0]).await
                    && replicates(&chain[1], &chain[0]).await
                    && replicates(&chain[2], &chain[1]).await
                    && replicates(&chain[3], &chain[2]).await
            })
            .await,
            "not the mirror chain (version {version}): {:?}",
            futures::future::join_all(chain.iter().map(|a| describe(a))).await
        );
        // The fence is lifted: the old master's setting is back to its default.
        let mut con = connect(&at(1, head)).await;
        let setting: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("min-slaves-to-write").query_async(&mut con).await.unwrap();
        assert_eq!(setting.get(1).map(String::as_str), Some("0"), "{setting:?}");
    }

    // And back, the other way round (the fence or pause now on room 2's masters).
    let out = run(roomguard(&["failover", "--room", "1", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(is_master(&at(1, 23531)).await && replicates(&at(2, 23531), &at(1, 23533)).await);
}

/// The write fence a switchover uses, on one server: writes stop (paused on >= 6.2, refused
/// with `NOREPLICAS` before), the controller's own reads still work, and lifting it restores
/// writes and the settings. `REPLICAOF` falls back to `SLAVEOF` where it is unknown (< 5.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_write_fence_stops_writes_and_is_lifted() {
    use roomguard::{
        act::{InForce, Node},
        config::RedisSettings,
        lab::RedisServer,
    };
    let version = server_version();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (addr(&at(1, 23541)), addr(&at(1, 23542)));
    let binary = redis_server_binary().unwrap();
    let servers = [&a, &b].map(|x| RedisServer::start(&binary, x, dir.path(), None, &[]).unwrap());
    for s in &servers {
        s.wait_ready(&RedisSettings::default(), Duration::from_secs(10)).await.unwrap();
    }
    let mut node = Node::connect(&a, &RedisSettings::default(), Duration::from_secs(1)).await.unwrap();
    assert_eq!(node.server_version().await.unwrap(), Some(version));
    let fence = node.fence_writes(Some(version), Duration::from_secs(5), InForce::Refuse).await.unwrap();
    assert_eq!(matches!(fence, roomguard::act::WriteFence::PauseWrite), version.has_pause_write());

    let mut client = connect(&at(1, 23541)).await;
    let mut set = redis::cmd("SET");
    set.arg("k").arg("v");
    let write = set.query_async::<()>(&mut client);
    match tokio::time::timeout(Duration::from_millis(300), write).await {
        Err(_) => assert!(version.has_pause_write(), "a write blocked on {version}"),
        Ok(Err(e)) => assert_eq!((e.code(), version.has_pause_write()), (Some("NOREPLICAS"), false), "{e}"),
        Ok(Ok(())) => panic!("a write went through the fence on {version}"),
    }
    assert!(node.info().await.is_ok(), "the controller still reads INFO during the fence");
    node.lift_fence(&fence).await.unwrap();
    let mut client = connect(&at(1, 23541)).await;
    let () = redis::cmd("SET").arg("k").arg("v2").query_async(&mut client).await.unwrap();
    assert_eq!(node.config_get("min-slaves-to-write").await.unwrap().as_deref(), Some("0"));

    // REPLICAOF, or SLAVEOF before 5.0: both ways, twice (the second time from memory).
    for _ in 0..2 {
        node.replicaof(Some(&b)).await.unwrap();
        assert!(wait_until(Duration::from_secs(10), || async { replicates(&at(1, 23541), &at(1, 23542)).await }).await);
        node.promote().await.unwrap();
    }
}

async fn min_replicas_to_write(target: &str) -> String {
    let mut con = connect(target).await;
    let setting: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("min-slaves-to-write").query_async(&mut con).await.unwrap();
    setting.get(1).cloned().unwrap_or_default()
}

async fn set_min_replicas_to_write(target: &str, value: &str) {
    let mut con = connect(target).await;
    let () = redis::cmd("CONFIG").arg("SET").arg("min-slaves-to-write").arg(value).query_async(&mut con).await.unwrap();
}

/// A write fence (`min-slaves-to-write`, Redis < 6.2) left by a switchover or a room fence
/// whose controller died: the settings audit lifts it once its lease has run out, and leaves
/// one whose lease runs; a promotion lifts any fence on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_left_over_write_fence_is_lifted_and_a_new_master_never_keeps_one() {
    use roomguard::act::FenceMark;
    use std::time::SystemTime;
    let mut lab = lab(23590).await;
    let (old_master, new_master) = (at(1, 23591), at(2, 23591));
    let left_over = FenceMark::value(SystemTime::now() - FenceMark::GRACE - Duration::from_secs(60));
    let in_force = FenceMark::value(SystemTime::now() + Duration::from_secs(600));
    set_min_replicas_to_write(&old_master, &left_over).await;
    set_min_replicas_to_write(&new_master, &in_force).await;
    let mut client = connect(&old_master).await;
    let refused = redis::cmd("SET").arg("k").arg("v").query_async::<()>(&mut client).await.unwrap_err();
    assert_eq!(refused.code(), Some("NOREPLICAS"), "{refused}");

    let c = Controller::start(&lab).await;
    let label = format!("instance=\"{old_master}\"");
    assert!(
        wait_until(Duration::from_secs(10), || async { min_replicas_to_write(&old_master).await == "0" }).await,
        "the left-over fence on {old_master} was not lifted"
    );
    assert_eq!(c.metric("roomguard_write_fences_lifted_total", &[&label]), 1.0, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_write_fences_lifted_total", &[]), 1.0, "only the left-over fence");
    let () = redis::cmd("SET").arg("k").arg("v").query_async(&mut client).await.unwrap();
    assert_eq!(min_replicas_to_write(&new_master).await, in_force, "a fence in force was lifted");

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { is_master(&new_master).await }).await,
        "room 2 was not promoted: {}",
        c.report_text()
    );
    assert_eq!(min_replicas_to_write(&new_master).await, "0", "the new master kept a fence");
    let mut client = connect(&new_master).await;
    let () = redis::cmd("SET").arg("k").arg("after").query_async(&mut client).await.unwrap();
    c.stop().await;
}

/// `roomguard lab --redis-server PATH` runs the lab on the server given by the flag (not the
/// environment): every instance reports that version in `INFO server`, and SIGTERM stops the
/// lab cleanly (exit 0, every instance gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_lab_cli_runs_the_given_redis_server() {
    deadline();
    let binary = redis_server_binary().unwrap();
    let version = binary_version(&binary).unwrap();
    let (base, http) = (port(23580).to_string(), format!("127.0.0.1:{}", port(23589)));
    let mut cmd = roomguard_dying_with_us(&["lab", "--base-port", &base, "--http", &http, "--duration", "60s"]);
    cmd.arg("--redis-server").arg(&binary).env_remove("ROOMGUARD_REDIS_SERVER");
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = roomguard::lab::spawn_child(cmd).unwrap();
    let instances: Vec<String> = (1..=2).flat_map(|room| (23581..=23584).map(move |p| at(room, p))).collect();
    let reports = |target: String| async move {
        let Ok(client) = redis::Client::open(format!("redis://{target}")) else { return None };
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut con).await.ok()?;
        ServerVersion::from_info(&info)
    };
    let all_up = wait_until(Duration::from_secs(20), || async {
        futures::future::join_all(instances.iter().map(|a| reports(a.clone())))
            .await
            .iter()
            .all(|v| *v == Some(version))
    })
    .await;
    // Its controller answers (SIGTERM is handled from then on).
    let http: std::net::SocketAddr = http.parse().unwrap();
    let serving = wait_until(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(http).await.is_ok()
            && metric_value(&http_get(http, "/metrics").await.1, "roomguard_rounds_total", &[]) > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(stopped.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(all_up && serving, "not every lab instance reports {version}, or no controller: {}", status.1);
    assert!(status.0.success(), "the lab did not stop cleanly: {:?}\n{}", status.0, status.1);
    for a in &instances {
        assert!(reports(a.clone()).await.is_none(), "{a} still runs after the lab stopped");
    }
}

/// `REPLICAOF` renamed away (`rename-command REPLICAOF ""`): `SLAVEOF` is used; both renamed:
/// the error names `REPLICAOF`. Runs in the full suite (7.0) only: before 5.0 there is no
/// `REPLICAOF` to rename, and the matrix rows above use `SLAVEOF` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_replicaof_falls_back_to_slaveof_and_both_disabled_is_named() {
    use roomguard::{
        act::{ActError, Node},
        config::RedisSettings,
        lab::RedisServer,
        observe::ProbeErrorKind,
    };
    let dir = tempfile::tempdir().unwrap();
    let binary = redis_server_binary().unwrap();
    let (master, a, b) = (addr(&at(1, 23561)), addr(&at(1, 23562)), addr(&at(1, 23563)));
    let no_replicaof = ["--rename-command", "REPLICAOF", ""].map(String::from);
    let neither = ["--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""].map(String::from);
    let servers = [
        RedisServer::start(&binary, &master, dir.path(), None, &[]).unwrap(),
        RedisServer::start(&binary, &a, dir.path(), None, &no_replicaof).unwrap(),
        RedisServer::start(&binary, &b, dir.path(), None, &neither).unwrap(),
    ];
    for s in &servers {
        s.wait_ready(&RedisSettings::default(), Duration::from_secs(10)).await.unwrap();
    }
    let mut node = Node::connect(&a, &RedisSettings::default(), Duration::from_secs(1)).await.unwrap();
    node.replicaof(Some(&master)).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || async { replicates(&at(1, 23562), &at(1, 23561)).await }).await);
    node.promote().await.unwrap();

    let mut node = Node::connect(&b, &RedisSettings::default(), Duration::from_secs(1)).await.unwrap();
    match node.replicaof(Some(&master)).await {
        Err(ActError::Command { command, error, .. }) => {
            let expected = ports_in("REPLICAOF 127.0.0.11 23561");
            assert_eq!((command.as_str(), error.kind), (expected.as_str(), ProbeErrorKind::UnknownCommand));
        }
        other => panic!("expected REPLICAOF's unknown-command error, got {other:?}"),
    }
}

/// Mixed versions in one deployment (an upgrade in progress): room 1 on Redis 2.8, room 2 on
/// the suite's server (7.0). Each instance's version is shown; a graceful switchover to room 2
/// is refused (room 1 would then replicate from 7.0, whose RDB 2.8 cannot load), naming the
/// instances and versions, and changes nothing; room 1's loss fails over to room 2 all the same.
/// Full suite only; needs scripts/servers' Redis 2.8, which scripts/test builds first (skipped
/// with a note without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_servers_room_2_on_a_newer_redis_takes_over() {
    use roomguard::{config::RedisSettings, lab::RedisServer};
    let cache = std::env::var_os("ROOMGUARD_SERVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/roomguard/servers"));
    let old = cache.join("redis-2.8/redis-server");
    if !old.is_file() {
        eprintln!("skipped: {} is missing (run scripts/servers; scripts/test does)", old.display());
        return;
    }
    let new = redis_server_binary().unwrap();
    let (old_version, new_version) = (binary_version(&old).unwrap(), binary_version(&new).unwrap());
    if !new_version.can_replicate_from(&old_version) || old_version.can_replicate_from(&new_version) {
        eprintln!("skipped: {} ({new_version}) is no newer RDB format than Redis 2.8's", new.display());
        return;
    }

    let spec = LabSpec {
        base_port: port(23550),
        http_listen: "127.0.0.1:0".into(),
        redis_server: Some(old),
        ..Default::default()
    };
    let mut lab = Lab::start(&spec).await.unwrap();
    for id in lab.room(1) {
        let parent = lab.seed_parent(id);
        let addr = lab.topology().addr(id).clone();
        lab.servers[id].kill();
        lab.servers[id] = RedisServer::start(&new, &addr, lab.dir(), parent.as_ref(), &[]).unwrap();
        lab.servers[id].wait_ready(&RedisSettings::default(), Duration::from_secs(10)).await.unwrap();
    }
    assert!(lab.wait_linked(Duration::from_secs(20)).await, "room 2 (newer) did not sync from room 1 (2.8)");
    std::fs::write(config_path(&lab), spec.config_toml()).unwrap();
    let config = config_path(&lab);
    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a switchover under a newer master was not refused: {stderr}");
    let named = format!("{} ({old_version}) would replicate from {} ({new_version})", at(1, 23551), at(2, 23553));
    assert!(stderr.contains(&named) && stderr.contains("Nothing changed"), "{stderr}");
    assert!(is_master(&at(1, 23551)).await && replicates(&at(2, 23551), &at(1, 23553)).await, "something changed");
    let c = Controller::start(&lab).await;
    for (version, count) in [(old_version, 4.0), (new_version, 4.0)] {
        let label = format!("redis_version=\"{version}\"");
        assert!(
            wait_until(Duration::from_secs(5), || async { c.metric("roomguard_instance_info", &[&label]) == count })
                .await,
            "{label}:\n{}",
            c.metrics()
        );
    }
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    for (head, tail) in [(23551, 23553), (23552, 23554)] {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                is_master(&at(2, head)).await && replicates(&at(2, tail), &at(2, head)).await
            })
            .await,
            "room 2 did not take over: {}",
            c.report_text()
        );
    }
    c.stop().await;
}
