//! The command line: one function per subcommand, each returning the process exit code.
//! `anyhow` lives here and in `main.rs` only.
//!
//! Exit codes: 0 = done / healthy; 1 = the deployment is degraded or the failover did not
//! complete; 2 = bad input (config, arguments) — in which case nothing was changed;
//! 70 = `run` (or `lab`) stopped because one of its tasks ended ([`crate::daemon`]).

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncBufReadExt;

use crate::{
    audit,
    config::Config,
    controller,
    daemon::{Daemon, DaemonError},
    detect,
    lab::{BlackHole, Lab, LabSpec},
    maintenance,
    plan::{self, Decision},
    report::{Report, ReportInput},
    state::State,
    switchover::{self, FailoverError},
};

/// `roomguard --version`: the package version and the git revision built (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RG_GIT_REVISION"), ")");

pub const EXIT_DEGRADED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
/// A supervised task ended (sysexits' `EX_SOFTWARE`): systemd restarts the controller.
pub const EXIT_TASK_FAILED: u8 = 70;

#[derive(Debug, Parser)]
#[command(name = "roomguard", version = VERSION, about = "Room-aware failover controller for chained Redis replication")]
pub struct Cli {
    /// Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the
    /// config's `controller.log` for `run`, else `info`].
    #[arg(long, global = true, env = "ROOMGUARD_LOG")]
    pub log: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "ROOMGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The controller configuration [default: ./controller.toml when it exists, else
    /// /etc/roomguard/controller.toml (the package's, which the service uses)].
    #[arg(long, short, env = "ROOMGUARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The configuration the package installs and its systemd unit runs with.
pub const SYSTEM_CONFIG: &str = "/etc/roomguard/controller.toml";

impl ConfigArg {
    /// `--config`, or `./controller.toml` when it exists, or [`SYSTEM_CONFIG`]: an operator's
    /// `roomguard failover` on a packaged host reads the service's configuration, hence acts
    /// on the same state file.
    pub fn path(&self) -> PathBuf {
        match &self.config {
            Some(path) => path.clone(),
            None if std::path::Path::new("controller.toml").is_file() => PathBuf::from("controller.toml"),
            None => PathBuf::from(SYSTEM_CONFIG),
        }
    }
}

/// `--via URL --token T`: ask a running controller's admin API instead of acting from here.
#[derive(Debug, clap::Args)]
pub struct ViaArgs {
    /// Ask a running controller to do it (`http://host:port` of its `[http] listen`) instead
    /// of writing the pause file from here.
    #[arg(long, value_name = "URL")]
    pub via: Option<String>,
    /// The controller's `[http] admin_token` (for --via).
    #[arg(long, env = "ROOMGUARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the service).
    Run(#[command(flatten)] ConfigArg),
    /// Probe every instance once and print the topology and a verdict.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (the same document as GET /topology).
        #[arg(long)]
        json: bool,
    },
    /// Make ROOM primary: graceful when the current masters answer, forced when they do not.
    Failover {
        #[command(flatten)]
        config: ConfigArg,
        /// The room to make primary.
        #[arg(long)]
        room: String,
        /// Promote even when room ROOM's heads still hear the old masters (this host may be
        /// cut off rather than the old room down).
        #[arg(long)]
        force: bool,
        /// Ask the controller at URL (`http://host:port` of its `[http] listen`; without URL,
        /// the configured `[http] listen`) to do it instead of acting on Redis from here.
        /// Without --via or --direct, a controller that answers on the configured `[http]
        /// listen` does it when its admin token is known (the config's `[http] admin_token`,
        /// --token); otherwise this process acts.
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        via: Option<String>,
        /// Act on Redis from this process even when a controller answers on the configured
        /// `[http] listen` (it then waits, at most 2 s, for this host's Sentinel endpoint to
        /// name the new masters before closing the old masters' clients).
        #[arg(long, conflicts_with = "via")]
        direct: bool,
        /// The controller's `[http] admin_token` (for --via; with --via alone or by default,
        /// the config's when not given).
        #[arg(long, env = "ROOMGUARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Maintenance mode: turn automatic failover off until `resume`.
    ///
    /// For every controller that uses this configuration's state file (the pause file beside
    /// it), kept across restarts. Manual failovers (`failover --room`) still work, and the
    /// controllers follow them.
    Pause {
        #[command(flatten)]
        config: ConfigArg,
        /// Why (shown by `status`, the status page and the controllers' logs).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        via: ViaArgs,
    },
    /// End maintenance mode: automatic failover on again.
    Resume {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        via: ViaArgs,
    },
    /// Validate the configuration and print the derived chains.
    CheckConfig(#[command(flatten)] ConfigArg),
    /// Print a shell completion script (the package installs bash, zsh and fish ones).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write every page (roomguard.1, roomguard-pause.1, ...) to
    /// a directory; the package installs them.
    Man {
        /// Write roomguard.1 and a page per subcommand here instead of printing roomguard.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Start the seed's eight Redis instances locally and run the controller against them.
    Lab {
        /// Ports are BASE+1..=BASE+4 on 127.0.0.11 (room 1) and 127.0.0.12 (room 2).
        #[arg(long, default_value_t = 6400)]
        base_port: u16,
        /// Where the lab controller's HTTP server listens.
        #[arg(long, default_value = "127.0.0.1:9480")]
        http: String,
        /// Also serve the Sentinel-compatible endpoint here (e.g. 127.0.0.1:26379).
        #[arg(long)]
        sentinel: Option<String>,
        /// Exit after this long (default: run until Ctrl-C or `quit`).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// The redis-server binary to run (Redis 2.8 to 7.x, or Valkey 8; default: redis-server
        /// on PATH, else valkey-server). `scripts/servers` builds one per supported version.
        #[arg(long, env = "ROOMGUARD_REDIS_SERVER")]
        redis_server: Option<std::path::PathBuf>,
    },
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.path())?)
}

/// Dispatches a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig(arg) => {
            let config = load(&arg)?;
            // A controller that cannot write its state file can never act on a decision.
            let path = &config.controller.state_file;
            crate::state::check_writable(path)?;
            State::load(path, &config.topology)?;
            // A hook that cannot be started would fail at the worst moment: after a failover.
            for (i, hook) in config.hooks.iter().enumerate() {
                crate::hooks::check_program(hook, i + 1).map_err(|e| anyhow::anyhow!("{}: {e}", config.origin))?;
            }
            print!("{}: OK\n{}", config.origin, config.describe());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(arg) => {
            let path = arg.path();
            let config = Config::load(&path)?;
            let log_from_cli = cli.log.is_some();
            if let (false, Some(filter)) = (log_from_cli, &config.controller.log) {
                crate::logging::set_filter(filter)?;
            }
            // Installed before anything else starts: from here on SIGHUP reloads, never kills.
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?;
            let mut daemon = Daemon::start(config).await?;
            daemon.reload_on_sighup(hangups, path, log_from_cli);
            Ok(exit_code(daemon.run_until(shutdown_signal()).await))
        }
        Command::Status { config, json } => status(&load(&config)?, json).await,
        Command::Failover { via: Some(url), token, room, force, config, .. } if url.is_empty() => {
            let config = load(&config)?;
            let token = token.or_else(|| config.http.admin_token.as_ref().map(|t| t.expose().to_string()));
            failover_via(controller_url(config.http.listen), token, room, force).await
        }
        Command::Failover { via: Some(url), token, room, force, .. } => failover_via(url, token, room, force).await,
        Command::Failover { config, room, force, direct: true, .. } => failover(&load(&config)?, &room, force).await,
        Command::Failover { config, room, force, token, .. } => {
            let config = load(&config)?;
            match running_controller(&config, token).await {
                Some((url, token)) => {
                    eprintln!("failing over through the controller running at {url} (--direct to act from here)");
                    failover_via(url, Some(token), room, force).await
                }
                None => failover(&config, &room, force).await,
            }
        }
        Command::Pause { via: ViaArgs { via: Some(url), token }, reason, .. } => {
            let mut query = vec![];
            if let Some(reason) = reason {
                query.push(("reason", reason));
            }
            maintenance_via(url, token, "pause", query).await
        }
        Command::Resume { via: ViaArgs { via: Some(url), token }, .. } => {
            maintenance_via(url, token, "resume", vec![]).await
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "roomguard", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            // The package version only: a page that named the git revision would change with
            // every commit (the packaged pages are generated once and committed).
            let command = <Cli as clap::CommandFactory>::command()
                .version(env!("CARGO_PKG_VERSION"))
                .disable_help_subcommand(true);
            match out_dir {
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout()),
                Some(dir) => clap_mangen::generate_to(command, &dir),
            }
            .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { config, reason, .. } => pause(&load(&config)?, reason.as_deref()),
        Command::Resume { config, .. } => resume(&load(&config)?),
        Command::Lab { base_port, http, sentinel, duration, redis_server } => {
            let spec =
                LabSpec { base_port, http_listen: http, sentinel_listen: sentinel, redis_server, ..LabSpec::default() };
            lab(spec, duration).await
        }
    }
}

