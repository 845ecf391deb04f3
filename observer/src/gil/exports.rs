//! Step 2b: take_gil in a build with no symbols at all, found through the exported functions
//! that call it, by disassembly (the `exports` strategy).
//!
//! Stripped PGO+LTO builds (Debian's, Ubuntu's) keep take_gil out of line but inline drop_gil
//! into every caller. What every GIL build 3.9+ still shows:
//! - `PyEval_RestoreThread(tstate)` calls `take_gil(tstate)` (directly up to 3.11, through the
//!   inlined `_PyThreadState_Attach` → `_PyEval_AcquireLock` from 3.12), and take_gil is the one
//!   callee that calls libc's `pthread_mutex_lock`, `pthread_cond_timedwait` (the GIL wait) and
//!   `pthread_cond_signal` (the switch condition).
//! - Every drop_gil, inlined or not, calls `pthread_cond_signal(&gil->cond)`. We check that
//!   `PyEval_SaveThread` does (itself, or a function it calls): with the GIL's address as an
//!   immediate where the GIL sits in `_PyRuntime` (3.8–3.11), or at the GIL layout's `cond`
//!   offset from the register holding the GIL (3.12+, where each interpreter points at its own).
//!   This ties the route to the GIL that gil/address.rs finds and validates in the live process.
//!
//! The route gives take_gil's entry; where on it the probe goes is the site pass's choice
//! (probe/site.rs), as for every other probe.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget};

use crate::{gil::address::GilLayout, object::elf::file_offset};

/// A located take_gil and how the drop is marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// take_gil's entry (ELF virtual address).
    pub take_gil: u64,
    /// The same entry as a file offset: what its probe is planned on.
    pub take_gil_offset: u64,
    /// The exported function whose call led to take_gil.
    pub found_via: &'static str,
    /// How the drop's `pthread_cond_signal(&gil->cond)` was recognised, for `doctor`.
    pub drop_evidence: String,
    pub drop: DropMarker,
}

/// Where the drop probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropMarker {
    /// Every direct call (or tail jump) to pthread_cond_signal in the interpreter that is not
    /// known to signal `switch_cond`: (virtual address, file offset). A `call rel32` is emulated,
    /// and take_gil's own signal of `switch_cond` stays unprobed, so a cycle costs two traps.
    CallSites(Vec<(u64, u64)>),
    /// libc's pthread_cond_signal entry, where the interpreter calls it indirectly (`-fno-plt`):
    /// take_gil's `switch_cond` signal then costs a third trap per cycle.
    LibcEntry,
}

/// Why the route was not found: said by `doctor` and when `--strategy exports` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound(pub String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the main interpreter's GIL sits at link time, when the code names it as an address
/// (3.8–3.11: inside `_PyRuntime`); None where code reaches it through a pointer (3.12+).
pub fn static_gil(elf: &object::File<'_>, runtime_offset: Option<u64>) -> Option<u64> {
    let runtime = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("_PyRuntime"))?
        .address();
    Some(runtime + runtime_offset?)
}

