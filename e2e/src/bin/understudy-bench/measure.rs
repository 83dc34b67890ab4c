//! What the bench measures with: both clocks and the small HTTP/`/proc` readers.

use std::{
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use understudy_e2e::sandbox::proc::run;

/// Seconds since the Unix epoch of a wall-clock instant.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A point in time on both clocks: the monotonic one (for the workload's acks) and the wall clock
/// (for the controller's and Patroni's timestamps).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    pub mono: Instant,
    pub wall: f64,
}

impl Mark {
    pub fn now() -> Mark {
        Mark { mono: Instant::now(), wall: unix(SystemTime::now()) }
    }

    /// The wall-clock seconds of a monotonic instant, through this mark.
    pub fn wall_of(&self, t: Instant) -> f64 {
        if t >= self.mono {
            self.wall + (t - self.mono).as_secs_f64()
        } else {
            self.wall - (self.mono - t).as_secs_f64()
        }
    }
}

/// An RFC 3339 timestamp as Unix seconds.
pub fn rfc3339(s: &str) -> Option<f64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond() as f64 / 1000.0)
}

/// CPU seconds (utime + stime) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("parse /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size of a process in MiB (VmRSS from `/proc/<pid>/status`).
pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib / 1024.0)
}

/// `GET url` with curl (loopback only), returning the body and the HTTP status.
pub fn http_get(url: &str, extra: &[&str]) -> Result<(u16, String)> {
    let out = run(Command::new("curl").args(["-s", "-m", "3", "-w", "\n%{http_code}"]).args(extra).arg(url))?;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// A scenario's report: `title`, its `settings` in a code block, then the tables `body` renders
/// into both, then `lists` (a heading and its items, first lines only), as aligned text and as
/// Markdown; both written with `report`'s JSON as `target/bench/<stem>.{md,json}`. Returns the
/// text, ending with the paths written.
pub fn write_report(
    stem: &str,
    title: &str,
    settings: &str,
    body: impl FnOnce(&mut String, &mut String),
    lists: &[(&str, Vec<String>)],
    report: &impl serde::Serialize,
) -> Result<String> {
    use std::fmt::Write as _;
    let mut text = format!("== understudy bench: {title}\n{settings}");
    let mut md = format!("# understudy bench: {title}\n\n```\n{settings}```\n");
    body(&mut md, &mut text);
    for (heading, items) in lists.iter().filter(|(_, items)| !items.is_empty()) {
        let _ = writeln!(text, "{heading}:");
        let _ = writeln!(md, "\n{heading}:\n");
        for item in items {
            let first = item.lines().next().unwrap_or_default();
            let _ = writeln!(text, "  - {first}");
            let _ = writeln!(md, "- {first}");
        }
    }
    let dir = understudy_e2e::sandbox::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let (md_path, json_path) = (dir.join(format!("{stem}.md")), dir.join(format!("{stem}.json")));
    std::fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    let json = serde_json::json!({ "settings": settings, "table": text, "report": report });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    let _ = writeln!(text, "written: {} and {}", md_path.display(), json_path.display());
    Ok(text)
}
