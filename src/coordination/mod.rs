//! Optional coordination through etcd (`[coordination]`): one *acting* controller per
//! deployment, the designated masters in one shared record changed only by compare-and-swap,
//! a room fenced when its controller loses the etcd quorum, and discovery-only controllers
//! that serve clients from an etcd watch without polling Redis.
//!
//! Without `[coordination]` nothing here runs and roomguard stays quorum-free.
//!
//! etcd decides *who* acts, never *whether* a room is lost: the acting controller still needs
//! the cross-room evidence of [`crate::detect`] to fail over. The pieces:
//!
//! - [`record`]: the keys and what they hold (pure);
//! - [`session`]: the etcd I/O — the lease and the campaign for the acting key, the watch that
//!   follows the shared record, the compare-and-swap that publishes a decision;
//!
//! Around it, outside this module (they act on Redis or on the process, this module only
//! talks to etcd): [`crate::fence`] stops a room's masters from accepting writes when its
//! controller loses the quorum and the other rooms; [`crate::follower`] is the
//! discovery-only controller's loop; the control loop ([`crate::controller`]) asks
//! [`Coordinator::authority`] every round whether it may act.

pub mod record;
mod session;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;

pub use record::{SharedState, SharedView};
pub use session::PublishError;

use crate::topology::{RoomId, Topology};

/// `[coordination]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoordination {
    /// The etcd members' client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    pub prefix: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub role: Role,
    pub room: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    #[serde(default)]
    pub on_etcd_unavailable: Unavailable,
}

/// What a controller does in a coordinated deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Polls Redis; acts while it holds the acting lease, observes otherwise.
    #[default]
    Acting,
    /// Polls nothing: serves the endpoint, hooks and metrics from the shared record.
    Discovery,
}

/// What an acting-capable controller does when it cannot reach the etcd quorum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unavailable {
    /// No automatic failover (and no action at all) until etcd answers again; alert.
    #[default]
    Hold,
    /// Act as a quorum-free controller (roomguard without `[coordination]`) meanwhile.
    QuorumFree,
}

impl Unavailable {
    pub fn label(self) -> &'static str {
        match self {
            Unavailable::Hold => "hold",
            Unavailable::QuorumFree => "quorum-free",
        }
    }
}

pub const DEFAULT_PREFIX: &str = "/roomguard";
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// etcd grants no lease shorter than 1.5 election timeouts (1.5 s at its defaults), rounded
/// up to whole seconds.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct CoordinationSettings {
    pub endpoints: Vec<String>,
    /// Every key starts with it (no trailing `/`): several deployments share one etcd.
    pub prefix: String,
    /// This controller's name in the acting key.
    pub name: String,
    pub role: Role,
    /// The room this controller runs in: it fences that room when it loses the quorum.
    pub room: Option<RoomId>,
    pub lease_ttl: Duration,
    pub on_unavailable: Unavailable,
}

impl RawCoordination {
    /// `default_name` is used when `name` is absent (host name and HTTP port).
    pub fn validate(self, topology: &Topology, default_name: String) -> Result<CoordinationSettings, String> {
        if self.etcd.is_empty() {
            return Err("`coordination.etcd` lists no etcd member (e.g. [\"http://10.0.3.1:2379\"])".into());
        }
        for url in &self.etcd {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("`coordination.etcd`: \"{url}\" is not an http://host:port URL (https is not supported yet)")
            })?;
            if rest.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(format!("`coordination.etcd`: \"{url}\" has no host:port"));
            }
        }
        let prefix = self.prefix.unwrap_or_else(|| DEFAULT_PREFIX.into());
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(format!("`coordination.prefix` = \"{prefix}\" must start with / and name something"));
        }
        let prefix = prefix.trim_end_matches('/').to_string();
        let name = self.name.unwrap_or(default_name);
        if name.trim().is_empty() {
            return Err("`coordination.name` is empty".into());
        }
        let lease_ttl = self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        if lease_ttl < MIN_LEASE_TTL || lease_ttl.subsec_nanos() != 0 {
            return Err(format!(
                "`coordination.lease_ttl` = \"{}\" must be whole seconds, at least {}s (etcd's shortest lease)",
                humantime::format_duration(lease_ttl),
                MIN_LEASE_TTL.as_secs()
            ));
        }
        let room = match self.room {
            None => None,
            Some(room) => Some(topology.rooms.iter().position(|r| *r == room).ok_or_else(|| {
                format!("`coordination.room` = \"{room}\" is not one of the rooms {:?}", topology.rooms)
            })?),
        };
        if self.role == Role::Discovery && room.is_some() {
            return Err("`coordination.room` is for acting controllers (they fence their room); \
                 a discovery-only controller touches no Redis: remove it"
                .into());
        }
        Ok(CoordinationSettings {
            endpoints: self.etcd,
            prefix,
            name,
            role: self.role,
            room,
            lease_ttl,
            on_unavailable: self.on_etcd_unavailable,
        })
    }
}

