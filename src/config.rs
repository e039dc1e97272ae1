//! The server's configuration: one struct, read from flags and environment variables.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};

/// Every setting of a `twine` node. Each flag can also be given by the environment variable named
/// beside it; a flag wins over its variable.
#[derive(Parser, Debug, Clone)]
#[command(name = "twine", version, about = "Drop-in Twine real-time server")]
pub struct Config {
    /// Port to listen on (HTTP and Socket.IO). Default 3005. The original's `ENV_PORT` is read
    /// when `PORT` is unset.
    #[arg(long, env = "PORT")]
    port: Option<u16>,

    #[arg(long = "env-port", env = "ENV_PORT", hide = true)]
    env_port: Option<u16>,

    /// Address to bind.
    #[arg(long, env = "TWINE_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Key backends send in `Authorization` (raw or `Bearer <key>`) to publish. When unset, a
    /// random key is generated and logged once at start.
    #[arg(long, env = "TWINE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Origins allowed to make credentialed requests, comma-separated (e.g.
    /// `https://app.example.com,http://localhost:5173`). Empty: any origin, echoed back.
    #[arg(long, env = "TWINE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Mark the `twineid` cookie `Secure` (with `SameSite=None`). Turn off only for plain-http
    /// development on a host other than localhost; the cookie then uses `SameSite=Lax`.
    #[arg(long, env = "TWINE_COOKIE_SECURE", default_value_t = true, action = ArgAction::Set)]
    pub cookie_secure: bool,

    /// Engine.IO ping interval.
    #[arg(long, env = "TWINE_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Engine.IO ping timeout.
    #[arg(long, env = "TWINE_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Largest accepted Engine.IO payload and `POST /api/twine` body, in bytes.
    #[arg(long, env = "TWINE_MAX_PAYLOAD", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_payload: u64,

    /// Time a client has to join the namespace after the Engine.IO handshake.
    #[arg(long, env = "TWINE_CONNECT_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long messages and idle sessions are kept for recovery.
    #[arg(long, env = "TWINE_RECOVERY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub recovery_window: Duration,

    /// Most messages replayed to one reconnecting client; beyond it the newest are replayed and
    /// `recoveryTruncated` is emitted.
    #[arg(long, env = "TWINE_MAX_REPLAY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_replay: u64,

    /// Most messages kept per room by the in-memory store.
    #[arg(long, env = "TWINE_HISTORY_PER_ROOM", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_per_room: u64,

    /// Redis to share history, sessions and live delivery between nodes, e.g.
    /// `redis://cache:6379/0` (`rediss://` for TLS). Unset: the in-memory store, one node. The
    /// original's `CACHE_ENDPOINT` (`host[:port]`) is read when `REDIS_URL` is unset.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,

    #[arg(long = "cache-endpoint", env = "CACHE_ENDPOINT", hide = true)]
    cache_endpoint: Option<String>,

    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    #[arg(long, env = "TWINE_REDIS_PREFIX", default_value = "twine")]
    pub redis_prefix: String,

    /// DynamoDB table holding history for the whole recovery window (layout compatible with the
    /// original's `rooms` table). Region, credentials and endpoint come from the AWS SDK's
    /// standard settings (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`, ...).
    #[arg(long, env = "TWINE_DYNAMODB_TABLE")]
    pub dynamodb_table: Option<String>,

    /// Create the DynamoDB table (and enable its TTL) when it does not exist.
    #[arg(long, env = "TWINE_DYNAMODB_CREATE_TABLE", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dynamodb_create_table: bool,

    /// Seconds of history Redis keeps in front of DynamoDB. Default 120 with DynamoDB, else the
    /// whole recovery window.
    #[arg(long, env = "TWINE_REDIS_HISTORY_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    redis_history_secs: Option<u64>,

