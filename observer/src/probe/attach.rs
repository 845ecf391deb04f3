//! Step 3: load the embedded BPF object and attach it according to the plan.
//!
//! Nothing is pinned: every program and link belongs to file descriptors of this process, so the
//! kernel removes the probes whenever gilwatch exits, however it exits (even SIGKILL).
use std::{
    collections::HashSet,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use observer_common::{
    GIL_ADDR_COND, GIL_ADDR_MUTEX, GIL_ADDR_SWITCH_MUTEX, StatKey, StatKind, ThreadGilState,
    names::{map, program},
};

use crate::{
    error::{Exit, is_permission_denied, os_errno, user},
    gil::{
        address::GilAddress,
        plan::{ProbePlan, ProbePoint},
    },
    lock::plan::LockProbe,
    probe::{
        calibrate::FIRST_CALIBRATION_SLOT,
        cost::{Hits, TrapCosts, TrapKind},
        cpu_time::CpuTime,
        preflight,
        site::{self, FileKey},
    },
};

/// The kernel programs, built by observer/build.rs and embedded in the binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Loaded and attached probes. Dropping this detaches and unloads everything.
pub struct Attached {
    pub ebpf: Ebpf,
    /// What is attached now (empty while duty cycling has the probes off), to detach it again.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// The GIL plan's probes (none in a lock-only run), attached again after duty cycling.
    points: Vec<ProbePoint>,
    pid: NonZeroU32,
    /// One trap counter per probed instruction (and per uretprobe's returns): slot = index.
    counters: Vec<Counter>,
    /// What a trap of each kind costs here (calibrated at load).
    pub costs: TrapCosts,
    /// The target's CPU time just before its first probe went in (the unobserved baseline's end).
    pub cpu_before_attach: Option<CpuTime>,
    /// The lock probes (attached for the whole run), kept here to be removed with the rest.
    lock_links: Vec<(&'static str, UProbeLinkId)>,
}

/// What a run measures, which decides the size of the kernel maps: every map the object
/// declares is created when it loads, so the ones a run does not use get one entry.
#[derive(Clone, Copy, Debug)]
pub struct MapNeeds {
    /// The GIL's per-thread maps (everything but a lock-only run).
    pub gil: bool,
    /// `--lock`, `--lock-fns`, `--mutexes`.
    pub locks: bool,
    /// `--mutexes`: call-site stacks.
    pub call_sites: bool,
    /// Blame's stack and (thread, stack) maps (not with --no-blame or where blame cannot run).
    pub blame: bool,
}

impl MapNeeds {
    /// No measuring maps at all (calibration, `doctor`).
    pub const NONE: MapNeeds = MapNeeds {
        gil: false,
        locks: false,
        call_sites: false,
        blame: false,
    };
}

const GIL_MAPS: &[&str] = &[map::STATS, map::THREADS];
const LOCK_MAPS: &[&str] = &[
    map::MUTEX_STATS,
    map::MUTEX_COUNTS,
    map::MUTEX_HELD,
    map::MUTEX_PENDING,
    map::MUTEX_WATCH,
];
const CALL_SITE_MAPS: &[&str] = &[map::MUTEX_STACKS, map::MUTEX_SITES];
const BLAME_MAPS: &[&str] = &[
    map::BLAME_STACKS,
    map::BLAME_HOLDS,
    map::BLAME_WAITS,
    map::BLAME_WAITING,
];

/// Test and debugging knob: `NAME=ENTRIES,…` overrides the capacity of kernel maps by name (for
/// example `THREADS=2`), so that a full map can be provoked on purpose.
pub const MAP_ENTRIES_ENV: &str = "GILWATCH_DEBUG_MAP_ENTRIES";

fn map_sizes(needs: MapNeeds) -> Vec<(String, u32)> {
    let mut sizes: Vec<(String, u32)> = Vec::new();
    let mut shrink = |names: &[&str], needed: bool| {
        if !needed {
            sizes.extend(names.iter().map(|n| ((*n).to_owned(), 1)));
        }
    };
    shrink(GIL_MAPS, needs.gil);
    shrink(LOCK_MAPS, needs.locks);
    shrink(CALL_SITE_MAPS, needs.call_sites);
    shrink(BLAME_MAPS, needs.blame);
    if let Ok(spec) = std::env::var(MAP_ENTRIES_ENV) {
        for (name, n) in spec
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse::<u32>().ok()?)))
        {
            if !map::ALL.contains(&name.as_str()) {
                eprintln!("gilwatch: {MAP_ENTRIES_ENV}: no kernel map is named {name}");
            }
            sizes.retain(|(k, _)| *k != name);
            sizes.push((name, n.max(1)));
        }
    }
    sizes
}

