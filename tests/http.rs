//! The HTTP routes, driven in-process through the service the binary serves.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use twine::Server;
use twine::config::Config;
use twine::stores::Stores;
use twine_store::{Message, PageLimit, Position};

async fn server(args: &[&str]) -> Server {
    let args = ["twine", "--api-key", "k"].iter().chain(args);
    let config = Config::from_sources(args, std::iter::empty()).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    Server::build(config, stores).await.unwrap()
}

async fn call(server: &Server, request: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let response = server.app_service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn stored(server: &Server, room: &str) -> Vec<Message> {
    let history = &server.app.history;
    let page = history.read_page(room, Position::ZERO, Position::MAX, PageLimit::count(100));
    page.await.unwrap().messages
}

fn publish(key: &str, body: &str) -> Request<Body> {
    publish_with(key, body, &[])
}

fn publish_with(key: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post("/api/twine")
        .header(header::AUTHORIZATION, key)
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn health_answers_201_ok() {
    let s = server(&[]).await;
    let (status, _, body) = call(&s, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "ok"));
}

#[tokio::test]
async fn a_publish_is_stored_with_a_position_and_answered_201() {
    let s = server(&[]).await;
    let (status, _, body) = call(
        &s,
        publish("Bearer k", r#"{"room_id":"r","payload":{"a":1}}"#),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "ok"));
    let stored = stored(&s, "r").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload, r#"{"a":1}"#);
}

#[tokio::test]
async fn refusals_carry_their_status_and_nothing_is_stored() {
    let s = server(&["--max-payload", "100"]).await;
    let big = format!(
        r#"{{"room_id":"r","payload":{{"x":"{}"}}}}"#,
        "y".repeat(200)
    );
    let cases = [
        (
            publish("nope", r#"{"room_id":"r","payload":{}}"#),
            StatusCode::UNAUTHORIZED,
        ),
        (publish("k", r#"{"room_id":"r"}"#), StatusCode::BAD_REQUEST),
        (
            publish("k", r#"{"room_id":"r","payload":1}"#),
            StatusCode::BAD_REQUEST,
        ),
        (publish("k", &big), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (request, expected) in cases {
        let (status, _, body) = call(&s, request).await;
        assert_eq!(status, expected, "{body}");
        assert!(!body.is_empty());
    }
    assert!(stored(&s, "r").await.is_empty());
}

#[tokio::test]
async fn set_cookie_follows_the_secure_flag() {
    let s = server(&["--cookie-secure", "false"]).await;
    let (_, headers, body) =
        call(&s, Request::get("/set-cookie").body(Body::empty()).unwrap()).await;
    assert_eq!(body, "First cookie set");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Secure"));
}

#[tokio::test]
async fn an_allowed_origin_is_echoed_with_credentials_and_others_are_not() {
    let s = server(&["--cors-origins", "https://app.test"]).await;
    let request = |origin: &str| {
        Request::get("/")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let (_, headers, _) = call(&s, request("https://app.test")).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.test"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let (_, headers, _) = call(&s, request("https://evil.test")).await;
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn a_retry_with_its_idempotency_key_is_answered_201_and_stored_once() {
    let s = server(&[]).await;
    let body = r#"{"room_id":"r","payload":{"order":42}}"#;
    let key = [("Idempotency-Key", "order-42")];
    let (status, headers, _) = call(&s, publish_with("k", body, &key)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, _) = call(&s, publish_with("k", body, &key)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(stored(&s, "r").await.len(), 1, "stored once");

    let other = r#"{"room_id":"r","payload":{"order":43}}"#;
    let (status, _, text) = call(&s, publish_with("k", other, &key)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let (status, _, _) = call(&s, publish_with("k", body, &[("Idempotency-Key", "a b")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(stored(&s, "r").await.len(), 1);
}

#[tokio::test]
async fn over_the_publish_rate_the_answer_is_429_with_retry_after() {
    let s = server(&["--publish-rate", "1", "--publish-burst", "2"]).await;
    let body = r#"{"room_id":"r","payload":{"a":1}}"#;
    for _ in 0..2 {
        assert_eq!(call(&s, publish("k", body)).await.0, StatusCode::CREATED);
    }
    let (status, headers, text) = call(&s, publish("k", body)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(stored(&s, "r").await.len(), 2);
}

#[tokio::test]
async fn engine_io_handshakes_from_origins_outside_the_list_are_refused() {
    let s = server(&["--cors-origins", "https://app.test"]).await;
    let handshake = |origin: Option<&str>| {
        let mut request = Request::get("/socket.io/?EIO=4&transport=polling");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.body(Body::empty()).unwrap()
    };
    let (status, _, _) = call(&s, handshake(Some("https://evil.test"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = call(&s, handshake(Some("https://app.test"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("0{"), "an Engine.IO open packet: {body}");
    let (status, _, _) = call(&s, handshake(None)).await;
    assert_eq!(status, StatusCode::OK, "programs send no Origin");
}
