//! Step 3 for locks: which kernel program goes on which function of which object.
//!
//! The pthread functions live in libc.so.6 on glibc 2.34+ and in libpthread.so.0 before (where
//! libc.so.6 only has forwarders that call libpthread's): libpthread first, then libc, then the
//! executable (static builds). A function can have several versions at different addresses
//! (`pthread_cond_wait@GLIBC_2.2.5` and `@@GLIBC_2.3.2`): every version is probed, so the one the
//! program binds is covered whichever it is.
use std::path::PathBuf;

use object::SymbolKind;
use observer_common::{PY_LOCK_COOKIE_BLOCKING, names::program};

use crate::{
    error::{Exit, user},
    lock::locate::Function,
    object::{
        elf::file_offset,
        mapped::{AddressSpace, MappedObject},
    },
    probe::site::Site,
};

/// A kernel program (an `observer_common::names::program` of observer-ebpf/src/mutex.rs) and
/// where it attaches.
#[derive(Debug, Clone)]
pub struct LockProbe {
    pub program: &'static str,
    /// `object:function`, for messages and the report.
    pub symbol: String,
    pub open_path: PathBuf,
    /// The function's entry, as a file offset.
    pub file_offset: u64,
    /// For custom lock functions: which argument identifies the lock.
    pub cookie: Option<u64>,
    /// Where in the function the probe goes (probe/site.rs; None until placed: the entry).
    pub site: Option<Site>,
}

impl LockProbe {
    /// The file offset the probe attaches at.
    pub fn attach_offset(&self) -> u64 {
        self.file_offset + self.site.as_ref().map_or(0, |s| s.offset)
    }
}

/// The pthread functions, what probes their entry, and whether their return is probed. The hot
/// pair (lock, unlock) takes one trap each: a lock's contended wait and wake-up are seen at the
/// futex syscall (attach.rs), so no return probe (which would add a trap at the function's
/// first instruction) is needed; the outcomes of trylock and timedlock need their return.
const PTHREAD_FUNCTIONS: &[(&str, &str, bool)] = &[
    ("pthread_mutex_lock", program::MUTEX_LOCK_ENTER, false),
    ("pthread_mutex_trylock", program::MUTEX_TRYLOCK_ENTER, true),
    (
        "pthread_mutex_timedlock",
        program::MUTEX_TIMEDLOCK_ENTER,
        true,
    ),
    (
        "pthread_mutex_clocklock",
        program::MUTEX_TIMEDLOCK_ENTER,
        true,
    ),
    ("pthread_mutex_unlock", program::MUTEX_UNLOCK_ENTER, false),
    ("pthread_cond_wait", program::COND_WAIT_ENTER, true),
    ("pthread_cond_timedwait", program::COND_WAIT_ENTER, true),
    ("pthread_cond_clockwait", program::COND_WAIT_ENTER, true),
];
const PTHREAD_RETURN: &str = program::MUTEX_LOCK_RETURN;

/// Where the pthread functions are: the objects searched, in order.
fn pthread_objects(space: &AddressSpace) -> Vec<&MappedObject> {
    let mut v: Vec<&MappedObject> = space.objects_named("libpthread.so").collect();
    v.extend(space.objects_named("libc.so"));
    v.extend(space.objects.iter().filter(|o| o.is_executable));
    v
}

/// Probes for every pthread mutex and condition-wait function.
pub fn pthread_probes(space: &AddressSpace, pid: u32) -> anyhow::Result<Vec<LockProbe>> {
    let mut probes = Vec::new();
    for &(name, program, ret) in PTHREAD_FUNCTIONS {
        probes.extend(libc_probes(
            space,
            name,
            program,
            ret.then_some(PTHREAD_RETURN),
            None,
        ));
    }
    if !probes
        .iter()
        .any(|p| p.symbol.ends_with(":pthread_mutex_lock"))
    {
        return Err(user(
            Exit::Unsupported,
            format!(
                "PID {pid} has no pthread_mutex_lock in libc.so.6, libpthread.so.0 or its executable \
                 (a stripped static binary, or not glibc): use --lock-fns with your program's own lock functions"
            ),
        ));
    }
    Ok(probes)
}

