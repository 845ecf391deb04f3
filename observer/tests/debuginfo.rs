//! Privileged integration tests for the symbol sources of a stripped interpreter: a separate debug
//! file (by build-id, by `.gnu_debuglink`) and MiniDebugInfo (`.gnu_debugdata`).
//!
//! Each test makes a stripped copy of a pyenv libpython with binutils, the way distributions do,
//! runs a real Python on that copy (LD_LIBRARY_PATH wins over the executable's RUNPATH), and checks
//! that gilwatch measures the same switch-interval waits as on the unstripped build (see
//! privileged.rs for the tolerances) and says where the symbols came from. Run with
//! `cargo xtask test` (as root).
mod support;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

const OBSERVE: &str = "3s";

/// A pyenv CPython by minor version; these tests need it to exist.
fn python(minor: u32) -> Python {
    pythons()
        .into_iter()
        .find(|p| p.version == (3, minor))
        .unwrap_or_else(|| panic!("no pyenv CPython 3.{minor} under /root/.pyenv/versions"))
}

fn run(program: &str, args: &[&OsStr]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary tree: `lib/` holds a copy of a pyenv libpython (to be stripped), `root/` is the
/// debug root handed to gilwatch, `keep/` is where split-off debug files wait to be placed.
struct Fixture {
    base: PathBuf,
    lib: PathBuf,
    root: PathBuf,
    keep: PathBuf,
}

impl Fixture {
    fn new(py: &Python, what: &str) -> Fixture {
        let base = std::env::temp_dir().join(format!(
            "gilwatch-debuginfo-{what}-{}-{}",
            py.label,
            std::process::id()
        ));
        std::fs::remove_dir_all(&base).ok();
        for d in ["lib", "root", "keep"] {
            std::fs::create_dir_all(base.join(d)).expect("creating the fixture");
        }
        let name = format!("libpython{}.{}.so.1.0", py.version.0, py.version.1);
        let original = py.exe.parent().expect("bin/").join("../lib").join(&name);
        let lib = base.join("lib").join(&name);
        std::fs::copy(&original, &lib)
            .unwrap_or_else(|e| panic!("copying {}: {e}", original.display()));
        Fixture {
            root: base.join("root"),
            keep: base.join("keep"),
            lib,
            base,
        }
    }

    fn name(&self) -> &OsStr {
        self.lib.file_name().expect("file name")
    }

    /// Splits the symbols off into `keep/NAME.debug`, strips the copy and links it to the debug
    /// file by name and CRC, as `dh_strip` does. Returns the debug file.
    fn split_debug_file(&self) -> PathBuf {
        let mut debug = self.keep.join(self.name());
        debug.as_mut_os_string().push(".debug");
        run(
            "objcopy",
            &[
                "--only-keep-debug".as_ref(),
                self.lib.as_os_str(),
                debug.as_os_str(),
            ],
        );
        run("strip", &["--strip-all".as_ref(), self.lib.as_os_str()]);
        let mut link = std::ffi::OsString::from("--add-gnu-debuglink=");
        link.push(&debug);
        run("objcopy", &[&link, self.lib.as_os_str()]);
        debug
    }

    /// Fedora's MiniDebugInfo recipe: the function symbols that are not in .dynsym, in an
    /// xz-compressed ELF, added to the stripped copy as `.gnu_debugdata`.
    fn add_minidebuginfo(&self) {
        let defined = |dynamic: bool| -> Vec<String> {
            let mut args: Vec<&OsStr> = vec!["--format=posix".as_ref(), "--defined-only".as_ref()];
            if dynamic {
                args.insert(0, "-D".as_ref());
            }
            args.push(self.lib.as_os_str());
            let out = run("nm", &args);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (name, kind) = (f.next()?, f.next()?);
                    (dynamic || matches!(kind, "T" | "t")).then(|| name.to_owned())
                })
                .collect()
        };
        let dynsym: std::collections::HashSet<String> = defined(true).into_iter().collect();
        let keep: Vec<String> = defined(false)
            .into_iter()
            .filter(|n| !dynsym.contains(n))
            .collect();
        assert!(
            keep.iter().any(|n| n == "take_gil"),
            "no take_gil in .symtab"
        );
        let keep_file = self.keep.join("keep_symbols");
        std::fs::write(&keep_file, keep.join("\n") + "\n").expect("writing keep_symbols");
        let debug = self.keep.join("debug");
        let mini = self.keep.join("mini_debuginfo");
        run(
            "objcopy",
            &[
                "--only-keep-debug".as_ref(),
                self.lib.as_os_str(),
                debug.as_os_str(),
            ],
        );
        let mut keep_arg = std::ffi::OsString::from("--keep-symbols=");
        keep_arg.push(&keep_file);
        run(
            "objcopy",
            &[
                "-S".as_ref(),
                "--remove-section".as_ref(),
                ".gdb_index".as_ref(),
                "--remove-section".as_ref(),
                ".comment".as_ref(),
                &keep_arg,
                debug.as_os_str(),
                mini.as_os_str(),
            ],
        );
        run("xz", &["--force".as_ref(), mini.as_os_str()]);
        run("strip", &["--strip-all".as_ref(), self.lib.as_os_str()]);
        let mut add = std::ffi::OsString::from(".gnu_debugdata=");
        add.push(self.keep.join("mini_debuginfo.xz"));
        run(
            "objcopy",
            &["--add-section".as_ref(), &add, self.lib.as_os_str()],
        );
    }

    /// Moves a debug file to `root/REL` (creating the directories).
    fn place(&self, debug: &Path, rel: &Path) -> PathBuf {
        let to = self.root.join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::rename(debug, &to).expect("placing the debug file");
        to
    }

    /// Starts `python args…` on the stripped copy and checks that the copy is what is mapped.
    fn start(&self, py: &Python, script: &Path, args: &[&str]) -> Target {
        let lib_dir = self.lib.parent().expect("lib/");
        let sections = run("readelf", &["-S".as_ref(), self.lib.as_os_str()]);
        assert!(
            !String::from_utf8_lossy(&sections.stdout).contains(".symtab"),
            "{} still has a .symtab",
            self.lib.display()
        );
        let target = Target::start_with_env(&py.exe, script, args, &[("LD_LIBRARY_PATH", lib_dir)]);
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", target.pid())).expect("maps");
        let libpythons: Vec<&str> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.contains("libpython"))
            .collect();
        assert!(
            !libpythons.is_empty() && libpythons.iter().all(|p| Path::new(p) == self.lib),
            "{} should run on {}, maps: {libpythons:?}",
            py.label,
            self.lib.display()
        );
        target
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.base).ok();
    }
}

