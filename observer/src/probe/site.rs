//! Where in a function a probe goes: the first instruction, along the path every call takes,
//! that the kernel emulates rather than single-steps.
//!
//! A uprobe replaces an instruction with a breakpoint. On a hit the kernel either emulates the
//! instruction (x86-64, arch/x86/kernel/uprobes.c of Linux 6.18: `branch_setup_xol_ops` takes
//! `nop` and the canonical multi-byte nops, `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32`
//! without a 0x66 prefix; `push_setup_xol_ops` takes `push %reg` and `push %r8`–`%r15` with
//! exactly the 0x41 REX prefix) or copies it out of line and single-steps it, which costs a second
//! exception and, on a VM, some 30 times more (probe/cost.rs). A function whose first instruction
//! is, say, `mov 0x10(%rdi),%eax` often reaches an emulated one a few bytes later.
//!
//! A later instruction is as good as the entry for a program when: every call reaches it (no
//! branch before it, unless it is that branch), nothing else jumps into the stretch between (the
//! site must run once per call), and the registers the program reads ([`needs`]) still hold what
//! they held at the entry. uretprobes stay at the entry (the return address is on top of the
//! stack there only), and so do the entry programs of a function that has one: they share its
//! trap, and moving them would add a second.
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter as _, GasFormatter, Instruction,
    InstructionInfoFactory, OpAccess, Register,
};
use object::{Object as _, ObjectSection as _, SectionKind};
use observer_common::names::program;
use serde::Serialize;

use crate::{gil::plan::ProbePoint, lock::plan::LockProbe, probe::cost::TrapKind};

/// How far past the entry a site is looked for.
const MAX_INSTRUCTIONS: usize = 24;

/// Where a probe goes, relative to its function's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Bytes past the function's first instruction.
    pub offset: u64,
    /// The instruction there (AT&T syntax).
    pub instruction: String,
    pub trap: TrapKind,
    /// Why this site: for `gilwatch doctor` and the report.
    pub why: String,
}

/// What a kernel program reads when its probe fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Registers (64-bit names) that must still hold the call's arguments.
    pub registers: &'static [Register],
    /// Reads the return address at [rsp] (call-site stacks): %rsp must not move.
    pub return_address: bool,
    /// A uretprobe: at the entry, always.
    pub is_return: bool,
    /// The program tolerates running twice for one call (a loop back to before its site is
    /// harmless): a later site may then be one a branch lands before.
    pub repeatable: bool,
}

