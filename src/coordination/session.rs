//! The etcd I/O, owned by one task ([`run`], supervised by [`crate::daemon`]) with two halves:
//!
//! - **the lease** (acting-capable controllers): every `lease_ttl / 3` renew the lease (or
//!   grant one) and read or take the acting key (`create_revision == 0` → put it with our
//!   lease). Holding the key, the controller may act until the renewal's *send* time plus the
//!   TTL minus one request timeout: etcd cannot have expired the lease before that. While it
//!   acts it also writes the view the loop offers ([`Coordinator::offer_view`]).
//! - **the watch**: read every key under the prefix, then watch from the next revision; on
//!   any error, read again and watch again. Everything the controller knows of the shared
//!   record comes through here (or from its own compare-and-swap).
//!
//! Every request has the same timeout, and a member that lost the quorum answers "no leader"
//! (`require_leader`), so a partition shows as failed requests within one timeout.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{
    Coordinator, Role,
    record::{self, ACTING, STATE, VIEW},
};
use crate::state::State;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("etcd did not answer: {0}")]
    Unreachable(String),
    #[error("this controller no longer holds the acting key (held by {})", .holder.as_deref().unwrap_or("nobody"))]
    NotActing { holder: Option<String> },
    #[error("the shared record changed since revision {expected} (now {current}): following it instead")]
    Conflict { expected: u64, current: u64 },
}

/// The lease as the session holds it.
#[derive(Default)]
struct Lease {
    id: Option<i64>,
    keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    /// When the last renewal that etcd answered was sent (or the lease granted).
    renewed_at: Option<Instant>,
    /// A lease dropped here because no renewal reached etcd for a whole TTL. etcd may still
    /// hold it (a new etcd leader restarts every lease at its full TTL), and with it the acting
    /// key: it is revoked as soon as etcd answers, so that someone may act at once.
    dropped: Option<i64>,
}

impl Coordinator {
    fn lease_id(&self) -> Option<i64> {
        *self.lease.lock().expect("lease id")
    }

