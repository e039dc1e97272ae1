//! The HTTP routes, driven in-process through the router the binary serves.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use twine::Server;
use twine::config::Config;
use twine::stores::Stores;
use twine_store::{Message, Position};

async fn server(args: &[&str]) -> Server {
    let args = ["twine", "--api-key", "k"].iter().chain(args);
    let config = Config::from_sources(args, std::iter::empty()).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    Server::build(config, stores).await.unwrap()
}

async fn call(server: &Server, request: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let response = server.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn stored(server: &Server, room: &str) -> Vec<Message> {
    let history = &server.app.history;
    let page = history.read_after(room, Position::ZERO, Position::MAX, 100);
    page.await.unwrap().messages
}

fn publish(key: &str, body: &str) -> Request<Body> {
    Request::post("/api/twine")
        .header(header::AUTHORIZATION, key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
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
