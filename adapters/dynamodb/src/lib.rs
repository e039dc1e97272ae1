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
//! become duplicates. Reads are strongly consistent `Query`s, paged.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use twine_store::{Archive, Message, Page, Position, StoreError};

const ROOM: &str = "id";
const POSITION: &str = "time_created";
const PAYLOAD: &str = "payload";
const EXPIRES: &str = "expires_at";

/// Items per `BatchWriteItem` call (DynamoDB's limit).
const BATCH: usize = 25;
/// Items per `Query` page we ask for (DynamoDB also stops a page at 1 MB).
const QUERY_PAGE: i32 = 1000;
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

    fn parse(
        &self,
        room: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Message, StoreError> {
        let position = item
            .get(POSITION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("item of {room} without a numeric {POSITION}"))
            })?;
        let payload = item
            .get(PAYLOAD)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("item {room}/{position} without a string {PAYLOAD}"))
            })?;
        Ok(Message {
            room: room.to_owned(),
            position: Position(position),
            payload: payload.clone(),
        })
    }

    fn expired(item: &HashMap<String, AttributeValue>, now_secs: u64) -> bool {
        // TTL deletion lags; an item past its time is treated as gone already.
        item.get(EXPIRES)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|t| t < now_secs)
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

    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError> {
        if after >= until {
            return Ok(Page::default());
        }
        let now_secs = Position::now_ms() / 1000;
        let upper = until.0.min(i64::MAX as u64);
        let mut newest_first: Vec<Message> = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.options.table)
                .consistent_read(true)
                .key_condition_expression("#room = :room AND #pos BETWEEN :from AND :until")
                .expression_attribute_names("#room", ROOM)
                .expression_attribute_names("#pos", POSITION)
                .expression_attribute_values(":room", AttributeValue::S(room.to_owned()))
                .expression_attribute_values(":from", AttributeValue::N((after.0 + 1).to_string()))
                .expression_attribute_values(":until", AttributeValue::N(upper.to_string()))
                .scan_index_forward(false)
                .limit(QUERY_PAGE)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                if !Self::expired(item, now_secs) {
                    newest_first.push(self.parse(room, item)?);
                }
            }
            if newest_first.len() > limit {
                break;
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let truncated = newest_first.len() > limit;
        newest_first.truncate(limit);
        newest_first.reverse();
        Ok(Page {
            messages: newest_first,
            truncated,
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
