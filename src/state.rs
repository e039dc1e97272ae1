//! What every request and socket handler shares: the configuration, the stores chosen at start-up
//! and this node's live delivery.

use std::sync::Arc;

use twine_store::{History, SessionStore};

use crate::config::Config;
use crate::fanout::Fanout;
use crate::http::auth::ApiKey;

pub struct AppState {
    pub config: Config,
    pub api_key: ApiKey,
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
    pub fanout: Arc<Fanout>,
}
