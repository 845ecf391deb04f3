//! Step 3: load the embedded BPF object and attach it according to the plan.
//!
//! Nothing is pinned: every program and link belongs to file descriptors of this process, so the
//! kernel removes the probes whenever gilwatch exits, however it exits (even SIGKILL).
use std::{num::NonZeroU32, path::Path};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeAttachLocation, uprobe::UProbeScope},
};

use aya::maps::{Array, MapData};
use observer_common::{GIL_ADDR_COND, GIL_ADDR_MUTEX, GIL_ADDR_SWITCH_MUTEX};

use crate::{
    error::{Exit, user},
    gil::{address::GilAddress, plan::ProbePlan},
};

/// The kernel programs, built by observer/build.rs and embedded in the binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Loaded and attached probes. Dropping this detaches and unloads everything.
pub struct Attached {
    pub ebpf: Ebpf,
}

pub fn attach(plan: &ProbePlan, pid: u32) -> anyhow::Result<Attached> {
    let mut ebpf = Ebpf::load(BPF_OBJECT).map_err(|e| {
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
    let mut loaded: Vec<&'static str> = Vec::new();
    for point in &plan.points {
        let prog: &mut UProbe = ebpf
            .program_mut(point.program)
            .ok_or_else(|| anyhow!("BPF object has no program {}", point.program))?
            .try_into()
            .with_context(|| format!("{} is not a uprobe program", point.program))?;
        if !loaded.contains(&point.program) {
            prog.load()
                .with_context(|| format!("loading BPF program {} (verifier)", point.program))?;
            loaded.push(point.program);
        }
        prog.attach(
            UProbeAttachLocation::AbsoluteOffset(point.file_offset),
            &point.object,
            UProbeScope::OneProcess(pid),
        )
        .map_err(|e| attach_error(e, point.program, &point.symbol, &point.object))?;
    }
    Ok(Attached { ebpf })
}

impl Attached {
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
