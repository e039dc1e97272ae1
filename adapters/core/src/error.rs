//! The error every store reports, classified so callers can tell an outage from bad data.

/// A store operation that did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time; the operation may succeed
    /// when it is retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is up but refuses more work until a backlog drains.
    #[error("store full: {0}")]
    Full(String),
    /// The backend answered with something this store cannot read.
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}
