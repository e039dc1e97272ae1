//! `GET /api/fleet`: the deployment's nodes as this node last saw them (each announces itself
//! about once a second, see [`crate::fleet`]), with totals, for backends and operators holding
//! the API key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;

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
