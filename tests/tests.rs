//! One integration-test binary (as ripgrep does): one link step on a 2-core CI machine.
//! Every test starts its own real `redis-server` processes on its own ports.

mod util;

mod alerts;
mod cli;
mod clients;
mod coordination;
mod docs;
mod etcd;
mod failover;
mod faults;
mod hostile;
mod logs;
mod maintenance;
mod observability;
mod package;
mod secrets;
mod security;
mod sentinel;
mod service;
mod silence;
mod structure;
mod supervision;
mod versions;
