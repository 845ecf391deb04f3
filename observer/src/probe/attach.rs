//! Step 3: load the embedded BPF object and attach it according to the plan.
//!
//! Nothing is pinned: every program and link belongs to file descriptors of this process, so the
//! kernel removes the probes whenever gilwatch exits, however it exits (even SIGKILL).
use std::{num::NonZeroU32, path::Path};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use observer_common::{
    GIL_ADDR_COND, GIL_ADDR_MUTEX, GIL_ADDR_SWITCH_MUTEX, HIT_UPROBE, HIT_URETPROBE, ThreadGilState,
};

use crate::{
    error::{Exit, user},
    gil::{address::GilAddress, plan::ProbePlan},
};

/// The kernel programs, built by observer/build.rs and embedded in the binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Loaded and attached probes. Dropping this detaches and unloads everything.
pub struct Attached {
    pub ebpf: Ebpf,
    /// What is attached now (empty while duty cycling has the probes off), to detach it again.
    links: Vec<(&'static str, UProbeLinkId)>,
    plan: ProbePlan,
    pid: NonZeroU32,
}

pub fn attach(plan: &ProbePlan, pid: u32) -> anyhow::Result<Attached> {
    // EbpfLoader::new() reads and parses the kernel's BTF (several MB); Ebpf::load would do it
    // a second time (a third of the attach time with 1000 threads on a busy machine, bench).
    let ebpf = EbpfLoader::new().load(BPF_OBJECT).map_err(|e| {
        if matches!(&e, aya::EbpfError::MapError(_))
            || e.to_string().contains("Operation not permitted")
        {
            user(
                Exit::Privileges,
                format!("loading eBPF maps failed ({e}): run gilwatch as root"),
            )
        } else {
            anyhow!(e).context("loading gilwatch's eBPF object")
        }
    })?;
    let pid = NonZeroU32::new(pid).ok_or_else(|| anyhow!("PID 0 cannot be observed"))?;
    let mut attached = Attached {
        ebpf,
        links: Vec::new(),
        plan: plan.clone(),
        pid,
    };
    let mut loaded: Vec<&'static str> = Vec::new();
    for point in &plan.points {
        let prog = program(&mut attached.ebpf, point.program)?;
        if !loaded.contains(&point.program) {
            prog.load()
                .with_context(|| format!("loading BPF program {} (verifier)", point.program))?;
            loaded.push(point.program);
        }
    }
    attached.attach_all()?;
    Ok(attached)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a uprobe program"))
}

impl Attached {
    /// Attaches every point of the plan (the programs are loaded already).
    pub fn attach_all(&mut self) -> anyhow::Result<()> {
        for point in &self.plan.points {
            let prog = program(&mut self.ebpf, point.program)?;
            let link = prog
                .attach(
                    UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                    &point.object,
                    UProbeScope::OneProcess(self.pid),
                )
                .map_err(|e| attach_error(e, point.program, &point.symbol, &point.object))?;
            self.links.push((point.program, link));
        }
        Ok(())
    }

    /// Removes every probe, keeping the maps (duty cycling's off window). Per-thread state is
    /// forgotten: a span that began before the window must not be measured across it.
    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        let mut owned = Vec::new();
        for (name, link) in std::mem::take(&mut self.links) {
            owned.push(
                program(&mut self.ebpf, name)?
                    .take_link(link)
                    .with_context(|| format!("detaching {name}"))?,
            );
        }
        // Each uprobe's removal waits for the kernel's grace periods (hundreds of ms on a busy
        // machine), with the remaining probes still trapping meanwhile: removed side by side,
        // the waits overlap.
        std::thread::scope(|s| {
            for link in owned {
                s.spawn(move || drop(link));
            }
        });
        let mut threads: BpfHashMap<&mut MapData, u32, ThreadGilState> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("THREADS")
                .context("THREADS map missing")?,
        )?;
        let tids: Vec<u32> = threads.keys().filter_map(Result::ok).collect();
        for tid in tids {
            // Gone already (LRU) is fine.
            let _ = threads.remove(&tid);
        }
        Ok(())
    }

    pub fn is_attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Probe traps taken so far: (uprobes, uretprobes), summed over CPUs.
    pub fn hits(&self) -> anyhow::Result<(u64, u64)> {
        let hits: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("HITS").context("HITS map missing")?)?;
        let sum = |i| -> anyhow::Result<u64> {
            Ok(hits
                .get(&i, 0)
                .context("reading the HITS map")?
                .iter()
                .sum())
        };
        Ok((sum(HIT_UPROBE)?, sum(HIT_URETPROBE)?))
    }

    /// Tells the symbol-free strategy's kernel programs where the GIL is.
    pub fn set_gil_address(&mut self, gil: &GilAddress) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut("GIL_ADDRS")
            .context("GIL_ADDRS map missing")?;
        let mut addrs: Array<&mut MapData, u64> = Array::try_from(map)?;
        let l = gil.layout;
        for (slot, off) in [
            (GIL_ADDR_MUTEX, l.mutex),
            (GIL_ADDR_COND, l.cond),
            (GIL_ADDR_SWITCH_MUTEX, l.switch_mutex),
        ] {
            addrs
                .set(slot, gil.addr + off, 0)
                .context("writing the GIL's addresses to the kernel")?;
        }
        Ok(())
    }
}

fn attach_error(
    e: aya::programs::ProgramError,
    program: &str,
    symbol: &str,
    object: &Path,
) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Permission denied") || text.contains("Operation not permitted") {
        return user(
            Exit::Privileges,
            format!("attaching a uprobe was refused ({text}): run gilwatch as root"),
        );
    }
    anyhow!(text).context(format!(
        "attaching {program} to {symbol} in {}",
        object.display()
    ))
}