impl CoordinationSettings {
    /// Every etcd request gives up after this; the lease is renewed this often.
    pub fn request_timeout(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How long without a successful round trip to the quorum before this controller takes
    /// its room's side of a partition for granted and fences it: one lease. Shorter would
    /// fence the *surviving* room when the lost room held the etcd leader (the election and
    /// one timed-out request take 2–3 s); with one renewal period and the Redis command, the
    /// room is fenced a little after a lease it may hold has lapsed.
    pub fn fence_after(&self) -> Duration {
        self.lease_ttl
    }

    /// From the moment a room loses the quorum to the moment its masters refuse writes, at
    /// most: the last contact is at most the moment of the cut, the fence condition is
    /// checked every [`Self::request_timeout`], and the `CLIENT PAUSE` takes at most one
    /// Redis `timeout`.
    pub fn fencing_bound(&self, redis_timeout: Duration) -> Duration {
        self.fence_after() + self.request_timeout() + redis_timeout
    }

    /// How long a controller that just started observes before it campaigns for the lease:
    /// two leases, so that a controller that has watched the deployment (seen a master come
    /// back empty, read the ping periods) takes over first when the acting one restarts.
    pub fn warm_up(&self) -> Duration {
        self.lease_ttl * 2
    }

    pub fn key(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }
}

/// What the session knows about etcd right now.
#[derive(Clone, Debug)]
pub struct Status {
    pub started: Instant,
    /// When the last request that reached the quorum was *sent* (so that deadlines derived
    /// from it are never later than etcd's own).
    pub last_contact: Option<Instant>,
    /// This controller holds the acting key, and etcd cannot have expired its lease before
    /// this instant (renewal sent + TTL − one request timeout of margin).
    pub acting_until: Option<Instant>,
    /// Who holds the acting key, as last read.
    pub acting_name: Option<String>,
    pub last_error: Option<String>,
    /// The watch on the prefix is established.
    pub watching: bool,
}

impl Status {
    /// This controller holds the acting lease at `now`.
    pub fn acting_at(&self, now: Instant) -> bool {
        self.acting_until.is_some_and(|until| now < until)
    }

    /// How long no request reached the quorum (since the start, before the first one).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_contact.unwrap_or(self.started))
    }
}

/// What the loop may do this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    /// This controller holds the acting lease: decide and act, publishing decisions by CAS.
    Act,
    /// etcd is unreachable and `on_etcd_unavailable = "quorum-free"`: act as without etcd.
    QuorumFree,
    /// Another controller acts (or none yet): follow the shared record, act on nothing.
    Observe { acting: Option<String> },
    /// etcd is unreachable and `on_etcd_unavailable = "hold"`: act on nothing.
    Hold,
}

impl Authority {
    pub fn may_act(&self) -> bool {
        matches!(self, Authority::Act | Authority::QuorumFree)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Authority::Act => "acting",
            Authority::QuorumFree => "quorum-free",
            Authority::Observe { .. } => "observing",
            Authority::Hold => "holding",
        }
    }
}

