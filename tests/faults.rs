//! The fault matrix (README "Fault matrix"): real Redis, faults by SIGKILL, SIGSTOP/SIGCONT
//! and iptables rules on lo. Each test names its row.

use std::time::{Duration, Instant};

use crate::util::*;

fn report(c: &Controller) -> String {
    c.report_text()
}

/// Rows 2, 3 and 6b: a silent hang of room 1 fails over (once room 2's heads' offsets have
/// stood still for the ping period plus the margin, and room 1 is down); when room 1 resumes,
/// its old masters are stale and re-chained under room 2 within a few rounds; a manual
/// failover back works inside the cooldown (asserted running: `/topology`, `status`), moves
/// both shards, and the running controller follows without a command of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_row3_hang_of_room_1_then_its_return() {
    let lab = lab(21100).await;
    let mut config = with_recording_hook(&lab);
    config.controller.cooldown = Duration::from_secs(300);
    let c = Controller::start_with(config).await;
    for id in lab.room(0) {
        lab.servers[id].hang();
    }
    let hung = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            is_master(&at(2, 21101)).await && is_master(&at(2, 21102)).await
        })
        .await,
        "no failover on a silent hang: {}",
        report(&c)
    );
    // Room 1 must have been down for `down_after` (1 s), counted from the first failed probe,
    // which started at most one poll interval (100 ms) before the hang.
    let took = hung.elapsed();
    assert!(took >= Duration::from_millis(900), "failed over before room 1 was down: {took:?}");

    for id in lab.room(0) {
        lab.servers[id].resume();
    }
    // Within a few rounds the stale masters are demoted: exactly the mirror chains.
    wait_chains(&mirror_chains(21100), Duration::from_secs(5), &report(&c)).await;
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"demote\"", "outcome=\"ok\""]), 2.0);
    // The hooks saw the room go and come back.
    assert!(
        wait_until(Duration::from_secs(5), || async { hook_log(&lab).contains("room_back||1|") }).await,
        "{}",
        hook_log(&lab)
    );
    assert!(hook_log(&lab).contains("room_lost||1|"), "{}", hook_log(&lab));
    // Nothing was written during the hang: the demoted stale masters discarded nothing (their
    // series exist from the start, at 0).
    assert_eq!(c.metric("roomguard_diverged_bytes_total", &[]), 0.0, "{}", c.metrics());

    // Manual failover back inside the cooldown: room 1 failed, so an automatic failover to it
    // would be held until the cooldown ends; the controller says it is running.
    let (_, body) = http_get(c.http, "/topology").await;
    let topology: serde_json::Value = serde_json::from_str(&body).unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let until = topology["rooms"][0]["cooldown_until_unix_ms"].as_u64();
    assert!(until.is_some_and(|u| u > now_ms + 60_000), "room 1's cooldown is not running: {body}");
    let config = config_path(&lab);
    let stdout = status_with_long_cooldown(&config).await;
    assert!(stdout.contains("cooldown: room 1 failed at "), "{stdout}");
    let actions = c.metric("roomguard_actions_total", &[]);
    let out = run(roomguard(&["failover", "--room", "1", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Both shards moved, chains and all.
    wait_chains(&seed_chains(21100), Duration::from_secs(5), &report(&c)).await;
    // The running controller follows without sending anything: no command on any instance
    // after the CLI's, and none counted.
    let after_cli = replicaof_calls_all(&lab).await;
    assert!(c.wait_healthy_primary("1", Duration::from_secs(5)).await, "the controller did not follow: {}", report(&c));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicaof_calls_all(&lab).await,
        after_cli,
        "the controller sent commands after the switchover: {}",
        report(&c)
    );
    assert_eq!(c.metric("roomguard_actions_total", &[]), actions, "{}", report(&c));
    assert!(chains_are(&seed_chains(21100)).await, "{}", report(&c));
    c.stop().await;
}

/// Drops what the controller (127.0.0.1) sends to room 1's four ports from logical
/// `first_port` on (the lab at `first_port - 1`); room 2 replicates from 127.0.0.12 and still
/// hears room 1. Returns once the controller says it is cut off.
pub(crate) async fn cut_off_from_room_1(c: &Controller, first_port: u16) -> IptablesRule {
    let ports = format!("{}:{}", port(first_port), port(first_port + 3));
    let rule = IptablesRule::add(
        first_port - 1,
        "filter",
        &["-s", "127.0.0.1", "-d", "127.0.0.11", "-p", "tcp", "--dport", &ports, "-j", "DROP"],
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            c.metric("roomguard_room_unreachable_only_from_controller", &["room=\"1\""]) == 1.0
        })
        .await,
        "{}",
        report(c)
    );
    rule
}

/// Row 4: the controller is cut off from room 1 only; room 2 still replicates from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_controller_cut_off_from_room_1_never_fails_over() {
    let lab = lab(21110).await;
    let c = Controller::start_with(with_recording_hook(&lab)).await;
    let rule = cut_off_from_room_1(&c, 21111).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", report(&c));
    assert!(report(&c).contains("the controller is cut off, not the room; no failover"), "{}", report(&c));
    assert!(
        wait_until(Duration::from_secs(5), || async { hook_log(&lab).contains("cut_off||1|") }).await,
        "the cut_off hook did not run: {}",
        hook_log(&lab)
    );
    assert!(!hook_log(&lab).contains("room_lost"), "{}", hook_log(&lab));
    assert!(replicates(&at(2, 21111), &at(1, 21113)).await, "room 2 still follows room 1");
    // Judged by Redis: nothing was sent to room 2 while the controller was cut off (room 1 it
    // cannot reach, from here either).
    let room_1: Vec<String> = [21111, 21112, 21113, 21114].map(|p| at(1, p)).to_vec();
    assert_no_replicaof_except(&lab, &room_1, &report(&c)).await;
    drop(rule);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            c.metric("roomguard_room_unreachable_only_from_controller", &["room=\"1\""]) == 0.0
        })
        .await
    );
    // Room 1's instances answer again one by one; the chains end as they were. (While one of
    // them still counts as down the controller may bridge around it for a round: churn, not a
    // failover; see the closing note of 2026-12-02.)
    wait_chains(&seed_chains(21110), Duration::from_secs(10), &report(&c)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", report(&c));
    c.stop().await;
}

