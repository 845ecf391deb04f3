//! Which processes a fleet run observes: the PIDs given, their descendants (`--children`),
//! processes by name (`--name`), or every CPython process (`--all`).
//!
//! Found by scanning /proc (every process's parent from its `stat`), once at start and every
//! half second while the run lasts: one scan serves the three selections, it sees descendants
//! that re-parented inside the tree, and it needs no kernel program (a sched_process_fork
//! tracepoint would see forks sooner, but a new worker is probed only once it is planned for,
//! which takes longer than the scan's period anyway).
use std::{collections::HashMap, fs};

use crate::{gil::locate::is_libpython, target::process::file_name};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `-p`: the roots.
    pub pids: Vec<u32>,
    pub children: bool,
    pub name: Option<String>,
    pub all: bool,
}

/// One process of the host, as one scan saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
}

/// Every process on the host now (pid → what we need of it).
pub fn scan() -> HashMap<u32, Seen> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        let Some(ppid) = rest.next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        out.insert(pid, Seen { pid, ppid, comm });
    }
    out
}

/// The root (a `-p` PID) each descendant of one descends from, itself included for roots.
pub fn descendants(host: &HashMap<u32, Seen>, roots: &[u32]) -> HashMap<u32, u32> {
    let mut found = HashMap::new();
    for &pid in host.keys() {
        // Walk up the parents (bounded: a cycle cannot happen, but a racing scan can be odd).
        let mut at = pid;
        for _ in 0..64 {
            if roots.contains(&at) {
                found.insert(pid, at);
                break;
            }
            match host.get(&at) {
                Some(s) if s.ppid > 1 && s.ppid != at => at = s.ppid,
                _ => break,
            }
        }
    }
    found
}

/// Whether `pid` is named `name`: its comm, or the file name of its program or script
/// (argv[0] or argv[1]: `python3 /venv/bin/gunicorn`).
pub fn has_name(seen: &Seen, name: &str) -> bool {
    if seen.comm == name {
        return true;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", seen.pid)) else {
        return false;
    };
    cmdline
        .split(|&b| b == 0)
        .take(2)
        .any(|arg| file_name(&String::from_utf8_lossy(arg)) == name)
}

/// A cheap first look: does the process map a libpython or run a `python*` executable? The
/// plan (gil::prepare) then decides for sure; this keeps `--all` from planning for every
/// process on the host.
pub fn looks_like_python(pid: u32) -> bool {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_name(exe.trim_end_matches(" (deleted)")).starts_with("python") {
        return true;
    }
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .any(is_libpython)
        })
        .unwrap_or(false)
}

/// The executable a process runs now (tells a fork that has since exec'd apart).
pub fn exe_of(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Selection {
    /// The processes selected now: pid → the root it descends from (itself for a root, and
    /// for processes selected by name or `--all`).
    pub fn resolve(&self, host: &HashMap<u32, Seen>) -> HashMap<u32, u32> {
        let me = std::process::id();
        let mut roots: Vec<u32> = self.pids.clone();
        if let Some(name) = &self.name {
            roots.extend(
                host.values()
                    .filter(|s| s.pid != me && has_name(s, name))
                    .map(|s| s.pid),
            );
        }
        let mut out: HashMap<u32, u32> = HashMap::new();
        if self.all {
            for &pid in host.keys() {
                out.insert(pid, pid);
            }
        }
        if self.children {
            // A descendant of a root that is itself a root (gunicorn master and workers all
            // named gunicorn) belongs to the topmost.
            let tops: Vec<u32> = roots
                .iter()
                .copied()
                .filter(|r| !ancestors(host, *r).iter().any(|a| roots.contains(a)))
                .collect();
            out.extend(descendants(host, &tops));
        }
        // Roots that are gone (or zombies, which the scan leaves out) are not selected again.
        for r in roots.into_iter().filter(|r| host.contains_key(r)) {
            out.entry(r).or_insert(r);
        }
        out.remove(&me);
        out
    }
}

/// A process's ancestors, nearest first.
fn ancestors(host: &HashMap<u32, Seen>, pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = pid;
    for _ in 0..64 {
        match host.get(&at) {
            Some(s) if s.ppid > 1 && s.ppid != at => {
                out.push(s.ppid);
                at = s.ppid;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(edges: &[(u32, u32)]) -> HashMap<u32, Seen> {
        edges
            .iter()
            .map(|&(pid, ppid)| {
                (
                    pid,
                    Seen {
                        pid,
                        ppid,
                        comm: format!("p{pid}"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn descendants_are_found_at_any_depth_and_only_below_the_roots() {
        // 10 → 11 → 12, 10 → 13; 20 unrelated; 1 is init.
        let h = host(&[(1, 0), (10, 1), (11, 10), (12, 11), (13, 10), (20, 1)]);
        let d = descendants(&h, &[10]);
        let mut pids: Vec<u32> = d.keys().copied().collect();
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12, 13]);
        assert!(d.values().all(|&r| r == 10));
    }

    #[test]
    fn a_root_below_another_root_belongs_to_the_topmost() {
        let h = host(&[(1, 0), (10, 1), (11, 10), (12, 10)]);
        let sel = Selection {
            pids: vec![10, 11],
            children: true,
            name: None,
            all: false,
        };
        let r = sel.resolve(&h);
        assert_eq!(r.get(&11), Some(&10));
        assert_eq!(r.get(&12), Some(&10));
        assert_eq!(r.get(&10), Some(&10));
    }

    #[test]
    fn without_children_only_the_roots_are_selected() {
        let h = host(&[(1, 0), (10, 1), (11, 10)]);
        let sel = Selection {
            pids: vec![10],
            children: false,
            name: None,
            all: false,
        };
        assert_eq!(sel.resolve(&h).len(), 1);
    }
}