/// Pure: what `status` allows at `now`.
pub fn authority(settings: &CoordinationSettings, status: &Status, now: Instant) -> Authority {
    if status.acting_at(now) {
        return Authority::Act;
    }
    if !reachable(settings, status, now) {
        return match settings.on_unavailable {
            Unavailable::Hold => Authority::Hold,
            Unavailable::QuorumFree => Authority::QuorumFree,
        };
    }
    Authority::Observe { acting: status.acting_name.clone() }
}

/// Pure: etcd answered within one lease (a controller that just started gets one lease).
pub fn reachable(settings: &CoordinationSettings, status: &Status, now: Instant) -> bool {
    status.silent_for(now) <= settings.lease_ttl
}

/// The process's handle on etcd: the session's status, the shared record as last seen, and
/// the client to publish decisions with. Shared by the loop, the fence, the follower and HTTP.
pub struct Coordinator {
    pub settings: CoordinationSettings,
    topology: Topology,
    client: etcd_client::Client,
    status: Mutex<Status>,
    /// The shared record (`state`) as last seen: by the watch, or our own CAS.
    state: tokio::sync::watch::Sender<Option<SharedState>>,
    /// The acting controller's view (`view`), as last seen by the watch.
    view: tokio::sync::watch::Sender<Option<SharedView>>,
    /// What the loop wants the view to be (the session writes it while acting).
    outbox: tokio::sync::watch::Sender<Option<SharedView>>,
    /// The lease the session holds (for the compare-and-swap).
    lease: Mutex<Option<i64>>,
    /// The revision of a `state` record this controller cannot read (another layout).
    unreadable: Mutex<Option<u64>>,
    /// Watch responses received (a metric).
    watch_events: std::sync::atomic::AtomicU64,
}

impl Coordinator {
    /// Builds the client (no connection is made yet: the session connects and retries).
    pub async fn new(settings: CoordinationSettings, topology: Topology) -> Result<Arc<Coordinator>, String> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(settings.request_timeout())
            .with_timeout(settings.request_timeout())
            .with_keep_alive(settings.request_timeout(), settings.request_timeout())
            .with_keep_alive_while_idle(true)
            // A member cut off from the others answers "no leader" at once instead of
            // serving what it last knew (and cancels watches).
            .with_require_leader(true);
        let client = etcd_client::Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|e| format!("`coordination.etcd` {:?}: {e}", settings.endpoints))?;
        let status = Status {
            started: Instant::now(),
            last_contact: None,
            acting_until: None,
            acting_name: None,
            last_error: None,
            watching: false,
        };
        Ok(Arc::new(Coordinator {
            settings,
            topology,
            client,
            status: Mutex::new(status),
            state: tokio::sync::watch::channel(None).0,
            view: tokio::sync::watch::channel(None).0,
            outbox: tokio::sync::watch::channel(None).0,
            lease: Mutex::new(None),
            unreadable: Mutex::new(None),
            watch_events: Default::default(),
        }))
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("coordination status").clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("coordination status"))
    }

    pub fn authority(&self, now: Instant) -> Authority {
        authority(&self.settings, &self.status(), now)
    }

    /// The shared record as last seen.
    pub fn shared_state(&self) -> Option<SharedState> {
        self.state.borrow().clone()
    }

    pub fn subscribe_view(&self) -> tokio::sync::watch::Receiver<Option<SharedView>> {
        self.view.subscribe()
    }

    /// The loop's view, written to etcd by the session while this controller acts (only
    /// when it changed).
    pub fn offer_view(&self, view: SharedView) {
        self.outbox.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&view);
            *current = Some(view);
            changed
        });
    }

    /// The revision of a `state` record that could not be read, if that is what etcd holds.
    fn unreadable_revision(&self) -> Option<u64> {
        *self.unreadable.lock().expect("unreadable")
    }

    pub fn watch_events(&self) -> u64 {
        self.watch_events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The session task (see [`session`]).
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        session::run(self, stop).await
    }
}

