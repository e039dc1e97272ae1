//! The `twine` binary: reads the configuration, picks the stores, serves until SIGTERM or
//! SIGINT, then drains (a second signal hurries it) and exits 0.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use twine::Server;
use twine::config::{Config, LogFormat};
use twine::stores::Stores;

// The global allocator: jemalloc with its background threads (the default feature, chosen by the
// measurements in BENCHMARKS.md: freed memory goes back to the system, fan-out and mass
// disconnects cost less CPU, an idle connection 1.4 KB more); glibc's malloc with
// `--no-default-features`, mimalloc with `--no-default-features --features mimalloc`.
#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("features `jemalloc` and `mimalloc` each pick the global allocator: enable one");

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(config) => config,
        Err(twine::config::ConfigError::Invalid(e)) => e.exit(),
        Err(e) => anyhow::bail!("invalid configuration: {e}"),
    };
    let filter = EnvFilter::try_new(&config.log).context("invalid --log filter")?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }

    let addr = SocketAddr::new(config.host, config.port());
    let stores = Stores::from_config(&config)
        .await
        .context("could not reach the configured store")?;
    let server = Server::build(config, stores)
        .await
        .context("could not start the stores")?;
    if server.generated_key {
        tracing::info!(
            api_key = %server.app.api_key.as_str(),
            "no API key configured (--api-key / TWINE_API_KEY); generated one for this run"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    tracing::info!("listening on {}", listener.local_addr()?);
    let draining = server.hurry();
    let stop = async move {
        signal().await;
        // A second signal cuts the drain short.
        tokio::spawn(async move {
            signal().await;
            draining.hurry();
        });
    };
    server.serve(listener, stop).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The next SIGTERM or SIGINT.
async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