/// Finds take_gil through `PyEval_RestoreThread` and checks the drop marker in
/// `PyEval_SaveThread`. `gil_at`: the GIL's link-time address where the code names it.
pub fn locate(
    elf: &object::File<'_>,
    layout: &GilLayout,
    gil_at: Option<u64>,
) -> Result<Route, NotFound> {
    let code = Code::new(elf)?;
    let export = |name: &str| {
        elf.dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.address() != 0)
            .map(|s| s.address())
            .ok_or_else(|| NotFound(format!("{name} is not exported")))
    };
    let restore = export("PyEval_RestoreThread")?;
    let save = export("PyEval_SaveThread")?;

    // take_gil: the first function below PyEval_RestoreThread (breadth first: LTO builds call
    // it directly, others through _PyThreadState_Attach and _PyEval_AcquireLock) that locks a
    // mutex, waits on a condition and signals one.
    let take = code.below(restore, false, |_, walk| {
        let libc = walk.libc_names(&code);
        [
            "pthread_mutex_lock",
            "pthread_cond_timedwait",
            "pthread_cond_signal",
        ]
        .iter()
        .all(|n| libc.contains(n))
        .then_some(())
    });
    let (take, ()) = take.ok_or_else(|| {
        NotFound(
            "no function called by PyEval_RestoreThread locks, waits on and signals a pthread \
             condition (take_gil inlined, or a layout gilwatch does not know)"
                .to_owned(),
        )
    })?;

    // The drop: pthread_cond_signal(&gil->cond) in PyEval_SaveThread or one call below it.
    let is_gil_cond = |arg: &Rdi| match *arg {
        Rdi::Address(a) => gil_at.is_some_and(|g| a == g + layout.cond),
        Rdi::Offset(d) => gil_at.is_none() && d == layout.cond,
        Rdi::Unknown => false,
    };
    let evidence = code.below(save, true, |f, walk| {
        let (at, arg) = walk
            .signals(&code)
            .into_iter()
            .find(|(_, arg)| is_gil_cond(arg))?;
        Some(if f == save {
            format!("PyEval_SaveThread signals {arg} at {at:#x}")
        } else {
            format!("{f:#x} (below PyEval_SaveThread) signals {arg} at {at:#x}")
        })
    });
    let drop_evidence = evidence.map(|(_, e)| e).ok_or_else(|| {
        NotFound(match gil_at {
            Some(g) => format!(
                "PyEval_SaveThread does not signal the GIL's condition variable at {:#x}",
                g + layout.cond
            ),
            None => format!(
                "PyEval_SaveThread does not signal a condition variable at the GIL's cond offset {:#x}",
                layout.cond
            ),
        })
    })?;

    let drop = code.drop_marker(elf, take, layout, gil_at)?;
    let take_gil_offset = file_offset(elf, take)
        .ok_or_else(|| NotFound(format!("take_gil at {take:#x} is outside the file")))?;
    Ok(Route {
        take_gil: take,
        take_gil_offset,
        found_via: "PyEval_RestoreThread",
        drop_evidence,
        drop,
    })
}

/// What rdi (the first argument) holds at a call, as far as the straight-line code before it
/// shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rdi {
    /// An absolute address (an immediate, or RIP-relative `lea`).
    Address(u64),
    /// `lea disp(%reg)`: a field at `disp` of a struct whose address is in a register.
    Offset(u64),
    Unknown,
}

impl std::fmt::Display for Rdi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rdi::Address(a) => write!(f, "{a:#x}"),
            Rdi::Offset(d) => write!(f, "{d:#x}(GIL)"),
            Rdi::Unknown => f.write_str("?"),
        }
    }
}

/// The executable sections, and the PLT stubs by the libc function they jump to.
struct Code<'a> {
    text: Vec<(u64, &'a [u8])>,
    plt: HashMap<u64, String>,
    /// GOT slots of imported functions, for calls that bypass the PLT.
    got: HashMap<u64, String>,
    /// Functions this object exports: a shared libpython calls its own exported functions
    /// through the PLT too.
    exported: HashMap<String, u64>,
}

/// The calls a bounded walk of one function met: call site → (target, rdi at the call).
struct Walk {
    calls: BTreeMap<u64, (u64, Rdi)>,
}

/// A walk follows direct jumps no further than this from the entry: LTO moves cold blocks far
/// away (.text.unlikely), into code shared with other functions' cold paths.
const WALK_SPAN: u64 = 16 * 1024;
const WALK_INSTRUCTIONS: usize = 4096;

