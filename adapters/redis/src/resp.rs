//! The little of RESP2 a subscriber connection speaks: commands out as arrays of bulk strings,
//! and in, the replies pub/sub sends (arrays of bulk strings and integers, errors, simple
//! strings). Frames are read off a growing buffer as they complete.

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Frame>),
}

impl Frame {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Bulk(b) => Some(b),
            Frame::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// A command, encoded.
pub fn command<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The stream did not hold a frame this reader can read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Reads the first whole frame of `buf`: the frame and how many bytes it took, `None` when the
/// buffer holds only part of one.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, Malformed> {
    let Some(line_end) = find_crlf(buf) else {
        return Ok(None);
    };
    let line = &buf[1..line_end];
    let after = line_end + 2;
    let text = || std::str::from_utf8(line).map_err(|_| Malformed);
    let number = || text()?.parse::<i64>().map_err(|_| Malformed);
    match buf.first() {
        Some(b'+') => Ok(Some((Frame::Simple(text()?.to_owned()), after))),
        Some(b'-') => Ok(Some((Frame::Error(text()?.to_owned()), after))),
        Some(b':') => Ok(Some((Frame::Integer(number()?), after))),
        Some(b'$') => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Frame::Nil, after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Ok(Some((
                Frame::Bulk(buf[after..after + len].to_vec()),
                after + len + 2,
            )))
        }
        Some(b'*') => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Frame::Nil, after)));
            }
            let mut items = Vec::with_capacity(count.min(64) as usize);
            let mut at = after;
            for _ in 0..count {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(items), at)))
        }
        _ => Err(Malformed),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let out = command([&b"SSUBSCRIBE"[..], b"a:b"]);
        assert_eq!(out, b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\na:b\r\n");
    }

    #[test]
    fn frames_are_read_whole_or_not_at_all() {
        let message = b"*3\r\n$8\r\nsmessage\r\n$3\r\nc:1\r\n$5\r\nm1:0:\r\n+OK\r\n";
        let (frame, used) = parse(message).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Array(vec![
                Frame::Bulk(b"smessage".to_vec()),
                Frame::Bulk(b"c:1".to_vec()),
                Frame::Bulk(b"m1:0:".to_vec()),
            ])
        );
        assert_eq!(
            parse(&message[used..]).unwrap().unwrap().0,
            Frame::Simple("OK".into())
        );
        for cut in 1..used {
            assert_eq!(parse(&message[..cut]).unwrap(), None, "cut at {cut}");
        }
        let confirm = b"*3\r\n$10\r\nssubscribe\r\n$1\r\nx\r\n:2\r\n";
        assert!(matches!(
            parse(confirm).unwrap().unwrap().0,
            Frame::Array(items) if items[2] == Frame::Integer(2)
        ));
        assert_eq!(
            parse(b"-MOVED 3999 127.0.0.1:6381\r\n").unwrap().unwrap().0,
            Frame::Error("MOVED 3999 127.0.0.1:6381".into())
        );
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Frame::Nil);
        assert_eq!(parse(b"?what\r\n"), Err(Malformed));
    }
}
