//! `[coordination]` on real etcd and real Redis (issue 16): one acting controller by lease,
//! decisions published by compare-and-swap with fencing tokens, discovery-only controllers,
//! what happens when etcd is unreachable, and a room fenced when it loses the quorum.
//!
//! Labs here use 24880-24999 and 28500-28519, etcd clusters 26500-26599 (logical ports,
//! through `port`).

use std::time::Duration;

use roomguard::coordination::{CoordinationSettings, Role, Unavailable};

use crate::{etcd::EtcdCluster, util::*};

fn coordinated(
    lab: &roomguard::lab::Lab,
    etcd: &[String],
    name: &str,
    role: Role,
    room: Option<usize>,
) -> roomguard::config::Config {
    let mut config = lab.config.clone();
    config.controller.state_file = lab.dir().join(format!("state-{name}.json"));
    config.coordination = Some(CoordinationSettings {
        endpoints: etcd.to_vec(),
        prefix: "/roomguard/test".into(),
        name: name.into(),
        role,
        room,
        lease_ttl: Duration::from_secs(3),
        on_unavailable: Unavailable::Hold,
    });
    config
}

/// A hook that appends `event|shard|new master|trigger|RG_EPOCH` to `epochs.log`.
fn epoch_hook(lab: &roomguard::lab::Lab, config: &mut roomguard::config::Config, name: &str) -> std::path::PathBuf {
    let log = lab.dir().join(format!("epochs-{name}.log"));
    let script = lab.dir().join(format!("epoch-{name}.sh"));
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$RG_EVENT|$RG_SHARD|$RG_NEW_MASTER|$RG_TRIGGER|$RG_EPOCH\" >> {}\n", log.display()),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: vec!["failover".into(), "switchover".into()],
        command: vec![script.display().to_string()],
        timeout: Duration::from_secs(10),
    }];
    log
}

fn state_token(config: &roomguard::config::Config) -> Option<u64> {
    roomguard::state::State::load(&config.controller.state_file, &config.topology)
        .unwrap()
        .and_then(|s| s.fencing_token)
}

fn acting(c: &Controller) -> bool {
    c.metric("roomguard_coordination_acting", &[]) == 1.0
}

fn primary(c: &Controller) -> Option<String> {
    c.shared.report.read().unwrap().as_ref().and_then(|r| r.primary_room.clone())
}