impl<'a> Code<'a> {
    fn new(elf: &object::File<'a>) -> Result<Code<'a>, NotFound> {
        let mut text = Vec::new();
        let mut plt_sections = Vec::new();
        for s in elf.sections() {
            let Ok(name) = s.name() else { continue };
            let Ok(data) = s.data() else { continue };
            if name == ".plt" || name == ".plt.sec" {
                plt_sections.push((s.address(), data));
            }
            if matches!(s.kind(), object::SectionKind::Text) && !name.starts_with(".plt") {
                text.push((s.address(), data));
            }
        }
        // GOT slot → imported name, from the PLT's relocations.
        let mut got = HashMap::new();
        if let (Some(relocs), Some(dynsyms)) =
            (elf.dynamic_relocations(), elf.dynamic_symbol_table())
        {
            for (slot, r) in relocs {
                if let RelocationTarget::Symbol(i) = r.target()
                    && let Ok(sym) = dynsyms.symbol_by_index(i)
                    && let Ok(name) = sym.name()
                {
                    // Versioned names come bare from the table (`pthread_cond_signal`).
                    got.insert(slot, name.to_owned());
                }
            }
        }
        // Each stub jumps through its GOT slot (`jmp *slot(%rip)`, `bnd jmp` in .plt.sec).
        let mut plt = HashMap::new();
        for (base, data) in plt_sections {
            let mut d = Decoder::with_ip(64, data, base, DecoderOptions::NONE);
            let mut stub = base;
            for ins in &mut d {
                if ins.mnemonic() == Mnemonic::Endbr64 || ins.ip() % 16 == 0 {
                    stub = ins.ip();
                }
                if ins.flow_control() == FlowControl::IndirectBranch
                    && ins.is_ip_rel_memory_operand()
                    && let Some(name) = got.get(&ins.ip_rel_memory_address())
                {
                    plt.insert(stub, name.clone());
                }
            }
        }
        if plt.is_empty() {
            return Err(NotFound(
                "no PLT calls to libc found (libc linked statically?)".to_owned(),
            ));
        }
        let exported = elf
            .dynamic_symbols()
            .filter(|s| s.address() != 0 && s.kind() == object::SymbolKind::Text)
            .filter_map(|s| Some((s.name().ok()?.to_owned(), s.address())))
            .collect();
        Ok(Code {
            text,
            plt,
            got,
            exported,
        })
    }

    fn bytes_at(&self, addr: u64) -> Option<&'a [u8]> {
        self.text.iter().find_map(|(base, data)| {
            (addr >= *base && addr < base + data.len() as u64)
                .then(|| &data[(addr - base) as usize..])
        })
    }

    /// Where a call lands in this object's own code: the target itself, or the definition
    /// behind a PLT stub of one of its own exports. None for calls into other objects.
    fn local_target(&self, addr: u64) -> Option<u64> {
        match self.plt.get(&addr) {
            Some(name) => self.exported.get(name).copied(),
            None => self.bytes_at(addr).map(|_| addr),
        }
    }

    /// Decodes a function from `entry`, following direct jumps within [`WALK_SPAN`], and
    /// collects its direct calls.
    fn walk(&self, entry: u64) -> Walk {
        let mut calls = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![entry];
        let mut budget = WALK_INSTRUCTIONS;
        let info = &mut InstructionInfoFactory::new();
        while let Some(block) = todo.pop() {
            let Some(bytes) = self.bytes_at(block) else {
                continue;
            };
            let mut rdi = Rdi::Unknown;
            for ins in Decoder::with_ip(64, bytes, block, DecoderOptions::NONE) {
                if budget == 0 || ins.is_invalid() || !seen.insert(ins.ip()) {
                    break;
                }
                budget -= 1;
                let in_span = |t: u64| t.abs_diff(entry) <= WALK_SPAN;
                match ins.flow_control() {
                    FlowControl::Call => {
                        calls.insert(ins.ip(), (ins.near_branch_target(), rdi));
                        rdi = Rdi::Unknown;
                        continue;
                    }
                    FlowControl::ConditionalBranch => {
                        if in_span(ins.near_branch_target()) {
                            todo.push(ins.near_branch_target());
                        }
                    }
                    FlowControl::UnconditionalBranch => {
                        let target = ins.near_branch_target();
                        if self.is_tail_call(entry, target) {
                            calls.insert(ins.ip(), (target, rdi));
                        } else {
                            todo.push(target);
                        }
                        break;
                    }
                    FlowControl::Next | FlowControl::IndirectCall => {}
                    _ => break,
                }
                rdi = rdi_after(&ins, rdi, info);
            }
        }
        Walk { calls }
    }

