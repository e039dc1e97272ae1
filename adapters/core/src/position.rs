//! The position of a message in its room.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A message's position in its room: milliseconds since the Unix epoch, made unique and strictly
/// increasing per room by the store that assigns it. It is the `timestamp` clients see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl Position {
    /// Before every message.
    pub const ZERO: Position = Position(0);
    /// After every message.
    pub const MAX: Position = Position(u64::MAX);

    /// The position for a message appended at wall-clock `now_ms` to a room whose newest message
    /// is at `last`: the clock when it has moved on, else one past `last`, so two appends in the
    /// same millisecond (or a clock that stepped back) still get distinct, increasing positions.
    pub fn next(last: Position, now_ms: u64) -> Position {
        Position(now_ms.max(last.0 + 1))
    }

    /// The wall clock, in milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_follows_the_clock_when_it_moved_on() {
        assert_eq!(Position::next(Position(100), 250), Position(250));
    }

    #[test]
    fn next_stays_unique_within_one_millisecond_and_when_the_clock_steps_back() {
        assert_eq!(Position::next(Position(250), 250), Position(251));
        assert_eq!(Position::next(Position(251), 250), Position(252));
        assert_eq!(Position::next(Position(300), 10), Position(301));
    }
}
