//! Who may publish and who may connect: the API key backends send (raw or `Bearer <key>` in
//! `Authorization`, compared in constant time), and the signed tokens (HS256 JWT, as Cerebellum's)
//! a Socket.IO handshake may carry in `auth.token`, each optionally limiting the rooms its
//! connection may join.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::AppError;

pub struct ApiKey(String);

impl ApiKey {
    /// The configured key, or a fresh random one (returned with `true`) when none was configured.
    pub fn configured_or_generated(configured: Option<&str>) -> (ApiKey, bool) {
        match configured {
            Some(key) if !key.is_empty() => (ApiKey(key.to_owned()), false),
            _ => (ApiKey(uuid::Uuid::new_v4().simple().to_string()), true),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts the request's `Authorization` header if it carries this key.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AppError> {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(AppError::MissingApiKey)?;
        let given = given
            .strip_prefix("Bearer ")
            .or_else(|| given.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or(given);
        // Timing does not reveal how much of a guess was right (the length is not secret).
        if bool::from(given.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(AppError::InvalidApiKey)
        }
    }
}

/// Signs what the server hands out and must recognise later (a Socket.IO recovery `pid`), with
/// HMAC-SHA256 under the token secret, so every node sharing the secret recognises it.
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: secret.to_vec(),
        }
    }

    /// The signature of `message`, as lowercase hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(message);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `signature` starts `message`'s signature (at least 32 hex digits of it), compared
    /// in constant time.
    pub fn verify_hex(&self, message: &[u8], signature: &str) -> bool {
        let expected = self.sign_hex(message);
        signature.len() >= 32
            && signature.len() <= expected.len()
            && bool::from(
                signature
                    .as_bytes()
                    .ct_eq(&expected.as_bytes()[..signature.len()]),
            )
    }
}

/// Whether Socket.IO connections must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Tokens are neither asked for nor read (the original's behaviour).
    Off,
    /// A connection may carry a token; a bad one is refused, none is let in unlimited.
    Optional,
    /// Every connection must carry a valid token.
    Required,
}

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Rooms the connection may join: names, or prefixes ending in `*`. Absent: any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Rooms the connection may publish to with `--client-publish token`, as `rooms`. Absent:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
}

/// What one connection was granted.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    /// The token's subject: who the connection is, as the backend that minted it said.
    user: Option<String>,
}

impl Grant {
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The grant with `user` as who the connection is (the connect hook said so).
    pub fn with_user(mut self, user: Option<String>) -> Grant {
        if user.is_some() {
            self.user = user;
        }
        self
    }

    pub fn allows(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|allowed| names(allowed, room))
    }

    /// Whether the token lists `room` among those it may publish to.
    pub fn allows_publishing(&self, room: &str) -> bool {
        self.publish
            .as_ref()
            .is_some_and(|allowed| names(allowed, room))
    }
}

/// Whether `patterns` (names, or prefixes ending in `*`) name `room`.
fn names(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => a == room,
    })
}

/// A handshake's token was missing, expired or forged. Clients see only `Authentication error`,
/// as with Cerebellum.
#[derive(Debug, thiserror::Error)]
#[error("Authentication error")]
pub struct AuthError;

/// Checks and mints tokens.
pub struct Tokens {
    mode: AuthMode,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of minted tokens, unless asked otherwise (and at most `max_ttl`).
    ttl: Duration,
    max_ttl: Duration,
}

/// The handshake's auth object.
#[derive(Deserialize)]
struct HandshakeAuth {
    token: Option<String>,
}

impl Tokens {
    pub fn new(mode: AuthMode, secret: &[u8], ttl: Duration, max_ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        Tokens {
            mode,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            max_ttl,
        }
    }

