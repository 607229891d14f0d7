//! The discovery-only controller's loop (`[coordination] role = "discovery"`): it polls no
//! Redis. Every view the acting controller writes to etcd reaches it through the watch
//! ([`crate::coordination`]); it hands the view to the Sentinel-compatible endpoint, derives
//! the same events as the acting controller did (hooks, `+switch-master`) from consecutive
//! snapshots, and publishes the report and the metrics. One watch event, one update: clients
//! of a discovery-only controller learn a failover as soon as etcd delivers it.
//!
//! App servers run these (a thousand of them cost Redis nothing); a few acting-capable
//! controllers run in the rooms.

use std::{
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    controller::Shared,
    coordination::{Coordinator, SharedView},
    events,
    report::{CoordinationReport, Report},
};

/// Runs until `stop`; beats the round heartbeat every `poll_interval` (there is no round to
/// wait for), so `/healthz` tells a stuck follower from an idle one.
pub async fn run(coordinator: Arc<Coordinator>, shared: Arc<Shared>, stop: CancellationToken) {
    let t = shared.config.topology.clone();
    let mut views = coordinator.subscribe_view();
    let mut ticker = tokio::time::interval(shared.config.controller.poll_interval);
    let mut last: Option<SharedView> = None;
    // systemd: READY=1 once a first view arrived, WATCHDOG=1 at every beat.
    let mut notifier = crate::notify::Notifier::from_env();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = views.changed() => if changed.is_err() { break },
            _ = ticker.tick() => {}
        }
        let view = views.borrow_and_update().clone();
        if let Some(view) = view.as_ref().filter(|v| last.as_ref() != Some(*v)) {
            shared.discovery.send_replace(view.discovery.clone());
            // Events: what changed since the view last taken.
            if let Some(before) = &last {
                for event in events::diff(&t, &before.snapshot, &view.snapshot, &view.triggers) {
                    if let events::Event::MasterSwitched { shard, new, .. } = &event {
                        info!(shard = %shard, master = %new, by = %view.by, "new master (from the acting controller's view)");
                    }
                    let _ = shared.events.send(event);
                }
            }
            last = Some(view.clone());
            shared.ready.store(true, Ordering::Release);
        }
        let status = coordinator.status();
        let token = last.as_ref().and_then(|v| v.fencing_token);
        shared.metrics.set_coordination(status.watching, false, false, token, coordinator.watch_events());
        let report = CoordinationReport::new(
            &coordinator.settings,
            "discovery-only",
            status.acting_name,
            status.watching,
            token,
        );
        *shared.report.write().expect("report lock") = Some(Report::from_view(&t, last.as_ref(), report));
        // Both heartbeats of /healthz: there is no poller, the watch is this loop's input.
        shared.rounds.beat();
        shared.polls.beat();
        notifier.round_completed(shared.ready.load(Ordering::Acquire));
        shared.metrics.record_liveness(SystemTime::now(), None);
    }
}