/// The semaphore calls behind CPython's thread locks (3.6–3.12 on Linux: a `PyThread_type_lock`
/// is a `sem_t*`), and whether each blocks (the cookie of observer-ebpf/src/pylock.rs).
const SEM_FUNCTIONS: &[(&str, bool)] = &[
    ("sem_trywait", false),
    ("sem_wait", true),
    ("sem_timedwait", true),
    ("sem_clockwait", true),
];

/// Probes for Python locks (`--py-locks`): libc's semaphore tries (entry), waits (entry and
/// return) and posts (entry).
pub fn python_probes(space: &AddressSpace, pid: u32) -> anyhow::Result<Vec<LockProbe>> {
    let mut probes = Vec::new();
    for &(name, blocking) in SEM_FUNCTIONS {
        let cookie = if blocking { PY_LOCK_COOKIE_BLOCKING } else { 0 };
        // Only the blocking calls have a return probe: a try's outcome is inferred (pylock.rs).
        probes.extend(libc_probes(
            space,
            name,
            program::PYLOCK_ACQUIRE_ENTER,
            blocking.then_some(program::PYLOCK_ACQUIRE_RETURN),
            Some(cookie),
        ));
    }
    probes.extend(libc_probes(
        space,
        "sem_post",
        program::PYLOCK_RELEASE_ENTER,
        None,
        None,
    ));
    for needed in ["sem_trywait", "sem_post"] {
        if !probes
            .iter()
            .any(|p| p.symbol.ends_with(&format!(":{needed}")))
        {
            return Err(user(
                Exit::Unsupported,
                format!(
                    "--py-locks: PID {pid} has no {needed} in libc.so.6, libpthread.so.0 or its executable \
                     (not glibc, or a stripped static build): Python locks cannot be watched in it"
                ),
            ));
        }
    }
    Ok(probes)
}

/// Every version of one libc function, in the first object that defines it: its entry probe and,
/// with `ret`, a return probe at the same place.
fn libc_probes(
    space: &AddressSpace,
    name: &str,
    program: &'static str,
    ret: Option<&'static str>,
    cookie: Option<u64>,
) -> Vec<LockProbe> {
    let objects = pthread_objects(space);
    let Some((obj, addrs)) = objects.iter().find_map(|o| {
        let mut addrs: Vec<u64> = o
            .symbols
            .iter()
            .filter(|s| s.name == name && s.kind == SymbolKind::Text)
            .map(|s| s.address)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        (!addrs.is_empty()).then_some((o, addrs))
    }) else {
        return Vec::new(); // e.g. pthread_mutex_clocklock before glibc 2.30
    };
    let Some(elf) = obj.elf() else {
        return Vec::new();
    };
    let mut probes = Vec::new();
    for addr in addrs {
        let Some(off) = file_offset(&elf, addr) else {
            continue;
        };
        let symbol = format!("{}:{name}", obj.file_name());
        let at = |program| LockProbe {
            program,
            symbol: symbol.clone(),
            open_path: obj.file.open_path.clone(),
            file_offset: off,
            cookie,
            site: None,
        };
        probes.push(at(program));
        if let Some(r) = ret {
            probes.push(at(r));
        }
    }
    probes
}

/// Probes for the `pair`-th `--lock-fns ACQUIRE:RELEASE:ARG` (the cookie carries both numbers).
pub fn custom_probes(acquire: &Function, release: &Function, arg: u8, pair: u8) -> Vec<LockProbe> {
    let at = |program, f: &Function| LockProbe {
        program,
        symbol: f.symbol.clone(),
        open_path: f.open_path.clone(),
        file_offset: f.file_offset,
        cookie: Some(u64::from(arg) | (u64::from(pair & 0x7f) << 8)),
        site: None,
    };
    vec![
        at(program::LOCKFN_ACQUIRE_ENTER, acquire),
        at(program::LOCKFN_ACQUIRE_RETURN, acquire),
        at(program::LOCKFN_RELEASE_ENTER, release),
    ]
}

