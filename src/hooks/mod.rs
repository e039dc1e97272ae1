//! The app's backend in the loop: a connect, a subscribe and a client publish may each be posted
//! to the backend first, which allows, refuses, or (for a publish) replaces the payload.
//!
//! Every call is an HTTP POST of JSON, signed with `Twine-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">` keyed by `--hook-secret`, over one pooled keep-alive client. A
//! call is bounded three ways: `--hook-timeout`, at most `--hook-max-in-flight` calls of each hook
//! at once on the node (a call over it is not made, and never waits in a queue; a flood of
//! connects cannot take the subscribe and publish hooks' places), and an answer of at most
//! [`MAX_ANSWER`] bytes. A call that fails any way (slow, down, busy, an answer that is not the
//! contract's) takes its hook's `--<hook>-hook-failure` outcome. [`filter`] is the stage that
//! runs before the publish hook, or without one.

pub mod filter;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::auth::Signer;
use crate::config::{Config, HookFailure};
use crate::metrics::{Limit, Metrics};
use filter::WordFilter;

/// Largest answer read from a hook, in bytes.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Largest handshake `auth` forwarded to the connect hook, in bytes: a connect with more is
/// refused before the backend is asked.
pub const MAX_HOOK_AUTH: usize = 16 * 1024;
/// The header every call is signed in.
pub const SIGNATURE: &str = "twine-signature";
/// Idle keep-alive connections kept to the backend.
const IDLE_CONNECTIONS: usize = 64;
/// How many `--hook-timeout`s a call its caller gave up on keeps its place among
/// `--hook-max-in-flight` while the backend may still be working on it.
const LINGER: u32 = 4;

/// What a hook decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T> {
    Allow(T),
    /// Refused, with the reason the client is told.
    Refuse(String),
}

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no turn among --hook-max-in-flight calls within --hook-timeout")]
    Busy,
    #[error("no answer within --hook-timeout")]
    Timeout,
    #[error("the backend could not be reached: {0}")]
    Unreachable(String),
    #[error("the backend answered {0}, not 200")]
    Status(StatusCode),
    #[error("the answer is not the hook's JSON: {0}")]
    Garbled(String),
}

impl CallError {
    fn outcome(&self) -> &'static str {
        match self {
            CallError::Busy => "busy",
            CallError::Timeout => "timeout",
            CallError::Unreachable(_) => "unreachable",
            CallError::Status(_) | CallError::Garbled(_) => "garbled",
        }
    }
}

struct Hook {
    name: &'static str,
    url: Uri,
    failure: HookFailure,
    in_flight: Arc<Semaphore>,
}

/// The connect hook's request.
#[derive(Serialize)]
pub struct ConnectRequest<'a> {
    pub twineid: Option<&'a str>,
    /// The handshake's `auth` payload, as the client sent it.
    pub auth: Option<&'a RawValue>,
    pub headers: ConnectHeaders<'a>,
    /// The client's address as this node sees it.
    pub address: Option<String>,
}

#[derive(Serialize)]
pub struct ConnectHeaders<'a> {
    pub cookie: Option<&'a str>,
    pub origin: Option<&'a str>,
    #[serde(rename = "user-agent")]
    pub user_agent: Option<&'a str>,
    #[serde(rename = "x-forwarded-for")]
    pub forwarded_for: Option<&'a str>,
}

/// What an allowed connect brings: rooms its session joins at once, and who it is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    pub rooms: Vec<String>,
    pub user: Option<String>,
}

#[derive(Serialize)]
struct SubscribeRequest<'a> {
    twineid: Option<&'a str>,
    user: Option<&'a str>,
    room: &'a str,
}

#[derive(Serialize)]
struct PublishRequest<'a> {
    twineid: Option<&'a str>,
    user: Option<&'a str>,
    room: &'a str,
    payload: &'a RawValue,
}

/// Every hook's answer; fields a hook does not use are ignored, as are unknown ones.
#[derive(Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

/// The node's hooks.
pub struct Hooks {
    client: Client<HttpConnector, Full<Bytes>>,
    signer: Signer,
    connect: Option<Hook>,
    subscribe: Option<Hook>,
    publish: Option<Hook>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The publish filter, before the hook.
    pub filter: WordFilter,
}

impl Hooks {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Hooks {
        let hook = |name, url: &Option<Uri>, failure| {
            Some(Hook {
                name,
                url: url.clone()?,
                failure,
                in_flight: Arc::new(Semaphore::new(config.hook_max_in_flight as usize)),
            })
        };
        let parsed = &config.parsed;
        let connect = hook("connect", &parsed.connect_hook, config.connect_hook_failure);
        let subscribe = hook(
            "subscribe",
            &parsed.subscribe_hook,
            config.subscribe_hook_failure,
        );
        let publish = hook("publish", &parsed.publish_hook, config.publish_hook_failure);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.hook_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build(connector);
        let words = parsed.filter_words.clone();
        Hooks {
            client,
            signer: Signer::new(config.hook_secret.as_deref().unwrap_or_default().as_bytes()),
            connect,
            subscribe,
            publish,
            timeout: config.hook_timeout,
            metrics,
            filter: WordFilter::new(words),
        }
    }

    /// Whether a connect is posted to the backend.
    pub fn on_connect(&self) -> bool {
        self.connect.is_some()
    }

    /// Whether a subscribe is posted to the backend.
    pub fn on_subscribe(&self) -> bool {
        self.subscribe.is_some()
    }

    /// Whether a client publish is posted to the backend.
    pub fn on_publish(&self) -> bool {
        self.publish.is_some()
    }