/// Two acting-capable controllers: exactly one holds the lease; only it fails a lost room
/// over; the decision's etcd revision (the fencing token) is in both state files, on
/// `/topology` and in the hook's `RG_EPOCH`; the observer's own publication is refused by etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_acts_and_its_failover_carries_a_fencing_token() {
    let mut lab = lab(24880).await;
    let etcd = EtcdCluster::on(26500, &["127.0.0.13"]).await;
    let urls = etcd.endpoints();
    let mut config_a = coordinated(&lab, &urls, "a", Role::Acting, None);
    let hooks_a = epoch_hook(&lab, &mut config_a, "a");
    let mut config_b = coordinated(&lab, &urls, "b", Role::Acting, None);
    let hooks_b = epoch_hook(&lab, &mut config_b, "b");
    let a = Controller::start_with(config_a.clone()).await;
    let b = Controller::start_with(config_b.clone()).await;
    // Just started, both observe for two leases (6 s) before they campaign.
    assert!(
        !wait_until(Duration::from_secs(4), || async { acting(&a) || acting(&b) }).await,
        "a controller took the lease during its warm-up"
    );
    assert!(
        wait_until(Duration::from_secs(20), || async { acting(&a) || acting(&b) }).await,
        "nobody acts:\n{}",
        a.report_text()
    );
    assert!(
        !wait_until(Duration::from_secs(3), || async { acting(&a) == acting(&b) }).await,
        "exactly one controller acts"
    );
    let (actor, observer, observer_config) = if acting(&a) { (&a, &b, &config_b) } else { (&b, &a, &config_a) };
    // The actor published the masters it read from Redis: both state files hold its token.
    assert!(wait_until(Duration::from_secs(5), || async { state_token(observer_config).is_some() }).await);

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { primary(actor).as_deref() == Some("2") }).await,
        "{}",
        actor.report_text()
    );
    assert!(wait_until(Duration::from_secs(5), || async { primary(observer).as_deref() == Some("2") }).await);
    let token = state_token(&config_a).expect("a fencing token in the state file");
    assert!(
        wait_until(Duration::from_secs(5), || async { state_token(&config_b) == Some(token) }).await,
        "both controllers hold the same decision: {token} vs {:?}",
        state_token(&config_b)
    );
    let (_, topology) = http_get(actor.http, "/topology").await;
    assert!(topology.contains(&format!("\"fencing_token\":{token}")), "{topology}");
    assert!(topology.contains("\"mode\":\"acting\""), "{topology}");
    let (_, topology) = http_get(observer.http, "/topology").await;
    assert!(topology.contains("\"mode\":\"observing\""), "{topology}");
    // `roomguard status` reads who acts and the token from etcd.
    let config_file = config_path(&lab);
    let toml = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(
        &config_file,
        format!("{toml}\n[coordination]\netcd = [\"{}\"]\nprefix = \"/roomguard/test\"\nname = \"cli\"\n", urls[0]),
    )
    .unwrap();
    let out = run(roomguard(&["status", "--json", "--config", config_file.to_str().unwrap()])).await;
    let status = String::from_utf8_lossy(&out.stdout);
    let acting_name = if acting(&a) { "a" } else { "b" };
    assert!(status.contains(&format!("\"fencing_token\": {token}")), "{status}");
    assert!(status.contains(&format!("\"acting\": \"{acting_name}\"")), "{status}");
    // The hooks of both controllers ran for each shard with the token as RG_EPOCH.
    for log in [&hooks_a, &hooks_b] {
        assert!(
            wait_until(Duration::from_secs(10), || async {
                std::fs::read_to_string(log).unwrap_or_default().lines().count() == 2
            })
            .await,
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        for line in std::fs::read_to_string(log).unwrap().lines() {
            assert!(line.starts_with("failover|") && line.ends_with(&format!("|auto|{token}")), "{line}");
        }
    }
    // etcd refuses a decision from the controller that does not hold the lease.
    let coordination = observer.shared.coordination.clone().unwrap();
    let state =
        roomguard::state::State::load(&observer_config.controller.state_file, &lab.config.topology).unwrap().unwrap();
    assert_eq!(state.fencing_token, Some(token));
    let refused = coordination.publish_state(&state).await.unwrap_err();
    assert!(refused.to_string().contains("no longer holds the acting key"), "{refused}");
    a.stop().await;
    b.stop().await;
}

/// `on_etcd_unavailable = "hold"`: with etcd gone, a lost room is not failed over (and says
/// so); once etcd is back, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_hold_means_no_failover_until_it_is_back() {
    let mut lab = lab(24920).await;
    let mut etcd = EtcdCluster::on(26510, &["127.0.0.13"]).await;
    let urls = etcd.endpoints();
    let a = Controller::start_with(coordinated(&lab, &urls, "a", Role::Acting, None)).await;
    assert!(wait_until(Duration::from_secs(20), || async { acting(&a) }).await, "{}", a.report_text());
    etcd.kill(1);
    assert!(
        wait_until(Duration::from_secs(10), || async { a.metric("roomguard_coordination_holding", &[]) == 1.0 }).await,
        "{}",
        a.report_text()
    );
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        !wait_until(Duration::from_secs(5), || async { is_master(&at(2, 24921)).await }).await,
        "no failover while etcd is unreachable and the policy is hold"
    );
    assert!(a.report_text().contains("coordination: holding"), "{}", a.report_text());
    etcd.start(1);
    assert!(
        wait_until(Duration::from_secs(20), || async { primary(&a).as_deref() == Some("2") }).await,
        "{}",
        a.report_text()
    );
    a.stop().await;
}

