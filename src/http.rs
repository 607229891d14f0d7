//! The controller's small HTTP server: `GET /healthz`, `GET /topology`, `GET /metrics`.
//! The listener is bound by the caller before the loop starts, so a port clash is a
//! start-up error and not a log line.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{controller::Shared, metrics::Metrics};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/topology", get(topology))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// 200 once every instance has been probed and a first round has been judged; 503 before.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting: first probe round not complete\n").into_response()
    }
}

async fn topology(State(shared): State<Arc<Shared>>) -> Response {
    let report = shared.report.read().expect("report lock").clone();
    match report {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting: first probe round not complete\n").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], shared.metrics.encode()).into_response()
}
