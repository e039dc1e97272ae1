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
    /// The session id as the client sent it.
    pub sid_text: Option<&'a str>,
    /// The node that holds the session, when its id names one (`<sid>.<node>`: see
    /// [`crate::fleet::forward`]).
    pub node: Option<&'a str>,
}

impl<'a> EngineQuery<'a> {
    pub fn parse(query: Option<&'a str>) -> EngineQuery<'a> {
        let mut parsed = EngineQuery::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("transport", t)) => parsed.transport = Some(t),
                Some(("sid", s)) => {
                    let (sid, node) = s.split_once('.').map_or((s, None), |(s, n)| (s, Some(n)));
                    parsed.sid = sid.parse().ok();
                    parsed.sid_text = Some(s);
                    parsed.node = node;
                }
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

/// `query` with its session id's node (`.<node>`) taken off, as Engine.IO knows the session.
pub fn without_node(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("sid", s)) => match s.split_once('.') {
                Some((sid, _)) => format!("sid={sid}"),
                None => pair.to_owned(),
            },
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
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
        let tagged = format!("EIO=4&transport=websocket&sid={sid}.n0de");
        let parsed = EngineQuery::parse(Some(&tagged));
        assert_eq!((parsed.sid, parsed.node), (Some(sid), Some("n0de")));
        assert_eq!(EngineQuery::parse(None), EngineQuery::default());
    }
}
