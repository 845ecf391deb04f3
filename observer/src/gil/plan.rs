//! Step 2: the probe plan — which kernel program goes on which instruction of which file.
//!
//! Two strategies:
//! - `symtab`: take_gil/drop_gil (and their clones) from the interpreter's symbol table. Sees every
//!   acquisition from the first. Two designs (observer-ebpf/src/main.rs): on 3.8+ two traps per
//!   uncontended GIL cycle (entry of take_gil and drop_gil; contended takes add libc's
//!   pthread_cond_timedwait entry and return); on 3.6/3.7, whose GIL we cannot locate in memory to
//!   filter the timed waits, three (entry and return of take_gil, entry of drop_gil).
//! - `exports`: no symbols at all (stripped builds, 3.9+): take_gil found by disassembling the
//!   exported PyEval_RestoreThread (gil/exports.rs), the drop marked by libc's
//!   `pthread_cond_signal(&gil->cond)` (drop_gil is inlined in such builds). Two traps per
//!   uncontended cycle, both on emulated instructions, as symtab's.
//! - `libc`: no interpreter symbols needed (stripped, LTO builds): pthread_mutex_lock and
//!   pthread_cond_signal in libc, filtered in the kernel by the GIL's addresses.
use std::path::PathBuf;

use observer_common::names::program;
use serde::Serialize;

use crate::{
    error::{Exit, user},
    gil::{
        address::{self, DEFAULT_LAYOUT, FREE_THREADED_LAYOUT},
        exports::{self, DropMarker},
        libc::Libc,
        locate::Interpreter,
        symbols::{self, GilFunctions},
    },
    object::{debuginfo::SymbolSource, file::ObjectFile},
    probe::{
        cost::TrapKind,
        site::{self, Site},
    },
};

/// A kernel program (an `observer_common::names::program`) and where it attaches.
#[derive(Debug, Clone)]
pub struct ProbePoint {
    pub program: &'static str,
    /// What the point is, for people: `take_gil`, `pthread_mutex_lock`.
    pub symbol: String,
    /// The file, as gilwatch can open it.
    pub object: PathBuf,
    /// The file as the target names it, for people.
    pub object_name: String,
    /// The function's entry, as a file offset.
    pub file_offset: u64,
    /// Where in the function the probe goes (probe/site.rs; None until placed: the entry).
    pub site: Option<Site>,
}

impl ProbePoint {
    /// `program` on the function `symbol` at `file_offset` in `file`, at its entry until the site
    /// pass places it.
    pub fn in_file(
        file: &ObjectFile,
        program: &'static str,
        symbol: &str,
        file_offset: u64,
    ) -> Self {
        ProbePoint {
            program,
            symbol: symbol.to_owned(),
            object: file.open_path.clone(),
            object_name: file.path.clone(),
            file_offset,
            site: None,
        }
    }

    /// The file offset the probe attaches at.
    pub fn attach_offset(&self) -> u64 {
        self.file_offset + self.site.as_ref().map_or(0, |s| s.offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// take_gil/drop_gil from the symbol table when there is one, else exports, else libc.
    Auto,
    /// take_gil/drop_gil from the interpreter's symbol table.
    Symtab,
    /// No symbols: take_gil found through the exported PyEval_RestoreThread by disassembly,
    /// drops seen at drop_gil's own calls that signal the GIL's condition variable.
    Exports,
    /// libc's pthread calls on the GIL's mutex and condition variables (no symbols needed).
    Libc,
}

/// The strategy a plan follows: the one `--strategy` asked for, or the one `auto` chose. Named
/// in lowercase by the report (`"strategy": "exports"`) and by `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChosenStrategy {
    Symtab,
    Exports,
    Libc,
}

impl ChosenStrategy {
    pub fn name(self) -> &'static str {
        match self {
            ChosenStrategy::Symtab => "symtab",
            ChosenStrategy::Exports => "exports",
            ChosenStrategy::Libc => "libc",
        }
    }
}

impl std::fmt::Display for ChosenStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub strategy: ChosenStrategy,
    /// Where the probed symbols were named (None for strategies that use no symbol table).
    pub symbols_from: Option<SymbolSource>,
    pub points: Vec<ProbePoint>,
    /// What this strategy cannot see, for `gilwatch doctor`.
    pub blind_spots: Vec<&'static str>,
    /// What the choice rests on, for `gilwatch doctor`: how disassembly found the sites, or
    /// why auto fell back past a cheaper strategy.
    pub notes: Vec<String>,
}

impl ProbePlan {
    /// The probed functions, for the report header.
    pub fn symbols(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for p in &self.points {
            if !v.contains(&p.symbol) {
                v.push(p.symbol.clone());
            }
        }
        v
    }

    /// The kernel programs cannot work without the GIL's address (libc and exports strategies).
    pub fn needs_gil_address(&self) -> bool {
        matches!(
            self.strategy,
            ChosenStrategy::Libc | ChosenStrategy::Exports
        )
    }

    /// The kernel programs filter better with the GIL's address (two-trap symtab: timed waits
    /// on the GIL's condition variable only), and work without it.
    pub fn wants_gil_address(&self) -> bool {
        self.points
            .iter()
            .any(|p| p.program == program::GIL_COND_WAIT_ENTER)
    }
}