/// Kernel memory held by this process's BPF maps: the sum of what the kernel charges each of
/// them (`memlock` in /proc/self/fdinfo; for maps that allocate as used, what they hold now).
pub fn kernel_memory_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // Map fds only (programs have a memlock line too); one map may have several fds.
        let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        if seen.insert(id) {
            total += bytes;
        }
    }
    total
}

/// A probed instruction: its file, the attach offset, and whether it counts uretprobe returns.
type SiteKey = (FileKey, u64, bool);

/// One probe as the counters see it.
struct Probed {
    object: PathBuf,
    entry: u64,
    offset: u64,
    program: &'static str,
    site: Option<site::Site>,
}

/// A `site_hit`/`site_return_hit` program on one probed instruction, counting its traps.
struct Counter {
    key: SiteKey,
    object: PathBuf,
    file_offset: u64,
    /// None: a uretprobe's returns.
    kind: Option<TrapKind>,
    /// Follows the GIL probes through duty cycling (lock probes stay attached).
    duty_cycled: bool,
    link: Option<UProbeLinkId>,
}

/// Loads the embedded BPF object (nothing attached), its maps sized for what the run needs.
pub fn load_object(needs: MapNeeds) -> anyhow::Result<Ebpf> {
    let sizes = map_sizes(needs);
    // EbpfLoader::new() reads and parses the kernel's BTF (several MB) once; Ebpf::load, or
    // another Btf::from_sys_fs here, would do it again (a third of the attach time with 1000
    // threads on a busy machine, bench).
    let mut loader = EbpfLoader::new();
    for (name, n) in &sizes {
        loader.map_max_entries(name, *n);
    }
    loader.load(BPF_OBJECT).map_err(|e| {
        if is_permission_denied(&e) {
            refused("creating the eBPF maps", &e)
        } else {
            anyhow!(e).context("loading gilwatch's eBPF object")
        }
    })
}

/// Loads the trap-counting programs into a loaded object.
pub fn load_counters(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for name in [program::SITE_HIT, program::SITE_RETURN_HIT] {
        load_uprobe(ebpf, name)?;
    }
    Ok(())
}

/// The counting program for a site's traps, or for a uretprobe's returns.
fn counter_program(is_return: bool) -> &'static str {
    if is_return {
        program::SITE_RETURN_HIT
    } else {
        program::SITE_HIT
    }
}

/// Attaches a counting program with its slot as cookie, for `pid` only.
pub fn attach_counter(
    ebpf: &mut Ebpf,
    is_return: bool,
    slot: u32,
    object: &Path,
    file_offset: u64,
    pid: NonZeroU32,
) -> anyhow::Result<UProbeLinkId> {
    let at = UprobeAt {
        program: counter_program(is_return),
        symbol: "a probe site",
        object,
        file_offset,
        cookie: Some(u64::from(slot)),
    };
    attach_uprobe(ebpf, &at, pid)
}

/// One uprobe: `program` at `file_offset` in `object`, with `cookie` for the program to read;
/// `symbol` names the place in messages.
pub struct UprobeAt<'a> {
    pub program: &'static str,
    pub symbol: &'a str,
    pub object: &'a Path,
    pub file_offset: u64,
    pub cookie: Option<u64>,
}

impl<'a> From<&'a ProbePoint> for UprobeAt<'a> {
    fn from(p: &'a ProbePoint) -> Self {
        UprobeAt {
            program: p.program,
            symbol: &p.symbol,
            object: &p.object,
            file_offset: p.attach_offset(),
            cookie: None,
        }
    }
}

impl<'a> From<&'a LockProbe> for UprobeAt<'a> {
    fn from(p: &'a LockProbe) -> Self {
        UprobeAt {
            program: p.program,
            symbol: &p.symbol,
            object: &p.open_path,
            file_offset: p.attach_offset(),
            cookie: p.cookie,
        }
    }
}