    /// What a handshake whose auth object is `auth` (JSON text) is granted, or why it is refused.
    pub fn admit(&self, auth: Option<&str>) -> Result<Grant, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(Grant::default());
        }
        let token = auth
            .and_then(|text| serde_json::from_str::<HandshakeAuth>(text).ok())
            .and_then(|auth| auth.token);
        let Some(token) = token else {
            return match self.mode {
                AuthMode::Required => Err(AuthError),
                _ => Ok(Grant::default()),
            };
        };
        let claims = jsonwebtoken::decode::<Claims>(&token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!("token refused: {e}");
                AuthError
            })?
            .claims;
        Ok(Grant {
            rooms: claims.rooms,
            publish: claims.publish,
            user: claims.sub,
        })
    }

    /// A token for `rooms` (any when `None`) that may publish to `publish`, living `ttl` (the
    /// default when `None`, at most the maximum). Returns it with its expiry, seconds since the
    /// epoch.
    pub fn mint(
        &self,
        sub: Option<String>,
        rooms: Option<Vec<String>>,
        publish: Option<Vec<String>>,
        ttl: Option<Duration>,
    ) -> (String, u64) {
        let ttl = ttl.unwrap_or(self.ttl).min(self.max_ttl);
        let exp = (SystemTime::now() + ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            exp,
            sub,
            rooms,
            publish,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail");
        (token, exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(mode: AuthMode) -> Tokens {
        Tokens::new(
            mode,
            b"secret",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )
    }

    fn auth(token: &str) -> String {
        format!(r#"{{"token":"{token}"}}"#)
    }

    #[test]
    fn minted_tokens_are_accepted_and_limit_their_rooms() {
        let t = tokens(AuthMode::Required);
        let (token, exp) = t.mint(
            None,
            Some(vec!["news".into(), "team-*".into()]),
            Some(vec!["team-*".into()]),
            None,
        );
        assert!(
            exp > SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        );
        let grant = t.admit(Some(&auth(&token))).unwrap();
        assert!(grant.allows("news"));
        assert!(grant.allows("team-red"));
        assert!(!grant.allows("newsroom"));
        assert!(!grant.allows("other"));
        assert!(grant.allows_publishing("team-red"));
        assert!(!grant.allows_publishing("news"));
        let (any, _) = t.mint(None, None, None, None);
        let any = t.admit(Some(&auth(&any))).unwrap();
        assert!(any.allows("anything"));
        assert!(
            !any.allows_publishing("anything"),
            "no room to publish unless listed"
        );
    }

    #[test]
    fn expired_forged_and_missing_tokens_are_refused_by_mode() {
        let t = tokens(AuthMode::Required);
        let expired = Claims {
            exp: 1,
            sub: None,
            rooms: None,
            publish: None,
        };
        let key = EncodingKey::from_secret(b"secret");
        let expired = jsonwebtoken::encode(&Header::default(), &expired, &key).unwrap();
        assert!(t.admit(Some(&auth(&expired))).is_err(), "expired");
        let other = Tokens::new(
            AuthMode::Required,
            b"another secret",
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let (forged, _) = other.mint(None, None, None, None);
        assert!(t.admit(Some(&auth(&forged))).is_err(), "forged");
        assert!(t.admit(None).is_err(), "missing when required");
        assert!(t.admit(Some("{}")).is_err(), "no token field");
        let optional = tokens(AuthMode::Optional);
        assert!(
            optional.admit(None).unwrap().allows("any"),
            "optional: none is fine"
        );
        assert!(
            optional.admit(Some(&auth(&forged))).is_err(),
            "but a bad one is not"
        );
        let off = tokens(AuthMode::Off);
        assert!(off.admit(Some(&auth("garbage"))).is_ok(), "off: not read");
    }

    #[test]
    fn a_minted_lifetime_is_capped() {
        let t = tokens(AuthMode::Required);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (_, exp) = t.mint(None, None, None, Some(Duration::from_secs(86_400 * 30)));
        assert!(exp <= now + 3601);
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn raw_and_bearer_keys_are_accepted() {
        let key = ApiKey("s3cret".into());
        assert!(key.check(&with_auth("s3cret")).is_ok());
        assert!(key.check(&with_auth("Bearer s3cret")).is_ok());
        assert!(matches!(
            key.check(&with_auth("s3cre")),
            Err(AppError::InvalidApiKey)
        ));
        assert!(matches!(
            key.check(&with_auth("Bearer nope")),
            Err(AppError::InvalidApiKey)
        ));
        assert!(matches!(
            key.check(&HeaderMap::new()),
            Err(AppError::MissingApiKey)
        ));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_secret() {
        let signer = Signer::new(b"secret");
        let signature = signer.sign_hex(b"pid-1");
        assert_eq!(signature.len(), 64);
        assert!(signer.verify_hex(b"pid-1", &signature));
        assert!(signer.verify_hex(b"pid-1", &signature[..32]), "a prefix");
        assert!(!signer.verify_hex(b"pid-1", &signature[..31]), "too short");
        assert!(!signer.verify_hex(b"pid-2", &signature));
        assert!(!Signer::new(b"other").verify_hex(b"pid-1", &signature));
    }

    #[test]
    fn a_missing_key_is_generated() {
        let (a, generated) = ApiKey::configured_or_generated(None);
        let (b, _) = ApiKey::configured_or_generated(Some(""));
        assert!(generated);
        assert!(a.as_str().len() >= 32);
        assert_ne!(a.as_str(), b.as_str());
    }
}
