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
    let spec = LabSpec { base_port: 28020, ..LabSpec::default() };
    let mut lab = Lab::start(&spec).await.unwrap();
    let mut config = lab.config.clone();
    config.hooks = vec![roomguard::hooks::HookSettings {
        events: vec!["room_lost".into(), "failover".into()],
        command: vec!["/bin/false".into()],
        timeout: Duration::from_secs(10),
    }];
    config.sentinel = Some(roomguard::sentinel::RawSentinel::listening_on("127.0.0.1:28029").validate().unwrap());
    let c = Controller::start_with(config).await;

    // Before anything happened: every known series, at 0.
    let first = c.metrics();
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
        let line = format!("{name}{{{labels}}} 0\n");
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
                "    - exp_labels: {{severity: warning, instance: \"app1:9480\", event: {event}, outcome: failed}}\n      exp_annotations:\n        summary: \"roomguard hook for {event} on app1:9480: failed\"\n        description: |\n{}        runbook: dashboards/README.md#alerts\n",
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
