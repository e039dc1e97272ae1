//! The DynamoDB archive: every message for the whole recovery window, in a table laid out like
//! the original Twine's so a migrating deployment keeps its history.
//!
//! # Table layout
//!
//! | attribute | type | |
//! |---|---|---|
//! | `id` | S | hash key: the room |
//! | `time_created` | N | range key: the message's timestamp, unique per room |
//! | `payload` | S | the published payload, JSON text |
//! | `expires_at` | N | epoch seconds after which DynamoDB's TTL deletes the item |
//!
//! Writing the same room and timestamp again overwrites the same item, so retried writes never
//! become duplicates. Reads are strongly consistent `Query`s that follow DynamoDB's pages; finding
//! where a capped replay starts reads only keys, newest first, so no payload is transferred.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use twine_store::{Archive, Message, Page, PageLimit, Position, ReplayStart, StoreError};

const ROOM: &str = "id";
const POSITION: &str = "time_created";
const PAYLOAD: &str = "payload";
const EXPIRES: &str = "expires_at";

/// Items per `BatchWriteItem` call (DynamoDB's limit).
const BATCH: usize = 25;
/// Most items asked of one `Query` page (DynamoDB also stops a page at 1 MB).
const QUERY_PAGE: usize = 1000;
/// Attempts at writing back unprocessed items before giving up on a batch.
const UNPROCESSED_ATTEMPTS: u32 = 8;

/// Settings of a [`DynamoArchive`].
#[derive(Clone, Debug)]
pub struct DynamoOptions {
    pub table: String,
    /// Create the table (and enable TTL) when it does not exist.
    pub create_table: bool,
    /// How long items are kept (their TTL).
    pub window: Duration,
}

pub struct DynamoArchive {
    client: Client,
    options: DynamoOptions,
}

fn unavailable(what: &str, e: impl std::error::Error + ProvideErrorMetadata) -> StoreError {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => {
            StoreError::Unavailable(format!("DynamoDB {what}: {code}: {message}"))
        }
        _ => StoreError::Unavailable(format!("DynamoDB {what}: {}", DisplayErrorContext(e))),
    }
}

