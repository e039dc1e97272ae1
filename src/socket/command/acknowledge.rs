//! `updateSessionTS`: the client acknowledges a message by its timestamp (its position). Applied
//! on the read path at once, never queued: acknowledgements are most of what clients send, and
//! the replay a client is waiting on must see them.

use serde_json::value::RawValue;
use twine_store::Position;

use super::{Command, Decoding, Refusal};

/// An acknowledgement of the message at `position` in whichever room sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledge(pub Position);

pub fn parse(
    name: &'static str,
    arg: Option<&RawValue>,
    _: &Decoding<'_>,
) -> Result<Command, Refusal> {
    arg.and_then(timestamp)
        .map(|position| Command::Acknowledge(Acknowledge(position)))
        .ok_or_else(|| {
            Refusal::new(
                name,
                "timestamp must be the non-negative integer timestamp of a received message",
            )
        })
}

/// `["updateSessionTS",<digits>]` as clients send it, without spaces: its position.
pub fn plain(data: &str) -> Option<Acknowledge> {
    let digits = data
        .strip_prefix("[\"updateSessionTS\",")?
        .strip_suffix(']')?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|p| Acknowledge(Position(p)))
}

/// A client's `updateSessionTS` argument as a position: a non-negative whole number.
fn timestamp(arg: &RawValue) -> Option<Position> {
    let number: serde_json::Number = serde_json::from_str(arg.get()).ok()?;
    number.as_u64().map(Position).or_else(|| {
        let f = number.as_f64()?;
        (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(Position(f as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn plain_acknowledgements_are_read_as_serde_reads_them() {
        for (data, arg) in [
            (r#"["updateSessionTS",1732000000123]"#, "1732000000123"),
            (r#"["updateSessionTS",0]"#, "0"),
            (
                r#"["updateSessionTS",18446744073709551615]"#,
                "18446744073709551615",
            ),
        ] {
            assert_eq!(plain(data).map(|a| a.0), timestamp(&raw(arg)), "{data}");
        }
        for other in [
            r#"["updateSessionTS", 1]"#,
            r#"["updateSessionTS",1.5e12]"#,
            r#"["updateSessionTS",-1]"#,
            r#"["updateSessionTS","1"]"#,
            r#"["updateSessionTS",99999999999999999999]"#,
            r#"["subscribe",1]"#,
        ] {
            assert_eq!(plain(other), None, "{other}");
        }
    }

    #[test]
    fn timestamps_are_non_negative_whole_numbers() {
        assert_eq!(
            timestamp(&raw("1732000000123")),
            Some(Position(1_732_000_000_123))
        );
        assert_eq!(timestamp(&raw("1.5e12")), Some(Position(1_500_000_000_000)));
        assert_eq!(timestamp(&raw("1.5")), None);
        assert_eq!(timestamp(&raw("-3")), None);
        assert_eq!(timestamp(&raw(r#""123""#)), None);
    }
}