    /// Publishes a decision: the `state` key is replaced only if it is still at the revision
    /// `state` derives from (its `fencing_token`; `None`: a first start, the key absent — or
    /// unreadable, then that one is replaced) and this controller still holds the acting key.
    /// A decision taken on an older picture than etcd's is refused, however it was taken (the
    /// loop, the quorum-free fallback, a switchover). Returns the new revision, the decision's
    /// fencing token.
    pub async fn publish_state(&self, state: &State) -> Result<u64, PublishError> {
        let expected = state.fencing_token.or(self.unreadable_revision());
        let lease = self.lease_id().ok_or(PublishError::NotActing { holder: self.status().acting_name })?;
        let (state_key, acting_key) = (self.settings.key(STATE), self.settings.key(ACTING));
        let mut stored = state.clone();
        // The token is the revision of this very write: unknown until etcd answers.
        stored.fencing_token = None;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(state_key.clone(), CompareOp::Equal, expected.unwrap_or(0) as i64),
                Compare::value(acting_key.clone(), CompareOp::Equal, self.settings.name.clone()),
                Compare::lease(acting_key.clone(), CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::put(state_key.clone(), stored.to_json(&self.topology), None)])
            .or_else([TxnOp::get(state_key, None), TxnOp::get(acting_key, None)]);
        let sent = Instant::now();
        let response = self.request(self.client.clone().txn(txn)).await.map_err(PublishError::Unreachable)?;
        self.contact(sent);
        let revision = response.header().map_or(0, |h| h.revision()) as u64;
        if response.succeeded() {
            let mut state = stored;
            state.fencing_token = Some(revision);
            self.take_state(record::SharedState { revision, state });
            return Ok(revision);
        }
        let mut current = 0;
        let mut holder = None;
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                for kv in get.kvs() {
                    if kv.key() == self.settings.key(STATE).as_bytes() {
                        current = kv.mod_revision() as u64;
                        self.apply(kv);
                    } else {
                        holder = Some((String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()));
                    }
                }
            }
        }
        match holder {
            Some((name, l)) if name == self.settings.name && l == lease => {
                Err(PublishError::Conflict { expected: expected.unwrap_or(0), current })
            }
            other => Err(PublishError::NotActing { holder: other.map(|(name, _)| name) }),
        }
    }

    /// One linearizable read of every key under the prefix (`roomguard status`, the fence
    /// before it lifts, the watch before it starts): who acts and the shared record, then in
    /// [`Coordinator::status`] and [`Coordinator::shared_state`]. Returns the read's revision.
    pub async fn read_once(&self) -> Result<i64, String> {
        let prefix = format!("{}/", self.settings.prefix);
        let sent = Instant::now();
        let response = self.request(self.client.clone().get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        self.contact(sent);
        if !response.kvs().iter().any(|kv| kv.key() == self.settings.key(ACTING).as_bytes()) {
            self.acting_key_deleted();
        }
        for kv in response.kvs() {
            self.apply(kv);
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// One etcd request, bounded by the request timeout (the client's own timeout does not
    /// cover a connection that is still being set up).
    async fn request<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.settings.request_timeout(), call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.settings.request_timeout())),
        }
    }

    fn contact(&self, sent: Instant) {
        self.update(|s| {
            if s.last_contact.is_none_or(|c| c < sent) {
                s.last_contact = Some(sent);
            }
            s.last_error = None;
        });
    }

    fn failed(&self, error: String) {
        self.update(|s| {
            if s.last_error.as_ref() != Some(&error) {
                warn!(error = %error, "etcd request failed");
                s.last_error = Some(error);
            }
        });
    }

    /// Takes one key's value from a read or a watch event.
    fn apply(&self, kv: &KeyValue) {
        let key = kv.key();
        if key == self.settings.key(STATE).as_bytes() {
            match record::parse_state(kv.value(), kv.mod_revision() as u64, &self.topology) {
                Ok(shared) => self.take_state(shared),
                Err(e) => {
                    error!(
                        key = %self.settings.key(STATE),
                        revision = kv.mod_revision(),
                        error = %e,
                        "the shared record cannot be used (written for another configuration?): the acting \
                         controller replaces it with the masters it reads from Redis"
                    );
                    *self.unreadable.lock().expect("unreadable") = Some(kv.mod_revision() as u64);
                }
            }
        } else if key == self.settings.key(VIEW).as_bytes() {
            match record::parse_view(kv.value(), &self.topology) {
                Ok(view) => {
                    self.view.send_replace(Some(view));
                }
                Err(e) => warn!(key = %self.settings.key(VIEW), error = %e, "ignoring the shared view"),
            }
        } else if key == self.settings.key(ACTING).as_bytes() {
            let name = String::from_utf8_lossy(kv.value()).into_owned();
            self.update(|s| s.acting_name = Some(name));
        }
    }

    /// A readable record, kept if it is newer than the one held (the watch and this
    /// controller's own compare-and-swap may deliver the same one in either order).
    fn take_state(&self, shared: record::SharedState) {
        *self.unreadable.lock().expect("unreadable") = None;
        self.state.send_if_modified(|current| {
            let newer = record::newer(&shared, current.as_ref());
            if newer {
                *current = Some(shared);
            }
            newer
        });
    }

    fn acting_key_deleted(&self) {
        self.update(|s| {
            s.acting_name = None;
            s.acting_until = None;
        });
    }
}

/// The session: the lease half and the watch half, until `stop`.
pub async fn run(coordinator: Arc<Coordinator>, stop: CancellationToken) {
    let lease = async {
        if coordinator.settings.role == Role::Acting {
            hold_lease(&coordinator, &stop).await;
        }
    };
    tokio::join!(lease, follow_keys(&coordinator, &stop));
}

