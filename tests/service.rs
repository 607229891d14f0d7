//! `roomguard run` as systemd runs it: the notification protocol (`Type=notify`,
//! `WatchdogSec=`) on a socket of the test's own, and signals (SIGHUP reloads, never kills).

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use roomguard::lab::{Lab, LabSpec};

use crate::util::*;

/// `roomguard run` with its stderr in `<config>.log`; killed when dropped.
struct Service {
    child: Child,
    log: std::path::PathBuf,
}

impl Service {
    /// `cli_log`: `ROOMGUARD_LOG` (None: unset, the config's `controller.log` applies).
    fn start(config: &Path, cli_log: Option<&str>, env: &[(&str, &str)]) -> Service {
        let log = config.with_extension("log");
        let mut cmd = roomguard(&["run", "--config", config.to_str().unwrap()]);
        match cli_log {
            Some(filter) => cmd.env("ROOMGUARD_LOG", filter),
            None => cmd.env_remove("ROOMGUARD_LOG"),
        };
        let child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Service { child, log }
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The datagrams received on `socket` within `timeout`, until one equals `until`.
fn receive_until(socket: &UnixDatagram, until: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = socket.recv(&mut buf) else { break };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            got.push(line.to_string());
        }
        if got.iter().any(|l| l == until) {
            break;
        }
    }
    got
}

