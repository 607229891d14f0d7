//! Silence evidence (issue 10): the ping periods it rests on, read at runtime, refused, and in
//! one-shot commands; a hung intermediate; the watchdog and black holes. Ports 28300-28349.

use std::time::{Duration, Instant};

use roomguard::lab::LabSpec;

use crate::{
    faults::{cut_off_from_room_1, seed_chains, wait_derived_threshold},
    util::*,
};

/// The controller's threshold series, one per shard.
fn thresholds(c: &Controller) -> Vec<String> {
    c.metrics()
        .lines()
        .filter(|l| l.starts_with("roomguard_link_silence_threshold_seconds{"))
        .map(String::from)
        .collect()
}

/// An operator raises `repl-ping-replica-period` at runtime (`CONFIG SET`, 1 s to 10 s) on room
/// 1's masters, the shards idle: the threshold follows within one period refresh (5 s, plus a
/// read), not at the next minute's audit; a controller then cut off from room 1 (room 2 still
/// replicates from it, its offsets now still for up to 10 s) never fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_raised_ping_period_is_followed_and_a_cut_off_controller_holds() {
    let lab = lab(28300).await;
    let c = Controller::start(&lab).await;
    wait_derived_threshold(&c).await;
    for head in [28301, 28302] {
        let mut con = connect(&at(1, head)).await;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-ping-replica-period")
            .arg(10)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let raised = Instant::now();
    let window = roomguard::audit::PERIOD_REFRESH + Duration::from_secs(2);
    let followed = wait_until(window, || async {
        let series = thresholds(&c);
        series.len() == 2 && series.iter().all(|l| l.ends_with(" 10.4"))
    })
    .await;
    assert!(followed, "the threshold did not follow the raised period within {window:?}: {:?}", thresholds(&c));
    eprintln!("threshold followed {:?} after CONFIG SET", raised.elapsed());
    assert!(c.report_text().contains("repl-ping-replica-period 10s + margin"), "{}", c.report_text());

    let rule = cut_off_from_room_1(&c, 28301).await;
    // Longer than the new period: room 2's idle links stand still for up to 10 s.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", c.report_text());
    let topology: serde_json::Value = serde_json::from_str(&http_get(c.http, "/topology").await.1).unwrap();
    assert_eq!(topology["rooms"][0]["status"], "cut_off", "{topology}");
    drop(rule);
    assert_no_replicaof(&lab, &c.report_text()).await;
    c.stop().await;
}