/// Loads a uprobe program, unless it is loaded already (several probes share one program).
pub fn load_uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    let prog = uprobe(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| {
            program_error(
                e,
                "loading the eBPF programs",
                format!("loading BPF program {name} (verifier)"),
            )
        })?;
    }
    Ok(prog)
}

/// Attaches one uprobe for `pid` only, loading its program the first time.
pub fn attach_uprobe(
    ebpf: &mut Ebpf,
    at: &UprobeAt<'_>,
    pid: NonZeroU32,
) -> anyhow::Result<UProbeLinkId> {
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(at.file_offset),
        cookie: at.cookie,
    };
    load_uprobe(ebpf, at.program)?
        .attach(point, at.object, UProbeScope::OneProcess(pid))
        .map_err(|e| {
            program_error(
                e,
                "opening a uprobe perf event",
                format!(
                    "attaching {} to {} in {}",
                    at.program,
                    at.symbol,
                    at.object.display()
                ),
            )
        })
}

/// Loads a raw tracepoint program and attaches it to `tracepoint`; the link lives as long as
/// the object.
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> anyhow::Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a raw tracepoint program"))?;
    prog.load().map_err(|e| {
        program_error(
            e,
            "loading the eBPF programs",
            format!("loading BPF program {name} (verifier)"),
        )
    })?;
    prog.attach(tracepoint).map_err(|e| {
        program_error(
            e,
            "attaching a raw tracepoint",
            format!("attaching {name} to the {tracepoint} tracepoint"),
        )
    })?;
    Ok(())
}

/// Loads the BPF object for a run on `pid`, nothing attached yet: maps sized for `needs`, the
/// trap counters loaded and their costs calibrated. A lock-only run attaches its own probes on
/// it (`lock::attach`); a GIL run goes through [`attach`].
pub fn load(pid: u32, needs: MapNeeds) -> anyhow::Result<Attached> {
    let mut ebpf = load_object(needs)?;
    let pid = NonZeroU32::new(pid).ok_or_else(|| anyhow!("PID 0 cannot be observed"))?;
    load_counters(&mut ebpf)?;
    let costs = crate::probe::calibrate::run(&mut ebpf).unwrap_or_else(|e| {
        eprintln!("gilwatch: trap costs not measured ({e:#}): using the assumed figures");
        TrapCosts::ASSUMED
    });
    Ok(Attached {
        ebpf,
        links: Vec::new(),
        points: Vec::new(),
        pid,
        counters: Vec::new(),
        costs,
        // Nothing is attached yet: a lock-only run's probes all go in after this.
        cpu_before_attach: CpuTime::read(pid.get()).ok(),
        lock_links: Vec::new(),
    })
}

/// Loads the BPF object and attaches the GIL plan's probes.
pub fn attach(plan: &ProbePlan, pid: u32, needs: MapNeeds) -> anyhow::Result<Attached> {
    let mut attached = load(pid, needs)?;
    attached.attach_plan(plan)?;
    Ok(attached)
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a uprobe program"))
}

impl Attached {
    /// Loads the GIL plan's programs and attaches its probes, with their trap counters.
    fn attach_plan(&mut self, plan: &ProbePlan) -> anyhow::Result<()> {
        self.points = plan.points.clone();
        let sites: Vec<Probed> = plan
            .points
            .iter()
            .map(|p| Probed {
                object: p.object.clone(),
                entry: p.file_offset,
                offset: p.attach_offset(),
                program: p.program,
                site: p.site.clone(),
            })
            .collect();
        self.add_counters(&sites, true);
        self.cpu_before_attach = CpuTime::read(self.pid.get()).ok();
        // Every program loaded (through the verifier) before the first probe goes in.
        for point in &plan.points {
            load_uprobe(&mut self.ebpf, point.program)?;
        }
        self.attach_all()
    }

    /// Attaches every point of the plan (the programs are loaded already).
    pub fn attach_all(&mut self) -> anyhow::Result<()> {
        crate::handoff::forget_last_drop(&mut self.ebpf)?;
        for point in &self.points {
            let link = attach_uprobe(&mut self.ebpf, &UprobeAt::from(point), self.pid)?;
            self.links.push((point.program, link));
        }
        self.attach_counters(true)
    }