impl DynamoArchive {
    /// Uses the AWS SDK's standard settings from the environment (region, credentials,
    /// `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`).
    pub async fn from_env(options: DynamoOptions) -> Result<DynamoArchive, StoreError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::connect(Client::new(&config), options).await
    }

    /// Checks the table (creating it if asked) and returns the archive.
    pub async fn connect(
        client: Client,
        options: DynamoOptions,
    ) -> Result<DynamoArchive, StoreError> {
        let archive = DynamoArchive { client, options };
        archive.ensure_table().await?;
        Ok(archive)
    }

    async fn ensure_table(&self) -> Result<(), StoreError> {
        let table = &self.options.table;
        let described = self.client.describe_table().table_name(table).send().await;
        let description = match described {
            Ok(out) => out.table,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                if !self.options.create_table {
                    return Err(StoreError::Unavailable(format!(
                        "DynamoDB table {table} does not exist; create it or pass --dynamodb-create-table"
                    )));
                }
                self.create_table().await?;
                return Ok(());
            }
            Err(e) => return Err(unavailable("DescribeTable", e)),
        };
        let description = description
            .ok_or_else(|| StoreError::Corrupt("DescribeTable without a table".into()))?;
        let keys: Vec<(String, String)> = description
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        let types: HashMap<&str, &str> = description
            .attribute_definitions()
            .iter()
            .map(|d| (d.attribute_name(), d.attribute_type().as_str()))
            .collect();
        let expected = vec![
            (ROOM.to_owned(), "HASH".to_owned()),
            (POSITION.to_owned(), "RANGE".to_owned()),
        ];
        if keys != expected || types.get(ROOM) != Some(&"S") || types.get(POSITION) != Some(&"N") {
            return Err(StoreError::Corrupt(format!(
                "DynamoDB table {table} has key schema {keys:?} with types {types:?}; expected hash key {ROOM} (S) and range key {POSITION} (N)"
            )));
        }
        Ok(())
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        let table = &self.options.table;
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("complete")
        };
        let attribute = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .expect("complete")
        };
        self.client
            .create_table()
            .table_name(table)
            .key_schema(key(ROOM, KeyType::Hash))
            .key_schema(key(POSITION, KeyType::Range))
            .attribute_definitions(attribute(ROOM, ScalarAttributeType::S))
            .attribute_definitions(attribute(POSITION, ScalarAttributeType::N))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| unavailable("CreateTable", e))?;
        for _ in 0..120 {
            let out = self.client.describe_table().table_name(table).send().await;
            if let Ok(out) = out
                && out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(EXPIRES)
            .build()
            .expect("complete");
        if let Err(e) = self
            .client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            tracing::warn!(
                table,
                "TTL not enabled on the new table; enable it on attribute {EXPIRES}: {}",
                DisplayErrorContext(e)
            );
        }
        tracing::info!(table, "created DynamoDB table");
        Ok(())
    }

    fn item(&self, message: &Message) -> HashMap<String, AttributeValue> {
        let expires = message.position.0 / 1000 + self.options.window.as_secs();
        HashMap::from([
            (ROOM.to_owned(), AttributeValue::S(message.room.clone())),
            (
                POSITION.to_owned(),
                AttributeValue::N(message.position.0.to_string()),
            ),
            (
                PAYLOAD.to_owned(),
                AttributeValue::S(message.payload.clone()),
            ),
            (EXPIRES.to_owned(), AttributeValue::N(expires.to_string())),
        ])
    }

    async fn write_batch(&self, messages: &[Message]) -> Result<(), StoreError> {
        let mut requests: Vec<WriteRequest> = messages
            .iter()
            .map(|m| {
                let put = PutRequest::builder()
                    .set_item(Some(self.item(m)))
                    .build()
                    .expect("item set");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        let mut delay = Duration::from_millis(50);
        for attempt in 0..UNPROCESSED_ATTEMPTS {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.options.table, requests)
                .send()
                .await
                .map_err(|e| unavailable("BatchWriteItem", e))?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.options.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                attempt,
                left = requests.len(),
                "DynamoDB left items unprocessed; backing off"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        Err(StoreError::Unavailable(format!(
            "DynamoDB left {} items unprocessed after {UNPROCESSED_ATTEMPTS} attempts",
            requests.len()
        )))
    }

    fn parse(&self, room: &str, item: &Item) -> Result<Message, StoreError> {
        let position = Self::position(room, item)?;
        let payload = item
            .get(PAYLOAD)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("item {room}/{position} without a string {PAYLOAD}"))
            })?;
        Ok(Message {
            room: room.to_owned(),
            position,
            payload: payload.clone(),
        })
    }

    fn position(room: &str, item: &Item) -> Result<Position, StoreError> {
        item.get(POSITION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .map(Position)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("item of {room} without a numeric {POSITION}"))
            })
    }

    fn expired(item: &Item, now_secs: u64) -> bool {
        // TTL deletion lags; an item past its time is treated as gone already.
        item.get(EXPIRES)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|t| t < now_secs)
    }
}

type Item = HashMap<String, AttributeValue>;

/// Which end of a room's range a [`Pages`] starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    OldestFirst,
    NewestFirst,
}

/// One room's items with `after < time_created <= until`, one `Query` page at a time (a page
/// ends at the item limit asked for or at 1 MB), leaving out items past their expiry.
struct Pages<'a> {
    archive: &'a DynamoArchive,
    room: &'a str,
    after: Position,
    until: Position,
    order: Order,
    /// Read only the position and the expiry, so payloads are not transferred.
    keys_only: bool,
    start: Option<Item>,
    done: bool,
    now_secs: u64,
}

