//! Supervision (issue 12): a task of the controller that ends is noticed and stops the whole
//! controller, naming the task; a loop that is alive but stuck turns `/healthz` to 503.

use std::time::Duration;

use roomguard::{
    daemon::{Daemon, DaemonError, Ended, Task},
    sentinel,
};

use crate::util::*;

/// Every task, one at a time, dies (aborted through its handle, as a panic or an early
/// return would end it): `run_until` returns the error naming it, having stopped the rest
/// (the HTTP port is closed), instead of running on blind or mute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_dies_stops_the_controller_and_is_named() {
    let lab = lab(26000).await;
    let mut config = with_recording_hook(&lab);
    config.sentinel = Some(sentinel::SentinelSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: None,
        max_connections: sentinel::DEFAULT_MAX_CONNECTIONS,
        max_request_bytes: sentinel::DEFAULT_MAX_REQUEST_BYTES,
        idle_timeout: sentinel::DEFAULT_IDLE_TIMEOUT,
        peers: vec![],
    });
    let hangup = tokio::signal::unix::SignalKind::hangup();
    for task in [Task::Poller, Task::Loop, Task::Http, Task::Sentinel, Task::Hooks, Task::Audit, Task::Reload] {
        let mut daemon = Daemon::start(config.clone()).await.unwrap();
        // As `roomguard run` starts it.
        daemon.reload_on_sighup(tokio::signal::unix::signal(hangup).unwrap(), config_path(&lab), false);
        let _ = kill_task_and_expect_the_daemon_stops(daemon, task).await;
    }
}

/// Runs `daemon` until it is ready, aborts its `task` and expects the daemon to stop, naming the
/// task, with its HTTP server gone; returns what `run_until` returned.
async fn kill_task_and_expect_the_daemon_stops(daemon: Daemon, task: Task) -> Result<(), DaemonError> {
    let (http, shared) = (daemon.http_addr(), daemon.shared());
    let abort = daemon.abort_handle(task).unwrap_or_else(|| panic!("{task} is supervised"));
    let run = tokio::spawn(daemon.run_until(std::future::pending()));
    assert!(
        wait_until(Duration::from_secs(5), || async { shared.ready.load(std::sync::atomic::Ordering::Acquire) }).await,
        "{task}: controller never ready"
    );
    abort.abort();
    let result = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap_or_else(|_| panic!("the death of the {task} went unnoticed"))
        .unwrap();
    match &result {
        Err(DaemonError::TaskEnded { task: ended, how: Ended::Aborted }) => assert_eq!(*ended, task),
        other => panic!("{task}: {other:?}"),
    }
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "{task}: the HTTP server still answers");
    result
}

/// The two tasks of `[coordination] room`: the etcd session and the room fence. Either one's
/// death stops the controller, named, and `roomguard run` maps that to exit code 70 (no task
/// of a running process can be made to end from outside, so this is as close to the binary
/// as it gets: the same `run_until` and the same mapping `roomguard run` uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_session_and_the_room_fence_are_supervised_and_exit_70() {
    use roomguard::coordination::{CoordinationSettings, Role, Unavailable};
    let lab = lab(28540).await;
    let etcd = crate::etcd::EtcdCluster::on(26600, &["127.0.0.13"]).await;
    let mut config = lab.config.clone();
    config.coordination = Some(CoordinationSettings {
        endpoints: etcd.endpoints(),
        prefix: "/roomguard/supervision".into(),
        name: "a".into(),
        role: Role::Acting,
        room: Some(0),
        lease_ttl: Duration::from_secs(3),
        on_unavailable: Unavailable::Hold,
    });
    for task in [Task::Coordination, Task::Fence] {
        let daemon = Daemon::start(config.clone()).await.unwrap();
        let result = kill_task_and_expect_the_daemon_stops(daemon, task).await;
        assert_eq!(roomguard::cli::exit_code(result), std::process::ExitCode::from(roomguard::cli::EXIT_TASK_FAILED));
    }
}

/// A loop that blocks (here on the report lock, as a deadlock would) completes no round:
/// `/healthz` turns 503 within the stall limit and says so, and the round timestamp stops;
/// once the loop runs again, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "holding the lock across awaits is the stall under test")]
async fn healthz_turns_503_while_the_loop_stalls() {
    let lab = lab(26010).await;
    let c = Controller::start(&lab).await;
    let (status, body) = http_get(c.http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nlast_poll_age_seconds 0."), "{body}");
    {
        // The loop writes the report at the end of every round: it blocks there.
        let _stall = c.shared.report.read().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || async { http_get(c.http, "/healthz").await.0 == 503 }).await,
            "/healthz stayed 200 with the loop stalled"
        );
        let (_, body) = http_get(c.http, "/healthz").await;
        assert!(body.starts_with("stalled: loop made no progress for more than 3s"), "{body}");
        let stamp = c.metric("roomguard_last_round_timestamp_seconds", &[]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(c.metric("roomguard_last_round_timestamp_seconds", &[]), stamp, "no round completes");
    }
    assert!(
        wait_until(Duration::from_secs(5), || async { http_get(c.http, "/healthz").await.0 == 200 }).await,
        "/healthz did not recover"
    );
    c.stop().await;
}
