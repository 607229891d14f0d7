//! The commands one connection answers: the handshake, `SENTINEL` discovery queries, `ROLE`,
//! `INFO`, and (un)subscribing.

use std::fmt::Write as _;

use super::{
    connection::Connection,
    reply::{Reply, bulk, err, ok},
    settings::MAX_SUBSCRIPTIONS,
    view::{Discovery, NodeView, ShardView},
};

impl Connection<'_> {
    /// Returns the reply, or `None` when replies were written to `out` already.
    pub(super) fn dispatch(&mut self, command: &str, args: &[Vec<u8>], out: &mut Vec<u8>) -> Option<Reply> {
        let wrong_args = || Some(err(format!("ERR wrong number of arguments for '{command}' command")));
        match command {
            "quit" => {
                self.quit = true;
                return Some(ok());
            }
            "auth" => return Some(self.auth(&args[1..])),
            "hello" => return Some(self.hello(&args[1..])),
            _ => {}
        }
        if !self.authed {
            return Some(err("NOAUTH Authentication required."));
        }
        // RESP2 subscribers may only (un)subscribe, ping, quit and reset (RESP3 allows all).
        if self.subscribed() > 0
            && !self.resp3
            && !matches!(command, "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ping" | "reset")
        {
            return Some(err(format!(
                "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )));
        }
        match command {
            "ping" => match args.len() {
                1 | 2 if self.subscribed() > 0 && !self.resp3 => {
                    Some(Reply::Array(vec![bulk("pong"), bulk(args.get(1).map(Vec::as_slice).unwrap_or_default())]))
                }
                1 => Some(Reply::Simple("PONG".into())),
                2 => Some(bulk(&args[1])),
                _ => wrong_args(),
            },
            "echo" if args.len() == 2 => Some(bulk(&args[1])),
            "echo" => wrong_args(),
            "client" => Some(self.client(&args[1..])),
            "reset" => {
                let password = self.endpoint.settings.password.is_some();
                *self = Connection { id: self.id, ..Connection::new(self.endpoint) };
                self.authed = !password;
                Some(Reply::Simple("RESET".into()))
            }
            "sentinel" => Some(self.sentinel(&args[1..])),
            "role" => {
                let view = self.endpoint.view.borrow();
                Some(Reply::Array(vec![
                    bulk("sentinel"),
                    Reply::Array(view.shards.iter().map(|s| bulk(&s.name)).collect()),
                ]))
            }
            "info" => Some(Reply::Bulk(self.info(args.get(1)).into_bytes())),
            "subscribe" | "psubscribe" if args.len() < 2 => wrong_args(),
            "subscribe" | "psubscribe" => {
                let pattern = command == "psubscribe";
                if self.events.is_none() {
                    self.events = Some(self.endpoint.events.subscribe());
                }
                for name in &args[1..] {
                    let full = self.subscribed() >= MAX_SUBSCRIPTIONS;
                    let set = if pattern { &mut self.patterns } else { &mut self.channels };
                    if full && !set.contains(name) {
                        err(format!(
                            "ERR too many subscriptions: at most {MAX_SUBSCRIPTIONS} channels and patterns per connection"
                        ))
                        .encode(self.resp3, out);
                        continue;
                    }
                    set.insert(name.clone());
                    Reply::Push(vec![bulk(command), bulk(name), Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                None
            }
            "unsubscribe" | "punsubscribe" => {
                let pattern = command == "punsubscribe";
                let set = if pattern { &self.patterns } else { &self.channels };
                let names: Vec<Vec<u8>> =
                    if args.len() > 1 { args[1..].to_vec() } else { set.iter().cloned().collect() };
                if names.is_empty() {
                    Reply::Push(vec![bulk(command), Reply::Null, Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                for name in names {
                    if pattern {
                        self.patterns.remove(&name);
                    } else {
                        self.channels.remove(&name);
                    }
                    Reply::Push(vec![bulk(command), bulk(&name), Reply::Int(self.subscribed() as i64)])
                        .encode(self.resp3, out);
                }
                if self.subscribed() == 0 {
                    self.events = None;
                }
                None
            }
            "command" => Some(Reply::Array(vec![])),
            _ => {
                let shown: Vec<String> =
                    args[1..].iter().take(8).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                Some(err(format!(
                    "ERR unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    shown.join(" ")
                )))
            }
        }
    }

    fn check_password(&self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let Some(expected) = &self.endpoint.settings.password else {
            return false;
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        let p = expected.expose().as_bytes();
        // Constant-time comparison: the reply time reveals nothing about a guess.
        let same = p.len() == password.len() && p.iter().zip(password).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        user_ok && same
    }

    fn auth(&mut self, args: &[Vec<u8>]) -> Reply {
        let (user, password) = match args {
            [p] => (None, p),
            [u, p] => (Some(u.as_slice()), p),
            _ => return err("ERR wrong number of arguments for 'auth' command"),
        };
        // Without a password the default user is `nopass`, as in Redis: `AUTH default <any>`
        // succeeds, a bare `AUTH <password>` is a configuration mistake worth reporting.
        if self.endpoint.settings.password.is_none() {
            return match user {
                Some(_) => ok(),
                None => err(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ),
            };
        }
        if self.check_password(user, password) {
            self.authed = true;
            ok()
        } else {
            self.endpoint.metrics.sentinel_auth_failures.inc();
            err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        let mut resp3 = self.resp3;
        let mut rest = args;
        if let Some(v) = args.first() {
            match v.as_slice() {
                b"2" => resp3 = false,
                b"3" => resp3 = true,
                _ if std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).is_some() => {
                    return err("NOPROTO unsupported protocol version");
                }
                _ => return err("ERR Protocol version is not an integer or out of range"),
            }
            rest = &args[1..];
        }
        let mut name = None;
        while let Some(option) = rest.first() {
            match option.to_ascii_lowercase().as_slice() {
                b"auth" if rest.len() >= 3 => {
                    let nopass = self.endpoint.settings.password.is_none();
                    if !nopass && !self.check_password(Some(&rest[1]), &rest[2]) {
                        self.endpoint.metrics.sentinel_auth_failures.inc();
                        return err("WRONGPASS invalid username-password pair or user is disabled.");
                    }
                    self.authed = true;
                    rest = &rest[3..];
                }
                b"setname" if rest.len() >= 2 => {
                    name = Some(rest[1].clone());
                    rest = &rest[2..];
                }
                _ => return err(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option))),
            }
        }
        if !self.authed {
            return err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        self.resp3 = resp3;
        if name.is_some() {
            self.name = name;
        }
        Reply::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk(SENTINEL_REDIS_VERSION)),
            (bulk("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
            (bulk("id"), Reply::Int(self.id as i64)),
            (bulk("mode"), bulk("sentinel")),
            (bulk("role"), bulk("sentinel")),
            (bulk("modules"), Reply::Array(vec![])),
        ])
    }

    fn client(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some(sub) = args.first() else {
            return err("ERR wrong number of arguments for 'client' command");
        };
        match (sub.to_ascii_lowercase().as_slice(), args.len()) {
            (b"setname", 2) => {
                self.name = Some(args[1].clone()).filter(|n| !n.is_empty());
                ok()
            }
            (b"getname", 1) => self.name.as_ref().map_or(Reply::Null, bulk),
            (b"id", 1) => Reply::Int(self.id as i64),
            // Library name/version, eviction and touch flags: harmless, accepted and ignored.
            (b"setinfo", 3) | (b"no-evict", 2) | (b"no-touch", 2) => ok(),
            (b"reply", 2) if args[1].eq_ignore_ascii_case(b"on") => ok(),
            _ => err(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. roomguard answers CLIENT SETNAME, GETNAME, SETINFO, ID, NO-EVICT, NO-TOUCH, REPLY ON",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    fn sentinel(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some(sub) = args.first() else {
            return err("ERR wrong number of arguments for 'sentinel' command");
        };
        let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
        // Valkey 8's names answer as the old ones do (REPLICAS is a name both share).
        let canonical = match sub.as_str() {
            "primary" => "master",
            "primaries" => "masters",
            "get-primary-addr-by-name" => "get-master-addr-by-name",
            other => other,
        };
        let view = self.endpoint.view.borrow();
        let others = self.endpoint.settings.peers.len();
        let named = |f: &dyn Fn(&ShardView) -> Reply| match args {
            [_, name] => view.shard(name).map_or_else(|| err("ERR No such master with that name"), f),
            _ => err(format!("ERR wrong number of arguments for 'sentinel|{sub}' command")),
        };
        match canonical {
            "get-master-addr-by-name" => match args {
                // A master that answers as a replica is never named (Sentinel never names one it
                // demoted): a client told nothing asks again, one told a replica gets READONLY.
                [_, name] => match view.shard(name).and_then(|s| s.master.as_ref()) {
                    Some(m) if !m.answers_as_replica() => {
                        Reply::Array(vec![bulk(&m.addr.host), bulk(m.addr.port.to_string())])
                    }
                    _ => Reply::NullArray,
                },
                _ => err(format!("ERR wrong number of arguments for 'sentinel|{sub}' command")),
            },
            "masters" => Reply::Array(view.shards.iter().map(|s| master_state(s, &view, others)).collect()),
            "master" => named(&|s| master_state(s, &view, others)),
            "replicas" | "slaves" => {
                named(&|s| Reply::Array(s.replicas.iter().map(|r| replica_state(r, view.down_after_ms)).collect()))
            }
            "sentinels" => named(&|_| Reply::Array(self.endpoint.settings.peers.iter().map(peer_state).collect())),
            "myid" => bulk(&self.endpoint.myid),
            "ckquorum" => named(&|_| {
                Reply::Simple(format!(
                    "OK {} usable Sentinels. Quorum and failover authorization can be reached",
                    1 + self.endpoint.settings.peers.len()
                ))
            }),
            "failover" => {
                err("ERR roomguard decides failovers itself: use `roomguard failover --room R` or POST /failover")
            }
            "help" => Reply::Array(
                [
                    "SENTINEL <subcommand> (roomguard's Sentinel-compatible endpoint)",
                    "GET-MASTER-ADDR-BY-NAME <name>, MASTERS, MASTER <name>, REPLICAS <name>,",
                    "SLAVES <name>, SENTINELS <name>, MYID, CKQUORUM <name>",
                    "Valkey's names: GET-PRIMARY-ADDR-BY-NAME <name>, PRIMARIES, PRIMARY <name>",
                ]
                .iter()
                .map(|l| Reply::Simple((*l).into()))
                .collect(),
            ),
            _ => err(format!(
                "ERR unknown subcommand '{sub}': roomguard answers discovery queries only (try SENTINEL HELP)"
            )),
        }
    }

    fn info(&self, section: Option<&Vec<u8>>) -> String {
        let section = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        let want =
            |name: &str| section.as_deref().is_none_or(|s| matches!(s, "all" | "default" | "everything") || s == name);
        let view = self.endpoint.view.borrow();
        let mut out = String::new();
        if want("server") {
            let _ = write!(
                out,
                "# Server\r\nredis_version:{SENTINEL_REDIS_VERSION}\r\nredis_mode:sentinel\r\nroomguard_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.endpoint.settings.listen.port(),
                self.endpoint.started.elapsed().as_secs()
            );
        }
        if want("clients") {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\n\r\n",
                self.endpoint.metrics.sentinel_connections.get()
            );
        }
        if want("sentinel") {
            let _ = write!(
                out,
                "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\n",
                view.shards.len()
            );
            for (i, s) in view.shards.iter().enumerate() {
                let (status, address) = match &s.master {
                    Some(m) => (
                        if m.odown {
                            "odown"
                        } else if m.sdown || m.answers_as_replica() {
                            "sdown"
                        } else {
                            "ok"
                        },
                        m.addr.to_string(),
                    ),
                    None => ("unknown", String::new()),
                };
                let _ = write!(
                    out,
                    "master{i}:name={},status={status},address={address},slaves={},sentinels={}\r\n",
                    s.name,
                    s.replicas.len(),
                    1 + self.endpoint.settings.peers.len()
                );
            }
        }
        out
    }
}

/// The Redis version roomguard's endpoint claims in `HELLO` and `INFO`: it speaks the
/// Sentinel protocol of Redis 7.0.
pub const SENTINEL_REDIS_VERSION: &str = "7.0.0";

fn flags(base: &str, n: &NodeView) -> String {
    let mut f = base.to_string();
    // A "replica" that answers as a master (a returning stale master not yet demoted) is not
    // one to read from: flagged down so clients skip it.
    // Likewise a master that answers as a replica (demoted by another process, before the
    // round that names its successor).
    if n.sdown || (base == "slave" && n.answers_as_master) || (base == "master" && n.answers_as_replica()) {
        f.push_str(",s_down");
    }
    if n.odown {
        f.push_str(",o_down");
    }
    if n.disconnected {
        f.push_str(",disconnected");
    }
    f
}

fn pairs(kv: Vec<(&str, String)>) -> Reply {
    Reply::Map(kv.into_iter().map(|(k, v)| (bulk(k), bulk(v))).collect())
}

/// A peer controller's endpoint as `SENTINEL SENTINELS` lists another Sentinel (sentinel.c's
/// `addReplySentinelRedisInstance`). Its run ID is unknown here and its health unchecked: a
/// client that cannot reach it moves on to the next endpoint, as with a Sentinel that died.
fn peer_state(peer: &crate::topology::Addr) -> Reply {
    pairs(vec![
        ("name", peer.to_string()),
        ("ip", peer.host.clone()),
        ("port", peer.port.to_string()),
        ("runid", String::new()),
        ("flags", "sentinel".into()),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", "0".into()),
        ("last-hello-message", "0".into()),
        ("voted-leader", "?".into()),
        ("voted-leader-epoch", "0".into()),
    ])
}

/// `others`: how many other controllers' endpoints are configured (`num-other-sentinels`).
fn master_state(s: &ShardView, view: &Discovery, others: usize) -> Reply {
    let Some(m) = &s.master else {
        return pairs(vec![
            ("name", s.name.clone()),
            ("ip", String::new()),
            ("port", "0".into()),
            ("flags", "master,s_down,disconnected".into()),
            ("num-slaves", s.replicas.len().to_string()),
            ("num-other-sentinels", others.to_string()),
            ("quorum", "1".into()),
        ]);
    };
    pairs(vec![
        ("name", s.name.clone()),
        ("ip", m.addr.host.clone()),
        ("port", m.addr.port.to_string()),
        ("runid", String::new()),
        ("flags", flags("master", m)),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", m.silent_ms.to_string()),
        ("last-ping-reply", m.silent_ms.to_string()),
        ("down-after-milliseconds", view.down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", if m.answers_as_replica() { "slave" } else { "master" }.into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", s.replicas.len().to_string()),
        ("num-other-sentinels", others.to_string()),
        ("quorum", "1".into()),
        ("failover-timeout", "0".into()),
        ("parallel-syncs", "1".into()),
    ])
}

fn replica_state(r: &NodeView, down_after_ms: u64) -> Reply {
    let (master_host, master_port) =
        r.master.as_ref().map_or(("?".to_string(), "0".to_string()), |m| (m.host.clone(), m.port.to_string()));
    pairs(vec![
        ("name", format!("{}:{}", r.addr.host, r.addr.port)),
        ("ip", r.addr.host.clone()),
        ("port", r.addr.port.to_string()),
        ("runid", String::new()),
        ("flags", flags("slave", r)),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", r.silent_ms.to_string()),
        ("last-ping-reply", r.silent_ms.to_string()),
        ("down-after-milliseconds", down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", if r.answers_as_master { "master" } else { "slave" }.into()),
        ("role-reported-time", "0".into()),
        ("master-link-down-time", "0".into()),
        ("master-link-status", if r.link_up { "ok" } else { "err" }.into()),
        ("master-host", master_host),
        ("master-port", master_port),
        ("slave-priority", "100".into()),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        events::Snapshot,
        observe::Observation,
        sentinel::server::fixtures::{endpoint, seed_view},
    };

    fn flags_of(reply: &Reply) -> String {
        let Reply::Map(pairs) = reply else { panic!("{reply:?}") };
        match pairs.iter().find(|(k, _)| *k == bulk("flags")) {
            Some((_, Reply::Bulk(b))) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_master_only_the_state_file_names_is_reported_down_until_verified() {
        let topology = crate::topology::fixtures::seed();
        let initial = seed_view();
        let s = &initial.shards[0];
        assert_eq!(flags_of(&master_state(s, &initial, 0)), "master,s_down,disconnected");
        let endpoint = endpoint(initial.clone());
        let mut connection = Connection::new(&endpoint);
        let mut out = Vec::new();
        connection.handle(
            &[b"SENTINEL".to_vec(), b"get-master-addr-by-name".to_vec(), s.name.clone().into_bytes()],
            &mut out,
        );
        let master = s.master.as_ref().unwrap();
        assert!(String::from_utf8_lossy(&out).contains(&master.addr.host), "the address is still given");

        // The first round: the named master answers, but as a replica (a stale state file).
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/info/{name}", env!("CARGO_MANIFEST_DIR"));
            crate::info::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let now = Instant::now();
        let mut observation = Observation::new(topology.instances.len());
        for id in 0..topology.instances.len() {
            observation.instances[id].record(now, Duration::ZERO, Ok(fixture("redis7-replica.txt")));
        }
        let settings = crate::detect::DetectSettings {
            down_after: Duration::from_secs(1),
            silence: crate::detect::SilenceSettings::new(None, Duration::from_millis(100)),
        };
        let verdict = crate::detect::assess(&topology, &observation, now, settings);
        let designated = vec![Some(0), Some(4)];
        let snapshot = Snapshot::take(&topology, &observation, &verdict, &designated, None);
        let view = Discovery::build(&topology, &observation, &verdict, &snapshot, 1, Duration::from_secs(5), now);
        assert!(flags_of(&master_state(&view.shards[0], &view, 0)).contains("s_down"), "{view:?}");
        // Once it answers as a master it is reported up.
        observation.instances[0].record(now, Duration::ZERO, Ok(fixture("redis7-master.txt")));
        let snapshot = Snapshot::take(&topology, &observation, &verdict, &designated, Some(&snapshot));
        let view = Discovery::build(&topology, &observation, &verdict, &snapshot, 1, Duration::from_secs(5), now);
        assert_eq!(flags_of(&master_state(&view.shards[0], &view, 0)), "master");
    }

    fn ask(endpoint: &super::super::connection::Endpoint, args: &[&str]) -> String {
        let mut connection = Connection::new(endpoint);
        let mut out = Vec::new();
        connection.handle(&args.iter().map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Issue 15: the moment a probe sees the reported master answer as a replica (demoted by
    /// another process), the endpoint stops naming it, before any round; and a replica entry
    /// that answers as a master is flagged at once. Fails if `Discovery::observe` does nothing.
    #[test]
    fn a_master_seen_answering_as_a_replica_is_no_longer_named() {
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/info/{name}", env!("CARGO_MANIFEST_DIR"));
            crate::info::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let mut view = seed_view();
        let up = |n: &NodeView| NodeView { sdown: false, disconnected: false, answers_as_master: true, ..n.clone() };
        let master = up(view.shards[0].master.as_ref().unwrap());
        let mut replica = NodeView { answers_as_master: false, link_up: true, ..master.clone() };
        replica.addr = crate::topology::Addr::new("127.0.0.12", 6401);
        replica.master = Some(master.addr.clone());
        view.shards[0].master = Some(master.clone());
        view.shards[0].replicas = vec![replica.clone()];
        let name = view.shards[0].name.clone();
        let reported = |view: &Discovery| {
            let endpoint = endpoint(view.clone());
            (
                ask(&endpoint, &["SENTINEL", "get-master-addr-by-name", &name]),
                flags_of(&master_state(&view.shards[0], view, 0)),
            )
        };
        let (addr, master_flags) = reported(&view);
        assert!(addr.contains(&master.addr.host), "{addr}");
        assert_eq!(master_flags, "master");

        // Another process demoted it: the next probe says so.
        let as_replica = fixture("redis7-replica.txt");
        assert!(view.observe(0, &master.addr, &as_replica));
        let (addr, master_flags) = reported(&view);
        assert_eq!(addr, "*-1\r\n", "a master answering as a replica is not named");
        assert_eq!(master_flags, "master,s_down");
        let Reply::Map(pairs) = master_state(&view.shards[0], &view, 0) else { panic!() };
        assert!(pairs.contains(&(bulk("role-reported"), bulk("slave"))), "{pairs:?}");
        assert!(!view.observe(0, &master.addr, &as_replica), "no change the second time");

        // A replica entry promoted elsewhere is flagged (clients skip it) at once.
        assert_eq!(flags("slave", &view.shards[0].replicas[0]), "slave");
        assert!(view.observe(0, &replica.addr, &fixture("redis7-master.txt")));
        assert_eq!(flags("slave", &view.shards[0].replicas[0]), "slave,s_down");
        // The other direction waits for the round: an answer as a master does not restore it.
        assert!(!view.observe(0, &master.addr, &fixture("redis7-master.txt")));
        assert_eq!(reported(&view).0, "*-1\r\n");
    }
}
