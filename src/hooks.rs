//! Hooks: external commands run on the controller's events (`[[hook]]`), for what roomguard
//! does not do itself — rewriting a proxy's configuration, paging someone, updating DNS.
//!
//! A hook runs *after* the action, from the event stream ([`crate::events`]), on its own
//! task: it never blocks or delays a promotion. Its details are in environment variables
//! (`RG_EVENT`, `RG_SHARD`, `RG_ROOM`, `RG_OLD_MASTER`, `RG_NEW_MASTER`, `RG_TRIGGER`,
//! `RG_INSTANCE`); the controller's own `ROOMGUARD_*` variables (passwords, the admin token)
//! are removed. A hook's runs are queued and happen one at a time in event order, so two
//! quick switchovers cannot race. A hook that outlives its `timeout` is killed with its
//! whole process group. Every run's outcome is logged and counted in
//! `roomguard_hook_runs_total{event,outcome}`.

use std::{
    ffi::OsString,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::{broadcast, mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

/// The `[[hook]]` settings are the configuration's; they are known by this name too.
pub use crate::config::HookSettings;
use crate::{events::Event, metrics::Metrics, reload::Live};

/// Checks that a hook's program exists and is executable (a name without `/` is looked up in
/// `PATH`, as running it will): for `check-config`, which the unit runs before starting.
/// `number` is 1-based, for messages.
pub fn check_program(hook: &HookSettings, number: usize) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let program = &hook.command[0];
    let executable =
        |path: &std::path::Path| std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let culprit = format!("[[hook]] number {number}: program \"{program}\"");
    if program.contains('/') {
        return match executable(std::path::Path::new(program)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{culprit} is not an executable file (chmod +x?)")),
            Err(e) => Err(format!("{culprit}: {e}")),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program)).unwrap_or(false)) {
        Ok(())
    } else {
        Err(format!("{culprit} is not an executable found in PATH ({})", path.to_string_lossy()))
    }
}

/// The environment a hook gets for an event.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![("RG_EVENT", event.hook_name().unwrap_or_default().to_string())];
    match event {
        Event::MasterSwitched { shard, old, new, room, trigger, epoch, .. } => env.extend([
            ("RG_EPOCH", epoch.to_string()),
            ("RG_SHARD", shard.clone()),
            ("RG_ROOM", room.clone()),
            ("RG_OLD_MASTER", old.to_string()),
            ("RG_NEW_MASTER", new.to_string()),
            ("RG_TRIGGER", trigger.label().to_string()),
        ]),
        Event::Demoted { shard, room, instance, master, .. } => env.extend([
            ("RG_SHARD", shard.clone()),
            ("RG_ROOM", room.clone()),
            ("RG_INSTANCE", instance.to_string()),
            ("RG_NEW_MASTER", master.to_string()),
        ]),
        Event::RoomLost { room } | Event::RoomBack { room } | Event::CutOff { room } => {
            env.push(("RG_ROOM", room.clone()))
        }
        Event::SubjectivelyDown { .. } | Event::ObjectivelyDown { .. } => {}
    }
    env
}

/// Runs queued per hook before further runs of it are dropped (and counted `dropped`).
pub const QUEUE: usize = 64;
/// The end of a failing hook's stderr that is kept (and logged).
pub const STDERR_TAIL: usize = 4 * 1024;
/// After a hook exits, how long its stderr may stay open (a process it left running in the
/// background may hold it) before what was read is logged and the rest ignored.
const STDERR_GRACE: Duration = Duration::from_millis(200);

type Run = (&'static str, Vec<(&'static str, String)>);

