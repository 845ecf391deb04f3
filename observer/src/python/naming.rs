//! Python `threading.Thread` names of a live CPython process, read from outside.
//!
//! Route: `_PyRuntime` → main interpreter → its modules dict (`sys.modules`) → `threading` →
//! the module's `__dict__` → `_active` (ident → Thread) → each Thread's `_name`. The ident is
//! `pthread_self()`, which every `PyThreadState` carries as `thread_id`; the caller pairs
//! kernel TIDs with `PyThreadState*` (a take_gil probe sees both), and on 3.11+ the
//! interpreter's thread list also carries the kernel TID (`native_thread_id`).
//!
//! The target keeps running while we read: every pointer may be stale, every size may be
//! garbage. So every loop is bounded, every length is capped, and a bad entry is skipped
//! rather than allowed to spoil the rest.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::layout::{MD_DICT, TPFLAGS_DICT_SUBCLASS};
use super::memory::{ReadBudget, RemoteMemory};
use super::objects::Reader;
use crate::target::process::Process;

/// What one naming pass may read from the target (calls, bytes): a real one takes a few
/// thousand reads; garbage must not turn the bounded structures into hours of reading.
pub(super) const READ_BUDGET: (u64, u64) = (1 << 18, 256 << 20);

/// Python thread names keyed by kernel TID.
///
/// Address arithmetic below is wrapping on purpose: pointers come from a process that may be
/// rewriting them, and a wrapped address fails in `ProcessMemory::read` instead of panicking.
///
/// `tstates` maps kernel TID → `PyThreadState*` (e.g. from a take_gil probe). On 3.11+ the
/// interpreter's own thread list is walked as well, so TIDs missing from `tstates` are found
/// too. Threads not registered in `threading._active` (bare `_thread.start_new_thread`) have
/// no name and are absent from the result. 3.6 and older give an empty map.
pub fn thread_names(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
    tstates: &HashMap<u32, u64>,
) -> Result<HashMap<u32, String>> {
    let (major, minor) = version;
    if major != 3 || minor < 7 {
        // No `_PyRuntime` before 3.7; naming threads there is not supported.
        return Ok(HashMap::new());
    }
    let budget = ReadBudget::new(mem, READ_BUDGET.0, READ_BUDGET.1);
    let names = thread_names_within(&budget, version, runtime_addr, tstates);
    if budget.exhausted() {
        bail!("gave up reading thread names: the interpreter's structures look corrupt");
    }
    names
}

fn thread_names_within(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
    tstates: &HashMap<u32, u64>,
) -> Result<HashMap<u32, String>> {
    let (mut reader, interp) = Reader::at_main_interpreter(mem, version, runtime_addr)?;
    let layout = reader.layout;

    let by_ident = reader
        .active_thread_names(interp)
        .context("reading threading._active")?;

    // TIDs read from the interpreter's memory are the ones the process sees: in a container
    // (its own PID namespace) they differ from ours.
    let here = Process { pid: mem.pid() }.namespace_tids();
    let mut out = HashMap::new();
    for (&tid, &tstate) in tstates {
        // A stale thread state (its thread gone, its memory reused) must not lend a name.
        if let Some(off) = layout.tstate_interp {
            if mem.read_u64(tstate.wrapping_add(off)).ok() != Some(interp) {
                continue;
            }
        }
        let Ok(ident) = mem.read_u64(tstate.wrapping_add(layout.tstate_thread_id)) else {
            continue;
        };
        if let Some(name) = by_ident.get(&ident) {
            out.insert(tid, name.clone());
        }
    }
    if let Some(native_off) = layout.tstate_native_thread_id {
        // A failed walk only loses threads the caller did not already give us.
        if let Ok(pairs) = reader.walk_threads(interp, native_off) {
            for (tid, ident) in pairs {
                let (Some(name), Some(&tid)) = (by_ident.get(&ident), here.get(&tid)) else {
                    continue;
                };
                out.entry(tid).or_insert_with(|| name.clone());
            }
        }
    } else if out.len() < by_ident.len() {
        // 3.7–3.10 keep no kernel TID, and a caller without a take_gil probe (the symbol-free
        // strategy) cannot pair TIDs with thread states. The ident is pthread_self(), the
        // address of glibc's struct pthread, which records the kernel TID.
        for (&ident, name) in &by_ident {
            let Ok(raw) = mem.read_u64(ident.wrapping_add(GLIBC_PTHREAD_TID)) else {
                continue;
            };
            if let Some(&tid) = here.get(&(raw as u32)) {
                out.entry(tid).or_insert_with(|| name.clone());
            }
        }
    }
    Ok(out)
}

