//! The accept loop: one task per connection, capped, each holding its slot until it ends.

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, broadcast, watch},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    connection::{Connection, Endpoint},
    settings::SentinelSettings,
    view::Discovery,
};
use crate::{events::Event, metrics::Metrics};

/// Binds `[sentinel] listen` (the caller turns an error into a start-up failure).
pub async fn bind(settings: &SentinelSettings) -> std::io::Result<TcpListener> {
    TcpListener::bind(settings.listen).await
}

/// Serves the endpoint until `token` is cancelled.
pub async fn serve(
    listener: TcpListener,
    settings: SentinelSettings,
    view: watch::Receiver<Discovery>,
    events: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let endpoint = Arc::new(Endpoint {
        settings,
        view,
        events,
        metrics,
        myid: random_id(),
        started: Instant::now(),
        next_id: AtomicU64::new(1),
    });
    info!(listen = ?listener.local_addr().ok(), "Sentinel-compatible endpoint listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "sentinel endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            endpoint.metrics.sentinel_rejected.inc();
            refuse(stream);
            continue;
        };
        let endpoint = endpoint.clone();
        let token = token.clone();
        tokio::spawn(async move {
            // Released however the task ends (even by a panic): the slot and the gauge.
            let _open = Open::new(endpoint.metrics.clone(), permit);
            let reason = Connection::new(&endpoint).run(stream, &token).await;
            debug!(%peer, reason, "sentinel endpoint: connection closed");
            endpoint.metrics.sentinel_closed(reason);
        });
    }
}

/// One open connection: holds its slot and counts in `roomguard_sentinel_connections`.
struct Open {
    metrics: Arc<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: Arc<Metrics>, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics.sentinel_connections.inc();
        Open { metrics, _permit: permit }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.sentinel_connections.dec();
    }
}

/// Over the connection cap: one error line, then close (as Redis with `maxclients`). Written
/// without waiting (a new connection's send buffer is empty, so it fits), and the descriptor
/// is closed at once: refusals hold no task and no descriptor, however many arrive.
fn refuse(stream: TcpStream) {
    // A direct non-blocking write: tokio's `try_write` would refuse before the reactor has
    // seen the new socket writable.
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, b"-ERR max number of clients reached\r\n");
    }
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut id = String::new();
    for i in 0..3u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        let _ = write!(id, "{:016x}", h.finish());
    }
    id.truncate(40);
    id
}

/// An endpoint without a listener, for the session's unit tests.
#[cfg(test)]
pub(super) mod fixtures {
    use std::{
        sync::{Arc, atomic::AtomicU64},
        time::{Duration, Instant},
    };

    use tokio::sync::{broadcast, watch};

    use super::{Endpoint, random_id};
    use crate::{
        metrics::Metrics,
        sentinel::{RawSentinel, view::Discovery},
    };

    pub(crate) fn endpoint(view: Discovery) -> Endpoint {
        let topology = crate::topology::fixtures::seed();
        Endpoint {
            settings: RawSentinel::listening_on("127.0.0.1:0").validate().unwrap(),
            view: watch::channel(view).1,
            events: broadcast::channel(16).0,
            metrics: Arc::new(Metrics::new(&topology)),
            myid: random_id(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn seed_view() -> Discovery {
        let topology = crate::topology::fixtures::seed();
        let masters = (0..topology.shards.len()).map(|s| topology.shard_members(s).next()).collect();
        Discovery::initial(&topology, &masters, Duration::from_secs(5))
    }
}
