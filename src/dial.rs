//! Dialing one instance: the stream ([`crate::wire`]: TCP, TLS, the reply cap), `AUTH` and
//! `CLIENT SETNAME`, within one timeout; and redis-rs' errors as the kinds the controller
//! reasons about ([`ProbeErrorKind`]). The poller ([`crate::probe`]), the actions
//! ([`crate::act`]) and the switchover all connect this way, so it sits below all of them.

use std::time::Duration;

use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError, aio::MultiplexedConnection};

use crate::{
    config::RedisSettings,
    observe::{ProbeError, ProbeErrorKind},
    topology::Addr,
    wire,
};

/// Opens a connection: TCP, TLS when configured, `AUTH`, all within `timeout`, with
/// `timeout` as the per-command response timeout too (redis-rs' defaults, 1 s and 500 ms,
/// are too slow for a 100 ms poller). Every reply on it is capped (see [`crate::wire`]).
pub async fn connect(
    addr: &Addr,
    settings: &RedisSettings,
    timeout: Duration,
) -> Result<MultiplexedConnection, ProbeError> {
    let mut redis_settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(user) = &settings.username {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis_settings = redis_settings.set_password(password.expose());
    }
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    let attempt = async {
        let stream = open_stream(addr, settings).await?;
        let (mut connection, driver) =
            MultiplexedConnection::new_with_config(&redis_settings, stream, config).await.map_err(|e| classify(&e))?;
        // The driver ends when the last handle to the connection is dropped.
        tokio::spawn(driver);
        // Named, so operators see roomguard (and from which host) in `CLIENT LIST`. A refusal
        // (an ACL without `+client|setname`, a renamed CLIENT) leaves it unnamed; anything
        // else (garbage, a closed socket, a timeout) is what the first command would meet.
        let named = redis::cmd("CLIENT").arg("SETNAME").arg(client_name()).query_async::<()>(&mut connection).await;
        match named {
            Err(e) if e.code().is_none() => Err(classify(&e)),
            _ => Ok(connection),
        }
    };
    within(timeout, attempt).await
}

/// The stream to `addr` ([`wire::open`]), its failures as [`ProbeError`]s.
pub async fn open_stream(addr: &Addr, settings: &RedisSettings) -> Result<wire::Capped<Box<dyn wire::Io>>, ProbeError> {
    wire::open(&addr.host, addr.port, settings.tls.as_ref()).await.map_err(|e| match e {
        wire::OpenError::Io(e) => classify(&RedisError::from(e)),
        wire::OpenError::Tls(message) => ProbeError::new(ProbeErrorKind::Tls, message),
    })
}

/// Name resolution, TCP, TLS and `AUTH` together (`attempt`), within one `timeout`.
pub async fn within<T>(
    timeout: Duration,
    attempt: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::new(ProbeErrorKind::Timeout, "connect timed out")),
    }
}

/// `roomguard-<host name>` (characters `CLIENT SETNAME` refuses, spaces, become `_`).
pub fn client_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        // uname(2), not /proc/sys/kernel/hostname: the unit's ProcSubset=pid hides /proc/sys.
        let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let host: String = host.trim().chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
        if host.is_empty() { "roomguard".to_string() } else { format!("roomguard-{host}") }
    })
}

/// Maps a redis-rs error onto the kinds the controller reasons about.
pub fn classify(error: &RedisError) -> ProbeError {
    use redis::ErrorKind;
    let code = error.code().unwrap_or("");
    let text = error.to_string();
    let kind = if error.is_connection_refusal() {
        ProbeErrorKind::Refused
    } else if error.is_timeout() {
        ProbeErrorKind::Timeout
    } else if text.contains(wire::OVERSIZED) {
        ProbeErrorKind::Oversized
    } else if matches!(error.kind(), ErrorKind::AuthenticationFailed)
        || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
    {
        ProbeErrorKind::Auth
    } else if code == "LOADING" {
        ProbeErrorKind::Loading
    } else if text.contains("unknown command") {
        // `rename-command REPLICAOF ""` and friends.
        ProbeErrorKind::UnknownCommand
    } else if matches!(error.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        ProbeErrorKind::Protocol
    } else if error.is_io_error() || error.is_connection_dropped() {
        ProbeErrorKind::Io
    } else {
        ProbeErrorKind::Redis
    };
    ProbeError::new(kind, text)
}
