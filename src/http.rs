//! The controller's HTTP server: the status page, `/healthz`, `/topology`, `/metrics`, and the
//! token-protected admin API (`POST /failover?room=R`, `POST /pause[?reason=...]`,
//! `POST /resume`). The listener is bound by the caller
//! before the loop starts, so a port clash is a start-up error and not a log line.
//!
//! Without `[http] admin_token` the server is read-only, wherever it listens.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Instant, SystemTime},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    controller::Shared,
    health::{self, Health},
    maintenance,
    metrics::Metrics,
    state::Trigger,
    switchover::{self, FailoverError},
};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/topology", get(topology))
        .route("/metrics", get(metrics))
        .route("/failover", post(failover))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(shared)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

const STARTING: &str = "starting: first probe round not complete\n";

/// 200 once every instance has been probed and a first round has been judged, while the loop
/// completes rounds and the poller ticks; 503 before, and while either has stalled for longer
/// than [`health::stall_limit`] (no failover can happen then). The body gives both ages.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let limit = health::stall_limit(shared.config.controller.poll_interval);
    let (round, poll) = (shared.rounds.age(now), shared.polls.age(now));
    let verdict = health::judge(shared.ready.load(Ordering::Acquire), round, poll, limit);
    let status = if verdict == Health::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, health::render(&verdict, round, poll, limit)).into_response()
}

async fn topology(State(shared): State<Arc<Shared>>) -> Response {
    let report = shared.report.read().expect("report lock").clone();
    match report {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, STARTING).into_response(),
    }
}

async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    let report = shared.report.read().expect("report lock").clone();
    match report {
        Some(report) => Html(report.render_html()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(format!("<meta http-equiv=refresh content=1>{STARTING}")))
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], shared.metrics.encode()).into_response()
}

#[derive(Debug, Deserialize)]
struct FailoverQuery {
    room: String,
    #[serde(default)]
    force: bool,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Compares without an early exit, so response time does not reveal how much of a guessed
/// token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the admin token of a request to the admin API: `None` when it may proceed, else
/// the refusal to answer with (403 without an admin token configured, 401 for a wrong one).
fn refusal(shared: &Shared, headers: &HeaderMap, what: &str) -> Option<Response> {
    let Some(expected) = &shared.config.http.admin_token else {
        return Some(error(StatusCode::FORBIDDEN, "the admin API is disabled: set [http] admin_token to enable it"));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(presented.as_bytes(), expected.expose().as_bytes()) {
        warn!("admin API: {what} refused, missing or wrong token");
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response(),
        );
    }
    None
}

#[derive(Debug, Deserialize)]
struct PauseQuery {
    reason: Option<String>,
}

/// `POST /pause[?reason=...]` (admin token): maintenance mode, as `roomguard pause`, for every
/// controller that uses this controller's state file. Answers with the pause in effect.
async fn pause(State(shared): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<PauseQuery>) -> Response {
    if let Some(refused) = refusal(&shared, &headers, "pause") {
        return refused;
    }
    let state_file = shared.config.controller.state_file.clone();
    let done = tokio::task::spawn_blocking(move || maintenance::pause(&state_file, "admin API", q.reason.as_deref()));
    match done.await {
        Ok(Ok((pause, new))) => {
            let text = pause.describe(SystemTime::now());
            info!("admin API: {}", if new { "paused" } else { "pause requested; already paused" });
            let message = if new { format!("paused {text}") } else { format!("already paused {text}") };
            Json(serde_json::json!({ "paused": pause, "message": message })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the pause task failed: {e}")),
    }
}

/// `POST /resume` (admin token): ends maintenance mode, as `roomguard resume`.
async fn resume(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers, "resume") {
        return refused;
    }
    let state_file = shared.config.controller.state_file.clone();
    match tokio::task::spawn_blocking(move || maintenance::resume(&state_file)).await {
        Ok(Ok(was)) => {
            info!("admin API: resume requested");
            let message = match &was {
                Some(p) => {
                    format!("resumed: automatic failover is on again (it was paused {})", p.describe(SystemTime::now()))
                }
                None => "not paused: automatic failover was already on".to_string(),
            };
            Json(serde_json::json!({ "paused": null, "was": was, "message": message })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the resume task failed: {e}")),
    }
}

/// `POST /failover?room=R[&force=true]` with `Authorization: Bearer <admin_token>`: the same
/// graceful/forced failover as `roomguard failover`, run by this controller.
async fn failover(State(shared): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<FailoverQuery>) -> Response {
    if let Some(refused) = refusal(&shared, &headers, &format!("failover to room {}", q.room)) {
        return refused;
    }
    if let Some(coordination) = &shared.coordination {
        let authority = coordination.authority(Instant::now());
        if authority != crate::coordination::Authority::Act {
            let acting = coordination.status().acting_name.unwrap_or_else(|| "nobody".into());
            return error(
                StatusCode::CONFLICT,
                format!(
                    "failover to room {}: this controller is not the acting one ({}; acting: {acting}); \
                     send it to the acting controller",
                    q.room,
                    authority.label()
                ),
            );
        }
    }
    info!(room = %q.room, force = q.force, "admin API: failover requested");
    // A task of its own: if the client goes away, hyper drops this handler, but the failover
    // (pause, promote, converge, unpause) runs to its end and is counted all the same.
    let task = shared.tasks.spawn({
        let shared = shared.clone();
        async move {
            let _guard = shared.action_lock.lock().await;
            let started = Instant::now();
            let result = switchover::failover(&shared.config, &q.room, q.force, shared.coordination.as_deref()).await;
            match &result {
                Ok(report) => {
                    if report.shards.iter().any(|s| s.how != "already") {
                        shared.metrics.record_failover(&report.room, Trigger::Manual, true, started.elapsed());
                    }
                    info!(room = %report.room, "admin API: failover done");
                }
                Err(FailoverError::UnknownRoom { .. }) => {}
                Err(e) => {
                    shared.metrics.record_failover(&q.room, Trigger::Manual, false, started.elapsed());
                    warn!(error = %e, "admin API: failover did not complete");
                }
            }
            (q.room, result)
        }
    });
    match task.await {
        Ok((_, Ok(report))) => Json(report).into_response(),
        Ok((_, Err(e @ FailoverError::UnknownRoom { .. }))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok((room, Err(e))) => error(StatusCode::CONFLICT, format!("failover to room {room} did not complete: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the failover task failed: {e}")),
    }
}