fn build_id(file: &Path) -> String {
    let out = run("readelf", &["-n".as_ref(), file.as_os_str()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} has no build-id", file.display()))
}

fn build_id_rel(id: &str) -> PathBuf {
    PathBuf::from(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ))
}

/// gilwatch with `GILWATCH_DEBUG_ROOT=root`.
fn gilwatch_with_root(root: &Path, args: &[impl AsRef<OsStr>]) -> Output {
    let child = Command::new(GILWATCH)
        .args(args)
        .env("GILWATCH_DEBUG_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gilwatch");
    wait_output(child, Duration::from_secs(60))
}

/// Without symbols `--strategy auto` falls back to the symbol-free `libc` strategy; these
/// arguments make missing symbols an error, to check what it says.
fn symtab_only(pid: u32) -> Vec<String> {
    let pid = pid.to_string();
    ["-p", pid.as_str(), "-d", "1s", "-q", "--strategy", "symtab"]
        .map(str::to_owned)
        .to_vec()
}

fn observe_with_root(pid: u32, root: &Path) -> Value {
    final_report(&gilwatch_with_root(
        root,
        &["-p", &pid.to_string(), "-d", OBSERVE, "-q", "--json", "-"],
    ))
}

/// The contended workload's numbers, as privileged.rs checks them on unstripped builds.
fn assert_switch_interval_waits(py: &Python, r: &Value) {
    let label = &py.label;
    for name in ["io-1", "io-2"] {
        let t = thread(r, name);
        let p50 = ms(&t["wait_ns"]["p50"]);
        assert!(
            (4.0..=6.5).contains(&p50),
            "{label}: {name} wait p50 {p50:.2} ms, want ≈5 ms"
        );
        assert!(
            t["acquisitions"].as_u64().unwrap_or(0) > 200,
            "{label}: {name} too few acquisitions"
        );
    }
    let cpu_hold = share(r, thread(r, "cpu-hog"), "hold_ns");
    assert!(
        cpu_hold > 80.0,
        "{label}: cpu-hog held the GIL {cpu_hold:.1}% of the time, want most of it"
    );
    assert_eq!(r["lost_events"], 0);
    assert_eq!(r["interpreter"]["strategy"], "symtab");
    eprintln!(
        "{label}: symbols from {} {}: io wait p50 {:.2}/{:.2} ms, cpu-hog hold {cpu_hold:.1}%",
        r["interpreter"]["symbols_from"],
        r["interpreter"]["debug_file"],
        ms(&thread(r, "io-1")["wait_ns"]["p50"]),
        ms(&thread(r, "io-2")["wait_ns"]["p50"]),
    );
}

