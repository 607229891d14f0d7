//! One picture of the deployment for people: observed and desired topology plus the
//! verdict. The same [`Report`] is served as JSON by `GET /topology`, printed as a table by
//! `roomguard status`, and shown live by `roomguard lab`.

use std::collections::HashMap;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use crate::{
    detect::{Hearing, RoomStatus, SilenceRule, SilenceSource, Verdict},
    info::Role,
    maintenance::Pause,
    observe::{Observation, PingPeriod},
    plan::{Cooling, Decision, Masters, Plan},
    state::FailoverRecord,
    topology::{Parent, Topology},
    when,
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The room holding every shard's designated master; `None` when shards disagree.
    pub primary_room: Option<String>,
    pub healthy: bool,
    /// One line an operator reads first.
    pub verdict: String,
    pub epoch: u64,
    pub rooms: Vec<RoomReport>,
    pub shards: Vec<ShardReport>,
    pub last_failover: Option<FailoverRecord>,
    /// Failovers that are warranted but not done (auto failover off, cooldown...).
    pub held: Vec<String>,
    /// Corrections the safety rules refused for now.
    pub vetoed: Vec<String>,
    /// Corrections about to be made (or that `status` would make).
    pub pending: Vec<String>,
    /// Maintenance mode: automatic failover paused since when, by whom ([`crate::maintenance`]).
    pub paused: Option<Pause>,
    /// With `[coordination]`: who acts and the fencing token.
    pub coordination: Option<CoordinationReport>,
}

/// With `[coordination]` ([`crate::coordination`]).
#[derive(Clone, Debug, Serialize)]
pub struct CoordinationReport {
    /// `acting`, `observing`, `holding`, `quorum-free` or `discovery-only`.
    pub mode: String,
    /// This controller's name in etcd.
    pub name: String,
    /// The controller holding the acting lease, as last read.
    pub acting: Option<String>,
    pub etcd_reachable: bool,
    /// The etcd revision of the designated masters followed (`RG_EPOCH`).
    pub fencing_token: Option<u64>,
    pub on_etcd_unavailable: &'static str,
}

impl CoordinationReport {
    pub fn new(
        settings: &crate::coordination::CoordinationSettings,
        mode: impl Into<String>,
        acting: Option<String>,
        etcd_reachable: bool,
        fencing_token: Option<u64>,
    ) -> Self {
        CoordinationReport {
            mode: mode.into(),
            name: settings.name.clone(),
            acting,
            etcd_reachable,
            fencing_token,
            on_etcd_unavailable: settings.on_unavailable.label(),
        }
    }

