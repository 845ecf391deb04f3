//! Step 4 for locks: configure the mutex maps and attach the mutex programs, on the same loaded
//! BPF object as the GIL probes (dropping it detaches everything). Loading and attaching go
//! through `probe::attach`, as for every program.
use std::num::NonZeroU32;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::uprobe::UProbeLinkId,
};
use observer_common::{
    MUTEX_CFG_ALL, MUTEX_CFG_ARMED, MUTEX_CFG_STACKS, MUTEX_CFG_TGID,
    names::{map, program},
};

use crate::{
    lock::plan::LockProbe,
    probe::attach::{UprobeAt, attach_raw_tracepoint, attach_uprobe},
};

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
        let mut cfg = mutex_config(ebpf)?;
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
    let mut links = Vec::with_capacity(probes.len());
    for p in probes {
        links.push((p.program, attach_uprobe(ebpf, &UprobeAt::from(p), pid)?));
    }
    // Contention: a futex wait during a lock call, and its return (the wake-up). Raw
    // tracepoints need no tracefs; both programs leave other processes at their first test.
    attach_raw_tracepoint(ebpf, program::MUTEX_FUTEX, "sys_enter")?;
    attach_raw_tracepoint(ebpf, program::MUTEX_FUTEX_EXIT, "sys_exit")?;
    // Everything is in place: start tracking lock calls.
    mutex_config(ebpf)?.set(MUTEX_CFG_ARMED, 1, 0)?;
    Ok(links)
}

/// Stops the lock programs from recording (they stay attached until gilwatch exits).
pub fn disarm(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    mutex_config(ebpf)?.set(MUTEX_CFG_ARMED, 0, 0)?;
    Ok(())
}

fn mutex_config(ebpf: &mut Ebpf) -> anyhow::Result<Array<&mut MapData, u64>> {
    Ok(Array::try_from(
        ebpf.map_mut(map::MUTEX_CONFIG)
            .context("MUTEX_CONFIG map missing")?,
    )?)
}
