//! The probe's connection: one request, one reply, on a stream the prober owns, read on the
//! prober's own task.
//!
//! Every other command goes through redis-rs' `MultiplexedConnection`, which runs a driver
//! task per connection and passes each request to it through a channel and the reply back
//! through a oneshot: several task wake-ups per request, and a driver task per instance. The
//! poller sends `INFO replication` to every instance ten times a second (2,560 requests a
//! second at 256 instances), where those wake-ups were a large part of the controller's CPU
//! (BENCHMARKS.md, "Cost side by side"). Here a request is one write and, for a reply the size
//! of `INFO`, one read into a buffer kept across requests.
//!
//! Only the framing is ours ([`frame`]: is the buffer one complete RESP2 reply yet?); the reply
//! is parsed by redis-rs ([`redis::parse_redis_value`]) and every failure is a [`RedisError`]
//! of the kind redis-rs would have returned, so [`crate::probe::classify`] types it as before.
//! The size cap is the stream's ([`crate::wire::Capped`]): a reply that never ends fails there.

use std::{io, time::Duration};

use redis::{ErrorKind, RedisError, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::{Capped, Io};

/// Free space ensured in the buffer before each read: an `INFO` reply fits in one read.
const READ_SPACE: usize = 8 * 1024;

/// A connection that sends one command at a time and waits for its reply. After any error the
/// stream may be mid-reply: drop the connection.
pub(crate) struct Connection {
    stream: Capped<Box<dyn Io>>,
    buf: Vec<u8>,
}

impl Connection {
    pub(crate) fn new(stream: Capped<Box<dyn Io>>) -> Self {
        Connection { stream, buf: Vec::with_capacity(READ_SPACE) }
    }

    /// Sends `command` (packed RESP, e.g. [`redis::Cmd::get_packed_command`]) and reads its
    /// reply, all within `timeout`. An error reply is an `Err` carrying the server's code.
    pub(crate) async fn request(&mut self, command: &[u8], timeout: Duration) -> Result<Value, RedisError> {
        match tokio::time::timeout(timeout, self.round_trip(command)).await {
            Ok(result) => result,
            // What redis-rs' response timeout returns.
            Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut).into()),
        }
    }

    async fn round_trip(&mut self, command: &[u8]) -> Result<Value, RedisError> {
        self.buf.clear();
        self.stream.write_all(command).await?;
        // A no-op on TCP; under TLS it sends the record.
        self.stream.flush().await?;
        let len = loop {
            match frame(&self.buf) {
                Ok(Some(len)) => break len,
                Ok(None) => {}
                Err(e) => return Err((ErrorKind::Parse, "invalid reply", e.to_string()).into()),
            }
            self.buf.reserve(READ_SPACE);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                // What redis-rs returns when the server closes the connection.
                return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
            }
        };
        if len != self.buf.len() {
            // One command, one reply: more is a peer out of step with us.
            let extra = self.buf.len() - len;
            return Err((ErrorKind::Parse, "unsolicited bytes after the reply", format!("{extra} bytes")).into());
        }
        redis::parse_redis_value(&self.buf)?.extract_error()
    }
}

/// Why bytes read are not a RESP2 reply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("byte {0:#04x} where a reply type was expected")]
    Type(u8),
    #[error("bad length {0:?}")]
    Length(String),
}

/// The length of the RESP2 reply at the start of `buf` once it is complete, `None` before.
/// Only the structure is checked (type bytes, line ends, lengths); the parser checks the rest.
/// Fails as soon as a byte shows the peer is not speaking RESP2, so garbage costs no timeout.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    match buf.first() {
        None => return Ok(None),
        Some(&kind) if !is_type(kind) => return Err(FrameError::Type(kind)),
        Some(_) => {}
    }
    // Every reply ends with a line end: until the bytes read do, nothing is scanned, so a reply
    // arriving in many reads (a peer streaming up to the cap) is not re-scanned at each one.
    if !buf.ends_with(b"\r\n") {
        return Ok(None);
    }
    let mut at = 0;
    // Elements still to frame: arrays are counted, not recursed into (no depth to exhaust).
    let mut pending: u64 = 1;
    while pending > 0 {
        let Some(&kind) = buf.get(at) else { return Ok(None) };
        if !is_type(kind) {
            return Err(FrameError::Type(kind));
        }
        let Some(line) = buf[at + 1..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let header = &buf[at + 1..at + 1 + line];
        at += 1 + line + 2;
        pending -= 1;
        match kind {
            b'$' => {
                if let Some(len) = length(header)? {
                    at = at.saturating_add(len).saturating_add(2);
                    if buf.len() < at {
                        return Ok(None);
                    }
                }
            }
            b'*' => pending += length(header)?.unwrap_or(0) as u64,
            _ => {}
        }
    }
    Ok(Some(at))
}

