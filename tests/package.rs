//! The Debian package as an operator installs it: its contents, its systemd unit (verified,
//! and rated by `systemd-analyze security`), and the installed binary checking the installed
//! config as the unprivileged user the unit runs it as.
//!
//! The package is built here with `cargo deb` (a release build: the slow part), unless
//! `ROOMGUARD_DEB` names one already built. cargo-deb is found through `ROOMGUARD_CARGO_DEB`,
//! on PATH, or where scripts/ensure-deps installs it (~/.cache/roomguard/cargo-deb); without it
//! the test says so and passes (scripts/test always has it).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use roomguard::config::Config;

/// A uid/gid in systemd's DynamicUser= range that no account uses: the unit's `DynamicUser=yes`
/// gives the service such an id, with no supplementary group.
const SERVICE_ID: u32 = 61873;

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn cargo_deb() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROOMGUARD_CARGO_DEB") {
        return Some(PathBuf::from(p));
    }
    if Command::new("cargo-deb").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("cargo-deb"));
    }
    let cached = PathBuf::from(std::env::var_os("HOME")?).join(".cache/roomguard/cargo-deb/bin/cargo-deb");
    cached.is_file().then_some(cached)
}

/// The package: `ROOMGUARD_DEB`, or built into `out` by cargo-deb (None: cargo-deb missing).
fn package(out: &Path) -> Option<PathBuf> {
    if let Some(deb) = std::env::var_os("ROOMGUARD_DEB") {
        return Some(PathBuf::from(deb));
    }
    let Some(cargo_deb) = cargo_deb() else {
        eprintln!(
            "SKIPPED package_installs_a_hardened_unit_and_a_config_the_service_user_can_check: \
             cargo-deb is not installed (scripts/ensure-deps installs it: \
             cargo install cargo-deb --locked --root ~/.cache/roomguard/cargo-deb)"
        );
        return None;
    };
    let built = Command::new(cargo_deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--quiet", "--output"])
        .arg(out)
        .output()
        .expect("run cargo-deb");
    assert!(built.status.success(), "cargo deb failed:\n{}", text(&built));
    let deb = String::from_utf8_lossy(&built.stdout).lines().last().unwrap_or_default().trim().to_string();
    assert!(deb.ends_with(".deb"), "cargo deb printed no package path:\n{}", text(&built));
    Some(PathBuf::from(deb))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn package_installs_a_hardened_unit_and_a_config_the_service_user_can_check() {
    let dir = tempfile::tempdir().unwrap();
    // Traversable by the service user, as / is.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(deb) = package(dir.path()) else { return };

    // Contents.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/roomguard",
        "./etc/roomguard/controller.toml",
        "./usr/lib/systemd/system/roomguard.service",
        "./usr/share/doc/roomguard/README.md",
        "./usr/share/doc/roomguard/CHANGELOG.md",
        "./usr/share/doc/roomguard/docs/runbook.md",
        "./usr/share/doc/roomguard/copyright",
        "./usr/share/doc/roomguard/dashboards/roomguard.json",
        "./usr/share/doc/roomguard/dashboards/roomguard-alerts.yml",
        "./usr/share/man/man1/roomguard.1.gz",
        "./usr/share/man/man1/roomguard-pause.1.gz",
        "./usr/share/bash-completion/completions/roomguard",
        "./usr/share/zsh/vendor-completions/_roomguard",
        "./usr/share/fish/vendor_completions.d/roomguard.fish",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(&format!(" {path}"))), "{path} not in the package:\n{listing}");
    }
    assert!(listing.contains("-rwxr-xr-x 0/0") && listing.contains(" ./usr/bin/roomguard"), "{listing}");
    let conffiles = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/roomguard/controller.toml", "upgrades must keep the operator's config");

    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit_path = root.join("usr/lib/systemd/system/roomguard.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(unit, include_str!("../deploy/roomguard.service"));
    for line in [
        "Type=notify",
        "WatchdogSec=10s",
        "DynamicUser=yes",
        "StateDirectory=roomguard",
        "ExecStart=/usr/bin/roomguard run --config /etc/roomguard/controller.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }

    // The packaged config keeps its state where the unit's StateDirectory= is, so that an
    // operator's CLI (which falls back to /etc/roomguard/controller.toml) uses the same file.
    let config_path = root.join("etc/roomguard/controller.toml");
    let config = Config::load(&config_path).expect("the packaged config is valid");
    assert_eq!(config.controller.state_file, Path::new("/var/lib/roomguard/state.json"));

    // `systemd-analyze verify`, on a copy whose programs are the extracted ones (it checks
    // that ExecStart's program exists).
    let installed = root.join("usr/bin/roomguard");
    let copy = dir.path().join("roomguard.service");
    std::fs::write(&copy, unit.replace("/usr/bin/roomguard", installed.to_str().unwrap())).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze");
    assert!(verify.status.success() && verify.stderr.is_empty(), "systemd-analyze verify:\n{}", text(&verify));

    // Hardening: "OK" is 3.0 or less.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze");
    let report = text(&security);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for roomguard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(score <= 3.0, "systemd-analyze security rates the unit {score} (> 3.0):\n{report}");

    // The installed binary checks the installed config as the service user (an id with no
    // account and no group, as DynamicUser= gives), with the state directory the unit's
    // StateDirectory= creates (here under the temp dir). The seed's addresses are never
    // contacted: check-config does not connect.
    let state_dir = dir.path().join("var/lib/roomguard");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::os::unix::fs::chown(&state_dir, Some(SERVICE_ID), Some(SERVICE_ID)).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = SERVICE_ID.to_string();
    let out = Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--no-new-privs"])
        .arg(&installed)
        .args(["check-config", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("ROOMGUARD_CONTROLLER__STATE_FILE", state_dir.join("state.json"))
        .output()
        .expect("setpriv");
    assert!(out.status.success(), "check-config as uid {id}:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": OK\n") && stdout.contains("room 1 primary: 192.168.99.11:6401"), "{stdout}");
    // ... and fails, naming the directory, where that user cannot write.
    let out = Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(&installed)
        .args(["check-config", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("ROOMGUARD_CONTROLLER__STATE_FILE", dir.path().join("state.json"))
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Without --config and without ./controller.toml, the CLI reads the system config.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(&installed).arg("check-config").current_dir(empty.path()).env_clear().output().unwrap();
    if !Path::new("/etc/roomguard/controller.toml").exists() {
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out).contains("/etc/roomguard/controller.toml does not exist"), "{}", text(&out));
    }
}
