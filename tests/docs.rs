//! The documentation against the code: every configuration key serde accepts is documented in
//! docs/configuration.md and every documented key exists; every alert rule is in
//! docs/metrics.md; every source file is in the code map; every relative link points to a
//! file (and heading) that exists. No Redis needed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    error::Kind,
    providers::{Format, Toml},
};
use roomguard::config::RawConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fields serde accepts where `probe` (a config with the unknown key `zz_probe` in one
/// place) puts it: serde's own list, from its "unknown field" error.
fn accepted_fields(probe: &str) -> Vec<&'static str> {
    match Figment::new().merge(Toml::string(probe)).extract::<RawConfig>() {
        Err(e) => match e.kind {
            Kind::UnknownField(found, expected) if found == "zz_probe" => expected.to_vec(),
            other => panic!("expected an unknown-field error for:\n{probe}\ngot {other:?}"),
        },
        Ok(_) => panic!("zz_probe was accepted:\n{probe}"),
    }
}

/// Every `section.key` the configuration accepts ("" for the top level), from serde.
fn accepted_keys() -> BTreeSet<(String, String)> {
    const SHARD: &str = "[[shard]]\nname = \"s\"\nroom.1 = [\"127.0.0.1:1\"]\n";
    let places = [
        ("", "zz_probe = 1\nrooms = [\"1\"]\n".to_string()),
        ("controller", "rooms = [\"1\"]\n[controller]\nzz_probe = 1\n".to_string()),
        ("http", "rooms = [\"1\"]\n[http]\nzz_probe = 1\n".to_string()),
        ("redis", "rooms = [\"1\"]\n[redis]\nzz_probe = 1\n".to_string()),
        ("sentinel", "rooms = [\"1\"]\n[sentinel]\nlisten = \"127.0.0.1:1\"\nzz_probe = 1\n".to_string()),
        ("coordination", "rooms = [\"1\"]\n[coordination]\netcd = []\nzz_probe = 1\n".to_string()),
        ("hook", "rooms = [\"1\"]\n[[hook]]\nevents = []\ncommand = [\"x\"]\nzz_probe = 1\n".to_string()),
        ("shard", format!("rooms = [\"1\"]\n{SHARD}zz_probe = 1\n")),
    ];
    let mut keys = BTreeSet::new();
    for (section, probe) in places {
        for field in accepted_fields(&probe) {
            keys.insert((section.to_string(), field.to_string()));
        }
    }
    keys
}

/// The keys the first column of docs/configuration.md's reference table names:
/// `controller.down_after`, `redis.username`, `[redis.room."<room>"]`, `[[hook]] events`,
/// `[[shard]] room.<room> = [...]`, `rooms`.
fn documented_keys(doc: &str) -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap();
        for token in cell.split('`').skip(1).step_by(2) {
            let token = token.trim();
            let (section, key) = if let Some(rest) = token.strip_prefix("[[") {
                let (section, key) = rest.split_once("]]").unwrap();
                (section.to_string(), key.trim().split(['.', ' ']).next().unwrap().to_string())
            } else if let Some(rest) = token.strip_prefix('[') {
                let path = rest.trim_end_matches(']');
                let mut parts = path.split('.');
                (parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string())
            } else {
                match token.split_once('.') {
                    Some((section, key)) => (section.to_string(), key.to_string()),
                    None => (String::new(), token.to_string()),
                }
            };
            keys.insert((section, key));
        }
    }
    keys
}

#[test]
fn every_configuration_key_is_documented_and_every_documented_key_exists() {
    let doc = read("docs/configuration.md");
    let documented = documented_keys(&doc);
    let mut accepted = accepted_keys();
    // Sections are documented through their keys.
    for section in ["controller", "http", "redis", "sentinel", "coordination", "hook", "shard"] {
        accepted.remove(&(String::new(), section.to_string()));
    }
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    assert!(undocumented.is_empty(), "accepted but not in docs/configuration.md: {undocumented:?}");
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(unknown.is_empty(), "in docs/configuration.md but not accepted: {unknown:?}");

    // A per-room or per-instance override takes the keys of [redis] (but the overrides).
    let redis: BTreeSet<&str> = accepted.iter().filter(|(s, _)| s == "redis").map(|(_, k)| k.as_str()).collect();
    for place in ["room.\"1\"", "instance.\"127.0.0.1:1\""] {
        let probe = format!("rooms = [\"1\"]\n[redis.{place}]\nzz_probe = 1\n");
        for field in accepted_fields(&probe) {
            assert!(redis.contains(field), "[redis.{place}] accepts `{field}`, which [redis] does not document");
        }
    }
}

#[test]
fn the_documented_key_parser_reads_every_form() {
    let doc = "| `rooms` | a |\n| `controller.down_after` | b |\n| `redis.username`, `redis.password` | c |\n\
               | `[redis.room.\"<room>\"]` | d |\n| `[[hook]] events` | e |\n| `[[shard]] room.<room> = [...]` | f |\n";
    let keys: Vec<String> = documented_keys(doc).into_iter().map(|(s, k)| format!("{s}/{k}")).collect();
    assert_eq!(
        keys,
        [
            "/rooms",
            "controller/down_after",
            "hook/events",
            "redis/password",
            "redis/room",
            "redis/username",
            "shard/room"
        ]
    );
}

#[test]
fn every_alert_rule_is_documented() {
    let rules = read("dashboards/roomguard-alerts.yml");
    let doc = read("docs/metrics.md");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    assert!(alerts.len() > 5, "{alerts:?}");
    for alert in alerts {
        assert!(doc.contains(&format!("| `{alert}` |")), "alert {alert} is not in docs/metrics.md's table");
    }
}

/// Every file under src/ is named in the code map (a file, or its directory).
#[test]
fn every_source_file_is_in_the_code_map() {
    let doc = read("docs/development.md");
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { walk(&path, out) } else { out.push(path) }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().display().to_string();
        let dir = format!("{}/", Path::new(&relative).parent().unwrap().display());
        assert!(
            doc.contains(&relative) || (dir != "src/" && doc.contains(&dir)),
            "{relative} is not in docs/development.md's code map"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target)` of every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn relative_links_point_to_existing_files_and_headings() {
    let mut pages: Vec<String> =
        ["README.md", "BENCHMARKS.md", "RELIABILITY.md", "CHANGELOG.md", "dashboards/README.md"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = read(page);
        let dir = Path::new(page).parent().unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() { PathBuf::from(page) } else { dir.join(file) };
            let full = root().join(&target);
            checked += 1;
            if !full.exists() {
                broken.push(format!("{page}: {link} ({} does not exist)", target.display()));
            } else if !anchor.is_empty()
                && full.is_file()
                && !anchors(&std::fs::read_to_string(&full).unwrap()).contains(&anchor.to_string())
            {
                broken.push(format!("{page}: {link} (no heading #{anchor} in {})", target.display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_reads_links_and_anchors() {
    let text = "# Silence: offsets, `repl-ping-replica-period` and `link_silence`\n\
                see [a](docs/a.md#x-y) and [b](b.md)\n```\n[not](a link)\n```\n## A master that restarts (row 10)\n";
    assert_eq!(links(text), ["docs/a.md#x-y", "b.md"]);
    assert_eq!(
        anchors(text),
        ["silence-offsets-repl-ping-replica-period-and-link_silence", "a-master-that-restarts-row-10"]
    );
}
