//! Failures a user can act on, each with its own exit code.
//!
//! Anything else (an `anyhow::Error` without one of these inside) is an internal failure: exit 1.
use std::process::ExitCode;

/// Documented in the README ("Troubleshooting"); keep the two in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    NoSuchProcess = 3,
    Unsupported = 4,
    Privileges = 5,
    KernelSupport = 6,
    /// A `--fail-if` condition held (a runbook step's failure, not gilwatch's).
    ConditionHeld = 7,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// An error whose message is already a complete, one-line explanation with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub exit: Exit,
    pub message: String,
}

impl UserError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

/// Shorthand: `Err(user(Exit::Unsupported, "…"))?`.
pub fn user(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    UserError::new(exit, message).into()
}

/// The exit code for an error chain: the first `UserError` in it decides.
pub fn exit_code_of(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<UserError>())
        .map_or(Exit::Internal, |u| u.exit)
}

/// The errno of the first OS error among an error's causes: callers branch on it, never on
/// message text (aya's messages do not even include the OS error's text).
pub fn os_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(n) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(n);
        }
        cause = e.source();
    }
    None
}

/// EPERM or EACCES somewhere among an error's causes.
pub fn is_permission_denied(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(os_errno(err), Some(libc::EPERM | libc::EACCES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("`perf_event_open` failed")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn errno_is_found_among_the_causes() {
        let e = Wrapper(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(os_errno(&e), Some(libc::EACCES));
        assert!(is_permission_denied(&e));
        let other = Wrapper(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(!is_permission_denied(&other));
        let text_only = std::io::Error::other("Operation not permitted");
        assert!(!is_permission_denied(&text_only));
    }
}
