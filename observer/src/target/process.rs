//! A running process as /proc describes it.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    error::{Exit, user},
    probe::preflight::{
        self, CAP_CHECKPOINT_RESTORE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, cap_name,
    },
    target::maps::{self, Mapping},
};

#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
}

impl Process {
    /// A process that exists now, or a one-line error naming the fix.
    pub fn open(pid: u32) -> anyhow::Result<Self> {
        let p = Self { pid };
        match fs::metadata(p.proc_path("")) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(user(
                    Exit::NoSuchProcess,
                    format!(
                        "no process with PID {pid}: check the PID (ps -e, pgrep -f app.py) and try again"
                    ),
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("reading /proc/{pid}")),
        }
        if let Ok(status) = fs::read_to_string(p.proc_path("status")) {
            let is_thread = status.lines().any(|l| {
                l.strip_prefix("Tgid:")
                    .is_some_and(|t| t.trim() != pid.to_string())
            });
            if is_thread {
                return Err(user(
                    Exit::Usage,
                    format!(
                        "{pid} is a thread, not a process: pass its process id (the Tgid in /proc/{pid}/status)"
                    ),
                ));
            }
        }
        Ok(p)
    }

    pub fn proc_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            PathBuf::from(format!("/proc/{}", self.pid))
        } else {
            PathBuf::from(format!("/proc/{}/{rel}", self.pid))
        }
    }

    pub fn is_alive(&self) -> bool {
        // A zombie still has /proc/PID; its state letter says it is gone.
        match fs::read_to_string(self.proc_path("stat")) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X'),
            Err(_) => false,
        }
    }

    /// The command name (comm) of the process, for messages.
    pub fn comm(&self) -> String {
        fs::read_to_string(self.proc_path("comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| "?".into())
    }

    /// The executable's path as the process sees it.
    pub fn exe(&self) -> anyhow::Result<String> {
        let link = fs::read_link(self.proc_path("exe"))
            .map_err(|e| self.refused(e, "reading its executable's path", &[CAP_SYS_PTRACE]))
            .with_context(|| format!("reading /proc/{}/exe", self.pid))?;
        Ok(link
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_owned())
    }

    /// Every region of the process (anonymous memory too).
    pub fn regions(&self) -> anyhow::Result<Vec<Mapping>> {
        let text = fs::read_to_string(self.proc_path("maps"))
            .map_err(|e| self.refused(e, "reading its memory maps", &[CAP_SYS_PTRACE]))
            .with_context(|| format!("reading /proc/{}/maps", self.pid))?;
        Ok(maps::parse(&text))
    }

    /// The regions that map files.
    pub fn maps(&self) -> anyhow::Result<Vec<Mapping>> {
        let mut maps = self.regions()?;
        maps.retain(Mapping::is_file);
        Ok(maps)
    }

    /// The owner (real uid) of the process.
    pub fn uid(&self) -> Option<u32> {
        let status = fs::read_to_string(self.proc_path("status")).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        line.split_whitespace().next()?.parse().ok()
    }

    /// An EPERM/EACCES from /proc about this process, as the capabilities it takes; other
    /// errors pass through.
    fn refused(&self, e: std::io::Error, what: &str, needed: &[u32]) -> anyhow::Error {
        if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            return e.into();
        }
        // SAFETY: geteuid has no arguments and cannot fail.
        let ours = unsafe { libc::geteuid() };
        let names: Vec<&str> = needed
            .iter()
            .filter(|&&c| !preflight::has_effective(c))
            .map(|&c| cap_name(c))
            .collect();
        let missing = if names.is_empty() {
            String::new()
        } else {
            format!(", missing {}", names.join(" and "))
        };
        let owner = self.uid().map_or_else(|| "?".to_owned(), |u| u.to_string());
        user(
            Exit::Privileges,
            format!(
                "the kernel refused {what} for PID {} (owner uid {owner}, gilwatch runs as uid {ours}{missing}): {}",
                self.pid,
                preflight::HOW_TO_GRANT
            ),
        )
    }

    /// A path inside the process's mount namespace, reachable from ours through /proc/PID/root
    /// (the process may run in a container whose files are not at the same path on the host).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.proc_path("root").join(path.trim_start_matches('/'))
    }

    /// The mapping of the executable (the maps line with the inode of /proc/PID/exe).
    pub fn exe_mapping<'m>(&self, maps: &'m [Mapping]) -> anyhow::Result<&'m Mapping> {
        use std::os::unix::fs::MetadataExt as _;
        let ino = fs::metadata(self.proc_path("exe"))
            .map_err(|e| self.refused(e, "reading its executable", &[CAP_SYS_PTRACE]))
            .with_context(|| format!("reading /proc/{}/exe", self.pid))?
            .ino();
        maps.iter().find(|m| m.inode == ino).ok_or_else(|| {
            anyhow::anyhow!(
                "the executable of PID {} is not in its memory maps",
                self.pid
            )
        })
    }

    /// Opens the very file behind a mapping, through /proc/PID/map_files: no path lookup at
    /// all, so it works whatever mount namespace or root the process has. Returns the file and
    /// a path to it (/proc/self/fd/N) that stays valid while the file is open.
    pub fn open_mapping(&self, m: &Mapping) -> anyhow::Result<(fs::File, PathBuf)> {
        use std::os::fd::AsRawFd as _;
        let link = self.proc_path(&format!("map_files/{:x}-{:x}", m.start, m.end));
        // map_files needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN), and, for another user's
        // process, the right to search its directory (CAP_DAC_READ_SEARCH).
        let file = fs::File::open(&link)
            .map_err(|e| {
                self.refused(
                    e,
                    "opening its mapped files through /proc/PID/map_files",
                    &[CAP_CHECKPOINT_RESTORE, CAP_DAC_READ_SEARCH],
                )
            })
            .with_context(|| format!("opening {} ({})", link.display(), m.path))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok((file, fd_path))
    }

    /// The live threads' ids (as we see them), from /proc/PID/task.
    pub fn thread_ids(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir(self.proc_path("task")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Thread ids and their OS names (comm, at most 15 bytes).
    pub fn threads(&self) -> HashMap<u32, String> {
        let mut out = HashMap::new();
        for tid in self.thread_ids() {
            if let Ok(comm) = fs::read(self.proc_path(&format!("task/{tid}/comm"))) {
                // 3.14 cuts Python names to 15 bytes, possibly inside a UTF-8 sequence.
                let name = String::from_utf8_lossy(&comm).trim_end().to_owned();
                out.insert(tid, name);
            }
        }
        out
    }

    /// The PID as the process itself sees it (innermost PID namespace), from NSpid.
    pub fn namespace_pid(&self) -> Option<u32> {
        innermost_nspid(&fs::read_to_string(self.proc_path("status")).ok()?)
    }

    /// The live threads: TID as the process itself sees it (its own PID namespace) → TID as we
    /// see it.
    pub fn namespace_tids(&self) -> HashMap<u32, u32> {
        self.thread_ids()
            .into_iter()
            .map(|here| {
                let inside = fs::read_to_string(self.proc_path(&format!("task/{here}/status")))
                    .ok()
                    .and_then(|status| innermost_nspid(&status))
                    .unwrap_or(here);
                (inside, here)
            })
            .collect()
    }
}

/// The last id of a status file's NSpid line: the one in the innermost PID namespace.
fn innermost_nspid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// File name of a path, for messages.
pub fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_is_the_innermost_id() {
        assert_eq!(innermost_nspid("Name:\tx\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(innermost_nspid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(innermost_nspid("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_threads() {
        let me = Process {
            pid: std::process::id(),
        };
        let tids = me.namespace_tids();
        assert!(tids.values().any(|&t| t == me.pid), "{tids:?}");
        assert_eq!(me.threads().len(), me.thread_ids().len());
    }
}
