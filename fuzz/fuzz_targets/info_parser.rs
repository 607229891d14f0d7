//! Whatever an instance answers to `INFO replication`, the parser returns a value or a typed
//! error: it never panics, and what it accepts is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomguard::info::{self, Role};

fuzz_target!(|data: &[u8]| {
    // The probe hands the parser redis-rs' reply as a String: invalid UTF-8 never gets here.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = info::parse(text) {
        assert_eq!(
            parsed.role == Role::Replica,
            parsed.master.is_some(),
            "a replica, and only a replica, has a master link"
        );
        let _ = parsed.master_silent(12);
        let _ = parsed.descends_from(parsed.replid2.as_deref());
        let _ = parsed.shares_history(parsed.replid.as_deref());
    }
});
