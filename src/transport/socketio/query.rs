//! What an Engine.IO request says in its query: the transport it uses and the session it belongs
//! to. The network edge's gate and the namespace's admission both read it from here.

use crate::transport::Sid;

/// An Engine.IO request's query, as far as this server reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EngineQuery<'a> {
    /// `polling` or `websocket`.
    pub transport: Option<&'a str>,
    /// The session, on every request after the handshake.
    pub sid: Option<Sid>,
}

impl<'a> EngineQuery<'a> {
    pub fn parse(query: Option<&'a str>) -> EngineQuery<'a> {
        let mut parsed = EngineQuery::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("transport", t)) => parsed.transport = Some(t),
                Some(("sid", s)) => parsed.sid = s.parse().ok(),
                _ => {}
            }
        }
        parsed
    }

    pub fn is_polling(&self) -> bool {
        self.transport == Some("polling")
    }

    pub fn is_websocket(&self) -> bool {
        self.transport == Some("websocket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_transport_and_session() {
        let sid = Sid::new();
        let query = format!("EIO=4&transport=polling&t=abc&sid={sid}");
        let parsed = EngineQuery::parse(Some(&query));
        assert!(parsed.is_polling());
        assert_eq!(parsed.sid, Some(sid));
        let parsed = EngineQuery::parse(Some("EIO=4&transport=websocket"));
        assert!(parsed.is_websocket() && parsed.sid.is_none());
        assert_eq!(EngineQuery::parse(None), EngineQuery::default());
    }
}