/// `on_etcd_unavailable = "quorum-free"`: with etcd gone the controller acts as without it,
/// and publishes what it decided once etcd answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_quorum_free_fails_over_and_publishes_later() {
    let mut lab = lab(24940).await;
    let mut etcd = EtcdCluster::on(26520, &["127.0.0.13"]).await;
    let urls = etcd.endpoints();
    let mut config = coordinated(&lab, &urls, "a", Role::Acting, None);
    config.coordination.as_mut().unwrap().on_unavailable = Unavailable::QuorumFree;
    let a = Controller::start_with(config.clone()).await;
    assert!(wait_until(Duration::from_secs(20), || async { acting(&a) }).await, "{}", a.report_text());
    let before = wait_for_token(&config).await;
    etcd.kill(1);
    assert!(
        wait_until(Duration::from_secs(10), || async { a.report_text().contains("coordination: quorum-free") }).await,
        "{}",
        a.report_text()
    );
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { primary(&a).as_deref() == Some("2") }).await,
        "{}",
        a.report_text()
    );
    assert_eq!(state_token(&config), Some(before), "decided without etcd: no new token yet");
    etcd.start(1);
    assert!(
        wait_until(Duration::from_secs(20), || async { state_token(&config).is_some_and(|t| t > before) }).await,
        "published once etcd is back: {:?}\n{}",
        state_token(&config),
        a.report_text()
    );
    a.stop().await;
}

async fn wait_for_token(config: &roomguard::config::Config) -> u64 {
    assert!(wait_until(Duration::from_secs(5), || async { state_token(config).is_some() }).await);
    state_token(config).unwrap()
}

/// A discovery-only controller polls no Redis: its Sentinel endpoint and hooks follow the
/// acting controller's view through the etcd watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_only_controller_reports_a_failover_from_the_watch() {
    let mut lab = lab(24900).await;
    let etcd = EtcdCluster::on(26530, &["127.0.0.13"]).await;
    let urls = etcd.endpoints();
    let a = Controller::start_with(coordinated(&lab, &urls, "a", Role::Acting, None)).await;
    assert!(wait_until(Duration::from_secs(20), || async { acting(&a) }).await);
    let mut config = coordinated(&lab, &urls, "d", Role::Discovery, None);
    let hooks = epoch_hook(&lab, &mut config, "d");
    let endpoint = format!("127.0.0.1:{}", port(24907));
    config.sentinel = Some(roomguard::sentinel::RawSentinel::listening_on(&endpoint).validate().unwrap());
    let d = Controller::start_with(config).await;
    let shard = &lab.config.topology.shards[0].name;
    let master = |d: &Controller| {
        d.shared.discovery.borrow().shards[0].master.as_ref().map(|m| m.addr.to_string()).unwrap_or_default()
    };
    assert_eq!(master(&d), at(1, 24901));
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(wait_until(Duration::from_secs(15), || async { master(&d) == at(2, 24901) }).await, "{}", d.report_text());
    // What a client asks (redis-cli against the discovery-only endpoint).
    let out = run({
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.args(["-p", &port(24907).to_string(), "-h", "127.0.0.1", "SENTINEL", "get-master-addr-by-name", shard]);
        cmd
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(":"), at(2, 24901));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            std::fs::read_to_string(&hooks).unwrap_or_default().lines().count() == 2
        })
        .await
    );
    assert!(
        std::fs::read_to_string(&hooks).unwrap().lines().all(|l| l.starts_with("failover|") && l.contains("|auto|"))
    );
    // It never probed Redis.
    assert_eq!(d.metric("roomguard_probe_duration_seconds_count", &[]), 0.0, "{}", d.metrics());
    assert!(d.metric("roomguard_coordination_watch_events_total", &[]) >= 1.0);
    assert!(d.report_text().contains("discovery-only"), "{}", d.report_text());
    let (status, body) = http_get(d.http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    d.stop().await;
    a.stop().await;
}

