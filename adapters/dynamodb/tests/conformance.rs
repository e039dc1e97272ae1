//! The archive conformance suite and the history conformance suite (history kept only in
//! DynamoDB) against a real DynamoDB-compatible server (dynalite, from js-fixtures), and what is
//! particular to DynamoDB: its 1 MB `Query` pages, TTL deletion that lags, the table checks.

mod dynalite;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use dynalite::Dynalite;
use twine_store::conformance::SESSION_ROOM_LIMIT;
use twine_store::{
    Archive, History, MemoryOptions, MemoryStore, Message, PageLimit, Position, ReplayStart,
    SessionStore, WriteThrough,
};
use twine_store_dynamodb::{DynamoArchive, DynamoOptions};

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A table name no other test uses.
fn fresh_table() -> String {
    format!("twine_test_{}", TABLES.fetch_add(1, Ordering::SeqCst))
}

async fn archive_on(server: &Dynalite, table: &str) -> DynamoArchive {
    let options = DynamoOptions {
        table: table.into(),
        create_table: true,
        window: Duration::from_secs(3600),
    };
    DynamoArchive::connect(server.client(), options)
        .await
        .unwrap()
}

/// An archive on a table of its own, for the suites' factories.
fn fresh_archive(server: &Dynalite) -> Arc<DynamoArchive> {
    // The factories are synchronous, yet each store needs a table created over the network.
    let table = fresh_table();
    let archive = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(archive_on(server, &table))
    });
    Arc::new(archive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_archive_passes_the_archive_conformance_suite() {
    let server = Dynalite::start();
    twine_store::conformance::run_archive(|| fresh_archive(&server) as Arc<dyn Archive>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_kept_only_in_dynamodb_passes_the_conformance_suite() {
    let server = Dynalite::start();
    twine_store::conformance::run_all(|| {
        let window = Duration::from_secs(60);
        let history: Arc<dyn History> = Arc::new(WriteThrough::new(fresh_archive(&server), window));
        let mut options = MemoryOptions::new(window, 10);
        options.max_rooms_per_session = SESSION_ROOM_LIMIT;
        let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(options));
        (history, sessions)
    })
    .await;
}

/// `count` messages of `room` at consecutive positions from now, each with about `pad` bytes.
fn messages(room: &str, count: u64, pad: usize) -> Vec<Message> {
    let base = Position::now_ms();
    (0..count)
        .map(|i| Message {
            room: room.to_owned(),
            position: Position(base + i),
            payload: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)),
        })
        .collect()
}

#[tokio::test]
async fn replays_and_pages_cross_dynamodbs_1_mb_query_pages() {
    let server = Dynalite::start();
    let table = fresh_table();
    let archive = archive_on(&server, &table).await;
    let written = messages("big", 1500, 1000);
    archive.put(&written).await.unwrap();

    // How many items DynamoDB's own first page holds, so reads can be made to end right there.
    let first = server
        .client()
        .query()
        .table_name(&table)
        .key_condition_expression("id = :room")
        .expression_attribute_values(":room", AttributeValue::S("big".into()))
        .send()
        .await
        .unwrap();
    assert!(first.last_evaluated_key.is_some(), "the room spans pages");
    let first_page = first.items().len();

    for (max, after) in [
        (1400, written[99].position),
        (1499, written[0].position),
        (0, written[1499].position),
    ] {
        let start = archive
            .replay_start("big", Position::ZERO, Position::MAX, max)
            .await
            .unwrap();
        let expected = ReplayStart {
            after,
            truncated: true,
        };
        assert_eq!(start, expected, "the newest {max} follow");
    }
    let start = archive
        .replay_start("big", Position::ZERO, Position::MAX, 1500)
        .await
        .unwrap();
    assert_eq!(
        start,
        ReplayStart {
            after: Position::ZERO,
            truncated: false
        },
        "exactly the cap"
    );
    let start = archive
        .replay_start("big", written[99].position, written[1299].position, 1100)
        .await
        .unwrap();
    assert_eq!(
        start.after, written[199].position,
        "counted within the range"
    );

    let all = Position::MAX;
    for count in [first_page, 1200] {
        let page = archive
            .read_page("big", Position::ZERO, all, PageLimit::count(count))
            .await
            .unwrap();
        assert_eq!(
            page.messages,
            written[..count].to_vec(),
            "the oldest {count}"
        );
        assert!(page.more && !page.truncated, "more follow {count}");
    }
    let page = archive
        .read_page("big", written[299].position, all, PageLimit::count(1200))
        .await
        .unwrap();
    assert_eq!(page.messages, written[300..].to_vec());
    assert!(!page.more, "the page ends with the room");

    let bytes = 1_100_000;
    let mut total = 0;
    let passes = 1 + written
        .iter()
        .position(|m| {
            total += m.payload.len();
            total >= bytes
        })
        .unwrap();
    let limit = PageLimit { count: 1500, bytes };
    let page = archive
        .read_page("big", Position::ZERO, all, limit)
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        written[..passes].to_vec(),
        "stops after the message that passes the bytes"
    );
    assert!(page.more);
}

#[tokio::test]
async fn items_past_their_expiry_are_left_out_before_ttl_deletes_them() {
    let server = Dynalite::start();
    let table = fresh_table();
    let archive = archive_on(&server, &table).await;
    let live = messages("r", 5, 10);
    archive.put(&live).await.unwrap();
    // Expired items on both sides of the live ones: older ones as TTL leaves them, newer ones
    // as a window shortened since leaves them.
    let expired_at = Position::now_ms() / 1000 - 10;
    let client = server.client();
    let first = live[0].position.0;
    for position in (first - 3..first).chain(first + 5..first + 12) {
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S("r".into())),
            (
                "time_created".to_owned(),
                AttributeValue::N(position.to_string()),
            ),
            ("payload".to_owned(), AttributeValue::S("{}".into())),
            (
                "expires_at".to_owned(),
                AttributeValue::N(expired_at.to_string()),
            ),
        ]);
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    let all = Position::MAX;
    let page = archive
        .read_page("r", Position::ZERO, all, PageLimit::count(5))
        .await
        .unwrap();
    assert_eq!(page.messages, live);
    assert!(!page.more, "only expired items follow");
    let page = archive
        .read_page("r", Position::ZERO, all, PageLimit::count(2))
        .await
        .unwrap();
    assert_eq!(page.messages, live[..2].to_vec());
    assert!(page.more);

    let start = archive
        .replay_start("r", Position::ZERO, all, 3)
        .await
        .unwrap();
    assert_eq!(
        start,
        ReplayStart {
            after: live[1].position,
            truncated: true
        }
    );
    let start = archive
        .replay_start("r", Position::ZERO, all, 5)
        .await
        .unwrap();
    assert!(!start.truncated, "expired items are not counted");
}

/// Connects to `table` without creating it; returns the refusal.
async fn connect_existing(server: &Dynalite, table: &str) -> twine_store::StoreError {
    let options = DynamoOptions {
        table: table.into(),
        create_table: false,
        window: Duration::from_secs(60),
    };
    DynamoArchive::connect(server.client(), options)
        .await
        .err()
        .expect("refused")
}

#[tokio::test]
async fn a_missing_table_or_a_wrong_key_schema_fails_clearly() {
    let server = Dynalite::start();
    let err = connect_existing(&server, "absent").await;
    assert!(err.to_string().contains("does not exist"), "{err}");

    server.create_table_with_wrong_schema("wrong").await;
    let err = connect_existing(&server, "wrong").await;
    assert!(
        err.to_string()
            .contains("expected hash key id (S) and range key time_created (N)"),
        "{err}"
    );
}
