//! The offsets of Socket.IO's connection state recovery. A client keeps the offset of the last
//! event it received and sends it back when it reconnects; the server must then send exactly what
//! came after. Messages here are ordered per room (each room its own timestamps), so an offset is
//! the connection's whole position: for each of its rooms, the newest timestamp it was sent, as
//! `<room tag>.<timestamp>` pairs joined by `~`, both in base 36. A room's tag is a 32-bit hash of
//! its name: offsets stay short whatever the names, and a session's rooms are told apart unless
//! two of them collide (then neither is taken from the offset; see [`Offset::positions`]).
//!
//! An offset grows with the connection's rooms: at most [`BYTES_PER_ROOM`] bytes each (about 15
//! for a room with a current timestamp), so at most that times `--max-rooms`, on every event the
//! client is sent. Socket.IO keeps only the last offset a client received, so it must be whole;
//! sessions in hundreds of rooms are better served by the cookie flow, whose events carry none.

use std::collections::HashMap;

use twine_store::Position;

/// The positions an offset names, by room tag.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offset {
    positions: HashMap<u32, Position>,
}

/// An offset this server did not write.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the offset could not be read")]
pub struct Unreadable;

/// Most bytes one room takes in an offset: a tag (up to 7 base-36 digits), a dot, a timestamp (up
/// to 13) and a separator.
pub const BYTES_PER_ROOM: usize = 22;

/// A room's tag: FNV-1a of its name.
pub fn tag(room: &str) -> u32 {
    room.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

fn base36(mut n: u64, out: &mut String) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// The offset of a connection whose rooms stand at `rooms`.
pub fn encode<'a>(rooms: impl Iterator<Item = (&'a str, Position)>) -> String {
    let mut out = String::new();
    for (room, position) in rooms {
        if !out.is_empty() {
            out.push('~');
        }
        base36(u64::from(tag(room)), &mut out);
        out.push('.');
        base36(position.0, &mut out);
    }
    out
}

impl Offset {
    /// Reads an offset of at most `max_rooms` rooms (longer ones were not written here).
    pub fn decode(text: &str, max_rooms: usize) -> Result<Offset, Unreadable> {
        if text.len() > max_rooms.saturating_mul(BYTES_PER_ROOM) {
            return Err(Unreadable);
        }
        let mut positions = HashMap::new();
        for pair in text.split('~').filter(|p| !p.is_empty()) {
            let (tag, position) = pair.split_once('.').ok_or(Unreadable)?;
            let tag = u32::from_str_radix(tag, 36).map_err(|_| Unreadable)?;
            let position = u64::from_str_radix(position, 36).map_err(|_| Unreadable)?;
            positions.insert(tag, Position(position));
        }
        Ok(Offset { positions })
    }

    /// Whether the offset names no room.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Where the offset puts each of `rooms` (the session's), in their order: `None` for a room
    /// it does not name, or names ambiguously (another of `rooms` has the same tag). Linear in
    /// the rooms.
    pub fn positions(&self, rooms: &[&str]) -> Vec<Option<Position>> {
        let tags: Vec<u32> = rooms.iter().map(|room| tag(room)).collect();
        let mut sharing: HashMap<u32, usize> = HashMap::with_capacity(tags.len());
        for t in &tags {
            *sharing.entry(*t).or_default() += 1;
        }
        tags.iter()
            .map(|t| {
                let alone = sharing[t] == 1;
                self.positions.get(t).copied().filter(|_| alone)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_every_room() {
        let rooms = [
            ("news", Position(1_795_593_690_279)),
            ("a~b.c", Position(0)),
            ("", Position(u64::MAX)),
        ];
        let text = encode(rooms.iter().map(|(r, p)| (*r, *p)));
        assert!(text.len() < 60, "{text}");
        let offset = Offset::decode(&text, rooms.len()).unwrap();
        let names = ["news", "a~b.c", "", "other"];
        let wanted: Vec<Option<Position>> =
            rooms.iter().map(|(_, p)| Some(*p)).chain([None]).collect();
        assert_eq!(offset.positions(&names), wanted);
        assert_eq!(Offset::decode("", 1).unwrap(), Offset::default());
    }

    #[test]
    fn foreign_or_hostile_offsets_are_refused() {
        for text in ["abc", "g_.1", "1.2~3", "zzzzzzzzzzzzz.1", "1.-5"] {
            assert_eq!(Offset::decode(text, 10), Err(Unreadable), "{text}");
        }
        assert_eq!(Offset::decode(&"1.1~".repeat(5000), 100), Err(Unreadable));
    }

    #[test]
    fn a_tag_shared_by_two_rooms_of_the_session_names_neither() {
        let offset = Offset::decode(&encode([("a", Position(5))].into_iter()), 1).unwrap();
        // Pretend the session has a second room with the same tag.
        assert_eq!(offset.positions(&["a", "a"]), [None, None]);
        assert_eq!(offset.positions(&["a", "b"]), [Some(Position(5)), None]);
    }

    #[test]
    fn a_full_session_fits_its_bound() {
        let rooms: Vec<String> = (0..1_000).map(|i| format!("room-{i}")).collect();
        let position = Position(u64::MAX);
        let text = encode(rooms.iter().map(|r| (r.as_str(), position)));
        let offset = Offset::decode(&text, rooms.len()).unwrap();
        let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
        assert!(
            offset
                .positions(&names)
                .iter()
                .all(|p| *p == Some(position))
        );
    }
}