    /// Registers trap counters for probes (deduplicated by site), attaching those that are not
    /// duty-cycled now.
    fn add_counters(&mut self, sites: &[Probed], duty_cycled: bool) {
        for p in sites {
            let is_return = site::needs(p.program).is_some_and(|n| n.is_return);
            let file = FileKey::of(&p.object);
            let (file_offset, kind) = if is_return {
                (p.entry, None)
            } else {
                let kind = p.site.as_ref().map_or(TrapKind::SingleStepped, |s| s.trap);
                (p.offset, Some(kind))
            };
            let key = (file, file_offset, is_return);
            if self
                .counters
                .iter()
                .any(|c| c.key == key && c.duty_cycled == duty_cycled)
            {
                continue;
            }
            if self.counters.len() >= FIRST_CALIBRATION_SLOT as usize {
                eprintln!(
                    "gilwatch: more than {FIRST_CALIBRATION_SLOT} probe sites: traps beyond are not counted"
                );
                return;
            }
            self.counters.push(Counter {
                key,
                object: p.object.clone(),
                file_offset,
                kind,
                duty_cycled,
                link: None,
            });
        }
    }

    /// Attaches the counters of one group (duty-cycled or permanent) not attached yet.
    fn attach_counters(&mut self, duty_cycled: bool) -> anyhow::Result<()> {
        for slot in 0..self.counters.len() {
            let c = &self.counters[slot];
            if c.duty_cycled != duty_cycled || c.link.is_some() {
                continue;
            }
            let link = attach_counter(
                &mut self.ebpf,
                c.kind.is_none(),
                slot as u32,
                &c.object.clone(),
                c.file_offset,
                self.pid,
            )?;
            self.counters[slot].link = Some(link);
        }
        Ok(())
    }

    /// Counts the traps of the lock probes too (attached for the whole run).
    pub fn count_lock_sites(&mut self, probes: &[LockProbe]) -> anyhow::Result<()> {
        let sites: Vec<Probed> = probes
            .iter()
            .map(|p| Probed {
                object: p.open_path.clone(),
                entry: p.file_offset,
                offset: p.attach_offset(),
                program: p.program,
                site: p.site.clone(),
            })
            .collect();
        self.add_counters(&sites, false);
        self.attach_counters(false)
    }

