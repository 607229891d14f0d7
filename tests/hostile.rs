//! Row 9: hostile or broken instances (non-Redis services, a peer that never stops sending,
//! wrong passwords, `-LOADING`, a disabled `REPLICAOF`, INFO with missing fields) give typed
//! errors, a log line and a metric, and no action based on what was not understood.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use roomguard::{
    act::{self, ActError},
    lab::{Lab, LabSpec, RedisServer, redis_server_binary},
    observe::ProbeErrorKind,
    plan::Action,
};

use crate::util::*;

/// Accepts connections on `addr` and answers every read with `reply`, keeping the connection
/// open (as a Redis that answers every command alike would).
async fn answering_server(addr: String, reply: Vec<u8>) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(&addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A RESP bulk string, as Redis sends an `INFO` reply.
fn bulk(body: &str) -> Vec<u8> {
    format!("${}\r\n{body}\r\n", body.len()).into_bytes()
}

/// Writes the lab's config with `[http] listen` on `http_port` and `[redis]` as given.
fn daemon_config(lab: &Lab, spec: &LabSpec, http_port: u16, redis: Option<&str>) -> (std::path::PathBuf, SocketAddr) {
    let http: SocketAddr = format!("127.0.0.1:{}", port(http_port)).parse().unwrap();
    let spec = LabSpec { http_listen: http.to_string(), redis_section: redis.map(String::from), ..spec.clone() };
    let path = lab.dir().join("daemon.toml");
    std::fs::write(&path, spec.config_toml()).unwrap();
    (path, http)
}

/// Accepts connections on `addr` and answers every read with `reply`, then closes.
async fn fake_server(addr: String, reply: &'static [u8]) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(&addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_non_redis_services_give_typed_errors_and_no_action() {
    let mut lab = lab(21170).await;
    lab.server(&at(2, 21173)).kill();
    lab.server(&at(2, 21174)).kill();
    let http = fake_server(at(2, 21173), b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let garbage = fake_server(at(2, 21174), b"\x00\xff\x13garbage\x7f\r\n\x01").await;

    let c = Controller::start(&lab).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for a in [at(2, 21173), at(2, 21174)] {
        let instance = format!("instance=\"{a}\"");
        assert!(
            c.metric("roomguard_probe_errors_total", &[&instance, "kind=\"protocol\""]) > 0.0,
            "{a} should fail with kind=protocol:\n{}",
            c.metrics()
        );
        assert_eq!(c.metric("roomguard_instance_up", &[&instance]), 0.0);
    }
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "no action on what was not understood");
    assert_no_replicaof(&lab, &c.report_text()).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    let report = c.shared.report.read().unwrap().clone().unwrap();
    let shown = report.render();
    assert!(shown.contains("protocol"), "the status names the error: {shown}");
    assert!(is_master(&at(1, 21171)).await && is_master(&at(1, 21172)).await);
    c.stop().await;
    http.abort();
    garbage.abort();
}

/// Row 11 (part): `[redis] password` is used for every probe and command, and never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_password_is_used_and_never_shown() {
    const PASSWORD: &str = "s3cret-pass-for-roomguard-tests";
    let spec = roomguard::lab::LabSpec {
        base_port: port(21180),
        http_listen: "127.0.0.1:0".into(),
        password: Some(PASSWORD.into()),
        ..Default::default()
    };
    let mut lab = roomguard::lab::Lab::start(&spec).await.unwrap();
    std::fs::write(config_path(&lab), spec.config_toml()).unwrap();
    // Without the password, Redis refuses: the probe's error is typed.
    let refused = roomguard::probe::probe_once(
        &addr(&at(1, 21181)),
        &roomguard::config::RedisSettings::default(),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.kind, roomguard::observe::ProbeErrorKind::Auth, "{refused}");

    let c = Controller::start(&lab).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(c.wait_one_failover_to("2", Duration::from_secs(10)).await, "failover with a password: {}", c.metrics());
    let (_, topology) = http_get(c.http, "/topology").await;
    let (_, page) = http_get(c.http, "/").await;
    let config = config_path(&lab);
    let status = run(roomguard(&["status", "--json", "--config", config.to_str().unwrap()])).await;
    let check = run(roomguard(&["check-config", "--config", config.to_str().unwrap()])).await;
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"primary_room\": \"2\""));
    for (what, text) in [
        ("/topology", topology),
        ("/", page),
        ("/metrics", c.metrics()),
        ("status", format!("{:?}", status)),
        ("check-config", format!("{:?}", check)),
        ("config debug", format!("{:?}", lab.config)),
    ] {
        assert!(!text.contains(PASSWORD), "{what} shows the password");
    }
    c.stop().await;
}