/// The config file of a `roomguard run` process in a coordinated lab: its own state file and
/// HTTP port, `[coordination]` with `extra` lines.
fn process_config(
    dir: &std::path::Path,
    spec: &roomguard::lab::LabSpec,
    name: &str,
    http: u16,
    etcd: &[String],
    extra: &str,
) -> (std::path::PathBuf, std::net::SocketAddr) {
    let listen = format!("127.0.0.1:{http}");
    let toml = spec
        .config_toml()
        .replace(&format!("listen = \"{}\"", spec.http_listen), &format!("listen = \"{listen}\""))
        .replace("state_file = \"roomguard-state.json\"", &format!("state_file = \"state-{name}.json\""));
    let urls: Vec<String> = etcd.iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        "{toml}\n[coordination]\netcd = [{}]\nprefix = \"/roomguard/test\"\nname = \"{name}\"\n{extra}\n",
        urls.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    (path, listen.parse().unwrap())
}

/// The acting controller (a `roomguard run` process) is SIGKILLed: the other takes the lease
/// once it lapses and fails a lost room over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_passes_to_another_controller_when_the_acting_one_is_killed() {
    deadline();
    let spec = roomguard::lab::LabSpec { base_port: port(24960), ..Default::default() };
    let mut lab = roomguard::lab::Lab::start(&spec).await.unwrap();
    let etcd = EtcdCluster::new(26540).await;
    let urls = etcd.endpoints();
    let (config_a, http_a) = process_config(lab.dir(), &spec, "a", port(24967), &urls, "");
    let (config_b, http_b) = process_config(lab.dir(), &spec, "b", port(24968), &urls, "");
    let mut a = Daemon::start(&config_a, http_a).await;
    assert!(
        wait_until(Duration::from_secs(20), || async { a.metric("roomguard_coordination_acting", &[]).await == 1.0 })
            .await,
        "{}",
        a.log_text()
    );
    let b = Daemon::start(&config_b, http_b).await;
    assert!(
        !wait_until(Duration::from_secs(2), || async { b.metric("roomguard_coordination_acting", &[]).await == 1.0 })
            .await
    );
    a.kill();
    assert!(
        wait_until(Duration::from_secs(20), || async { b.metric("roomguard_coordination_acting", &[]).await == 1.0 })
            .await,
        "{}",
        b.log_text()
    );
    assert!(b.log_text().contains("this controller is now the ACTING controller"), "{}", b.log_text());
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async {
            is_master(&at(2, 24961)).await && is_master(&at(2, 24962)).await
        })
        .await,
        "{}",
        b.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            b.metric("roomguard_failovers_total", &["trigger=\"auto\"", "outcome=\"ok\""]).await == 1.0
        })
        .await,
        "{}",
        b.log_text()
    );
}

/// Writes to `addr` once per `every`, each on a new connection with a `timeout` for the reply
/// (a write that waits on a pause is abandoned, never acknowledged), until `stop`; returns
/// when each acknowledged write was acknowledged.
async fn acknowledged_writes(
    addr: String,
    every: Duration,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<std::time::Instant> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut acks = Vec::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let write = async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let key = format!("w{n}");
            let command = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len());
            s.write_all(command.as_bytes()).await.ok()?;
            let mut reply = [0u8; 5];
            s.read_exact(&mut reply).await.ok()?;
            (&reply == b"+OK\r\n").then(std::time::Instant::now)
        };
        if let Ok(Some(at)) = tokio::time::timeout(timeout, write).await {
            acks.push(at);
        }
        tokio::time::sleep(every).await;
    }
    acks
}

