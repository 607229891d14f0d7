//! The controller end to end against real Redis: healthy, room loss, restart, returning room,
//! manual switchover under write load.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_topology_is_left_untouched() {
    let lab = lab(21000).await;
    let c = Controller::start(&lab).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0, "{}", c.metrics());
    assert_no_replicaof(&lab, &c.report_text()).await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);
    assert_eq!(c.metric("roomguard_primary_room", &["room=\"1\""]), 1.0);
    assert_eq!(c.metric("roomguard_instance_up", &[]), 8.0);
    let report = c.shared.report.read().unwrap().clone().unwrap();
    assert!(report.healthy, "{}", report.render());

    let (status, body) = http_get(c.http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok\nlast_round_age_seconds "), "{body}");
    let (status, body) = http_get(c.http, "/topology").await;
    assert_eq!(status, 200);
    let topology: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(topology["primary_room"], "1");
    assert_eq!(topology["shards"][0]["instances"][2]["desired"], format!("replica of {}", at(1, 21003)));
    let (status, body) = http_get(c.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("roomguard_build_info{version=\""), "{body}");
    for (head, tail) in [(21001, 21003), (21002, 21004)] {
        assert!(is_master(&at(1, head)).await);
        assert!(replicates(&at(1, tail), &at(1, head)).await);
        assert!(replicates(&at(2, head), &at(1, tail)).await);
        assert!(replicates(&at(2, tail), &at(2, head)).await);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_1_killed_promotes_room_2_heads_keeps_chains_and_data() {
    let mut lab = lab(21010).await;
    for head in [21011, 21012] {
        let mut con = connect(&at(1, head)).await;
        let () = redis::cmd("SET").arg("before-loss").arg(head).query_async(&mut con).await.unwrap();
    }
    // Written before the loss and replicated to the end of each chain.
    for (head, tail) in [(21011, 21013), (21012, 21014)] {
        assert!(
            wait_until(Duration::from_secs(5), || async {
                let mut con = connect(&at(2, tail)).await;
                redis::cmd("GET").arg("before-loss").query_async::<Option<u16>>(&mut con).await.ok().flatten()
                    == Some(head)
            })
            .await
        );
    }
    let c = Controller::start(&lab).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }

    assert!(
        wait_until(Duration::from_secs(10), || async {
            is_master(&at(2, 21011)).await && is_master(&at(2, 21012)).await
        })
        .await,
        "room 2 heads were not promoted"
    );
    for (head, tail) in [(21011, 21013), (21012, 21014)] {
        let mut con = connect(&at(2, head)).await;
        let () = redis::cmd("SET").arg("after-loss").arg(1).query_async(&mut con).await.unwrap();
        let before: Option<u16> = redis::cmd("GET").arg("before-loss").query_async(&mut con).await.unwrap();
        assert_eq!(before, Some(head), "data written before the loss is on the new master");
        assert!(
            wait_until(Duration::from_secs(5), || async { replicates(&at(2, tail), &at(2, head)).await }).await,
            "room 2's replica stays attached to its new master"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            c.metric("roomguard_failovers_total", &["room=\"2\"", "trigger=\"auto\"", "outcome=\"ok\""]) == 1.0
        })
        .await,
        "{}",
        c.metrics()
    );
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\"", "outcome=\"ok\""]), 2.0);
    let state = std::fs::read_to_string(&lab.config.controller.state_file).unwrap();
    assert!(state.contains(&format!("\"{}\": \"{}\"", shard(21011), at(2, 21011))), "{state}");
    c.stop().await;

    // Room 1 comes back, empty, while no controller runs, as its own config files start it:
    // each head a master, each tail its replica. Redis alone no longer says which room is
    // primary: both rooms' heads are masters with unrelated histories, each with a replica. A restarted controller reads its state file: no second failover,
    // nothing undone: room 1 is re-chained under room 2 (the mirror chain), and room 2's
    // instances get no command at all (INFO commandstats).
    let room_2: Vec<String> = [21011, 21012, 21013, 21014].map(|p| at(2, p)).to_vec();
    let mut before = Vec::new();
    for a in &room_2 {
        before.push(replicaof_calls(a).await.unwrap());
    }
    assert_eq!(before, [1, 1, 0, 0], "the failover promoted room 2's heads, once each: {room_2:?}");
    for (head, tail) in [(21011, 21013), (21012, 21014)] {
        lab.server(&at(1, head)).restart(None).unwrap();
        lab.server(&at(1, tail)).restart(Some(&addr(&at(1, head)))).unwrap();
    }
    for id in lab.room(0) {
        lab.servers[id].wait_ready(&Default::default(), Duration::from_secs(10)).await.unwrap();
    }
    // Room 1 as its own config files start it: each head a master followed by its tail.
    for (head, tail) in [(21011, 21013), (21012, 21014)] {
        assert!(wait_until(Duration::from_secs(10), || async { replicates(&at(1, tail), &at(1, head)).await }).await);
    }
    let c = Controller::start(&lab).await;
    let mirror: Vec<Vec<String>> =
        [21011, 21012].iter().map(|&h| vec![at(2, h), at(2, h + 2), at(1, h), at(1, h + 2)]).collect();
    wait_chains(&mirror, Duration::from_secs(15), &c.report_text()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = Vec::new();
    for a in &room_2 {
        after.push(replicaof_calls(a).await.unwrap());
    }
    assert_eq!(after, before, "room 2 was sent commands after the restart: {room_2:?}\n{}", c.report_text());
    assert!(chains_are(&mirror).await, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\""]), 0.0, "{}", c.metrics());
    assert_eq!(c.metric("roomguard_actions_total", &["outcome=\"failed\""]), 0.0, "{}", c.metrics());
    for (head, tail) in [(21011, 21013), (21012, 21014)] {
        let expected = head.to_string();
        assert!(
            wait_until(Duration::from_secs(5), || async {
                let mut con = connect(&at(1, tail)).await;
                redis::cmd("GET").arg("before-loss").query_async::<Option<String>>(&mut con).await.ok().flatten()
                    == Some(expected.clone())
            })
            .await,
            "the returning room gets the data back from room 2"
        );
    }
    c.stop().await;
}

