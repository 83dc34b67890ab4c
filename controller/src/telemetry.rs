//! Logging setup: `tracing` with an env filter, as text or JSON lines.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `filter` uses `RUST_LOG` syntax.
pub fn init(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
    Ok(())
}
