//! `controller.toml`: loading (figment: the file, then `ROOMGUARD_*` environment overrides)
//! and validation into a [`Topology`] plus settings.
//!
//! Two levels, as in ripgrep's low/high args: [`RawConfig`] is exactly what serde reads
//! (unknown keys rejected, so a typo is an error and not a silently ignored setting);
//! [`Config`] is validated and is the only thing the rest of the crate sees. Every error
//! names the culprit: the file, the key, the shard, the room or the instance.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

mod explain;
mod hook;

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

pub use self::hook::{DEFAULT_HOOK_TIMEOUT, HookSettings, RawHook};
pub use crate::secret::Secret;
use crate::{
    sentinel::{RawSentinel, SentinelSettings},
    topology::{Addr, Topology},
    wire::TlsSettings,
};

/// Environment variables with this prefix override config keys; `__` separates sections:
/// `ROOMGUARD_CONTROLLER__DOWN_AFTER=2s`.
pub const ENV_PREFIX: &str = "ROOMGUARD_";

/// Variables under [`ENV_PREFIX`] that belong to the command line, not to the config file.
/// `ROOMGUARD_*` variables that are not configuration: the CLI's own (`--config`, `--log`,
/// `--log-format`, `failover --token`) and the test harness' log filter. Without this list a
/// `secrets.env` holding `ROOMGUARD_ADMIN_TOKEN` would stop the service from starting
/// (unknown field `admin_token`).
/// The lab's server and scripts/servers' cache (`ROOMGUARD_REDIS_SERVER`,
/// `ROOMGUARD_SERVER_CACHE`) are not configuration either, nor the package test's cargo-deb
/// and package (`ROOMGUARD_CARGO_DEB`, `ROOMGUARD_DEB`: scripts/test exports them).
const CLI_ENV_KEYS: &[&str] =
    &["config", "log", "log_format", "admin_token", "test_log", "redis_server", "server_cache", "cargo_deb", "deb"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    /// figment's error in words for people ([`explain`]): file and line or environment
    /// variable, the key, and the key probably meant.
    #[error("{message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

// === raw: what serde reads ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub rooms: Vec<String>,
    #[serde(default)]
    pub controller: RawController,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default, rename = "shard")]
    pub shards: Vec<RawShard>,
    /// `[sentinel]`: the Sentinel-compatible endpoint; off when absent.
    pub sentinel: Option<RawSentinel>,
    #[serde(default, rename = "hook")]
    pub hooks: Vec<RawHook>,
    /// `[coordination]`: etcd; quorum-free when absent ([`crate::coordination`]).
    pub coordination: Option<crate::coordination::RawCoordination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawController {
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub down_after: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde::option")]
    pub link_silence: Option<Duration>,
    pub auto_failover: bool,
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub switchover_timeout: Duration,
    pub state_file: PathBuf,
    pub log: Option<String>,
}

impl Default for RawController {
    fn default() -> Self {
        RawController {
            poll_interval: Duration::from_millis(100),
            down_after: Duration::from_secs(1),
            timeout: Duration::from_millis(250),
            link_silence: None,
            auto_failover: true,
            cooldown: Duration::from_secs(300),
            switchover_timeout: Duration::from_secs(5),
            state_file: PathBuf::from("roomguard-state.json"),
            log: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub admin_token: Option<Secret>,
    /// A file holding `admin_token` ([`crate::secret::inline_or_file`]).
    pub admin_token_file: Option<PathBuf>,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { listen: "127.0.0.1:9480".into(), admin_token: None, admin_token_file: None }
    }
}

/// `[redis]`: how to connect to every instance. `[redis.room."<room>"]` and
/// `[redis.instance."<host:port>"]` override any of these keys where deployments differ;
/// the most specific wins (instance, then room, then `[redis]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A file holding `password` ([`crate::secret::inline_or_file`]).
    pub password_file: Option<PathBuf>,
    pub tls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub room: BTreeMap<String, RawRedisOverride>,
    #[serde(default)]
    pub instance: BTreeMap<String, RawRedisOverride>,
}

/// The keys of `[redis]` that a room or an instance may override.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisOverride {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Read into `password` before the layers are overlaid.
    pub password_file: Option<PathBuf>,
    pub tls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl RawRedisOverride {
    /// `self` with every key that `more` sets replaced.
    fn overlay(&self, more: &RawRedisOverride) -> RawRedisOverride {
        RawRedisOverride {
            username: more.username.clone().or_else(|| self.username.clone()),
            password: more.password.clone().or_else(|| self.password.clone()),
            password_file: None,
            tls: more.tls.or(self.tls),
            ca_file: more.ca_file.clone().or_else(|| self.ca_file.clone()),
            cert_file: more.cert_file.clone().or_else(|| self.cert_file.clone()),
            key_file: more.key_file.clone().or_else(|| self.key_file.clone()),
            server_name: more.server_name.clone().or_else(|| self.server_name.clone()),
        }
    }
}

