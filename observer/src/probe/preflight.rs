//! What must be true before attaching: privileges and kernel support, each with its fix.
use std::path::Path;

use crate::error::{Exit, user};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_privileges() -> anyhow::Result<()> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(user(
        Exit::Privileges,
        "needs root to load eBPF probes: run it with sudo \
         (or grant the binary cap_bpf,cap_perfmon,cap_sys_ptrace+ep with setcap)",
    ))
}

pub fn check_kernel() -> anyhow::Result<()> {
    // aya attaches uprobes through perf_event_open with the uprobe PMU; without it there is no way in.
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        return Err(user(
            Exit::KernelSupport,
            "this kernel has no uprobe support (/sys/bus/event_source/devices/uprobe is missing): \
             gilwatch needs a kernel built with CONFIG_UPROBES and CONFIG_BPF_EVENTS",
        ));
    }
    Ok(())
}
