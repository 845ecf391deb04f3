//! Step 2: the probe plan — which kernel program goes on which instruction of which file.
use crate::{
    error::{Exit, user},
    gil::{locate::Interpreter, symbols},
};

/// A kernel program (by its name in observer-ebpf) and where it attaches.
#[derive(Debug, Clone)]
pub struct ProbePoint {
    pub program: &'static str,
    pub symbol: String,
    pub file_offset: u64,
}

#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub strategy: &'static str,
    pub points: Vec<ProbePoint>,
}

impl ProbePlan {
    /// The probed function symbols, for the report header.
    pub fn symbols(&self) -> Vec<String> {
        let mut v: Vec<String> = self.points.iter().map(|p| p.symbol.clone()).collect();
        v.dedup();
        v
    }
}

/// Plans probes from `.symtab`: entry and return of every take_gil clone, entry of every drop_gil.
pub fn plan(interp: &Interpreter) -> anyhow::Result<ProbePlan> {
    let elf = interp.elf()?;
    let syms = symbols::find_gil_functions(&elf);
    if syms.take.is_empty() || syms.drop.is_empty() {
        return Err(user(
            Exit::Unsupported,
            format!(
                "{} (CPython {}) has no take_gil/drop_gil symbols: it is stripped. \
                 Install its debug symbols, or use a CPython build that keeps .symtab (pyenv, python.org, Docker's full images)",
                interp.path, interp.version
            ),
        ));
    }
    let mut points = Vec::new();
    for f in &syms.take {
        // 3.8's out-of-line take_gil(ceval, tstate) has tstate second; its .constprop clone,
        // and every other version, have it first.
        let program = if interp.version.minor_version() == (3, 8) && f.name == "take_gil" {
            "take_gil_enter_arg1"
        } else {
            "take_gil_enter_arg0"
        };
        points.push(ProbePoint {
            program,
            symbol: f.name.clone(),
            file_offset: f.file_offset,
        });
        points.push(ProbePoint {
            program: "take_gil_return",
            symbol: f.name.clone(),
            file_offset: f.file_offset,
        });
    }
    for f in &syms.drop {
        points.push(ProbePoint {
            program: "drop_gil_enter",
            symbol: f.name.clone(),
            file_offset: f.file_offset,
        });
    }
    Ok(ProbePlan {
        strategy: "symtab",
        points,
    })
}