/// Offset of `tid` in glibc's `struct pthread` on x86_64 (checked on glibc 2.36 and 2.43:
/// unchanged for years). Only a value that is a live TID of the process is believed.
const GLIBC_PTHREAD_TID: u64 = 0x2d0;

impl Reader<'_> {
    pub(super) fn active_thread_names(&mut self, interp: u64) -> Result<HashMap<u64, String>> {
        let modules = self.nonnull(
            interp.wrapping_add(self.layout.interp_modules),
            "interp modules",
        )?;
        self.expect_flag(modules, TPFLAGS_DICT_SUBCLASS, "dict (sys.modules)")?;
        let threading = self
            .dict_get(modules, "threading")?
            .context("module threading is not imported")?;
        let md_dict = self.nonnull(threading.wrapping_add(MD_DICT), "threading.__dict__")?;
        self.expect_flag(md_dict, TPFLAGS_DICT_SUBCLASS, "dict (module __dict__)")?;
        let active = self
            .dict_get(md_dict, "_active")?
            .context("threading has no _active")?;
        self.expect_flag(active, TPFLAGS_DICT_SUBCLASS, "dict (threading._active)")?;

        let mut names = HashMap::new();
        for (key, thread) in self.dict_items(active)? {
            // One unreadable thread (exiting right now, say) must not hide the others.
            let Ok(ident) = self.read_ident(key) else {
                continue;
            };
            if let Ok(name) = self.thread_name(thread) {
                names.insert(ident, name);
            }
        }
        Ok(names)
    }

    pub(super) fn thread_name(&mut self, thread: u64) -> Result<String> {
        let name = self
            .instance_attr(thread, "_name")?
            .context("Thread has no _name")?;
        self.read_str(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Live tests: start a real interpreter with named threads, read it from outside, compare
    //! with what the interpreter says about itself.

    use super::*;
    use crate::python::debug_offsets::{DEBUG_TABLE_LEN, debug_table};
    use crate::python::memory::ProcessMemory;
    use crate::python::objects::{MAX_NAME_CHARS, PATHS};
    use crate::python::walk::main_interpreter;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    /// Each thread reports (kernel tid, ident, PyThreadState*, UTF-8 name as hex). The bare
    /// `_thread` one reports an empty name: it is not in `_active`, so must stay unnamed.
    const SCRIPT: &str = r#"
import ctypes, sys, threading, _thread
libc = ctypes.CDLL(None)
ctypes.pythonapi.PyThreadState_Get.restype = ctypes.c_void_p
lock = threading.Lock()
ready = threading.Semaphore(0)
stop = threading.Event()
lines = []
def report(name):
    with lock:
        lines.append("T %d %d %d %s" % (libc.syscall(186), _thread.get_ident(),
                     ctypes.pythonapi.PyThreadState_Get(), name.encode("utf-8").hex()))
def named():
    report(threading.current_thread().name)
    ready.release()
    stop.wait()
def bare():
    report("")
    ready.release()
    stop.wait()
names = ["io-1", "w\u00f6rker-2", "\u7ebf\u7a0b-3", "\U0001f9f5-4", "x" * 300, "dict-5"]
threads = [threading.Thread(name=n, target=named, daemon=True) for n in names]
for t in threads:
    t.start()
_thread.start_new_thread(bare, ())
for _ in range(len(names) + 1):
    ready.acquire()
# Materialize the instance __dict__ of one thread (3.11+ otherwise keep inline values).
vars(threads[5])["extra"] = 1
# A rename after start must show: we read the live attribute.
threads[0].name = "renamed-io-1"
lines = [l.replace("696f2d31", "72656e616d65642d696f2d31", 1) if l.endswith(" 696f2d31") else l
         for l in lines]
report(threading.current_thread().name)
runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
print("R %d" % runtime)
if hasattr(ctypes.pythonapi, "PyInterpreterState_Main"):
    ctypes.pythonapi.PyInterpreterState_Main.restype = ctypes.c_void_p
    print("I %d" % ctypes.pythonapi.PyInterpreterState_Main())
print("V %d" % sys.hexversion)
for l in lines:
    print(l)
print("READY", flush=True)
sys.stdin.read()
"#;

    struct Seen {
        tid: u32,
        tstate: u64,
        name: String,
    }

    struct Target {
        child: Child,
        runtime: u64,
        /// `PyInterpreterState_Main()` as the target sees it (0 if it has no such function).
        main_interp: u64,
        hexversion: u64,
        threads: Vec<Seen>,
    }

    impl Drop for Target {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn hex_to_string(h: &str) -> String {
        let bytes: Vec<u8> = (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Runs SCRIPT under `argv` (a python, or `chroot ROOT /usr/bin/python3.X`: chroot execs
    /// the python, so the child's PID is the interpreter's).
    fn start(argv: &[String]) -> Target {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let stdout = child.stdout.take().expect("stdout");
        let mut target = Target {
            child,
            runtime: 0,
            main_interp: 0,
            hexversion: 0,
            threads: Vec::new(),
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read line");
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "R" => target.runtime = f[1].parse().expect("runtime"),
                "I" => target.main_interp = f[1].parse().expect("interp"),
                "V" => target.hexversion = f[1].parse().expect("version"),
                "T" => target.threads.push(Seen {
                    tid: f[1].parse().expect("tid"),
                    tstate: f[3].parse().expect("tstate"),
                    name: hex_to_string(f.get(4).copied().unwrap_or("")),
                }),
                "READY" => break,
                _ => panic!("unexpected line {line}"),
            }
        }
        assert_ne!(target.runtime, 0, "script gave no runtime address");
        target
    }

    /// First pyenv build of 3.`minor`, if installed.
    pub(crate) fn pyenv(minor: u8) -> Option<String> {
        let prefix = format!("3.{minor}.");
        let mut dirs: Vec<_> = std::fs::read_dir("/root/.pyenv/versions")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        dirs.sort();
        let bin = format!("/root/.pyenv/versions/{}/bin/python3", dirs.first()?);
        std::path::Path::new(&bin).exists().then_some(bin)
    }

    fn check(python: Option<String>, minor: u8) {
        check_argv(python.map(|p| vec![p]), minor);
    }

    /// A missing interpreter fails under `cargo xtask test` (GILWATCH_REQUIRE_FIXTURES), and is
    /// skipped out loud under a developer's plain `cargo test -- --ignored`.
    pub(crate) fn missing_fixture(what: &str) {
        let required = std::env::var_os("GILWATCH_REQUIRE_FIXTURES")
            .is_some_and(|v| v != "0" && !v.is_empty());
        assert!(
            !required,
            "{what} is missing (`cargo xtask test` provides it)"
        );
        eprintln!("note: {what} is missing, skipping it");
    }

    fn check_argv(argv: Option<Vec<String>>, minor: u8) -> Option<Target> {
        let Some(argv) = argv else {
            missing_fixture(&format!("Python 3.{minor}"));
            return None;
        };
        let python = argv.join(" ");
        let target = start(&argv);
        assert_eq!(
            (target.hexversion >> 16) & 0xffff,
            0x0300 | u64::from(minor),
            "{python}: sys.hexversion {:#x}",
            target.hexversion
        );
        let mem = ProcessMemory::new(target.child.id());
        if target.main_interp != 0 {
            let interp = main_interpreter(&mem, (3, minor), target.runtime)
                .unwrap_or_else(|e| panic!("{python}: main_interpreter: {e:#}"));
            assert_eq!(
                interp, target.main_interp,
                "{python}: main_interpreter disagrees with PyInterpreterState_Main()"
            );
        }
        let expected: HashMap<u32, String> = target
            .threads
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| {
                (
                    t.tid,
                    t.name.chars().take(MAX_NAME_CHARS as usize).collect(),
                )
            })
            .collect();
        assert_eq!(
            expected.len(),
            7,
            "script reported {} named threads",
            expected.len()
        );
        let mut tstates: HashMap<u32, u64> =
            target.threads.iter().map(|t| (t.tid, t.tstate)).collect();
        // A stale or garbage tstate from the caller must be skipped, not fail the rest.
        tstates.insert(u32::MAX, u64::MAX - 2);
        tstates.insert(u32::MAX - 1, 8);

        PATHS.with(|p| p.borrow_mut().clear());
        let got = thread_names(&mem, (3, minor), target.runtime, &tstates)
            .unwrap_or_else(|e| panic!("{python}: {e:#}"));
        assert_eq!(got, expected, "{python}, tid → tstate given");
        let paths = PATHS.with(|p| p.borrow().clone());
        let want: &[&str] = if minor >= 11 {
            &["managed dict", "shared values"]
        } else {
            &["dictoffset"]
        };
        for w in want {
            assert!(
                paths.contains(w),
                "{python}: path {w:?} not exercised: {paths:?}"
            );
        }

        if minor >= 11 {
            // The interpreter's own thread list must be enough on its own.
            let got = thread_names(&mem, (3, minor), target.runtime, &HashMap::new())
                .unwrap_or_else(|e| panic!("{python}: {e:#}"));
            assert_eq!(got, expected, "{python}, thread list walked");
        }
        eprintln!("{python}: {} threads named correctly", got.len());
        Some(target)
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_7() {
        check(pyenv(7), 7);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_8() {
        check(pyenv(8), 8);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_9() {
        check(pyenv(9), 9);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_10() {
        check(pyenv(10), 10);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_11() {
        check(pyenv(11), 11);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_12() {
        check(pyenv(12), 12);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_13() {
        check(pyenv(13), 13);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_debian_3_11() {
        let bin = "/usr/bin/python3.11";
        check(
            std::path::Path::new(bin).exists().then(|| bin.to_string()),
            11,
        );
    }

    /// Debian sid's interpreters (stripped, static, PGO+LTO, non-PIE) in a debootstrap root.
    pub(crate) const SID: &str = "/var/lib/gilwatch-test/sid";

    /// `chroot SID /usr/bin/python3.X`, if the root has that interpreter.
    pub(crate) fn sid(minor: u8) -> Option<Vec<String>> {
        let bin = format!("/usr/bin/python3.{minor}");
        std::path::Path::new(&format!("{SID}{bin}"))
            .exists()
            .then(|| vec!["chroot".to_string(), SID.to_string(), bin])
    }

    /// `_PyRuntime` from the ELF's dynamic symbols, and whether the file is position-dependent
    /// (then that address is the runtime address as is).
    fn elf_runtime(path: &str) -> Option<(u64, bool)> {
        use object::{Object, ObjectKind, ObjectSymbol};
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let addr = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok("_PyRuntime"))?
            .address();
        Some((addr, file.kind() == ObjectKind::Executable))
    }

    /// Names and the main interpreter on a sid interpreter, plus the two facts the GIL locator
    /// builds on: `_PyRuntime` as the ELF exports it, and the GIL behind `interp->ceval.gil`.
    fn check_sid(minor: u8) {
        let Some(argv) = sid(minor) else {
            missing_fixture(&format!("{SID}/usr/bin/python3.{minor}"));
            return;
        };
        let Some(target) = check_argv(Some(argv.clone()), minor) else {
            return;
        };
        assert_ne!(
            target.main_interp, 0,
            "3.{minor}: no PyInterpreterState_Main"
        );
        let host = format!("{SID}{}", argv[2]);
        let (elf, fixed) = elf_runtime(&host).expect("_PyRuntime in .dynsym");
        if fixed {
            assert_eq!(elf, target.runtime, "{host}: .dynsym _PyRuntime vs ctypes");
        }
        let mem = ProcessMemory::new(target.child.id());
        let interp = main_interpreter(&mem, (3, minor), target.runtime).expect("interp");
        // ceval.gil is at +16 on 3.13–3.15 (the table says so; gil/address.rs relies on it).
        let gil = mem.read_u64(interp + 16).expect("ceval.gil");
        let interval = mem.read_u64(gil).expect("gil interval");
        let locked = mem.read_u64(gil + 16).expect("gil locked") as u32;
        assert_eq!(interval, 5000, "3.{minor}: GIL interval at {gil:#x}");
        assert!(locked <= 1, "3.{minor}: GIL locked {locked}");
        eprintln!(
            "{host} ({:#x}): main interpreter {interp:#x}, GIL {gil:#x}",
            target.hexversion
        );
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_13() {
        check_sid(13);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_14() {
        check_sid(14);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_15() {
        check_sid(15);
    }

    /// Threads start and finish while we read: errors are allowed, panics and hangs are not,
    /// and whatever comes back must be a name the script could have given.
    #[test]
    #[ignore = "needs root and pyenv"]
    fn churn_never_panics() {
        const CHURN: &str = r#"
import ctypes, sys, threading
def work():
    pass
print("R %d" % ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")))
print("READY", flush=True)
i = 0
while True:
    ts = [threading.Thread(name="churn-%d" % (i + k), target=work) for k in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    i += 8
"#;
        let mut ran = 0;
        let pyenvs = (7..=13u8).map(|m| (pyenv(m).map(|p| vec![p]), m, "pyenv"));
        let sids = (13..=15u8).map(|m| (sid(m), m, "sid"));
        let pythons = pyenvs.chain(sids).filter_map(|(argv, m, from)| {
            if argv.is_none() {
                missing_fixture(&format!("{from} Python 3.{m}"));
            }
            Some((argv?, m))
        });
        for (argv, minor) in pythons {
            let python = argv.join(" ");
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .args(["-c", CHURN])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python");
            let stdout = child.stdout.take().expect("stdout");
            // Killed on every exit path, a failed assertion included.
            let child = Target {
                child,
                runtime: 0,
                main_interp: 0,
                hexversion: 0,
                threads: Vec::new(),
            };
            let mut runtime = 0;
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("line");
                if let Some(r) = line.strip_prefix("R ") {
                    runtime = r.parse().expect("runtime");
                }
                if line == "READY" {
                    break;
                }
            }
            let mem = ProcessMemory::new(child.child.id());
            let (mut ok, mut err) = (0, 0);
            for _ in 0..300 {
                match thread_names(&mem, (3, minor), runtime, &HashMap::new()) {
                    Ok(m) => {
                        ok += 1;
                        for name in m.values() {
                            assert!(
                                name == "MainThread" || name.starts_with("churn-"),
                                "{python}: odd name {name:?}"
                            );
                        }
                    }
                    Err(_) => err += 1,
                }
            }
            drop(child);
            eprintln!("{python}: churn: {ok} ok, {err} errors");
            assert!(ok > 0, "{python}: every read failed");
            ran += 1;
        }
        if ran == 0 {
            missing_fixture("every pyenv and sid Python");
        }
    }

    /// The sid binaries' own tables (from the ELF, no process needed): each minor's positions
    /// must pass the checks and give the offsets seen live; any other minor's must fail.
    #[test]
    fn debug_tables_of_sid_binaries() {
        use object::{Object, ObjectSection};
        // (minor, thread_id, native_thread_id, imports.modules), as ctypes saw them live.
        let live = [
            (13, 152, 160, 7656),
            (14, 152, 160, 7688),
            (15, 176, 184, 7592),
        ];
        for (minor, thread_id, native, modules) in live {
            let path = format!("{SID}/usr/bin/python3.{minor}");
            let Ok(data) = std::fs::read(&path) else {
                missing_fixture(&path);
                continue;
            };
            let file = object::File::parse(&*data).expect("ELF");
            let section = file.section_by_name(".PyRuntime").expect(".PyRuntime");
            let raw = section.data().expect("section data");
            let raw = &raw[..DEBUG_TABLE_LEN];
            assert_eq!(&raw[..8], b"xdebugpy");
            let v = debug_table(minor)
                .expect("table")
                .check(raw)
                .unwrap_or_else(|e| panic!("{path}: {e:#}"));
            assert_eq!(
                (
                    v.tstate_thread_id,
                    v.tstate_native_thread_id,
                    v.interp_imports_modules
                ),
                (thread_id, native, modules),
                "{path}"
            );
            assert_eq!((v.tstate_interp, v.ascii_size), (16, 40), "{path}");
            for other in [13u8, 14, 15] {
                if other != minor {
                    let r = debug_table(other).expect("table").check(raw);
                    assert!(r.is_err(), "{path}: 3.{other} positions accepted: {r:?}");
                }
            }
        }
    }

    #[test]
    fn old_versions_give_empty_map() {
        let mem = ProcessMemory::new(std::process::id());
        let got = thread_names(&mem, (3, 6), 0, &HashMap::new()).expect("3.6");
        assert!(got.is_empty());
    }

    #[test]
    fn garbage_runtime_address_is_an_error_not_a_panic() {
        // Our own memory: readable but not a CPython runtime.
        let junk = [0x5au8; 4096];
        let mem = ProcessMemory::new(std::process::id());
        for minor in 7..=15 {
            let r = thread_names(&mem, (3, minor), junk.as_ptr() as u64, &HashMap::new());
            assert!(r.is_err(), "3.{minor} accepted junk");
        }
    }
}