/// Issue 16's partition: room 1 and room 2 cut from each other (Redis and etcd), the third
/// etcd member reachable from room 2 only. Room 2's controller (acting) fails room 1 over;
/// room 1's controller, without the quorum and without room 2, fences room 1's masters: no
/// write is acknowledged by room 1 later than the stated bound after the cut. Once the
/// partition heals, room 1's old masters are demoted and the fence lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_fences_the_room_without_the_quorum() {
    const ROOM1: ControllerUid = ControllerUid::new(60021);
    const ROOM2: ControllerUid = ControllerUid::new(60022);
    deadline();
    let spec = roomguard::lab::LabSpec { base_port: port(24980), ..Default::default() };
    clean_stale_iptables(24980);
    let mut lab = roomguard::lab::Lab::start(&spec).await.unwrap();
    let etcd = EtcdCluster::new(26550).await;
    let urls = etcd.endpoints();
    let dir = tempdir_for_other_uids("roomguard-coordination-");
    let (config_1, http_1) = process_config(dir.path(), &spec, "room1", port(24987), &urls, "room = \"1\"");
    let (config_2, http_2) = process_config(dir.path(), &spec, "room2", port(24988), &urls, "room = \"2\"");
    open_to_all(dir.path());
    let c2 = Daemon::start_as(&config_2, http_2, Some(ROOM2)).await;
    assert!(
        wait_until(Duration::from_secs(20), || async { c2.metric("roomguard_coordination_acting", &[]).await == 1.0 })
            .await,
        "{}",
        c2.log_text()
    );
    let c1 = Daemon::start_as(&config_1, http_1, Some(ROOM1)).await;
    // Both follow the same record before the cut.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            let token = c2.metric("roomguard_coordination_fencing_token", &[]).await;
            token > 0.0 && c1.metric("roomguard_coordination_fencing_token", &[]).await == token
        })
        .await,
        "{}",
        c1.log_text()
    );
    let master_1 = at(1, 24981);
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(acknowledged_writes(
        master_1.clone(),
        Duration::from_millis(20),
        Duration::from_millis(300),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The partition: Redis between the rooms, etcd member 1 from 2 and 3, each room's
    // controller from the other room (and room 1's from the third site).
    let lab_ports = port(24981)..=port(24984);
    let mut cut = vec![];
    let redis_cut = lab.partition(0, 1).unwrap();
    cut.extend(etcd.isolate(1));
    for (uid, ip) in [(ROOM1, "127.0.0.12"), (ROOM1, "127.0.0.13"), (ROOM2, "127.0.0.11")] {
        cut.extend(cut_uid_from(24980, uid.uid, ip, lab_ports.clone()));
        cut.extend(cut_uid_from(24980, uid.uid, ip, etcd.ports()));
    }
    let cut_at = std::time::Instant::now();

    // Room 2 fails over; room 1 is fenced.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            is_master(&at(2, 24981)).await && is_master(&at(2, 24982)).await
        })
        .await,
        "room 2 did not take over:\n{}",
        c2.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c1.metric("roomguard_coordination_fenced_instances", &[]).await == 2.0
        })
        .await,
        "room 1 was not fenced:\n{}",
        c1.log_text()
    );
    assert!(c1.log_text().contains("FENCED"), "{}", c1.log_text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let acks = writer.await.unwrap();

    // The stated bound (docs/coordination.md): fence_after + one period + controller.timeout.
    let coordination = roomguard::config::Config::load(&config_1).unwrap().coordination.unwrap();
    let bound = coordination.fencing_bound(Duration::from_millis(250));
    assert_eq!(bound, Duration::from_millis(4250));
    // Scheduling slack for a loaded 2-core CI machine (ticks, probes and the fence's own
    // connection run late there); the bound itself is what the docs state.
    let slack = Duration::from_millis(750);
    let before = acks.iter().filter(|&&a| a < cut_at).count();
    let after_bound: Vec<Duration> =
        acks.iter().filter(|&&a| a > cut_at + bound + slack).map(|&a| a - cut_at).collect();
    let last = acks.iter().map(|&a| a.saturating_duration_since(cut_at)).max().unwrap_or_default();
    println!("writes acknowledged by room 1: {before} before the cut, the last {last:?} after it");
    assert!(before > 0, "the writer never wrote");
    assert!(after_bound.is_empty(), "room 1 acknowledged writes after the bound: {after_bound:?}");

    // Heal: room 1's old masters are demoted under room 2 and the fence is lifted.
    drop(cut);
    drop(redis_cut);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            replicates(&at(1, 24981), &at(2, 24983)).await || replicates(&at(1, 24981), &at(2, 24981)).await
        })
        .await,
        "{}\n{}",
        describe(&at(1, 24981)).await,
        c2.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c1.metric("roomguard_coordination_fenced_instances", &[]).await == 0.0
        })
        .await,
        "{}",
        c1.log_text()
    );
    // Room 1's controller, cut from etcd for longer than its lease, can act again: with room 2's
    // controller gone it takes the lease (a new one: the old one expired during the partition).
    let mut c2 = c2;
    c2.kill();
    assert!(
        wait_until(Duration::from_secs(15), || async { c1.metric("roomguard_coordination_acting", &[]).await == 1.0 })
            .await,
        "{}",
        c1.log_text()
    );
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
}