/// Runs the hooks for every event until `token` is cancelled. Each hook has one queue and
/// one worker task (on `tracker`, so shutdown waits for the run in progress, bounded by its
/// timeout): a hook's runs happen one at a time, in event order — two quick switchovers
/// never race to rewrite the same proxy configuration. Queuing never waits: when a hook's
/// queue is full the run is dropped, logged and counted.
///
/// The hooks are `settings`' (SIGHUP replaces them, [`crate::reload`]): on a change the old
/// workers finish the runs already queued for them and end, and new workers start.
///
/// A worker that ends before `token` is cancelled (a panic) ends the runner too, with the
/// same panic: the supervisor ([`crate::daemon`]) then stops the process, instead of that
/// hook silently never running again.
pub async fn run(
    mut settings: watch::Receiver<Live>,
    mut events: broadcast::Receiver<Event>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    let mut watching = true;
    loop {
        let hooks = settings.borrow_and_update().hooks.clone();
        let mut workers = futures::stream::FuturesUnordered::new();
        let queues: Vec<(HookSettings, mpsc::Sender<Run>)> = hooks
            .iter()
            .map(|hook| {
                let (tx, rx) = mpsc::channel(QUEUE);
                workers.push(tracker.spawn(worker(hook.clone(), rx, metrics.clone(), token.clone())));
                (hook.clone(), tx)
            })
            .collect();
        loop {
            let event = tokio::select! {
                _ = token.cancelled() => return,
                Some(ended) = futures::StreamExt::next(&mut workers) => {
                    if token.is_cancelled() {
                        return;
                    }
                    match ended {
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        _ => {
                            warn!("hooks: a hook worker ended early; stopping the hook runner");
                            return;
                        }
                    }
                }
                changed = settings.changed(), if watching => {
                    match changed {
                        Ok(()) if settings.borrow().hooks != hooks => break,
                        Ok(()) => continue,
                        // The sender is gone (tests): the hooks can no longer change.
                        Err(_) => {
                            watching = false;
                            continue;
                        }
                    }
                }
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "hooks: {n} events were missed (too many at once); their hooks did not run");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(name) = event.hook_name() else { continue };
            for (hook, queue) in queues.iter().filter(|(h, _)| h.events.iter().any(|e| e == name)) {
                if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send((name, environment(&event))) {
                    warn!(hook = %hook.command[0], event = name, "hook: {QUEUE} runs are already waiting; this run is dropped");
                    metrics.record_hook(name, "dropped");
                }
            }
        }
        // Dropping `queues` lets the old workers end once their queued runs are done (they
        // are on `tracker`: shutdown still waits for them); `workers` is no longer watched.
        info!(hooks = settings.borrow().hooks.len(), "hooks: reloaded");
    }
}

/// One hook's runs, one at a time, until `token` is cancelled (the run in progress finishes).
async fn worker(hook: HookSettings, mut runs: mpsc::Receiver<Run>, metrics: Arc<Metrics>, token: CancellationToken) {
    loop {
        let run = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            run = runs.recv() => run,
        };
        let Some((name, env)) = run else { return };
        let outcome = run_one(&hook, &env).await;
        metrics.record_hook(name, outcome);
    }
}

/// The environment of a hook: the controller's, without any `ROOMGUARD_*` variable (they
/// hold the Redis, admin and Sentinel passwords when configured by environment, and would be
/// read as configuration overrides by a hook that runs `roomguard`), plus the event's.
pub fn hook_environment(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    event: &[(&'static str, String)],
) -> Vec<(OsString, OsString)> {
    parent
        .into_iter()
        .filter(|(k, _)| !k.as_encoded_bytes().starts_with(b"ROOMGUARD_"))
        // systemd's notification variables are the controller's, not a hook's.
        .filter(|(k, _)| !matches!(k.to_str(), Some("NOTIFY_SOCKET" | "WATCHDOG_USEC" | "WATCHDOG_PID")))
        .chain(event.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
        .collect()
}

/// Appends `chunk` to `tail`, keeping its last `keep` bytes.
fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8], keep: usize) {
    tail.extend_from_slice(chunk);
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
}

/// Reads `from` to its end, keeping the last `keep` bytes in `tail`.
async fn read_tail(mut from: impl AsyncRead + Unpin, tail: Arc<Mutex<Vec<u8>>>, keep: usize) {
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut chunk).await {
        keep_tail(&mut tail.lock().unwrap_or_else(|e| e.into_inner()), &chunk[..n], keep);
    }
}