/// Row 5: single instances. Room 1's master alone dies: the next instance of room 1's chain is
/// promoted and room 2 stays attached; when the old master returns it is re-chained without a
/// second promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_room_1_master_alone_dies_and_returns() {
    let mut lab = lab(21120).await;
    let c = Controller::start(&lab).await;
    lab.server(&at(1, 21121)).kill();
    assert!(wait_until(Duration::from_secs(5), || async { is_master(&at(1, 21123)).await }).await, "{}", report(&c));
    assert!(
        wait_until(Duration::from_secs(5), || async { replicates(&at(2, 21121), &at(1, 21123)).await }).await,
        "room 2 stays attached: {}",
        report(&c)
    );
    lab.server(&at(1, 21121)).restart(None).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            replicates(&at(1, 21121), &at(1, 21123)).await && replicates(&at(2, 21121), &at(1, 21121)).await
        })
        .await,
        "{}",
        report(&c)
    );
    let chains = vec![
        vec![at(1, 21123), at(1, 21121), at(2, 21121), at(2, 21123)],
        vec![at(1, 21122), at(1, 21124), at(2, 21122), at(2, 21124)],
    ];
    wait_chains(&chains, Duration::from_secs(5), &report(&c)).await;
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\""]), 1.0);
    // The other shard was never touched.
    for p in [21122, 21124] {
        for room in [1, 2] {
            assert_eq!(replicaof_calls(&at(room, p)).await, Some(0), "{}", at(room, p));
        }
    }
    c.stop().await;
}

/// Row 5: a middle instance (room 1's replica) and a room-2 head die: their children are
/// re-pointed to the nearest live ancestor, nothing is promoted; when they return the declared
/// chain is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_middle_and_room_2_instances_die_and_return() {
    let mut lab = lab(21130).await;
    let c = Controller::start(&lab).await;
    lab.server(&at(1, 21133)).kill(); // shard 21131: room 1's replica
    lab.server(&at(2, 21132)).kill(); // shard 21132: room 2's head
    assert!(
        wait_until(Duration::from_secs(5), || async {
            replicates(&at(2, 21131), &at(1, 21131)).await && replicates(&at(2, 21134), &at(1, 21134)).await
        })
        .await,
        "children not re-pointed: {}",
        report(&c)
    );
    lab.server(&at(1, 21133)).restart(None).unwrap();
    lab.server(&at(2, 21132)).restart(None).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            replicates(&at(1, 21133), &at(1, 21131)).await
                && replicates(&at(2, 21131), &at(1, 21133)).await
                && replicates(&at(2, 21132), &at(1, 21134)).await
                && replicates(&at(2, 21134), &at(2, 21132)).await
        })
        .await,
        "declared chains not restored: {}",
        report(&c)
    );
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\""]), 0.0);
    assert!(is_master(&at(1, 21131)).await && is_master(&at(1, 21132)).await);
    c.stop().await;
}

/// The seed's chains of the lab at logical `base`, room 1 primary (head first).
pub(crate) fn seed_chains(base: u16) -> Vec<Vec<String>> {
    (1..=2).map(|s| vec![at(1, base + s), at(1, base + s + 2), at(2, base + s), at(2, base + s + 2)]).collect()
}

/// The mirror chains of the lab at logical `base`, room 2 primary (head first).
fn mirror_chains(base: u16) -> Vec<Vec<String>> {
    (1..=2).map(|s| vec![at(2, base + s), at(2, base + s + 2), at(1, base + s), at(1, base + s + 2)]).collect()
}

/// Row 6: room 1 flaps three times for 600 ms, shorter than `down_after` (1 s), with
/// immediate evidence: every connection to room 1's ports from the controller and from room 2
/// is reset (`REJECT --reject-with tcp-reset`), so the controller's probes fail at once and
/// room 2's heads see their links drop at once. Only `down_after` stands between this and a
/// failover: room 1 is judged up throughout (sampled every 20 ms), nothing is sent to any
/// instance, and the chains are the seed's afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_flapping_room_within_down_after_does_not_fail_over() {
    let lab = lab(21140).await;
    let c = Controller::start(&lab).await;
    assert_eq!(lab.config.controller.down_after, Duration::from_secs(1), "the flaps must be shorter than down_after");
    let room_up = || c.metric("roomguard_room_up", &["room=\"1\""]);
    let ports = format!("{}:{}", port(21141), port(21144));
    let (mut samples, mut room_2_heard_nothing) = (0, false);
    for _ in 0..3 {
        let rules: Vec<IptablesRule> = ["127.0.0.1", "127.0.0.12"]
            .iter()
            .map(|from| {
                let rule = ["-s", from, "-d", "127.0.0.11", "-p", "tcp", "--dport", &ports];
                IptablesRule::add(
                    21140,
                    "filter",
                    &[&rule[..], &["-j", "REJECT", "--reject-with", "tcp-reset"]].concat(),
                )
            })
            .collect();
        let flap = Instant::now();
        while flap.elapsed() < Duration::from_millis(600) {
            assert_eq!(room_up(), 1.0, "room 1 judged down {:?} into a 600 ms flap: {}", flap.elapsed(), report(&c));
            if info(&at(2, 21141)).await.and_then(|i| i.master).is_some_and(|l| !l.link_up) {
                room_2_heard_nothing = true;
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(rules);
        let back = Instant::now();
        while back.elapsed() < Duration::from_millis(700) {
            assert_eq!(room_up(), 1.0, "room 1 judged down after a flap: {}", report(&c));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The faults were real: the controller's probes of room 1 failed, room 2's head lost its link.
    let room_1_errors: f64 = (1..=4)
        .map(|p| c.metric("roomguard_probe_errors_total", &[&format!("instance=\"{}\"", at(1, 21140 + p))]))
        .sum();
    assert!(room_1_errors > 0.0, "the controller never failed to reach room 1:\n{}", c.metrics());
    assert!(room_2_heard_nothing, "room 2's head never lost its link to room 1");
    assert!(samples > 40, "room_up sampled only {samples} times");
    wait_chains(&seed_chains(21140), Duration::from_secs(10), &report(&c)).await;
    assert_eq!(room_up(), 1.0);
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    assert_no_replicaof(&lab, &report(&c)).await;
    c.stop().await;
}

/// Row 7: the controller died after promoting the first shard (its state file already names
/// both new masters, as it is written before acting), and room 1 came back, empty, before it
/// restarted. Redis alone no longer says room 2 is primary (room 1's heads answer as masters
/// again, the second shard's room-2 head still replicates room 1), and `down_after` is a
/// minute, so nothing is judged down: only the state file gives the answer. On restart the
/// controller promotes the second shard's head, never touches the first's, and re-chains room
/// 1 under room 2: exactly one REPLICAOF per room-2 head (the first is the test's own),
/// counted by Redis itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_restart_mid_failover_finishes_the_job() {
    let mut lab = lab(21150).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let state = format!(
        r#"{{"version":1,"epoch":1,"masters":{{"{}":"{}","{}":"{}"}},"last_failover":null}}"#,
        shard(21151),
        at(2, 21151),
        shard(21152),
        at(2, 21152)
    );
    std::fs::write(&lab.config.controller.state_file, state).unwrap();
    let mut con = connect(&at(2, 21151)).await;
    let () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query_async(&mut con).await.unwrap();
    // With Redis' default sync delay, as room 1 would come back: the second shard's room-2
    // head, which reconnects to the returned (empty) room-1 tail at once, is still waiting for
    // its full sync (link down) when the controller starts. With a delay of 0 it could finish
    // that sync first and hear the empty master; the controller then holds the promotion
    // ("it still hears its master") and the test would measure the host's speed.
    for id in lab.room(0) {
        lab.servers[id].restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    }
    for id in lab.room(0) {
        lab.servers[id].wait_ready(&Default::default(), Duration::from_secs(10)).await.unwrap();
    }
    assert!(is_master(&at(1, 21151)).await && is_master(&at(1, 21152)).await);

    let mut config = lab.config.clone();
    config.controller.down_after = Duration::from_secs(60);
    let c = Controller::start_with(config).await;
    wait_chains(&mirror_chains(21150), Duration::from_secs(15), &report(&c)).await;
    // Settled: no further command.
    let settled = replicaof_calls_all(&lab).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicaof_calls_all(&lab).await, settled, "the controller keeps sending commands: {}", report(&c));
    for (p, calls) in [(21151, 1), (21152, 1), (21153, 0), (21154, 0)] {
        assert_eq!(settled[&at(2, p)], calls, "REPLICAOF calls on {}: {settled:?}", at(2, p));
    }
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\"", "outcome=\"ok\""]), 1.0, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_actions_total", &["outcome=\"failed\""]), 0.0, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_primary_room", &["room=\"2\""]), 1.0, "{}", c.metrics());
    // It finished a decision already taken (and saved); it did not take one of its own.
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.metrics());
    c.stop().await;
}

