//! The HTTP API of agents and controllers, and the cluster status shared with `rampart status`.
//!
//! `/healthz`, `/status` (JSON) and `/metrics` (Prometheus text). Read-only: changes to the
//! cluster go through git or the admin commands, never through this API.

pub mod status;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// What a daemon serves: a health check, a status document and metrics, each computed on
/// request by the daemon.
pub trait Served: Send + Sync + 'static {
    fn healthy(&self) -> Result<(), String>;
    fn status(&self) -> serde_json::Value;
    /// Prometheus text exposition format.
    fn metrics(&self) -> String;
}

pub fn router(served: Arc<dyn Served>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .with_state(served)
}

async fn healthz(State(s): State<Arc<dyn Served>>) -> impl IntoResponse {
    match s.healthy() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn status_json(State(s): State<Arc<dyn Served>>) -> impl IntoResponse {
    axum::Json(s.status())
}

async fn metrics(State(s): State<Arc<dyn Served>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics(),
    )
}

/// Prometheus text for one metric with its help and type lines.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    use std::fmt::Write as _;
    writeln!(out, "# HELP {name} {help}").unwrap();
    writeln!(out, "# TYPE {name} {kind}").unwrap();
    for (labels, v) in samples {
        if labels.is_empty() {
            writeln!(out, "{name} {v}").unwrap();
        } else {
            writeln!(out, "{name}{{{labels}}} {v}").unwrap();
        }
    }
}
