//! The command line: bad input is rejected with the culprit named, exit code 2, and nothing
//! changed in Redis; `status` and `check-config` on good input.

use std::{path::Path, time::Duration};

use crate::util::*;

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const SEED: &str = include_str!("../controller.toml");

#[tokio::test]
async fn check_config_accepts_the_seed_and_prints_its_chains() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller.toml");
    let out = run(roomguard(&["check-config", "--config", path.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(
        "room 1 primary: 192.168.99.11:6401 -> 192.168.99.11:6403 -> 192.168.99.12:6401 -> 192.168.99.12:6403"
    ));
    assert!(stdout.contains(
        "room 2 primary: 192.168.99.12:6402 -> 192.168.99.12:6404 -> 192.168.99.11:6402 -> 192.168.99.11:6404"
    ));

    let mut cmd = roomguard(&["check-config", "--config", path.to_str().unwrap()]);
    cmd.env("ROOMGUARD_CONTROLLER__DOWN_AFTER", "2s");
    let out = run(cmd).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("down after 2s"), "{}", text(&out));
}

#[tokio::test]
async fn bad_configs_are_rejected_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            SEED.replace("down_after = ", "down_aftr = "),
            "unknown key `down_aftr` in [controller]; did you mean `down_after`?",
        ),
        (SEED.replace("down_after = \"1s\"", "down_after = \"soon\""), "down_after"),
        (SEED.replace("room.2 = [\"192.168.99.12:6401\"", "room.9 = [\"192.168.99.12:6401\""), "room.9"),
        (
            SEED.replace("\"192.168.99.12:6403\"", "\"192.168.99.11:6401\""),
            "instance 192.168.99.11:6401 is listed twice",
        ),
        (SEED.replace("\"192.168.99.12:6404\"", "\"192.168.99.12:64o4\""), "bad address \"192.168.99.12:64o4\""),
        (SEED.replace("listen = \"127.0.0.1:9480\"", "listen = \"everywhere\""), "http.listen"),
        (
            SEED.replace("room.2 = [\"192.168.99.12:6402\", \"192.168.99.12:6404\"]", ""),
            "has no instance in room \"2\"",
        ),
    ];
    for (i, (body, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = run(roomguard(&["check-config", "--config", path.to_str().unwrap()])).await;
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "error should name {needle:?}: {err}");
        assert!(err.contains(&format!("bad-{i}.toml")), "error should name the file: {err}");
    }

    let out = run(roomguard(&["check-config", "--config", "/nonexistent/roomguard.toml"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("config file /nonexistent/roomguard.toml does not exist"));

    let path = dir.path().join("good.toml");
    std::fs::write(&path, SEED).unwrap();
    let mut cmd = roomguard(&["check-config", "--config", path.to_str().unwrap()]);
    cmd.env("ROOMGUARD_CONTROLLER__TIMEOUT", "fast");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out);
    assert!(err.to_lowercase().contains("controller.timeout") && err.contains("ROOMGUARD_"), "{err}");

    // A misspelt variable is named whole, with the key probably meant.
    let mut cmd = roomguard(&["check-config", "--config", path.to_str().unwrap()]);
    cmd.env("ROOMGUARD_CONTROLER__DOWN_AFTER", "2s");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: environment variable ROOMGUARD_CONTROLER__DOWN_AFTER: unknown key `controler` at the top level; \
         did you mean `controller`?"
    );

    // The CLI's own variables are not configuration: a secrets file holding the admin token
    // for `failover --token` must not stop `check-config` (or the service).
    let mut cmd = roomguard(&["check-config", "--config", path.to_str().unwrap()]);
    cmd.env("ROOMGUARD_ADMIN_TOKEN", "a-long-enough-admin-token").env("ROOMGUARD_TEST_LOG", "debug");
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_failover_input_changes_nothing_in_redis() {
    let lab = lab(21030).await;
    let config = config_path(&lab);
    let config = config.to_str().unwrap();
    let before = roomguard::cli::snapshot(&lab.config).await.unwrap();
    assert!(before.healthy, "{}", before.render());

    let out = run(roomguard(&["failover", "--room", "9", "--config", config])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown room \"9\": the configured rooms are \"1\", \"2\""), "{}", text(&out));

    // Room 1 unreachable from here while room 2 still hears it (simulated by a hang shorter
    // than link_silence): a forced failover must refuse without --force.
    for id in lab.room(0) {
        lab.servers[id].hang();
    }
    let out = run(roomguard(&["failover", "--room", "2", "--config", config])).await;
    for id in lab.room(0) {
        lab.servers[id].resume();
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("still hears"), "{}", text(&out));

    assert!(!lab.config.controller.state_file.exists(), "no state written by refused commands");
    let seed: Vec<Vec<String>> =
        [21031, 21032].iter().map(|&h| vec![at(1, h), at(1, h + 2), at(2, h), at(2, h + 2)]).collect();
    wait_chains(&seed, Duration::from_secs(5), "").await;
    let after = roomguard::cli::snapshot(&lab.config).await.unwrap();
    assert!(after.healthy, "{}", after.render());
    assert_no_replicaof(&lab, "refused commands sent REPLICAOF").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_every_instance_and_exits_non_zero_when_degraded() {
    let mut lab = lab(21040).await;
    let config = config_path(&lab);
    let out = run(roomguard(&["status", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for i in &lab.topology().instances {
        assert!(stdout.contains(&i.addr.to_string()), "{stdout}");
    }
    assert!(stdout.contains("HEALTHY: primary room 1; room 1 up, room 2 up"), "{stdout}");

    lab.server(&at(2, 21043)).kill();
    let out = run(roomguard(&["status", "--config", config.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DEGRADED"));

    let out = run(roomguard(&["status", "--json", "--config", config.to_str().unwrap()])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert_eq!(json["primary_room"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_busy_http_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let body = SEED.replace("127.0.0.1:9480", &busy.local_addr().unwrap().to_string());
    std::fs::write(&path, body).unwrap();
    let out = run(roomguard(&["run", "--config", path.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot listen on"), "{}", text(&out));
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -TERM` (the way systemd stops the service).
fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// True when a `SET` on `a` gets no answer within 200 ms: `CLIENT PAUSE WRITE` is on. (The
/// write runs when the pause ends.)
async fn writes_paused(a: &str) -> bool {
    let mut con = connect(a).await;
    let mut set = redis::cmd("SET");
    set.arg("paused-probe").arg(1);
    tokio::time::timeout(Duration::from_millis(200), set.query_async::<()>(&mut con)).await.is_err()
}

/// Waits up to `timeout` for the process to exit.
async fn exit_within(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Graceful shutdown: the first SIGTERM lets an action in flight finish (here a manual failover
/// through the admin API, held up by a room-2 head that cannot catch up) and then exits 0; a
/// second SIGTERM aborts at once with exit code 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sigterm_finishes_the_action_in_flight_a_second_aborts() {
    use roomguard::lab::{Lab, LabSpec};
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", port(21239)).parse().unwrap();
    deadline();
    clean_stale_iptables(21230);
    let spec = LabSpec { base_port: port(21230), http_listen: http.to_string(), ..LabSpec::default() };
    let lab = Lab::start(&spec).await.unwrap();
    let token = "shutdown-test-token-0123456789";
    let config = lab.dir().join("controller.toml");
    let toml = spec.config_toml().replace("[http]\n", &format!("[http]\nadmin_token = \"{token}\"\n"));
    std::fs::write(&config, toml).unwrap();
    // Room 2's head of the first shard stops receiving from room 1 (both directions dropped),
    // then the master takes writes: a graceful failover to room 2 waits `switchover_timeout`
    // (5 s) for it to catch up, then gives up, unpauses and changes nothing.
    let replica_port = port(21233).to_string();
    let rules = [
        IptablesRule::add(
            21230,
            "filter",
            &["-s", "127.0.0.11", "-d", "127.0.0.12", "-p", "tcp", "--sport", &replica_port, "-j", "DROP"],
        ),
        IptablesRule::add(
            21230,
            "filter",
            &["-s", "127.0.0.12", "-d", "127.0.0.11", "-p", "tcp", "--dport", &replica_port, "-j", "DROP"],
        ),
    ];

    let mut con = connect(&at(1, 21231)).await;
    let () = redis::cmd("SET").arg("behind").arg(1).query_async(&mut con).await.unwrap();
    // First run: aborted by the second signal mid-switchover (its CLIENT PAUSE stays until it
    // expires). Second run: the first signal alone lets the failover run to its end.
    for abort in [true, false] {
        let cmd = roomguard_dying_with_us(&["run", "--config", config.to_str().unwrap()]);
        let mut running = Running(roomguard::lab::spawn_child(cmd).unwrap());
        let child = &mut running.0;
        assert!(
            wait_until(Duration::from_secs(5), || async {
                tokio::net::TcpStream::connect(http).await.is_ok() && http_get(http, "/healthz").await.0 == 200
            })
            .await,
            "controller not healthy"
        );
        let request = tokio::spawn(async move { http_post(http, "/failover?room=2", Some(token)).await });
        // The failover is in flight once room 1's master pauses writes (it then waits up to
        // `switchover_timeout`, 5 s, for the room-2 head that cannot catch up).
        assert!(
            wait_until(Duration::from_secs(5), || async { writes_paused(&at(1, 21231)).await }).await,
            "the failover never paused room 1's writes"
        );
        sigterm(child);
        assert!(exit_within(child, Duration::from_secs(1)).await.is_none(), "exited with a failover in flight");
        if abort {
            sigterm(child);
            let status = exit_within(child, Duration::from_secs(2)).await.expect("second signal did not abort");
            assert_eq!(status.code(), Some(130));
            request.abort();
        } else {
            let status = exit_within(child, Duration::from_secs(15)).await.expect("never exited");
            assert!(status.success(), "{status:?}");
            let (code, body) = request.await.unwrap();
            assert_eq!(code, 409, "the failover ran to its end and failed cleanly: {body}");
            assert!(body.contains("did not catch up"), "{body}");
        }
    }
    // Whatever was interrupted, room 1 still holds the masters and takes writes (the second
    // run's unpause also lifted the first run's pause).
    assert!(is_master(&at(1, 21231)).await && is_replica(&at(2, 21231)).await);
    assert_no_replicaof(&lab, "a failover that gave up changed nothing").await;
    let mut con = connect(&at(1, 21231)).await;
    let () = redis::cmd("SET").arg("after").arg(1).query_async(&mut con).await.unwrap();
    drop(rules);
}

/// Issue 12, item 4: `check-config` fails, naming the path, when the state file cannot be
/// written where it is configured (a controller there could never act on a decision).
#[tokio::test]
async fn check_config_rejects_a_state_file_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("controller.toml");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    let cases = [
        (missing.join("state.json"), format!("its directory {} does not exist", missing.display())),
        // A parent that is a regular file: root cannot write there either.
        (file.join("state.json"), format!("its directory {} is not a directory", file.display())),
    ];
    for (state, expected) in cases {
        std::fs::write(&config, SEED.replace("\"roomguard-state.json\"", &format!("\"{}\"", state.display()))).unwrap();
        let out = run(roomguard(&["check-config", "--config", config.to_str().unwrap()])).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("state file {}", state.display())), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
    // A state file that exists but does not match the config is caught too.
    std::fs::write(&config, SEED).unwrap();
    std::fs::write(dir.path().join("roomguard-state.json"), "{").unwrap();
    let out = run(roomguard(&["check-config", "--config", config.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not valid roomguard state"), "{}", text(&out));
    std::fs::remove_file(dir.path().join("roomguard-state.json")).unwrap();
    let out = run(roomguard(&["check-config", "--config", config.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", text(&out));
}

/// `roomguard completions SHELL` and `roomguard man` print what the package ships, and the
/// shipped copies (deploy/completions, deploy/man: scripts/generate-docs) are current.
#[tokio::test]
async fn completions_and_man_pages_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale = "out of date: run scripts/generate-docs and commit the result";
    for (shell, file, needle) in [
        ("bash", "roomguard.bash", "roomguard__subcmd__pause"),
        ("zsh", "_roomguard", "'--reason=[Why"),
        ("fish", "roomguard.fish", "__fish_roomguard_needs_command"),
    ] {
        let out = run(roomguard(&["completions", shell])).await;
        assert!(out.status.success(), "{}", text(&out));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(printed.contains(needle) && printed.contains("resume"), "{shell}: {printed}");
        let shipped = std::fs::read_to_string(root.join("deploy/completions").join(file)).unwrap();
        assert!(shipped == printed, "deploy/completions/{file} is {stale}");
    }
    let out = run(roomguard(&["completions", "tcsh"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid value 'tcsh'"), "{}", text(&out));

    let out = run(roomguard(&["man"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with(".ie") && page.contains(".TH roomguard 1") && page.contains("pause"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = run(roomguard(&["man", "--out-dir", dir.path().to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", text(&out));
    let names = |d: &std::path::Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let generated = names(dir.path());
    assert!(generated.contains(&"roomguard-pause.1".to_string()), "{generated:?}");
    assert_eq!(generated, names(&root.join("deploy/man")), "deploy/man is {stale}");
    for name in generated {
        let fresh = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        assert!(fresh == std::fs::read_to_string(root.join("deploy/man").join(&name)).unwrap(), "{name} is {stale}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("roomguard.1")).unwrap(), page);
}

/// Issue 12: `status` shows the failovers the loop would hold (here: `auto_failover = false`
/// and room 1 lost), as `/topology` does; it once showed only the cooldowns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_held_failover() {
    let mut lab = lab(28520).await;
    let config = lab.dir().join("auto-off.toml");
    let toml = std::fs::read_to_string(config_path(&lab)).unwrap();
    assert!(toml.contains("cooldown = \"10s\""), "{toml}");
    std::fs::write(&config, toml.replace("cooldown = \"10s\"", "cooldown = \"10s\"\nauto_failover = false")).unwrap();
    let config = config.to_str().unwrap();
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    let out = run(roomguard(&["status", "--config", config])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for head in [28521, 28522] {
        let line = format!("shard {}: room 1 is lost but not failed over: auto_failover is off", shard(head));
        assert!(stdout.contains(&line), "{line}\n{}", text(&out));
    }
    let out = run(roomguard(&["status", "--json", "--config", config])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["held"].as_array().map(Vec::len), Some(2), "{json}");
}

/// `check-config` run by a user who cannot write in the state file's directory (here
/// `nobody`, in a directory owned by root) fails, naming the directory and why; run as root
/// on the same files it passes, so the uid is what fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_a_state_dir_this_user_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    // In /tmp, open to every user: the checkout may lie in a directory `nobody` cannot enter.
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("roomguard");
    std::fs::copy(env!("CARGO_BIN_EXE_roomguard"), &binary).unwrap();
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, SEED).unwrap();
    let check = |as_nobody: bool| {
        let mut cmd = std::process::Command::new(if as_nobody { "setpriv" } else { binary.to_str().unwrap() });
        if as_nobody {
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(&binary);
        }
        cmd.args(["check-config", "--config"])
            .arg(&config)
            .env_remove("ROOMGUARD_CONFIG")
            .env("ROOMGUARD_CONTROLLER__STATE_FILE", state_dir.join("state.json"));
        run(cmd)
    };
    let out = check(false).await;
    assert!(out.status.success(), "as root: {}", text(&out));
    let out = check(true).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let expected = format!("its directory {} is not writable by this user", state_dir.display());
    assert!(text(&out).contains(&expected), "{expected}\n{}", text(&out));
}