const ARG0: &[Register] = &[Register::RDI];
const ARG1: &[Register] = &[Register::RSI];
const ALL_ARGS: &[Register] = &[
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// What each kernel program (observer-ebpf) reads: the one place this is declared. A program
/// not listed stays at its function's entry.
pub fn needs(name: &str) -> Option<Needs> {
    let n = |registers, return_address| Needs {
        repeatable: false,
        registers,
        return_address,
        is_return: false,
    };
    Some(match name {
        program::TAKE_GIL_ENTER_ARG0 | program::TAKE_GIL_TENTATIVE_ARG0 => n(ARG0, false),
        program::TAKE_GIL_ENTER_ARG1 | program::TAKE_GIL_TENTATIVE_ARG1 => n(ARG1, false),
        program::DROP_GIL_ENTER => n(&[], false),
        program::GIL_MUTEX_LOCK
        | program::GIL_COND_SIGNAL
        | program::GIL_COND_SIGNAL_DROP
        | program::GIL_COND_WAIT_ENTER => n(ARG0, false),
        // With --mutexes they read the caller at [rsp] and walk the stack from there.
        program::MUTEX_LOCK_ENTER
        | program::MUTEX_TRYLOCK_ENTER
        | program::MUTEX_TIMEDLOCK_ENTER => n(ARG0, true),
        program::MUTEX_UNLOCK_ENTER => n(ARG0, false),
        program::COND_WAIT_ENTER => n(ARG1, false),
        // The attach cookie says which argument: any of them.
        program::LOCKFN_ACQUIRE_ENTER => n(ALL_ARGS, true),
        program::LOCKFN_RELEASE_ENTER => n(ALL_ARGS, false),
        // The semaphore: the first argument (the cookie is not a register). A second run for
        // the same call finds its work done (pylock.rs): glibc's sem_trywait and sem_post loop
        // back over their first branch when their compare-and-swap loses a race.
        program::PYLOCK_ACQUIRE_ENTER | program::PYLOCK_RELEASE_ENTER => Needs {
            repeatable: true,
            ..n(ARG0, false)
        },
        program::TAKE_GIL_RETURN
        | program::GIL_COND_WAIT_RETURN
        | program::MUTEX_LOCK_RETURN
        | program::LOCKFN_ACQUIRE_RETURN
        | program::PYLOCK_ACQUIRE_RETURN => Needs {
            repeatable: false,
            registers: &[],
            return_address: true,
            is_return: true,
        },
        _ => return None,
    })
}

/// The pass between planning and attaching: places every probe of the GIL plan and of the lock
/// plan together (a function both probe gets one site, so one trap).
pub fn apply(gil: &mut [ProbePoint], locks: &mut [LockProbe]) {
    let requests: Vec<Request> = gil
        .iter()
        .map(|p| Request {
            program: p.program,
            object: p.object.clone(),
            entry: p.file_offset,
        })
        .chain(locks.iter().map(|p| Request {
            program: p.program,
            object: p.open_path.clone(),
            entry: p.file_offset,
        }))
        .collect();
    let mut sites = place(&requests).into_iter();
    for p in gil.iter_mut() {
        p.site = sites.next();
    }
    for p in locks.iter_mut() {
        p.site = sites.next();
    }
}

/// One probe to place: a program on the function at `entry` (a file offset) of `object`.
#[derive(Debug, Clone)]
pub struct Request {
    pub program: &'static str,
    pub object: PathBuf,
    pub entry: u64,
}

/// Chooses a site for every request (same order). Probes on one function share one site, the
/// one all of them can use: one trap serves them all.
pub fn place(requests: &[Request]) -> Vec<Site> {
    let mut functions: BTreeMap<(FileKey, u64), Vec<usize>> = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        functions
            .entry((FileKey::of(&r.object), r.entry))
            .or_default()
            .push(i);
    }
    let mut objects: HashMap<PathBuf, Option<Code>> = HashMap::new();
    let mut sites: Vec<Option<Site>> = vec![None; requests.len()];
    for ((_, entry), members) in functions {
        let path = &requests[members[0]].object;
        let code = objects
            .entry(path.clone())
            .or_insert_with(|| Code::read(path).ok());
        let programs: Vec<&str> = members.iter().map(|&i| requests[i].program).collect();
        let site = match code {
            Some(code) => choose(code, entry, &programs),
            None => unreadable(),
        };
        for i in members {
            sites[i] = Some(site.clone());
        }
    }
    sites
        .into_iter()
        .map(|s| s.unwrap_or_else(unreadable))
        .collect()
}

fn unreadable() -> Site {
    Site {
        offset: 0,
        instruction: "?".into(),
        trap: TrapKind::SingleStepped,
        why: "could not read the object's code: entry, counted as single-stepped".into(),
    }
}

/// Identifies a file across the names it is opened by (a path, /proc/PID/map_files/…).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKey {
    Inode(u64, u64),
    Path(PathBuf),
}

impl FileKey {
    pub fn of(path: &Path) -> FileKey {
        match std::fs::metadata(path) {
            Ok(m) => FileKey::Inode(m.dev(), m.ino()),
            Err(_) => FileKey::Path(path.to_owned()),
        }
    }
}

/// An object's executable sections, and where direct branches land (to rule out sites that
/// something jumps into).
pub struct Code {
    /// (file offset, address, bytes) of each executable section.
    sections: Vec<(u64, u64, Vec<u8>)>,
    /// Targets of every direct jump, jcc and call, sorted; computed on first need.
    targets: Option<Vec<u64>>,
}

impl Code {
    pub fn read(path: &Path) -> anyhow::Result<Code> {
        let data = std::fs::read(path)?;
        Code::parse(&data)
    }

    pub fn parse(data: &[u8]) -> anyhow::Result<Code> {
        let elf = object::File::parse(data)?;
        let mut sections = Vec::new();
        for s in elf.sections() {
            if s.kind() != SectionKind::Text {
                continue;
            }
            let Some((off, _)) = s.file_range() else {
                continue;
            };
            sections.push((off, s.address(), s.data()?.to_vec()));
        }
        Ok(Code {
            sections,
            targets: None,
        })
    }