/// Writes `w:<n>` keys to `target` until told to stop or the instance refuses writes
/// (READONLY: it was demoted). Returns the acknowledged ones.
async fn writer(target: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u64>>>, prefix: &'static str) {
    let mut con = connect(&target).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match redis::cmd("SET").arg(format!("{prefix}:{n}")).arg(n).query_async::<()>(&mut con).await {
            Ok(()) => acked.lock().unwrap().push(n),
            Err(e) if e.code() == Some("READONLY") => return,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn switchover_under_load(lab: &roomguard::lab::Lab, from: u8, to: u8, prefix: &'static str) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(writer(at(from, 21021), stop.clone(), acked.clone(), prefix));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config = config_path(lab);
    graceful_failover_cli(&config, &to.to_string()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writer should have been acknowledged some writes: {}", acked.len());
    let mut con = connect(&at(to, 21021)).await;
    let keys: Vec<String> = acked.iter().map(|n| format!("{prefix}:{n}")).collect();
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await.unwrap();
    let lost: Vec<&String> = keys.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());

    // The mirror chain: to-head -> to-tail -> from-head -> from-tail, for both shards (links
    // re-establish within a second or so after the promotion: waited for, not sampled once).
    let chains: Vec<Vec<String>> =
        [21021, 21022].iter().map(|&h| vec![at(to, h), at(to, h + 2), at(from, h), at(from, h + 2)]).collect();
    wait_chains(&chains, Duration::from_secs(5), "after a CLI switchover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_switchover_loses_no_acknowledged_write_and_switches_back() {
    let lab = lab(21020).await;
    // A running controller beside the CLI must follow, not fight.
    let c = Controller::start(&lab).await;
    switchover_under_load(&lab, 1, 2, "there").await;
    let followed = c.wait_healthy_primary("2", Duration::from_secs(5)).await;
    assert!(followed, "the controller did not follow the switchover: {}", c.report_text());
    switchover_under_load(&lab, 2, 1, "back").await;
    let followed = c.wait_healthy_primary("1", Duration::from_secs(5)).await;
    assert!(followed, "the controller did not follow the switch back: {}", c.report_text());
    assert_eq!(c.metric("roomguard_actions_total", &["action=\"promote\""]), 0.0, "the controller promoted nothing");
    // Writes paused on the old masters are no silence: their pings keep flowing (and the room
    // answers the controller), so no room was ever judged lost.
    assert_eq!(c.metric("roomguard_failovers_total", &["trigger=\"auto\""]), 0.0, "{}", c.metrics());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_when_the_old_room_is_dead_is_forced() {
    let mut lab = lab(21190).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    // Room 2's heads see their link drop at once: the evidence a forced failover requires.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            info(&at(2, 21191)).await.and_then(|i| i.master).is_some_and(|l| !l.link_up)
        })
        .await
    );
    let config = config_path(&lab);
    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("forced failover {} -> {}", at(1, 21191), at(2, 21191))), "{stdout}");
    let room_2: Vec<Vec<String>> = [21191, 21192].iter().map(|&h| vec![at(2, h), at(2, h + 2)]).collect();
    wait_chains(&room_2, Duration::from_secs(5), "after a forced failover").await;
    let state = std::fs::read_to_string(&lab.config.controller.state_file).unwrap();
    assert!(state.contains("\"trigger\": \"manual\""), "{state}");
}

