//! The error every store reports, classified so callers can tell an outage from bad data.

/// A store operation that did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time; the operation may or may not
    /// have taken effect, and may succeed when it is retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation's deadline passed before the backend ran it, so it did not take effect.
    #[error("store too late: {0}")]
    Expired(String),
    /// The store is up but refuses more work until a backlog drains.
    #[error("store full: {0}")]
    Full(String),
    /// The message was stored, but not confirmed as copied to as many replicas as asked in
    /// time: it is kept unless the store fails over now. A retry with the same idempotency key
    /// settles it.
    #[error("store did not confirm in time: {0}")]
    Unconfirmed(String),
    /// A write was sent, and its answer did not come back in time: it may or may not have taken
    /// effect (a timely write whose answer was held up). A retry with the same idempotency key
    /// settles it.
    #[error("store did not answer in time: {0}")]
    Unanswered(String),
    /// An idempotency key was reused for a different message.
    #[error("idempotency key reused for another message")]
    KeyReused,
    /// The backend answered with something this store cannot read.
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Expired(_)
                | StoreError::Full(_)
                | StoreError::Unanswered(_)
        )
    }
}
