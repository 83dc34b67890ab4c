//! Exit codes that mean something (documented in `--help`).

/// The process's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Refused (by this tool's checks or by the controller), failed, rolled back, not found, declined.
    Refused = 1,
    /// A bad flag or argument (clap's own usage errors exit 2 too).
    Usage = 2,
    /// No cluster answered.
    Unreachable = 3,
    /// `--wait` gave up before the outcome was known.
    Timeout = 4,
}

/// Why the command did not succeed, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }
}