/// The probed functions, deduplicated, for the report header.
pub fn symbols(probes: &[LockProbe]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for p in probes {
        if !v.contains(&p.symbol) {
            v.push(p.symbol.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{elf::symbols, file::ObjectFile};

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    fn object(path: &str, data: &[u8], with_symbols: bool) -> MappedObject {
        MappedObject {
            file: ObjectFile::in_memory(path, data.to_vec()),
            bias: 0,
            is_executable: false,
            symbols: if with_symbols {
                symbols(data)
            } else {
                Vec::new()
            },
        }
    }

    fn space(objects: Vec<MappedObject>) -> AddressSpace {
        AddressSpace {
            regions: Vec::new(),
            objects,
        }
    }

    #[test]
    fn every_version_of_the_condition_wait_is_probed() {
        let data = std::fs::read(LIBC).expect("this machine's glibc");
        let probes = pthread_probes(&space(vec![object(LIBC, &data, true)]), 1).unwrap();
        // glibc exports pthread_cond_wait@GLIBC_2.2.5 and @@GLIBC_2.3.2 at two addresses.
        let enters: Vec<u64> = probes
            .iter()
            .filter(|p| {
                p.program == program::COND_WAIT_ENTER && p.symbol == "libc.so.6:pthread_cond_wait"
            })
            .map(|p| p.file_offset)
            .collect();
        assert_eq!(enters.len(), 2, "{probes:?}");
        assert_ne!(enters[0], enters[1]);
        // trylock's outcome comes from its return probe, at the same place; the hot lock call
        // has none (two traps per lock/unlock pair).
        let at = |program: &str| {
            probes
                .iter()
                .filter(|p| p.program == program)
                .map(|p| p.file_offset)
                .collect::<Vec<_>>()
        };
        let returns = at(PTHREAD_RETURN);
        assert!(
            at(program::MUTEX_TRYLOCK_ENTER)
                .iter()
                .all(|off| returns.contains(off))
        );
        assert!(!at(program::MUTEX_LOCK_ENTER).is_empty());
        assert!(
            at(program::MUTEX_LOCK_ENTER)
                .iter()
                .all(|off| !returns.contains(off))
        );
        assert!(
            probes
                .iter()
                .any(|p| p.program == program::MUTEX_UNLOCK_ENTER)
        );
    }

    #[test]
    fn libpthread_wins_when_it_defines_the_functions_else_libc() {
        let data = std::fs::read(LIBC).expect("this machine's glibc");
        // glibc < 2.34: the real functions are in libpthread.so.0 (stand-in: the same file).
        let old = space(vec![
            object("/lib/libc.so.6", &data, true),
            object("/lib/libpthread.so.0", &data, true),
        ]);
        let probes = pthread_probes(&old, 1).unwrap();
        assert!(
            probes
                .iter()
                .all(|p| p.symbol.starts_with("libpthread.so.0:"))
        );
        // glibc 2.34+: libpthread.so.0 is an empty stub.
        let new = space(vec![
            object("/lib/libc.so.6", &data, true),
            object("/lib/libpthread.so.0", &data, false),
        ]);
        let probes = pthread_probes(&new, 1).unwrap();
        assert!(probes.iter().all(|p| p.symbol.starts_with("libc.so.6:")));
    }

    #[test]
    fn no_pthread_functions_is_a_clear_error() {
        let err = pthread_probes(&space(Vec::new()), 42).unwrap_err();
        assert!(
            err.to_string().contains("PID 42 has no pthread_mutex_lock"),
            "{err}"
        );
    }

    #[test]
    fn custom_cookies_carry_argument_and_pair() {
        let f = Function {
            symbol: "x:f".into(),
            open_path: "/x".into(),
            file_offset: 16,
        };
        let p = custom_probes(&f, &f, 2, 3);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.cookie == Some(2 | (3 << 8))));
    }
}