impl RawRedis {
    fn base(&self) -> RawRedisOverride {
        RawRedisOverride {
            username: self.username.clone(),
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
        }
    }
}

/// How to connect to one instance: credentials and TLS. Its Debug output shows no secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisSettings {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS with certificate verification; `None`: plain TCP.
    pub tls: Option<TlsSettings>,
}

impl RedisSettings {
    /// Credentials only, no TLS.
    pub fn password(username: Option<&str>, password: &str) -> Self {
        RedisSettings { username: username.map(String::from), password: Some(Secret::new(password)), tls: None }
    }

    /// One line for `check-config`: what is used, never a secret.
    pub fn describe(&self) -> String {
        let mut parts = vec![match (&self.username, &self.password) {
            (Some(user), _) => format!("user {user} with a password"),
            (None, Some(_)) => "password".to_string(),
            (None, None) => "no authentication".to_string(),
        }];
        match &self.tls {
            None => parts.push("plain TCP".into()),
            Some(tls) => {
                let mut text = format!("TLS (CA {}", tls.ca_file.display());
                if let Some(cert) = &tls.cert_file {
                    text.push_str(&format!(", client certificate {}", cert.display()));
                }
                if let Some(name) = &tls.server_name {
                    text.push_str(&format!(", server name {name}"));
                }
                text.push(')');
                parts.push(text);
            }
        }
        parts.join(", ")
    }
}

/// Connection settings for every instance, overrides applied.
#[derive(Clone, Debug, Default)]
pub struct RedisConfig {
    /// `[redis]` itself.
    pub default: RedisSettings,
    /// By [`crate::topology::InstanceId`].
    pub instances: Vec<RedisSettings>,
}

impl RedisConfig {
    /// The same settings for every instance.
    pub fn uniform(settings: RedisSettings) -> Self {
        RedisConfig { default: settings, instances: vec![] }
    }

    pub fn instance(&self, id: usize) -> &RedisSettings {
        self.instances.get(id).unwrap_or(&self.default)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShard {
    pub name: String,
    /// `room.<name> = ["host:port", ...]`, head first.
    pub room: BTreeMap<String, Vec<String>>,
}

// === validated ===

impl ControllerSettings {
    pub fn silence(&self) -> crate::detect::SilenceSettings {
        crate::detect::SilenceSettings::new(self.link_silence, self.poll_interval)
    }

    pub fn detect(&self) -> crate::detect::DetectSettings {
        crate::detect::DetectSettings { down_after: self.down_after, silence: self.silence() }
    }
}

#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// How often every instance is probed.
    pub poll_interval: Duration,
    /// An instance is down after failing continuously this long.
    pub down_after: Duration,
    /// Connect timeout and per-command timeout of one probe or action.
    pub timeout: Duration,
    /// A fixed silence threshold instead of each shard's `repl-ping-replica-period` plus a
    /// margin ([`crate::detect::SilenceRule`]). Must exceed the masters' period: an idle master
    /// is silent for that long between pings, and counting that as evidence would fail over a
    /// healthy deployment whenever the controller alone is cut off.
    pub link_silence: Option<Duration>,
    pub auto_failover: bool,
    /// Anti-flap: no automatic failover toward a room that itself failed (was judged lost, or
    /// failed away from) within this window ([`crate::plan::cooling`]).
    pub cooldown: Duration,
    /// How long a graceful switchover waits for the new heads to catch up.
    pub switchover_timeout: Duration,
    /// Absolute path of the state file.
    pub state_file: PathBuf,
    /// The log filter of `roomguard run` when `--log`/`ROOMGUARD_LOG` does not set one;
    /// SIGHUP re-reads it ([`crate::reload`]).
    pub log: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Enables `POST /failover` for requests bearing `Authorization: Bearer <token>`.
    /// Without it the HTTP server is read-only, wherever it listens.
    pub admin_token: Option<Secret>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Where the configuration came from (a file path, or `<embedded>`), for messages.
    pub origin: String,
    pub topology: Topology,
    pub controller: ControllerSettings,
    pub http: HttpSettings,
    pub redis: RedisConfig,
    pub sentinel: Option<SentinelSettings>,
    pub hooks: Vec<HookSettings>,
    /// `[coordination]`: etcd ([`crate::coordination`]); quorum-free when `None`.
    pub coordination: Option<crate::coordination::CoordinationSettings>,
    /// Set by [`crate::lab`] only (never read from a file): the lab's Redis settings (no
    /// persistence, `repl-diskless-sync-delay 0`) are deliberate, so the settings audit
    /// reports its findings at debug level instead of warning about them.
    pub lab: bool,
}

impl Config {
    /// Loads a config file, applies `ROOMGUARD_*` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing { path: path.to_owned() });
        }
        let origin = path.display().to_string();
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(env_overrides());
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // Read again only to point at a line when something is wrong.
        Self::from_figment(figment, origin, &base, || std::fs::read_to_string(path).ok())
    }

    /// Validates a TOML text (used by `lab` for its embedded configuration and by tests);
    /// relative paths are relative to `base`. Environment overrides apply here too.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let figment = Figment::new().merge(Toml::string(text)).merge(env_overrides());
        Self::from_figment(figment, origin.to_string(), base, || Some(text.to_string()))
    }

    fn from_figment(
        figment: Figment,
        origin: String,
        base: &Path,
        text: impl FnOnce() -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            let message = explain::explain(&e, text().as_deref(), &origin);
            ConfigError::Parse { origin: origin.clone(), message }
        })?;
        match validate(raw, base) {
            Ok(mut config) => {
                config.origin = origin;
                Ok(config)
            }
            Err(problem) => Err(ConfigError::Invalid { origin, problem }),
        }
    }
}

fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").ignore(CLI_ENV_KEYS)
}

fn validate(raw: RawConfig, base: &Path) -> Result<Config, String> {
    let RawConfig { rooms, controller: c, http, redis, shards, sentinel, hooks, coordination } = raw;

    if rooms.is_empty() {
        return Err("`rooms` is empty: name at least one room".into());
    }
    for (i, room) in rooms.iter().enumerate() {
        if room.trim().is_empty() {
            return Err(format!("`rooms` entry {} is an empty name", i + 1));
        }
        if rooms[..i].contains(room) {
            return Err(format!("room \"{room}\" is listed twice in `rooms`"));
        }
    }

    let positive = [
        ("controller.poll_interval", c.poll_interval),
        ("controller.down_after", c.down_after),
        ("controller.timeout", c.timeout),
        ("controller.link_silence", c.link_silence.unwrap_or(Duration::MAX)),
        ("controller.switchover_timeout", c.switchover_timeout),
    ];
    for (key, value) in positive {
        if value.is_zero() {
            return Err(format!("`{key}` must be greater than zero"));
        }
    }
    if c.down_after < c.poll_interval {
        return Err(format!(
            "`controller.down_after` ({}) is shorter than `controller.poll_interval` ({}): \
             an instance would be declared down before it was probed twice",
            humantime::format_duration(c.down_after),
            humantime::format_duration(c.poll_interval)
        ));
    }
    if c.link_silence.is_some_and(|s| s < Duration::from_secs(1)) {
        return Err("`controller.link_silence` must be at least 1s: Redis reports \
                    `master_last_io_seconds_ago` in whole seconds"
            .into());
    }
    if let Some(log) = &c.log {
        crate::logging::parse(log).map_err(|e| format!("`controller.log`: {e}"))?;
    }
    if c.state_file.as_os_str().is_empty() {
        return Err("`controller.state_file` is empty".into());
    }

    let admin_token = crate::secret::inline_or_file(
        "[http]",
        "admin_token",
        http.admin_token,
        http.admin_token_file.as_deref(),
        base,
    )?
    .filter(|t| !t.expose().is_empty());
    if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        return Err("`http.admin_token` is shorter than 16 characters: use a long random token".into());
    }
    let listen: SocketAddr =
        http.listen.parse().map_err(|_| format!("`http.listen` = \"{}\" is not an ip:port address", http.listen))?;

    if shards.is_empty() {
        return Err("no [[shard]] is configured".into());
    }
    let mut seen_shards: HashMap<&str, usize> = HashMap::new();
    let mut seen_addrs: HashMap<Addr, (String, String)> = HashMap::new();
    let mut built = Vec::new();
    for (index, shard) in shards.iter().enumerate() {
        let name = shard.name.trim();
        if name.is_empty() {
            return Err(format!("[[shard]] number {} has an empty `name`", index + 1));
        }
        if seen_shards.insert(name, index).is_some() {
            return Err(format!("shard \"{name}\" is defined twice"));
        }
        for room in shard.room.keys() {
            if !rooms.contains(room) {
                return Err(format!(
                    "shard \"{name}\": `room.{room}` names a room that is not in `rooms` ({})",
                    rooms.join(", ")
                ));
            }
        }
        let mut chains = Vec::new();
        for room in &rooms {
            let list = shard.room.get(room).filter(|l| !l.is_empty()).ok_or_else(|| {
                format!(
                    "shard \"{name}\" has no instance in room \"{room}\": \
                     every shard needs a chain (`room.{room} = [...]`) in every room"
                )
            })?;
            let mut chain = Vec::new();
            for text in list {
                let addr: Addr = text
                    .parse()
                    .map_err(|why| format!("shard \"{name}\", room \"{room}\": bad address \"{text}\": {why}"))?;
                if let Some((other_shard, other_room)) = seen_addrs.get(&addr) {
                    return Err(format!(
                        "instance {addr} is listed twice: in shard \"{other_shard}\" room \
                         \"{other_room}\" and in shard \"{name}\" room \"{room}\""
                    ));
                }
                seen_addrs.insert(addr.clone(), (name.to_string(), room.clone()));
                chain.push(addr);
            }
            chains.push(chain);
        }
        built.push((name.to_string(), chains));
    }

    let sentinel = sentinel
        .map(|mut s| {
            let file = s.password_file.take();
            s.password = crate::secret::inline_or_file("[sentinel]", "password", s.password, file.as_deref(), base)?;
            s.validate()
        })
        .transpose()?;
    let hooks = hooks.into_iter().enumerate().map(|(i, h)| h.validate(i + 1, base)).collect::<Result<Vec<_>, _>>()?;

    let state_file = if c.state_file.is_absolute() { c.state_file.clone() } else { base.join(&c.state_file) };
    let topology = Topology::new(rooms, built);
    let redis = validate_redis(&redis, &topology, base)?;
    let coordination =
        coordination.map(|c| c.validate(&topology, crate::coordination::default_name(listen.port()))).transpose()?;
    Ok(Config {
        origin: String::new(),
        topology,
        controller: ControllerSettings {
            poll_interval: c.poll_interval,
            down_after: c.down_after,
            timeout: c.timeout,
            link_silence: c.link_silence,
            auto_failover: c.auto_failover,
            cooldown: c.cooldown,
            switchover_timeout: c.switchover_timeout,
            state_file,
            log: c.log.clone(),
        },
        http: HttpSettings { listen, admin_token },
        redis,
        sentinel,
        hooks,
        coordination,
        lab: false,
    })
}