    /// Bytes from `file_offset` to the end of its section, and their address.
    fn at(&self, file_offset: u64) -> Option<(u64, &[u8])> {
        self.sections.iter().find_map(|(off, addr, bytes)| {
            let rel = file_offset.checked_sub(*off)?;
            let rest = bytes.get(rel as usize..).filter(|b| !b.is_empty())?;
            Some((addr + rel, rest))
        })
    }

    /// Whether a direct branch anywhere in the object lands in `(from, to]`.
    fn jumped_into(&mut self, from: u64, to: u64) -> Option<u64> {
        let targets = self.targets.get_or_insert_with(|| {
            let mut t = Vec::new();
            let mut instr = Instruction::default();
            for (_, addr, bytes) in &self.sections {
                let mut d = Decoder::with_ip(64, bytes, *addr, DecoderOptions::NONE);
                while d.can_decode() {
                    d.decode_out(&mut instr);
                    if matches!(
                        instr.flow_control(),
                        FlowControl::UnconditionalBranch
                            | FlowControl::ConditionalBranch
                            | FlowControl::Call
                    ) && instr.near_branch_target() != 0
                    {
                        t.push(instr.near_branch_target());
                    }
                }
            }
            t.sort_unstable();
            t
        });
        let i = targets.partition_point(|&t| t <= from);
        targets.get(i).copied().filter(|&t| t <= to)
    }
}

/// One decoded instruction and its bytes.
type Decoded = (Instruction, Vec<u8>);

/// What the programs probing one function read at its entry, and must still find at a later site.
struct Reads {
    /// Registers (64-bit names) that must still hold the call's arguments.
    registers: Vec<Register>,
    /// The return address at [rsp]: %rsp and the stack must not be written.
    return_address: bool,
    /// Every program may run twice for one call (a branch landing before the site is fine).
    repeatable: bool,
}

/// The site for a function probed by `programs`.
pub fn choose(code: &mut Code, entry: u64, programs: &[&str]) -> Site {
    let Some((addr, bytes)) = code.at(entry) else {
        return unreadable();
    };
    let instructions = decode(addr, bytes);
    let Some(first) = instructions.first() else {
        return unreadable();
    };
    if let Some(class) = emulated(&first.1) {
        return at_entry(
            first,
            format!("the first instruction is emulated ({class})"),
        );
    }
    reads(programs)
        .and_then(|reads| later_site(code, addr, &instructions, &reads))
        .unwrap_or_else(|why| at_entry(first, why))
}

/// The first instructions of a function at `addr` (up to the first undecodable one).
fn decode(addr: u64, bytes: &[u8]) -> Vec<Decoded> {
    let mut instructions = Vec::new();
    let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    while d.can_decode() && instructions.len() < MAX_INSTRUCTIONS {
        d.decode_out(&mut instr);
        if instr.is_invalid() {
            break;
        }
        let len = instr.len();
        let raw = bytes[(instr.ip() - addr) as usize..][..len].to_vec();
        instructions.push((instr, raw));
    }
    instructions
}

/// The probe at the function's entry, and why it stays there.
fn at_entry((first, first_raw): &Decoded, why: String) -> Site {
    let trap = emulated(first_raw).map_or(TrapKind::SingleStepped, |_| TrapKind::Emulated);
    Site {
        offset: 0,
        instruction: text(first),
        trap,
        why,
    }
}

/// What `programs` read together, or why their probes must stay at the entry.
fn reads(programs: &[&str]) -> Result<Reads, String> {
    let mut reads = Reads {
        registers: Vec::new(),
        return_address: false,
        repeatable: true,
    };
    for p in programs {
        let Some(n) = needs(p) else {
            return Err(format!(
                "entry, single-stepped: {p} is not declared in probe/site.rs (what it reads)"
            ));
        };
        if n.is_return {
            return Err(format!(
                "entry, single-stepped: a uretprobe ({p}) needs the entry, and the probes here share its trap"
            ));
        }
        reads.registers.extend(n.registers.iter().copied());
        reads.return_address |= n.return_address;
        reads.repeatable &= n.repeatable;
    }
    Ok(reads)
}

