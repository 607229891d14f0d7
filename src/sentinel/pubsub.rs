//! Pub/Sub: Redis' glob patterns (`PSUBSCRIBE`) and Sentinel's event messages.

use crate::{
    events::{Event, InstanceRef},
    topology::Addr,
};

/// Redis' glob-style pattern matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as PSUBSCRIBE uses.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Backtracking point for the last `*`: (pattern position after it, text position).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => class_match(pattern, p, text[t]),
                b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
                c => (c == text[t]).then_some(p + 1),
            }
        } else {
            None
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; the position after
/// the class when it matches.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    // An unterminated class ends the pattern, as in Redis.
    let end = if i < pattern.len() { i + 1 } else { i };
    (matched != negate).then_some(end)
}

/// Sentinel's name for an instance in event messages: `master <name> <ip> <port>` or
/// `slave <ip:port> <ip> <port> @ <master-name> <master-ip> <master-port>`.
fn instance_text(i: &InstanceRef) -> String {
    let (ip, port) = (&i.addr.host, i.addr.port);
    if i.is_master {
        format!("master {} {ip} {port}", i.shard)
    } else {
        let m = i.shard_master.as_ref().map(|m| format!(" @ {} {} {}", i.shard, m.host, m.port)).unwrap_or_default();
        format!("slave {ip}:{port} {ip} {port}{m}")
    }
}

/// `slave <ip:port> <ip> <port> @ <master-name> <master-ip> <master-port>`, Sentinel's `%@`
/// for a replica: the address after `@` is the shard's master (not the replica's parent).
fn replica_text(replica: &Addr, shard: &str, master: &Addr) -> String {
    let (ip, port) = (&replica.host, replica.port);
    format!("slave {ip}:{port} {ip} {port} @ {shard} {} {}", master.host, master.port)
}

/// The Sentinel Pub/Sub messages (channel, payload) for one event, in Sentinel's order and
/// formats (redis `src/sentinel.c`, `sentinelEvent`'s `%@`).
pub fn messages(event: &Event) -> Vec<(String, String)> {
    match event {
        // Sentinel: `+slave-reconf-done` per reconfigured replica (named under the old
        // master), `+switch-master`, then `+slave` per replica of the new master, the old
        // master included (`sentinelResetMasterAndChangeAddress`).
        Event::MasterSwitched { shard, old, new, replicas, reconfigured, .. } => {
            let mut out: Vec<(String, String)> =
                reconfigured.iter().map(|r| ("+slave-reconf-done".into(), replica_text(r, shard, old))).collect();
            out.push(("+switch-master".into(), format!("{shard} {} {} {} {}", old.host, old.port, new.host, new.port)));
            out.extend(replicas.iter().map(|r| ("+slave".into(), replica_text(r, shard, new))));
            out
        }
        Event::SubjectivelyDown { instance, down } => {
            vec![(if *down { "+sdown" } else { "-sdown" }.into(), instance_text(instance))]
        }
        // Sentinel adds the quorum to `+odown` only; roomguard is its own quorum of one.
        Event::ObjectivelyDown { instance, down: true } => {
            vec![("+odown".into(), format!("{} #quorum 1/1", instance_text(instance)))]
        }
        Event::ObjectivelyDown { instance, down: false } => vec![("-odown".into(), instance_text(instance))],
        Event::Demoted { shard, instance, master, shard_master, .. } => {
            vec![("+convert-to-slave".into(), replica_text(instance, shard, shard_master.as_ref().unwrap_or(master)))]
        }
        Event::RoomLost { .. } | Event::RoomBack { .. } | Event::CutOff { .. } => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", "+switch-master"));
        assert!(m("+switch-*", "+switch-master"));
        assert!(m("?sdown", "+sdown") && m("?sdown", "-sdown"));
        assert!(m("[+-]odown", "-odown") && !m("[^+-]odown", "-odown"));
        assert!(m("[a-z]*", "x") && !m("[a-c]", "d"));
        assert!(m("\\*", "*") && !m("\\*", "x"));
        assert!(!m("+sdown", "+odown") && !m("a*b", "ac") && m("a*b*c", "aXbYbc"));
        assert!(m("", "") && !m("", "a") && m("**", ""));
    }

    #[test]
    fn event_messages_use_sentinel_formats() {
        let master = Addr::new("127.0.0.11", 6401);
        let replica = InstanceRef {
            shard: "shard-6401".into(),
            room: "1".into(),
            addr: Addr::new("127.0.0.11", 6403),
            is_master: false,
            shard_master: Some(master.clone()),
        };
        let as_master = InstanceRef { addr: master.clone(), is_master: true, ..replica.clone() };
        assert_eq!(
            messages(&Event::MasterSwitched {
                shard: "shard-6401".into(),
                old: master.clone(),
                new: Addr::new("127.0.0.12", 6401),
                room: "2".into(),
                trigger: crate::state::Trigger::Auto,
                replicas: vec![Addr::new("127.0.0.12", 6403), master.clone()],
                reconfigured: vec![Addr::new("127.0.0.12", 6403)],
                epoch: 3,
            }),
            [
                ("+slave-reconf-done", "slave 127.0.0.12:6403 127.0.0.12 6403 @ shard-6401 127.0.0.11 6401"),
                ("+switch-master", "shard-6401 127.0.0.11 6401 127.0.0.12 6401"),
                ("+slave", "slave 127.0.0.12:6403 127.0.0.12 6403 @ shard-6401 127.0.0.12 6401"),
                ("+slave", "slave 127.0.0.11:6401 127.0.0.11 6401 @ shard-6401 127.0.0.12 6401"),
            ]
            .map(|(c, p)| (c.to_string(), p.to_string()))
        );
        assert_eq!(
            messages(&Event::ObjectivelyDown { instance: as_master.clone(), down: true }),
            [("+odown".to_string(), "master shard-6401 127.0.0.11 6401 #quorum 1/1".to_string())]
        );
        // A demoted old master chained under room 2's tail is named under the shard's master.
        assert_eq!(
            messages(&Event::Demoted {
                shard: "shard-6401".into(),
                room: "1".into(),
                instance: master.clone(),
                master: Addr::new("127.0.0.12", 6403),
                shard_master: Some(Addr::new("127.0.0.12", 6401)),
            }),
            [(
                "+convert-to-slave".to_string(),
                "slave 127.0.0.11:6401 127.0.0.11 6401 @ shard-6401 127.0.0.12 6401".to_string()
            )]
        );
        assert_eq!(
            messages(&Event::SubjectivelyDown { instance: replica, down: true }),
            [("+sdown".to_string(), "slave 127.0.0.11:6403 127.0.0.11 6403 @ shard-6401 127.0.0.11 6401".to_string())]
        );
        assert_eq!(
            messages(&Event::ObjectivelyDown { instance: as_master, down: false }),
            [("-odown".to_string(), "master shard-6401 127.0.0.11 6401".to_string())]
        );
    }
}
