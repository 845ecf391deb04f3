//! Step 4 for locks: configure the mutex maps and attach the mutex programs, on the same loaded
//! BPF object as the GIL probes (dropping it detaches everything).
use std::num::NonZeroU32;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap},
    programs::{
        RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use observer_common::{
    MUTEX_CFG_ALL, MUTEX_CFG_ARMED, MUTEX_CFG_STACKS, MUTEX_CFG_TGID,
    names::{map, program},
};

use crate::lock::plan::LockProbe;

/// What the kernel side tracks.
pub struct LockConfig<'a> {
    pub pid: u32,
    /// Every pthread mutex (`--mutexes`); else only `watch`. Custom lock instances are always all tracked.
    pub all: bool,
    /// Record call-site stacks (`--mutexes`).
    pub stacks: bool,
    /// The `--lock` addresses.
    pub watch: &'a [u64],
}

pub fn attach(
    ebpf: &mut Ebpf,
    config: &LockConfig<'_>,
    probes: &[LockProbe],
) -> anyhow::Result<Vec<(&'static str, UProbeLinkId)>> {
    {
        let mut cfg: Array<_, u64> = Array::try_from(
            ebpf.map_mut(map::MUTEX_CONFIG)
                .context("MUTEX_CONFIG map missing")?,
        )?;
        cfg.set(MUTEX_CFG_ALL, u64::from(config.all), 0)?;
        cfg.set(MUTEX_CFG_STACKS, u64::from(config.stacks), 0)?;
        cfg.set(MUTEX_CFG_TGID, u64::from(config.pid), 0)?;
    }
    {
        let mut watch: HashMap<_, u64, u32> = HashMap::try_from(
            ebpf.map_mut(map::MUTEX_WATCH)
                .context("MUTEX_WATCH map missing")?,
        )?;
        for &addr in config.watch {
            watch.insert(addr, 1, 0)?;
        }
    }
    let pid = NonZeroU32::new(config.pid).ok_or_else(|| anyhow!("PID 0 cannot be observed"))?;
    let mut loaded: Vec<&'static str> = Vec::new();
    let mut links = Vec::with_capacity(probes.len());
    for p in probes {
        let prog: &mut UProbe = ebpf
            .program_mut(p.program)
            .ok_or_else(|| anyhow!("BPF object has no program {}", p.program))?
            .try_into()
            .with_context(|| format!("{} is not a uprobe program", p.program))?;
        if !loaded.contains(&p.program) {
            prog.load()
                .with_context(|| format!("loading BPF program {} (verifier)", p.program))?;
            loaded.push(p.program);
        }
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(p.attach_offset()),
            cookie: p.cookie,
        };
        let link = prog
            .attach(point, &p.open_path, UProbeScope::OneProcess(pid))
            .map_err(|e| refused(e).context(format!("attaching {} to {}", p.program, p.symbol)))?;
        links.push((p.program, link));
    }
    // Contention: a futex wait during a lock call, and its return (the wake-up). Raw
    // tracepoints need no tracefs; both programs leave other processes at their first test.
    for (name, tracepoint) in [
        (program::MUTEX_FUTEX, "sys_enter"),
        (program::MUTEX_FUTEX_EXIT, "sys_exit"),
    ] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("{name} is not a raw tracepoint program"))?;
        prog.load()
            .with_context(|| format!("loading BPF program {name} (verifier)"))?;
        prog.attach(tracepoint).map_err(|e| {
            refused(e).context(format!("attaching {name} to the {tracepoint} tracepoint"))
        })?;
    }
    // Everything is in place: start tracking lock calls.
    let mut cfg: Array<_, u64> = Array::try_from(
        ebpf.map_mut(map::MUTEX_CONFIG)
            .context("MUTEX_CONFIG map missing")?,
    )?;
    cfg.set(MUTEX_CFG_ARMED, 1, 0)?;
    Ok(links)
}

/// Stops the lock programs from recording (they stay attached until gilwatch exits).
pub fn disarm(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let mut cfg: Array<_, u64> = Array::try_from(
        ebpf.map_mut(map::MUTEX_CONFIG)
            .context("MUTEX_CONFIG map missing")?,
    )?;
    cfg.set(MUTEX_CFG_ARMED, 0, 0)?;
    Ok(())
}

fn refused(e: aya::programs::ProgramError) -> anyhow::Error {
    if crate::error::is_permission_denied(&e) {
        crate::probe::attach::refused("attaching a lock probe", &e)
    } else {
        anyhow!(e)
    }
}