/// A peer that streams without end (`+aaaa…`, a reply that never finishes) is cut off at the
/// reply size cap: a typed `oversized` error, a log line, no action, and the controller's
/// peak memory stays small. Without the cap, redis-rs buffers whatever arrives within the
/// response timeout (hundreds of MB on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_endless_sender_is_cut_off_and_memory_stays_bounded() {
    let spec = LabSpec { base_port: port(22500), ..LabSpec::default() };
    let mut lab = Lab::start(&spec).await.unwrap();
    let victim = at(2, 22503);
    lab.server(&victim).kill();
    let listener = TcpListener::bind(&victim).await.unwrap();
    let streamer = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let chunk = vec![b'a'; 64 * 1024];
                if socket.write_all(b"+").await.is_err() {
                    return;
                }
                while socket.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let (config, http) = daemon_config(&lab, &spec, 22509, None);
    let mut d = Daemon::start(&config, http).await;
    let instance = format!("instance=\"{victim}\"");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            d.metric("roomguard_probe_errors_total", &[&instance, "kind=\"oversized\""]).await >= 20.0
        })
        .await,
        "the endless sender should fail with kind=oversized:\n{}",
        d.metrics().await
    );
    let peak_kib = d.proc_status_kib("VmHWM");
    assert!(d.running(), "the controller crashed");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} kB: the reply cap does not bound memory");
    assert_eq!(d.metric("roomguard_actions_total", &[]).await, 0.0, "no action on what was not understood");
    assert_eq!(d.metric("roomguard_instance_up", &[&instance]).await, 0.0);
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains(&format!("probe of {victim} failed")) && l.contains("oversized")),
        "a log line names the instance and the error:\n{log}"
    );
    eprintln!("endless sender: controller peak RSS {peak_kib} kB");
    streamer.abort();
}

/// A wrong password (`WRONGPASS`) and none at all (`NOAUTH`) are typed `auth` errors with a
/// log line; nothing is acted on, and neither password appears in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_wrong_or_missing_password_is_auth_and_no_action() {
    const RIGHT: &str = "right-password-22510";
    const WRONG: &str = "wrong-password-22510";
    let spec = LabSpec { base_port: port(22510), password: Some(RIGHT.into()), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.unwrap();
    // Room 1 gets a wrong password, room 2 none.
    let redis = format!("[redis.room.\"1\"]\npassword = \"{WRONG}\"");
    let (config, http) = daemon_config(&lab, &spec, 22519, Some(&redis));
    let d = Daemon::start(&config, http).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let metrics = d.metrics().await;
            lab.topology().instances.iter().all(|i| {
                metric_value(
                    &metrics,
                    "roomguard_probe_errors_total",
                    &[&format!("instance=\"{}\"", i.addr), "kind=\"auth\""],
                ) > 0.0
            })
        })
        .await,
        "every instance should fail with kind=auth:\n{}",
        d.metrics().await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.metric("roomguard_actions_total", &[]).await, 0.0);
    assert_eq!(d.metric("roomguard_failovers_total", &[]).await, 0.0);
    let log = d.log_text();
    // redis-rs reports WRONGPASS during the handshake as "Password authentication failed".
    for (a, code) in [(at(1, 22511), "authentication failed"), (at(2, 22511), "NOAUTH")] {
        assert!(
            log.lines().any(|l| l.contains(&format!("probe of {a} failed: auth")) && l.contains(code)),
            "a log line names {a}, the kind and {code}:\n{log}"
        );
    }
    for secret in [RIGHT, WRONG] {
        assert!(!log.contains(secret), "the log shows a password");
        assert!(!d.metrics().await.contains(secret), "the metrics show a password");
    }
    assert!(is_master_with(&at(1, 22511), RIGHT).await && is_master_with(&at(1, 22512), RIGHT).await);
}

async fn is_master_with(a: &str, password: &str) -> bool {
    let settings = roomguard::config::RedisSettings::password(None, password);
    roomguard::probe::probe_once(&addr(a), &settings, Duration::from_secs(1))
        .await
        .is_ok_and(|i| i.role == roomguard::info::Role::Master)
}