/// `Type=notify`: READY=1 once the first round is done, WATCHDOG=1 while the loop runs (here
/// every half of a 1 s watchdog), STOPPING=1 on SIGTERM, then a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_and_stopping() {
    let spec =
        LabSpec { base_port: port(28000), http_listen: format!("127.0.0.1:{}", port(28009)), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.unwrap();
    let config = lab.dir().join("service.toml");
    std::fs::write(&config, spec.config_toml()).unwrap();
    let socket_path = lab.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut service = Service::start(
        &config,
        Some("info"),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")],
    );

    let got = tokio::task::spawn_blocking({
        let socket = socket.try_clone().unwrap();
        move || receive_until(&socket, "READY=1", Duration::from_secs(15))
    })
    .await
    .unwrap();
    assert!(got.iter().any(|l| l == "READY=1"), "no READY=1 (got {got:?}); log:\n{}", service.log_text());
    let (status, body) = http_get(format!("127.0.0.1:{}", port(28009)).parse().unwrap(), "/healthz").await;
    assert_eq!(status, 200, "READY=1 comes after the first round: {body}");

    // Pings keep coming: at least three in two seconds (one per half period).
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let got = receive_until(&socket, "WATCHDOG=1", Duration::from_secs(1));
        pings += got.iter().filter(|l| *l == "WATCHDOG=1").count();
    }
    assert!(pings >= 3, "{pings} watchdog pings in 2 s; log:\n{}", service.log_text());

    service.signal(Signal::SIGTERM);
    let got = receive_until(&socket, "STOPPING=1", Duration::from_secs(10));
    assert!(got.iter().any(|l| l == "STOPPING=1"), "no STOPPING=1 (got {got:?})");
    assert_eq!(service.wait_exit(Duration::from_secs(10)), Some(0), "log:\n{}", service.log_text());
    assert!(!service.running());
    let log = service.log_text();
    assert!(log.contains("roomguard controller starting"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{log}");
}

/// A bad log filter is an error naming it (exit 2), not a silent `info`.
#[tokio::test]
async fn bad_log_filter_is_rejected() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller.toml");
    for (filter, needle) in [("inf", "`inf` is not a level"), ("roomguard=verbose", "roomguard=verbose")] {
        let mut cmd = roomguard(&["check-config", "--config", config.to_str().unwrap()]);
        cmd.env("ROOMGUARD_LOG", filter);
        let out = run(cmd).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{filter}: {err}");
        assert!(err.contains("bad log filter") && err.contains(needle), "{err}");
    }
    let out =
        run(roomguard(&["--log", "roomguard=debug,warn", "check-config", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// SIGHUP reloads the log filter, hooks, cooldown and auto_failover; refuses (and says which
/// keys) when something only a restart applies changed; logs an invalid file; never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_what_it_safely_can_and_never_exits() {
    let spec =
        LabSpec { base_port: port(28010), http_listen: format!("127.0.0.1:{}", port(28019)), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.unwrap();
    let http = format!("127.0.0.1:{}", port(28019)).parse().unwrap();
    let config = lab.dir().join("service.toml");
    let base = spec.config_toml();
    assert!(base.contains("[controller]\n"), "{base}");
    let with = |extra: &str| base.replace("[controller]\n", &format!("[controller]\n{extra}\n"));
    std::fs::write(&config, with("log = \"info\"")).unwrap();
    let mut service = Service::start(&config, None, &[]);
    // The filter comes from the file: no --log, no ROOMGUARD_LOG.
    let metric = |name: &'static str, filters: &'static [&'static str]| async move {
        metric_value(&http_get(http, "/metrics").await.1, name, filters)
    };
    assert!(
        wait_until(Duration::from_secs(10), || async { tokio::net::TcpStream::connect(http).await.is_ok() }).await,
        "never listened; log:\n{}",
        service.log_text()
    );
    assert!(wait_until(Duration::from_secs(10), || async { metric("roomguard_rounds_total", &[]).await > 0.0 }).await);
    let hangup = |service: &mut Service, needle: &str| {
        let before = service.log_text().len();
        service.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !service.log_text()[before..].contains(needle) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = service.log_text()[before..].to_string();
        assert!(log.contains(needle), "after SIGHUP, expected {needle:?} in:\n{log}");
        assert!(service.running(), "SIGHUP stopped the process:\n{}", service.log_text());
        log
    };

    // Every connection of the controller is named after it and its host.
    let name = format!("name={}", roomguard::probe::client_name());
    assert!(name.starts_with("name=roomguard-"), "{name}");
    // (A plain redis-rs client: probe::connect would name this connection too.)
    let client = redis::Client::open(format!("redis://127.0.0.11:{}", port(28011))).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut con).await.unwrap();
    assert!(list.contains(&name), "no {name} in CLIENT LIST:\n{list}");

    // Nothing changed.
    hangup(&mut service, "SIGHUP: configuration reloaded: nothing changed");

    // What can change: applied, and said.
    let hook = "[[hook]]\nevents = [\"failover\"]\ncommand = [\"/bin/true\"]\n";
    let reloadable = format!(
        "{}\n{hook}",
        with("log = \"roomguard=debug\"").replace("cooldown = \"10s\"", "cooldown = \"7m\"\nauto_failover = false")
    );
    assert!(reloadable.contains("cooldown = \"7m\""), "the lab config changed: {reloadable}");
    std::fs::write(&config, &reloadable).unwrap();
    let log = hangup(
        &mut service,
        "SIGHUP: configuration reloaded: auto_failover on -> off, cooldown 10s -> 7m, hooks (0 -> 1), log info -> roomguard=debug",
    );
    // The new filter is in effect (a debug line right after it was set), and the new hook's
    // series exist.
    assert!(log.contains("SIGHUP: settings now in effect"), "{log}");
    assert_eq!(metric("roomguard_hook_runs_total", &["event=\"failover\"", "outcome=\"failed\""]).await, 0.0);
    assert!(
        http_get(http, "/metrics")
            .await
            .1
            .contains("roomguard_hook_runs_total{event=\"failover\",outcome=\"failed\"} 0")
    );

    // What cannot: refused, named, nothing applied.
    let moved = reloadable
        .replace("cooldown = \"7m\"", "cooldown = \"1m\"")
        .replace(&format!(":{}", port(28013)), &format!(":{}", port(28015)));
    assert_ne!(moved, reloadable);
    std::fs::write(&config, &moved).unwrap();
    let log = hangup(&mut service, "SIGHUP: not reloaded: [[shard]]");
    assert!(log.contains("nothing was applied") && !log.contains("cooldown 7m -> 1m"), "{log}");

    // An invalid file: logged, nothing applied.
    std::fs::write(&config, reloadable.replace("cooldown = \"7m\"", "cooldown = \"soon\"")).unwrap();
    let log = hangup(&mut service, "SIGHUP: the configuration is invalid; nothing was reloaded");
    assert!(log.contains("cooldown"), "{log}");

    std::fs::write(&config, &reloadable).unwrap();
    hangup(&mut service, "SIGHUP: configuration reloaded: nothing changed");
}

/// `check-config` (the unit's ExecStartPre) fails on a hook program that does not exist or is
/// not executable, naming the hook.
#[tokio::test]
async fn check_config_rejects_a_hook_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let seed = include_str!("../controller.toml").replace("roomguard-state.json", "state.json");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let config = dir.path().join("controller.toml");
    let with_hook = |program: &str| {
        std::fs::write(&config, format!("{seed}\n[[hook]]\nevents = [\"failover\"]\ncommand = [\"{program}\"]\n"))
            .unwrap();
        roomguard(&["check-config", "--config", config.to_str().unwrap()])
    };
    for (program, needle) in [
        ("./hook.sh", "is not an executable file"),
        ("/nonexistent/hook.sh", "\"/nonexistent/hook.sh\""),
        ("no-such-program-roomguard", "not an executable found in PATH"),
    ] {
        let out = run(with_hook(program)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program}: {err}");
        assert!(err.contains("[[hook]] number 1") && err.contains(needle), "{program}: {err}");
        assert!(err.contains("controller.toml"), "names the file: {err}");
    }
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run(with_hook("./hook.sh")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `roomguard --version` and `roomguard_build_info` carry the git revision built.
#[tokio::test]
async fn version_carries_the_git_revision() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // The checkout's HEAD (cargo rebuilds when it moves); without git, what build.rs found.
    let expected = head.or(std::env::var("RG_GIT_REVISION").ok()).unwrap_or_else(|| "unknown".into());
    let out = run(roomguard(&["--version"])).await;
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(version.trim(), format!("roomguard {} ({expected})", env!("CARGO_PKG_VERSION")));
    let metrics = roomguard::metrics::Metrics::new(&roomguard::topology::Topology::new(vec!["1".into()], vec![]));
    let line = format!("roomguard_build_info{{version=\"{}\",revision=\"{expected}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(metrics.encode().contains(&line), "no {line} in:\n{}", metrics.encode());
}

/// Without `--config`: `./controller.toml` when it exists, else the package's
/// `/etc/roomguard/controller.toml` (which the service uses: the same state file).
#[tokio::test]
async fn config_defaults_to_the_local_file_then_the_system_one() {
    let dir = tempfile::tempdir().unwrap();
    let seed = include_str!("../controller.toml");
    let mut cmd = roomguard(&["check-config"]);
    cmd.current_dir(dir.path());
    let out = run(cmd).await;
    if !Path::new("/etc/roomguard/controller.toml").exists() {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("config file /etc/roomguard/controller.toml does not exist"), "{err}");
    }
    std::fs::write(dir.path().join("controller.toml"), seed).unwrap();
    let mut cmd = roomguard(&["check-config"]);
    cmd.current_dir(dir.path());
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("controller.toml: OK"));
}
