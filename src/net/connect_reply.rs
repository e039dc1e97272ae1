//! Socket.IO's connection state recovery needs the namespace CONNECT reply to carry the
//! session's `pid` beside the socket id: `40{"sid":"…","pid":"…"}`. socketioxide writes the reply
//! with the `sid` alone and offers no way to add to it, so the edge adds the `pid` as the reply
//! leaves: in a long-polling response body, or in the WebSocket frame that carries it. Only a
//! connection that was given a `pid` is looked at, and only until its reply has passed.

/// The CONNECT reply to the default namespace, as it starts (Engine.IO message `4`, Socket.IO
/// CONNECT `0`).
const CONNECT_REPLY: &[u8] = b"40{\"sid\":\"";
/// Engine.IO's separator between packets in a long-polling payload.
const SEPARATOR: u8 = 0x1e;
/// A final WebSocket text frame, as the server sends them (unmasked).
const TEXT_FRAME: u8 = 0x81;

/// The reply with `,"pid":"<pid>"` added before its closing brace, if `packet` is the reply.
fn with_pid(packet: &[u8], pid: &str) -> Option<Vec<u8>> {
    if !packet.starts_with(CONNECT_REPLY) || packet.last() != Some(&b'}') {
        return None;
    }
    let mut out = Vec::with_capacity(packet.len() + pid.len() + 9);
    out.extend_from_slice(&packet[..packet.len() - 1]);
    out.extend_from_slice(b",\"pid\":\"");
    out.extend_from_slice(pid.as_bytes());
    out.extend_from_slice(b"\"}");
    Some(out)
}

/// A long-polling payload with the CONNECT reply in it given `pid`; `None` when the reply is not
/// in it.
pub fn rewrite_polling(payload: &[u8], pid: &str) -> Option<Vec<u8>> {
    let mut start = 0;
    for packet in payload.split(|b| *b == SEPARATOR) {
        if let Some(replaced) = with_pid(packet, pid) {
            let mut out = Vec::with_capacity(payload.len() + replaced.len() - packet.len());
            out.extend_from_slice(&payload[..start]);
            out.extend_from_slice(&replaced);
            out.extend_from_slice(&payload[start + packet.len()..]);
            return Some(out);
        }
        start += packet.len() + 1;
    }
    None
}

/// Where in `bytes` (a stretch of the server's WebSocket output) the frame carrying the CONNECT
/// reply starts.
pub fn find_ws_reply(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(2 + CONNECT_REPLY.len())
        .position(|w| w[0] == TEXT_FRAME && w[1] < 126 && &w[2..] == CONNECT_REPLY)
}

/// The frame at the start of `bytes` (found by [`find_ws_reply`]) rewritten with `pid`: returns
/// how many bytes of `bytes` it replaces and the frame to write instead. `None` when the frame
/// is not whole in `bytes`.
pub fn rewrite_ws_frame(bytes: &[u8], pid: &str) -> Option<(usize, Vec<u8>)> {
    let len = *bytes.get(1)? as usize;
    let payload = bytes.get(2..2 + len)?;
    let replaced = with_pid(payload, pid)?;
    let mut frame = Vec::with_capacity(replaced.len() + 4);
    frame.push(TEXT_FRAME);
    match replaced.len() {
        n if n < 126 => frame.push(n as u8),
        n => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&replaced);
    Some((2 + len, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_gets_the_pid_in_a_polling_payload_and_nothing_else_changes() {
        let payload = b"40{\"sid\":\"abc\"}\x1e42[\"x\",\"40{\\\"sid\\\":1}\"]";
        let out = rewrite_polling(payload, "P1").unwrap();
        assert_eq!(
            out,
            b"40{\"sid\":\"abc\",\"pid\":\"P1\"}\x1e42[\"x\",\"40{\\\"sid\\\":1}\"]"
        );
        let later = b"2\x1e40{\"sid\":\"abc\"}";
        assert_eq!(
            rewrite_polling(later, "P").unwrap(),
            b"2\x1e40{\"sid\":\"abc\",\"pid\":\"P\"}"
        );
        assert_eq!(rewrite_polling(b"42[\"message\",{}]", "P"), None);
        assert_eq!(rewrite_polling(b"6", "P"), None);
    }

    #[test]
    fn the_reply_frame_is_found_among_others_and_rewritten_whole() {
        let reply = b"40{\"sid\":\"ABCDEFGHIJKLMNOP\"}";
        let mut output = vec![0x81, 1, b'3'];
        output.push(0x81);
        output.push(reply.len() as u8);
        output.extend_from_slice(reply);
        output.extend_from_slice(&[0x81, 1, b'2']);
        let at = find_ws_reply(&output).unwrap();
        assert_eq!(at, 3);
        let (replaced, frame) = rewrite_ws_frame(&output[at..], "PID").unwrap();
        assert_eq!(replaced, 2 + reply.len());
        let expected = b"40{\"sid\":\"ABCDEFGHIJKLMNOP\",\"pid\":\"PID\"}";
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1] as usize, expected.len());
        assert_eq!(&frame[2..], expected);
        // Not whole yet: left alone.
        assert_eq!(rewrite_ws_frame(&output[at..at + 10], "PID"), None);
        assert_eq!(find_ws_reply(&[0x81, 5, b'4', b'2', b'[']), None);
    }

    #[test]
    fn a_long_pid_takes_the_two_byte_length() {
        let reply = b"40{\"sid\":\"ABCDEFGHIJKLMNOP\"}";
        let mut frame = vec![0x81, reply.len() as u8];
        frame.extend_from_slice(reply);
        let pid = "p".repeat(120);
        let (_, out) = rewrite_ws_frame(&frame, &pid).unwrap();
        assert_eq!(out[1], 126);
        let len = u16::from_be_bytes([out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 4);
    }
}