    /// Where the drop probe goes: see [`DropMarker`]. Sites inside take_gil are left out
    /// unless they provably signal gil->cond (take_gil signals `switch_cond` on every take).
    fn drop_marker(
        &self,
        elf: &object::File<'_>,
        take_gil: u64,
        layout: &GilLayout,
        gil_at: Option<u64>,
    ) -> Result<DropMarker, NotFound> {
        let field = |arg: Rdi, off: u64| match arg {
            Rdi::Address(a) => gil_at.is_some_and(|g| a == g + off),
            Rdi::Offset(d) => gil_at.is_none() && d == off,
            Rdi::Unknown => false,
        };
        let in_take: BTreeSet<u64> = self.walk(take_gil).calls.keys().copied().collect();
        let mut sites = Vec::new();
        for (ip, arg, direct) in self.signal_calls() {
            if !direct {
                return Ok(DropMarker::LibcEntry);
            }
            if field(arg, layout.switch_cond) || (in_take.contains(&ip) && !field(arg, layout.cond))
            {
                continue;
            }
            let offset = file_offset(elf, ip)
                .ok_or_else(|| NotFound(format!("call site {ip:#x} is outside the file")))?;
            sites.push((ip, offset));
        }
        if sites.is_empty() {
            return Err(NotFound(
                "no call of pthread_cond_signal outside take_gil".to_owned(),
            ));
        }
        Ok(DropMarker::CallSites(sites))
    }

    /// Every call or jump to pthread_cond_signal in the object's code (a linear sweep):
    /// (address, first argument as far as known, direct through the PLT or not).
    fn signal_calls(&self) -> Vec<(u64, Rdi, bool)> {
        let info = &mut InstructionInfoFactory::new();
        let mut out = Vec::new();
        let is_signal = |name: Option<&String>| name.is_some_and(|n| n == "pthread_cond_signal");
        for (base, data) in &self.text {
            let mut rdi = Rdi::Unknown;
            for ins in Decoder::with_ip(64, data, *base, DecoderOptions::NONE) {
                let flow = ins.flow_control();
                if matches!(flow, FlowControl::Call | FlowControl::UnconditionalBranch)
                    && is_signal(self.plt.get(&ins.near_branch_target()))
                {
                    out.push((ins.ip(), rdi, true));
                }
                if matches!(
                    flow,
                    FlowControl::IndirectCall | FlowControl::IndirectBranch
                ) && ins.is_ip_rel_memory_operand()
                    && is_signal(self.got.get(&ins.ip_rel_memory_address()))
                {
                    out.push((ins.ip(), rdi, false));
                }
                rdi = if flow == FlowControl::Next {
                    rdi_after(&ins, rdi, info)
                } else {
                    Rdi::Unknown
                };
            }
        }
        out
    }

    /// The first function (breadth first, `root` itself when `with_root`, then up to three
    /// calls deep) for which `test` says yes, and what it said.
    fn below<T>(
        &self,
        root: u64,
        with_root: bool,
        mut test: impl FnMut(u64, &Walk) -> Option<T>,
    ) -> Option<(u64, T)> {
        if with_root && let Some(t) = test(root, &self.walk(root)) {
            return Some((root, t));
        }
        let mut level = vec![root];
        let mut seen = BTreeSet::from([root]);
        for _depth in 0..3 {
            let mut next = Vec::new();
            for f in level {
                for callee in self.walk(f).local_calls(self).into_iter().take(8) {
                    if !seen.insert(callee) {
                        continue;
                    }
                    if let Some(t) = test(callee, &self.walk(callee)) {
                        return Some((callee, t));
                    }
                    next.push(callee);
                }
            }
            level = next;
        }
        None
    }

    /// A `jmp` that leaves the function: backwards past its entry, far away, to an exported
    /// function, or to an `endbr64` (a function entry in CET builds).
    fn is_tail_call(&self, entry: u64, target: u64) -> bool {
        target < entry
            || target - entry > WALK_SPAN
            || self.plt.contains_key(&target)
            || self.exported.values().any(|&a| a == target)
            || self
                .bytes_at(target)
                .is_some_and(|b| b.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]))
    }
}

impl Walk {
    /// Direct calls into the object's own code (not the PLT), in address order, deduplicated.
    fn local_calls(&self, code: &Code<'_>) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for (target, _) in self.calls.values() {
            if let Some(t) = code.local_target(*target)
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }

