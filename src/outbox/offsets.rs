//! The offsets of Socket.IO's connection state recovery. A client keeps the offset of the last
//! event it received and sends it back when it reconnects; the server must then send exactly what
//! came after. Messages here are ordered per room (each room its own timestamps), so an offset is
//! the connection's whole position: for each of its rooms, the newest timestamp it was sent, as
//! `<room tag>.<timestamp>` pairs joined by `~`, both in base 36. A room's tag is a 32-bit hash of
//! its name: offsets stay short whatever the names, and a session's rooms are told apart unless
//! two of them collide (then neither is taken from the offset; see [`Offset::position`]).

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

/// Longest offset read back, in bytes (a client sends it in its handshake).
const MAX_LEN: usize = 16 * 1024;

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
    pub fn decode(text: &str) -> Result<Offset, Unreadable> {
        if text.len() > MAX_LEN {
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

    /// Where the offset puts `room`, one of `rooms` (the session's): `None` when the offset does
    /// not name it, or names it ambiguously (another of `rooms` has the same tag).
    pub fn position<'a>(
        &self,
        room: &str,
        rooms: impl Iterator<Item = &'a str>,
    ) -> Option<Position> {
        let tag = tag(room);
        let position = self.positions.get(&tag)?;
        let sharing = rooms.filter(|r| self::tag(r) == tag).count();
        (sharing == 1).then_some(*position)
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
        let offset = Offset::decode(&text).unwrap();
        let names = || rooms.iter().map(|(r, _)| *r);
        for (room, position) in rooms {
            assert_eq!(offset.position(room, names()), Some(position), "{room}");
        }
        assert_eq!(offset.position("other", names()), None);
        assert_eq!(Offset::decode("").unwrap(), Offset::default());
    }

    #[test]
    fn foreign_or_hostile_offsets_are_refused() {
        for text in ["abc", "g_.1", "1.2~3", "zzzzzzzzzzzzz.1", "1.-5"] {
            assert_eq!(Offset::decode(text), Err(Unreadable), "{text}");
        }
        assert_eq!(Offset::decode(&"1.1~".repeat(5000)), Err(Unreadable));
    }

    #[test]
    fn a_tag_shared_by_two_rooms_of_the_session_names_neither() {
        let offset = Offset::decode(&encode([("a", Position(5))].into_iter())).unwrap();
        // Pretend the session has a second room with the same tag.
        let positions = offset.positions.clone();
        let same = Offset { positions };
        assert_eq!(same.position("a", ["a", "a"].into_iter()), None);
        assert_eq!(
            same.position("a", ["a", "b"].into_iter()),
            Some(Position(5))
        );
    }
}