/// A daemon that stopped because a task ended exits with [`EXIT_TASK_FAILED`] (already logged).
pub fn exit_code(result: Result<(), DaemonError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_TASK_FAILED)
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. A second signal aborts at once (the process
/// exits with 130): the first one lets an in-flight round finish.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: finishing the current round (signal again to abort)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: aborting");
        std::process::exit(130);
    });
}

/// One-shot picture of the deployment, from Redis itself (works without a running
/// controller). Instances that do not answer are treated as down.
pub async fn snapshot(config: &Config) -> anyhow::Result<Report> {
    let t = &config.topology;
    let c = &config.controller;
    // As the control loop reads it: a master the replicas show restarted without its data is
    // planned around here too (one probe has no history of its own).
    let observation = audit::probe_all_with_periods(config).await.with_inferred_losses(t);
    let state = State::load(&c.state_file, t)?;
    let pause = maintenance::load(&c.state_file)?;
    let inferred = plan::infer_masters(t, &observation);
    let masters: Vec<_> = match &state {
        Some(s) => s.masters.iter().zip(&inferred).map(|(s, i)| s.or(*i)).collect(),
        None => inferred,
    };
    let settings = detect::DetectSettings { down_after: Duration::ZERO, silence: c.silence() };
    let verdict = detect::assess(t, &observation, Instant::now(), settings);
    let cooling = plan::cooling(
        state.as_ref().map_or(&[][..], |s| &s.room_failures),
        t.rooms.len(),
        c.cooldown,
        crate::state::unix_ms(std::time::SystemTime::now()),
    );
    // The failovers the loop would hold on this picture (cooldown, pause, auto_failover off, no
    // target). Only those: what it would change is the running controller's to decide.
    let policy = plan::Policy { auto_failover: c.auto_failover, paused: pause.is_some(), adopt: true, cooling };
    let decision = Decision { held: plan::decide(t, &observation, &verdict, &masters, &policy).held, changes: vec![] };
    let settings = plan::PlanSettings { newer_master_grace: c.down_after, now: Instant::now() };
    let plan = plan::plan(t, &observation, &verdict, &masters, &settings);
    Ok(Report::build(ReportInput {
        topology: t,
        observation: &observation,
        verdict: &verdict,
        masters: &masters,
        decision: &decision,
        plan: &plan,
        epoch: state.as_ref().map_or(0, |s| s.epoch),
        coordination: match &config.coordination {
            Some(k) => Some(coordination_report(config, k, state.as_ref()).await),
            None => None,
        },
        last_failover: state.as_ref().and_then(|s| s.last_failover.as_ref()),
        cooling: &policy.cooling,
        pause: pause.as_ref(),
    }))
}