    fn libc_names<'c>(&self, code: &'c Code<'_>) -> Vec<&'c str> {
        self.calls
            .values()
            .filter_map(|(t, _)| code.plt.get(t).map(String::as_str))
            .collect()
    }

    /// Calls of pthread_cond_signal: (call site, its first argument).
    fn signals(&self, code: &Code<'_>) -> Vec<(u64, Rdi)> {
        self.calls
            .iter()
            .filter(|(_, (t, _))| {
                code.plt.get(t).map(String::as_str) == Some("pthread_cond_signal")
            })
            .map(|(at, (_, rdi))| (*at, *rdi))
            .collect()
    }
}

fn writes_rdi(ins: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    info.info(ins).used_registers().iter().any(|u| {
        u.register().full_register() == Register::RDI
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::ReadWrite
                    | OpAccess::CondWrite
                    | OpAccess::ReadCondWrite
            )
    })
}

/// What rdi holds after `ins`, given what it held before.
fn rdi_after(ins: &Instruction, before: Rdi, info: &mut InstructionInfoFactory) -> Rdi {
    if !writes_rdi(ins, info) {
        return before;
    }
    let to_rdi = ins.op0_kind() == OpKind::Register
        && matches!(ins.op0_register(), Register::RDI | Register::EDI);
    match ins.mnemonic() {
        Mnemonic::Mov
            if to_rdi
                && matches!(
                    ins.op1_kind(),
                    OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
                ) =>
        {
            Rdi::Address(ins.immediate(1))
        }
        Mnemonic::Lea if to_rdi && ins.is_ip_rel_memory_operand() => {
            Rdi::Address(ins.ip_rel_memory_address())
        }
        Mnemonic::Lea if to_rdi && ins.memory_index() == Register::None => {
            Rdi::Offset(ins.memory_displacement64())
        }
        _ => Rdi::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use observer_common::names::program;

    use super::*;
    use crate::{
        gil::address::DEFAULT_LAYOUT,
        probe::{cost::TrapKind, site},
    };

    fn route(path: &Path, runtime_offset: Option<u64>) -> Option<Result<Route, NotFound>> {
        let data = std::fs::read(path).ok()?;
        let elf = object::File::parse(&*data).expect("an ELF file");
        let gil = static_gil(&elf, runtime_offset);
        Some(locate(&elf, &DEFAULT_LAYOUT, gil))
    }

    /// Where the site pass puts the exports plan's take_gil probe.
    fn take_site(path: &Path, r: &Route) -> site::Site {
        let mut code = site::Code::read(path).expect("the interpreter's code");
        site::choose(
            &mut code,
            r.take_gil_offset,
            &[program::TAKE_GIL_TENTATIVE_ARG0],
        )
    }

    /// Debian 12's python3.11 (3.11.2, PGO+LTO, stripped, non-PIE): take_gil is the first call
    /// of PyEval_RestoreThread, and starts with `push %r15`, where its probe stays; drop_gil is
    /// inlined into PyEval_SaveThread, which signals `_PyRuntime+0x168+0x20` by address.
    #[test]
    fn debian_python3_11() {
        let path = Path::new("/usr/bin/python3.11");
        let r = route(path, Some(0x168))
            .expect("Debian's python3.11 is on every machine of this kind")
            .expect("route");
        assert_eq!(r.take_gil, 0x4f92c0, "{r:?}");
        assert_eq!(r.take_gil_offset, 0xf92c0);
        let s = take_site(path, &r);
        assert_eq!((s.offset, s.trap), (0, TrapKind::Emulated), "{s:?}");
        assert_eq!(s.instruction, "push %r15");
        assert!(
            r.drop_evidence
                .contains("PyEval_SaveThread signals 0xa5b8c8"),
            "{r:?}"
        );
        // Eight calls of pthread_cond_signal: take_gil's two (switch_cond, through a register)
        // stay unprobed, the six others (five by the GIL's address) are probed.
        let DropMarker::CallSites(sites) = &r.drop else {
            panic!("{r:?}")
        };
        let at: Vec<u64> = sites.iter().map(|(a, _)| *a).collect();
        assert_eq!(at.len(), 6, "{at:x?}");
        assert!(at.contains(&0x527a4b), "{at:x?}");
        assert!(
            !at.contains(&0x4f9370) && !at.contains(&0x4f9423),
            "{at:x?}"
        );
    }

    /// With a wrong idea of where the GIL sits, the drop check refuses the route.
    #[test]
    fn a_wrong_gil_address_is_refused() {
        let Some(r) = route(Path::new("/usr/bin/python3.11"), Some(0x160)) else {
            panic!("Debian's python3.11 missing");
        };
        let err = r.expect_err("the GIL is at +0x168, not +0x160");
        assert!(
            err.0.contains("does not signal the GIL's condition"),
            "{err}"
        );
    }

    /// sid's 3.13/3.14/3.15 (when `cargo xtask test` has built the root): take_gil's site is
    /// after `endbr64`; 3.14's take_gil goes on with `sub` and `mov`s, so its site is the first
    /// call, which still sees the tstate in rdi. The drop signals 0x20 off the GIL pointer.
    #[test]
    fn sid_pythons() {
        let sid = Path::new("/var/lib/gilwatch-test/sid/usr/bin");
        for (minor, take, site, insn, save_signal, switch_signals) in [
            (
                13,
                0x56d520,
                0x56d524,
                "push %r15",
                0x5b24a3,
                [0x56d5ce, 0x56d6d2],
            ),
            (
                14,
                0x540620,
                0x540638,
                "call 0x4235e0",
                0x5881ec,
                [0x5406b7, 0x5408a8],
            ),
            (
                15,
                0x568e00,
                0x568e04,
                "push %rbp",
                0x5ba594,
                [0x568e93, 0x568f73],
            ),
        ] {
            let path = sid.join(format!("python3.{minor}"));
            let Some(r) = route(&path, None) else {
                eprintln!("{} missing: skipped", path.display());
                continue;
            };
            let r = r.unwrap_or_else(|e| panic!("3.{minor}: {e}"));
            assert_eq!(r.take_gil, take, "3.{minor}: {r:?}");
            let s = take_site(&path, &r);
            assert_eq!(
                (take + s.offset, s.trap),
                (site, TrapKind::Emulated),
                "3.{minor}: {s:?}"
            );
            assert_eq!(s.instruction, insn, "3.{minor}: {s:?}");
            assert!(
                r.drop_evidence.contains("signals 0x20(GIL)"),
                "3.{minor}: {r:?}"
            );
            let DropMarker::CallSites(sites) = &r.drop else {
                panic!("3.{minor}: {r:?}")
            };
            let at: Vec<u64> = sites.iter().map(|(a, _)| *a).collect();
            assert!(at.contains(&save_signal), "3.{minor}: {at:x?}");
            assert!(
                switch_signals.iter().all(|s| !at.contains(s)),
                "3.{minor}: {at:x?}"
            );
        }
    }

    /// A pyenv build's libpython has symbols: the route found by disassembly must be the
    /// take_gil its symbol table names. (pyenv's 3.11 is refused: its out-of-line drop_gil
    /// reaches the GIL through `ceval`, not by the address the check wants.)
    #[test]
    fn agrees_with_the_symbol_table() {
        for (ver, runtime_offset) in [("3.12.1", None), ("3.13.0", None)] {
            let lib = format!(
                "/root/.pyenv/versions/{ver}/lib/libpython{}.so.1.0",
                &ver[..ver.rfind('.').expect("x.y.z")]
            );
            let Ok(data) = std::fs::read(&lib) else {
                eprintln!("{lib} missing: skipped");
                continue;
            };
            let elf = object::File::parse(&*data).expect("ELF");
            let syms = crate::gil::symbols::find_gil_functions(&elf, &elf);
            let r = locate(&elf, &DEFAULT_LAYOUT, static_gil(&elf, runtime_offset))
                .unwrap_or_else(|e| panic!("{ver}: {e}"));
            assert!(
                syms.take.iter().any(|f| f.address == r.take_gil),
                "{ver}: {r:?} vs {:?}",
                syms.take
            );
        }
    }
}