/// The `state` key's revision in etcd (0: absent).
async fn shared_revision(etcd: &EtcdCluster) -> i64 {
    let mut client = etcd.client(&[1]).await.expect("etcd client");
    let got = client.get("/roomguard/test/state", None).await.expect("etcd get");
    got.kvs().first().map_or(0, |kv| kv.mod_revision())
}

/// Issue 12: with `[coordination]`, a decision that cannot be saved to the state file is not
/// published either (it was once published first, and then followed from etcd next round).
/// The state file's directory is made immutable: a switchover through the admin API fails
/// with the write error and a lost room is not failed over; etcd's record stays as it was all
/// along. Once the directory is writable again the failover is saved, published and done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_decision_is_not_published_to_etcd() {
    const TOKEN: &str = "a-long-enough-admin-token-28500";
    let mut lab = lab(28500).await;
    let etcd = EtcdCluster::on(26590, &["127.0.0.13"]).await;
    let mut config = coordinated(&lab, &etcd.endpoints(), "a", Role::Acting, None);
    let state_dir = lab.dir().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    config.controller.state_file = state_dir.join("state.json");
    config.http.admin_token = Some(roomguard::config::Secret::new(TOKEN));
    let a = Controller::start_with(config.clone()).await;
    assert!(wait_until(Duration::from_secs(20), || async { acting(&a) }).await, "{}", a.report_text());
    let token = wait_for_token(&config).await;
    assert_eq!(shared_revision(&etcd).await, token as i64);
    let immutable = Immutable::set(&state_dir);

    let (status, body) = http_post(a.http, "/failover?room=2", Some(TOKEN)).await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("cannot write state file") && body.contains("writes were unpaused"), "{body}");
    assert_eq!(shared_revision(&etcd).await, token as i64, "the unsaved switchover was published");
    for head in [28501, 28502] {
        assert!(accepts_writes(&at(1, head)).await, "{} still paused", at(1, head));
    }

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { a.metric("roomguard_state_save_errors_total", &[]) >= 3.0 })
            .await,
        "{}",
        a.metrics()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(shared_revision(&etcd).await, token as i64, "the unsaved failover was published");
    assert!(is_replica(&at(2, 28501)).await && is_replica(&at(2, 28502)).await, "{}", a.report_text());
    assert_eq!(a.metric("roomguard_actions_total", &[]), 0.0, "{}", a.report_text());

    drop(immutable);
    assert!(
        wait_until(Duration::from_secs(15), || async { primary(&a).as_deref() == Some("2") }).await,
        "{}",
        a.report_text()
    );
    let published = shared_revision(&etcd).await;
    assert!(published > token as i64);
    assert!(
        wait_until(Duration::from_secs(5), || async { state_token(&config) == Some(published as u64) }).await,
        "the state file holds the decision's token: {:?} vs {published}",
        state_token(&config)
    );
    a.stop().await;
}
