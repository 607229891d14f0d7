//! Row 9 (part): non-Redis services on instances' ports give typed probe errors and no action.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::util::*;

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
        base_port: 21180,
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
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c.metric("roomguard_failovers_total", &["room=\"2\"", "outcome=\"ok\""]) == 1.0
        })
        .await,
        "failover with a password: {}",
        c.metrics()
    );
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