fn is_type(byte: u8) -> bool {
    matches!(byte, b'+' | b'-' | b':' | b'$' | b'*')
}

/// A bulk string's or an array's length: `None` for `-1` (nil).
fn length(header: &[u8]) -> Result<Option<usize>, FrameError> {
    let bad = || FrameError::Length(String::from_utf8_lossy(header).into_owned());
    if header == b"-1" {
        return Ok(None);
    }
    if header.is_empty() || !header.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(header).ok().and_then(|s| s.parse().ok()).map(Some).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::wire::MAX_REPLY_BYTES;

    const INFO: &[u8] = b"$33\r\n# Replication\r\nrole:master\r\nx:1\r\n\r\n";

    #[test]
    fn a_reply_is_complete_only_with_its_last_byte() {
        let replies: [&[u8]; 9] = [
            INFO,
            b"+OK\r\n",
            b"-WRONGPASS invalid username-password pair\r\n",
            b":42\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n+x\r\n$-1\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(frame(&reply[..cut]), Ok(None), "{:?} cut at {cut}", String::from_utf8_lossy(reply));
            }
            assert_eq!(frame(reply), Ok(Some(reply.len())), "{:?}", String::from_utf8_lossy(reply));
            // The framed bytes are what redis-rs' parser accepts.
            redis::parse_redis_value(reply).unwrap();
        }
    }

    #[test]
    fn a_bulk_string_may_hold_line_ends_and_type_bytes() {
        let reply = b"$9\r\n*2\r\n-x\r\n+\r\n";
        assert_eq!(frame(reply), Ok(Some(reply.len())));
        assert_eq!(frame(&reply[..reply.len() - 1]), Ok(None));
    }

    #[test]
    fn garbage_fails_at_its_first_byte() {
        assert_eq!(frame(b"HTTP/1.1 400 Bad Request\r\n"), Err(FrameError::Type(b'H')));
        assert_eq!(frame(b"\x00\xff\x13garbage"), Err(FrameError::Type(0)));
        // Inside an array, at the element that is not RESP2.
        assert_eq!(frame(b"*2\r\n+a\r\n%1\r\n"), Err(FrameError::Type(b'%')));
        assert_eq!(frame(b"*2\r\n+a\r\n"), Ok(None));
        for header in [&b"$abc\r\n"[..], b"$-2\r\n", b"$\r\n", b"*1x\r\n", b"$99999999999999999999999\r\n"] {
            assert!(matches!(frame(header), Err(FrameError::Length(_))), "{:?}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn a_long_line_in_progress_is_not_scanned() {
        // The endless sender of fault row 9: framing after every read must not cost the length
        // read so far (the poller's task does it for every instance).
        let mut line = b"+".to_vec();
        line.extend(std::iter::repeat_n(b'a', 1 << 20));
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert_eq!(frame(&line), Ok(None));
        }
        assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
        line.extend_from_slice(b"\r\n");
        assert_eq!(frame(&line), Ok(Some(line.len())));
    }

    #[test]
    fn nested_arrays_are_framed_without_recursion() {
        let depth = 200_000;
        let mut reply = b"*1\r\n".repeat(depth);
        assert_eq!(frame(&reply), Ok(None));
        reply.extend_from_slice(b":1\r\n");
        assert_eq!(frame(&reply), Ok(Some(reply.len())));
    }

    /// A connection over an in-memory pipe, and the server's end.
    fn pipe(cap: usize) -> (Connection, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let stream: Box<dyn Io> = Box::new(client);
        (Connection::new(Capped::new(stream, cap)), server)
    }

    /// The server reads one request, then sends `parts` with a flush and a pause between them.
    fn serve(mut server: tokio::io::DuplexStream, parts: Vec<Vec<u8>>) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut request = vec![0u8; 1024];
            let n = server.read(&mut request).await.unwrap();
            for part in parts {
                server.write_all(&part).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            request.truncate(n);
            // Keep the pipe open until the client is done.
            let _ = server.read(&mut [0u8; 1]).await;
            request
        })
    }

    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_reply_split_at_every_byte_is_read_whole() {
        for cut in 1..INFO.len() {
            let (mut connection, server) = pipe(MAX_REPLY_BYTES);
            let server = serve(server, vec![INFO[..cut].to_vec(), INFO[cut..].to_vec()]);
            let value = connection.request(PING, SECOND).await.unwrap();
            assert_eq!(redis::from_redis_value::<String>(value).unwrap(), "# Replication\r\nrole:master\r\nx:1\r\n");
            drop(connection);
            assert_eq!(server.await.unwrap(), PING, "one write, the whole command");
        }
        // One byte at a time.
        let (mut connection, server) = pipe(MAX_REPLY_BYTES);
        serve(server, INFO.iter().map(|b| vec![*b]).collect());
        assert!(matches!(connection.request(PING, SECOND).await.unwrap(), Value::BulkString(_)));
    }

    #[tokio::test]
    async fn an_error_reply_is_a_server_error_with_its_code() {
        let (mut connection, server) = pipe(MAX_REPLY_BYTES);
        serve(server, vec![b"-LOADING Redis is loading the dataset in memory\r\n".to_vec()]);
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert_eq!(err.code(), Some("LOADING"), "{err}");
    }

    #[tokio::test]
    async fn garbage_closed_or_silent_peers_fail_like_redis_rs() {
        let (mut connection, server) = pipe(MAX_REPLY_BYTES);
        serve(server, vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]);
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Parse, "{err}");

        let (mut connection, server) = pipe(MAX_REPLY_BYTES);
        serve(server, vec![b"+OK\r\n+OK\r\n".to_vec()]);
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Parse, "two replies to one command: {err}");

        let (mut connection, mut server) = pipe(MAX_REPLY_BYTES);
        tokio::spawn(async move {
            let _ = server.read(&mut [0u8; 64]).await;
            server.write_all(b"$10\r\nabc").await.unwrap();
        });
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert!(err.is_connection_dropped(), "closed mid-reply: {err}");

        let (mut connection, _silent) = pipe(MAX_REPLY_BYTES);
        let err = connection.request(PING, Duration::from_millis(20)).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    #[tokio::test]
    async fn a_reply_over_the_cap_fails_oversized() {
        let (mut connection, server) = pipe(1000);
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'a', 4000));
        serve(server, vec![long.clone()]);
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert!(err.to_string().contains(crate::wire::OVERSIZED), "{err}");

        // A declared length beyond the cap fails too, once the cap's worth has arrived.
        let (mut connection, server) = pipe(1000);
        let mut declared = b"$5000\r\n".to_vec();
        declared.extend(std::iter::repeat_n(b'b', 4000));
        serve(server, vec![declared]);
        let err = connection.request(PING, SECOND).await.unwrap_err();
        assert!(err.to_string().contains(crate::wire::OVERSIZED), "{err}");

        // Just under the cap is fine.
        let (mut connection, server) = pipe(1000);
        let mut fits = b"$990\r\n".to_vec();
        fits.extend(std::iter::repeat_n(b'c', 990));
        fits.extend_from_slice(b"\r\n");
        serve(server, vec![fits]);
        assert!(matches!(connection.request(PING, SECOND).await.unwrap(), Value::BulkString(b) if b.len() == 990));
    }

    #[tokio::test]
    async fn the_buffer_is_reused_across_requests() {
        let (mut connection, mut server) = pipe(MAX_REPLY_BYTES);
        tokio::spawn(async move {
            for _ in 0..3 {
                let _ = server.read(&mut [0u8; 64]).await;
                server.write_all(INFO).await.unwrap();
            }
            let _ = server.read(&mut [0u8; 1]).await;
        });
        connection.request(PING, SECOND).await.unwrap();
        let buffer = connection.buf.as_ptr();
        for _ in 0..2 {
            connection.request(PING, SECOND).await.unwrap();
        }
        assert_eq!(connection.buf.as_ptr(), buffer, "no allocation per request");
    }
}
