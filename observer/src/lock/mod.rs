//! Named locks: pthread mutexes by symbol or address (`--lock`), custom lock functions
//! (`--lock-fns`) and discovery of every contended mutex (`--mutexes`).
//!
//! The data path, top to bottom: parse what was asked (`spec`), read the target's address space
//! (`object::mapped`), resolve names to addresses (`locate`), plan the probes (`plan`), attach them on the
//! shared BPF object (`attach`), wait (`session`, for processes without a GIL), read the maps
//! (`collect`), name call sites (`symbolize`). `lock_run.rs` wires these to the report
//! (`report::lock`, `report::lock_terminal`), which reads this module and is not read by it.
pub mod attach;
pub mod collect;
pub mod locate;
pub mod plan;
pub mod session;
pub mod spec;
pub mod symbolize;

use observer_common::MUTEX_PY_PAIR;

use crate::{
    error::{Exit, user},
    lock::{collect::LockSnapshot, plan::LockProbe, spec::LockRequest},
    object::mapped::AddressSpace,
    probe::attach::Attached,
    target::process::Process,
};

/// A lock the user named (`--lock`): always reported, even when nothing happened to it.
pub struct Named {
    pub addr: u64,
    pub spec: String,
    pub symbol: Option<String>,
}

/// Locks resolved in a target and the probes that watch them (nothing attached yet).
pub struct LockWatch {
    pub pid: u32,
    /// `--mutexes`: every contended mutex, with call sites.
    pub discover: bool,
    /// `--py-locks`: every Python thread lock.
    pub python: bool,
    pub named: Vec<Named>,
    /// `--lock-fns` labels by pair index.
    pub custom_labels: Vec<String>,
    pub probes: Vec<LockProbe>,
    pub space: AddressSpace,
    /// The (empty) reading at attach time: the report is what happened since.
    pub start: LockSnapshot,
}

/// Resolves every `--lock`/`--lock-fns` against the target and plans the probes: all the user's
/// mistakes are reported here, before anything is attached.
pub fn prepare(process: &Process, request: &LockRequest) -> anyhow::Result<LockWatch> {
    let pid = process.pid;
    let space = AddressSpace::read(process)?;
    let mut named: Vec<Named> = Vec::new();
    for spec in &request.locks {
        let w = locate::resolve_lock(&space, pid, spec)?;
        if !named.iter().any(|n| n.addr == w.addr) {
            named.push(Named {
                addr: w.addr,
                spec: w.spec,
                symbol: w.symbol,
            });
        }
    }
    let mut probes = Vec::new();
    if !request.locks.is_empty() || request.discover {
        probes.extend(plan::pthread_probes(&space, pid)?);
    }
    if request.python {
        python_supported(process)?;
        probes.extend(plan::python_probes(&space, pid)?);
    }
    let mut custom_labels = Vec::new();
    for (i, f) in request.lock_fns.iter().enumerate() {
        // The last pair index marks Python locks.
        if i as u64 >= MUTEX_PY_PAIR {
            return Err(user(Exit::Usage, "at most 127 --lock-fns at once"));
        }
        let what = format!("--lock-fns {}:{}", f.acquire, f.release);
        let acquire = locate::resolve_function(&space, pid, &f.acquire, &what)?;
        let release = locate::resolve_function(&space, pid, &f.release, &what)?;
        probes.extend(plan::custom_probes(&acquire, &release, f.arg, i as u8));
        custom_labels.push(if f.arg == 0 {
            format!("{}:{}", f.acquire, f.release)
        } else {
            format!("{}:{}:{}", f.acquire, f.release, f.arg)
        });
    }
    Ok(LockWatch {
        pid,
        discover: request.discover,
        python: request.python,
        named,
        custom_labels,
        probes,
        space,
        start: LockSnapshot::default(),
    })
}

/// CPython 3.6–3.12 build their thread locks on POSIX semaphores (Python/thread_pthread.h,
/// USE_SEMAPHORES on Linux), which `--py-locks` probes in libc. 3.13 rebuilt them on `PyMutex`
/// (Python/lock.c), whose uncontended path is an inline atomic in the interpreter: no call to
/// probe. Anything that is not a CPython is refused too: there are no Python locks to watch.
fn python_supported(process: &Process) -> anyhow::Result<()> {
    let interp = crate::gil::locate::locate(process).map_err(|e| {
        user(
            Exit::Unsupported,
            format!(
                "--py-locks: PID {} is not a CPython this gilwatch knows ({e:#})",
                process.pid
            ),
        )
    })?;
    let v = interp.version;
    if v.minor_version() >= (3, 13) {
        return Err(user(
            Exit::Unsupported,
            format!(
                "--py-locks: Python {v} is not supported: since 3.13 threading.Lock is a PyMutex taken by an \
                 inline atomic instruction, with no function call to probe (gilwatch measures Python locks on \
                 3.6–3.12); for C-level locks use --mutexes"
            ),
        ));
    }
    Ok(())
}

impl LockWatch {
    pub fn probes(&self) -> &[LockProbe] {
        &self.probes
    }

    /// For the site pass (probe/site.rs), before attaching.
    pub fn probes_mut(&mut self) -> &mut [LockProbe] {
        &mut self.probes
    }

    /// Attaches the lock probes on the loaded BPF object; measuring starts now.
    pub fn attach(&mut self, attached: &mut Attached) -> anyhow::Result<()> {
        let watch: Vec<u64> = self.named.iter().map(|n| n.addr).collect();
        let links = attach::attach(
            &mut attached.ebpf,
            &attach::LockConfig {
                pid: self.pid,
                all: self.discover,
                stacks: self.discover,
                watch: &watch,
            },
            &self.probes,
        )?;
        attached.keep_lock_links(links);
        self.start = LockSnapshot {
            at_ns: crate::collect::monotonic_ns(),
            ..Default::default()
        };
        Ok(())
    }

    /// Says that measuring has begun, once every probe, trap counters included, is in place.
    pub fn announce(&self) {
        // The run is silent until its report: say that measuring has begun (scripts and the
        // tests wait for this line before starting the workload).
        let mut parts = Vec::new();
        if self.discover {
            parts.push("every pthread mutex".to_owned());
        } else if !self.named.is_empty() {
            parts.push(format!("{} lock(s)", self.named.len()));
        }
        if self.python {
            parts.push("every Python lock".to_owned());
        }
        if !self.custom_labels.is_empty() {
            parts.push(format!(
                "{} lock function pair(s)",
                self.custom_labels.len()
            ));
        }
        let what = parts.join(" and ");
        eprintln!("gilwatch: watching {what} in PID {}", self.pid);
    }
}
