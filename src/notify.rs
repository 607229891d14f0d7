//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`), through the `sd-notify`
//! crate: `READY=1` once the control loop has completed its first round (every instance
//! probed, a first verdict), `WATCHDOG=1` from the loop's heartbeat ([`crate::health`]), so a
//! loop that is alive but stuck stops the pings and systemd kills and restarts the process,
//! and `STOPPING=1` when the shutdown begins. Everything is a no-op when `NOTIFY_SOCKET` is
//! unset (not started by systemd, or `Type=simple`); a failed send is logged once, never fatal.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// What the control loop tells systemd, and when.
#[derive(Debug)]
pub struct Notifier {
    /// `WATCHDOG_USEC`, when the unit has `WatchdogSec=`.
    watchdog: Option<Duration>,
    ready_sent: bool,
    last_ping: Option<Instant>,
    /// A send already failed (logged once).
    failed: bool,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` (the crate checks the pid is ours).
    pub fn from_env() -> Notifier {
        Notifier::new(sd_notify::watchdog_enabled())
    }

    pub fn new(watchdog: Option<Duration>) -> Notifier {
        Notifier { watchdog, ready_sent: false, last_ping: None, failed: false }
    }

    /// What to send after a round completed at `now` (`ready`: a first verdict exists):
    /// `READY=1` once, and `WATCHDOG=1` at most every half watchdog period (as
    /// sd_watchdog_enabled(3) advises), not at every round (ten a second).
    pub fn after_round(&mut self, ready: bool, now: Instant) -> Vec<NotifyState<'static>> {
        let mut states = Vec::new();
        if ready && !self.ready_sent {
            self.ready_sent = true;
            states.push(NotifyState::Ready);
        }
        if let Some(period) = self.watchdog
            && self.last_ping.is_none_or(|at| now.saturating_duration_since(at) >= period / 2)
        {
            self.last_ping = Some(now);
            states.push(NotifyState::Watchdog);
        }
        states
    }

    /// [`Self::after_round`], sent.
    pub fn round_completed(&mut self, ready: bool) {
        let states = self.after_round(ready, Instant::now());
        if states.is_empty() {
            return;
        }
        if states.iter().any(|s| matches!(s, NotifyState::Ready)) {
            debug!("systemd: READY=1");
        }
        if let Err(e) = sd_notify::notify(&states)
            && !std::mem::replace(&mut self.failed, true)
        {
            warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET): readiness and watchdog pings are lost");
        }
    }
}

/// `STOPPING=1`: the shutdown has begun (systemd shows "deactivating").
pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Stopping]) {
        warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET) that the controller is stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_round(n: &mut Notifier, ready: bool, at: Instant) -> Vec<String> {
        n.after_round(ready, at).iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ready_once_and_watchdog_every_half_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut n = Notifier::new(Some(s(10)));
        assert_eq!(after_round(&mut n, false, t0), ["WATCHDOG=1"], "pings before ready too");
        assert!(after_round(&mut n, false, t0 + s(1)).is_empty());
        assert_eq!(after_round(&mut n, true, t0 + s(2)), ["READY=1"]);
        assert!(after_round(&mut n, true, t0 + s(4)).is_empty());
        assert_eq!(after_round(&mut n, true, t0 + s(5)), ["WATCHDOG=1"]);
        assert!(after_round(&mut n, true, t0 + s(9)).is_empty());
        assert_eq!(after_round(&mut n, true, t0 + s(10)), ["WATCHDOG=1"]);

        let mut no_watchdog = Notifier::new(None);
        assert_eq!(after_round(&mut no_watchdog, true, t0), ["READY=1"]);
        assert!(after_round(&mut no_watchdog, true, t0 + s(100)).is_empty());
    }
}
