//! The stores behind a Twine server: where messages are kept for recovery and where sessions
//! remember their rooms and acknowledged positions.
//!
//! # Layout
//!
//! - [`Position`]: a message's place in its room, a per-room unique, strictly increasing
//!   millisecond timestamp. "Everything after position P" is exact.
//! - [`History`]: the per-room message log. `append` assigns the position (so a shared backend can
//!   assign it on its own side, one clock for every node) and honours idempotency keys,
//!   `read_page` pages through it oldest first, `replay_start` finds where a capped replay
//!   begins, and `feed` yields the messages appended to the rooms a node listens to ([`feed`]).
//! - [`SessionStore`]: a session's rooms, their join positions and handled positions, with a
//!   bound on the rooms one session holds.
//! - [`Archive`]: the long-window tier, and [`Tiered`], a recent tier in front of it.
//! - [`WriteThrough`]: history kept only in an archive, written before a publish is accepted.
//! - [`Fleet`]: where the nodes of a deployment announce themselves ([`MemoryFleet`] for one
//!   process).
//! - [`Presence`]: who is present in each room, shared by the nodes ([`MemoryPresence`] for one).
//! - [`memory`]: the embedded default, both stores in one process, within bounds of its own.
//! - `conformance` (with the `testing` feature): the suite every store implementation must
//!   pass; `testing`: test doubles (an archive in memory).
//! - [`StoreError`]: what a store can fail with.

mod archive;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod error;
pub mod feed;
mod fleet;
mod history;
pub mod memory;
mod position;
mod presence;
mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod write_through;

pub use archive::{Archive, Tiered};
pub use error::StoreError;
pub use feed::{EveryRoom, Feed, FeedBudget, FeedEvent, FeedSender, Listen};
pub use fleet::{Announced, Fleet, MemoryFleet};
pub use history::{Appended, History, Message, Page, PageLimit, Publish, ReplayStart};
pub use memory::{MemoryOptions, MemoryStore};
pub use position::Position;
pub use presence::{Change, Member, MemoryPresence, Presence, PresenceEvent, PresenceFeed, Update};
pub use session::{Joined, Progress, RoomCursor, Session, SessionStore};
pub use write_through::WriteThrough;
