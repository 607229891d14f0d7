//! Times for people: the status page, `roomguard status` and the logs show wall-clock times as
//! `2026-12-02 09:16:57 UTC (5m 3s ago)`, not as Unix milliseconds. The JSON documents keep
//! the milliseconds (programs read those). A leaf module, so that whoever shows a time can
//! use it without importing the report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-12-02 09:16:57 UTC`.
pub fn utc(unix_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
    // RFC 3339 is `2026-12-02T09:16:57Z`: the same fields, spaced for reading.
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

/// How far `unix_ms` is from `now`, in whole seconds: `5m 3s ago`, `in 4m`, `just now`.
pub fn relative(unix_ms: u64, now: SystemTime) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let whole = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    match now.duration_since(t) {
        Ok(ago) if ago.as_secs() == 0 => "just now".into(),
        Ok(ago) => format!("{} ago", whole(ago)),
        Err(e) if e.duration().as_secs() == 0 => "just now".into(),
        Err(e) => format!("in {}", whole(e.duration())),
    }
}

/// [`utc`] and [`relative`]: `2026-12-02 09:16:57 UTC (5m 3s ago)`.
pub fn describe(unix_ms: u64, now: SystemTime) -> String {
    format!("{} ({})", utc(unix_ms), relative(unix_ms, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_times() {
        let at = 1_764_667_017_000; // 2025-12-02 09:16:57 UTC
        assert_eq!(utc(at), "2025-12-02 09:16:57 UTC");
        let now = UNIX_EPOCH + Duration::from_millis(at + 303_400);
        assert_eq!(relative(at, now), "5m 3s ago");
        assert_eq!(describe(at, now), "2025-12-02 09:16:57 UTC (5m 3s ago)");
        assert_eq!(relative(at + 240_000, UNIX_EPOCH + Duration::from_millis(at)), "in 4m");
        assert_eq!(relative(at, UNIX_EPOCH + Duration::from_millis(at + 999)), "just now");
        assert_eq!(relative(at + 3_600_000 * 26, UNIX_EPOCH + Duration::from_millis(at)), "in 1day 2h");
    }
}
