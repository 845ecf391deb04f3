//! `gilwatch -- CMD ARGS…`: start a command with the probes in place before its first bytecode.
//!
//! The interpreter file is found before the command runs (PATH, `#!` lines, `env`, and the dynamic
//! loader's own answer for libpython). The child is forked but held at a gate until the probes
//! are attached to its PID; only then does it exec. Probes attach to a file and a PID, so they
//! take effect as soon as the new program maps the interpreter. gilwatch keeps SIGINT/SIGTERM
//! blocked (see `stop`); the child gets the signal mask gilwatch was started with back before
//! it waits at the gate, so a signal forwarded to it there ends it at once.
use std::{
    ffi::CString,
    fs,
    io::Read as _,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use object::Object;

use crate::{
    error::{Exit, user},
    stop::Blocked,
    target::pidfd::PidFd,
};

/// What the command will run, found before it runs.
pub struct Resolved {
    /// The file that holds the interpreter (libpython or the executable).
    pub interpreter: String,
    /// The C library it will load, when the dynamic loader says.
    pub libc: Option<String>,
}

pub fn resolve(argv: &[String]) -> anyhow::Result<Resolved> {
    let first = argv
        .first()
        .ok_or_else(|| user(Exit::Usage, "no command given after --"))?;
    let mut path = find_in_path(first)?;
    // Follow `#!` lines (a script, or a wrapper such as `#!/usr/bin/env python3`), a few levels.
    for _ in 0..4 {
        let mut head = [0u8; 256];
        let n = fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("reading {}", path.display()))?;
        let head = &head[..n];
        let Some(line) = head.strip_prefix(b"#!") else {
            break;
        };
        let line = String::from_utf8_lossy(line.split(|&b| b == b'\n').next().unwrap_or_default())
            .into_owned();
        let mut words = line.split_whitespace();
        let interp = words.next().ok_or_else(|| {
            user(
                Exit::Unsupported,
                format!("{} has an empty #! line", path.display()),
            )
        })?;
        path = if Path::new(interp).file_name().is_some_and(|n| n == "env") {
            let prog = words.find(|w| !w.starts_with('-')).ok_or_else(|| {
                user(
                    Exit::Unsupported,
                    format!(
                        "{}: cannot tell which program `#!{line}` runs",
                        path.display()
                    ),
                )
            })?;
            find_in_path(prog)?
        } else {
            PathBuf::from(interp)
        };
    }
    let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let elf = object::File::parse(&*data).map_err(|_| {
        user(
            Exit::Unsupported,
            format!(
                "{} is not a CPython interpreter (not an ELF executable; a wrapper script such as a pyenv shim?): \
                 run the interpreter directly, e.g. gilwatch -- $(pyenv which python3) app.py",
                path.display()
            ),
        )
    })?;
    let exe = path.to_string_lossy().into_owned();
    if elf.section_by_name(".interp").is_none() {
        // Fully static: no dynamic loader, the executable is the interpreter.
        return Ok(Resolved {
            interpreter: exe,
            libc: None,
        });
    }
    let libs = linked_libraries(&path)?;
    let lib = |prefix: &str| {
        libs.iter()
            .find(|(name, _)| name.starts_with(prefix))
            .map(|(_, p)| p.clone())
    };
    Ok(Resolved {
        interpreter: lib("libpython").unwrap_or(exe),
        libc: lib("libpthread.so").or_else(|| lib("libc.so")),
    })
}

fn find_in_path(prog: &str) -> anyhow::Result<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if !p.is_file() {
            return Err(user(Exit::Usage, format!("{prog}: no such file")));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| user(Exit::Usage, format!("{prog}: command not found in PATH")))
}

/// (library name, path) of what the dynamic loader will load for `exe`. Asking ld.so itself
/// (as `ldd` does) honours RUNPATH, $ORIGIN, LD_LIBRARY_PATH and ld.so.cache exactly; it loads
/// the libraries without running the program.
fn linked_libraries(exe: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new(exe)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .with_context(|| {
            format!(
                "asking the dynamic loader which libraries {} uses",
                exe.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split(" (").next()?.trim();
            path.starts_with('/')
                .then(|| (name.to_owned(), path.to_owned()))
        })
        .collect())
}

/// A forked child waiting at the gate, not yet running the command.
pub struct GatedChild {
    pub pid: u32,
    /// Opened before anything could reap the child: always this child, never a reused PID.
    pub pidfd: PidFd,
    gate: Option<OwnedFd>,
    reaped: Option<i32>,
}

/// Forks a child that execs `argv` once [`GatedChild::release`] is called. If gilwatch fails
/// before that, dropping the gate makes the child exit without running anything. `blocked`: the
/// signal mask the command must run with.
pub fn spawn_gated(argv: &[String], blocked: &Blocked) -> anyhow::Result<GatedChild> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| user(Exit::Usage, "command arguments cannot contain NUL bytes"))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the start gate pipe");
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: gilwatch is single-threaded at this point (no runtime started yet), and the child
    // only calls async-signal-safe functions (close, sigprocmask, read, execvp on prepared
    // arguments, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: child side, see above. Nothing here allocates or unwinds.
        unsafe {
            libc::close(write_end.as_raw_fd());
            libc::sigprocmask(libc::SIG_SETMASK, &blocked.previous, std::ptr::null_mut());
            let mut b = 0u8;
            loop {
                let n = libc::read(read_end.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    libc::execvp(ptrs[0], ptrs.as_ptr());
                    libc::_exit(127);
                }
                if n == 0 || *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
        }
    }
    drop(read_end);
    let pidfd = match PidFd::open(pid as u32) {
        Ok(fd) => fd,
        Err(e) => {
            // Closing the gate makes the child exit; reap it so it is no zombie.
            drop(write_end);
            let mut status = 0;
            // SAFETY: blocking wait for our own child, which is exiting.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(e).context("pidfd_open on the command (gilwatch needs Linux 5.3 or later)");
        }
    };
    Ok(GatedChild {
        pid: pid as u32,
        pidfd,
        gate: Some(write_end),
        reaped: None,
    })
}

impl GatedChild {
    /// Lets the child exec the command.
    pub fn release(&mut self) -> anyhow::Result<()> {
        if let Some(gate) = self.gate.take() {
            let b = [1u8];
            // SAFETY: writing one byte from a live buffer to an fd we own.
            let n = unsafe { libc::write(gate.as_raw_fd(), b.as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error()).context("starting the command");
            }
        }
        Ok(())
    }

    /// The exit code once the child has exited (128+N for signal N), without blocking.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.reaped.is_some() {
            return self.reaped;
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a status int we own.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        if r == self.pid as i32 {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                return None;
            };
            self.reaped = Some(code);
        }
        self.reaped
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // Closing an unreleased gate makes the child exit at once; reap it so it is no zombie.
        if self.gate.take().is_some() {
            let mut status = 0;
            // SAFETY: blocking wait for our own child, which is exiting.
            unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        }
    }
}