/// Issue 12, item 1: the state file cannot be written once writes are paused. Nothing changes,
/// the old masters take writes again at once (not when the pause expires), and the error says
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_whose_decision_cannot_be_saved_unpauses_at_once() {
    let lab = lab(24840).await;
    let state_dir = lab.dir().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let config = lab.dir().join("immutable-state.toml");
    let toml = std::fs::read_to_string(config_path(&lab)).unwrap();
    let state_file = state_dir.join("state.json");
    std::fs::write(&config, toml.replace("\"roomguard-state.json\"", &format!("\"{}\"", state_file.display())))
        .unwrap();
    let _immutable = Immutable::set(&state_dir);

    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot write state file {}", state_file.display())), "{stderr}");
    assert!(stderr.contains("nothing changed and writes were unpaused"), "{stderr}");
    for head in [24841, 24842] {
        assert!(accepts_writes(&at(1, head)).await, "{} still paused", at(1, head));
        assert!(is_master(&at(1, head)).await && replicates(&at(2, head), &at(1, head + 2)).await);
    }
    assert_no_replicaof(&lab, "nothing changed").await;
}

/// Issue 12: a head that stops answering once writes are paused (it hangs, SIGSTOP). The
/// switchover is held in its wait for the head (the head's parent hangs too, and its master
/// took a write), which gives the test its moment: once writes block on the master, the head
/// hangs. The switchover fails naming the head, says writes were unpaused, and they were: at
/// once, not when the pause expires; nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_whose_head_stops_answering_after_the_pause_unpauses_at_once() {
    let mut lab = lab(28560).await;
    let (master, parent, head) = (at(1, 28561), at(1, 28563), at(2, 28561));
    lab.server(&parent).hang();
    let mut con = connect(&master).await;
    redis::cmd("SET").arg("behind").arg(1).query_async::<()>(&mut con).await.unwrap();
    let config = config_path(&lab);
    let failover = tokio::spawn(run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])));
    let paused = wait_until(Duration::from_secs(10), || async { !accepts_writes(&master).await }).await;
    lab.server(&head).hang();
    let out = failover.await.unwrap();
    let unpaused = accepts_writes(&master).await && accepts_writes(&at(1, 28562)).await;
    lab.server(&head).resume();
    lab.server(&parent).resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(paused, "writes were never paused: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&head) && stderr.contains("writes were unpaused and nothing changed"), "{stderr}");
    assert!(unpaused, "the old masters are still paused after the switchover failed: {stderr}");
    assert!(is_master(&master).await && is_master(&at(1, 28562)).await);
    assert!(!lab.config.controller.state_file.exists(), "nothing saved");
    assert_no_replicaof(&lab, "nothing changed").await;
}

/// Issue 12, item 1: one shard's promotion is refused (its room-2 head has `REPLICAOF` renamed
/// away). The other shard's promotion is not cancelled and completes; the refused shard keeps
/// its old master (state file included); every old master takes writes at once; the error
/// names the shard, the head and what moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_a_refused_promotion_keeps_that_shard_and_unpauses() {
    let mut lab = lab(24850).await;
    let parent = addr(&at(1, 24853));
    let renamed =
        ["--rename-command", "REPLICAOF", "REPLICAOF-off-24851", "--rename-command", "SLAVEOF", "SLAVEOF-off-24851"];
    lab.server(&at(2, 24851)).restart_with(Some(&parent), &renamed).unwrap();
    assert!(wait_until(Duration::from_secs(10), || async { replicates(&at(2, 24851), &at(1, 24853)).await }).await);
    assert!(lab.wait_linked(Duration::from_secs(10)).await);

    let config = config_path(&lab);
    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("shard \"{}\": promoting {} failed", shard(24851), at(2, 24851))), "{stderr}");
    assert!(stderr.contains(&format!("keeps its old master {}", at(1, 24851))), "{stderr}");
    assert!(stderr.contains(&format!("moved: {}", shard(24852))), "{stderr}");
    assert!(accepts_writes(&at(1, 24851)).await, "the refused shard's master is still paused");
    assert!(is_master(&at(2, 24852)).await, "the other shard's promotion was cancelled");
    assert!(
        wait_until(Duration::from_secs(5), || async { replicates(&at(1, 24852), &at(2, 24854)).await }).await,
        "the other shard's old master was re-chained"
    );
    let state = std::fs::read_to_string(&lab.config.controller.state_file).unwrap();
    assert!(state.contains(&format!("\"{}\": \"{}\"", shard(24851), at(1, 24851))), "{state}");
    assert!(state.contains(&format!("\"{}\": \"{}\"", shard(24852), at(2, 24852))), "{state}");
}