/// The default controller name: the host's name and the HTTP port, unique per host.
pub fn default_name(http_port: u16) -> String {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "roomguard".into());
    format!("{host}:{http_port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(on_unavailable: Unavailable) -> CoordinationSettings {
        CoordinationSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/roomguard".into(),
            name: "a".into(),
            role: Role::Acting,
            room: None,
            lease_ttl: Duration::from_secs(3),
            on_unavailable,
        }
    }

    fn status(started: Instant) -> Status {
        Status { started, last_contact: None, acting_until: None, acting_name: None, last_error: None, watching: false }
    }

    #[test]
    fn who_acts() {
        let t0 = Instant::now();
        let s = settings(Unavailable::Hold);
        let mut st = status(t0);
        // Just started, no contact yet: observe for one lease, not "unavailable" at once.
        assert_eq!(authority(&s, &st, t0 + Duration::from_secs(1)), Authority::Observe { acting: None });
        assert_eq!(authority(&s, &st, t0 + Duration::from_secs(4)), Authority::Hold);
        let q = settings(Unavailable::QuorumFree);
        assert_eq!(authority(&q, &st, t0 + Duration::from_secs(4)), Authority::QuorumFree);
        // Holding the lease: act until its margin ends, then (etcd still answered) observe.
        st.last_contact = Some(t0 + Duration::from_secs(1));
        st.acting_until = Some(t0 + Duration::from_secs(3));
        st.acting_name = Some("a".into());
        assert_eq!(authority(&s, &st, t0 + Duration::from_secs(2)), Authority::Act);
        assert_eq!(
            authority(&s, &st, t0 + Duration::from_millis(3500)),
            Authority::Observe { acting: Some("a".into()) }
        );
        // No contact for longer than the lease: unavailable, whatever the acting key said.
        assert_eq!(authority(&s, &st, t0 + Duration::from_millis(4100)), Authority::Hold);
        assert!(Authority::Act.may_act() && Authority::QuorumFree.may_act());
        assert!(!Authority::Hold.may_act() && !Authority::Observe { acting: None }.may_act());
    }

    #[test]
    fn the_fencing_bound_is_shorter_than_two_leases() {
        let s = settings(Unavailable::Hold);
        assert_eq!(s.fence_after(), Duration::from_secs(3));
        assert_eq!(s.fencing_bound(Duration::from_millis(250)), Duration::from_millis(4250));
        assert_eq!(s.key("state"), "/roomguard/state");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let t = Topology::new(vec!["1".into(), "2".into()], vec![]);
        let raw = |f: &dyn Fn(&mut RawCoordination)| {
            let mut r = RawCoordination {
                etcd: vec!["http://127.0.0.1:2379".into()],
                prefix: None,
                name: None,
                role: Role::Acting,
                room: None,
                lease_ttl: None,
                on_etcd_unavailable: Unavailable::Hold,
            };
            f(&mut r);
            r.validate(&t, "host:9121".into())
        };
        let ok = raw(&|_| {}).unwrap();
        assert_eq!((ok.name.as_str(), ok.prefix.as_str()), ("host:9121", "/roomguard"));
        for (change, expected) in [
            (&(|r: &mut RawCoordination| r.etcd.clear()) as &dyn Fn(&mut RawCoordination), "lists no etcd member"),
            (&|r: &mut RawCoordination| r.etcd = vec!["https://e:2379".into()], "https is not supported"),
            (&|r: &mut RawCoordination| r.etcd = vec!["http://e".into()], "has no host:port"),
            (&|r: &mut RawCoordination| r.prefix = Some("rg".into()), "`coordination.prefix`"),
            (&|r: &mut RawCoordination| r.lease_ttl = Some(Duration::from_secs(1)), "at least 2s"),
            (&|r: &mut RawCoordination| r.lease_ttl = Some(Duration::from_millis(2500)), "whole seconds"),
            (&|r: &mut RawCoordination| r.room = Some("9".into()), "\"9\" is not one of the rooms"),
            (
                &|r: &mut RawCoordination| {
                    r.role = Role::Discovery;
                    r.room = Some("1".into())
                },
                "discovery-only",
            ),
        ] {
            let e = raw(change).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }
}