/// Row 8: two controllers (separate state files, as one beside each app server) converge on a
/// room loss and on the room's return; afterwards neither acts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_two_controllers_converge_without_fighting() {
    let mut lab = lab(21160).await;
    let a = Controller::start(&lab).await;
    let b = Controller::start_with(second_controller(&lab)).await;

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            is_master(&at(2, 21161)).await && is_master(&at(2, 21162)).await
        })
        .await
    );
    // Room 1 returns once both controllers have taken in the failover (one may have made it,
    // the other adopted it). Returning earlier is a different fault: a controller that never
    // saw the room lost then sees two masters, and with empty datasets (equal offsets, as
    // here) nothing says which one holds the data.
    let primary_2 = |c: &Controller| {
        c.metric("roomguard_primary_room", &["room=\"2\""]) == 1.0
            && c.metric("roomguard_primary_room", &["room=\"1\""]) == 0.0
    };
    assert!(
        wait_until(Duration::from_secs(10), || async { primary_2(&a) && primary_2(&b) }).await,
        "A: {}\nB: {}",
        report(&a),
        report(&b)
    );
    for id in lab.room(0) {
        lab.servers[id].restart(None).unwrap();
    }
    for (head, tail) in [(21161, 21163), (21162, 21164)] {
        assert!(
            wait_until(Duration::from_secs(10), || async {
                replicates(&at(1, head), &at(2, tail)).await && replicates(&at(1, tail), &at(1, head)).await
            })
            .await,
            "A: {}\nB: {}",
            report(&a),
            report(&b)
        );
    }
    let actions = |c: &Controller| c.metric("roomguard_actions_total", &[]);
    let before = (actions(&a), actions(&b));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = |c: &Controller| {
        c.metrics().lines().filter(|l| l.starts_with("roomguard_actions_total")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(
        (actions(&a), actions(&b)),
        before,
        "the controllers keep acting: a fight\nA:\n{}\n{}\nB:\n{}\n{}",
        lines(&a),
        report(&a),
        lines(&b),
        report(&b)
    );
    for c in [&a, &b] {
        assert_eq!(c.metric("roomguard_actions_total", &["outcome=\"failed\""]), 0.0, "{}", c.metrics());
        assert_eq!(
            c.metric("roomguard_actions_total", &["action=\"promote\""]),
            c.metric("roomguard_actions_total", &["action=\"promote\"", "outcome=\"ok\""])
        );
        let r = c.shared.report.read().unwrap().clone().unwrap();
        assert_eq!(r.primary_room.as_deref(), Some("2"), "{}", r.render());
    }
    a.stop().await;
    b.stop().await;
}

/// The number of keys, `None` while the instance does not answer.
async fn dbsize(a: &str) -> Option<i64> {
    let settings = roomguard::config::RedisSettings::default();
    let mut con = roomguard::probe::connect(&addr(a), &settings, Duration::from_secs(1)).await.ok()?;
    redis::cmd("DBSIZE").query_async(&mut con).await.ok()
}

/// The lab's configuration for a second controller beside the first, as one beside each app
/// server: its own state file.
fn second_controller(lab: &roomguard::lab::Lab) -> roomguard::config::Config {
    let mut config = lab.config.clone();
    config.controller.state_file = lab.dir().join("second-state.json");
    config
}

/// Writes `k<i>` = i for every i in `keys` to `a`.
async fn write_keys(a: &str, keys: std::ops::Range<usize>) {
    let mut con = connect(a).await;
    let mut pipe = redis::pipe();
    for i in keys {
        pipe.set(format!("k{i}"), i).ignore();
    }
    let () = pipe.query_async(&mut con).await.unwrap();
}

async fn all_hold(addrs: &[String], n: i64) -> bool {
    for a in addrs {
        if dbsize(a).await != Some(n) {
            return false;
        }
    }
    true
}

/// The first shard's chain of the lab at `base` (head and tail of room 1, then of room 2),
/// once all four hold 1000 keys written to its master.
async fn shard_holding_keys(base: u16) -> [String; 4] {
    let chain = [at(1, base + 1), at(1, base + 3), at(2, base + 1), at(2, base + 3)];
    write_keys(&chain[0], 0..1000).await;
    assert!(wait_until(Duration::from_secs(5), || async { all_hold(&chain, 1000).await }).await);
    chain
}

/// Waits until controller `c` has seen every instance of `chain` at (at least) the offset it
/// has now: a restart right after writes must be a restart *with less data than the controller
/// saw*, whatever the host's load made the poller's timing.
async fn wait_seen(c: &Controller, chain: &[String]) {
    let mut now = Vec::new();
    for a in chain {
        now.push((a.clone(), info(a).await.expect("answers").repl_offset));
    }
    let seen = || {
        let report = c.shared.report.read().unwrap().clone();
        now.iter().all(|(a, offset)| {
            report
                .iter()
                .flat_map(|r| &r.shards)
                .flat_map(|s| &s.instances)
                .any(|i| &i.instance == a && i.offset >= Some(*offset))
        })
    };
    assert!(wait_until(Duration::from_secs(5), || async { seen() }).await, "the controller never saw {now:?}");
}

/// The sync delay Redis ships with: a master waits this long before it streams a full sync.
/// The lab uses 0 so chains come up fast; row 10 needs the default's window.
/// Row 10b once more, for a controller that never saw room 1 before it restarted: it starts
/// after the restart (an acting controller restarted at that moment, finding E of
/// RELIABILITY.md). Its designated master has a brand-new, empty history and room 2's head,
/// replicating from room 1's restarted tail, is ahead in the shard's old one: the master lost
/// it, although this controller never saw its offset go back. Rescued from room 2, not wiped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10f_whole_room_restarted_empty_before_the_controller_started_is_rescued() {
    let mut lab = lab(27300).await;
    let chain = shard_holding_keys(27300).await;
    // The controller's state file names room 1's heads, as it would after any earlier round.
    let before = Controller::start(&lab).await;
    wait_seen(&before, &chain).await;
    before.stop().await;
    // A longer sync delay than Redis' default: the new controller starts within it however
    // loaded the host is, so a wiped shard is the controller's doing, not the test's timing.
    for id in lab.room(0) {
        lab.servers[id].restart_with(None, &["--repl-diskless-sync-delay", "10"]).unwrap();
    }
    for id in lab.room(0) {
        lab.servers[id].wait_ready(&Default::default(), Duration::from_secs(5)).await.unwrap();
    }
    let c = Controller::start(&lab).await;
    expect_rescue_from_room_2(&chain, &c, Duration::from_secs(10)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &["outcome=\"failed\""]), 0.0, "{}", c.metrics());
    c.stop().await;
}

