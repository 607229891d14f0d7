//! RESP replies, encoded in RESP2 or RESP3.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A null bulk (RESP2 `$-1`, RESP3 `_`).
    Null,
    /// A null array (RESP2 `*-1`, RESP3 `_`).
    NullArray,
    Array(Vec<Reply>),
    /// A map (RESP3 `%`, RESP2 a flat array of keys and values).
    Map(Vec<(Reply, Reply)>),
    /// An out-of-band Pub/Sub message (RESP3 `>`, RESP2 an array).
    Push(Vec<Reply>),
}

pub(super) fn bulk(s: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(s.as_ref().to_vec())
}

pub(super) fn ok() -> Reply {
    Reply::Simple("OK".into())
}

pub(super) fn err(s: impl Into<String>) -> Reply {
    Reply::Error(s.into())
}

impl Reply {
    pub fn encode(&self, resp3: bool, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, prefix: char, body: &str| {
            out.push(prefix as u8);
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::Simple(s) => line(out, '+', &s.replace(['\r', '\n'], " ")),
            Reply::Error(s) => line(out, '-', &s.replace(['\r', '\n'], " ")),
            Reply::Int(n) => line(out, ':', &n.to_string()),
            Reply::Bulk(b) => {
                line(out, '$', &b.len().to_string());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) | Reply::Push(items) => {
                let prefix = if resp3 && matches!(self, Reply::Push(_)) { '>' } else { '*' };
                line(out, prefix, &items.len().to_string());
                for item in items {
                    item.encode(resp3, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, '%', &pairs.len().to_string());
                } else {
                    line(out, '*', &(pairs.len() * 2).to_string());
                }
                for (k, v) in pairs {
                    k.encode(resp3, out);
                    v.encode(resp3, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_both_protocols() {
        let enc = |r: Reply, resp3| {
            let mut out = Vec::new();
            r.encode(resp3, &mut out);
            String::from_utf8(out).unwrap()
        };
        let map = Reply::Map(vec![(bulk("a"), Reply::Int(1))]);
        assert_eq!(enc(map.clone(), false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(map, true), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(Reply::NullArray, false), "*-1\r\n");
        assert_eq!(enc(Reply::Null, false), "$-1\r\n");
        assert_eq!(enc(Reply::Null, true), "_\r\n");
        assert_eq!(enc(Reply::Push(vec![bulk("x")]), true), ">1\r\n$1\r\nx\r\n");
        assert_eq!(enc(Reply::Push(vec![bulk("x")]), false), "*1\r\n$1\r\nx\r\n");
        assert_eq!(enc(err("ERR a\r\nb"), false), "-ERR a  b\r\n");
    }
}
