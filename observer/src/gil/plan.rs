//! Step 2: the probe plan — which kernel program goes on which instruction of which file.
//!
//! Two strategies:
//! - `symtab`: take_gil/drop_gil (and their clones) from the interpreter's symbol table. Sees every
//!   acquisition from the first. Two designs (observer-ebpf/src/main.rs): on 3.8+ two traps per
//!   uncontended GIL cycle (entry of take_gil and drop_gil; contended takes add libc's
//!   pthread_cond_timedwait entry and return); on 3.6/3.7, whose GIL we cannot locate in memory to
//!   filter the timed waits, three (entry and return of take_gil, entry of drop_gil).
//! - `libc`: no interpreter symbols needed (stripped, LTO builds): pthread_mutex_lock and
//!   pthread_cond_signal in libc, filtered in the kernel by the GIL's addresses.
use std::path::PathBuf;

use crate::{
    error::{Exit, user},
    gil::{
        libc::Libc,
        locate::Interpreter,
        symbols::{self, GilFunctions},
    },
    object::debuginfo::SymbolSource,
    probe::site::Site,
};

/// A kernel program (by its name in observer-ebpf) and where it attaches.
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
    /// The file offset the probe attaches at.
    pub fn attach_offset(&self) -> u64 {
        self.file_offset + self.site.as_ref().map_or(0, |s| s.offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// take_gil/drop_gil from the symbol table when there is one, else libc.
    Auto,
    /// take_gil/drop_gil from the interpreter's symbol table.
    Symtab,
    /// libc's pthread calls on the GIL's mutex and condition variables (no symbols needed).
    Libc,
}

#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub strategy: &'static str,
    /// Where the probed symbols were named (None for strategies that use no symbol table).
    pub symbols_from: Option<SymbolSource>,
    pub points: Vec<ProbePoint>,
    /// What this strategy cannot see, for `gilwatch doctor`.
    pub blind_spots: Vec<&'static str>,
    /// Probe traps per uncontended GIL release/acquire cycle, and how many of them are
    /// uretprobes (costlier): what the overhead budget multiplies the cycle rate by.
    pub traps_per_cycle: Traps,
}

/// Probe traps per GIL cycle, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traps {
    pub uprobes: u32,
    pub uretprobes: u32,
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

    /// The kernel programs cannot work without the GIL's address (libc strategy).
    pub fn needs_gil_address(&self) -> bool {
        self.strategy == "libc"
    }

    /// The kernel programs filter better with the GIL's address (two-trap symtab: timed waits
    /// on the GIL's condition variable only), and work without it.
    pub fn wants_gil_address(&self) -> bool {
        self.points
            .iter()
            .any(|p| p.program == "gil_cond_wait_enter")
    }
}

pub fn plan(
    interp: &Interpreter,
    libc: Option<&Libc>,
    choice: Strategy,
) -> anyhow::Result<ProbePlan> {
    // .symtab, else MiniDebugInfo, else a debug file (object/debuginfo.rs).
    let found = if choice == Strategy::Libc {
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
        _ => libc_plan(interp, libc),
    }
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
    let object = interp.file.open_path.clone();
    // Two traps per cycle needs the timed wait's entry and return (to see contended takes) and,
    // to filter them, the GIL's address, which gil/address.rs finds on 3.8+.
    let cond_wait = (interp.version.minor_version() >= (3, 8))
        .then(|| libc.and_then(|l| Some((l, l.function("pthread_cond_timedwait").ok()?))))
        .flatten();
    for f in &syms.take {
        // 3.8's out-of-line take_gil(ceval, tstate) has tstate second; its .constprop clone,
        // and every other version, have it first.
        let arg1 = interp.version.minor_version() == (3, 8) && f.name == "take_gil";
        let program = match (cond_wait.is_some(), arg1) {
            (true, false) => "take_gil_tentative_arg0",
            (true, true) => "take_gil_tentative_arg1",
            (false, false) => "take_gil_enter_arg0",
            (false, true) => "take_gil_enter_arg1",
        };
        let at = |program| ProbePoint {
            program,
            symbol: f.name.clone(),
            object: object.clone(),
            object_name: interp.file.path.clone(),
            file_offset: f.file_offset,
            site: None,
        };
        points.push(at(program));
        if cond_wait.is_none() {
            points.push(at("take_gil_return"));
        }
    }
    for f in &syms.drop {
        points.push(ProbePoint {
            program: "drop_gil_enter",
            symbol: f.name.clone(),
            object: object.clone(),
            object_name: interp.file.path.clone(),
            file_offset: f.file_offset,
            site: None,
        });
    }
    if let Some((libc, offset)) = cond_wait {
        for program in ["gil_cond_wait_enter", "gil_cond_wait_return"] {
            points.push(ProbePoint {
                program,
                symbol: "pthread_cond_timedwait".to_owned(),
                object: libc.file.open_path.clone(),
                object_name: libc.file.path.clone(),
                file_offset: offset,
                site: None,
            });
        }
    }
    let traps_per_cycle = if cond_wait.is_some() {
        Traps {
            uprobes: 2,
            uretprobes: 0,
        }
    } else {
        Traps {
            uprobes: 2,
            uretprobes: 1,
        }
    };
    ProbePlan {
        strategy: "symtab",
        symbols_from,
        points,
        blind_spots: vec!["waits and holds already under way when gilwatch attached"],
        traps_per_cycle,
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
        Ok(ProbePoint {
            program,
            symbol: name.to_owned(),
            object: libc.file.open_path.clone(),
            object_name: libc.file.path.clone(),
            file_offset: libc.function(name)?,
            site: None,
        })
    };
    Ok(ProbePlan {
        strategy: "libc",
        symbols_from: None,
        points: vec![
            point("gil_mutex_lock", "pthread_mutex_lock")?,
            point("gil_cond_signal", "pthread_cond_signal")?,
        ],
        blind_spots: vec![
            "waits and holds already under way when gilwatch attached",
            "Python thread states of waiting threads (names come from the interpreter's thread list)",
            "the first GIL traffic of `-- CMD` before the interpreter has created its GIL",
            "the main interpreter's GIL only (3.12+ subinterpreters with their own GIL are not seen)",
        ],
        // pthread_mutex_lock on take and on drop, pthread_cond_signal on drop: all uprobes.
        traps_per_cycle: Traps {
            uprobes: 3,
            uretprobes: 0,
        },
    })
}