const REDIS_DEFAULT_SYNC_DELAY: [&str; 2] = ["--repl-diskless-sync-delay", "5"];

/// After `chain[0]` restarted without its data (Redis' default sync delay): `chain[1]`, which
/// still holds it, is promoted within 5 s; past the moment the restarted master would have
/// streamed its dataset, every instance holds `keys` keys and `chain[0]` follows `chain[1]`.
async fn expect_rescue(chain: &[String; 4], keys: i64, controllers: &[&Controller]) {
    let reports = || controllers.iter().map(|c| report(c)).collect::<Vec<_>>().join("\n");
    assert!(
        wait_until(Duration::from_secs(5), || async { is_master(&chain[1]).await }).await,
        "the replica holding the data was not promoted:\n{}",
        reports()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            all_hold(chain, keys).await && replicates(&chain[0], &chain[1]).await
        })
        .await,
        "data lost or not re-chained: {:?}\n{}",
        futures::future::join_all(chain.iter().map(|a| dbsize(a))).await,
        reports()
    );
}

/// After room 1 restarted whole without its data (sync delay `sync_delay`): room 2's head
/// (`chain[2]`), the last copy, is promoted within 5 s; past the moment room 1's empty tail would
/// have streamed its dataset, every instance of the chain holds the 1000 keys.
async fn expect_rescue_from_room_2(chain: &[String; 4], c: &Controller, sync_delay: Duration) {
    assert!(
        wait_until(Duration::from_secs(5), || async { is_master(&chain[2]).await }).await,
        "room 2's head, the last copy, was not promoted: {}",
        report(c)
    );
    tokio::time::sleep(sync_delay + Duration::from_secs(1)).await;
    assert!(
        wait_until(Duration::from_secs(15), || async { all_hold(chain, 1000).await }).await,
        "data lost: {:?} {}",
        futures::future::join_all(chain.iter().map(|a| dbsize(a))).await,
        report(c)
    );
}

/// Settled: no controller sends anything for 3 s, and the rescuer is still the master.
async fn expect_quiet_after_rescue(chain: &[String; 4], controllers: &[&Controller]) {
    let actions = || controllers.iter().map(|c| c.metric("roomguard_actions_total", &[])).collect::<Vec<_>>();
    let before = actions();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reports = controllers.iter().map(|c| report(c)).collect::<Vec<_>>().join("\n");
    assert_eq!(actions(), before, "still acting:\n{reports}");
    assert!(is_master(&chain[1]).await && replicates(&chain[0], &chain[1]).await, "{reports}");
}

/// Row 10: room 1's master (no persistence) restarts within `down_after` and comes back empty.
/// Without roomguard its replica full-syncs the empty dataset 5 s later and passes it down the
/// chain; roomguard promotes the replica first, and the data survives everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_master_restarted_empty_does_not_wipe_its_replicas() {
    let mut lab = lab(21200).await;
    let c = Controller::start(&lab).await;
    let chain = shard_holding_keys(21200).await;
    wait_seen(&c, &chain).await;

    lab.server(&chain[0]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    // Nothing was wiped, and the empty master took the data back from its successor.
    expect_rescue(&chain, 1000, &[&c]).await;
    assert!(is_replica(&chain[2]).await && is_replica(&chain[3]).await, "no cross-room promotion");
    assert_eq!(replicaof_calls(&chain[3]).await, Some(0), "room 2's tail untouched");
    assert_eq!(c.metric("roomguard_restarted_empty_total", &[&format!("instance=\"{}\"", at(1, 21201))]), 1.0);
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\"", "outcome=\"ok\""]), 1.0);
    c.stop().await;
}

/// Row 10, middle of the chain: room 1's replica restarts empty, as a master. Room 2 would
/// full-sync from it 5 s later; roomguard demotes it under room 1's master at once (and
/// bridges room 2 past it until it has resynced), so room 2 keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_middle_instance_restarted_empty_does_not_wipe_room_2() {
    let mut lab = lab(21210).await;
    let c = Controller::start(&lab).await;
    let chain = shard_holding_keys(21210).await;
    wait_seen(&c, &chain).await;

    lab.server(&chain[1]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    // Room 2 keeps its data the whole time, past the moment the empty instance would have
    // streamed its dataset to it.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        for a in &chain[2..] {
            assert_eq!(dbsize(a).await, Some(1000), "{a} was wiped: {}", report(&c));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            all_hold(&chain, 1000).await && replicates(&chain[2], &chain[1]).await
        })
        .await,
        "data lost or chain not restored: {:?} {}",
        futures::future::join_all(chain.iter().map(|a| dbsize(a))).await,
        report(&c)
    );
    assert!(is_master(&chain[0]).await, "no promotion");
    assert_eq!(c.metric("roomguard_restarted_empty_total", &[&format!("instance=\"{}\"", at(1, 21213))]), 1.0);
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    c.stop().await;
}

/// Row 10, unseen: the master restarts empty while no controller runs (one restarting, an
/// upgrade). The controller that starts next never saw the offset go back; it reads the loss
/// from the replica that is ahead of the master and waits for the full sync, and rescues the
/// shard as in row 10. (Found by the soak: a controller restarted 0.4 s after the master.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10c_master_restarted_empty_before_the_controller_started() {
    let mut lab = lab(21310).await;
    let chain = shard_holding_keys(21310).await;
    lab.server(&chain[0]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    let c = Controller::start(&lab).await;
    expect_rescue(&chain, 1000, &[&c]).await;
    assert_eq!(c.metric("roomguard_restarted_empty_total", &[&format!("instance=\"{}\"", at(1, 21311))]), 1.0);
    c.stop().await;
}

