//! RESP requests: a cursor parser for arrays of bulk strings and inline commands that refuses
//! an oversized length from its header, before buffering or allocating anything.

use super::settings::MAX_ARGS;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("invalid bulk length")]
    BulkLength,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("request larger than {0} bytes")]
    TooLarge(usize),
    #[error("unbalanced quotes or missing CRLF")]
    Malformed,
}

impl ProtocolError {
    pub(super) fn label(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge(_) | ProtocolError::MultibulkLength | ProtocolError::BulkLength => "too_large",
            _ => "malformed",
        }
    }
}

/// One parsed request: its arguments and how many bytes of the buffer it used.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// A header line (`*3`, `$5`) ending in CRLF, from `start`; `Ok(None)` while incomplete.
fn header(buf: &[u8], start: usize, err: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    const MAX_HEADER: usize = 32;
    let rest = &buf[start..];
    let Some(end) = rest.iter().take(MAX_HEADER).position(|&b| b == b'\r') else {
        return if rest.len() >= MAX_HEADER { Err(err) } else { Ok(None) };
    };
    if rest.len() < end + 2 {
        return Ok(None);
    }
    if rest[end + 1] != b'\n' {
        return Err(err);
    }
    let n = std::str::from_utf8(&rest[1..end]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(err)?;
    Ok(Some((n, start + end + 2)))
}

/// Parses one request from the front of `buf`: its arguments and the bytes it used.
/// `Ok(None)`: incomplete, read more. Refuses anything larger than `max` bytes from the
/// header, without waiting for (or allocating) the announced bytes.
pub fn parse_request(buf: &[u8], max: usize) -> Result<Option<Parsed>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, max);
    }
    let Some((count, mut pos)) = header(buf, 0, ProtocolError::MultibulkLength)? else { return Ok(None) };
    if count > MAX_ARGS {
        return Err(ProtocolError::MultibulkLength);
    }
    let mut args = Vec::new();
    for _ in 0..count.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError::ExpectedBulk(buf[pos] as char));
        }
        let Some((len, start)) = header(buf, pos, ProtocolError::BulkLength)? else { return Ok(None) };
        if len < 0 || len as u64 > max as u64 || start + len as usize > max {
            return Err(ProtocolError::BulkLength);
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Malformed);
        }
        args.push(buf[start..end].to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// An inline command (`PING\r\n`, as telnet or `redis-cli` in a pipe might send).
fn parse_inline(buf: &[u8], max: usize) -> Result<Option<Parsed>, ProtocolError> {
    let Some(nl) = buf.iter().take(max + 1).position(|&b| b == b'\n') else {
        return if buf.len() > max { Err(ProtocolError::TooLarge(max)) } else { Ok(None) };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    if line.contains(&b'"') || line.contains(&b'\'') {
        return Err(ProtocolError::Malformed);
    }
    let args = line.split(|b| b.is_ascii_whitespace()).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect();
    Ok(Some((args, nl + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::reply::Reply;

    fn parse(s: &str) -> Result<Option<(Vec<String>, usize)>, ProtocolError> {
        parse_request(s.as_bytes(), 1024)
            .map(|o| o.map(|(args, used)| (args.into_iter().map(|a| String::from_utf8(a).unwrap()).collect(), used)))
    }

    #[test]
    fn requests() {
        assert_eq!(parse("*1\r\n$4\r\nPING\r\n"), Ok(Some((vec!["PING".into()], 14))));
        assert_eq!(parse("PING\r\n"), Ok(Some((vec!["PING".into()], 6))));
        assert_eq!(parse("  sentinel  myid \n"), Ok(Some((vec!["sentinel".into(), "myid".into()], 18))));
        assert_eq!(parse("*0\r\n"), Ok(Some((vec![], 4))));
        for partial in ["*", "*2", "*2\r", "*2\r\n$4\r\nPI", "*2\r\n$4\r\nPING\r\n", "PING", "*1\r\n$4\r\nPING\r"] {
            assert_eq!(parse(partial), Ok(None), "{partial:?}");
        }
        assert_eq!(parse("*1\r\n$2147483647\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse("*2147483647\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse("*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse("*x\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse("*1\r\n:1\r\n"), Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(parse("*1\r\n$4\r\nPINGxx"), Err(ProtocolError::Malformed));
        assert_eq!(parse("*11111111111111111111111111111111111111"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse(&"A".repeat(2000)), Err(ProtocolError::TooLarge(1024)));
        assert_eq!(parse("SET \"a b\"\r\n"), Err(ProtocolError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics_and_respects_the_cap(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(Some((args, used))) = parse_request(&bytes, 1024) {
                proptest::prop_assert!(used <= bytes.len());
                proptest::prop_assert!(args.iter().map(Vec::len).sum::<usize>() <= 1024);
            }
        }

        #[test]
        fn encoded_commands_parse_back(args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..6)) {
            let mut out = Vec::new();
            Reply::Array(args.iter().map(|a| Reply::Bulk(a.clone())).collect()).encode(false, &mut out);
            proptest::prop_assert_eq!(parse_request(&out, 1024).unwrap(), Some((args, out.len())));
        }
    }
}
