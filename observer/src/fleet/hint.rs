//! `gilwatch -p MASTER` on a pre-fork server: the master's GIL is idle while its workers do the
//! work. The report says so, and suggests `--children`, when the process named by `-p` held its
//! GIL less than 1% of the time while its Python descendants were busy (their CPU time over the
//! run, from /proc: nothing is probed in them).
use std::{collections::HashMap, fs, time::Instant};

use super::select;

/// Below this GIL held share the process named by `-p` is idle.
const IDLE_HELD_PCT: f64 = 1.0;
/// Above this summed CPU use (% of one CPU) its Python descendants are busy.
const BUSY_CPU_PCT: f64 = 10.0;

/// CPU time of a process's Python descendants at one moment.
pub struct ChildrenCpu {
    at: Instant,
    /// pid → user + system clock ticks.
    ticks: HashMap<u32, u64>,
}

/// User + system ticks of a process (`/proc/PID/stat` fields 14 and 15).
fn ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl ChildrenCpu {
    pub fn read(pid: u32) -> ChildrenCpu {
        let host = select::scan();
        let ticks = select::descendants(&host, &[pid])
            .into_keys()
            .filter(|&p| p != pid && select::looks_like_python(p))
            .filter_map(|p| Some((p, ticks(p)?)))
            .collect();
        ChildrenCpu {
            at: Instant::now(),
            ticks,
        }
    }
}

/// The hint for the report of `pid`, if its GIL was idle and its Python children busy.
pub fn check(pid: u32, start: &ChildrenCpu, held_pct: f64) -> Option<String> {
    if held_pct >= IDLE_HELD_PCT {
        return None;
    }
    let end = ChildrenCpu::read(pid);
    let secs = end.at.duration_since(start.at).as_secs_f64();
    if secs <= 0.0 || end.ticks.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Children there at both ends; one started during the run counts from its start.
    let used: u64 = end
        .ticks
        .iter()
        .map(|(p, &t)| t.saturating_sub(start.ticks.get(p).copied().unwrap_or(0)))
        .sum();
    let cpu_pct = used as f64 / hz / secs * 100.0;
    if cpu_pct < BUSY_CPU_PCT {
        return None;
    }
    Some(format!(
        "PID {pid} held its GIL {held_pct:.1}% of the time, but its {} Python child process(es) used {:.0}% of a CPU: \
         they do the work. Watch them too: gilwatch -p {pid} --children",
        end.ticks.len(),
        cpu_pct
    ))
}