/// The first emulated instruction past the entry on every call's path with what `reads` needs
/// intact, or why there is none.
fn later_site(
    code: &mut Code,
    addr: u64,
    instructions: &[Decoded],
    reads: &Reads,
) -> Result<Site, String> {
    let mut info = InstructionInfoFactory::new();
    for (instr, raw) in instructions {
        let offset = instr.ip() - addr;
        if offset > 0 {
            if let Some(class) = emulated(raw) {
                if let Some(t) = code
                    .jumped_into(addr, instr.ip())
                    .filter(|_| !reads.repeatable)
                {
                    return Err(format!(
                        "entry, single-stepped: +{offset:#x} `{}` ({class}) is emulated, but a branch lands at +{:#x}, so it could run more than once per call",
                        text(instr),
                        t - addr
                    ));
                }
                return Ok(Site {
                    offset,
                    instruction: text(instr),
                    trap: TrapKind::Emulated,
                    why: format!(
                        "first emulated instruction ({class}) on every call's path, {} intact",
                        intact(&reads.registers, reads.return_address)
                    ),
                });
            }
        }
        if let Some(what) = disturbs(&mut info, instr, reads) {
            return Err(format!(
                "entry, single-stepped: no emulated instruction before +{offset:#x} `{}`, which {what}",
                text(instr)
            ));
        }
    }
    Err(format!(
        "entry, single-stepped: no emulated instruction in the first {MAX_INSTRUCTIONS}"
    ))
}

/// What about `instr` keeps a later site from seeing the entry's state: it branches, or it
/// writes a register or the stack the programs read.
fn disturbs(
    info: &mut InstructionInfoFactory,
    instr: &Instruction,
    reads: &Reads,
) -> Option<String> {
    if instr.flow_control() != FlowControl::Next {
        return Some("branches".into());
    }
    let used = info.info(instr);
    if let Some(r) = used.used_registers().iter().find(|u| {
        writes(u.access())
            && (reads.registers.contains(&u.register().full_register())
                || (reads.return_address && u.register().full_register() == Register::RSP))
    }) {
        return Some(format!(
            "writes %{}",
            format!("{:?}", r.register().full_register()).to_lowercase()
        ));
    }
    if reads.return_address
        && used
            .used_memory()
            .iter()
            .any(|m| m.base() == Register::RSP && writes(m.access()))
    {
        return Some("writes the stack".into());
    }
    None
}