impl<'a> Pages<'a> {
    fn new(
        archive: &'a DynamoArchive,
        room: &'a str,
        after: Position,
        until: Position,
        order: Order,
    ) -> Pages<'a> {
        Pages {
            archive,
            room,
            after,
            until,
            order,
            keys_only: false,
            start: None,
            done: after >= until,
            now_secs: Position::now_ms() / 1000,
        }
    }

    /// The unexpired items of the next page of at most `limit` items (possibly none, when all it
    /// read had expired), or `None` once the range is exhausted.
    async fn next(&mut self, limit: usize) -> Result<Option<Vec<Item>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let upper = self.until.0.min(i64::MAX as u64);
        let mut query = self
            .archive
            .client
            .query()
            .table_name(&self.archive.options.table)
            .consistent_read(true)
            .key_condition_expression("#room = :room AND #pos BETWEEN :from AND :until")
            .expression_attribute_names("#room", ROOM)
            .expression_attribute_names("#pos", POSITION)
            .expression_attribute_values(":room", AttributeValue::S(self.room.to_owned()))
            .expression_attribute_values(":from", AttributeValue::N((self.after.0 + 1).to_string()))
            .expression_attribute_values(":until", AttributeValue::N(upper.to_string()))
            .scan_index_forward(self.order == Order::OldestFirst)
            .limit(limit.clamp(1, QUERY_PAGE) as i32)
            .set_exclusive_start_key(self.start.take());
        if self.keys_only {
            query = query
                .projection_expression("#pos, #expires")
                .expression_attribute_names("#expires", EXPIRES);
        }
        let out = query.send().await.map_err(|e| unavailable("Query", e))?;
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => self.start = Some(key),
            _ => self.done = true,
        }
        let mut items = out.items.unwrap_or_default();
        items.retain(|item| !DynamoArchive::expired(item, self.now_secs));
        Ok(Some(items))
    }
}

#[async_trait]
impl Archive for DynamoArchive {
    async fn put(&self, messages: &[Message]) -> Result<(), StoreError> {
        for chunk in messages.chunks(BATCH) {
            self.write_batch(chunk).await?;
        }
        Ok(())
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        let mut pages = Pages::new(self, room, after, until, Order::OldestFirst);
        let mut page = Page::default();
        let mut bytes = 0;
        let full =
            |page: &Page, bytes: usize| page.messages.len() >= limit.count || bytes >= limit.bytes;
        // Past a full page, pages only probe for one live item; doubling gets through a run of
        // expired items (left by a shortened window) in few round trips.
        let mut probe = 1;
        loop {
            // Once the page is full, all that is left to learn is whether a live item follows.
            pages.keys_only = full(&page, bytes);
            let want = if pages.keys_only {
                probe
            } else {
                // One more than still fits, so the page itself usually tells whether more follow.
                (limit.count - page.messages.len()).saturating_add(1)
            };
            let Some(items) = pages.next(want).await? else {
                return Ok(page);
            };
            for item in items {
                if full(&page, bytes) {
                    page.more = true;
                    return Ok(page);
                }
                let message = self.parse(room, &item)?;
                bytes += message.payload.len();
                page.messages.push(message);
            }
            if pages.keys_only {
                probe = (probe * 2).min(QUERY_PAGE);
            }
        }
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        let mut pages = Pages::new(self, room, after, until, Order::NewestFirst);
        pages.keys_only = true;
        let mut newer = 0;
        // Asking for exactly the items still to count reads no further than the answer.
        while let Some(items) = pages.next((max - newer).saturating_add(1)).await? {
            for item in items {
                if newer == max {
                    return Ok(ReplayStart {
                        after: Self::position(room, &item)?,
                        truncated: true,
                    });
                }
                newer += 1;
            }
        }
        Ok(ReplayStart {
            after,
            truncated: false,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.options.table)
            .consistent_read(true)
            .key_condition_expression("#room = :room")
            .expression_attribute_names("#room", ROOM)
            .expression_attribute_values(":room", AttributeValue::S(room.to_owned()))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        match out.items().first() {
            Some(item) => Ok(self.parse(room, item)?.position),
            None => Ok(Position::ZERO),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.options.table)
            .send()
            .await
            .map_err(|e| unavailable("DescribeTable", e))?;
        Ok(())
    }
}
