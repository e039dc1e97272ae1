//! Which figures a point's table shows, by the scenario its runs measured: a file per family of
//! scenarios, each naming its rows, the figure of each and the digits it is shown with.

use super::runs::Row;

mod churn;
mod deploy;
mod hooks;
mod load;
mod mass;
mod redis;
mod scaleout;

/// The rows of a point's table, by scenario.
pub(super) fn rows(scenario: &str) -> Vec<Row> {
    match scenario {
        "Idle" => load::idle(),
        "Fanout" => load::fanout(),
        "LatencySearch" => load::latency_search(),
        "PublishRate" => redis::publish_rate(),
        "QuietNode" => redis::quiet_node(),
        "Deploy" => deploy::rows(),
        "ScaleOut" => scaleout::rows(),
        "Churn" => churn::rows(),
        "MassDrop" => mass::rows(),
        "Hooks" => hooks::rows(),
        _ => redis::storm(),
    }
}
