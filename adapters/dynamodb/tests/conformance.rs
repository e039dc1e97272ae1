//! The archive conformance suite and the history conformance suite (history kept only in
//! DynamoDB) against a real DynamoDB-compatible server (dynalite, from js-fixtures).

mod dynalite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dynalite::Dynalite;
use twine_store::{Archive, History, MemoryStore, SessionStore, WriteThrough};
use twine_store_dynamodb::{DynamoArchive, DynamoOptions};

static TABLES: AtomicU32 = AtomicU32::new(0);

async fn archive(server: &Dynalite) -> DynamoArchive {
    let table = format!("twine_test_{}", TABLES.fetch_add(1, Ordering::SeqCst));
    let options = DynamoOptions {
        table,
        create_table: true,
        window: Duration::from_secs(3600),
    };
    DynamoArchive::connect(server.client(), options)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dynamodb_archive_passes_the_archive_conformance_suite() {
    let server = Dynalite::start();
    let mut archives = Vec::new();
    for _ in 0..3 {
        archives.push(Arc::new(archive(&server).await) as Arc<dyn Archive>);
    }
    let next = std::sync::Mutex::new(archives.into_iter());
    twine_store::conformance::run_archive(|| next.lock().unwrap().next().unwrap()).await;
}

#[tokio::test]
async fn history_kept_only_in_dynamodb_passes_the_conformance_suite() {
    let server = Dynalite::start();
    let mut pairs = Vec::new();
    for _ in 0..7 {
        let history: Arc<dyn History> =
            Arc::new(WriteThrough::new(Arc::new(archive(&server).await)));
        let sessions: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::new(Duration::from_secs(60), 10));
        pairs.push((history, sessions));
    }
    let next = std::sync::Mutex::new(pairs.into_iter());
    twine_store::conformance::run_all(|| next.lock().unwrap().next().unwrap()).await;
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
