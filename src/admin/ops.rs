//! The operator's operations from the Admin UI, with `--admin-readonly off`: `join` and `leave`
//! (a Twine room, joined or left as a room the connect hook names: in the connection's room lane,
//! recorded in its session) and `_disconnect`. Each takes a filter: a socket (by the id the UI knows it by), or a room
//! (every socket of this node in it), or none (every socket of this node); at most
//! [`MAX_TARGETS`] sockets, the newest, per operation. Only this node's sockets are reached.

use std::sync::Arc;

use serde_json::Value;

use super::Admin;
use super::registry::Entry;

/// Most sockets one operation reaches.
pub const MAX_TARGETS: usize = 10_000;

/// What one operation was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Operation {
    Join {
        room: Arc<str>,
        filter: Option<String>,
    },
    Leave {
        room: Arc<str>,
        filter: Option<String>,
    },
    Disconnect {
        filter: Option<String>,
    },
}

/// Reads an event's JSON text, `[name, nsp, ...]`; `None` for anything else (or another
/// namespace than `/`, or a room that is not one).
pub fn parse(text: &str) -> Option<Operation> {
    let args: Vec<Value> = serde_json::from_str(text).ok()?;
    let name = args.first()?.as_str()?;
    if args.get(1)?.as_str()? != "/" {
        return None;
    }
    let string = |i: usize| args.get(i).and_then(Value::as_str).map(str::to_owned);
    let room = || -> Option<Arc<str>> {
        let room = string(2)?;
        crate::room::check(&room).ok()?;
        Some(Arc::from(room))
    };
    match name {
        "join" => Some(Operation::Join {
            room: room()?,
            filter: string(3),
        }),
        "leave" => Some(Operation::Leave {
            room: room()?,
            filter: string(3),
        }),
        "_disconnect" => Some(Operation::Disconnect { filter: string(3) }),
        _ => None,
    }
}

/// Runs the operation the event asks for.
pub fn operate(admin: &Admin, text: &str) {
    let Some(operation) = parse(text) else {
        tracing::debug!("admin event ignored");
        return;
    };
    tracing::info!(?operation, "admin operation");
    match operation {
        Operation::Join { room, filter } => {
            for entry in targets(admin, filter.as_deref()) {
                if let Some(connection) = entry.connection.upgrade() {
                    connection.operator_joins(room.clone());
                }
            }
        }
        Operation::Leave { room, filter } => {
            for entry in targets(admin, filter.as_deref()) {
                if let Some(connection) = entry.connection.upgrade() {
                    connection.operator_removes(room.clone());
                }
            }
        }
        Operation::Disconnect { filter } => {
            for entry in targets(admin, filter.as_deref()) {
                if let Some(socket) = entry.socket.upgrade() {
                    let _ = socket.disconnect();
                }
            }
        }
    }
}

/// The sockets `filter` names: one by id, those in a room, or all; [`MAX_TARGETS`] at most.
fn targets(admin: &Admin, filter: Option<&str>) -> Vec<Entry> {
    if let Some(entry) = filter.and_then(|f| admin.registry.shown(f)) {
        return vec![entry];
    }
    let newest = admin.registry.newest(MAX_TARGETS);
    let Some(room) = filter else {
        return newest.into_iter().map(|(_, e)| e).collect();
    };
    newest
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e.connection
                .upgrade()
                .is_some_and(|c| c.rooms(|rooms| rooms.contains_key(room)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_read_for_the_default_namespace_only() {
        let join = parse(r#"["join","/","news","abc"]"#);
        assert_eq!(
            join,
            Some(Operation::Join {
                room: Arc::from("news"),
                filter: Some("abc".into())
            })
        );
        assert_eq!(
            parse(r#"["_disconnect","/",false]"#),
            Some(Operation::Disconnect { filter: None })
        );
        assert_eq!(parse(r#"["join","/admin","news"]"#), None);
        assert_eq!(parse(r#"["emit","/",null,"x"]"#), None);
        assert_eq!(parse(r#"["join","/",""]"#), None, "not a room");
    }
}