/// Row 10, twice: the master restarts empty, too fast for anyone (automatic failover is off
/// and Redis streams at once), so the chain resyncs the empty dataset and takes new writes;
/// then it restarts empty again. The second restart must be judged against the history the
/// replicas hold now, not the first one, which nobody holds any more (found by the soak: the
/// writes between the two restarts were wiped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10d_second_restart_empty_is_rescued_too() {
    let mut lab = lab(21320).await;
    let c = Controller::start(&lab).await;
    let chain = shard_holding_keys(21320).await;
    wait_seen(&c, &chain).await;
    c.shared.live.send_modify(|live| live.auto_failover = false);
    lab.server(&chain[0]).restart(None).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            all_hold(&chain, 0).await && replicates(&chain[3], &chain[2]).await
        })
        .await,
        "the first restart did not wipe the chain as Redis does: {:?} {}",
        futures::future::join_all(chain.iter().map(|a| dbsize(a))).await,
        report(&c)
    );
    write_keys(&chain[0], 0..500).await;
    assert!(wait_until(Duration::from_secs(5), || async { all_hold(&chain, 500).await }).await);
    c.shared.live.send_modify(|live| live.auto_failover = true);
    wait_seen(&c, &chain).await;

    lab.server(&chain[0]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    expect_rescue(&chain, 500, &[&c]).await;
    assert_eq!(c.metric("roomguard_restarted_empty_total", &[&format!("instance=\"{}\"", at(1, 21321))]), 2.0);
    c.stop().await;
}

/// Row 10 from an older RDB, with two controllers: the master restarts and loads an RDB that
/// is behind its replicas (here one saved by `SAVE`; in production the RDB of its last full
/// sync as a replica, or a periodic save). Redis 7 restores the RDB's replication ID as the
/// second one, so it looks promoted; its offset went back. Whichever controller rescues
/// first, the other must follow, never demote the rescuer (found by the soak: the two
/// controllers demoted each other's master every round and wiped the newer data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10e_master_restarted_from_an_older_rdb_with_two_controllers() {
    let mut lab = lab(21330).await;
    let a = Controller::start(&lab).await;
    let b = Controller::start_with(second_controller(&lab)).await;
    let chain = shard_holding_keys(21330).await;
    let () = redis::cmd("SAVE").query_async(&mut connect(&chain[0]).await).await.unwrap();
    write_keys(&chain[0], 1000..1500).await;
    assert!(wait_until(Duration::from_secs(5), || async { all_hold(&chain, 1500).await }).await);
    wait_seen(&a, &chain).await;
    wait_seen(&b, &chain).await;

    lab.server(&chain[0]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    expect_rescue(&chain, 1500, &[&a, &b]).await;
    expect_quiet_after_rescue(&chain, &[&a, &b]).await;
    // No promote/demote fight: one promotion of the rescuer and one demotion of the restarted
    // master in all, whichever controller sent them.
    let sent = |what: &str| {
        [&a, &b].iter().map(|c| c.metric("roomguard_actions_total", &[&format!("action=\"{what}\"")])).sum::<f64>()
    };
    assert!(sent("promote") <= 2.0 && sent("demote") <= 2.0, "A: {}\nB: {}", report(&a), report(&b));
    a.stop().await;
    b.stop().await;
}

/// Two controllers, the master hangs: A judges it lost and promotes its replica in room 1; B
/// does not (here its automatic failover is off; in the soak it judged a moment later). The
/// old master comes back and serves again before A has demoted it (here A stopped right after
/// its promotion). B must follow A's newer master, not demote it: in the soak the two demoted
/// each other's master every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_judged_the_master_lost_the_newer_master_wins() {
    let mut lab = lab(21340).await;
    let a = Controller::start(&lab).await;
    let mut config = second_controller(&lab);
    config.controller.auto_failover = false;
    let b = Controller::start_with(config).await;
    let chain = shard_holding_keys(21340).await;
    wait_seen(&a, &chain).await;
    wait_seen(&b, &chain).await;

    lab.server(&chain[0]).hang();
    let promoted = wait_until(Duration::from_secs(10), || async { is_master(&chain[1]).await }).await;
    let report_a = report(&a);
    a.stop().await;
    lab.server(&chain[0]).resume();
    assert!(promoted, "A did not promote room 1's replica: {report_a}");
    assert!(
        wait_until(Duration::from_secs(15), || async {
            is_master(&chain[1]).await
                && replicates(&chain[0], &chain[1]).await
                && replicates(&chain[2], &chain[0]).await
                && all_hold(&chain, 1000).await
        })
        .await,
        "B did not follow the newer master: {}",
        report(&b)
    );
    let before = b.metric("roomguard_actions_total", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b.metric("roomguard_actions_total", &[]), before, "still acting: {}", report(&b));
    assert!(is_master(&chain[1]).await && replicates(&chain[0], &chain[1]).await);
    assert_eq!(
        b.metric("roomguard_failovers_total", &["trigger=\"adopted\"", "outcome=\"ok\""]),
        1.0,
        "{}",
        b.metrics()
    );
    b.stop().await;
}

/// Row 1: no false positives. A healthy deployment polled for 30 s while a third of the
/// controller's replies are held back for up to 30 % of `timeout` (75 ms of 250 ms; the
/// controller's connections are NATed through a jitter proxy; replication between the
/// instances is untouched): no action, and not one probe error. The delay stays well below the
/// timeout so that "zero probe errors" holds on a loaded 2-core machine too: at `timeout`/2 a
/// scheduling stall of 125 ms on top of the longest delay was a (correct) timeout, not a bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_latency_jitter_causes_no_action() {
    let lab = lab(21220).await;
    let max_delay = lab.config.controller.timeout.mul_f64(0.3);
    // Every instance reached through a proxy that delays one reply in three.
    let proxies = [lab.slow_room(0, max_delay, 1).await.unwrap(), lab.slow_room(1, max_delay, 2).await.unwrap()];
    let c = Controller::start(&lab).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let metrics = c.metrics();
    // The jitter really reached the probes: some took longer than 50 ms (a third of the replies
    // wait 0-75 ms: about one probe in nine).
    let slow: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("roomguard_probe_duration_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>()
        - metrics
            .lines()
            .filter(|l| l.starts_with("roomguard_probe_duration_seconds_bucket{") && l.contains("le=\"0.05\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>();
    assert!(slow > 100.0, "the proxy delayed almost nothing ({slow} probes over 50 ms):\n{metrics}");
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", report(&c));
    assert_no_replicaof(&lab, &report(&c)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    assert_eq!(c.metric("roomguard_probe_errors_total", &[]), 0.0, "no probe timed out");
    assert!(c.report_text().contains("HEALTHY"), "{}", report(&c));
    c.stop().await;
    drop(proxies);
}

/// Rows 8 and 10: two controllers (one beside each app server) both see room 1's master
/// restart empty. They rescue the same way, never undo each other, and no key is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_two_controllers_rescue_without_fighting() {
    let mut lab = lab(21250).await;
    let a = Controller::start(&lab).await;
    let b = Controller::start_with(second_controller(&lab)).await;
    let chain = shard_holding_keys(21250).await;
    wait_seen(&a, &chain).await;
    wait_seen(&b, &chain).await;

    lab.server(&chain[0]).restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    expect_rescue(&chain, 1000, &[&a, &b]).await;
    // Settled: the rescuer stays the master, and neither controller acts any more.
    expect_quiet_after_rescue(&chain, &[&a, &b]).await;
    for c in [&a, &b] {
        assert_eq!(c.metric("roomguard_actions_total", &["outcome=\"failed\""]), 0.0, "{}", report(c));
        assert_eq!(c.metric("roomguard_restarted_empty_total", &[&format!("instance=\"{}\"", at(1, 21251))]), 1.0);
    }
    a.stop().await;
    b.stop().await;
}

/// Waits until the controller has read every instance's ping period (1 s in the lab) and
/// derived the silence threshold from it: 1 s + 100 ms poll interval + 300 ms.
pub(crate) async fn wait_derived_threshold(c: &Controller) {
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let text = c.metrics();
            let series: Vec<&str> =
                text.lines().filter(|l| l.starts_with("roomguard_link_silence_threshold_seconds{")).collect();
            series.len() == 2 && series.iter().all(|l| l.ends_with(" 1.4"))
        })
        .await,
        "the threshold was not derived from the ping period:\n{}",
        c.metrics()
    );
}

