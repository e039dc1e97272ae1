//! The append script's cost must not grow with a room's history: one script serves every
//! publish of the deployment, so a deep room would cap them all. Measured on the Redis side
//! (`INFO commandstats`), in a test binary of its own so other tests do not share the CPU.

mod redis_server;

use std::time::Duration;

use redis_server::RedisServer;
use twine_store::{History, Position, Publish};
use twine_store_redis::keys::Keys;
use twine_store_redis::{RedisOptions, RedisStore};

const DEPTH: usize = 10_000;
const CALLS: usize = 300;
const PAYLOAD: &str = r#"{"event":"cost","body":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn options(prefix: &str, max_per_room: usize) -> RedisOptions {
    let mut options = RedisOptions::new(prefix, Duration::from_secs(3600), max_per_room);
    options.max_rooms_per_session = 100;
    options
}

/// Fills a room's stream with `DEPTH` entries from the last few seconds, so none is old
/// enough for the window to trim: the case that once walked the whole stream on every append.
async fn fill(server: &RedisServer, key: &str) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let newest = Position::now_ms();
    let mut pipe = redis::pipe();
    for i in 0..DEPTH as u64 {
        let id = format!("{}-0", newest - DEPTH as u64 + i);
        pipe.cmd("XADD")
            .arg(key)
            .arg(id)
            .arg("p")
            .arg(PAYLOAD)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
}

async fn reset_stats(server: &RedisServer) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Microseconds Redis spent per append script run since the last reset.
async fn usec_per_call(server: &RedisServer) -> f64 {
    let stats = server
        .info_line("commandstats", "cmdstat_evalsha")
        .await
        .expect("scripts ran");
    stats
        .split(',')
        .find_map(|field| field.strip_prefix("usec_per_call="))
        .and_then(|usec| usec.parse().ok())
        .expect("commandstats report usec_per_call")
}

/// Runs `CALLS` appends, each into the room `room(i)`, and answers their mean cost.
async fn measure(server: &RedisServer, store: &RedisStore, room: impl Fn(usize) -> String) -> f64 {
    reset_stats(server).await;
    for i in 0..CALLS {
        store.append(Publish::new(&room(i), PAYLOAD)).await.unwrap();
    }
    usec_per_call(server).await
}

#[tokio::test]
async fn appending_to_a_deep_room_costs_what_appending_to_an_empty_one_does() {
    let server = RedisServer::start();
    let unbounded = RedisStore::connect(&server.url(), options("deep", 100_000))
        .await
        .unwrap();
    let full = RedisStore::connect(&server.url(), options("full", DEPTH))
        .await
        .unwrap();
    fill(&server, &Keys::new("deep").history("room")).await;
    fill(&server, &Keys::new("full").history("room")).await;
    // Loads the script, so every measured call is one run of it.
    unbounded.append(Publish::new("warm", "{}")).await.unwrap();

    let empty = measure(&server, &unbounded, |i| format!("empty-{i}")).await;
    let deep = measure(&server, &unbounded, |_| "room".to_owned()).await;
    let trimmed = measure(&server, &full, |_| "room".to_owned()).await;
    eprintln!(
        "append script, usec per call: empty rooms {empty:.1}, {DEPTH} entries {deep:.1}, \
         {DEPTH} entries trimmed by count {trimmed:.1}"
    );
    // Generous against a shared, noisy machine; a walk of the stream costs 20-50 times more.
    let bound = empty * 3.0 + 30.0;
    assert!(
        deep <= bound,
        "{deep:.1} µs into {DEPTH} entries, {empty:.1} µs into none"
    );
    assert!(
        trimmed <= bound,
        "{trimmed:.1} µs trimming {DEPTH} entries, {empty:.1} µs into none"
    );
}
