//! The two packets the server's edge rewrites as they leave, because socketioxide and
//! engineioxide write them with no way to change them:
//!
//! - Engine.IO's OPEN packet (`0{...,"maxPayload":N}`) carries the bound engineioxide is given,
//!   set out of reach so a long-polling response never leaves a packet behind
//!   ([`crate::ENGINE_MAX_PAYLOAD`]); clients must be told `--max-payload` instead, on either
//!   transport the handshake comes by.
//! - Socket.IO's connection state recovery needs the namespace CONNECT reply to carry the
//!   session's `pid` beside the socket id: `40{"sid":"…","pid":"…"}`.
//!
//! Either is rewritten in a long-polling response body, or in the WebSocket frame that carries
//! it. Only a connection with a rewrite pending is looked at, and only until its packet passed.

/// A rewrite waiting for its packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// The OPEN packet tells this `maxPayload`.
    MaxPayload(u64),
    /// The CONNECT reply carries this `pid`.
    Pid(Box<str>),
}

/// The OPEN packet, as it starts.
const OPEN: &[u8] = b"0{";
/// The CONNECT reply to the default namespace, as it starts (Engine.IO message `4`, Socket.IO
/// CONNECT `0`).
const CONNECT_REPLY: &[u8] = b"40{\"sid\":\"";
/// Engine.IO's separator between packets in a long-polling payload.
const SEPARATOR: u8 = 0x1e;
/// A final WebSocket text frame, as the server sends them (unmasked).
const TEXT_FRAME: u8 = 0x81;
/// A WebSocket frame's length byte that says a 16-bit length follows.
const LENGTH_16: u8 = 126;

impl Rewrite {
    fn starts(&self) -> &'static [u8] {
        match self {
            Rewrite::MaxPayload(_) => OPEN,
            Rewrite::Pid(_) => CONNECT_REPLY,
        }
    }

    /// `packet` rewritten, if it is the packet this rewrite waits for.
    fn apply(&self, packet: &[u8]) -> Option<Vec<u8>> {
        if !packet.starts_with(self.starts()) || packet.last() != Some(&b'}') {
            return None;
        }
        match self {
            Rewrite::MaxPayload(max) => with_max_payload(packet, *max),
            Rewrite::Pid(pid) => Some(with_pid(packet, pid)),
        }
    }

    /// A long-polling payload with the packet in it rewritten; `None` when it is not in it.
    pub fn polling(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut start = 0;
        for packet in payload.split(|b| *b == SEPARATOR) {
            if let Some(replaced) = self.apply(packet) {
                let mut out = Vec::with_capacity(payload.len() + replaced.len());
                out.extend_from_slice(&payload[..start]);
                out.extend_from_slice(&replaced);
                out.extend_from_slice(&payload[start + packet.len()..]);
                return Some(out);
            }
            start += packet.len() + 1;
        }
        None
    }

    /// Where in `bytes` (a stretch of the server's WebSocket output) the frame carrying the
    /// packet starts.
    pub fn find_frame(&self, bytes: &[u8]) -> Option<usize> {
        let starts = self.starts();
        (0..bytes.len()).find(|&at| {
            let rest = &bytes[at..];
            match rest {
                [TEXT_FRAME, LENGTH_16, _, _, payload @ ..] => payload.starts_with(starts),
                [TEXT_FRAME, len, payload @ ..] if *len < LENGTH_16 => payload.starts_with(starts),
                _ => false,
            }
        })
    }

    /// The frame at the start of `bytes` (found by [`Rewrite::find_frame`]) rewritten: how many
    /// bytes of `bytes` it replaces and the frame to write instead. `None` when the frame is not
    /// whole in `bytes`.
    pub fn frame(&self, bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
        let (header, len) = match *bytes.get(1)? {
            LENGTH_16 => (
                4,
                u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            ),
            len => (2, len as usize),
        };
        let payload = bytes.get(header..header + len)?;
        let replaced = self.apply(payload)?;
        let mut frame = Vec::with_capacity(replaced.len() + 4);
        frame.push(TEXT_FRAME);
        match u16::try_from(replaced.len()) {
            Ok(n) if n < u16::from(LENGTH_16) => frame.push(n as u8),
            Ok(n) => {
                frame.push(LENGTH_16);
                frame.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => return None, // never: both packets are a few hundred bytes at most
        }
        frame.extend_from_slice(&replaced);
        Some((header + len, frame))
    }
}