    fn line(&self) -> String {
        format!(
            "coordination: {} as {} (acting: {}; etcd {}; fencing token {}; on etcd loss: {})",
            self.mode,
            self.name,
            self.acting.as_deref().unwrap_or("nobody"),
            if self.etcd_reachable { "reachable" } else { "UNREACHABLE" },
            self.fencing_token.map_or("-".to_string(), |t| t.to_string()),
            self.on_etcd_unavailable
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RoomReport {
    pub name: String,
    pub status: RoomStatus,
    pub instances_down: usize,
    pub instances: usize,
    /// Replicas in other rooms that replicate from this room, and whether they hear it.
    pub witnesses: Vec<WitnessReport>,
    /// While the room is in its cooldown: when it failed (lost, or failed away from) and until
    /// when no automatic failover goes toward it (Unix ms).
    pub failed_at_unix_ms: Option<u64>,
    pub cooldown_until_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WitnessReport {
    pub instance: String,
    pub hears: bool,
    /// Why it does not hear (`link_down`, `stalled` with its offset and for how long,
    /// `quiet` with Redis' whole-second count), or `hears`.
    pub evidence: Option<Hearing>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShardReport {
    pub name: String,
    pub master: Option<String>,
    /// How long a link of this shard may be silent before its replica no longer hears its
    /// master, and where that comes from (the ping period read from Redis, or a fallback).
    pub silence: SilenceReport,
    pub instances: Vec<InstanceReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SilenceReport {
    pub threshold_ms: u64,
    /// `ping_period`, `configured` or `fallback`.
    pub basis: &'static str,
    /// The same in words, for `status`.
    pub why: String,
}

impl SilenceReport {
    fn new(t: &Topology, rule: &SilenceRule) -> Self {
        let threshold = humantime::format_duration(rule.threshold);
        let (basis, why) = match rule.source {
            SilenceSource::PingPeriod { seconds } => {
                ("ping_period", format!("{threshold}: repl-ping-replica-period {seconds}s + margin"))
            }
            SilenceSource::Configured => ("configured", format!("{threshold}: controller.link_silence")),
            SilenceSource::Fallback { instance, period } => (
                "fallback",
                format!(
                    "{threshold} (fallback): the ping period of {} is {}",
                    t.addr(instance),
                    match period {
                        PingPeriod::Refused => "not readable (CONFIG GET refused)",
                        _ => "not known yet",
                    }
                ),
            ),
        };
        SilenceReport { threshold_ms: rule.threshold.as_millis() as u64, basis, why }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InstanceReport {
    pub instance: String,
    pub room: String,
    /// The server's version (`7.0.15`, `valkey-8.0.1`), once read.
    pub version: Option<String>,
    pub reachable: bool,
    pub down: bool,
    pub role: Option<Role>,
    /// Observed `master_host:master_port`.
    pub master: Option<String>,
    pub link_up: Option<bool>,
    pub offset: Option<i64>,
    /// Shard master's offset minus this one's.
    pub lag_bytes: Option<i64>,
    /// `"master"`, `"replica of host:port"`, or `"(down)"`.
    pub desired: String,
    /// Reachable, with the desired role and parent, and (replicas) its link up.
    pub in_place: bool,
    pub error: Option<String>,
}

pub struct ReportInput<'a> {
    pub topology: &'a Topology,
    pub observation: &'a Observation,
    pub verdict: &'a Verdict,
    pub masters: &'a Masters,
    pub decision: &'a Decision,
    pub plan: &'a Plan,
    pub epoch: u64,
    pub last_failover: Option<&'a FailoverRecord>,
    /// By room: its cooldown, if it is in one ([`crate::plan::cooling`]).
    pub cooling: &'a [Option<Cooling>],
    pub pause: Option<&'a Pause>,
    pub coordination: Option<CoordinationReport>,
}

impl Report {
    pub fn build(input: ReportInput<'_>) -> Report {
        let ReportInput {
            topology: t,
            observation,
            verdict,
            masters,
            decision,
            plan,
            epoch,
            last_failover,
            cooling,
            pause,
            coordination,
        } = input;
        let mut primary_rooms: Vec<usize> = masters.iter().flatten().map(|&m| t.instance(m).room).collect();
        primary_rooms.dedup();
        let primary_room = match (primary_rooms.as_slice(), masters.iter().all(Option::is_some)) {
            ([room], true) => Some(t.rooms[*room].clone()),
            _ => None,
        };
        let rooms: Vec<RoomReport> = verdict
            .rooms
            .iter()
            .enumerate()
            .map(|(room, v)| RoomReport {
                name: t.rooms[room].clone(),
                status: v.status,
                instances_down: v.down,
                instances: v.total,
                witnesses: v
                    .witnesses
                    .iter()
                    .map(|w| WitnessReport {
                        instance: t.addr(w.instance).to_string(),
                        hears: w.hears,
                        evidence: verdict.hearing[w.instance],
                    })
                    .collect(),
                failed_at_unix_ms: cooling.get(room).copied().flatten().map(|c| c.failed_at_unix_ms),
                cooldown_until_unix_ms: cooling.get(room).copied().flatten().map(|c| c.until_unix_ms),
            })
            .collect();
        let shards: Vec<ShardReport> = t
            .shards
            .iter()
            .enumerate()
            .map(|(shard, s)| {
                let desired: HashMap<_, _> = masters[shard]
                    .map(|m| t.desired_parents(m, |id| verdict.down[id]).into_iter().collect())
                    .unwrap_or_default();
                let master_offset = masters[shard]
                    .and_then(|m| observation.live(m))
                    .filter(|i| i.role == Role::Master)
                    .map(|i| i.repl_offset);
                let instances = t
                    .shard_members(shard)
                    .map(|id| {
                        let obs = observation.get(id);
                        let info = obs.live_info();
                        let in_place = match (desired.get(&id), info) {
                            (Some(Parent::None), Some(i)) => i.role == Role::Master,
                            (Some(Parent::Instance(p)), Some(i)) => i
                                .master
                                .as_ref()
                                .is_some_and(|l| l.link_up && l.points_to(&t.addr(*p).host, t.addr(*p).port)),
                            _ => false,
                        };
                        InstanceReport {
                            in_place,
                            instance: t.addr(id).to_string(),
                            room: t.rooms[t.instance(id).room].clone(),
                            version: obs.version.map(|v| v.to_string()),
                            reachable: obs.reachable,
                            down: verdict.down[id],
                            role: info.map(|i| i.role),
                            master: info.and_then(|i| i.master.as_ref()).map(|l| format!("{}:{}", l.host, l.port)),
                            link_up: info.and_then(|i| i.master.as_ref()).map(|l| l.link_up),
                            offset: info.map(|i| i.repl_offset),
                            lag_bytes: master_offset.zip(info).map(|(m, i)| (m - i.repl_offset).max(0)),
                            desired: match desired.get(&id) {
                                Some(Parent::None) => "master".into(),
                                Some(Parent::Instance(p)) => format!("replica of {}", t.addr(*p)),
                                None if masters[shard].is_none() => "(unknown: no master decided)".into(),
                                None => "(down)".into(),
                            },
                            error: obs.last_error.as_ref().filter(|_| !obs.reachable).map(|e| e.to_string()),
                        }
                    })
                    .collect();
                ShardReport {
                    name: s.name.clone(),
                    master: masters[shard].map(|m| t.addr(m).to_string()),
                    silence: SilenceReport::new(t, &verdict.silence[shard]),
                    instances,
                }
            })
            .collect();

        let held: Vec<String> = decision
            .held
            .iter()
            .map(|h| {
                format!(
                    "shard {}: room {} is lost but not failed over: {}",
                    t.shards[h.shard].name, t.rooms[h.room], h.why
                )
            })
            .collect();
        let vetoed: Vec<String> =
            plan.vetoed.iter().map(|v| format!("{}: not yet, {}", v.action.describe(t), v.why)).collect();
        let pending: Vec<String> = plan.actions.iter().map(|a| a.describe(t).to_string()).collect();
        let all_in_place = shards.iter().flat_map(|s| &s.instances).all(|i| i.in_place);
        let healthy = all_in_place && rooms.iter().all(|r| r.status == RoomStatus::Up) && pending.is_empty();

        let room_words: Vec<String> = rooms.iter().map(|r| format!("room {} {}", r.name, r.status.label())).collect();
        let verdict = format!(
            "{}: primary room {}; {}{}",
            if healthy { "HEALTHY" } else { "DEGRADED" },
            primary_room.as_deref().unwrap_or("mixed/unknown"),
            room_words.join(", "),
            if pause.is_some() { "; automatic failover PAUSED" } else { "" }
        );
        Report {
            primary_room,
            healthy,
            verdict,
            epoch,
            rooms,
            shards,
            last_failover: last_failover.cloned(),
            held,
            vetoed,
            pending,
            paused: pause.cloned(),
            coordination,
        }
    }

    /// A discovery-only controller's report: the acting controller's view as the watch
    /// delivered it (no probe of its own).
    pub fn from_view(
        t: &Topology,
        view: Option<&crate::coordination::SharedView>,
        coordination: CoordinationReport,
    ) -> Report {
        let shards: Vec<ShardReport> = view
            .map(|v| {
                v.discovery
                    .shards
                    .iter()
                    .map(|s| {
                        let node = |n: &crate::sentinel::NodeView, master: bool| InstanceReport {
                            instance: n.addr.to_string(),
                            room: t
                                .find_any(&n.addr.host, n.addr.port)
                                .map_or_else(|| "?".to_string(), |id| t.room_name(t.instance(id).room).to_string()),
                            version: None,
                            reachable: !n.disconnected,
                            down: n.sdown,
                            role: Some(if n.answers_as_master { Role::Master } else { Role::Replica }),
                            master: n.master.as_ref().map(|m| m.to_string()),
                            link_up: (!master).then_some(n.link_up),
                            offset: Some(n.offset),
                            lag_bytes: None,
                            desired: if master { "master".into() } else { "replica".into() },
                            in_place: !n.disconnected && n.answers_as_master == master,
                            error: None,
                        };
                        ShardReport {
                            name: s.name.clone(),
                            master: s.master.as_ref().map(|m| m.addr.to_string()),
                            silence: SilenceReport {
                                threshold_ms: 0,
                                basis: "acting_controller",
                                why: "judged by the acting controller".into(),
                            },
                            instances: s
                                .master
                                .iter()
                                .map(|m| node(m, true))
                                .chain(s.replicas.iter().map(|r| node(r, false)))
                                .collect(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let masters: Vec<Option<String>> = shards.iter().map(|s| s.master.clone()).collect();
        let rooms_of: Vec<Option<String>> = masters
            .iter()
            .map(|m| {
                m.as_ref()
                    .and_then(|a| a.parse().ok())
                    .and_then(|a: crate::topology::Addr| t.find_any(&a.host, a.port))
                    .map(|id| t.rooms[t.instance(id).room].clone())
            })
            .collect();
        let primary_room = match rooms_of.first() {
            Some(Some(first)) if rooms_of.iter().all(|r| r.as_ref() == Some(first)) => Some(first.clone()),
            _ => None,
        };
        // Views come only from the acting controller: without one, this one may be stale.
        let healthy = view.is_some()
            && coordination.acting.is_some()
            && shards.iter().all(|s| s.master.is_some())
            && shards.iter().flat_map(|s| &s.instances).all(|i| i.in_place);
        let verdict = match view {
            Some(v) => format!(
                "{}: primary room {}; discovery-only, following {}'s view (fencing token {}){}",
                if healthy { "HEALTHY" } else { "DEGRADED" },
                primary_room.as_deref().unwrap_or("mixed/unknown"),
                v.by,
                v.fencing_token.map_or("-".to_string(), |t| t.to_string()),
                if coordination.acting.is_none() { "; NO acting controller: the view may be stale" } else { "" }
            ),
            None => "DEGRADED: discovery-only, no view from an acting controller yet".into(),
        };
        Report {
            primary_room,
            healthy,
            verdict,
            epoch: view.map_or(0, |v| v.discovery.epoch),
            rooms: vec![],
            shards,
            last_failover: None,
            held: vec![],
            vetoed: vec![],
            pending: vec![],
            paused: None,
            coordination: Some(coordination),
        }
    }

    /// The table `roomguard status` prints, followed by the verdict and any notes.
    pub fn render(&self) -> String {
        let mut table = Table::new();
        table.load_style(UTF8_BORDERS_ONLY).set_header([
            "room",
            "shard",
            "instance",
            "version",
            "role",
            "master",
            "link",
            "offset",
            "lag",
            "should be",
        ]);
        for shard in &self.shards {
            for i in &shard.instances {
                let role = match (i.reachable, i.role) {
                    (false, _) => format!("UNREACHABLE{}", if i.down { " (down)" } else { "" }),
                    (true, Some(Role::Master)) => "master".into(),
                    (true, Some(Role::Replica)) => "replica".into(),
                    (true, None) => "?".into(),
                };
                let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                table.add_row([
                    i.room.clone(),
                    shard.name.clone(),
                    i.instance.clone(),
                    i.version.clone().unwrap_or_else(|| "-".into()),
                    role,
                    i.master.clone().unwrap_or_else(|| "-".into()),
                    match i.link_up {
                        Some(true) => "up".into(),
                        Some(false) => "DOWN".into(),
                        None => "-".into(),
                    },
                    opt(i.offset),
                    opt(i.lag_bytes),
                    i.desired.clone(),
                ]);
            }
        }
        let mut out = format!("{table}\n{}\n", self.verdict);
        if let Some(c) = &self.coordination {
            out.push_str(&c.line());
            out.push('\n');
        }
        let mut silence: Vec<(&str, Vec<&str>)> = Vec::new();
        for s in &self.shards {
            match silence.iter_mut().find(|(why, _)| *why == s.silence.why) {
                Some((_, shards)) => shards.push(&s.name),
                None => silence.push((&s.silence.why, vec![&s.name])),
            }
        }
        for (why, shards) in silence {
            out.push_str(&format!("silence evidence after {why} ({})\n", shards.join(", ")));
        }
        for r in &self.rooms {
            if r.status == RoomStatus::CutOff {
                let hearing: Vec<&str> = r.witnesses.iter().filter(|w| w.hears).map(|w| w.instance.as_str()).collect();
                out.push_str(&format!(
                    "WARNING: this controller cannot reach room {}, but {} still replicate from it: \
                     the controller is cut off, not the room; no failover\n",
                    r.name,
                    hearing.join(", ")
                ));
            }
        }
        for line in self.pause_note().into_iter().chain(self.cooldown_notes()) {
            out.push_str(&format!("{line}\n"));
        }
        if let Some(f) = &self.last_failover {
            out.push_str(&format!("last failover: {}, epoch {}\n", describe_failover(f), self.epoch));
        }
        for i in self.shards.iter().flat_map(|s| &s.instances) {
            if let Some(error) = &i.error {
                out.push_str(&format!("- {} does not answer: {error}\n", i.instance));
            }
        }
        for line in self.held.iter().chain(&self.pending).chain(&self.vetoed) {
            out.push_str(&format!("- {line}\n"));
        }
        out
    }
}

impl Report {
    /// The maintenance-mode line, while paused.
    fn pause_note(&self) -> Option<String> {
        let p = self.paused.as_ref()?;
        Some(format!(
            "PAUSED (maintenance mode): no automatic failover {}; `roomguard failover --room ROOM` still works; \
             `roomguard resume` ends it",
            p.describe(std::time::SystemTime::now())
        ))
    }

    /// One line per room in its cooldown.
    fn cooldown_notes(&self) -> Vec<String> {
        let now = std::time::SystemTime::now();
        let time = |ms: u64| when::describe(ms, now);
        self.rooms
            .iter()
            .filter_map(|r| {
                let (failed, until) = r.failed_at_unix_ms.zip(r.cooldown_until_unix_ms)?;
                Some(format!(
                    "cooldown: room {} failed at {}; no automatic failover toward it before {}",
                    r.name,
                    time(failed),
                    time(until)
                ))
            })
            .collect()
    }
}

/// `to room 2 (auto), shards a, b, at 2026-12-02 09:16:57 UTC (5m ago), took 1.2s`.
fn describe_failover(f: &FailoverRecord) -> String {
    let mut text = format!(
        "to room {} ({}), shards {}, at {}",
        f.to_room,
        f.trigger.label(),
        f.shards.join(", "),
        when::describe(f.at_unix_ms, std::time::SystemTime::now())
    );
    if let Some(ms) = f.took_ms {
        text.push_str(&format!(", took {}", humantime::format_duration(std::time::Duration::from_millis(ms))));
    }
    text
}

/// Escapes text for HTML (names and addresses come from the config file).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const PAGE_STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
header{padding:.7em 1em;border-radius:6px;font-size:1.3em;font-weight:600}\
.ok{background:#d8f5d8}.bad{background:#ffd9d0}.warn{background:#fff1c2}\
table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;padding:.5em;vertical-align:top}\
th.primary{background:#e4ecff}.inst{margin:.25em 0;padding:.3em .5em;border-radius:4px;font-family:monospace}\
.inst.in-place{background:#e9f7e9}.inst.misplaced{background:#fff1c2}.inst.unreachable{background:#ffd9d0}\
.role{font-weight:700}.muted{color:#666}ul{margin:.5em 0}";

impl Report {
    /// The self-contained status page (no script, no external resource; it reloads itself).
    pub fn render_html(&self) -> String {
        let mut h = String::with_capacity(8192);
        h.push_str("<!doctype html><html lang=en><head><meta charset=utf-8>");
        h.push_str("<meta http-equiv=refresh content=2>");
        h.push_str(&format!(
            "<title>roomguard: {}</title><style>{PAGE_STYLE}</style></head><body>",
            esc(&self.verdict)
        ));
        let class = match (self.healthy, self.paused.is_some()) {
            (false, _) => "bad",
            (true, true) => "warn",
            (true, false) => "ok",
        };
        h.push_str(&format!("<header class={class}>{}</header>", esc(&self.verdict)));
        h.push_str(&format!(
            "<p>primary room: <b>{}</b> &middot; epoch {} &middot; last failover: {}</p>",
            esc(self.primary_room.as_deref().unwrap_or("mixed/unknown")),
            self.epoch,
            match &self.last_failover {
                Some(f) => esc(&describe_failover(f)),
                None => "none".into(),
            }
        ));
        let mut notes: Vec<String> = self
            .rooms
            .iter()
            .filter(|r| r.status == RoomStatus::CutOff)
            .map(|r| {
                format!(
                    "This controller cannot reach room {}, but other rooms still replicate from it: \
                     the controller is cut off, not the room. No failover.",
                    esc(&r.name)
                )
            })
            .collect();
        notes.extend(self.pause_note().iter().chain(&self.cooldown_notes()).map(|n| esc(n)));
        notes.extend(self.held.iter().chain(&self.pending).chain(&self.vetoed).map(|n| esc(n)));
        if !notes.is_empty() {
            h.push_str("<ul class=warn>");
            for n in notes {
                h.push_str(&format!("<li>{n}</li>"));
            }
            h.push_str("</ul>");
        }
        h.push_str("<table><tr><th>shard</th>");
        for r in &self.rooms {
            let primary = self.primary_room.as_deref() == Some(r.name.as_str());
            h.push_str(&format!(
                "<th{}>room {}{}<br><span class=muted>{} &middot; {}/{} down</span></th>",
                if primary { " class=primary" } else { "" },
                esc(&r.name),
                if primary { " (primary)" } else { "" },
                r.status.label(),
                r.instances_down,
                r.instances
            ));
        }
        h.push_str("</tr>");
        for s in &self.shards {
            h.push_str(&format!(
                "<tr><td><b>{}</b><br><span class=muted>master {}</span></td>",
                esc(&s.name),
                esc(s.master.as_deref().unwrap_or("unknown"))
            ));
            for r in &self.rooms {
                h.push_str("<td>");
                for i in s.instances.iter().filter(|i| i.room == r.name) {
                    let class = match (i.reachable, i.in_place) {
                        (false, _) => "unreachable",
                        (true, true) => "in-place",
                        (true, false) => "misplaced",
                    };
                    let role = match (i.reachable, i.role) {
                        (false, _) => "unreachable".to_string(),
                        (true, Some(Role::Master)) => "master".into(),
                        (true, _) => "replica".into(),
                    };
                    h.push_str(&format!(
                        "<div class=\"inst {class}\">{} <span class=role>{role}</span>",
                        esc(&i.instance)
                    ));
                    if let Some(m) = &i.master {
                        let link = if i.link_up == Some(true) { "up" } else { "DOWN" };
                        h.push_str(&format!("<br>&larr; {} (link {link})", esc(m)));
                    }
                    if let Some(lag) = i.lag_bytes {
                        h.push_str(&format!("<br>lag {lag} B"));
                    }
                    if !i.in_place {
                        h.push_str(&format!("<br><span class=muted>should be: {}</span>", esc(&i.desired)));
                    }
                    if let Some(e) = &i.error {
                        h.push_str(&format!("<br><span class=muted>{}</span>", esc(e)));
                    }
                    h.push_str("</div>");
                }
                h.push_str("</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table><p class=muted>refreshes every 2 s &middot; <a href=/topology>/topology</a> (JSON) &middot; <a href=/metrics>/metrics</a></p></body></html>\n");
        h
    }
}