/// Row 2b: room 1 black-holed (every packet to and from it dropped, no RST: power or fibre
/// loss) while one shard takes writes and the other is idle. Room 2's heads keep their links
/// "up" (until `repl-timeout`, 60 s), so the evidence is their offsets standing still for
/// longer than the ping period plus the margin: the failover happens within seconds, not
/// after Redis' whole-second counter passes 12 s. When the black hole heals, room 1's masters
/// are stale, demoted under room 2, and how far they diverged is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2b_black_hole_of_room_1_fails_over_by_offsets_then_heals() {
    let lab = lab(21260).await;
    let c = Controller::start_with(with_recording_hook(&lab)).await;
    wait_derived_threshold(&c).await;

    // Shard 21261 under load, shard 21262 idle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut con = connect(&at(1, 21261)).await;
            let mut acked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut set = redis::cmd("SET");
                set.arg(format!("k{acked}")).arg(acked);
                match tokio::time::timeout(Duration::from_millis(200), set.query_async::<()>(&mut con)).await {
                    Ok(Ok(())) => acked += 1,
                    _ => break,
                }
            }
            acked
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let hole = lab.black_hole(0).expect("iptables");
    let started = Instant::now();
    let sampler = sample_room_1_evidence(&c, Duration::from_secs(8));
    let failed_over = wait_until(Duration::from_secs(8), || async {
        is_master(&at(2, 21261)).await && is_master(&at(2, 21262)).await
    })
    .await;
    assert!(failed_over, "no failover within 8 s of a black hole: {}", report(&c));
    let evidence = sampler.await.unwrap();
    let took = started.elapsed();
    assert!(evidence.contains("stalled"), "room 2's offsets were not the evidence: {evidence:?}");
    assert!(!evidence.contains("link_down"), "a black hole drops no connection: {evidence:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked > 100, "the loaded shard took writes: {acked}");
    assert!(took >= Duration::from_millis(900), "failed over before room 1 was down: {took:?}");
    eprintln!("black hole: room 2 writable after {took:?}");
    // The evidence was the offsets (room 2's links still report "up").
    let topology: serde_json::Value = serde_json::from_str(&http_get(c.http, "/topology").await.1).unwrap();
    assert_eq!(topology["rooms"][0]["status"], "lost", "{topology}");
    // Room 2 keeps its chains (waited for: the promoted head's sub-replica relinks).
    let room_2 = vec![vec![at(2, 21261), at(2, 21263)], vec![at(2, 21262), at(2, 21264)]];
    wait_chains(&room_2, Duration::from_secs(5), &report(&c)).await;
    assert!(hook_log(&lab).contains("room_lost||1|"), "{}", hook_log(&lab));

    drop(hole);
    for (head, tail) in [(21261, 21263), (21262, 21264)] {
        assert!(
            wait_until(Duration::from_secs(10), || async { replicates(&at(1, head), &at(2, tail)).await }).await,
            "stale master {} not demoted after the black hole healed: {}",
            at(1, head),
            report(&c)
        );
    }
    // (Every instance's series exists from the start, at 0.)
    let diverged_series =
        c.metrics().lines().filter(|l| l.starts_with("roomguard_diverged_bytes_total{") && !l.ends_with(" 0")).count();
    assert_eq!(diverged_series, 2, "divergence of both stale masters is counted:\n{}", c.metrics());
    assert_eq!(c.metric("roomguard_failovers_total", &["trigger=\"auto\"", "outcome=\"ok\""]), 1.0);
    c.stop().await;
}

/// Row 4b: the controller is cut off from room 1 (black-holed from the controller's address
/// only) while room 2 still replicates from it, with the fast rule (ping period 1 s, threshold
/// 1.4 s) and the shards idle: room 2's offsets keep moving with room 1's pings, so no failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4b_cut_off_controller_with_the_fast_rule_and_idle_shards_never_fails_over() {
    let lab = lab(21270).await;
    let c = Controller::start(&lab).await;
    wait_derived_threshold(&c).await;
    let rule = cut_off_from_room_1(&c, 21271).await;
    // Ten thresholds' worth of idle time.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", report(&c));
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", report(&c));
    let topology: serde_json::Value = serde_json::from_str(&http_get(c.http, "/topology").await.1).unwrap();
    assert_eq!(topology["rooms"][0]["status"], "cut_off", "{topology}");
    for w in topology["rooms"][0]["witnesses"].as_array().unwrap() {
        assert_eq!(w["hears"], true, "{topology}");
    }
    drop(rule);
    // Judged by Redis (readable from here again): nothing was sent to any instance.
    assert_no_replicaof(&lab, &report(&c)).await;
    c.stop().await;
}

/// The lab's config with a cooldown long enough that every step of a test happens within it.
fn long_cooldown(lab: &roomguard::lab::Lab) -> roomguard::config::Config {
    let mut config = lab.config.clone();
    config.controller.cooldown = Duration::from_secs(300);
    config
}

async fn room_heads_are_masters(room: u8, base: u16) -> bool {
    is_master(&at(room, base + 1)).await && is_master(&at(room, base + 2)).await
}