/// The reply with `,"pid":"<pid>"` added before its closing brace.
fn with_pid(packet: &[u8], pid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + pid.len() + 9);
    out.extend_from_slice(&packet[..packet.len() - 1]);
    out.extend_from_slice(b",\"pid\":\"");
    out.extend_from_slice(pid.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// A long-polling handshake's payload with its session id naming `node`, the node that holds
/// the session (`"sid":"<sid>.<node>"`: see [`crate::fleet::forward`]); `None` when it has no
/// OPEN packet.
pub fn with_node(payload: &[u8], node: &str) -> Option<Vec<u8>> {
    const FIELD: &[u8] = b"\"sid\":\"";
    if !payload.starts_with(OPEN) {
        return None;
    }
    let at = payload.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let end = at + payload[at..].iter().position(|b| *b == b'"')?;
    let mut out = Vec::with_capacity(payload.len() + node.len() + 1);
    out.extend_from_slice(&payload[..end]);
    out.push(b'.');
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&payload[end..]);
    Some(out)
}

/// The OPEN packet with its `maxPayload` replaced by `max_payload`.
fn with_max_payload(packet: &[u8], max_payload: u64) -> Option<Vec<u8>> {
    const FIELD: &[u8] = b"\"maxPayload\":";
    let at = packet.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = packet[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&packet[..at]);
    out.extend_from_slice(max_payload.to_string().as_bytes());
    out.extend_from_slice(&packet[at + digits..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(pid: &str) -> Rewrite {
        Rewrite::Pid(pid.into())
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![TEXT_FRAME];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(LENGTH_16);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_reply_gets_the_pid_in_a_polling_payload_and_nothing_else_changes() {
        let payload = b"40{\"sid\":\"abc\"}\x1e42[\"x\",\"40{\\\"sid\\\":1}\"]";
        let out = pid("P1").polling(payload).unwrap();
        assert_eq!(
            out,
            b"40{\"sid\":\"abc\",\"pid\":\"P1\"}\x1e42[\"x\",\"40{\\\"sid\\\":1}\"]"
        );
        let later = b"2\x1e40{\"sid\":\"abc\"}";
        assert_eq!(
            pid("P").polling(later).unwrap(),
            b"2\x1e40{\"sid\":\"abc\",\"pid\":\"P\"}"
        );
        assert_eq!(pid("P").polling(b"42[\"message\",{}]"), None);
        assert_eq!(pid("P").polling(b"6"), None);
    }

    #[test]
    fn the_handshake_tells_the_configured_max_payload() {
        let open = br#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":2147483647}"#;
        let rewrite = Rewrite::MaxPayload(1_000_000);
        for out in [
            rewrite.polling(open).unwrap(),
            rewrite.frame(&frame(open)).unwrap().1[2..].to_vec(),
        ] {
            let json: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
            assert_eq!(json["maxPayload"], 1_000_000);
            assert_eq!(json["sid"], "abc");
        }
        assert_eq!(rewrite.polling(b"40{\"sid\":\"x\"}"), None);
        assert_eq!(rewrite.polling(b"0{\"sid\":\"x\"}"), None);
        let tagged = with_node(open, "n1").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&tagged[1..]).unwrap();
        assert_eq!(json["sid"], "abc.n1");
        assert_eq!(json["pingInterval"], 25000);
        assert_eq!(with_node(b"40{\"sid\":\"x\"}", "n1"), None);
    }

    #[test]
    fn the_frame_is_found_among_others_and_rewritten_whole() {
        let reply = b"40{\"sid\":\"ABCDEFGHIJKLMNOP\"}";
        let mut output = frame(b"3");
        output.extend_from_slice(&frame(reply));
        output.extend_from_slice(&frame(b"2"));
        let rewrite = pid("PID");
        let at = rewrite.find_frame(&output).unwrap();
        assert_eq!(at, 3);
        let (replaced, out) = rewrite.frame(&output[at..]).unwrap();
        assert_eq!(replaced, 2 + reply.len());
        assert_eq!(
            out,
            frame(b"40{\"sid\":\"ABCDEFGHIJKLMNOP\",\"pid\":\"PID\"}")
        );
        // Not whole yet: left alone.
        assert_eq!(rewrite.frame(&output[at..at + 10]), None);
        assert_eq!(rewrite.find_frame(&frame(b"42[")), None);
    }

    #[test]
    fn lengths_over_125_take_two_bytes_both_ways() {
        let long_sid = format!("40{{\"sid\":\"{}\"}}", "s".repeat(130));
        let (replaced, out) = pid("p").frame(&frame(long_sid.as_bytes())).unwrap();
        assert_eq!(replaced, 4 + long_sid.len());
        assert_eq!(out[1], LENGTH_16);
        let len = u16::from_be_bytes([out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 4);
        let (_, short) = pid(&"p".repeat(120))
            .frame(&frame(b"40{\"sid\":\"x\"}"))
            .unwrap();
        assert_eq!(short[1], LENGTH_16);
    }
}
