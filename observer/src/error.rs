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
