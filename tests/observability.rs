//! What operators see: metrics across a room loss (and promtool's verdict on them), the status
//! page, the admin API's token handling, and the dashboard/alert files' metric names.

use std::{collections::BTreeSet, path::Path, time::Duration};

use roomguard::{config::Secret, metrics::Metrics, observe::ProbeError, observe::ProbeErrorKind, state::Trigger};

use crate::util::*;

fn check_metrics_with_promtool(text: &str) {
    let out = promtool(&["check", "metrics"], Some(text));
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_room_loss_and_pass_promtool() {
    let mut lab = lab(21050).await;
    let c = Controller::start(&lab).await;
    let room = |r: &str| format!("room=\"{r}\"");
    assert_eq!(c.metric("roomguard_instance_up", &[]), 8.0);
    assert_eq!(c.metric("roomguard_instance_is_master", &[&room("1")]), 2.0);
    assert_eq!(c.metric("roomguard_instance_is_master", &[&room("2")]), 0.0);
    assert_eq!(c.metric("roomguard_instance_master_link_up", &[]), 6.0);
    assert_eq!(c.metric("roomguard_primary_room", &[&room("1")]), 1.0);
    assert_eq!(c.metric("roomguard_primary_room", &[&room("2")]), 0.0);
    assert_eq!(c.metric("roomguard_room_up", &[]), 2.0);
    assert!(c.metric("roomguard_probe_duration_seconds_count", &[]) >= 8.0);
    check_metrics_with_promtool(&c.metrics());

    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            c.metric("roomguard_failovers_total", &[&room("2"), "trigger=\"auto\"", "outcome=\"ok\""]) == 1.0
        })
        .await,
        "{}",
        c.metrics()
    );
    // Within one poll round of the verification, the gauges agree.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.metric("roomguard_instance_up", &[&room("1")]), 0.0);
    assert_eq!(c.metric("roomguard_instance_up", &[&room("2")]), 4.0);
    assert_eq!(c.metric("roomguard_instance_is_master", &[&room("2")]), 2.0);
    assert_eq!(c.metric("roomguard_primary_room", &[&room("1")]), 0.0);
    assert_eq!(c.metric("roomguard_primary_room", &[&room("2")]), 1.0);
    assert_eq!(c.metric("roomguard_room_up", &[&room("1")]), 0.0);
    assert!(c.metric("roomguard_probe_errors_total", &["kind=\"refused\""]) > 0.0);
    assert!(c.metric("roomguard_last_failover_timestamp_seconds", &[]) > 1.7e9);
    let took = c.metric("roomguard_last_failover_duration_seconds", &[]);
    assert!(took > 0.0 && took < 5.0, "{took}");
    check_metrics_with_promtool(&c.metrics());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_every_instance_and_the_verdict() {
    let lab = lab(21060).await;
    let c = Controller::start(&lab).await;
    let (status, page) = http_get(c.http, "/").await;
    assert_eq!(status, 200);
    for i in &lab.topology().instances {
        assert!(page.contains(&i.addr.to_string()), "{} missing from the page", i.addr);
    }
    assert!(page.contains("HEALTHY: primary room 1; room 1 up, room 2 up"), "{page}");
    assert!(page.contains("http-equiv=refresh"), "the page refreshes itself");
    assert!(!page.contains("<script") && !page.contains("src=\"http"), "self-contained: no script, no CDN");
    assert!(page.contains(&shard(21061)) && page.contains("room 1 (primary)"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_its_token_and_fails_over_through_the_controller() {
    let lab = lab(21070).await;
    // Read-only without a token.
    let c = Controller::start(&lab).await;
    let (status, _) = http_post(c.http, "/failover?room=2", Some("anything-anything")).await;
    assert_eq!(status, 403);
    c.stop().await;

    const TOKEN: &str = "test-token-0123456789";
    let mut config = lab.config.clone();
    config.http.admin_token = Some(Secret::new(TOKEN));
    let c = Controller::start_with(config).await;
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = http_post(c.http, "/failover?room=2", token).await;
        assert_eq!(status, 401, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_master(&at(1, 21071)).await && replicates(&at(2, 21071), &at(1, 21073)).await,
        "a refused request changed nothing"
    );
    assert_no_replicaof(&lab, "a refused request changed nothing").await;
    assert_eq!(c.metric("roomguard_failovers_total", &[]), 0.0);

    let (status, body) = http_post(c.http, "/failover?room=9", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown room"), "{body}");

    let (status, body) = http_post(c.http, "/failover?room=2", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"how\":\"graceful\""), "{body}");
    let chains = |to: u8, from: u8| -> Vec<Vec<String>> {
        [21071, 21072].iter().map(|&h| vec![at(to, h), at(to, h + 2), at(from, h), at(from, h + 2)]).collect()
    };
    wait_chains(&chains(2, 1), Duration::from_secs(5), &c.report_text()).await;
    assert_eq!(c.metric("roomguard_failovers_total", &["room=\"2\"", "trigger=\"manual\"", "outcome=\"ok\""]), 1.0);

    // The CLI can go through the controller too.
    let url = format!("http://{}", c.http);
    let out = run(roomguard(&["failover", "--room", "1", "--via", &url, "--token", TOKEN])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("graceful failover"));
    wait_chains(&chains(1, 2), Duration::from_secs(5), &c.report_text()).await;
    let out = run(roomguard(&["failover", "--room", "2", "--via", &url, "--token", "wrong-token-0123456789"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    c.stop().await;
}

/// Every exported sample name, from a Metrics whose every family has a sample.
fn exported_names() -> BTreeSet<String> {
    let topology = roomguard::config::Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("controller.toml"))
        .unwrap()
        .topology;
    let m = Metrics::new(&topology);
    m.record_probe(0, Duration::from_millis(1), Some(&ProbeError::new(ProbeErrorKind::Timeout, "t")));
    m.record_action("promote", "ok");
    m.record_failover("2", Trigger::Auto, true, Duration::from_secs(1));
    m.record_divergence(0, 10);
    m.sentinel_command("sentinel");
    m.sentinel_closed("idle");
    m.record_hook("failover", "ok");
    m.set_config_warning(0, "empty_restart", true);
    m.set_held(vec![roomguard::metrics::HeldLabels {
        shard: "shard-6401".into(),
        room: "1".into(),
        reason: "cooldown".into(),
    }]);
    let mut observation = roomguard::observe::Observation::new(topology.instances.len());
    let master =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/info/redis7-master.txt"))
            .unwrap();
    let info = roomguard::info::parse(&master).unwrap();
    observation.instances[0].record(std::time::Instant::now(), Duration::from_millis(1), Ok(info));
    let verdict = roomguard::detect::assess(
        &topology,
        &observation,
        std::time::Instant::now(),
        roomguard::detect::DetectSettings {
            down_after: Duration::from_secs(1),
            silence: roomguard::detect::SilenceSettings::new(None, Duration::from_millis(100)),
        },
    );
    m.update(&topology, &observation, &verdict, &vec![Some(0), Some(4)]);
    let mut names = BTreeSet::new();
    for line in m.encode().lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split(' ').skip(2);
        let (name, kind) = (parts.next().unwrap().to_string(), parts.next().unwrap());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    names
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let exported = exported_names();
    for family in [
        "roomguard_instance_up",
        "roomguard_instance_replication_lag_bytes",
        "roomguard_failovers_total",
        "roomguard_probe_duration_seconds_bucket",
        "roomguard_diverged_bytes_total",
        "roomguard_build_info",
    ] {
        assert!(exported.contains(family), "{family} is not exported: {exported:?}");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    for name in ["roomguard.json", "roomguard-alerts.yml", "roomguard-alerts.test.yml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("dashboards/{name}: {e}"));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("roomguard_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let metric = &tail[..end];
            // Alert names and rule groups are CamelCase or hyphenated; metric names are these.
            assert!(exported.contains(metric), "dashboards/{name} uses {metric}, which roomguard does not export");
            checked += 1;
            rest = &tail[end..];
        }
    }
    assert!(checked > 20, "only {checked} metric references found");
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    for args in [["check", "rules", "roomguard-alerts.yml"], ["test", "rules", "roomguard-alerts.test.yml"]] {
        let mut cmd = std::process::Command::new("promtool");
        let out = cmd.args(args).current_dir(&dir).output().expect("promtool (scripts/test installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `/metrics` scrapes as `promtool test rules` input series, one sample a minute per scrape and
/// `minutes`, as Prometheus stores them with dashboards/README.md's scrape config: the
/// controller is `instance="app1:9480", job="roomguard"`, and a sample's own `instance` label
/// (a Redis instance) becomes `exported_instance`. A series missing from a scrape is absent
/// (`_`) for those minutes, as a series the binary creates on its first increment is.
fn promtool_series(scrapes: &[(&str, usize)], families: &[&str]) -> String {
    let mut series: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    let total: usize = scrapes.iter().map(|(_, m)| m).sum();
    let mut at = 0;
    for (text, minutes) in scrapes {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            if !families.contains(&name) {
                continue;
            }
            let mut all: Vec<String> = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let l = l.trim_end_matches('"');
                    let l = l.strip_prefix("instance=").map(|v| format!("exported_instance={v}")).unwrap_or(l.into());
                    format!("{l}\"")
                })
                .collect();
            all.extend(["instance=\"app1:9480\"".to_string(), "job=\"roomguard\"".to_string()]);
            let key = format!("{name}{{{}}}", all.join(", "));
            let values = series.entry(key).or_insert_with(|| vec!["_".to_string(); total]);
            for v in &mut values[at..at + minutes] {
                *v = value.to_string();
            }
        }
        at += minutes;
    }
    // Prometheus' own series for the scrape target.
    series.insert("up{instance=\"app1:9480\", job=\"roomguard\"}".into(), vec!["1".to_string(); total]);
    series.iter().map(|(k, v)| format!("  - series: '{k}'\n    values: '{}'\n", v.join(" "))).collect()
}

/// The alert rules on what the binary really exports (the rule unit tests in
/// dashboards/roomguard-alerts.test.yml are hand-written series): a healthy controller scraped
/// for 15 minutes, then room 1 killed and the failover done, scraped for 20 more. While
/// healthy nothing fires; after it, exactly RoomguardRoomLost for room 1,
/// RoomguardFailoverHappened for room 2 (the failover counters exist at 0 from the start, so
/// the failover is an increment, not a new series) and RoomguardHookFailing for the hook that
/// failed on it (a hook counter series is created by its first run, with value 1: increase()
/// alone never saw it, and the hand-written test fed a series starting at 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_fire_on_series_from_a_real_scrape() {
    let mut lab = lab(21280).await;
    // A hook that fails on the failover: its counter series is created by that first run.
    let mut config = lab.config.clone();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: vec!["failover".into()],
        command: vec!["/bin/false".into()],
        timeout: Duration::from_secs(10),
    }];
    let c = Controller::start_with(config).await;
    let healthy = http_get(c.http, "/metrics").await.1;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(c.wait_one_failover_to("2", Duration::from_secs(10)).await, "{}", c.report_text());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            c.metric("roomguard_room_up", &["room=\"1\""]) == 0.0
                && c.metric("roomguard_primary_room", &["room=\"2\""]) == 1.0
                && c.metric("roomguard_hook_runs_total", &["outcome=\"failed\""]) >= 1.0
        })
        .await
    );
    let failed_over = http_get(c.http, "/metrics").await.1;
    c.stop().await;
    let families = [
        "roomguard_failovers_total",
        "roomguard_room_up",
        "roomguard_instance_is_master",
        "roomguard_primary_room",
        "roomguard_build_info",
        "roomguard_hook_runs_total",
    ];
    let series = promtool_series(&[(&healthy, 15), (&failed_over, 20)], &families);
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/roomguard-alerts.yml");
    // The firing alerts, by their labels besides alertname and alertstate.
    let firing = |alerts: &[(&str, &str)]| -> String {
        if alerts.is_empty() {
            return "      exp_samples: []\n".into();
        }
        let mut out = "      exp_samples:\n".to_string();
        for (name, labels) in alerts {
            out.push_str(&format!(
                "      - labels: 'ALERTS{{alertname=\"{name}\", alertstate=\"firing\", {labels}}}'\n        value: 1\n"
            ));
        }
        out
    };
    let test = format!(
        "rule_files:\n- {}\nevaluation_interval: 1m\ntests:\n- name: real scrape\n  interval: 1m\n  input_series:\n{series}  promql_expr_test:\n    - expr: ALERTS{{alertstate=\"firing\"}}\n      eval_time: 14m\n{}    - expr: ALERTS{{alertstate=\"firing\"}}\n      eval_time: 17m\n{}",
        rules.display(),
        firing(&[]),
        firing(&[
            ("RoomguardFailoverHappened", r#"room="2", severity="warning""#),
            ("RoomguardHookFailing", r#"event="failover", instance="app1:9480", outcome="failed", severity="warning""#,),
            ("RoomguardRoomLost", r#"room="1", severity="critical""#),
        ]),
    );
    let path = lab.dir().join("real-scrape.test.yml");
    std::fs::write(&path, &test).unwrap();
    let out = promtool(&["test", "rules", path.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "promtool test rules on a real scrape:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The settings audit: what the lab's instances run with (no persistence, a full sync that
/// streams at once) is reported per instance, and a ping period too long for `link_silence`
/// too; an instance with persistence is not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_settings_that_undermine_guarantees_are_reported() {
    let lab = lab(21240).await;
    let (slow_pings, persistent) = (at(1, 21241), at(2, 21243));
    let mut con = connect(&slow_pings).await;
    let () =
        redis::cmd("CONFIG").arg("SET").arg("repl-ping-replica-period").arg(10).query_async(&mut con).await.unwrap();
    let mut con = connect(&persistent).await;
    let () = redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes").query_async(&mut con).await.unwrap();
    let c = Controller::start(&lab).await;
    let warning = |instance: &str, check: &str| {
        c.metric("roomguard_config_warning", &[&format!("instance=\"{instance}\""), &format!("check=\"{check}\"")])
    };
    assert!(
        wait_until(Duration::from_secs(5), || async { warning(&slow_pings, "repl_ping_replica_period") == 1.0 }).await,
        "{}",
        c.metrics()
    );
    assert_eq!(warning(&at(1, 21242), "repl_ping_replica_period"), 0.0, "the lab pings every second");
    assert_eq!(warning(&at(1, 21242), "empty_restart"), 1.0);
    assert_eq!(warning(&persistent, "empty_restart"), 0.0);
    c.stop().await;
}
