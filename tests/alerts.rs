//! Counters exist at 0 from the start (so `increase()` sees the first event), and an alert fed
//! with what a real controller's `/metrics` showed fires for its first failing hook run.

use std::{fmt::Write as _, path::Path, time::Duration};

use roomguard::lab::{Lab, LabSpec};

use crate::util::*;

/// `name{labels} value` lines of `name` in a scrape, as (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?.trim_start_matches('{').trim_end_matches('}');
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_start_at_0_and_a_first_failing_hook_alerts() {
    let spec = LabSpec { base_port: port(28020), ..LabSpec::default() };
    let mut lab = Lab::start(&spec).await.unwrap();
    let mut config = lab.config.clone();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: vec!["room_lost".into(), "failover".into()],
        command: vec!["/bin/false".into()],
        timeout: Duration::from_secs(10),
    }];
    config.sentinel =
        Some(roomguard::sentinel::RawSentinel::listening_on(&format!("127.0.0.1:{}", port(28029))).validate().unwrap());
    let c = Controller::start_with(config).await;

    // Before anything happened: every known series, at 0.
    let first = c.metrics();
    let ported = |labels: &str| ports_in(labels);
    for (name, labels) in [
        ("roomguard_actions_total", r#"action="promote",outcome="ok""#),
        ("roomguard_actions_total", r#"action="replicaof",outcome="skipped""#),
        ("roomguard_diverged_bytes_total", r#"shard="shard-28021",instance="127.0.0.11:28021""#),
        ("roomguard_hook_runs_total", r#"event="room_lost",outcome="failed""#),
        ("roomguard_hook_runs_total", r#"event="failover",outcome="dropped""#),
        ("roomguard_sentinel_commands_total", r#"command="ping""#),
        ("roomguard_sentinel_commands_total", r#"command="other""#),
        ("roomguard_sentinel_connections_closed_total", r#"reason="idle""#),
        ("roomguard_probe_errors_total", r#"instance="127.0.0.12:28024",kind="refused""#),
        ("roomguard_failovers_total", r#"room="2",trigger="adopted",outcome="ok""#),
        ("roomguard_restarted_empty_total", r#"shard="shard-28021",room="1",instance="127.0.0.11:28021""#),
    ] {
        let line = format!("{name}{{{}}} 0\n", ported(labels));
        assert!(first.contains(&line), "no {line:?} at start:\n{first}");
    }
    // No series for an event no hook runs on.
    assert!(!first.contains(r#"roomguard_hook_runs_total{event="demote""#), "{first}");

    // Room 1 is lost: the hook runs on room_lost and on each shard's failover, and fails.
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let failed = |text: &str, event: &str| {
        let event = format!("event=\"{event}\"");
        samples(text, "roomguard_hook_runs_total")
            .iter()
            .any(|(labels, v)| labels.contains(&event) && labels.contains(r#"outcome="failed""#) && *v >= 1.0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || async {
            let text = c.metrics();
            failed(&text, "room_lost") && failed(&text, "failover")
        })
        .await,
        "{}",
        c.metrics()
    );
    let second = c.metrics();
    c.stop().await;

    // The two scrapes, one minute apart, then unchanged, as Prometheus would store them (with
    // the scrape's instance and job labels), fed to the alert rules.
    let mut series = String::new();
    let before = samples(&first, "roomguard_hook_runs_total");
    for (labels, after) in samples(&second, "roomguard_hook_runs_total") {
        let start = before.iter().find(|(l, _)| *l == labels).map_or("_".to_string(), |(_, v)| v.to_string());
        let _ = writeln!(
            series,
            "  - series: roomguard_hook_runs_total{{{labels},instance=\"app1:9480\",job=\"roomguard\"}}\n    values: {start} {after}x10"
        );
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/roomguard-alerts.yml");
    let test = format!(
        "rule_files:\n- {}\nevaluation_interval: 15s\ntests:\n- name: first failing hook runs, from real scrapes\n  interval: 1m\n  input_series:\n{series}  alert_rule_test:\n  - eval_time: 0m\n    alertname: RoomguardHookFailing\n    exp_alerts: []\n  - eval_time: 2m\n    alertname: RoomguardHookFailing\n    exp_alerts:\n{}",
        rules.display(),
        ["failover", "room_lost"]
            .iter()
            .map(|event| format!(
                "    - exp_labels: {{severity: warning, instance: \"app1:9480\", event: {event}, outcome: failed}}\n      exp_annotations:\n        summary: \"roomguard hook for {event} on app1:9480: failed\"\n        description: |\n{}        runbook_url: docs/runbook.md#roomguardhookfailing\n",
                description(event)
            ))
            .collect::<String>()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("first-hook-failure.test.yml");
    std::fs::write(&file, &test).unwrap();
    let out = promtool(&["test", "rules", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rendered description of RoomguardHookFailing (promtool compares it verbatim), indented.
fn description(event: &str) -> String {
    format!(
        "A [[hook]] command run by the controller at app1:9480 on a\n\
         {event} event ended with outcome failed (failed: non-zero\n\
         exit; timeout: killed at its timeout; error: could not be started). Whatever the hook\n\
         maintains (a proxy's config, DNS, a page) may not reflect the new masters.\n\
         The controller's log has the hook's exit status and the end of its stderr\n\
         (`journalctl -u roomguard | grep hook`). The failover itself is not affected.\n"
    )
    .lines()
    .map(|l| format!("          {l}\n"))
    .collect()
}

/// Every alert links to its own section of docs/runbook.md (`runbook_url`), and that section
/// exists: a heading named after the alert, whose anchor is the name in lower case.
#[test]
fn every_alert_has_a_runbook_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("dashboards/roomguard-alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(root.join("docs/runbook.md")).unwrap();
    let headings: Vec<&str> = runbook.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    let mut alerts = Vec::new();
    let mut current: Option<String> = None;
    for line in rules.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            assert!(current.is_none(), "alert {current:?} has no runbook_url");
            current = Some(name.to_string());
            alerts.push(name.to_string());
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            let name = current.take().expect("a runbook_url outside an alert");
            assert_eq!(url.trim_matches('"'), format!("docs/runbook.md#{}", name.to_lowercase()), "{name}");
            assert!(headings.contains(&name.as_str()), "docs/runbook.md has no section \"## {name}\"");
        } else {
            assert!(!line.starts_with("runbook:"), "an old `runbook` annotation: {line}");
        }
    }
    assert!(current.is_none(), "alert {current:?} has no runbook_url");
    assert!(alerts.len() >= 19, "{alerts:?}");
    for name in ["RoomguardInstanceRestartedEmpty", "RoomguardWritesDiscarded", "RoomguardActionFailed"] {
        assert!(alerts.iter().any(|a| a == name), "{name} missing");
    }
}

/// The label names of every series in a scrape, by metric name.
fn label_sets(scrape: &str) -> std::collections::BTreeMap<String, Vec<Vec<String>>> {
    let mut out: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut keys: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
        keys.sort();
        let sets = out.entry(name.to_string()).or_default();
        if !sets.contains(&keys) {
            sets.push(keys);
        }
    }
    out
}

/// Every `roomguard_*` input series of dashboards/roomguard-alerts.test.yml has the name and
/// the label names of a series a real controller exports (as Prometheus stores it: the scrape
/// adds `instance` and `job`, and renames roomguard's own `instance` to `exported_instance`).
/// The scrape is taken with a hook, the Sentinel endpoint, maintenance mode and a lost room,
/// so that the series that exist only then are in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_tests_feed_the_series_roomguard_exports() {
    let mut lab = lab(25020).await;
    let mut config = lab.config.clone();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: vec!["failover".into()],
        command: vec!["/bin/true".into()],
        timeout: Duration::from_secs(10),
    }];
    let sentinel = format!("127.0.0.1:{}", port(25029));
    config.sentinel = Some(roomguard::sentinel::RawSentinel::listening_on(&sentinel).validate().unwrap());
    roomguard::maintenance::pause(&config.controller.state_file, "test", None).unwrap();
    let c = Controller::start_with(config).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { c.metric("roomguard_failover_held", &[]) > 0.0 }).await,
        "{}",
        c.metrics()
    );
    let exported = label_sets(&c.metrics());
    c.stop().await;

    let tests =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/roomguard-alerts.test.yml"))
            .unwrap();
    let mut checked = 0;
    for line in tests.lines() {
        let Some(series) = line.trim().strip_prefix("- series: ") else { continue };
        let series = series.trim_matches(|c| c == '\'' || c == '"');
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        if !name.starts_with("roomguard_") {
            continue;
        }
        let mut keys: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
            .filter(|k| k != "instance" && k != "job")
            .map(|k| if k == "exported_instance" { "instance".to_string() } else { k })
            .collect();
        keys.sort();
        let sets = exported.get(name).unwrap_or_else(|| panic!("{name} is not exported (test series: {series})"));
        assert!(sets.contains(&keys), "{series}: roomguard exports {name} with labels {sets:?}, not {keys:?}");
        checked += 1;
    }
    assert!(checked > 40, "only {checked} series checked");
}