/// `-LOADING` is alive, not down (as Sentinel counts it): a room-2 head that answers only
/// `-LOADING` for longer than `down_after` gets no action, and neither does its replica (it is
/// not re-pointed around a head that is merely loading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_loading_instance_is_alive_and_nothing_is_done() {
    let mut lab = lab(22520).await;
    let head = at(2, 22521);
    lab.server(&head).kill();
    let fake = answering_server(head.clone(), b"-LOADING Redis is loading the dataset in memory\r\n".to_vec()).await;
    let c = Controller::start(&lab).await;
    let instance = format!("instance=\"{head}\"");
    // Well beyond down_after (1 s): a down head would have its replica re-pointed by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.metric("roomguard_probe_errors_total", &[&instance, "kind=\"loading\""]) > 0.0, "{}", c.metrics());
    assert_eq!(
        c.metric("roomguard_actions_total", &[]),
        0.0,
        "no action around a loading instance:\n{}",
        c.report_text()
    );
    assert_no_replicaof(&lab, &c.report_text()).await;
    let tail = info(&at(2, 22523)).await.expect("room 2's tail answers");
    assert!(
        tail.master.as_ref().is_some_and(|l| l.points_to("127.0.0.12", port(22521))),
        "tail was re-pointed: {tail:?}"
    );
    let report = c.shared.report.read().unwrap().clone().unwrap();
    assert!(report.render().contains("loading"), "the status names the error: {}", report.render());
    assert_eq!(c.metric("roomguard_room_up", &["room=\"2\""]), 1.0);
    c.stop().await;
    fake.abort();
}

/// INFO replies lacking fields (a replica without `master_host`/`master_link_status`, a
/// reply without `role`) are typed `info` errors; nothing is decided from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_info_with_missing_fields_is_typed_and_ignored() {
    let mut lab = lab(22530).await;
    let (a, b) = (at(2, 22533), at(2, 22534));
    lab.server(&a).kill();
    lab.server(&b).kill();
    let no_master = answering_server(
        a.clone(),
        bulk("# Replication\r\nrole:slave\r\nslave_repl_offset:0\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n"),
    )
    .await;
    let no_role =
        answering_server(b.clone(), bulk("# Replication\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n")).await;
    let c = Controller::start(&lab).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for x in [&a, &b] {
        let instance = format!("instance=\"{x}\"");
        assert!(c.metric("roomguard_probe_errors_total", &[&instance, "kind=\"info\""]) > 0.0, "{x}: {}", c.metrics());
        assert_eq!(c.metric("roomguard_instance_up", &[&instance]), 0.0);
    }
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0);
    assert_no_replicaof(&lab, &c.report_text()).await;
    let shown = c.report_text();
    assert!(shown.contains("master_host") && shown.contains("role"), "the status says what is missing: {shown}");
    c.stop().await;
    no_master.abort();
    no_role.abort();
}

/// A room-2 head with `REPLICAOF` and `SLAVEOF` disabled (`rename-command ... ""`) cannot be
/// promoted when room 1 is lost: the action fails with a typed error naming the instance and
/// is counted; the other shard's promotion proceeds; nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_disabled_replicaof_fails_the_action_and_the_rest_proceeds() {
    let mut lab = lab(22540).await;
    let head = at(2, 22541);
    let id = lab.topology().find_any("127.0.0.12", port(22541)).unwrap();
    let disabled: Vec<String> =
        ["--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""].map(String::from).to_vec();
    lab.servers[id].kill(); // before the new one binds the port
    lab.servers[id] = RedisServer::start(
        &redis_server_binary().unwrap(),
        &addr(&head),
        lab.dir(),
        Some(&addr(&at(1, 22543))),
        &disabled,
    )
    .unwrap();
    let parent = at(1, 22543);
    assert!(wait_until(Duration::from_secs(10), || replicates(&head, &parent)).await, "{head} never linked");
    assert!(lab.wait_linked(Duration::from_secs(10)).await);

    let spec = LabSpec { base_port: port(22540), ..LabSpec::default() };
    let (config, http) = daemon_config(&lab, &spec, 22549, None);
    let mut d = Daemon::start(&config, http).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let failed = ["action=\"promote\"", "outcome=\"failed\""];
    assert!(
        wait_until(Duration::from_secs(15), || async {
            d.metric("roomguard_actions_total", &failed).await >= 3.0 && is_master(&at(2, 22542)).await
        })
        .await,
        "the disabled promotion fails (and is retried) and the other shard's proceeds:\n{}",
        d.metrics().await
    );
    assert!(is_replica(&head).await, "{head} cannot have been promoted");
    assert!(d.running(), "the controller crashed");
    let log = d.log_text();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed: promote") && l.contains(&head) && l.contains("unknown_command"))
        .collect();
    assert_eq!(failures.len(), 1, "one log line names the instance and the error, not one per retry:\n{log}");
    drop(d);

    // The error itself: typed, naming the instance and the command.
    let action = Action::Promote { instance: id, because: roomguard::detect::Hearing::LinkDown };
    let err = act::execute(lab.topology(), &lab.config.redis, Duration::from_secs(1), &action).await.unwrap_err();
    match &err {
        ActError::Command { addr: a, command, error } => {
            assert_eq!(a.to_string(), head);
            assert_eq!(command, "REPLICAOF NO ONE");
            assert_eq!(error.kind, ProbeErrorKind::UnknownCommand, "{err}");
        }
        other => panic!("expected a command error, got {other}"),
    }
    assert!(err.to_string().contains(&head), "{err}");
}
