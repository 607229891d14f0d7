//! Maintenance mode (`roomguard pause` / `resume`, `POST /pause` / `POST /resume`) on real
//! Redis: while paused, a lost room is not failed over and nothing is sent to Redis (judged by
//! Redis' own `INFO commandstats`); the pause survives a controller restart; resuming lets the
//! failover happen; a manual failover still works while paused.

use std::time::Duration;

use roomguard::config::Secret;

use crate::util::*;

const TOKEN: &str = "maintenance-admin-token";

fn with_token(lab: &roomguard::lab::Lab) -> roomguard::config::Config {
    let mut config = lab.config.clone();
    config.http.admin_token = Some(Secret::new(TOKEN));
    config
}

async fn cli(args: &[&str]) -> (bool, String) {
    let out = run(roomguard(args)).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_room_loss_is_not_failed_over_until_resumed_even_across_a_restart() {
    let mut lab = lab(25000).await;
    let config = config_path(&lab);
    let config = config.to_str().unwrap();
    let c = Controller::start_with(with_token(&lab)).await;
    assert_eq!(c.metric("roomguard_paused", &[]), 0.0, "{}", c.metrics());

    let (ok, out) = cli(&["pause", "--config", config, "--reason", "upgrading room 1"]).await;
    assert!(ok && out.contains("paused: no automatic failover since ") && out.contains("upgrading room 1"), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || async { c.metric("roomguard_paused", &[]) == 1.0 }).await,
        "{}",
        c.metrics()
    );
    assert!(c.metric("roomguard_paused_since_timestamp_seconds", &[]) > 1.7e9);
    // `status` shows it (read from the pause file, without the controller).
    let (ok, out) = cli(&["status", "--config", config]).await;
    assert!(ok, "{out}");
    assert!(out.contains("automatic failover PAUSED") && out.contains("PAUSED (maintenance mode)"), "{out}");
    assert!(out.contains("upgrading room 1"), "{out}");
    let (_, page) = http_get(c.http, "/").await;
    assert!(page.contains("PAUSED (maintenance mode)"), "{page}");

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    // The loss is judged, and the failover held with reason "paused".
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c.metric("roomguard_failover_held", &["reason=\"paused\""]) == 2.0
        })
        .await,
        "{}\n{}",
        c.metrics(),
        c.report_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.report_text());
    for head in [25001, 25002] {
        assert!(is_replica(&at(2, head)).await, "{}", describe(&at(2, head)).await);
    }
    assert_no_replicaof(&lab, &c.report_text()).await;

    // A restarted controller is still paused: at once, from the pause file.
    c.stop().await;
    let c = Controller::start_with(with_token(&lab)).await;
    assert_eq!(c.metric("roomguard_paused", &[]), 1.0, "{}", c.metrics());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_failover_held", &["reason=\"paused\""]), 2.0, "{}", c.metrics());
    assert_no_replicaof(&lab, &c.report_text()).await;

    // Resuming needs the token; then the failover happens.
    let (status, body) = http_post(c.http, "/resume", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_post(c.http, "/resume", Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(c.metric("roomguard_paused", &[]), 1.0);
    let (status, body) = http_post(c.http, "/resume", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("resumed: automatic failover is on again"), "{body}");
    assert!(c.wait_one_failover_to("2", Duration::from_secs(15)).await, "{}", c.report_text());
    for head in [25001, 25002] {
        assert!(
            wait_until(Duration::from_secs(10), || async { is_master(&at(2, head)).await }).await,
            "{}",
            c.report_text()
        );
    }
    assert_eq!(c.metric("roomguard_paused", &[]), 0.0);
    assert_eq!(c.metric("roomguard_paused_since_timestamp_seconds", &[]), 0.0);
    assert_eq!(c.metric("roomguard_failover_held", &[]), 0.0, "{}", c.metrics());
    let (ok, out) = cli(&["resume", "--config", config]).await;
    assert!(ok && out.contains("not paused"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_works_while_paused_and_the_controller_follows_it() {
    let lab = lab(25010).await;
    let config = config_path(&lab);
    let c = Controller::start_with(with_token(&lab)).await;

    let (status, body) = http_post(c.http, "/pause?reason=failback%20drill", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(c.metric("roomguard_paused", &[]), 0.0);
    let (status, body) = http_post(c.http, "/pause?reason=failback%20drill", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("paused since") && body.contains("failback drill"), "{body}");
    // Pausing again keeps the first pause.
    let (status, again) = http_post(c.http, "/pause", Some(TOKEN)).await;
    assert_eq!(status, 200, "{again}");
    assert!(again.contains("already paused") && again.contains("failback drill"), "{again}");
    assert!(wait_until(Duration::from_secs(5), || async { c.metric("roomguard_paused", &[]) == 1.0 }).await);

    let out = graceful_failover_cli(&config, "2").await;
    assert!(out.contains("room 2"), "{out}");
    wait_chains(&mirror_chains(25010), Duration::from_secs(15), &c.report_text()).await;
    assert!(c.wait_healthy_primary("2", Duration::from_secs(10)).await, "{}", c.report_text());
    // The controller followed (adopted) it and is still paused.
    assert_eq!(c.metric("roomguard_paused", &[]), 1.0);
    let (ok, out) = cli(&["status", "--config", config.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    assert!(out.contains("HEALTHY: primary room 2") && out.contains("automatic failover PAUSED"), "{out}");
    assert!(out.contains("last failover: to room 2 (manual)") && out.contains(" UTC ("), "{out}");

    // `resume --via`: the token is checked (bad input, exit 2), then the controller resumes.
    let url = format!("http://{}", c.http);
    let (ok, out) = cli(&["resume", "--via", &url, "--token", "wrong-token-wrong-token"]).await;
    assert!(!ok && out.contains("401"), "{out}");
    assert_eq!(c.metric("roomguard_paused", &[]), 1.0);
    let (ok, out) = cli(&["resume", "--via", &url, "--token", TOKEN]).await;
    assert!(ok && out.contains("resumed: automatic failover is on again") && out.contains("failback drill"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || async { c.metric("roomguard_paused", &[]) == 0.0 }).await);
    c.stop().await;
}

/// Room 2 primary: `h2 -> t2 -> h1 -> t1` per shard.
fn mirror_chains(base: u16) -> Vec<Vec<String>> {
    [1, 2].iter().map(|k| vec![at(2, base + k), at(2, base + k + 2), at(1, base + k), at(1, base + k + 2)]).collect()
}