fn symbols(r: &Value) -> Vec<&str> {
    r["interpreter"]["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_debug_file_found_by_build_id_names_the_gil_functions() {
    require_root();
    // 3.8 has the take_gil.constprop.0 clone, on another call path: it must come through too.
    for minor in [8, 12] {
        let py = python(minor);
        let fx = Fixture::new(&py, "build-id");
        let id = build_id(&fx.lib);
        let debug = fx.split_debug_file();
        assert_eq!(build_id(&debug), id);
        fx.place(&debug, &build_id_rel(&id));
        let target = fx.start(&py, &workload("contended.py"), &["60", "2"]);
        let r = observe_with_root(target.pid(), &fx.root);
        assert_eq!(r["interpreter"]["symbols_from"], "debug-file");
        assert_eq!(
            r["interpreter"]["debug_file"],
            format!("/{}", build_id_rel(&id).display())
        );
        assert_eq!(r["interpreter"]["path"], fx.lib.display().to_string());
        if minor == 8 {
            // Both take_gil paths, drop_gil, and libc's timed wait (contended takes, two-trap
            // design).
            assert_eq!(
                symbols(&r),
                [
                    "take_gil",
                    "take_gil.constprop.0",
                    "drop_gil",
                    "pthread_cond_timedwait"
                ]
            );
        }
        assert_switch_interval_waits(&py, &r);
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_debug_file_found_by_debuglink_under_usr_lib_debug() {
    require_root();
    let py = python(12);
    let fx = Fixture::new(&py, "debuglink");
    let debug = fx.split_debug_file();
    // /usr/lib/debug/<the object's directory>/<the debuglink name>, not by build-id.
    let dir = fx
        .lib
        .parent()
        .expect("lib/")
        .strip_prefix("/")
        .expect("absolute");
    let rel = Path::new("usr/lib/debug")
        .join(dir)
        .join(debug.file_name().expect("name"));
    fx.place(&debug, &rel);
    let target = fx.start(&py, &workload("contended.py"), &["60", "2"]);
    let r = observe_with_root(target.pid(), &fx.root);
    assert_eq!(r["interpreter"]["symbols_from"], "debug-file");
    assert_eq!(
        r["interpreter"]["debug_file"],
        format!("/{}", rel.display())
    );
    assert_switch_interval_waits(&py, &r);
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn minidebuginfo_in_gnu_debugdata_names_the_gil_functions() {
    require_root();
    for minor in [8, 12] {
        let py = python(minor);
        let fx = Fixture::new(&py, "minidebuginfo");
        fx.add_minidebuginfo();
        let target = fx.start(&py, &workload("contended.py"), &["60", "2"]);
        // An empty debug root: the symbols can only come from the object itself.
        let r = observe_with_root(target.pid(), &fx.root);
        assert_eq!(r["interpreter"]["symbols_from"], "minidebuginfo");
        assert_eq!(r["interpreter"]["debug_file"], Value::Null);
        if minor == 8 {
            // Both take_gil paths, drop_gil, and libc's timed wait (contended takes, two-trap
            // design).
            assert_eq!(
                symbols(&r),
                [
                    "take_gil",
                    "take_gil.constprop.0",
                    "drop_gil",
                    "pthread_cond_timedwait"
                ]
            );
        }
        assert_switch_interval_waits(&py, &r);
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_debug_file_of_another_build_is_refused() {
    require_root();
    let py = python(12);
    let fx = Fixture::new(&py, "mismatch");
    let id = build_id(&fx.lib);
    fx.split_debug_file();
    // The debug file of another build (3.11's libpython) where this build's should be.
    let other = Fixture::new(&python(11), "mismatch-other");
    let wrong = other.split_debug_file();
    let wrong_id = build_id(&wrong);
    assert_ne!(wrong_id, id);
    fx.place(&wrong, &build_id_rel(&id));
    let target = fx.start(
        &py,
        Path::new("-c"),
        &["import time; print('ready', flush=True); time.sleep(60)"],
    );
    let out = gilwatch_with_root(&fx.root, &symtab_only(target.pid()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    let want = format!(
        "/{} is not its debug file: its build-id is {wrong_id}, the interpreter's {id}",
        build_id_rel(&id).display()
    );
    assert!(stderr.contains(&want), "stderr: {stderr}\nwant: {want}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    eprintln!("{}", stderr.trim_end());

    // `--strategy auto` does without: take_gil found by disassembly (exports), and no symbol
    // source to report.
    let pid = target.pid().to_string();
    let out = gilwatch_with_root(&fx.root, &["-p", &pid, "-d", "1s", "-q", "--json", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json(&out.stdout);
    assert_eq!(r["interpreter"]["strategy"], "exports");
    assert_eq!(r["interpreter"]["symbols_from"], Value::Null);
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_stripped_interpreter_without_debug_files_says_where_it_looked() {
    require_root();
    let py = python(12);
    let fx = Fixture::new(&py, "none");
    let id = build_id(&fx.lib);
    fx.split_debug_file(); // the debug file stays in keep/, where nothing looks
    let target = fx.start(
        &py,
        Path::new("-c"),
        &["import time; print('ready', flush=True); time.sleep(60)"],
    );
    let out = gilwatch_with_root(&fx.root, &symtab_only(target.pid()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "no debug file is at /{}",
            build_id_rel(&id).display()
        )),
        "stderr: {stderr}"
    );
    eprintln!("{}", stderr.trim_end());
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_debuglink_file_next_to_the_object_is_checked_by_crc() {
    require_root();
    let py = python(12);
    let fx = Fixture::new(&py, "crc");
    let debug = fx.split_debug_file();
    let name = debug.file_name().expect("name").to_owned();
    let lib_dir = fx.lib.parent().expect("lib/").to_path_buf();
    // In the object's .debug/ directory (under the target's root, not the debug root).
    let placed = lib_dir.join(".debug").join(&name);
    std::fs::create_dir_all(placed.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&debug, &placed).expect("placing the debug file");
    let target = fx.start(
        &py,
        Path::new("-c"),
        &["import time; print('ready', flush=True); time.sleep(60)"],
    );
    let pid = target.pid().to_string();
    let args = ["-p", pid.as_str(), "-d", "1s", "-q", "--json", "-"];
    let out = gilwatch_with_root(&fx.root, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json(&out.stdout);
    assert_eq!(r["interpreter"]["symbols_from"], "debug-file");
    assert_eq!(r["interpreter"]["debug_file"], placed.display().to_string());

    // One byte more and the CRC in .gnu_debuglink no longer matches: refused, by name.
    let mut data = std::fs::read(&placed).expect("reading the debug file");
    data.push(0);
    std::fs::write(&placed, &data).expect("writing the debug file");
    let out = gilwatch_with_root(&fx.root, &symtab_only(target.pid()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    let want = format!("{} is not its debug file: its CRC32 is", placed.display());
    assert!(stderr.contains(&want), "stderr: {stderr}\nwant: {want}");
    eprintln!("{}", stderr.trim_end());
}