    /// Asks the connect hook, if there is one.
    pub async fn connect(&self, request: &ConnectRequest<'_>) -> Decision<Admitted> {
        let Some(hook) = &self.connect else {
            return Decision::Allow(Admitted::default());
        };
        match self.call(hook, request).await {
            Some(answer) if answer.allow => Decision::Allow(Admitted {
                rooms: answer.rooms.unwrap_or_default(),
                user: answer.user,
            }),
            Some(answer) => Decision::Refuse(refusal(answer.reason)),
            None => failed(hook, Admitted::default()),
        }
    }

    /// Asks the subscribe hook, if there is one.
    pub async fn subscribe(
        &self,
        twineid: Option<&str>,
        user: Option<&str>,
        room: &str,
    ) -> Decision<()> {
        let Some(hook) = &self.subscribe else {
            return Decision::Allow(());
        };
        let request = SubscribeRequest {
            twineid,
            user,
            room,
        };
        match self.call(hook, &request).await {
            Some(answer) if answer.allow => Decision::Allow(()),
            Some(answer) => Decision::Refuse(refusal(answer.reason)),
            None => failed(hook, ()),
        }
    }

    /// Asks the publish hook, if there is one: allowed with the payload to store (the
    /// backend's, if it gave one).
    pub async fn publish(
        &self,
        twineid: Option<&str>,
        user: Option<&str>,
        room: &str,
        payload: Box<RawValue>,
    ) -> Decision<Box<RawValue>> {
        let Some(hook) = &self.publish else {
            return Decision::Allow(payload);
        };
        let request = PublishRequest {
            twineid,
            user,
            room,
            payload: &payload,
        };
        match self.call(hook, &request).await {
            Some(answer) if answer.allow => Decision::Allow(answer.payload.unwrap_or(payload)),
            Some(answer) => Decision::Refuse(refusal(answer.reason)),
            None => failed(hook, payload),
        }
    }

    /// Calls `hook` with `request`; `None` when it gave no answer (logged and counted).
    async fn call<R: Serialize>(&self, hook: &Hook, request: &R) -> Option<Answer> {
        let started = Instant::now();
        let answer = self
            .post::<Answer, R>(hook, request)
            .await
            .and_then(Hooks::checked);
        self.metrics
            .hook_seconds(hook.name)
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(answer) => {
                self.count(hook, if answer.allow { "allowed" } else { "refused" });
                Some(answer)
            }
            Err(e) => {
                if matches!(e, CallError::Busy) {
                    self.metrics.limit(Limit::HooksInFlight);
                    tracing::debug!(hook = hook.name, "hook not called: {e}");
                } else {
                    tracing::warn!(hook = hook.name, url = %hook.url, "hook failed: {e}");
                }
                self.count(hook, e.outcome());
                None
            }
        }
    }

    fn count(&self, hook: &Hook, outcome: &'static str) {
        self.metrics.hook_call(hook.name, outcome);
    }

    /// An answer that keeps the contract: a `payload`, when there is one, is a JSON object.
    fn checked(answer: Answer) -> Result<Answer, CallError> {
        match &answer.payload {
            Some(payload) if !payload.get().starts_with('{') => Err(CallError::Garbled(
                "its payload is not a JSON object".into(),
            )),
            _ => Ok(answer),
        }
    }

    async fn post<A: DeserializeOwned + Send + 'static, R: Serialize>(
        &self,
        hook: &Hook,
        request: &R,
    ) -> Result<A, CallError> {
        // Calls over the bound wait their turn, first come first served, within the same
        // timeout. Each connection has at most one call of a hook waiting (its lanes run one
        // command at a time), so a crowd of clients shares the backend in turn rather than
        // taking every slot from the one that arrives last.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let permit = tokio::time::timeout_at(deadline, hook.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| CallError::Busy)?
            .map_err(|_| CallError::Busy)?;
        let body = serde_json::to_vec(request).expect("hook requests serialize");
        let signature = self.signature(&body);
        let request = Request::builder()
            .method(Method::POST)
            .uri(hook.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE, signature)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let client = self.client.clone();
        let answer = async move {
            let response = client
                .request(request)
                .await
                .map_err(|e| CallError::Unreachable(e.to_string()))?;
            if response.status() != StatusCode::OK {
                return Err(CallError::Status(response.status()));
            }
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CallError::Garbled(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled(e.to_string()))
        };
        // The call keeps its place until the backend has answered (or [`LINGER`] has passed),
        // even once its caller gave up at the timeout: the backend is still working on it, and
        // the bound is of calls the backend holds, not of callers still waiting.
        let linger = self.timeout * LINGER;
        let call = tokio::spawn(async move {
            let _permit = permit;
            tokio::time::timeout(linger, answer)
                .await
                .unwrap_or(Err(CallError::Timeout))
        });
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Err(CallError::Unreachable(e.to_string())),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    fn signature(&self, body: &[u8]) -> HeaderValue {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let value = format!("t={t},v1={}", self.signer.sign_hex(&signed));
        HeaderValue::from_str(&value).expect("ASCII")
    }
}

fn refusal(reason: Option<String>) -> String {
    reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "refused by the app".into())
}

/// The outcome of a hook that gave no answer.
fn failed<T>(hook: &Hook, allowed: T) -> Decision<T> {
    match hook.failure {
        HookFailure::Allow => Decision::Allow(allowed),
        HookFailure::Refuse => Decision::Refuse("the app could not be asked; retry later".into()),
    }
}