/// Issue 12, item 3a: a manual switchover to room 2, then room 2 is killed within the cooldown.
/// Room 1 did not fail (an operator chose to leave it): the automatic failover back to it
/// happens at once, with the data written in room 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antiflap_manual_switchover_then_new_room_lost_fails_back_at_once() {
    let mut lab = lab(24800).await;
    let c = Controller::start_with(long_cooldown(&lab)).await;
    let config = config_path(&lab);
    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.wait_healthy_primary("2", Duration::from_secs(10)).await, "{}", report(&c));
    let chain = [at(2, 24801), at(2, 24803), at(1, 24801), at(1, 24803)];
    write_keys(&chain[0], 0..1000).await;
    assert!(wait_until(Duration::from_secs(5), || async { all_hold(&chain, 1000).await }).await);

    for id in lab.room(1) {
        lab.servers[id].kill();
    }
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || async { room_heads_are_masters(1, 24800).await }).await,
        "no failover back to room 1 (cooldown 5 min): {}",
        report(&c)
    );
    assert!(killed.elapsed() < Duration::from_secs(10), "{:?}", killed.elapsed());
    assert!(c.wait_one_failover_to("1", Duration::from_secs(5)).await, "{}", c.metrics());
    assert_eq!(
        c.metric("roomguard_failovers_total", &["room=\"1\"", "trigger=\"auto\"", "outcome=\"ok\""]),
        1.0,
        "{}",
        c.metrics().lines().filter(|l| l.contains("failovers_total")).collect::<Vec<_>>().join("\n")
    );
    assert!(all_hold(&chain[2..], 1000).await, "room 1 holds the data written in room 2");
    let room_1_chains = vec![vec![at(1, 24801), at(1, 24803)], vec![at(1, 24802), at(1, 24804)]];
    wait_chains(&room_1_chains, Duration::from_secs(5), &report(&c)).await;
    assert_eq!(c.metric("roomguard_failover_held", &[]), 0.0, "{}", c.metrics());
    // Room 2 was lost: that is recorded (and survives a restart) for the anti-flap rule.
    let state = std::fs::read_to_string(&lab.config.controller.state_file).unwrap();
    let file: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(file["room_failures"]["2"].as_u64().is_some(), "{state}");
    assert!(file["room_failures"].get("1").is_none(), "a manual switchover is no failure of room 1: {state}");
    c.stop().await;
}

/// Issue 12, item 3b: three rooms chained 1 -> 2 -> 3. Room 1 is lost, then room 2 a few
/// seconds later: room 3, which did not fail, takes over within the cooldown, with the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antiflap_three_rooms_cascade_reaches_room_3_within_the_cooldown() {
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map(String::from).to_vec();
    let mut lab = lab_with(roomguard::lab::LabSpec { base_port: 24810, room_ips: ips, ..Default::default() }).await;
    let c = Controller::start_with(long_cooldown(&lab)).await;
    let chains: Vec<Vec<String>> =
        (24811..=24812).map(|head| (1..=3).flat_map(|room| [at(room, head), at(room, head + 2)]).collect()).collect();
    for chain in &chains {
        write_keys(&chain[0], 0..1000).await;
        assert!(wait_until(Duration::from_secs(5), || async { all_hold(chain, 1000).await }).await);
    }

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { room_heads_are_masters(2, 24810).await }).await,
        "{}",
        report(&c)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in lab.room(1) {
        lab.servers[id].kill();
    }
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || async { room_heads_are_masters(3, 24810).await }).await,
        "room 3 did not take over: {}",
        report(&c)
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert!(c.wait_one_failover_to("3", Duration::from_secs(5)).await, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_failovers_total", &["room=\"2\"", "trigger=\"auto\"", "outcome=\"ok\""]), 1.0);
    for chain in &chains {
        assert!(
            wait_until(Duration::from_secs(5), || async {
                all_hold(&chain[4..], 1000).await && replicates(&chain[5], &chain[4]).await
            })
            .await,
            "room 3 lost data or its chain: {}",
            report(&c)
        );
    }
    c.stop().await;
}

/// The ping-pong the cooldown exists for: room 1 is lost (room 2 takes over), returns, and
/// room 2 is lost within the cooldown. Room 1 failed within it: the failover back is held,
/// reported once (no countdown in the text), counted in `roomguard_failover_held`, and still
/// held after a controller restart (the state file keeps when each room failed). An
/// operator's `failover --room 1` overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antiflap_ping_pong_back_to_a_room_that_just_failed_is_held() {
    let mut lab = lab(24820).await;
    let c = Controller::start_with(long_cooldown(&lab)).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(c.wait_one_failover_to("2", Duration::from_secs(10)).await, "{}", report(&c));
    for id in lab.room(0) {
        lab.servers[id].restart(None).unwrap();
    }
    for head in [24821, 24822] {
        assert!(
            wait_until(Duration::from_secs(15), || async { replicates(&at(1, head), &at(2, head + 2)).await }).await,
            "room 1 not re-chained: {}",
            report(&c)
        );
    }
    for id in lab.room(1) {
        lab.servers[id].kill();
    }
    let held = |c: &Controller| c.metric("roomguard_failover_held", &["room=\"2\"", "reason=\"cooldown\""]);
    assert!(wait_until(Duration::from_secs(10), || async { held(&c) == 2.0 }).await, "{}", report(&c));
    let held_text = |c: &Controller| c.shared.report.read().unwrap().as_ref().unwrap().held.clone();
    let first = held_text(&c);
    assert!(first[0].contains("room 1 would take over, but it failed itself at"), "{first:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(held_text(&c), first, "the held text is stable (logged once)");
    assert!(is_replica(&at(1, 24821)).await && is_replica(&at(1, 24822)).await, "{}", report(&c));
    assert_eq!(c.metric("roomguard_failovers_total", &["room=\"1\""]), 0.0);
    c.stop().await;

    // A restarted controller still holds it: the failure times come from the state file.
    let c = Controller::start_with(long_cooldown(&lab)).await;
    assert!(wait_until(Duration::from_secs(5), || async { held(&c) == 2.0 }).await, "{}", report(&c));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(is_replica(&at(1, 24821)).await && is_replica(&at(1, 24822)).await, "{}", report(&c));
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\""]), 0.0);
    // `status` and `/topology` show the cooldown, from the state file.
    let config = config_path(&lab);
    let stdout = status_with_long_cooldown(&config).await;
    assert!(stdout.contains("cooldown: room 1 failed at "), "{stdout}");
    assert!(stdout.contains("cooldown: room 2 failed at "), "{stdout}");
    let (_, body) = http_get(c.http, "/topology").await;
    let topology: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(topology["rooms"][0]["cooldown_until_unix_ms"].as_u64().is_some(), "{body}");
    assert!(topology["held"][0].as_str().unwrap().contains("failed itself at"), "{body}");

    let out = run(roomguard(&["failover", "--room", "1", "--config", config.to_str().unwrap()])).await;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(room_heads_are_masters(1, 24820).await, "{said}");
    assert!(wait_until(Duration::from_secs(5), || async { held(&c) == 0.0 }).await, "{}", c.metrics());
    c.stop().await;
}