fn writes(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

fn intact(registers: &[Register], return_address: bool) -> String {
    let mut v: Vec<String> = Vec::new();
    for r in registers {
        let s = format!("%{}", format!("{r:?}").to_lowercase());
        if !v.contains(&s) {
            v.push(s);
        }
    }
    if return_address {
        v.push("%rsp".into());
    }
    if v.is_empty() {
        "no argument read".into()
    } else {
        v.join(", ")
    }
}

fn text(instr: &Instruction) -> String {
    let mut f = GasFormatter::new();
    f.options_mut().set_uppercase_hex(false);
    f.options_mut().set_branch_leading_zeros(false);
    let mut s = String::new();
    f.format(instr, &mut s);
    s
}

/// The canonical nops of Linux's x86_nops table (lengths 2 to 8), which 6.18 emulates.
const NOPS: &[&[u8]] = &[
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Whether the kernel emulates this instruction (its bytes), and as what. Anything else is
/// single-stepped; when unsure, say single-stepped (the cost model then counts the dearer trap).
pub fn emulated(raw: &[u8]) -> Option<&'static str> {
    match raw {
        [0x90] => Some("nop"),
        n if NOPS.contains(&n) => Some("nop"),
        [0xeb, _] => Some("jmp rel8"),
        [0xe9, _, _, _, _] => Some("jmp rel32"),
        [0xe8, _, _, _, _] => Some("call rel32"),
        [0x70..=0x7f, _] => Some("jcc rel8"),
        [0x0f, 0x80..=0x8f, _, _, _, _] => Some("jcc rel32"),
        [0x50..=0x57] | [0x41, 0x50..=0x57] => Some("push"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny ELF-less Code: one section at address 0x1000, file offset 0.
    fn code(bytes: &[u8]) -> Code {
        Code {
            sections: vec![(0, 0x1000, bytes.to_vec())],
            targets: None,
        }
    }

    #[test]
    fn classes_the_kernel_emulates() {
        assert_eq!(emulated(&[0x41, 0x57]), Some("push"));
        assert_eq!(emulated(&[0x55]), Some("push"));
        // REX.W push is single-stepped (only 0x41 is taken).
        assert_eq!(emulated(&[0x48, 0x55]), None);
        assert_eq!(emulated(&[0x0f, 0x85, 1, 0, 0, 0]), Some("jcc rel32"));
        assert_eq!(emulated(&[0x75, 0x10]), Some("jcc rel8"));
        assert_eq!(emulated(&[0x66, 0x0f, 0x1f, 0x44, 0, 0]), Some("nop"));
        // endbr64, mov, ret: single-stepped.
        assert_eq!(emulated(&[0xf3, 0x0f, 0x1e, 0xfa]), None);
        assert_eq!(emulated(&[0x8b, 0x47, 0x10]), None);
        assert_eq!(emulated(&[0xc3]), None);
    }

    #[test]
    fn refuses_when_the_argument_is_overwritten_first() {
        // mov %rsi,%rdi; jmp +0: the jmp is emulated but rdi no longer holds the argument.
        let mut c = code(&[0x48, 0x89, 0xf7, 0xeb, 0x00, 0xc3]);
        let s = choose(&mut c, 0, &[program::MUTEX_UNLOCK_ENTER]);
        assert_eq!((s.offset, s.trap), (0, TrapKind::SingleStepped));
        assert!(s.why.contains("writes %rdi"), "{}", s.why);
        // A program that reads rsi only may move: rdi is not its argument.
        let s = choose(&mut c, 0, &[program::COND_WAIT_ENTER]);
        assert_eq!((s.offset, s.trap), (3, TrapKind::Emulated), "{}", s.why);
    }

    #[test]
    fn refuses_past_a_branch_and_for_uretprobes() {
        // mov (%rdi),%eax; ret: nothing emulated before the function leaves.
        let mut c = code(&[0x8b, 0x07, 0xc3]);
        let s = choose(&mut c, 0, &[program::GIL_MUTEX_LOCK]);
        assert_eq!(s.trap, TrapKind::SingleStepped);
        assert!(s.why.contains("`ret`, which branches"), "{}", s.why);
        // mov $1,%esi; jmp: fine alone, but not beside a uretprobe on the same function.
        let mut c = code(&[0xbe, 1, 0, 0, 0, 0xeb, 0x00]);
        assert_eq!(choose(&mut c, 0, &[program::MUTEX_UNLOCK_ENTER]).offset, 5);
        let s = choose(
            &mut c,
            0,
            &[program::MUTEX_LOCK_ENTER, program::MUTEX_LOCK_RETURN],
        );
        assert_eq!(s.offset, 0);
        assert!(s.why.contains("uretprobe"), "{}", s.why);
        // A program the chooser does not know stays at the entry.
        assert_eq!(choose(&mut c, 0, &["someone_elses_program"]).offset, 0);
    }

    #[test]
    fn refuses_a_site_something_jumps_into() {
        // mov (%rdi),%eax; nop; ... jmp back to the nop: it would run twice per call.
        let mut c = code(&[0x8b, 0x07, 0x90, 0x85, 0xc0, 0x75, 0xfb, 0xc3]);
        let s = choose(&mut c, 0, &[program::GIL_MUTEX_LOCK]);
        assert_eq!(s.offset, 0, "{}", s.why);
        assert!(s.why.contains("a branch lands at +0x2"), "{}", s.why);
    }

    #[test]
    fn return_address_readers_keep_rsp() {
        // push %rbx is emulated but moves %rsp: after `mov (%rdi),%eax` the first emulated
        // instruction is the push itself, which is fine (the trap comes before it runs); past
        // `sub $8,%rsp` it is not.
        let mut c = code(&[0x48, 0x83, 0xec, 0x08, 0x75, 0x00]);
        let s = choose(&mut c, 0, &[program::MUTEX_LOCK_ENTER]);
        assert_eq!(s.offset, 0);
        assert!(s.why.contains("writes %rsp"), "{}", s.why);
        assert_eq!(choose(&mut c, 0, &[program::MUTEX_UNLOCK_ENTER]).offset, 4);
    }

    /// The real prologues of this machine's binaries (Debian 12's glibc 2.36 and python3.11,
    /// pyenv's builds, Debian sid's in the test root when it exists).
    mod real {
        use object::{Object as _, ObjectSymbol as _};

        use super::*;
        use crate::{gil::libc::Libc, object::elf};

        const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
        const SID: &str = "/var/lib/gilwatch-test/sid";

        fn libc_fn(path: &str, name: &str) -> u64 {
            Libc::load(path, path.into())
                .unwrap()
                .function(name)
                .unwrap()
        }

        /// File offset of a symbol (.symtab or .dynsym).
        fn symbol(path: &str, name: &str) -> Option<u64> {
            let data = std::fs::read(path).ok()?;
            let elf = object::File::parse(&*data).ok()?;
            let sym = elf
                .symbols()
                .chain(elf.dynamic_symbols())
                .find(|s| s.name() == Ok(name) && s.address() != 0)?;
            elf::file_offset(&elf, sym.address())
        }

        fn site(path: &str, entry: u64, programs: &[&str]) -> Site {
            let mut code = Code::read(Path::new(path)).unwrap();
            choose(&mut code, entry, programs)
        }

        #[test]
        fn glibc_mutex_lock_moves_to_its_first_branch() {
            // mov 0x10(%rdi),%eax; mov %eax,%edx; and $0x17f,%edx; and $0x7c,%eax; jne …
            let s = site(
                LIBC,
                libc_fn(LIBC, "pthread_mutex_lock"),
                &[program::GIL_MUTEX_LOCK],
            );
            assert_eq!((s.offset, s.trap), (0xe, TrapKind::Emulated), "{s:?}");
            assert!(s.instruction.starts_with("jne"), "{s:?}");
            assert!(s.why.contains("%rdi intact"), "{s:?}");
            // --lock's entry probe reads the return address too: %rsp is untouched until +0x14.
            let s = site(
                LIBC,
                libc_fn(LIBC, "pthread_mutex_lock"),
                &[program::MUTEX_LOCK_ENTER],
            );
            assert_eq!(s.offset, 0xe, "{s:?}");
            // With its uretprobe beside it, the entry stays (one shared trap, single-stepped).
            let s = site(
                LIBC,
                libc_fn(LIBC, "pthread_mutex_lock"),
                &[program::MUTEX_LOCK_ENTER, program::MUTEX_LOCK_RETURN],
            );
            assert_eq!((s.offset, s.trap), (0, TrapKind::SingleStepped), "{s:?}");
            assert_eq!(s.instruction, "mov 0x10(%rdi),%eax");
        }

        #[test]
        fn glibc_unlock_and_timedlock_move_to_their_tail_jump() {
            // mov $0x1,%esi; jmp __pthread_mutex_unlock_usercnt
            let s = site(
                LIBC,
                libc_fn(LIBC, "pthread_mutex_unlock"),
                &[program::MUTEX_UNLOCK_ENTER],
            );
            assert_eq!((s.offset, s.trap), (5, TrapKind::Emulated), "{s:?}");
            assert!(s.instruction.starts_with("jmp"), "{s:?}");
            // mov %rsi,%rdx; xor %esi,%esi; jmp …: rdi and rsp intact.
            let s = site(
                LIBC,
                libc_fn(LIBC, "pthread_mutex_timedlock"),
                &[program::MUTEX_TIMEDLOCK_ENTER],
            );
            assert_eq!((s.offset, s.trap), (5, TrapKind::Emulated), "{s:?}");
        }

        #[test]
        fn glibc_semaphore_try_and_post_move_to_their_first_branch() {
            // --py-locks' hot pair: sem_trywait (mov (%rdi),%rax; test; je) and sem_post
            // (mov 0x8(%rdi),%esi; mov (%rdi),%rax; cmp; je) start with loads, single-stepped;
            // their first branch keeps %rdi, and neither has a return probe.
            for f in ["sem_trywait", "sem_post"] {
                let program = if f == "sem_post" {
                    program::PYLOCK_RELEASE_ENTER
                } else {
                    program::PYLOCK_ACQUIRE_ENTER
                };
                let s = site(LIBC, libc_fn(LIBC, f), &[program]);
                assert_eq!(s.trap, TrapKind::Emulated, "{f}: {s:?}");
                assert!(s.offset > 0, "{f}: {s:?}");
                assert!(s.instruction.starts_with('j'), "{f}: {s:?}");
            }
            // sem_wait begins with a push: its entry and return share one emulated trap.
            let s = site(
                LIBC,
                libc_fn(LIBC, "sem_wait"),
                &[
                    program::PYLOCK_ACQUIRE_ENTER,
                    program::PYLOCK_ACQUIRE_RETURN,
                ],
            );
            assert_eq!((s.offset, s.trap), (0, TrapKind::Emulated), "{s:?}");
        }

        #[test]
        fn glibc_condition_functions_start_emulated() {
            for f in ["pthread_cond_signal", "pthread_cond_timedwait"] {
                let s = site(LIBC, libc_fn(LIBC, f), &[program::GIL_COND_SIGNAL]);
                assert_eq!((s.offset, s.trap), (0, TrapKind::Emulated), "{f}: {s:?}");
                assert!(s.instruction.starts_with("push"), "{f}: {s:?}");
            }
        }

        #[test]
        fn debian_python_exports_start_emulated() {
            let py = "/usr/bin/python3.11";
            for f in ["PyEval_RestoreThread", "PyEval_SaveThread"] {
                let s = site(
                    py,
                    symbol(py, f).unwrap(),
                    &[program::TAKE_GIL_TENTATIVE_ARG0],
                );
                assert_eq!((s.offset, s.trap), (0, TrapKind::Emulated), "{f}: {s:?}");
            }
        }

        #[test]
        fn pyenv_take_and_drop_gil_start_with_push() {
            let mut seen = 0;
            for dir in std::fs::read_dir("/root/.pyenv/versions").unwrap() {
                let lib = dir.unwrap().path().join("lib");
                let Some(so) = std::fs::read_dir(&lib).ok().and_then(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.path())
                        .find(|p| p.to_string_lossy().ends_with(".so.1.0"))
                }) else {
                    continue;
                };
                let so = so.to_string_lossy().into_owned();
                for (f, prog) in [
                    ("take_gil", program::TAKE_GIL_TENTATIVE_ARG0),
                    ("drop_gil", program::DROP_GIL_ENTER),
                ] {
                    let Some(entry) = symbol(&so, f) else {
                        continue;
                    };
                    let s = site(&so, entry, &[prog]);
                    assert_eq!(
                        (s.offset, s.trap),
                        (0, TrapKind::Emulated),
                        "{so} {f}: {s:?}"
                    );
                    seen += 1;
                }
            }
            assert!(seen >= 2, "no pyenv libpython with take_gil/drop_gil");
        }

        #[test]
        fn debian_sid_libc_and_pythons() {
            let libc = format!("{SID}/usr/lib/x86_64-linux-gnu/libc.so.6");
            if !Path::new(&libc).exists() {
                return; // the test root is built by `cargo xtask test`
            }
            // mov 0x10(%rdi),%edx; nop: the nop at +3 is emulated.
            let s = site(
                &libc,
                libc_fn(&libc, "pthread_mutex_lock"),
                &[program::GIL_MUTEX_LOCK],
            );
            assert_eq!((s.offset, s.trap), (3, TrapKind::Emulated), "{s:?}");
            assert_eq!(s.instruction, "nop");
            for v in ["3.13", "3.14", "3.15"] {
                let py = format!("{SID}/usr/bin/python{v}");
                let Some(entry) = symbol(&py, "PyEval_RestoreThread") else {
                    continue;
                };
                // endbr64 (single-stepped), then push %rbx.
                let s = site(&py, entry, &[program::TAKE_GIL_TENTATIVE_ARG0]);
                assert_eq!((s.offset, s.trap), (4, TrapKind::Emulated), "{py}: {s:?}");
                assert!(s.instruction.starts_with("push"), "{py}: {s:?}");
            }
        }
    }
}
