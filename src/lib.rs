//! roomguard: a quorum-free failover controller for Redis deployments whose replication
//! chains span machine rooms.
//!
//! Data flows through one pipeline, one module per step:
//!
//! ```text
//! probe (I/O) -> observe -> detect -> decide -> plan -> act (I/O) -> verify (next round)
//! ```
//!
//! - [`config`] turns `controller.toml` into a validated [`topology::Topology`];
//! - [`info`] parses `INFO replication`; [`probe`] polls every instance (one task, grouped probes);
//!   [`dial`] opens every connection to an instance (the poller's, the actions', the switchover's);
//! - [`observe`] holds what the pollers saw; [`detect`] judges instances and rooms;
//! - [`plan`] decides which instance should be each shard's master and diffs the desired
//!   chains against what Redis reports; [`act`] sends the resulting commands;
//! - [`controller`] is the loop, [`state`] the persisted decisions, [`metrics`] and
//!   [`http`] what operators see, [`switchover`] the manual failover, [`lab`] the local demo;
//! - [`events`] is the stream of what the controller verified, which the Sentinel-compatible
//!   endpoint ([`sentinel`]) and the [`hooks`] follow; [`audit`] reports Redis settings that
//!   undermine the guarantees; [`version`] tells which server (Redis 2.8 to 7.x, Valkey 8) an
//!   instance runs and what it can do.
//!
//! [`daemon`] is where the process is assembled: it starts every task above, supervises them
//! (a task that ends stops the process, for systemd to restart) and stops them; [`health`]
//! catches the tasks that hang instead (`/healthz`, and systemd's watchdog through [`notify`]).
//! [`reload`] applies a SIGHUP; [`logging`] sets up the logs; [`maintenance`] is the pause
//! (`roomguard pause`); `when` shows times for people.
#![forbid(unsafe_code)]

pub mod act;
pub mod audit;
pub mod cli;
pub mod config;
pub mod controller;
pub mod coordination;
pub mod daemon;
pub mod detect;
pub mod dial;
pub mod events;
pub mod fence;
pub mod follower;
pub mod health;
pub mod hooks;
pub mod http;
pub mod info;
pub mod lab;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod reload;
pub mod report;
mod resp;
pub mod secret;
pub mod sentinel;
pub mod state;
pub mod switchover;
pub mod topology;
pub mod version;
mod when;
pub mod wire;
