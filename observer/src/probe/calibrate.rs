//! Measures what a trap of each kind costs on this machine, in gilwatch's own process, before the
//! target is touched: two functions of our own, one whose first instruction the kernel emulates
//! (`push`) and one it must single-step (`mov`), each called in a loop with and without a
//! counting uprobe on it, and the first again with a uretprobe. A few milliseconds.
//!
//! The figures include the counting program every site carries (observer-ebpf/src/site_hits.rs),
//! not the GIL and lock programs' own work, which is small beside the trap.
use std::{arch::global_asm, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, maps::PerCpuArray, programs::uprobe::UProbeScope};
use observer_common::MAX_SITES;

use crate::probe::{
    attach::{attach_counter, detach_counter},
    cost::TrapCosts,
};

/// The counter slot calibration uses; run probes use the slots below it.
pub const CALIBRATION_SLOT: u32 = MAX_SITES - 1;
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
    options(att_syntax)
);

unsafe extern "C" {
    /// Returns its argument; starts with `push %rbp` (emulated).
    fn gilwatch_calibrate_emulated(x: u64) -> u64;
    /// Returns its argument; starts with `mov %rdi,%rax` (single-stepped).
    fn gilwatch_calibrate_stepped(x: u64) -> u64;
}

type Probe = unsafe extern "C" fn(u64) -> u64;

/// Calibrates on a loaded BPF object whose counting programs are loaded.
pub fn run(ebpf: &mut Ebpf) -> anyhow::Result<TrapCosts> {
    let emulated: Probe = gilwatch_calibrate_emulated;
    let stepped: Probe = gilwatch_calibrate_stepped;
    let e_site = own_file_offset(emulated as usize as u64)?;
    let s_site = own_file_offset(stepped as usize as u64)?;
    let base_e = median(|| time(emulated, EMULATED_CALLS));
    let base_s = median(|| time(stepped, STEPPED_CALLS));
    let emulated_ns = probed(ebpf, &e_site, false, emulated, EMULATED_CALLS)? - base_e;
    let stepped_ns = probed(ebpf, &s_site, false, stepped, STEPPED_CALLS)? - base_s;
    // A uretprobe alone: its entry trap (emulated here) plus the return.
    let with_return = probed(ebpf, &e_site, true, emulated, EMULATED_CALLS)? - base_e;
    Ok(TrapCosts {
        emulated_ns: emulated_ns.max(1.0),
        stepped_ns: stepped_ns.max(1.0),
        return_ns: (with_return - emulated_ns).max(1.0),
        source: "measured",
    })
}

/// ns per call, with a counter attached at the site (and its return counter if `is_return`).
fn probed(
    ebpf: &mut Ebpf,
    site: &(PathBuf, u64),
    is_return: bool,
    f: Probe,
    calls: u32,
) -> anyhow::Result<f64> {
    let scope = UProbeScope::OneProcess(
        std::num::NonZeroU32::new(std::process::id()).ok_or_else(|| anyhow!("PID 0"))?,
    );
    let before = slot_hits(ebpf)?;
    let link = attach_counter(ebpf, is_return, CALIBRATION_SLOT, &site.0, site.1, scope)?;
    let ns = median(|| time(f, calls));
    detach_counter(ebpf, is_return, link)?;
    // The probe must have fired on every call, or there was nothing to time.
    let fired = slot_hits(ebpf)? - before;
    if fired < BATCHES as u64 * u64::from(calls) {
        return Err(anyhow!("the calibration probe fired {fired} times"));
    }
    Ok(ns)
}

fn slot_hits(ebpf: &Ebpf) -> anyhow::Result<u64> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("SITE_HITS").context("SITE_HITS map missing")?)?;
    Ok(map.get(&CALIBRATION_SLOT, 0)?.iter().sum())
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
