//! Measures what a trap of each kind costs on this machine, in gilwatch's own process, before the
//! target is touched: three functions of our own, one whose first instruction the kernel emulates
//! (`push`), one it must single-step (`mov`), and one with a uretprobe, each called in a loop
//! with and without a counting probe on it. A few milliseconds of calls.
//!
//! The probes stay attached until gilwatch exits: nothing calls these functions afterwards, and
//! detaching a uprobe waits for an RCU grace period (about 0.1 s each here).
//!
//! The figures include the counting program every site carries (observer-ebpf/src/site_hits.rs),
//! not the GIL and lock programs' own work, which is small beside the trap.
use std::{arch::global_asm, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, maps::PerCpuArray};
use observer_common::{MAX_SITES, names::map};

use crate::probe::{attach::attach_counter, cost::TrapCosts};

/// The counter slots calibration uses (emulated, single-stepped, return); run probes use the
/// slots below them.
pub const FIRST_CALIBRATION_SLOT: u32 = MAX_SITES - 3;
/// Calls per batch, and batches (the median batch is kept: other work on the machine only ever
/// makes a batch slower).
const EMULATED_CALLS: u32 = 2000;
const STEPPED_CALLS: u32 = 200;
const BATCHES: usize = 5;

global_asm!(
    ".text",
    ".globl gilwatch_calibrate_emulated",
    ".type gilwatch_calibrate_emulated,@function",
    ".p2align 4",
    "gilwatch_calibrate_emulated:",
    "    push %rbp",
    "    mov %rdi, %rax",
    "    pop %rbp",
    "    ret",
    ".size gilwatch_calibrate_emulated, .-gilwatch_calibrate_emulated",
    ".globl gilwatch_calibrate_stepped",
    ".type gilwatch_calibrate_stepped,@function",
    ".p2align 4",
    "gilwatch_calibrate_stepped:",
    "    mov %rdi, %rax",
    "    ret",
    ".size gilwatch_calibrate_stepped, .-gilwatch_calibrate_stepped",
    ".globl gilwatch_calibrate_return",
    ".type gilwatch_calibrate_return,@function",
    ".p2align 4",
    "gilwatch_calibrate_return:",
    "    push %rbp",
    "    mov %rdi, %rax",
    "    pop %rbp",
    "    ret",
    ".size gilwatch_calibrate_return, .-gilwatch_calibrate_return",
    options(att_syntax)
);

unsafe extern "C" {
    /// Returns its argument; starts with `push %rbp` (emulated).
    fn gilwatch_calibrate_emulated(x: u64) -> u64;
    /// Returns its argument; starts with `mov %rdi,%rax` (single-stepped).
    fn gilwatch_calibrate_stepped(x: u64) -> u64;
    /// The same as the emulated one, for the uretprobe (a probe of its own).
    fn gilwatch_calibrate_return(x: u64) -> u64;
}

type Probe = unsafe extern "C" fn(u64) -> u64;

/// Calibrates on a loaded BPF object whose counting programs are loaded.
pub fn run(ebpf: &mut Ebpf) -> anyhow::Result<TrapCosts> {
    let emulated: Probe = gilwatch_calibrate_emulated;
    let stepped: Probe = gilwatch_calibrate_stepped;
    let returning: Probe = gilwatch_calibrate_return;
    let base_e = median(|| time(emulated, EMULATED_CALLS));
    let base_s = median(|| time(stepped, STEPPED_CALLS));
    let base_r = median(|| time(returning, EMULATED_CALLS));
    let own = std::num::NonZeroU32::new(std::process::id()).ok_or_else(|| anyhow!("PID 0"))?;
    // Slot by slot: emulated entry, single-stepped entry, a uretprobe's entry and return.
    let probes = [
        (emulated, false, EMULATED_CALLS),
        (stepped, false, STEPPED_CALLS),
        (returning, true, EMULATED_CALLS),
    ];
    for (slot, &(f, is_return, _)) in (FIRST_CALIBRATION_SLOT..).zip(&probes) {
        let (object, offset) = own_file_offset(f as usize as u64)?;
        attach_counter(ebpf, is_return, slot, &object, offset, own)?;
    }
    let mut ns = [0.0; 3];
    for (i, (slot, &(f, _, calls))) in (FIRST_CALIBRATION_SLOT..).zip(&probes).enumerate() {
        let before = slot_hits(ebpf, slot)?;
        ns[i] = median(|| time(f, calls));
        // The probe must have fired on every call, or there was nothing to time.
        let fired = slot_hits(ebpf, slot)? - before;
        if fired < BATCHES as u64 * u64::from(calls) {
            return Err(anyhow!("a calibration probe fired {fired} times"));
        }
    }
    let emulated_ns = ns[0] - base_e;
    let stepped_ns = ns[1] - base_s;
    // A uretprobe alone: its entry trap (emulated here) plus the return.
    let with_return = ns[2] - base_r;
    Ok(TrapCosts {
        emulated_ns: emulated_ns.max(1.0),
        stepped_ns: stepped_ns.max(1.0),
        return_ns: (with_return - emulated_ns).max(1.0),
        source: "measured",
    })
}

fn slot_hits(ebpf: &Ebpf, slot: u32) -> anyhow::Result<u64> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map::SITE_HITS).context("SITE_HITS map missing")?)?;
    Ok(map.get(&slot, 0)?.iter().sum())
}

/// CPU ns per call of `calls` calls. The thread's own CPU time, not the wall clock: on a busy
/// machine the loop is preempted, and time spent waiting for a CPU is no cost of the trap.
fn time(f: Probe, calls: u32) -> f64 {
    let start = thread_cpu_ns();
    let mut x = 0u64;
    for i in 0..calls {
        // SAFETY: both functions only move a register and return it (see the assembly above).
        x = x.wrapping_add(unsafe { f(std::hint::black_box(u64::from(i))) });
    }
    std::hint::black_box(x);
    thread_cpu_ns().saturating_sub(start) as f64 / f64::from(calls)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the thread CPU clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(batch: impl Fn() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..BATCHES).map(|_| batch()).collect();
    v.sort_by(f64::total_cmp);
    v[BATCHES / 2]
}

/// The file (as /proc/self/map_files/…, which works even if the binary was replaced) and file
/// offset of an address in gilwatch's own code.
fn own_file_offset(addr: u64) -> anyhow::Result<(PathBuf, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi), Ok(off)) = (
            u64::from_str_radix(lo, 16),
            u64::from_str_radix(hi, 16),
            u64::from_str_radix(off, 16),
        ) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return Ok((
                PathBuf::from(format!("/proc/self/map_files/{range}")),
                addr - lo + off,
            ));
        }
    }
    Err(anyhow!("{addr:#x} is in none of gilwatch's mappings"))
}