/// Runs one hook; returns its outcome label: `ok`, `failed` (non-zero exit), `timeout`
/// (killed), `error` (could not be started). Its stdout is discarded and the end of its
/// stderr kept; the run ends when the hook's process exits, even if something it started
/// in the background still runs (and holds its stderr).
async fn run_one(hook: &HookSettings, env: &[(&'static str, String)]) -> &'static str {
    let program = &hook.command[0];
    let event = &env[0].1;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&hook.command[1..])
        .env_clear()
        .envs(hook_environment(std::env::vars_os(), env))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(hook = %program, event, error = %e, "hook could not be started");
            return "error";
        }
    };
    let pid = child.id();
    let tail = Arc::new(Mutex::new(Vec::new()));
    let reader = child.stderr.take().map(|stderr| tokio::spawn(read_tail(stderr, tail.clone(), STDERR_TAIL)));
    let waited = tokio::time::timeout(hook.timeout, child.wait()).await;
    if let Some(mut reader) = reader {
        let finished = waited.is_ok() && tokio::time::timeout(STDERR_GRACE, &mut reader).await.is_ok();
        if !finished {
            reader.abort();
        }
    }
    match waited {
        Ok(Ok(status)) if status.success() => {
            info!(hook = %program, event, "hook ran");
            "ok"
        }
        Ok(Ok(status)) => {
            let stderr = String::from_utf8_lossy(&tail.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
            let end: String = stderr.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
            warn!(hook = %program, event, %status, stderr = %end.trim(), "hook failed");
            "failed"
        }
        Ok(Err(e)) => {
            warn!(hook = %program, event, error = %e, "hook: waiting for it failed");
            "error"
        }
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            warn!(hook = %program, event, timeout = ?hook.timeout, "hook timed out and was killed");
            "timeout"
        }
    }
}