    /// Removes every probe, keeping the maps (duty cycling's off window). Per-thread state is
    /// forgotten: a span that began before the window must not be measured across it.
    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        let links = std::mem::take(&mut self.links);
        self.remove_side_by_side(links, true)?;
        let mut threads: BpfHashMap<&mut MapData, u32, ThreadGilState> = BpfHashMap::try_from(
            self.ebpf
                .map_mut(map::THREADS)
                .context("THREADS map missing")?,
        )?;
        let tids: Vec<u32> = threads.keys().filter_map(Result::ok).collect();
        for tid in tids {
            // Gone already (an exited thread, forgotten meanwhile) is fine.
            let _ = threads.remove(&tid);
        }
        Ok(())
    }

    /// Removes uprobe links, and the trap counters of the duty-cycled probes (or of every probe,
    /// `all_counters`). Each uprobe's removal waits for the kernel's grace periods (hundreds of
    /// ms on a busy machine) with the remaining probes still trapping meanwhile; removed side by
    /// side, the waits overlap (at exit: 21 probes one by one took 6 s under load).
    fn remove_side_by_side(
        &mut self,
        links: Vec<(&'static str, UProbeLinkId)>,
        duty_cycled_counters_only: bool,
    ) -> anyhow::Result<()> {
        let mut owned = Vec::new();
        for (name, link) in links {
            owned.push(
                uprobe(&mut self.ebpf, name)?
                    .take_link(link)
                    .with_context(|| format!("detaching {name}"))?,
            );
        }
        for slot in 0..self.counters.len() {
            if duty_cycled_counters_only && !self.counters[slot].duty_cycled {
                continue;
            }
            if let Some(link) = self.counters[slot].link.take() {
                let name = counter_program(self.counters[slot].kind.is_none());
                owned.push(
                    uprobe(&mut self.ebpf, name)?
                        .take_link(link)
                        .with_context(|| format!("detaching {name}"))?,
                );
            }
        }
        std::thread::scope(|s| {
            for link in owned {
                s.spawn(move || drop(link));
            }
        });
        Ok(())
    }

    /// Keeps the lock probes' links, so that they are removed with the GIL's at the end.
    pub fn keep_lock_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        self.lock_links.extend(links);
    }

    /// Frees the numbers of threads that exited, once the exporter has folded them into its
    /// totals: over days, a process that starts threads would otherwise fill STATS.
    pub fn forget_stats(&mut self, tids: &[u32]) -> anyhow::Result<()> {
        let mut stats: BpfHashMap<&mut MapData, StatKey, observer_common::Histogram> =
            BpfHashMap::try_from(self.ebpf.map_mut(map::STATS).context("STATS map missing")?)?;
        for &tid in tids {
            for kind in [StatKind::Wait, StatKind::Hold] {
                let _ = stats.remove(&StatKey {
                    tid,
                    kind: kind as u32,
                });
            }
        }
        Ok(())
    }

    /// Forgets the per-thread state of threads that exited (their numbers stay in STATS): the
    /// map is not LRU, so nothing else removes them, and it would fill with the dead.
    pub fn forget_exited_threads(&mut self) -> anyhow::Result<()> {
        let mut threads: BpfHashMap<&mut MapData, u32, ThreadGilState> = BpfHashMap::try_from(
            self.ebpf
                .map_mut(map::THREADS)
                .context("THREADS map missing")?,
        )?;
        // Keys first, then the live threads: a thread that starts in between is in the second
        // list, so it is never taken for an exited one.
        let tids: Vec<u32> = threads.keys().filter_map(Result::ok).collect();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Ok(()); // the target is gone: nothing to keep apart
        };
        let live: HashSet<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        for tid in tids.into_iter().filter(|t| !live.contains(t)) {
            let _ = threads.remove(&tid);
        }
        Ok(())
    }

    pub fn is_attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Probe traps taken so far, by kind, summed over CPUs. A site with two counters (GIL and
    /// lock probes on one instruction) counts once: the larger count, the one attached longer.
    pub fn hits(&self) -> anyhow::Result<Hits> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(map::SITE_HITS)
                .context("SITE_HITS map missing")?,
        )?;
        let mut per_site: Vec<(&SiteKey, Option<TrapKind>, u64)> = Vec::new();
        for (slot, c) in self.counters.iter().enumerate() {
            let n: u64 = map
                .get(&(slot as u32), 0)
                .context("reading the SITE_HITS map")?
                .iter()
                .sum();
            match per_site.iter_mut().find(|(k, _, _)| **k == c.key) {
                Some(s) => s.2 = s.2.max(n),
                None => per_site.push((&c.key, c.kind, n)),
            }
        }
        let mut hits = Hits::default();
        for (_, kind, n) in per_site {
            match kind {
                Some(k) => hits.add(k, n),
                None => hits.returns += n,
            }
        }
        (hits.blame_walks, hits.blame_walk_ns) = crate::blame::walk_cost(&self.ebpf);
        Ok(hits)
    }

    /// Tells the symbol-free strategy's kernel programs where the GIL is.
    pub fn set_gil_address(&mut self, gil: &GilAddress) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut(map::GIL_ADDRS)
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
        crate::handoff::set_gil_locked(&mut self.ebpf, gil.addr + l.locked)
    }
}

impl Drop for Attached {
    /// Every probe in the target goes at once, side by side, rather than one by one as the BPF
    /// object's programs drop (what is left, the programs and maps, goes with the object).
    fn drop(&mut self) {
        let mut links = std::mem::take(&mut self.links);
        links.append(&mut self.lock_links);
        if let Err(e) = self.remove_side_by_side(links, false) {
            // The object's own drop still closes whatever is left: nothing stays attached.
            eprintln!("gilwatch: removing the probes: {e:#}");
        }
    }
}

/// A program's load or attach failed: refused by the kernel (`what` it refused, and the fix),
/// or `context` for anything else.
fn program_error(e: ProgramError, what: &str, context: String) -> anyhow::Error {
    if is_permission_denied(&e) {
        refused(what, &e)
    } else {
        anyhow!(e).context(context)
    }
}