/// Issue 12, item 4: no action before its decision is saved. The state file's directory
/// disappears after start; room 1 is lost: the failover is held (nothing promoted), the failed
/// writes are counted; once the directory is back, the decision is saved and carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_that_cannot_be_written_holds_the_failover() {
    let mut lab = lab(24830).await;
    let state_dir = lab.dir().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let mut config = lab.config.clone();
    config.controller.state_file = state_dir.join("state.json");
    let c = Controller::start_with(config.clone()).await;
    assert!(wait_until(Duration::from_secs(5), || async { state_dir.join("state.json").exists() }).await);
    assert_eq!(c.metric("roomguard_state_save_errors_total", &[]), 0.0);
    std::fs::remove_dir_all(&state_dir).unwrap();

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { c.metric("roomguard_state_save_errors_total", &[]) >= 3.0 })
            .await,
        "{}",
        c.metrics()
    );
    assert_eq!(c.metric("roomguard_state_save_failing", &[]), 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(is_replica(&at(2, 24831)).await && is_replica(&at(2, 24832)).await, "{}", report(&c));
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", report(&c));
    assert_no_replicaof(&lab, &report(&c)).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);

    std::fs::create_dir(&state_dir).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async { room_heads_are_masters(2, 24830).await }).await,
        "{}",
        report(&c)
    );
    assert!(c.wait_one_failover_to("2", Duration::from_secs(5)).await, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_state_save_failing", &[]), 0.0);
    let state = std::fs::read_to_string(state_dir.join("state.json")).unwrap();
    assert!(state.contains(&format!("\"{}\": \"{}\"", shard(24831), at(2, 24831))), "{state}");
    c.stop().await;

    // The last failover's time and duration survive a restart.
    let c = Controller::start_with(config).await;
    let at = c.metric("roomguard_last_failover_timestamp_seconds", &[]);
    assert!(at > 1.7e9, "{}", c.metrics());
    let took = c.metric("roomguard_last_failover_duration_seconds", &[]);
    assert!(took > 0.0 && took < 10.0, "{took}");
    c.stop().await;
}

/// The ping-pong of [`antiflap_ping_pong_back_to_a_room_that_just_failed_is_held`], run by
/// `roomguard run` as a process, for its log: the held failover is logged once per shard
/// (it was once a line per shard every round, with a countdown in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antiflap_held_failover_is_logged_once() {
    let spec = roomguard::lab::LabSpec {
        base_port: port(24870),
        http_listen: format!("127.0.0.1:{}", port(24879)),
        ..Default::default()
    };
    let mut lab = roomguard::lab::Lab::start(&spec).await.unwrap();
    let config = lab.dir().join("daemon.toml");
    std::fs::write(&config, spec.config_toml().replace("cooldown = \"10s\"", "cooldown = \"5m\"")).unwrap();
    let d = Daemon::start(&config, spec.http_listen.parse().unwrap()).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { room_heads_are_masters(2, 24870).await }).await,
        "{}",
        d.log_text()
    );
    for id in lab.room(0) {
        lab.servers[id].restart(None).unwrap();
    }
    for head in [24871, 24872] {
        assert!(
            wait_until(Duration::from_secs(15), || async { replicates(&at(1, head), &at(2, head + 2)).await }).await,
            "{}",
            d.log_text()
        );
    }
    for id in lab.room(1) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            d.metric("roomguard_failover_held", &["reason=\"cooldown\""]).await == 2.0
        })
        .await,
        "{}",
        d.log_text()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = d.log_text();
    let held: Vec<&str> = log.lines().filter(|l| l.contains("room lost but no failover")).collect();
    assert_eq!(held.len(), 2, "{}", held.join("\n"));
    assert!(held.iter().all(|l| l.contains("room 1 would take over, but it failed itself at")), "{held:?}");
    assert!(is_replica(&at(1, 24871)).await && is_replica(&at(1, 24872)).await, "{}", d.log_text());
}

/// Row 4c: a partition between the rooms while both live and the controller reaches both:
/// room 2's heads stop hearing room 1 (their offsets stand still, or the link drops), but
/// room 1 answers the controller, so it is not lost: no failover, no action. When the
/// partition heals, the chains are whole again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4c_partition_between_rooms_with_both_reachable_never_fails_over() {
    let lab = lab(21290).await;
    let c = Controller::start(&lab).await;
    wait_derived_threshold(&c).await;
    let before = replicaof_calls_all(&lab).await;
    let partition = lab.partition(0, 1).expect("iptables");
    // Room 2's heads go deaf (a few thresholds)...
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let report = c.shared.report.read().unwrap().clone();
            report.is_some_and(|r| r.rooms[0].witnesses.iter().all(|w| !w.hears))
        })
        .await,
        "room 2 never stopped hearing room 1: {}",
        report(&c)
    );
    // ...yet room 1 answers the controller: it stays up and primary.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.metric("roomguard_room_up", &["room=\"1\""]), 1.0, "{}", report(&c));
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", report(&c));
    drop(partition);
    wait_chains(&seed_chains(21290), Duration::from_secs(15), &report(&c)).await;
    assert_eq!(replicaof_calls_all(&lab).await, before, "Redis got REPLICAOF/SLAVEOF: {}", report(&c));
    c.stop().await;
}

/// `roomguard status` on the lab's config file with a 5-minute cooldown (the lab's is 10 s),
/// so that the cooldown a test provoked is still running when `status` reads the state file.
async fn status_with_long_cooldown(config: &std::path::Path) -> String {
    let text = std::fs::read_to_string(config).unwrap().replace("cooldown = \"10s\"", "cooldown = \"5m\"");
    std::fs::write(config, text).unwrap();
    let status = run(roomguard(&["status", "--config", config.to_str().unwrap()])).await;
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// Row 10b: the whole primary room restarts empty, faster than `down_after` (a power blip,
/// no persistence), with Redis' default sync delay. No instance of room 1 holds the data any
/// more; room 2's head still does, until the full sync from room 1's empty tail streams 5 s
/// later. The rescue crosses rooms: room 2's head is promoted and every key survives (found by
/// the randomized soak, which saw roomguard re-point that last copy at the empty master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10b_whole_room_restarted_empty_is_rescued_from_the_next_room() {
    let mut lab = lab(21300).await;
    let c = Controller::start(&lab).await;
    let chain = shard_holding_keys(21300).await;
    wait_seen(&c, &chain).await;
    for id in lab.room(0) {
        lab.servers[id].restart_with(None, &REDIS_DEFAULT_SYNC_DELAY).unwrap();
    }
    expect_rescue_from_room_2(&chain, &c, Duration::from_secs(5)).await;
    // One failover per round that saw restarts: one or two (the shards' restarts may be seen a
    // round apart), each counted and verified.
    let failovers = c.metric("roomguard_failovers_total", &["room=\"2\"", "outcome=\"ok\""]);
    assert!((1.0..=2.0).contains(&failovers), "{}", c.metrics());
    assert_eq!(c.metric("roomguard_failovers_total", &["outcome=\"failed\""]), 0.0, "{}", c.metrics());
    c.stop().await;
}
