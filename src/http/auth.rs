//! The publish API key and its check: raw or `Bearer <key>` in `Authorization`, compared in
//! constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_missing_key_is_generated() {
        let (a, generated) = ApiKey::configured_or_generated(None);
        let (b, _) = ApiKey::configured_or_generated(Some(""));
        assert!(generated);
        assert!(a.as_str().len() >= 32);
        assert_ne!(a.as_str(), b.as_str());
    }
}
