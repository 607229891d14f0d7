//! Is the process still doing its job? A task that *ends* is caught by the supervisor
//! ([`crate::daemon`]); a task that is alive but stuck (a deadlock, a blocking call on a
//! runtime worker, a disk that hangs a write) is not. So the two tasks everything depends on
//! leave a [`Heartbeat`]: the control loop after every completed round, the poller at every
//! tick. `/healthz` compares their ages with [`stall_limit`] ([`judge`], pure and
//! table-tested) and answers 503 when either stalls; `roomguard_last_round_timestamp_seconds`
//! and `roomguard_last_poll_timestamp_seconds` carry the same facts to Prometheus (alert
//! `RoomguardLoopStalled`).
//!
//! Heartbeats are monotonic ([`Instant`]), so a wall-clock step (NTP) never looks like a stall.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The floor of [`stall_limit`]: a round that fails over (a state-file fsync, conditioned
/// commands each bounded by `controller.timeout`, disconnecting the demoted masters' clients)
/// can take a second or two on a loaded host; that is slow, not stuck.
pub const MIN_STALL: Duration = Duration::from_secs(3);

/// How old the last round (or poller tick) may be before the task counts as stalled: five
/// poll intervals, and at least [`MIN_STALL`].
pub fn stall_limit(poll_interval: Duration) -> Duration {
    (poll_interval * 5).max(MIN_STALL)
}

/// The last time a task showed it was alive. Cheap to clone and to beat (one atomic store),
/// so the poller beats at every tick.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Nanoseconds after `base`, plus one; 0: never.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { base: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    pub fn beat_at(&self, at: Instant) {
        let nanos = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1);
        self.last.store(nanos + 1, Ordering::Release);
    }

    pub fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    /// How long ago it last beat (`None`: never).
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last().map(|at| now.saturating_duration_since(at))
    }
}

/// What `/healthz` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// No round has judged a complete observation yet.
    Starting,
    Ok,
    /// The named tasks (`loop`, `poller`) have not beaten within the limit.
    Stalled(Vec<&'static str>),
}

/// The ages of the two heartbeats (`None`: never beaten) against `limit`. Before the first
/// complete round (`ready` false) the process is starting, whatever the ages.
pub fn judge(ready: bool, round_age: Option<Duration>, poll_age: Option<Duration>, limit: Duration) -> Health {
    let mut stalled = Vec::new();
    if round_age.is_none_or(|age| age > limit) {
        stalled.push("loop");
    }
    if poll_age.is_none_or(|age| age > limit) {
        stalled.push("poller");
    }
    match (ready, stalled.is_empty()) {
        (false, _) => Health::Starting,
        (true, true) => Health::Ok,
        (true, false) => Health::Stalled(stalled),
    }
}

/// The body of `/healthz`: the verdict on the first line, then `name value` lines.
pub fn render(health: &Health, round_age: Option<Duration>, poll_age: Option<Duration>, limit: Duration) -> String {
    let secs = |age: Option<Duration>| age.map_or("none".to_string(), |a| format!("{:.3}", a.as_secs_f64()));
    let mut out = match health {
        Health::Starting => "starting: first probe round not complete\n".to_string(),
        Health::Ok => "ok\n".to_string(),
        Health::Stalled(tasks) => format!(
            "stalled: {} made no progress for more than {} (no failover can happen meanwhile)\n",
            tasks.join(" and "),
            humantime::format_duration(limit)
        ),
    };
    let _ = writeln!(out, "last_round_age_seconds {}", secs(round_age));
    let _ = writeln!(out, "last_poll_age_seconds {}", secs(poll_age));
    let _ = writeln!(out, "stall_limit_seconds {}", limit.as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_judged_per_task() {
        let ms = Duration::from_millis;
        let limit = stall_limit(ms(100));
        assert_eq!(limit, MIN_STALL, "five intervals of 100ms are below the floor");
        assert_eq!(stall_limit(Duration::from_secs(1)), Duration::from_secs(5));
        let fresh = Some(ms(50));
        let old = Some(limit + ms(1));
        for (ready, round, poll, expected) in [
            (false, None, None, Health::Starting),
            (false, old, old, Health::Starting),
            (true, fresh, fresh, Health::Ok),
            (true, Some(limit), Some(limit), Health::Ok),
            (true, old, fresh, Health::Stalled(vec!["loop"])),
            (true, fresh, old, Health::Stalled(vec!["poller"])),
            (true, old, old, Health::Stalled(vec!["loop", "poller"])),
            (true, fresh, None, Health::Stalled(vec!["poller"])),
        ] {
            assert_eq!(judge(ready, round, poll, limit), expected, "{ready} {round:?} {poll:?}");
        }
        let body = render(&Health::Stalled(vec!["loop"]), old, fresh, limit);
        assert!(body.starts_with("stalled: loop made no progress for more than 3s"), "{body}");
        assert!(body.contains("last_round_age_seconds 3.001\nlast_poll_age_seconds 0.050\n"), "{body}");
    }

    #[test]
    fn heartbeat_ages() {
        let h = Heartbeat::default();
        let now = Instant::now();
        assert_eq!(h.age(now), None);
        h.beat_at(now);
        assert_eq!(h.age(now + Duration::from_secs(2)), Some(Duration::from_secs(2)));
        assert_eq!(h.clone().age(now), Some(Duration::ZERO), "clones share the beat");
    }
}
