//! The admin endpoint: list, deploy and remove pipelines over HTTP, and the engine's health.
//!
//! | request | does |
//! |---|---|
//! | `GET /pipelines` | the deployed pipelines: name, live version, warming version, topics, outputs |
//! | `PUT /pipelines/{name}` | body: a pipeline file (TOML). Validated, then deployed: `200` with `{"pipeline","version","state"}`; `400` with `{"code":"invalid_pipeline","errors":[{file,line,column,message,hint}]}`; `409` `conflict`; `503` `unavailable` |
//! | `DELETE /pipelines/{name}` | stops every version of it: `200`, or `404` |
//! | `POST /pipelines/{name}/promote` | deploys its latest definition as a new version with the shadow model as the model (and the model as the shadow): `200` as for `PUT`; `404` `not_found` (no such pipeline); `409` `conflict` (no shadow model) |
//! | `POST /pipelines/{name}/rollback` | deploys the definition before its latest one as a new version: `200` as for `PUT`; `404` `not_found` (no such pipeline, or no earlier version since it went live) |
//! | `GET /health` | `{"status","kafka":{status,brokers_up,brokers_down,partitions_unavailable,errors,last_error}}`: `200`, or `503` while no broker in use is connected (see [`crate::source::kafka_health`]) |
//!
//! The `X-Sideline-File` request header names the file in error messages (default
//! `<name>.toml`). A refused request changes nothing that runs. Promote and rollback go
//! through the same deploy as `PUT`: the new version warms up, then takes over.

use std::sync::{Arc, Weak};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::{App, DeployError};
use crate::pipeline::plan::{ModelPlan, Output};

#[derive(Serialize)]
struct PipelineInfo {
    name: String,
    version: u32,
    warming: Option<u32>,
    sport: String,
    topics: Vec<String>,
    channels: Vec<String>,
    kafka_topics: Vec<String>,
    /// The live version's model and shadow model (`name/version`, or `formula`).
    model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ErrorItem>,
}

#[derive(Serialize)]
struct ErrorItem {
    file: String,
    line: usize,
    column: usize,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

type AppRef = Weak<App>;

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
}

async fn list(State(app): State<AppRef>) -> Response {
    let Some(app) = app.upgrade() else {
        return gone();
    };
    // The publisher's lock is a std mutex the sink thread holds while it publishes: never
    // wait for it on the runtime thread that also serves WebSocket subscribers.
    let pipelines = tokio::task::spawn_blocking(move || {
        app.publisher
            .lock()
            .map(|p| p.pipelines())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    let out: Vec<PipelineInfo> = pipelines
        .into_iter()
        .map(|(plan, warming)| PipelineInfo {
            name: plan.name.clone(),
            version: plan.version,
            warming: warming.map(|w| w.version),
            sport: plan.sport.to_string(),
            topics: plan.topics.clone(),
            channels: plan
                .outputs
                .iter()
                .filter_map(|o| match o {
                    Output::WebSocket { channel } => Some(channel.clone()),
                    _ => None,
                })
                .collect(),
            kafka_topics: plan
                .outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Kafka { topic } | Output::KafkaAlerts { topic } => Some(topic.clone()),
                    _ => None,
                })
                .collect(),
            model: match &plan.model {
                ModelPlan::Registry { name, version, .. } => format!("{name}/{version}"),
                ModelPlan::Formula { .. } => "formula".into(),
            },
            shadow: plan
                .shadow
                .as_ref()
                .map(|s| format!("{}/{}", s.name, s.version)),
        })
        .collect();
    Json(out).into_response()
}

async fn deploy(
    State(app): State<AppRef>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(app) = app.upgrade() else {
        return gone();
    };
    let file = headers
        .get("x-sideline-file")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .unwrap_or_else(|| format!("{name}.toml"));
    let result = tokio::task::spawn_blocking(move || deploy_named(&app, &name, &file, &body)).await;
    match result {
        Ok(Ok(d)) => (StatusCode::OK, Json(d)).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn deploy_named(
    app: &Arc<App>,
    name: &str,
    file: &str,
    text: &str,
) -> Result<crate::app::Deployed, DeployError> {
    // Validate first: the path must name the file's pipeline.
    let plan =
        crate::pipeline::plan::plan(file, text, &app.registry).map_err(DeployError::Invalid)?;
    if plan.name != name {
        return Err(DeployError::Conflict(format!(
            "the file defines pipeline `{}`, but the request is for `{name}`",
            plan.name
        )));
    }
    app.deploy(file, text)
}

fn error_response(e: DeployError) -> Response {
    let status = match &e {
        DeployError::Invalid(_) => StatusCode::BAD_REQUEST,
        DeployError::Conflict(_) => StatusCode::CONFLICT,
        DeployError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        DeployError::NotFound(_) => StatusCode::NOT_FOUND,
        DeployError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let errors = match &e {
        DeployError::Invalid(inv) => inv
            .0
            .iter()
            .map(|d| ErrorItem {
                file: d.file.clone(),
                line: d.line,
                column: d.column,
                message: d.message.clone(),
                hint: d.hint.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let body = ErrorBody {
        code: e.code(),
        message: e.to_string(),
        errors,
    };
    (status, Json(body)).into_response()
}

/// What `POST /pipelines/{name}/promote` and `/rollback` do.
#[derive(Clone, Copy)]
enum Swap {
    Promote,
    Rollback,
}

async fn swap(app: AppRef, name: String, what: Swap) -> Response {
    let Some(app) = app.upgrade() else {
        return gone();
    };
    let result = tokio::task::spawn_blocking(move || match what {
        Swap::Promote => app.promote(&name),
        Swap::Rollback => app.rollback(&name),
    })
    .await;
    match result {
        Ok(Ok(d)) => (StatusCode::OK, Json(d)).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn promote(State(app): State<AppRef>, Path(name): Path<String>) -> Response {
    swap(app, name, Swap::Promote).await
}

async fn rollback(State(app): State<AppRef>, Path(name): Path<String>) -> Response {
    swap(app, name, Swap::Rollback).await
}

async fn remove(State(app): State<AppRef>, Path(name): Path<String>) -> Response {
    let Some(app) = app.upgrade() else {
        return gone();
    };
    let (app2, name2) = (app.clone(), name.clone());
    let removed = tokio::task::spawn_blocking(move || app2.remove(&name2))
        .await
        .unwrap_or(false);
    if removed {
        (StatusCode::OK, Json(serde_json::json!({ "removed": name }))).into_response()
    } else {
        let body = ErrorBody {
            code: "not_found",
            message: format!("no pipeline named {name}"),
            errors: Vec::new(),
        };
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    }
}

/// The engine's health: `ok`, `degraded` (a broker in use is not connected) or `down` (none
/// is, `503`). The process itself answering is the rest of it.
async fn health() -> Response {
    let kafka = crate::source::kafka_health::status();
    let (code, status) = match kafka.status {
        "down" => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        "degraded" => (StatusCode::OK, "degraded"),
        _ => (StatusCode::OK, "ok"),
    };
    (
        code,
        Json(serde_json::json!({ "status": status, "kafka": kafka })),
    )
        .into_response()
}

/// Serves the admin API until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, app: AppRef) {
    let router = Router::new()
        .route("/pipelines", get(list))
        .route("/health", get(health))
        .route(
            "/pipelines/{name}",
            axum::routing::put(deploy).delete(remove),
        )
        .route("/pipelines/{name}/promote", axum::routing::post(promote))
        .route("/pipelines/{name}/rollback", axum::routing::post(rollback))
        .with_state(app);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "admin endpoint stopped");
    }
}