/// Applies `[redis]`'s room and instance overrides and loads TLS files, so that a missing or
/// bad certificate is a start-up error naming the key and the file, not a probe failure.
fn validate_redis(raw: &RawRedis, topology: &Topology, base: &Path) -> Result<RedisConfig, String> {
    for room in raw.room.keys() {
        if !topology.rooms.contains(room) {
            return Err(format!(
                "`redis.room.\"{room}\"` names a room that is not in `rooms` ({})",
                topology.rooms.join(", ")
            ));
        }
    }
    for text in raw.instance.keys() {
        let addr: Addr = text.parse().map_err(|why| format!("`redis.instance.\"{text}\"`: bad address: {why}"))?;
        if topology.find_any(&addr.host, addr.port).is_none() {
            return Err(format!("`redis.instance.\"{text}\"` names an instance that is in no [[shard]]"));
        }
    }
    let mut loaded: HashMap<String, TlsSettings> = HashMap::new();
    let mut resolve = |layers: &RawRedisOverride, whose: &str| -> Result<RedisSettings, String> {
        let path = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        if layers.username.is_some() && layers.password.is_none() {
            return Err(format!(
                "{whose}: `username` is set without `password` (for a `nopass` ACL user, set any password)"
            ));
        }
        let tls = if layers.tls.unwrap_or(false) {
            let ca = layers.ca_file.as_ref().map(path).ok_or_else(|| {
                format!("{whose}: `tls = true` needs `ca_file`, the CA that signed the instances' certificates")
            })?;
            let client = match (&layers.cert_file, &layers.key_file) {
                (Some(cert), Some(key)) => Some((path(cert), path(key))),
                (None, None) => None,
                _ => return Err(format!("{whose}: `cert_file` and `key_file` go together (a client certificate)")),
            };
            let key = format!("{ca:?}|{client:?}|{:?}", layers.server_name);
            if !loaded.contains_key(&key) {
                let settings = TlsSettings::load(
                    &ca,
                    client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                    layers.server_name.clone(),
                )
                .map_err(|e| format!("{whose}: TLS: {e}"))?;
                loaded.insert(key.clone(), settings);
            }
            Some(loaded[&key].clone())
        } else {
            None
        };
        Ok(RedisSettings { username: layers.username.clone(), password: layers.password.clone(), tls })
    };
    // Passwords from files first, each table on its own, so that an error names the table.
    let from_file = |layer: &RawRedisOverride, table: &str| -> Result<RawRedisOverride, String> {
        let password = crate::secret::inline_or_file(
            table,
            "password",
            layer.password.clone(),
            layer.password_file.as_deref(),
            base,
        )?;
        Ok(RawRedisOverride { password, password_file: None, ..layer.clone() })
    };
    let rooms = raw
        .room
        .iter()
        .map(|(room, layer)| Ok((room.clone(), from_file(layer, &format!("[redis.room.\"{room}\"]"))?)))
        .collect::<Result<BTreeMap<_, _>, String>>()?;
    let exact_instances = raw
        .instance
        .iter()
        .map(|(text, layer)| Ok((text.clone(), from_file(layer, &format!("[redis.instance.\"{text}\"]"))?)))
        .collect::<Result<BTreeMap<_, _>, String>>()?;
    let base_layer = from_file(&raw.base(), "[redis]")?;
    let default = resolve(&base_layer, "[redis]")?;
    let mut instances = Vec::with_capacity(topology.instances.len());
    for instance in &topology.instances {
        let room = &topology.rooms[instance.room];
        let mut layers = base_layer.clone();
        if let Some(more) = rooms.get(room) {
            layers = layers.overlay(more);
        }
        let exact = exact_instances.iter().find(|(text, _)| text.parse::<Addr>().is_ok_and(|a| a == instance.addr));
        if let Some((_, more)) = exact {
            layers = layers.overlay(more);
        }
        instances.push(resolve(&layers, &format!("[redis] for instance {} (room {room})", instance.addr))?);
    }
    Ok(RedisConfig { default, instances })
}

