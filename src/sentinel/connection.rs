//! One client's session: reads requests, answers them in bounded chunks, and forwards the
//! events it subscribed to.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{broadcast, watch},
};
use tokio_util::sync::CancellationToken;

use super::{
    parse::{ProtocolError, parse_request},
    pubsub::{glob_match, messages},
    reply::{Reply, bulk, err},
    settings::{OUTPUT_CHUNK, SentinelSettings, WRITE_TIMEOUT},
    view::Discovery,
};
use crate::{events::Event, metrics::Metrics};

/// What every connection shares (the accept loop, [`super::server`], makes one).
pub(super) struct Endpoint {
    pub(super) settings: SentinelSettings,
    pub(super) view: watch::Receiver<Discovery>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) myid: String,
    pub(super) started: Instant,
    pub(super) next_id: AtomicU64,
}

pub(super) struct Connection<'a> {
    pub(super) endpoint: &'a Endpoint,
    pub(super) id: u64,
    pub(super) resp3: bool,
    pub(super) authed: bool,
    pub(super) name: Option<Vec<u8>>,
    pub(super) channels: BTreeSet<Vec<u8>>,
    pub(super) patterns: BTreeSet<Vec<u8>>,
    pub(super) events: Option<broadcast::Receiver<Event>>,
    pub(super) quit: bool,
}

impl<'a> Connection<'a> {
    pub(super) fn new(endpoint: &'a Endpoint) -> Self {
        Connection {
            endpoint,
            id: endpoint.next_id.fetch_add(1, Ordering::Relaxed),
            resp3: false,
            authed: endpoint.settings.password.is_none(),
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            events: None,
            quit: false,
        }
    }

    pub(super) fn subscribed(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Serves one client; returns why the connection ended (a metric label).
    pub(super) async fn run(mut self, mut stream: TcpStream, token: &CancellationToken) -> &'static str {
        let max = self.endpoint.settings.max_request_bytes;
        let (mut reader, mut stream) = stream.split();
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        loop {
            let mut out = Vec::new();
            let more = match self.answer(&mut buf, max, &mut out) {
                Ok(more) => more,
                Err(e) => {
                    err(format!("ERR Protocol error: {e}")).encode(self.resp3, &mut out);
                    let _ = self.write(&mut stream, &out).await;
                    return e.label();
                }
            };
            if !out.is_empty() && self.write(&mut stream, &out).await.is_err() {
                return "write";
            }
            if self.quit {
                return "quit";
            }
            // Replies were cut at OUTPUT_CHUNK: answer the rest of the buffer before reading.
            if more {
                continue;
            }
            // A large request is done with: give its memory back.
            if buf.is_empty() && buf.capacity() > 16 * 1024 {
                buf = Vec::with_capacity(1024);
            }
            // Subscribers wait for events and are never idle; others are closed when idle.
            let idle = (self.subscribed() == 0).then_some(self.endpoint.settings.idle_timeout);
            let subscribed = self.subscribed() > 0;
            // Unparsed bytes stay below max_request_bytes (the parser refuses more), so the
            // buffer is bounded by that plus one read.
            buf.reserve(4096);
            let read = async {
                match idle {
                    Some(idle) => tokio::time::timeout(idle, reader.read_buf(&mut buf)).await.ok(),
                    None => Some(reader.read_buf(&mut buf).await),
                }
            };
            tokio::select! {
                _ = token.cancelled() => return "shutdown",
                read = read => match read {
                    None => return "idle",
                    Some(Ok(0)) | Some(Err(_)) => return "client",
                    Some(Ok(_)) => {}
                },
                event = recv(&mut self.events), if subscribed => match event {
                    Ok(event) => {
                        let mut out = Vec::new();
                        self.publish(&event, &mut out);
                        if !out.is_empty() && self.write(&mut stream, &out).await.is_err() {
                            return "write";
                        }
                    }
                    // The client missed events: close so that it reconnects and rediscovers.
                    Err(broadcast::error::RecvError::Lagged(_)) => return "lagged",
                    Err(broadcast::error::RecvError::Closed) => return "shutdown",
                },
            }
        }
    }

    /// Answers the complete requests at the front of `buf` into `out`, stopping once `out`
    /// holds [`OUTPUT_CHUNK`] bytes (or at `QUIT`); `Ok(true)` when it stopped there with
    /// requests possibly left, to be answered after `out` is written. So a client that
    /// pipelines many requests and never reads holds at most one chunk of replies.
    ///
    /// The requests are parsed with a cursor and the answered bytes are removed from `buf` once,
    /// at the end: removing them request by request would move the rest of a pipelined buffer
    /// once per request (quadratic, on the runtime that runs the control loop).
    pub(super) fn answer(&mut self, buf: &mut Vec<u8>, max: usize, out: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        let mut cursor = 0;
        let answered = self.answer_from(buf, &mut cursor, max, out);
        buf.drain(..cursor);
        answered
    }

