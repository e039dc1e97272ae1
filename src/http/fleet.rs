//! `GET /api/fleet`: the deployment's nodes as this node last saw them (each announces itself
//! about once a second, see [`crate::fleet`]), with totals, for backends and operators holding
//! the API key. `POST /api/fleet/admin`: the nodes' own requests for the Admin UI
//! ([`crate::admin::relay`]), signed under the deployment's secret.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;

use crate::admin::relay;
use crate::error::AppError;
use crate::fleet::Node;
use crate::state::AppState;

#[derive(Serialize)]
pub struct FleetListing {
    /// The node that answered.
    this: String,
    nodes: Vec<Node>,
    totals: Totals,
}

#[derive(Serialize)]
struct Totals {
    nodes: usize,
    sockets: u64,
    /// The nodes' `--max-sockets` summed, when every node has one.
    capacity: Option<u64>,
    draining: usize,
}

pub async fn listing(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<FleetListing>, AppError> {
    app.api_key.check(&headers)?;
    let nodes = app.fleet.nodes();
    let totals = Totals {
        nodes: nodes.len(),
        sockets: nodes.iter().map(|n| n.sockets).sum(),
        capacity: nodes.iter().map(|n| n.capacity).sum(),
        draining: nodes.iter().filter(|n| n.draining).count(),
    };
    Ok(Json(FleetListing {
        this: app.fleet.me().to_owned(),
        nodes: nodes.to_vec(),
        totals,
    }))
}

pub async fn admin(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, AppError> {
    let body = super::read_body(body, relay::MAX_BODY as u64).await?;
    Ok(Json(relay::answer(&app, &headers, &body)?))
}
