//! Quiet, precise logs: what roomguard itself causes is not reported as trouble. A graceful
//! switchover closes every client connection of the old and new masters (`CLIENT KILL`), the
//! controller's probes included, and rewrites the state file; a controller that follows it
//! must not log those as failures, nor a room as degraded, nor the switch as refused.

use std::{
    io::Write,
    process::{Child, Stdio},
    time::Duration,
};

use roomguard::lab::{Lab, LabSpec};

use crate::util::*;

/// The lines of a controller's log at WARN or ERROR level, plain or JSON (`--log-format json`).
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            [" WARN ", " ERROR ", "\"level\":\"WARN\"", "\"level\":\"ERROR\""].iter().any(|level| l.contains(level))
        })
        .collect()
}

#[test]
fn warnings_are_found_in_both_formats() {
    let log = "2026-12-02T09:18:40.149775Z  WARN roomguard::controller: room 2 is degraded\n\
               2026-12-02T09:18:40.250707Z  INFO roomguard::controller: room 2 is up\n\
               {\"timestamp\":\"x\",\"level\":\"ERROR\",\"fields\":{\"message\":\"m\"}}\n\
               {\"timestamp\":\"x\",\"level\":\"INFO\",\"fields\":{\"message\":\"WARN in a message\"}}\n";
    assert_eq!(warnings(log).len(), 2, "{:?}", warnings(log));
}

/// `roomguard run` as a process, and `roomguard failover --room 2` as an operator runs it beside
/// it, then `POST /failover?room=1` (the controller's own switchover): both succeed and the
/// controller logs nothing at WARN or ERROR level. Before, it logged `probe … failed: io (broken pipe)` for its own connections that the
/// switchover closed, `room 1 is degraded down=0` for one failed probe, and `held back: promote …`
/// for the promotions the command was making.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_switchover_on_a_lab_logs_no_warning() {
    // The lab's settings but a diskless-sync delay of 1 s, so that the settings audit (which
    // warns about a delay of 0 without persistence) has nothing to say either.
    let spec = LabSpec {
        base_port: port(25500),
        http_listen: format!("127.0.0.1:{}", port(25509)),
        redis_args: vec!["--repl-diskless-sync-delay".into(), "1".into()],
        ..LabSpec::default()
    };
    clean_stale_iptables(25500);
    let lab = Lab::start(&spec).await.unwrap_or_else(|e| panic!("the lab does not start: {e}"));
    const TOKEN: &str = "an-admin-token-for-25500";
    let config = lab.dir().join("daemon.toml");
    // A probe timeout of 1 s instead of 250 ms: a test machine loaded by other tests must not
    // produce timeouts (real warnings) that are not what this test is about.
    let toml = spec
        .config_toml()
        .replace("[http]\n", &format!("[http]\nadmin_token = \"{TOKEN}\"\n"))
        .replace("[controller]\n", "[controller]\ntimeout = \"1s\"\n");
    std::fs::write(&config, toml).unwrap();
    let d = Daemon::start(&config, spec.http_listen.parse().unwrap()).await;
    // The first audit has run (the settings metric exists) before the switchover.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            d.metrics().await.contains("roomguard_config_warning{") && d.log_text().contains("room 2 is up")
        })
        .await,
        "{}",
        d.log_text()
    );
    graceful_failover_cli(&config, "2").await;
    let told = |log: &str| log.matches("clients are now told the new master").count();
    assert!(
        wait_until(Duration::from_secs(10), || async { told(&d.log_text()) == 2 }).await,
        "the controller should follow the switchover of both shards:\n{}",
        d.log_text()
    );
    // Past `switchover_timeout` (5 s): what the controller held back while following the
    // switchover would be logged now if it still held.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = http_post(d.http, "/failover?room=1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}\n{}", d.log_text());
    assert!(
        wait_until(Duration::from_secs(10), || async { told(&d.log_text()) == 4 }).await,
        "the switch back should be published for both shards:\n{}",
        d.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = d.log_text();
    assert!(warnings(&log).is_empty(), "a clean switchover logged warnings:\n{log}");
    assert!(!log.contains("held back"), "{log}");
    assert_eq!(d.metric("roomguard_config_warning", &[]).await, 0.0, "the audit found nothing: {log}");
}

/// `roomguard lab` as a person runs it, with `failover 2` typed in: the lab says once that its
/// Redis settings are deliberate (instead of eight ~400-character warnings about them) and the
/// switchover logs no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_says_its_settings_are_deliberate_once_and_switches_quietly() {
    deadline();
    clean_stale_iptables(25510);
    let http = format!("127.0.0.1:{}", port(25519));
    let log = std::env::temp_dir().join(format!("roomguard-test-lab-{}.log", port(25510)));
    let base = port(25510).to_string();
    let mut cmd = roomguard_dying_with_us(&["lab", "--base-port", &base, "--http", &http, "--duration", "90s"]);
    // The probe timeout as in the test above: no load-induced timeouts.
    cmd.env("ROOMGUARD_LOG", "info")
        .env("ROOMGUARD_LOG_FORMAT", "json")
        .env("ROOMGUARD_CONTROLLER__TIMEOUT", "1s")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lab = Killed(roomguard::lab::spawn_child(cmd).unwrap());
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let addr = http.parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && metric_value(&http_get(addr, "/metrics").await.1, "roomguard_rounds_total", &[]) > 0.0
        })
        .await,
        "the lab's controller never served metrics:\n{}",
        text()
    );
    let stdin = lab.0.stdin.as_mut().unwrap();
    stdin.write_all(b"failover 2\n").unwrap();
    let told = |log: &str| log.matches("clients are now told the new master").count();
    assert!(
        wait_until(Duration::from_secs(15), || async { told(&text()) == 2 }).await,
        "the lab's failover should move both shards:\n{}",
        text()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stdin.write_all(b"quit\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while lab.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the lab did not quit:\n{}", text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = text();
    assert!(warnings(&text).is_empty(), "the lab logged warnings:\n{text}");
    assert_eq!(text.matches("deliberate").count(), 1, "{text}");
    assert!(text.contains("repl-ping-replica-period 1 on every instance: the production recommendation"), "{text}");
    let _ = std::fs::remove_file(&log);
}