async fn hold_lease(c: &Coordinator, stop: &CancellationToken) {
    let mut lease = Lease::default();
    let mut ticker = tokio::time::interval(c.settings.request_timeout());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written_view = None;
    let mut outbox = c.outbox.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
            // A new view goes out at once (a failover reaches discovery-only controllers one
            // watch event later), not at the next renewal.
            Ok(()) = outbox.changed() => {
                flush_view(c, &mut written_view).await;
                continue;
            }
        }
        let sent = Instant::now();
        // A keep-alive is no proof of the quorum: a leader cut off from the other members
        // still answers them locally until it steps down (measured: up to 1 s). Only the
        // campaign's transaction (a linearizable read or a write) counts as contact; it runs
        // whether or not the renewal worked, so that reaching etcd is noticed either way.
        let renewed = renew(c, &mut lease, sent).await;
        if let Err(e) = &renewed {
            c.failed(e.clone());
        }
        // A controller that just started has no history of the deployment (offsets seen before
        // a restart, ping periods): while it warms up, one that has it may take the lease first.
        let warm = sent.saturating_duration_since(c.status().started) >= c.settings.warm_up();
        let outcome = campaign(c, &lease, warm).await;
        if outcome.is_ok() {
            c.contact(sent);
            if let Some(dropped) = lease.dropped.take() {
                match c.request(c.client.clone().lease_revoke(dropped)).await {
                    Ok(_) => info!(lease = dropped, "revoked the lease dropped while etcd did not answer"),
                    Err(e) => debug!(lease = dropped, error = %e, "the dropped lease is gone already"),
                }
            }
        }
        match outcome {
            // Acting needs this tick's renewal: the deadline below counts from it.
            Ok(true) if renewed.is_ok() => {
                let until = sent + c.settings.lease_ttl - c.settings.request_timeout();
                let was = c.status().acting_at(Instant::now());
                c.update(|s| {
                    s.acting_until = Some(until);
                    s.acting_name = Some(c.settings.name.clone());
                });
                if !was {
                    info!(name = %c.settings.name, "this controller is now the ACTING controller (it holds the etcd lease)");
                }
            }
            // Still ours, but not renewed this tick: acting until the last deadline.
            Ok(true) => {}
            Ok(false) => {
                let was = c.status().acting_at(Instant::now());
                c.update(|s| s.acting_until = None);
                if was {
                    warn!("this controller is no longer the acting controller");
                    // Whatever another controller wrote meanwhile is rewritten when this one
                    // acts again.
                    written_view = None;
                }
            }
            Err(e) => {
                c.failed(e);
                continue;
            }
        }
        flush_view(c, &mut written_view).await;
    }
    // An orderly stop hands the acting role over at once instead of after the TTL.
    if let Some(id) = lease.id {
        let _ = c.request(c.client.clone().lease_revoke(id)).await;
        c.update(|s| s.acting_until = None);
        info!("etcd lease revoked: another controller may act at once");
    }
}

/// Renews the lease, or grants one when there is none. A lease that etcd says expired, or
/// that no renewal reached for a whole TTL (etcd has expired it, or will: its own leader
/// change aside), is dropped and a new one granted next time: a controller cut off longer
/// than its lease must be able to act again once etcd answers.
async fn renew(c: &Coordinator, lease: &mut Lease, sent: Instant) -> Result<(), String> {
    let ttl = c.settings.lease_ttl.as_secs() as i64;
    if lease.id.is_none() {
        let granted = c.request(c.client.clone().lease_grant(ttl, None)).await?;
        *lease = Lease { id: Some(granted.id()), keeper: None, renewed_at: Some(sent), dropped: lease.dropped };
        *c.lease.lock().expect("lease id") = lease.id;
        debug!(lease = granted.id(), ttl, "etcd lease granted");
        return Ok(());
    }
    let id = lease.id.expect("checked");
    let renewed = async {
        if lease.keeper.is_none() {
            lease.keeper = Some(c.request(c.client.clone().lease_keep_alive(id)).await?);
        }
        let (keeper, stream) = lease.keeper.as_mut().expect("set above");
        c.request(async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await
    }
    .await;
    let expired = match renewed {
        Ok(Some(response)) if response.ttl() > 0 => {
            lease.renewed_at = Some(sent);
            return Ok(());
        }
        // TTL 0, or the stream ended.
        Ok(_) => "etcd says it expired".to_string(),
        Err(e) if e.contains("lease not found") => e,
        Err(e) if lease.renewed_at.is_some_and(|at| sent.saturating_duration_since(at) < c.settings.lease_ttl) => {
            lease.keeper = None;
            return Err(e);
        }
        Err(e) => format!("not renewed for a whole TTL ({e})"),
    };
    warn!(lease = id, "the etcd lease is gone: {expired}; a new one will be granted");
    *lease = Lease { dropped: Some(id), ..Lease::default() };
    *c.lease.lock().expect("lease id") = None;
    c.update(|s| s.acting_until = None);
    Err(format!("the etcd lease is gone: {expired}"))
}

/// Takes the acting key if nobody holds it (and `may_take`); true when this controller holds it.
async fn campaign(c: &Coordinator, lease: &Lease, may_take: bool) -> Result<bool, String> {
    let key = c.settings.key(ACTING);
    let Some(id) = lease.id.filter(|_| may_take) else {
        // No lease to campaign with: still one linearizable read (who acts; etcd answers).
        let read = c.request(c.client.clone().get(key, None)).await?;
        let holder = read.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
        c.update(|s| s.acting_name = holder);
        return Ok(false);
    };
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), c.settings.name.clone(), Some(PutOptions::new().with_lease(id)))])
        .or_else([TxnOp::get(key, None)]);
    let response = c.request(c.client.clone().txn(txn)).await?;
    if response.succeeded() {
        return Ok(true);
    }
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op
            && let Some(kv) = get.kvs().first()
        {
            let name = String::from_utf8_lossy(kv.value()).into_owned();
            let ours = name == c.settings.name && kv.lease() == id;
            c.update(|s| s.acting_name = Some(name));
            return Ok(ours);
        }
    }
    Ok(false)
}