pub fn plan(
    interp: &Interpreter,
    libc: Option<&Libc>,
    choice: Strategy,
) -> anyhow::Result<ProbePlan> {
    // .symtab, else MiniDebugInfo, else a debug file (object/debuginfo.rs).
    let found = if matches!(choice, Strategy::Libc | Strategy::Exports) {
        GilFunctions::default()
    } else {
        symbols::gil_functions(interp)?
    };
    let syms = &found.symbols;
    let have_symbols = !syms.take.is_empty() && !syms.drop.is_empty();
    match choice {
        Strategy::Symtab if !have_symbols => Err(stripped(interp, &found.rejected)),
        Strategy::Auto | Strategy::Symtab if have_symbols => {
            Ok(symtab_plan(interp, syms, found.source.clone(), libc))
        }
        Strategy::Exports => exports_plan(interp, libc).map_err(|e| {
            user(
                Exit::Unsupported,
                format!(
                    "{} (CPython {}): --strategy exports cannot be used: {e}; use --strategy libc or auto",
                    interp.file.path, interp.version
                ),
            )
        }),
        Strategy::Auto => match exports_plan(interp, libc) {
            Ok(plan) => Ok(plan),
            Err(why) => {
                let mut plan = libc_plan(interp, libc)?;
                plan.notes.push(format!("exports not used: {why}"));
                Ok(plan)
            }
        },
        _ => libc_plan(interp, libc),
    }
}

/// The `exports` strategy, or why it does not apply to this interpreter.
fn exports_plan(interp: &Interpreter, libc: Option<&Libc>) -> Result<ProbePlan, String> {
    // take_gil(tstate) from 3.9 on; 3.8's out-of-line take_gil takes (ceval, tstate).
    let minor = interp.version.minor_version();
    if minor < (3, 9) {
        return Err(format!(
            "CPython {} (needs 3.9+, where take_gil's argument is the thread state)",
            interp.version
        ));
    }
    let libc = libc.ok_or("no libc found")?;
    let signal = libc
        .function("pthread_cond_signal")
        .map_err(|e| format!("{e:#}"))?;
    let timedwait = libc
        .function("pthread_cond_timedwait")
        .map_err(|e| format!("{e:#}"))?;
    let route = exports_route(interp)?;
    Ok(ProbePlan {
        strategy: ChosenStrategy::Exports,
        symbols_from: None,
        points: exports_points(interp, libc, &route, signal, timedwait),
        blind_spots: vec![
            "waits and holds already under way when gilwatch attached",
            "the first GIL traffic of `-- CMD` before the interpreter has created its GIL (drops are matched by the GIL's address)",
            "the main interpreter's GIL only (3.12+ subinterpreters with their own GIL are not seen)",
        ],
        notes: vec![format!(
            "take_gil at {:#x} via {}; drop: {}",
            route.take_gil, route.found_via, route.drop_evidence
        )],
    })
}

/// take_gil and the drop's marks found by disassembly, where take_gil has an emulated site.
fn exports_route(interp: &Interpreter) -> Result<exports::Route, String> {
    let elf = interp.elf().map_err(|e| format!("{e:#}"))?;
    let layout = if interp.free_threaded {
        FREE_THREADED_LAYOUT
    } else {
        DEFAULT_LAYOUT
    };
    let minor = interp.version.minor_version();
    let gil_at = exports::static_gil(&elf, address::offset_in_runtime(minor.1));
    let route = exports::locate(&elf, &layout, gil_at).map_err(|e| e.0)?;
    // The site pass places take_gil's probe with the others; this only asks where it will go. A
    // single-stepped trap on every take costs more than libc's three emulated ones: without an
    // emulated site, the strategy stands down.
    let mut code = site::Code::parse(&interp.file.data).map_err(|e| format!("{e:#}"))?;
    let take_site = site::choose(
        &mut code,
        route.take_gil_offset,
        &[program::TAKE_GIL_TENTATIVE_ARG0],
    );
    if take_site.trap != TrapKind::Emulated {
        return Err(format!(
            "take_gil at {:#x} has no emulated probe site ({})",
            route.take_gil, take_site.why
        ));
    }
    Ok(route)
}

/// The exports strategy's probes: take_gil, the drop's marks, libc's timed wait (`signal` and
/// `timedwait`: libc's functions, as file offsets).
fn exports_points(
    interp: &Interpreter,
    libc: &Libc,
    route: &exports::Route,
    signal: u64,
    timedwait: u64,
) -> Vec<ProbePoint> {
    // take_gil's entry: the site pass (probe/site.rs) moves the probe to an emulated instruction
    // that still sees the tstate argument where there is one.
    let mut points = vec![ProbePoint::in_file(
        &interp.file,
        program::TAKE_GIL_TENTATIVE_ARG0,
        "take_gil",
        route.take_gil_offset,
    )];
    // The drop: the calls of pthread_cond_signal in the interpreter (emulated `call`s, not
    // take_gil's), or libc's entry, which take_gil's switch_cond signal also hits.
    match &route.drop {
        DropMarker::CallSites(sites) => {
            for (at, offset) in sites {
                points.push(ProbePoint::in_file(
                    &interp.file,
                    program::GIL_COND_SIGNAL_DROP,
                    &format!("call pthread_cond_signal@{at:#x}"),
                    *offset,
                ));
            }
        }
        DropMarker::LibcEntry => {
            points.push(ProbePoint::in_file(
                &libc.file,
                program::GIL_COND_SIGNAL_DROP,
                "pthread_cond_signal",
                signal,
            ));
        }
    }
    points.extend(timed_wait_points(libc, timedwait));
    points
}

