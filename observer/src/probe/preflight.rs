//! What must be true before attaching: privileges and kernel support, each with its fix.
//!
//! Capabilities, and what each one is for (measured on this project's 6.18 kernel as an
//! unprivileged user given them with `setpriv --ambient-caps`):
//! - CAP_BPF: creating the maps and loading the programs.
//! - CAP_PERFMON: opening the uprobe perf events. This kernel refused uprobe perf events with
//!   CAP_BPF + CAP_PERFMON alone (EACCES) and accepted them with CAP_SYS_ADMIN, which also
//!   covers CAP_BPF, CAP_PERFMON and CAP_CHECKPOINT_RESTORE.
//! - CAP_SYS_PTRACE: a target of another user (its maps, its memory: the GIL's address for the
//!   libc strategy and the Python thread names); not needed for one's own processes.
//! - CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN): /proc/PID/map_files, through which gilwatch opens
//!   the very files the target mapped (containers included). For another user's process, its
//!   map_files directory (mode 0500, owned by that user) also takes CAP_DAC_READ_SEARCH.
//!
//! So: one's own processes need CAP_SYS_ADMIN here (CAP_BPF + CAP_PERFMON +
//! CAP_CHECKPOINT_RESTORE where the kernel lets CAP_PERFMON open uprobe events); other users'
//! processes add CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. Refusals are recognised by errno
//! (EPERM/EACCES) and name what is missing.
use std::path::Path;

use crate::error::{Exit, user};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

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

pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        CAP_CHECKPOINT_RESTORE => "CAP_CHECKPOINT_RESTORE",
        _ => "a capability",
    }
}

pub fn has_cap(cap: u32) -> bool {
    effective_caps() & (1 << cap) != 0
}

/// Whether the power of `cap` is there: the capability itself, or CAP_SYS_ADMIN where the
/// kernel still accepts it instead (CAP_BPF, CAP_PERFMON, CAP_CHECKPOINT_RESTORE).
pub fn has_effective(cap: u32) -> bool {
    has_cap(cap)
        || (matches!(cap, CAP_BPF | CAP_PERFMON | CAP_CHECKPOINT_RESTORE) && has_cap(CAP_SYS_ADMIN))
}

/// The capabilities this process lacks for loading and attaching probes, by name; empty when
/// it has all of them (CAP_SYS_ADMIN stands for all three).
pub fn missing_for_probes() -> Vec<&'static str> {
    if has_cap(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !has_cap(CAP_BPF) {
        out.push("CAP_BPF");
    }
    if !has_cap(CAP_PERFMON) {
        out.push("CAP_PERFMON");
    }
    if !has_cap(CAP_CHECKPOINT_RESTORE) {
        out.push("CAP_CHECKPOINT_RESTORE");
    }
    out
}

/// How to get the capabilities: one place, so every message gives the same fix.
pub const HOW_TO_GRANT: &str = "run it as root, or give it the capabilities \
     (setcap cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep gilwatch; the last two only \
     for other users' processes)";

pub fn check_privileges() -> anyhow::Result<()> {
    let missing = missing_for_probes();
    if missing.is_empty() {
        return Ok(());
    }
    Err(user(
        Exit::Privileges,
        format!(
            "needs root to load eBPF probes: missing {}: {HOW_TO_GRANT}",
            missing.join(", ")
        ),
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
