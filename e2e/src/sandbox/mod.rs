//! The real local sandbox: every component a real process on loopback, each on its own port and in
//! its own data directory under `/tmp/understudy-sbx/<pid>-<n>/`, so two runs never collide.
//!
//! Cleanup has two layers: every component is stopped when its handle drops (also when a test
//! fails), and a watchdog shell started with the first sandbox of a process kills whatever is left
//! under that process's directories once the process is gone, even after SIGKILL.

pub mod bind;
pub mod certs;
pub mod control_plane;
pub mod netcut;
pub mod pgbouncer;
pub mod postgres;
pub mod proc;
pub mod witness;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

use anyhow::{Context as _, Result};

pub use bind::Bind;
pub use control_plane::ControlPlane;
pub use pgbouncer::PgBouncer;
pub use postgres::PgPair;
pub use witness::Witness;

const ROOT: &str = "/tmp/understudy-sbx";

/// A fresh directory for one component or test, owned by this process.
pub fn scratch_dir(label: &str) -> Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    start_reaper()?;
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(ROOT).join(format!("{}-{n}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // Servers run as their own users (postgres, bind) and must traverse the path.
    proc::run(Command::new("chmod").args(["0755", ROOT]).arg(&dir))?;
    Ok(dir)
}

fn start_reaper() -> Result<()> {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(ROOT)?;
    let owner = std::process::id();
    let prefix = format!("{ROOT}/{owner}-");
    // Kill every process whose command line names one of our directories, then remove them.
    let script = format!(
        "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
         for p in $(pgrep -f '{prefix}'); do [ \"$p\" != \"$$\" ] && kill -9 \"$p\" 2>/dev/null; done; \
         sleep 0.5; rm -rf {prefix}*; {}",
        netcut::reaper_snippet(owner)
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start the sandbox reaper")?;
    let _ = STARTED.set(());
    Ok(())
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Installs missing Debian packages once per process (the project's own script, never by hand).
pub fn ensure_packages() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        proc::run(Command::new("bash").arg(repo_root().join("e2e/scripts/install-deps.sh")))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!("install-deps.sh: {e}"))
}

/// A random token of hex digits, for passwords and tokens the sandbox invents.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