/// `[coordination]` as `status` sees it: one read of etcd (who acts, the shared record's
/// fencing token); the state file's token when etcd does not answer.
async fn coordination_report(
    config: &Config,
    settings: &crate::coordination::CoordinationSettings,
    state: Option<&State>,
) -> crate::report::CoordinationReport {
    let read = match crate::coordination::Coordinator::new(settings.clone(), config.topology.clone()).await {
        Ok(c) => c.read_once().await.map(|_| c),
        Err(e) => Err(e),
    };
    let (acting, reachable, token) = match &read {
        Ok(c) => (c.status().acting_name, true, c.shared_state().map(|s| s.revision)),
        Err(_) => (None, false, state.and_then(|s| s.fencing_token)),
    };
    let mode = match &read {
        Ok(_) => "read by `roomguard status`".into(),
        Err(e) => format!("read by `roomguard status`; etcd: {e}"),
    };
    crate::report::CoordinationReport::new(settings, mode, acting, reachable, token)
}

async fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let report = snapshot(config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.healthy { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DEGRADED) })
}

async fn failover(config: &Config, room: &str, force: bool) -> anyhow::Result<ExitCode> {
    match switchover::failover(config, room, force, None).await {
        Ok(report) => {
            print!("{}", report.render());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ FailoverError::UnknownRoom { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(e) => {
            eprintln!("error: failover to room {room} did not complete: {e}");
            Ok(ExitCode::from(EXIT_DEGRADED))
        }
    }
}

/// `pause`: writes the pause file beside the state file; every controller using that state
/// file follows it within a round.
fn pause(config: &Config, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let (pause, new) = maintenance::pause(&config.controller.state_file, &maintenance::cli_author(), reason)?;
    let now = std::time::SystemTime::now();
    if new {
        println!("paused: no automatic failover {}; `roomguard resume` ends it", pause.describe(now));
    } else {
        println!("already paused {}", pause.describe(now));
    }
    println!("pause file: {}", maintenance::path(&config.controller.state_file).display());
    Ok(ExitCode::SUCCESS)
}

fn resume(config: &Config) -> anyhow::Result<ExitCode> {
    match maintenance::resume(&config.controller.state_file)? {
        Some(pause) => {
            println!("resumed: automatic failover is on again (it was paused {})", pause.describe(SystemTime::now()))
        }
        None => println!("not paused: automatic failover was already on"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pause`/`resume --via URL`: the running controller's admin API writes the pause file.
async fn maintenance_via(
    url: String,
    token: Option<String>,
    what: &'static str,
    query: Vec<(&'static str, String)>,
) -> anyhow::Result<ExitCode> {
    let Some(token) = token else {
        eprintln!("error: --via needs the controller's admin token (--token or ROOMGUARD_ADMIN_TOKEN)");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    };
    let endpoint = format!("{}/{what}", url.trim_end_matches('/'));
    let (status, body) = post(endpoint, token, query, Duration::from_secs(10)).await?;
    let json = serde_json::from_str::<serde_json::Value>(&body).ok();
    if status == 200 {
        println!("{}", json.as_ref().and_then(|v| v["message"].as_str()).unwrap_or(&body));
        return Ok(ExitCode::SUCCESS);
    }
    let message = json.and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or(body);
    eprintln!("error: the controller answered {status}: {message}");
    Ok(ExitCode::from(if matches!(status, 400 | 401 | 403) { EXIT_BAD_INPUT } else { EXIT_DEGRADED }))
}

/// POSTs to the admin API with the bearer token; (status, body).
async fn post(
    endpoint: String,
    token: String,
    query: Vec<(&'static str, String)>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
        let mut request = agent.post(&endpoint);
        for (key, value) in &query {
            request = request.query(key, value);
        }
        let mut response = request
            .header("Authorization", &format!("Bearer {token}"))
            .send_empty()
            .with_context(|| format!("cannot reach the controller at {endpoint}"))?;
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    })
    .await?
}

/// The controller running with this configuration, as `(url, admin token)`, when its HTTP
/// server answers on `[http] listen` and its admin token is known (`--token`, else the
/// config's). A failover made there never leaves that controller's Sentinel endpoint naming a
/// master it has just demoted, and never races its loop.
async fn running_controller(config: &Config, token: Option<String>) -> Option<(String, String)> {
    if config.http.listen.port() == 0 {
        return None;
    }
    let url = controller_url(config.http.listen);
    let healthz = format!("{url}/healthz");
    // Any HTTP answer (a stalled controller's 503 included) says a controller is there.
    let answers = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        agent.get(&healthz).call().is_ok()
    })
    .await
    .unwrap_or(false);
    if !answers {
        return None;
    }
    match token.or_else(|| config.http.admin_token.as_ref().map(|t| t.expose().to_string())) {
        Some(token) => Some((url, token)),
        None => {
            eprintln!(
                "a controller answers at {url}, but no admin token is known here (`[http] admin_token`, --token): \
                 acting from this process"
            );
            None
        }
    }
}

/// The URL of the controller listening on `listen` (an unspecified address: this host's).
fn controller_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// `failover --via URL`: the running controller's admin API does the work.
async fn failover_via(url: String, token: Option<String>, room: String, force: bool) -> anyhow::Result<ExitCode> {
    let Some(token) = token else {
        eprintln!("error: --via needs the controller's admin token (--token or ROOMGUARD_ADMIN_TOKEN)");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    };
    let endpoint = format!("{}/failover", url.trim_end_matches('/'));
    let query = vec![("room", room), ("force", force.to_string())];
    let (status, body) = post(endpoint, token, query, Duration::from_secs(120)).await?;
    if status == 200 {
        let report: switchover::FailoverReport = serde_json::from_str(&body).context("unexpected reply")?;
        print!("{}", report.render());
        return Ok(ExitCode::SUCCESS);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(body);
    eprintln!("error: the controller answered {status}: {message}");
    Ok(ExitCode::from(if matches!(status, 400 | 401 | 403) { EXIT_BAD_INPUT } else { EXIT_DEGRADED }))
}

const LAB_HELP: &str = "lab commands (type and press Enter):
  status            print the topology table
  kill ROOM         SIGKILL every instance of ROOM (a lost room)
  hang ROOM         SIGSTOP every instance of ROOM (a silent hang); `resume ROOM` undoes it
  blackhole ROOM    drop every packet to and from ROOM (iptables; power or fibre loss); `heal ROOM` undoes it
  restart ROOM      start ROOM's killed instances again, empty, as masters (a returning room)
  failover ROOM     manual failover to ROOM (graceful when the old room answers)
  pause / unpause   maintenance mode on / off (`roomguard pause` / `resume`)
  help              this text
  quit              stop everything";

async fn lab(spec: LabSpec, duration: Option<Duration>) -> anyhow::Result<ExitCode> {
    eprintln!(
        "starting the lab: 8 redis-server instances on {} ports {}-{}",
        spec.room_ips.join(" and "),
        spec.base_port + 1,
        spec.base_port + 2 * spec.shards
    );
    let mut lab = Lab::start(&spec).await.context("starting the lab")?;
    if let Some(server) = lab.servers.first() {
        eprintln!("server: {} ({})", server.version, server.binary().display());
    }
    eprintln!("lab directory (logs, state file): {}", lab.dir().display());
    eprintln!("config:\n{}", spec.config_toml());
    // Said once here: the settings audit would otherwise warn about each of them.
    eprintln!(
        "the lab's Redis settings are deliberate: no persistence and repl-diskless-sync-delay 0 (a chain links in \
         a second); the settings audit reports them at debug level only"
    );
    eprintln!(
        "repl-ping-replica-period {} on every instance: the production recommendation (one PING per second per \
         replica), so a room that goes silent is detected in about a second (docs/detection.md)",
        audit::RECOMMENDED_PING_PERIOD_SECS
    );
    let daemon = Daemon::start(lab.config.clone()).await?;
    eprintln!("controller: http://{}/topology  http://{}/metrics", daemon.http_addr(), daemon.http_addr());
    if let Some(s) = daemon.sentinel_addr() {
        eprintln!(
            "sentinel endpoint: redis-cli -h {} -p {} SENTINEL get-master-addr-by-name {}",
            s.ip(),
            s.port(),
            lab.topology().shards[0].name
        );
    }
    eprintln!("{LAB_HELP}");
    let shared = daemon.shared();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut controller_task = tokio::spawn({
        let stop = stop.clone();
        daemon.run_until(async move { stop.cancelled().await })
    });
    let mut ended = None;

    let mut holes = std::collections::HashMap::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut last_shown = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let ctrl_c = shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            result = &mut controller_task => {
                ended = Some(result);
                break;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
            _ = tick.tick() => {
                // Show the table whenever the picture changes.
                let report = shared.report.read().expect("report lock").clone();
                if let Some(report) = report {
                    let key = format!("{:?}{:?}{:?}", report.verdict, report.shards.iter().map(|s| &s.master).collect::<Vec<_>>(), report.pending);
                    if key != last_shown {
                        println!("\n{}", report.render());
                        last_shown = key;
                    }
                }
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if !lab_command(&mut lab, &mut holes, &shared, line.trim()).await {
                        break;
                    }
                }
                _ => stdin_open = false,
            },
        }
    }
    eprintln!("stopping the controller and the lab instances");
    stop.cancel();
    let result = match ended {
        Some(result) => result,
        None => controller_task.await,
    };
    drop(holes);
    drop(lab);
    Ok(exit_code(result.context("the controller task")?))
}

/// Runs one typed lab command; returns false on `quit`.
async fn lab_command(
    lab: &mut Lab,
    holes: &mut std::collections::HashMap<usize, BlackHole>,
    shared: &controller::Shared,
    line: &str,
) -> bool {
    let mut words = line.split_whitespace();
    let (cmd, arg) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let room = lab.topology().room_id(arg);
    match (cmd, room) {
        ("", _) => {}
        ("quit" | "exit", _) => return false,
        ("help", _) => println!("{LAB_HELP}"),
        ("status", _) => match shared.report.read().expect("report lock").as_ref() {
            Some(r) => println!("{}", r.render()),
            None => println!("(first probe round not complete)"),
        },
        ("kill" | "hang" | "resume" | "restart", Some(room)) => {
            for id in lab.room(room) {
                let server = &mut lab.servers[id];
                match cmd {
                    "kill" => server.kill(),
                    "hang" => server.hang(),
                    "resume" => server.resume(),
                    _ if !server.is_running() => {
                        if let Err(e) = server.restart(None) {
                            println!("restart failed: {e}");
                        }
                    }
                    _ => {}
                }
            }
            println!("{cmd}: room {arg} done");
        }
        ("blackhole", Some(room)) => match lab.black_hole(room) {
            Ok(hole) => {
                holes.insert(room, hole);
                println!("blackhole: every packet to and from room {arg} is dropped; `heal {arg}` undoes it");
            }
            Err(e) => println!("blackhole failed: {e}"),
        },
        ("heal", Some(room)) => {
            holes.remove(&room);
            println!("heal: room {arg} reachable again");
        }
        ("pause", _) => match maintenance::pause(&lab.config.controller.state_file, "lab", None) {
            Ok((p, _)) => println!("paused {}", p.describe(SystemTime::now())),
            Err(e) => println!("pause failed: {e}"),
        },
        ("unpause", _) => match maintenance::resume(&lab.config.controller.state_file) {
            Ok(Some(_)) => println!("resumed: automatic failover is on again"),
            Ok(None) => println!("not paused"),
            Err(e) => println!("resume failed: {e}"),
        },
        ("failover", Some(_)) => match switchover::failover(&lab.config, arg, false, None).await {
            Ok(report) => print!("{}", report.render()),
            Err(e) => println!("failover failed: {e}"),
        },
        (_, None)
            if !arg.is_empty()
                || matches!(cmd, "kill" | "hang" | "resume" | "restart" | "failover" | "blackhole" | "heal") =>
        {
            println!("unknown room \"{arg}\": rooms are {}", lab.topology().rooms.join(", "))
        }
        _ => println!("unknown command \"{cmd}\"; type `help`"),
    }
    true
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