/// Writes the view the loop offered if it is new and this controller acts.
async fn flush_view(c: &Coordinator, written: &mut Option<record::SharedView>) {
    if !c.status().acting_at(Instant::now()) {
        return;
    }
    let offered = c.outbox.borrow().clone();
    if let Some(view) = offered.as_ref().filter(|v| written.as_ref() != Some(*v))
        && write_view(c, view).await
    {
        *written = offered;
    }
}

/// Writes the view, if this controller still holds the acting key.
async fn write_view(c: &Coordinator, view: &record::SharedView) -> bool {
    let acting_key = c.settings.key(ACTING);
    let txn = Txn::new()
        .when([Compare::value(acting_key, CompareOp::Equal, c.settings.name.clone())])
        .and_then([TxnOp::put(c.settings.key(VIEW), serde_json::to_vec(view).expect("view serializes"), None)]);
    match c.request(c.client.clone().txn(txn)).await {
        Ok(r) => r.succeeded(),
        Err(e) => {
            c.failed(e);
            false
        }
    }
}

/// Reads every key under the prefix, then watches from the next revision, again after any
/// error.
async fn follow_keys(c: &Coordinator, stop: &CancellationToken) {
    let prefix = format!("{}/", c.settings.prefix);
    let retry = c.settings.request_timeout();
    while !stop.is_cancelled() {
        let revision = match c.read_once().await {
            Ok(revision) => revision,
            Err(e) => {
                c.failed(e);
                pause(stop, retry).await;
                continue;
            }
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = match c.request(c.client.clone().watch(prefix.clone(), Some(options))).await {
            Ok(stream) => stream,
            Err(e) => {
                c.failed(e);
                pause(stop, retry).await;
                continue;
            }
        };
        c.update(|s| s.watching = true);
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                m = stream.message() => m,
            };
            match message {
                Ok(Some(response)) if !response.canceled() => {
                    // For a discovery-only controller the open watch is what "reachable"
                    // means; an acting-capable one counts linearizable requests only (a
                    // member cut off from the quorum may still deliver what it had).
                    if c.settings.role == Role::Discovery {
                        c.contact(Instant::now());
                    }
                    c.watch_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => c.apply(kv),
                            EventType::Delete if kv.key() == c.settings.key(ACTING).as_bytes() => {
                                c.acting_key_deleted()
                            }
                            EventType::Delete => {}
                        }
                    }
                }
                Ok(Some(response)) => {
                    c.failed(format!("etcd cancelled the watch: {}", response.cancel_reason()));
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    c.failed(format!("the watch failed: {e}"));
                    break;
                }
            }
        }
        c.update(|s| s.watching = false);
        pause(stop, retry).await;
    }
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
