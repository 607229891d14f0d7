//! The byte stream under every Redis connection: TCP, optionally TLS (rustls), and a cap on
//! how much one reply may be.
//!
//! We open the stream ourselves and hand it to redis-rs
//! (`MultiplexedConnection::new_with_config`) instead of letting redis-rs dial, for two
//! reasons:
//!
//! - **Bounded memory.** redis-rs buffers a reply until it is complete. A peer that never
//!   stops sending (a broken proxy, a non-Redis service that streams, a hostile one sending
//!   `+aaaa…` without end) would make it buffer for the whole response timeout: on a LAN that
//!   is hundreds of megabytes per probe. [`Capped`] fails the read once a reply exceeds
//!   [`MAX_REPLY_BYTES`]; the probe reports `oversized`. `INFO replication` is well under a
//!   kilobyte per replica, so the cap is generous.
//! - **TLS under our control.** The cap sits *above* TLS (it counts plaintext, so TLS
//!   control messages cannot reset it), certificate verification is always on, and a
//!   handshake failure is its own error kind (`tls`), not a generic I/O error.
//!
//! TLS uses rustls with the ring provider (the same stack redis-rs' `tokio-rustls-comp`
//! feature uses). There is deliberately no "insecure" switch: a controller that can be
//! talked into promoting or demoting by anyone on the path must verify who it talks to. Use
//! a private CA (`ca_file`); the certificates must name the instances' hosts (IP SANs for IP
//! addresses) or the common `server_name`.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, ClientConfig, RootCertStore},
};

/// Largest reply accepted from an instance. A reply is everything read between two writes;
/// roomguard sends one command at a time on a connection, so that is one command's reply.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Text of the error a [`Capped`] stream fails with; probe errors are classified by it.
pub const OVERSIZED: &str = "reply exceeds the size limit";

/// TLS settings resolved from `[redis]`: certificate files loaded and checked at start-up.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    /// Name verified in the server certificate; `None`: the instance's host.
    pub server_name: Option<String>,
    /// For display only (`check-config`, Debug): the files, never their contents.
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for TlsSettings {}

/// Why TLS settings could not be loaded; `String` messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: rustls_pki_types::pem::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {error}")]
    Rejected { path: PathBuf, error: rustls::Error },
}

impl TlsSettings {
    /// Loads the CA bundle and, for servers with `tls-auth-clients yes`, a client
    /// certificate and key.
    pub fn load(
        ca_file: &Path,
        client: Option<(&Path, &Path)>,
        server_name: Option<String>,
    ) -> Result<TlsSettings, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca_file)? {
            roots.add(cert).map_err(|error| TlsError::Rejected { path: ca_file.to_owned(), error })?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = certificates(cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|error| TlsError::Read { path: key_file.to_owned(), error })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| TlsError::Rejected { path: key_file.to_owned(), error })?
            }
        };
        Ok(TlsSettings {
            config: Arc::new(config),
            server_name,
            ca_file: ca_file.to_owned(),
            cert_file: client.map(|(c, _)| c.to_owned()),
        })
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Read { path: path.to_owned(), error })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// A stream redis-rs can run on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a stream could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, not a TLS port, ...).
    Tls(String),
}

/// Connects to `host:port`, then runs the TLS handshake when `tls` is set. The result is
/// capped at [`MAX_REPLY_BYTES`] per reply.
pub async fn open(host: &str, port: u16, tls: Option<&TlsSettings>) -> Result<Capped<Box<dyn Io>>, OpenError> {
    let tcp = TcpStream::connect((host, port)).await.map_err(OpenError::Io)?;
    // Commands are tiny and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = tls.server_name.as_deref().unwrap_or(host);
            let name = ServerName::try_from(name.to_string())
                .map_err(|e| OpenError::Tls(format!("{name:?} is not a valid TLS server name: {e}")))?;
            let connector = TlsConnector::from(tls.config.clone());
            let stream = connector.connect(name, tcp).await.map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => OpenError::Io(e),
                _ => OpenError::Tls(format!("TLS handshake failed: {e}")),
            })?;
            Box::new(stream)
        }
    };
    Ok(Capped::new(stream, MAX_REPLY_BYTES))
}

/// Fails reads once more than `cap` bytes arrived since the last write. Overshoot is at
/// most one read (the reader's buffer), so memory stays bounded by about twice the cap.
pub struct Capped<S> {
    inner: S,
    cap: usize,
    since_write: usize,
}

impl<S> Capped<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        Capped { inner, cap, since_write: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.since_write > self.cap {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{OVERSIZED} ({} bytes)", self.cap),
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.since_write += read;
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.since_write = 0;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.since_write = 0;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn capped_fails_after_the_cap_and_resets_on_write() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut capped = Capped::new(client, 10);
        server.write_all(b"0123456789ab").await.unwrap();
        let mut buf = vec![0u8; 12];
        capped.read_exact(&mut buf).await.unwrap();
        let mut more = [0u8; 1];
        let err = capped.read(&mut more).await.unwrap_err();
        assert!(err.to_string().contains(OVERSIZED), "{err}");

        // A write (the next command) starts a new reply.
        capped.write_all(b"PING").await.unwrap();
        server.write_all(b"+PONG\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        capped.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
}