/// SIGKILL to the hook's process group (its id is the hook's pid: `process_group(0)`), by a
/// system call: no `kill` program looked up in `PATH` at the moment it is needed.
fn kill_group(pid: u32) {
    use nix::{sys::signal, unistd::Pid};
    if let Err(e) = signal::killpg(Pid::from_raw(pid as i32), signal::Signal::SIGKILL) {
        warn!(pid, error = %e, "hook: killing its process group failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{state::Trigger, topology::Addr};

    #[test]
    fn programs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hook.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let of = |program: &str| HookSettings {
            command: vec![program.into()],
            ..hook(&["x"], crate::config::DEFAULT_HOOK_TIMEOUT)
        };
        let e = check_program(&of(script.to_str().unwrap()), 2).unwrap_err();
        assert!(e.contains("[[hook]] number 2") && e.contains("not an executable file"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_program(&of(script.to_str().unwrap()), 1).unwrap();
        let e = check_program(&of("/nonexistent/hook.sh"), 1).unwrap_err();
        assert!(e.contains("\"/nonexistent/hook.sh\"") && e.contains("No such file"), "{e}");
        assert!(check_program(&of(dir.path().to_str().unwrap()), 1).is_err(), "a directory");
        check_program(&of("sh"), 1).unwrap();
        let e = check_program(&of("no-such-program-roomguard"), 3).unwrap_err();
        assert!(e.contains("not an executable found in PATH"), "{e}");
    }

    /// Hooks that never change (the sender is dropped at once).
    fn live(hooks: Vec<HookSettings>) -> watch::Receiver<Live> {
        let settings = Live { auto_failover: true, cooldown: Duration::ZERO, hooks, log: None };
        watch::channel(settings).1
    }

    fn hook(command: &[&str], timeout: Duration) -> HookSettings {
        HookSettings {
            events: vec!["switchover".into(), "failover".into()],
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout,
        }
    }

    fn switched(new: u16) -> Event {
        Event::MasterSwitched {
            shard: "s1".into(),
            old: Addr::new("10.0.0.1", 6401),
            new: Addr::new("10.0.0.2", new),
            room: "2".into(),
            trigger: Trigger::Manual,
            replicas: vec![],
            reconfigured: vec![],
            epoch: 7,
        }
    }

    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..400 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_hooks_runs_happen_in_event_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // The first run is the slow one: run concurrently, the second would write first.
        let script = format!("case $RG_NEW_MASTER in *:1) sleep 0.5;; esac; echo $RG_NEW_MASTER >> {}", log.display());
        let metrics = Arc::new(Metrics::new(&crate::topology::fixtures::seed()));
        let (tx, rx) = broadcast::channel(16);
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let runner = tokio::spawn(run(
            live(vec![hook(&["/bin/sh", "-c", &script], Duration::from_secs(20))]),
            rx,
            metrics,
            tracker.clone(),
            token.clone(),
        ));
        for new in [1, 2, 3] {
            tx.send(switched(new)).unwrap();
        }
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(eventually(|| read().lines().count() == 3).await, "{}", read());
        assert_eq!(read(), "10.0.0.2:1\n10.0.0.2:2\n10.0.0.2:3\n");
        token.cancel();
        runner.await.unwrap();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_runs_without_blocking() {
        let metrics = Arc::new(Metrics::new(&crate::topology::fixtures::seed()));
        let (tx, rx) = broadcast::channel(4 * QUEUE);
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let runner = tokio::spawn(run(
            live(vec![hook(&["sleep", "30"], Duration::from_secs(60))]),
            rx,
            metrics.clone(),
            tracker.clone(),
            token.clone(),
        ));
        // One run at a time, QUEUE waiting: of QUEUE + 10 at least 9 are dropped.
        for _ in 0..QUEUE + 10 {
            tx.send(switched(1)).unwrap();
        }
        let dropped = || {
            metrics.encode().lines().any(|l| {
                l.starts_with("roomguard_hook_runs_total{")
                    && l.contains("outcome=\"dropped\"")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 9.0)
            })
        };
        assert!(eventually(dropped).await, "{}", metrics.encode());
        token.cancel();
        runner.await.unwrap();
    }

    #[tokio::test]
    async fn a_hook_that_leaves_a_process_in_the_background_is_done_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // Its background child outlives the timeout and holds stderr: the hook still exited.
        let script = format!("sleep 15 & echo $! > {}; echo started >&2; exit 0", pid_file.display());
        let h = hook(&["/bin/sh", "-c", &script], Duration::from_secs(5));
        assert_eq!(run_one(&h, &environment(&switched(1))).await, "ok");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        // A failing hook with much stderr: failed, and only the end of it kept.
        let h = hook(&["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x >&2; exit 3"], Duration::from_secs(20));
        assert_eq!(run_one(&h, &environment(&switched(1))).await, "failed");
    }

    #[test]
    fn stderr_keeps_its_end_only() {
        let mut tail = Vec::new();
        for i in 0..1000u32 {
            keep_tail(&mut tail, format!("line {i}\n").as_bytes(), 64);
            assert!(tail.len() <= 64);
        }
        assert!(String::from_utf8(tail).unwrap().ends_with("line 998\nline 999\n"));
    }

    #[test]
    fn hooks_get_no_roomguard_variables() {
        let parent = [
            ("PATH", "/usr/bin"),
            ("ROOMGUARD_REDIS__PASSWORD", "s3cret"),
            ("ROOMGUARD_HTTP__ADMIN_TOKEN", "t0ken"),
            ("ROOMGUARD_SENTINEL__PASSWORD", "p"),
            ("ROOMGUARD_REDIS__ROOM__2__PASSWORD", "q"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = hook_environment(parent, &environment(&Event::CutOff { room: "1".into() }));
        let names: Vec<String> = env.iter().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["PATH", "HOME", "RG_EVENT", "RG_ROOM"]);
    }

    #[test]
    fn environment_of_events() {
        let env = environment(&Event::MasterSwitched {
            shard: "s1".into(),
            old: Addr::new("10.0.0.1", 6401),
            new: Addr::new("10.0.0.2", 6401),
            room: "2".into(),
            trigger: Trigger::Manual,
            replicas: vec![],
            reconfigured: vec![],
            epoch: 42,
        });
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RG_EVENT"), Some("switchover"));
        assert_eq!(get("RG_OLD_MASTER"), Some("10.0.0.1:6401"));
        assert_eq!(get("RG_NEW_MASTER"), Some("10.0.0.2:6401"));
        assert_eq!(get("RG_TRIGGER"), Some("manual"));
        assert_eq!(get("RG_EPOCH"), Some("42"));
        assert_eq!(
            environment(&Event::CutOff { room: "1".into() }),
            [("RG_EVENT", "cut_off".into()), ("RG_ROOM", "1".into())]
        );
    }
}
