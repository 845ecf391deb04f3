//! A target located and planned for, before anything is attached: which interpreter, which C
//! library, which probes. One path for watching a process, `-- CMD` and `doctor`.
use super::{
    libc::{self, Libc},
    locate::{self, Interpreter},
    plan::{self, ProbePlan, Strategy},
};
use crate::{
    error::{Exit, exit_code_of},
    target::{launch::Resolved, process::Process},
};

/// What is known about a target before attaching.
pub struct Planned {
    pub interpreter: Interpreter,
    pub libc: Option<Libc>,
    pub plan: ProbePlan,
}

/// How far `prepare` got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Finding and identifying the interpreter (not a CPython, say).
    Interpreter,
    /// Reading the process's maps for its C library.
    Maps,
    /// Planning the GIL's probes (a CPython whose GIL cannot be probed).
    Plan,
}

/// A failed `prepare`: callers that can watch a process without its GIL (the lock report)
/// branch on where it stopped.
#[derive(Debug)]
pub struct NotPrepared {
    pub stage: Stage,
    pub error: anyhow::Error,
}

impl NotPrepared {
    /// The process is there, only its GIL is out of reach.
    pub fn gil_unsupported(&self) -> bool {
        self.stage != Stage::Maps && exit_code_of(&self.error) == Exit::Unsupported
    }
}

impl From<NotPrepared> for anyhow::Error {
    fn from(n: NotPrepared) -> Self {
        n.error
    }
}

/// Locates the interpreter of a running process and plans its GIL probes.
pub fn prepare(process: &Process, strategy: Strategy) -> Result<Planned, NotPrepared> {
    let at = |stage: Stage| move |error: anyhow::Error| NotPrepared { stage, error };
    let interpreter = locate::locate(process).map_err(at(Stage::Interpreter))?;
    let maps = process.maps().map_err(at(Stage::Maps))?;
    let libc = libc::locate(process, &maps).ok();
    let plan = plan::plan(&interpreter, libc.as_ref(), strategy).map_err(at(Stage::Plan))?;
    Ok(Planned {
        interpreter,
        libc,
        plan,
    })
}

/// Plans for a command not started yet, from the files it will load; `command` names it in
/// errors.
pub fn prepare_command(
    resolved: &Resolved,
    command: &[String],
    strategy: Strategy,
) -> anyhow::Result<Planned> {
    let path = &resolved.interpreter;
    let interpreter = locate::load(path, path.clone().into(), || command.join(" "))?;
    let libc = resolved
        .libc
        .as_ref()
        .map(|p| Libc::load(p, p.clone().into()))
        .transpose()?;
    let plan = plan::plan(&interpreter, libc.as_ref(), strategy)?;
    Ok(Planned {
        interpreter,
        libc,
        plan,
    })
}
