//! Starts a real DynamoDB-compatible server (dynalite, installed in js-fixtures by
//! scripts/install-test-deps.sh) on a free port for a test and stops it when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

pub struct Dynalite {
    child: Child,
    port: u16,
}

impl Dynalite {
    pub fn start() -> Dynalite {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../js-fixtures/node_modules/dynalite/cli.js");
        let child = Command::new("node")
            .arg(&cli)
            // Loopback only: a wildcard bind can collide with ports loopback clients hold.
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs dynalite (scripts/install-test-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dynalite did not start from {cli:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Dynalite { child, port }
    }

    pub fn client(&self) -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build();
        Client::from_conf(config)
    }

    pub async fn create_table_with_wrong_schema(&self, table: &str) {
        self.client()
            .create_table()
            .table_name(table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("room")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("room")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
