//! A Redis-Sentinel-compatible endpoint, so that existing Redis clients (redis-py, Jedis,
//! Lettuce, ioredis, go-redis, redis-rs) find the masters roomguard verified and follow its
//! failovers with a configuration change and no code change.
//!
//! roomguard runs beside every app server, so the endpoint listens on localhost
//! (`[sentinel] listen`). Shard names are the Sentinel master names. It answers what clients
//! send to discover masters and replicas (`SENTINEL get-master-addr-by-name`, `masters`,
//! `master`, `replicas`/`slaves`, `sentinels`, `myid`, `ROLE`, `INFO`), the connection
//! handshake (`HELLO` with RESP2/RESP3, `AUTH`, `CLIENT SETNAME/SETINFO`, `PING`), and Pub/Sub
//! (`SUBSCRIBE`/`PSUBSCRIBE`) with Sentinel's event messages (`+switch-master`, `+slave`,
//! `+slave-reconf-done`, `+sdown`, `-sdown`, `+odown`, `-odown`, `+convert-to-slave`), fed by
//! the controller's event stream
//! ([`crate::events`]). The addresses it reports come from a `watch` the controller updates
//! every round: always the verified master, so during a failover the old master is reported
//! (flagged down) until the new one answers as a master — as Sentinel does.
//!
//! The request parser is hand-written: requests are only arrays of bulk strings (or inline
//! commands), and it must refuse an oversized length (`$2147483647`, `*2147483647`) from its
//! header, before buffering or allocating anything; `scripts/fuzz` fuzzes it
//! (`fuzz/fuzz_targets/sentinel_request.rs`). Connections are capped
//! (`max_connections`), requests are capped (`max_request_bytes`), idle connections that are
//! not subscribed are closed after `idle_timeout`, and a client that does not read its
//! replies is dropped after a write timeout; each is counted in a metric.
//!
//! The files follow the seams, as tokio's mini-redis does: `settings` (`[sentinel]` and the
//! open-files budget), `view` (what is reported), `parse` and `reply` (RESP in and out: framing
//! never knows commands), `connection` (one client's session: buffered reads, bounded replies,
//! events), `commands` (what a session answers), `pubsub` (glob patterns, Sentinel's event
//! messages) and `server` (the accept loop).

mod commands;
mod connection;
mod parse;
mod pubsub;
mod reply;
mod server;
mod settings;
mod view;

pub use parse::{Parsed, ProtocolError, parse_request};
pub use server::{bind, serve};
pub use settings::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_BYTES, RawSentinel, SentinelSettings,
    raise_nofile_limit,
};
pub use view::{Discovery, NodeView, ShardView};