/// Issue 12, item 1: the admin API's client goes away mid-failover. The failover is not
/// cancelled with the request: it completes, writes are unpaused, and it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_failover_survives_the_client_going_away() {
    use tokio::io::AsyncWriteExt;
    const TOKEN: &str = "a-long-enough-admin-token-24860";
    let lab = lab(24860).await;
    let mut config = lab.config.clone();
    config.http.admin_token = Some(roomguard::config::Secret::new(TOKEN));
    let c = Controller::start_with(config).await;

    let mut stream = tokio::net::TcpStream::connect(c.http).await.unwrap();
    let request = format!(
        "POST /failover?room=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(stream);

    assert!(c.wait_healthy_primary("2", Duration::from_secs(15)).await, "{}", c.report_text());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            c.metric("roomguard_failovers_total", &["room=\"2\"", "trigger=\"manual\"", "outcome=\"ok\""]) == 1.0
        })
        .await,
        "{}",
        c.metrics()
    );
    for head in [24861, 24862] {
        assert!(accepts_writes(&at(2, head)).await);
        assert!(replicates(&at(1, head), &at(2, head + 2)).await);
    }
    c.stop().await;
}

/// Another writer (a `roomguard failover` beside the controller) rewrites the state file in
/// place with a newer epoch naming room 2's heads: the same inode, the same length, the same
/// mtime (set back). Only the content tells the change: the controller follows it (its report
/// shows the epoch and room 2's heads as the designated masters). Redis is not switched (a
/// real switchover would do that), so the controller then waits for room 2's heads to stop
/// hearing room 1, which is not this test's subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_is_followed_by_content_not_by_mtime() {
    let lab = lab(27700).await;
    let c = Controller::start(&lab).await;
    assert!(c.wait_healthy_primary("1", Duration::from_secs(10)).await, "{}", c.report_text());
    let path = lab.config.controller.state_file.clone();
    let masters = [at(1, 27701), at(1, 27702)];
    let written = wait_until(Duration::from_secs(5), || async {
        std::fs::read_to_string(&path).is_ok_and(|t| masters.iter().all(|m| t.contains(m.as_str())))
    })
    .await;
    assert!(written, "the controller never wrote its masters: {:?}", std::fs::read_to_string(&path));
    let text = std::fs::read_to_string(&path).unwrap();
    let epoch = serde_json::from_str::<serde_json::Value>(&text).unwrap()["epoch"].as_u64().unwrap();
    let newer = epoch + 1;
    let rewritten = text
        .replacen(&format!("\"epoch\": {epoch}"), &format!("\"epoch\": {newer}"), 1)
        .replace(&masters[0], &at(2, 27701))
        .replace(&masters[1], &at(2, 27702));
    assert_eq!(rewritten.len(), text.len(), "the rewrite must keep the length:\n{text}\n{rewritten}");
    assert!(rewritten.contains(&format!("\"epoch\": {newer}")), "{rewritten}");

    let before = std::fs::metadata(&path).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, rewritten.as_bytes()).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (after.dev(), after.ino(), after.len(), after.modified().unwrap()),
        (before.dev(), before.ino(), before.len(), before.modified().unwrap()),
        "the rewrite must look unchanged to the file's metadata"
    );

    let followed = wait_until(Duration::from_secs(5), || async {
        c.shared
            .report
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|r| r.epoch == newer && r.primary_room.as_deref() == Some("2"))
    })
    .await;
    assert!(followed, "the controller did not follow the rewritten state file:\n{}", c.report_text());
    c.stop().await;
}
