//! HTTP: `/healthz`, `/readyz`, `/metrics`, `/incidents`, `/incidents/{id}`.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .with_state(state)
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if s.healthy(Duration::from_secs(10)) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a worker is stuck\n").into_response()
    }
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, format!("ready pid={}\n", std::process::id())).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
        .into_response()
}

async fn incidents(State(s): State<Arc<AppState>>) -> Response {
    let j = Arc::clone(&s.journal);
    match tokio::task::spawn_blocking(move || j.list()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn incident(State(s): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    let j = Arc::clone(&s.journal);
    match tokio::task::spawn_blocking(move || j.get(id)).await {
        Ok(Ok(e)) => Json(e).into_response(),
        Ok(Err(crate::journal::JournalError::NotFound(_))) => (StatusCode::NOT_FOUND, format!("no incident {id}\n")).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
