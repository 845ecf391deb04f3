//! Why a run ended: what the wait loops return and every report states.
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// Still running: an interval line.
    Running,
    Duration,
    Interrupted,
    Terminated,
    TargetExited,
    /// `q` (or Ctrl-C) in `gilwatch top`.
    Quit,
}