/// A hung intermediate (room 1's tails SIGSTOPped alone): room 2's heads, which replicate from
/// them, stop hearing anything, but room 1's masters answer: room 1 is degraded, not lost, and
/// nothing fails over within three thresholds. Resumed, the chains are the seed's again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_hung_intermediate_is_not_a_room_loss() {
    let lab = lab(28310).await;
    let c = Controller::start(&lab).await;
    wait_derived_threshold(&c).await;
    let tails: Vec<usize> = lab
        .room(0)
        .into_iter()
        .filter(|&id| [at(1, 28313), at(1, 28314)].contains(&lab.topology().addr(id).to_string()))
        .collect();
    assert_eq!(tails.len(), 2);
    for &id in &tails {
        lab.servers[id].hang();
    }
    // Room 1 sampled throughout: never lost.
    let deadline = Instant::now() + Duration::from_millis(3 * 1400 + 800);
    let mut statuses = std::collections::BTreeSet::new();
    while Instant::now() < deadline {
        if let Some(r) = c.shared.report.read().unwrap().as_ref() {
            statuses.insert(format!("{:?}", r.rooms[0].status));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (room_1_masters, room_2_masters) = (
        is_master(&at(1, 28311)).await && is_master(&at(1, 28312)).await,
        is_master(&at(2, 28311)).await || is_master(&at(2, 28312)).await,
    );
    for &id in &tails {
        lab.servers[id].resume();
    }
    assert!(!statuses.contains("Lost"), "a hung intermediate was judged a room loss: {statuses:?}");
    assert!(statuses.contains("Degraded"), "{statuses:?}");
    assert!(room_1_masters && !room_2_masters, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.report_text());
    wait_chains(&seed_chains(28310), Duration::from_secs(15), &c.report_text()).await;
    c.stop().await;
}

/// `CONFIG` renamed away on every instance (`rename-command CONFIG ""`): the ping periods cannot
/// be read, so silence falls back to Redis' whole-second count above 12 s, and that is said:
/// `roomguard_ping_period_refused` = 1, the 12 s threshold, `status` (the controller's and the
/// CLI's one-shot) naming the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_refused_config_get_falls_back_and_says_so() {
    let spec = LabSpec {
        base_port: 28320,
        redis_args: ["--rename-command", "CONFIG", ""].map(String::from).to_vec(),
        ..LabSpec::default()
    };
    let lab = lab_with(spec).await;
    let c = Controller::start(&lab).await;
    let said = wait_until(Duration::from_secs(10), || async {
        [28321, 28322]
            .iter()
            .all(|&p| c.metric("roomguard_ping_period_refused", &[&format!("instance=\"{}\"", at(1, p))]) == 1.0)
            && thresholds(&c).iter().all(|l| l.ends_with(" 12.0"))
    })
    .await;
    assert!(said, "the refusal is not exported:\n{}", c.metrics());
    assert_eq!(thresholds(&c).len(), 2);
    let report = c.report_text();
    assert!(report.contains("12s (fallback): the ping period of"), "{report}");
    assert!(report.contains("not readable (CONFIG GET refused)"), "{report}");
    let config = config_path(&lab);
    let out = run(roomguard(&["status", "--config", config.to_str().unwrap()])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not readable (CONFIG GET refused)"), "{stdout}");
    c.stop().await;
}

/// `roomguard status` run from the CLI (no controller) reads the masters' ping periods: the
/// threshold it shows is derived (1.4 s in the lab), not the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_status_from_the_cli_reads_the_ping_periods() {
    let lab = lab(28330).await;
    let config = config_path(&lab);
    let out = run(roomguard(&["status", "--config", config.to_str().unwrap()])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("silence evidence after 1s 400ms: repl-ping-replica-period 1s + margin"), "{stdout}");
    assert!(!stdout.contains("fallback"), "{stdout}");
    let out = run(roomguard(&["status", "--json", "--config", config.to_str().unwrap()])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for shard in json["shards"].as_array().unwrap() {
        assert_eq!(shard["silence"]["basis"], "ping_period", "{json}");
        assert_eq!(shard["silence"]["threshold_ms"], 1400, "{json}");
    }
    drop(lab);
}

/// The owner comment of the black hole the helper below makes.
fn helper_hole_owner() -> String {
    format!("roomguard black hole 127.0.0.11 {}:{}", port(28341), port(28344))
}

/// Not a test of its own: run by the next one in a child process, with a 2 s deadline. It holds
/// a black hole past its deadline.
#[tokio::test]
#[ignore = "run by silence_watchdog_removes_the_black_holes_of_a_test_that_timed_out"]
async fn silence_helper_black_hole_outlives_its_deadline() {
    deadline();
    let _hole = roomguard::lab::BlackHole::start("127.0.0.11", port(28341)..=port(28344)).expect("iptables");
    tokio::time::sleep(Duration::from_secs(30)).await;
}

/// A test that times out while it holds a black hole: the deadline watchdog removes the black
/// hole's rules (another owner than the lab's) before it exits the test binary.
#[test]
fn silence_watchdog_removes_the_black_holes_of_a_test_that_timed_out() {
    let listing = || {
        let out = std::process::Command::new("iptables").args(["-w", "-S", roomguard::lab::IPTABLES_CHAIN]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "silence::silence_helper_black_hole_outlives_its_deadline", "--ignored", "--nocapture"])
        .env("RG_TEST_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let left = listing().lines().filter(|l| l.contains(&helper_hole_owner())).count();
    roomguard::lab::delete_iptables_owner("filter", &helper_hole_owner());
    assert_eq!(out.status.code(), Some(101), "the helper did not time out: {stderr}");
    assert!(stderr.contains("has run for more than"), "{stderr}");
    assert_eq!(left, 0, "the timed-out test's black hole was left behind");
}