/// libc's pthread_cond_timedwait (at `offset`), entry and return: where the two-trap designs
/// see a contended take.
fn timed_wait_points(libc: &Libc, offset: u64) -> impl Iterator<Item = ProbePoint> + '_ {
    [program::GIL_COND_WAIT_ENTER, program::GIL_COND_WAIT_RETURN]
        .into_iter()
        .map(move |program| {
            ProbePoint::in_file(&libc.file, program, "pthread_cond_timedwait", offset)
        })
}

/// `rejected`: the debug files (and MiniDebugInfo) looked at and why they were not used.
fn stripped(interp: &Interpreter, rejected: &[String]) -> anyhow::Error {
    user(
        Exit::Unsupported,
        format!(
            "{} (CPython {}) has no take_gil/drop_gil symbols (stripped{}): install its debug symbols, or use --strategy libc or auto",
            interp.file.path,
            interp.version,
            rejected
                .iter()
                .map(|r| format!(", and {r}"))
                .collect::<String>()
        ),
    )
}

fn symtab_plan(
    interp: &Interpreter,
    syms: &symbols::GilSymbols,
    symbols_from: Option<SymbolSource>,
    libc: Option<&Libc>,
) -> ProbePlan {
    let mut points = Vec::new();
    // Two traps per cycle needs the timed wait's entry and return (to see contended takes) and,
    // to filter them, the GIL's address, which gil/address.rs finds on 3.8+.
    let cond_wait = (interp.version.minor_version() >= (3, 8))
        .then(|| libc.and_then(|l| Some((l, l.function("pthread_cond_timedwait").ok()?))))
        .flatten();
    for f in &syms.take {
        // 3.8's out-of-line take_gil(ceval, tstate) has tstate second; its .constprop clone,
        // and every other version, have it first.
        let arg1 = interp.version.minor_version() == (3, 8) && f.name == "take_gil";
        let take = match (cond_wait.is_some(), arg1) {
            (true, false) => program::TAKE_GIL_TENTATIVE_ARG0,
            (true, true) => program::TAKE_GIL_TENTATIVE_ARG1,
            (false, false) => program::TAKE_GIL_ENTER_ARG0,
            (false, true) => program::TAKE_GIL_ENTER_ARG1,
        };
        let at = |program| ProbePoint::in_file(&interp.file, program, &f.name, f.file_offset);
        points.push(at(take));
        if cond_wait.is_none() {
            points.push(at(program::TAKE_GIL_RETURN));
        }
    }
    for f in &syms.drop {
        points.push(ProbePoint::in_file(
            &interp.file,
            program::DROP_GIL_ENTER,
            &f.name,
            f.file_offset,
        ));
    }
    if let Some((libc, offset)) = cond_wait {
        points.extend(timed_wait_points(libc, offset));
    }
    ProbePlan {
        strategy: ChosenStrategy::Symtab,
        symbols_from,
        points,
        blind_spots: vec!["waits and holds already under way when gilwatch attached"],
        notes: Vec::new(),
    }
}

fn libc_plan(interp: &Interpreter, libc: Option<&Libc>) -> anyhow::Result<ProbePlan> {
    if interp.version.minor_version() < (3, 8) {
        return Err(user(
            Exit::Unsupported,
            format!(
                "{} (CPython {}) has no take_gil/drop_gil symbols, and finding the GIL without symbols needs CPython 3.8+",
                interp.file.path, interp.version
            ),
        ));
    }
    let libc = libc.ok_or_else(|| {
        user(
            Exit::Unsupported,
            "no libc found for the symbol-free strategy",
        )
    })?;
    let point = |program, name: &str| -> anyhow::Result<ProbePoint> {
        Ok(ProbePoint::in_file(
            &libc.file,
            program,
            name,
            libc.function(name)?,
        ))
    };
    Ok(ProbePlan {
        strategy: ChosenStrategy::Libc,
        symbols_from: None,
        points: vec![
            point(program::GIL_MUTEX_LOCK, "pthread_mutex_lock")?,
            point(program::GIL_COND_SIGNAL, "pthread_cond_signal")?,
        ],
        blind_spots: vec![
            "waits and holds already under way when gilwatch attached",
            "Python thread states of waiting threads (names come from the interpreter's thread list)",
            "the first GIL traffic of `-- CMD` before the interpreter has created its GIL",
            "the main interpreter's GIL only (3.12+ subinterpreters with their own GIL are not seen)",
        ],
        notes: Vec::new(),
    })
}