    /// With Redis and DynamoDB: most messages waiting in Redis to be written to DynamoDB. At this
    /// size publishing answers 503 until the backlog drains.
    #[arg(long, env = "TWINE_ARCHIVE_BACKLOG_MAX", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub archive_backlog_max: u64,

    /// Serve the demo page at `/demo/` (a live feed using the published twine-client-library)
    /// with its publish route `POST /demo/publish`. Off by default: the route publishes without
    /// the API key.
    #[arg(long, env = "TWINE_DEMO", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub demo: bool,

    /// Folder holding `demo/` and the npm packages it loads (`node_modules/`).
    #[arg(long, env = "TWINE_DEMO_DIR", default_value = "js-fixtures")]
    pub demo_dir: std::path::PathBuf,

    /// Log filter (`error`, `warn`, `info`, `debug`, or per-target directives).
    #[arg(long, env = "TWINE_LOG", default_value = "info")]
    pub log: String,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Invalid(#[from] clap::Error),
    #[error("unknown setting {0} in the environment (known: {1})")]
    UnknownVariable(String, String),
}

impl Config {
    /// Reads flags and environment, refusing unknown `TWINE_*` variables so a misspelt setting
    /// fails at start instead of being ignored.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_sources(std::env::args_os(), std::env::vars())
    }

    /// As [`Config::load`], from the given arguments (first is the program name) and
    /// variables.
    pub fn from_sources<A, V>(args: A, vars: V) -> Result<Config, ConfigError>
    where
        A: IntoIterator,
        A::Item: Into<std::ffi::OsString> + Clone,
        V: IntoIterator<Item = (String, String)>,
    {
        let known: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for (name, _) in vars {
            if name.starts_with("TWINE_") && !known.contains(&name) {
                let listed = known
                    .iter()
                    .filter(|k| k.starts_with("TWINE_"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ConfigError::UnknownVariable(name, listed));
            }
        }
        Ok(Config::try_parse_from(args)?)
    }

    /// The listen port: `--port`/`PORT`, else `ENV_PORT`, else 3005.
    pub fn port(&self) -> u16 {
        self.port.or(self.env_port).unwrap_or(3005)
    }

    /// The Redis to use: `--redis-url`/`REDIS_URL`, else `CACHE_ENDPOINT`.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .or(self.cache_endpoint.as_deref())
            .filter(|u| !u.is_empty())
    }

    /// How long Redis keeps messages: `--redis-history-secs`, else 120 s in front of DynamoDB,
    /// else the recovery window.
    pub fn redis_history(&self) -> Duration {
        match (self.redis_history_secs, &self.dynamodb_table) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(_)) => Duration::from_secs(120),
            (None, None) => self.recovery_window,
        }
    }
}

/// Parses `500ms`, `25s`, `2m`, `24h` or `7d`; a bare number is refused so that milliseconds are
/// never mistaken for seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' has no unit: write e.g. 500ms, 25s, 2m, 24h or 7d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a whole number"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m, h or d)"
            ));
        }
    };
    if ms == 0 {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args = std::iter::once("twine").chain(args.iter().copied());
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_sources(args, vars)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.port(), 3005);
        assert!(c.cookie_secure);
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.ping_timeout, Duration::from_secs(20));
        assert_eq!(c.connect_timeout, Duration::from_secs(45));
        assert_eq!(c.max_payload, 1_000_000);
        assert_eq!(c.recovery_window, Duration::from_secs(86_400));
        assert_eq!(c.max_replay, 10_000);
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("25000").unwrap_err().contains("no unit"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn bad_and_unknown_values_are_refused() {
        assert!(load(&["--ping-interval", "fast"], &[]).is_err());
        assert!(load(&["--max-replay", "0"], &[]).is_err());
        assert!(load(&["--nonsense"], &[]).is_err());
        let err = load(&[], &[("TWINE_API_KEYS", "x")]).unwrap_err();
        assert!(err.to_string().contains("TWINE_API_KEYS"));
    }
}