/// The kernel said EPERM/EACCES to `what`: which capabilities this process lacks, and the fix.
pub fn refused(what: &str, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let errno = match os_errno(e) {
        Some(libc::EACCES) => "EACCES",
        _ => "EPERM",
    };
    let missing = preflight::missing_for_probes();
    let lacking = if missing.is_empty() {
        "without CAP_SYS_ADMIN".to_owned()
    } else {
        format!("missing {}", missing.join(", "))
    };
    user(
        Exit::Privileges,
        format!(
            "the kernel refused {what} ({errno}, {lacking}): {}",
            preflight::HOW_TO_GRANT
        ),
    )
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::*;

    /// The embedded object's programs (name, section) and maps: aya's view of it, global
    /// functions outside `.text` (helpers live there) and the statics of its maps section.
    fn contents() -> (Vec<(String, String)>, Vec<String>) {
        let elf = object::File::parse(BPF_OBJECT).expect("the embedded BPF object is ELF");
        let (mut programs, mut maps) = (Vec::new(), Vec::new());
        for sym in elf.symbols().filter(|s| s.is_global()) {
            let Some(section) = sym
                .section_index()
                .and_then(|i| elf.section_by_index(i).ok())
            else {
                continue;
            };
            let (name, section) = (sym.name().unwrap(), section.name().unwrap());
            match sym.kind() {
                SymbolKind::Text if section != ".text" => {
                    programs.push((name.to_owned(), section.to_owned()))
                }
                SymbolKind::Data if matches!(section, "maps" | ".maps") => {
                    maps.push(name.to_owned())
                }
                _ => {}
            }
        }
        (programs, maps)
    }

    /// What is in one list and not the other, both ways.
    fn differences(constants: &[&str], object: &[&str]) -> (Vec<String>, Vec<String>) {
        let missing = constants.iter().filter(|c| !object.contains(c));
        let unnamed = object.iter().filter(|o| !constants.contains(o));
        (
            missing.map(|s| s.to_string()).collect(),
            unnamed.map(|s| s.to_string()).collect(),
        )
    }

    /// Constants of one kind (`what`: programs or maps) and what the BPF object has are the
    /// same set, both ways.
    fn assert_same_names(what: &str, constants: &[&str], found: &[&str]) {
        let (missing, unnamed) = differences(constants, found);
        assert!(
            missing.is_empty(),
            "observer-common names {what} the BPF object lacks (renamed in observer-ebpf?): {missing:?}"
        );
        assert!(
            unnamed.is_empty(),
            "the BPF object has {what} observer-common/src/names.rs does not name: {unnamed:?}"
        );
    }

    #[test]
    fn every_program_is_named_by_a_constant_and_every_constant_is_a_program() {
        let (programs, _) = contents();
        let names: Vec<&str> = programs.iter().map(|(n, _)| n.as_str()).collect();
        assert_same_names("programs", program::ALL, &names);
    }

    #[test]
    fn every_map_is_named_by_a_constant_and_every_constant_is_a_map() {
        let (_, maps) = contents();
        let names: Vec<&str> = maps.iter().map(String::as_str).collect();
        assert_same_names("maps", map::ALL, &names);
    }

    /// The site chooser (probe/site.rs `needs`) knows what every planned program reads, and
    /// takes for uretprobes exactly the programs the kernel crate made uretprobes: a uretprobe
    /// must stay at its function's entry.
    #[test]
    fn the_site_chooser_knows_every_planned_program() {
        let (programs, _) = contents();
        for (name, section) in &programs {
            if !matches!(section.as_str(), "uprobe" | "uretprobe")
                || [program::SITE_HIT, program::SITE_RETURN_HIT].contains(&name.as_str())
            {
                continue;
            }
            let needs = site::needs(name)
                .unwrap_or_else(|| panic!("probe/site.rs `needs` does not declare {name}"));
            assert_eq!(
                needs.is_return,
                section == "uretprobe",
                "{name} is in section {section}"
            );
        }
    }

    /// The programs attached by a fixed name (not from a plan) are of the kind their attach
    /// code converts them to: the trap counters, and the futex tracepoints (lock/attach.rs).
    #[test]
    fn fixed_programs_have_the_kind_they_are_attached_as() {
        let (programs, _) = contents();
        let section = |name: &str| {
            programs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.as_str())
        };
        assert_eq!(section(program::SITE_HIT), Some("uprobe"));
        assert_eq!(section(program::SITE_RETURN_HIT), Some("uretprobe"));
        assert_eq!(section(program::MUTEX_FUTEX), Some("raw_tp/sys_enter"));
        assert_eq!(section(program::MUTEX_FUTEX_EXIT), Some("raw_tp/sys_exit"));
    }
}