impl Config {
    /// The derived chains, one line per shard and primary room, for `check-config`.
    pub fn describe(&self) -> String {
        let t = &self.topology;
        let c = &self.controller;
        let mut out = String::new();
        out.push_str(&format!("rooms (preference order): {}\n", t.rooms.join(", ")));
        out.push_str(&format!(
            "poll every {}, down after {}, timeout {}, link silence {}, auto failover {}, cooldown {}\n",
            humantime::format_duration(c.poll_interval),
            humantime::format_duration(c.down_after),
            humantime::format_duration(c.timeout),
            match c.link_silence {
                Some(s) => humantime::format_duration(s).to_string(),
                None => format!(
                    "each shard's repl-ping-replica-period + {}",
                    humantime::format_duration(self.controller.silence().margin)
                ),
            },
            if c.auto_failover { "on" } else { "off" },
            humantime::format_duration(c.cooldown),
        ));
        out.push_str(&format!("state file: {}\n", c.state_file.display()));
        out.push_str(&format!("http: {}\n", self.http.listen));
        out.push_str(&format!("redis: {}\n", self.redis.default.describe()));
        for (id, settings) in self.redis.instances.iter().enumerate() {
            if *settings != self.redis.default {
                out.push_str(&format!("  redis for {}: {}\n", t.addr(id), settings.describe()));
            }
        }
        if let Some(s) = &self.sentinel {
            out.push_str(&format!("sentinel endpoint: {}\n", s.listen));
        }
        for h in &self.hooks {
            out.push_str(&format!("hook on {}: {}\n", h.events.join(", "), h.command.join(" ")));
        }
        if let Some(k) = &self.coordination {
            let role = match (k.role, k.room) {
                (crate::coordination::Role::Discovery, _) => "discovery-only (polls no Redis)".to_string(),
                (_, Some(room)) => format!("acting-capable in room {} (fenced when cut off)", t.rooms[room]),
                (_, None) => "acting-capable (no room: fences nothing)".to_string(),
            };
            out.push_str(&format!(
                "coordination: etcd {} under {} as \"{}\", {role}; lease {}, on etcd loss: {}\n",
                k.endpoints.join(", "),
                k.prefix,
                k.name,
                humantime::format_duration(k.lease_ttl),
                k.on_unavailable.label()
            ));
        }
        for (shard_id, shard) in t.shards.iter().enumerate() {
            out.push_str(&format!("shard {}:\n", shard.name));
            for room in 0..t.rooms.len() {
                let chain: Vec<String> =
                    t.chain_order(t.head(shard_id, room)).iter().map(|&id| t.addr(id).to_string()).collect();
                out.push_str(&format!("  room {} primary: {}\n", t.rooms[room], chain.join(" -> ")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
rooms = ["1", "2"]
[[shard]]
name = "shard-6401"
room.1 = ["192.168.99.11:6401", "192.168.99.11:6403"]
room.2 = ["192.168.99.12:6401", "192.168.99.12:6403"]
[[shard]]
name = "shard-6402"
room.1 = ["192.168.99.11:6402", "192.168.99.11:6404"]
room.2 = ["192.168.99.12:6402", "192.168.99.12:6404"]
"#;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, "test.toml", Path::new("/etc/roomguard")).map_err(|e| e.to_string())
    }

    #[test]
    fn seed_config_with_defaults() {
        let cfg = load(SEED).unwrap();
        assert_eq!(cfg.topology.rooms, ["1", "2"]);
        assert_eq!(cfg.topology.instances.len(), 8);
        assert_eq!(cfg.controller.poll_interval, Duration::from_millis(100));
        assert_eq!(cfg.controller.down_after, Duration::from_secs(1));
        assert_eq!(cfg.controller.state_file, Path::new("/etc/roomguard/roomguard-state.json"));
        assert!(cfg.describe().contains(
            "room 1 primary: 192.168.99.11:6401 -> 192.168.99.11:6403 -> 192.168.99.12:6401 -> 192.168.99.12:6403"
        ));
    }

    #[test]
    fn errors_name_the_culprit() {
        let cases: &[(&str, &str)] = &[
            (
                r#"rooms = ["1", "2"]
                [controller]
                down_afterr = "1s""#,
                "down_afterr",
            ),
            (
                r#"rooms = ["1", "2"]
                [controller]
                down_after = "soon""#,
                "down_after",
            ),
            (&SEED.replace("room.2 = [\"192.168.99.12:6401\"", "room.9 = [\"192.168.99.12:6401\""), "room.9"),
            (&SEED.replace("192.168.99.12:6403", "192.168.99.11:6401"), "192.168.99.11:6401 is listed twice"),
            (&SEED.replace("192.168.99.12:6404", "192.168.99.12:port"), "bad address \"192.168.99.12:port\""),
            (
                &SEED.replace("room.2 = [\"192.168.99.12:6402\", \"192.168.99.12:6404\"]", ""),
                "shard \"shard-6402\" has no instance in room \"2\"",
            ),
            (&SEED.replace("rooms = [\"1\", \"2\"]", "rooms = [\"1\", \"1\"]"), "room \"1\" is listed twice"),
            (&format!("{SEED}\n[http]\nlisten = \"localhost\""), "http.listen"),
            (&SEED.replace("shard-6402", "shard-6401"), "shard \"shard-6401\" is defined twice"),
            ("rooms = [\"1\"]", "no [[shard]]"),
            (&format!("{SEED}\n[sentinel]\nlisten = \"localhost\""), "sentinel.listen"),
            (&format!("{SEED}\n[sentinel]\nlisten = \"127.0.0.1:26379\"\nmax_conections = 5"), "max_conections"),
            (
                &format!("{SEED}\n[[hook]]\nevents = [\"failover\", \"boom\"]\ncommand = [\"x\"]"),
                "unknown event \"boom\"",
            ),
        ];
        for (text, needle) in cases {
            let err = load(text).expect_err(needle);
            assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
            assert!(err.starts_with("test.toml"), "error {err:?} should name the file");
        }
    }

    /// figment's wording (`unknown field: found …, expected one of …`) is translated: the
    /// line, the key as written, and the key probably meant.
    #[test]
    fn figment_errors_are_explained_with_the_line_and_a_suggestion() {
        let lines_before = SEED.lines().count();
        let cases: Vec<(String, String)> = vec![
            (
                format!("{SEED}[controller]\ndown_afer = \"1s\"\n"),
                format!(
                    "test.toml line {}: unknown key `down_afer` in [controller]; did you mean `down_after`?",
                    lines_before + 2
                ),
            ),
            (
                format!("{SEED}[controler]\ndown_after = \"1s\"\n"),
                format!(
                    "test.toml line {}: unknown key `controler` at the top level; did you mean `controller`?",
                    lines_before + 1
                ),
            ),
            (
                format!("{SEED}[[hook]]\nevents = [\"failover\"]\ncomand = [\"/bin/true\"]\n"),
                format!(
                    "test.toml line {}: unknown key `comand` in [[hook]] number 1; did you mean `command`?",
                    lines_before + 3
                ),
            ),
            (
                SEED.replace("name = \"shard-6402\"", "name = \"shard-6402\"\nrom.3 = []"),
                "test.toml line 9: unknown key `rom` in [[shard]] number 2; did you mean `room`?".into(),
            ),
            (
                format!("{SEED}[redis.room.\"2\"]\npasword = \"x\"\n"),
                format!(
                    "test.toml line {}: unknown key `pasword` in [redis.room.2]; did you mean `password`?",
                    lines_before + 2
                ),
            ),
            (
                format!("{SEED}[controller]\nbanana = 1\n"),
                format!(
                    "test.toml line {}: unknown key `banana` in [controller] (known: poll_interval, down_after, \
                     timeout, link_silence, auto_failover, cooldown, switchover_timeout, state_file, log)",
                    lines_before + 2
                ),
            ),
            (
                format!("{SEED}[controller]\ncooldown = \"5 minutes-ish\"\n"),
                format!(
                    "test.toml line {}: `controller.cooldown` is set to string \"5 minutes-ish\", but it must be a \
                     duration such as \"250ms\", \"1s\" or \"5m\"",
                    lines_before + 2
                ),
            ),
            (
                format!("{SEED}[redis]\ntls = \"yes\"\n"),
                format!(
                    "test.toml line {}: `redis.tls` is set to string \"yes\", but it must be true or false",
                    lines_before + 2
                ),
            ),
            ("[controller]\n".into(), "test.toml: `rooms` is missing at the top level".into()),
        ];
        for (text, expected) in cases {
            let err = load(&text).expect_err(&expected);
            assert_eq!(err, expected, "for:\n{text}");
        }
    }

    #[test]
    fn redis_overrides_apply_most_specific_first() {
        let cfg = load(&format!(
            "{SEED}\n[redis]\nusername = \"rg\"\npassword = \"base\"\n\
             [redis.room.\"2\"]\npassword = \"room2\"\n\
             [redis.instance.\"192.168.99.12:6404\"]\nusername = \"odd\"\npassword = \"odd-pass\""
        ))
        .unwrap();
        let t = &cfg.topology;
        let of = |a: &str| {
            let a: Addr = a.parse().unwrap();
            let s = cfg.redis.instance(t.find_any(&a.host, a.port).unwrap());
            (s.username.clone().unwrap(), s.password.as_ref().unwrap().expose().to_string())
        };
        assert_eq!(of("192.168.99.11:6401"), ("rg".into(), "base".into()));
        assert_eq!(of("192.168.99.12:6401"), ("rg".into(), "room2".into()));
        assert_eq!(of("192.168.99.12:6404"), ("odd".into(), "odd-pass".into()));
        let shown = format!("{}{cfg:?}", cfg.describe());
        assert!(shown.contains("redis for 192.168.99.12:6404: user odd with a password"), "{shown}");
        for secret in ["base", "room2", "odd-pass"] {
            assert!(!shown.contains(&format!("\"{secret}\"")), "{secret} shown: {shown}");
        }
    }

    #[test]
    fn redis_errors_name_the_culprit() {
        let cases: &[(&str, &str)] = &[
            ("[redis.room.\"9\"]\npassword = \"x\"", "`redis.room.\"9\"` names a room that is not in `rooms`"),
            (
                "[redis.instance.\"192.168.99.12:7000\"]\npassword = \"x\"",
                "`redis.instance.\"192.168.99.12:7000\"` names an instance that is in no [[shard]]",
            ),
            ("[redis.instance.\"somewhere\"]\npassword = \"x\"", "`redis.instance.\"somewhere\"`: bad address"),
            ("[redis.room.\"2\"]\npasword = \"x\"", "pasword"),
            ("[redis]\nusername = \"rg\"", "`username` is set without `password`"),
            ("[redis]\ntls = true", "[redis]: `tls = true` needs `ca_file`"),
            (
                "[redis.room.\"2\"]\ntls = true",
                "[redis] for instance 192.168.99.12:6401 (room 2): `tls = true` needs `ca_file`",
            ),
            ("[redis]\ntls = true\nca_file = \"/nonexistent/ca.pem\"", "cannot read /nonexistent/ca.pem"),
            (
                "[redis]\ntls = true\nca_file = \"/dev/null\"\ncert_file = \"c.pem\"",
                "`cert_file` and `key_file` go together",
            ),
            ("[redis]\ntls = true\nca_file = \"/dev/null\"", "/dev/null holds no PEM certificate"),
        ];
        for (section, needle) in cases {
            let err = load(&format!("{SEED}\n{section}")).expect_err(needle);
            assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
            assert!(err.starts_with("test.toml"), "error {err:?} should name the file");
        }
    }

    #[test]
    fn sentinel_and_hooks() {
        assert!(load(SEED).unwrap().sentinel.is_none());
        let cfg = load(&format!(
            "{SEED}\n[sentinel]\nlisten = \"127.0.0.1:26379\"\npassword = \"pw\"\nidle_timeout = \"1m\"\n\
             [[hook]]\nevents = [\"failover\", \"switchover\"]\ncommand = [\"hooks/proxy.sh\", \"--reload\"]\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        let s = cfg.sentinel.as_ref().unwrap();
        assert_eq!(s.listen, "127.0.0.1:26379".parse().unwrap());
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.max_connections, crate::sentinel::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(cfg.hooks[0].command, ["/etc/roomguard/hooks/proxy.sh", "--reload"]);
        assert_eq!(cfg.hooks[0].timeout, Duration::from_secs(5));
        assert!(!format!("{cfg:?}").contains("\"pw\""));
        assert!(cfg.describe().contains("sentinel endpoint: 127.0.0.1:26379"));
    }

    #[test]
    fn coordination_section() {
        assert!(load(SEED).unwrap().coordination.is_none());
        let cfg = load(&format!(
            "{SEED}\n[coordination]\netcd = [\"http://10.0.3.5:2379\"]\nroom = \"2\"\nname = \"c2\"\n\
             lease_ttl = \"4s\"\non_etcd_unavailable = \"quorum-free\"\n"
        ))
        .unwrap();
        let k = cfg.coordination.as_ref().unwrap();
        assert_eq!((k.room, k.name.as_str(), k.lease_ttl), (Some(1), "c2", Duration::from_secs(4)));
        assert_eq!(k.on_unavailable, crate::coordination::Unavailable::QuorumFree);
        assert!(
            cfg.describe().contains(
                "coordination: etcd http://10.0.3.5:2379 under /roomguard as \"c2\", acting-capable in room 2"
            ),
            "{}",
            cfg.describe()
        );
        for (section, expected) in [
            ("etcd = [\"http://e:1\"]\nrole = \"watcher\"", "role"),
            ("etcd = [\"http://e:1\"]\nroom = \"3\"", "`coordination.room` = \"3\""),
            ("etcd = \"http://e:1\"", "etcd"),
        ] {
            let e = load(&format!("{SEED}\n[coordination]\n{section}\n")).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load(Path::new("/nonexistent/roomguard.toml")).unwrap_err();
        assert_eq!(err.to_string(), "config file /nonexistent/roomguard.toml does not exist");
    }

    #[test]
    fn secrets_do_not_print() {
        let cfg = load(&format!("{SEED}\n[redis]\npassword = \"hunter2\"")).unwrap();
        assert_eq!(cfg.redis.default.password.as_ref().unwrap().expose(), "hunter2");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    /// `password_file` (and `admin_token_file`) in every table that has a `password`; a file
    /// overrides an inline password of a lower layer; errors name the table, the key and the file.
    #[test]
    fn secrets_from_files_in_every_table() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("base", "base-pw\n"), ("room2", "room2-pw"), ("odd", "odd-pw\n"), ("s", "sentinel-pw\n")]
        {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("token"), "0123456789abcdef0123\n").unwrap();
        let load = |extra: &str| {
            Config::from_toml(&format!("{SEED}\n{extra}"), "test.toml", dir.path()).map_err(|e| e.to_string())
        };
        let cfg = load(
            "[http]\nadmin_token_file = \"token\"\n[sentinel]\nlisten = \"127.0.0.1:26379\"\npassword_file = \"s\"\n\
             [redis]\npassword_file = \"base\"\n[redis.room.\"2\"]\npassword_file = \"room2\"\n\
             [redis.instance.\"192.168.99.12:6404\"]\npassword = \"inline\"\n\
             [redis.instance.\"192.168.99.11:6403\"]\npassword_file = \"odd\"",
        )
        .unwrap();
        let pw = |addr: &str| {
            let id = cfg.topology.instances.iter().position(|i| i.addr.to_string() == addr).unwrap();
            cfg.redis.instance(id).password.as_ref().unwrap().expose().to_string()
        };
        assert_eq!(cfg.redis.default.password.as_ref().unwrap().expose(), "base-pw");
        assert_eq!(pw("192.168.99.11:6401"), "base-pw");
        assert_eq!(pw("192.168.99.11:6403"), "odd-pw");
        assert_eq!(pw("192.168.99.12:6401"), "room2-pw");
        assert_eq!(pw("192.168.99.12:6404"), "inline");
        assert_eq!(cfg.sentinel.as_ref().unwrap().password.as_ref().unwrap().expose(), "sentinel-pw");
        assert_eq!(cfg.http.admin_token.as_ref().unwrap().expose(), "0123456789abcdef0123");

        let missing = dir.path().join("nope").display().to_string();
        for (extra, needle) in [
            (
                "[redis]\npassword_file = \"nope\"".to_string(),
                format!("[redis]: `password_file` = \"nope\": cannot read {missing}"),
            ),
            (
                "[redis.room.\"2\"]\npassword_file = \"nope\"".into(),
                format!("[redis.room.\"2\"]: `password_file` = \"nope\": cannot read {missing}"),
            ),
            (
                "[redis.instance.\"192.168.99.12:6404\"]\npassword = \"x\"\npassword_file = \"odd\"".into(),
                "[redis.instance.\"192.168.99.12:6404\"]: `password` and `password_file` are both set".into(),
            ),
            (
                "[sentinel]\nlisten = \"127.0.0.1:26379\"\npassword_file = \"nope\"".into(),
                format!("[sentinel]: `password_file` = \"nope\": cannot read {missing}"),
            ),
            ("[http]\nadmin_token_file = \"nope\"".into(), "[http]: `admin_token_file` = \"nope\"".into()),
        ] {
            let err = load(&extra).unwrap_err();
            assert!(err.starts_with("test.toml: ") && err.contains(&needle), "{err:?} should say {needle:?}");
        }
    }
}