    /// [`Self::answer`] from `buf[*cursor..]`, moving `cursor` past each request answered.
    pub(super) fn answer_from(
        &mut self,
        buf: &[u8],
        cursor: &mut usize,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProtocolError> {
        while let Some((args, used)) = parse_request(&buf[*cursor..], max)? {
            *cursor += used;
            if !args.is_empty() {
                self.handle(&args, out);
            }
            if self.quit {
                return Ok(false);
            }
            if out.len() >= OUTPUT_CHUNK {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) async fn write(&self, stream: &mut tokio::net::tcp::WriteHalf<'_>, out: &[u8]) -> Result<(), ()> {
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(out)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    pub(super) fn publish(&self, event: &Event, out: &mut Vec<u8>) {
        for (channel, payload) in messages(event) {
            let c = channel.as_bytes();
            if self.channels.contains(c) {
                Reply::Push(vec![bulk("message"), bulk(c), bulk(&payload)]).encode(self.resp3, out);
            }
            for pattern in self.patterns.iter().filter(|p| glob_match(p, c)) {
                Reply::Push(vec![bulk("pmessage"), bulk(pattern), bulk(c), bulk(&payload)]).encode(self.resp3, out);
            }
        }
    }

    pub(super) fn handle(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let command = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        self.endpoint.metrics.sentinel_command(&command);
        let reply = self.dispatch(&command, args, out);
        if let Some(reply) = reply {
            reply.encode(self.resp3, out);
        }
    }
}

async fn recv(rx: &mut Option<broadcast::Receiver<Event>>) -> Result<Event, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::{
        server::fixtures::{endpoint, seed_view},
        settings::{DEFAULT_MAX_REQUEST_BYTES, MAX_SUBSCRIPTIONS},
    };

    #[test]
    fn a_pipeline_is_answered_one_bounded_chunk_at_a_time() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let requests = 4000;
        let mut buf = b"SENTINEL MASTERS\n".repeat(requests);
        let mut one = Vec::new();
        connection.handle(&[b"SENTINEL".to_vec(), b"MASTERS".to_vec()], &mut one);
        let (mut total, mut chunks) = (0, 0);
        loop {
            let mut out = Vec::new();
            let more = connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            assert!(out.len() < OUTPUT_CHUNK + one.len(), "{} bytes buffered", out.len());
            total += out.len();
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(buf.is_empty());
        assert_eq!(total, one.len() * requests, "every request answered");
        assert!(chunks > 1);
    }

    /// Complete requests are answered and removed; a partial one stays, whole, for the next
    /// read, wherever the read cut it.
    #[test]
    fn a_partial_request_stays_in_the_buffer_for_the_next_read() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let pipeline = b"PING\r\n*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n".to_vec();
        let mut whole = Vec::new();
        connection.answer(&mut pipeline.clone(), DEFAULT_MAX_REQUEST_BYTES, &mut whole).unwrap();
        assert_eq!(String::from_utf8_lossy(&whole), "+PONG\r\n+PONG\r\n$5\r\nhello\r\n");
        for cut in 0..=pipeline.len() {
            let (mut buf, mut out) = (pipeline[..cut].to_vec(), Vec::new());
            connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            let answered = cut - buf.len();
            assert!(pipeline[answered..cut] == buf[..], "cut at {cut}: the unanswered rest stays as it was");
            buf.extend_from_slice(&pipeline[cut..]);
            connection.answer(&mut buf, DEFAULT_MAX_REQUEST_BYTES, &mut out).unwrap();
            assert!(buf.is_empty(), "cut at {cut}");
            assert_eq!(out, whole, "cut at {cut}: the same answers, in order");
        }
    }

    #[test]
    fn subscriptions_per_connection_are_capped() {
        let endpoint = endpoint(seed_view());
        let mut connection = Connection::new(&endpoint);
        let mut args = vec![b"SUBSCRIBE".to_vec()];
        args.extend((0..MAX_SUBSCRIPTIONS - 1).map(|i| format!("c{i}").into_bytes()));
        let mut out = Vec::new();
        connection.handle(&args, &mut out);
        connection.handle(&[b"PSUBSCRIBE".to_vec(), b"+*".to_vec(), b"-*".to_vec()], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(connection.subscribed(), MAX_SUBSCRIPTIONS);
        assert_eq!(text.matches("-ERR too many subscriptions").count(), 1, "{text}");
        // Already subscribed: no error, no growth.
        let mut out = Vec::new();
        connection.handle(&[b"SUBSCRIBE".to_vec(), b"c0".to_vec(), b"new".to_vec()], &mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("-ERR").count(), 1, "{text}");
        assert_eq!(connection.subscribed(), MAX_SUBSCRIPTIONS);
    }
}
