//! `gilwatch doctor -p PID`: the probe plan for a process, explained, with nothing attached.
use std::fmt::Write as _;

use object::Object;

use crate::{
    gil::{
        address,
        locate::{self, Interpreter},
        plan::{ProbePlan, Strategy},
        prepare::{Planned, prepare},
        symbols::{self, FuncSymbol},
    },
    probe::{
        attach::{self, MapNeeds},
        calibrate,
        cost::TrapCosts,
        site::{self, Site},
    },
    target::process::{self, Process},
};

pub fn run(pid: u32, strategy: Strategy) -> anyhow::Result<()> {
    let process = Process::open(pid)?;
    let mut t = prepare(&process, strategy)?;
    site::apply(&mut t.plan.points, &mut []);
    let mut out = String::new();
    describe_target(&mut out, &process);
    describe_interpreter(&mut out, &process, &t.interpreter)?;
    describe_symbols(&mut out, &t.interpreter)?;
    describe_plan(&mut out, &t, strategy);
    describe_probes(&mut out, &t.plan);
    describe_gil(&mut out, &process, &t.plan, &t.interpreter);
    for blind in &t.plan.blind_spots {
        let _ = writeln!(out, "cannot see   {blind}");
    }
    print!("{out}");
    Ok(())
}

fn describe_target(out: &mut String, p: &Process) {
    let pid = p.pid;
    let ns = match p.namespace_pid() {
        Some(ns) if ns != pid => format!(" (PID {ns} in its own PID namespace)"),
        _ => String::new(),
    };
    let _ = writeln!(out, "target       PID {pid} ({}){ns}", p.comm());
}

fn describe_interpreter(out: &mut String, p: &Process, i: &Interpreter) -> anyhow::Result<()> {
    let elf = i.elf()?;
    let linkage = if locate::is_libpython(&i.file.path) {
        "shared libpython"
    } else {
        "interpreter linked into the executable"
    };
    let _ = writeln!(out, "interpreter  {} ({linkage})", i.file.path);
    // Files are opened through /proc/PID/map_files: the mapped file itself, wherever it lives.
    let _ = writeln!(
        out,
        "  opened as  /proc/{}/map_files/… (the file the process mapped)",
        p.pid
    );
    let build_id = elf
        .build_id()
        .ok()
        .flatten()
        .map(hex)
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(out, "  build-id   {build_id}");
    let ft = if i.free_threaded {
        " (free-threaded build)"
    } else {
        ""
    };
    let _ = writeln!(out, "  version    CPython {}{ft}", i.version);
    Ok(())
}

/// .symtab, MiniDebugInfo or a debug file: what the symtab strategy would use.
fn describe_symbols(out: &mut String, i: &Interpreter) -> anyhow::Result<()> {
    let found = symbols::gil_functions(i)?;
    let syms = &found.symbols;
    let from = found
        .source
        .as_ref()
        .map_or_else(|| "no symbol table".to_owned(), |s| s.describe());
    let names = |v: &[FuncSymbol]| {
        v.iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if syms.take.is_empty() || syms.drop.is_empty() {
        let _ = writeln!(
            out,
            "symbols      {from}: no take_gil/drop_gil (stripped or inlined)"
        );
    } else {
        let _ = writeln!(
            out,
            "symbols      {from}: {} | {}",
            names(&syms.take),
            names(&syms.drop)
        );
    }
    for why in &found.rejected {
        let _ = writeln!(out, "  not used   {why}");
    }
    Ok(())
}

fn describe_plan(out: &mut String, t: &Planned, strategy: Strategy) {
    match &t.libc {
        Some(l) => {
            let _ = writeln!(out, "libc         {}", l.file.path);
        }
        None => {
            let _ = writeln!(out, "libc         not found in the target's maps");
        }
    }
    let asked = format!("{strategy:?}").to_lowercase();
    let _ = writeln!(out, "strategy     {} (asked: {asked})", t.plan.strategy);
    for note in &t.plan.notes {
        let _ = writeln!(out, "  note       {note}");
    }
}

/// Each probe and its site, with what a trap costs here: measured like a run does (needs
/// root), else the assumed figures.
fn describe_probes(out: &mut String, plan: &ProbePlan) {
    let costs = attach::load_object(MapNeeds::NONE)
        .and_then(|mut ebpf| {
            attach::load_counters(&mut ebpf)?;
            calibrate::run(&mut ebpf)
        })
        .unwrap_or(TrapCosts::ASSUMED);
    let _ = writeln!(
        out,
        "trap cost    {}: emulated {:.2} µs, single-stepped {:.2} µs, uretprobe return +{:.2} µs",
        costs.source,
        costs.emulated_ns / 1e3,
        costs.stepped_ns / 1e3,
        costs.return_ns / 1e3
    );
    for point in &plan.points {
        let _ = writeln!(
            out,
            "  probe      {:<20} at {}+{:#x} → {}",
            point.symbol,
            process::file_name(&point.object_name),
            point.attach_offset(),
            point.program
        );
        let _ = writeln!(
            out,
            "{}",
            site_line(&point.symbol, point.program, point.site.as_ref(), &costs)
        );
    }
}

fn describe_gil(out: &mut String, p: &Process, plan: &ProbePlan, i: &Interpreter) {
    if !(plan.needs_gil_address() || plan.wants_gil_address() || i.free_threaded) {
        return;
    }
    match address::find(p, i) {
        Ok(gil) => {
            let state = match gil.enabled {
                Some(true) => ", switched on at run time",
                Some(false) => ", DISABLED: nothing to watch",
                None => "",
            };
            let _ = writeln!(out, "GIL          {:#x} ({}{state})", gil.addr, gil.how);
        }
        Err(e) if plan.needs_gil_address() || i.free_threaded => {
            let _ = writeln!(out, "GIL          not found: {e}");
        }
        Err(e) => {
            // Two-trap symtab: only the timed-wait filter needs it.
            let _ = writeln!(
                out,
                "GIL          not found ({e}): any timed wait inside take_gil counts as the GIL's"
            );
        }
    }
}

/// `    site  pthread_mutex_lock+0xe  jne …  emulated, 0.45 µs/hit: why`
pub fn site_line(symbol: &str, program: &str, site: Option<&Site>, costs: &TrapCosts) -> String {
    let Some(s) = site else {
        return format!("    site     {symbol}+0x0, not placed (counted as single-stepped)");
    };
    let is_return = site::needs(program).is_some_and(|n| n.is_return);
    let cost = if is_return {
        format!(
            "{:.2} µs/hit with the entry trap it shares",
            costs.return_ns / 1e3
        )
    } else {
        format!("{:.2} µs/hit", costs.of(s.trap) / 1e3)
    };
    let at = if is_return {
        " (return)".to_owned()
    } else {
        format!("+{:#x}", s.offset)
    };
    format!(
        "    site     {symbol}{at}  `{}`  {}, {cost}: {}",
        s.instruction,
        if is_return {
            "uretprobe"
        } else {
            s.trap.label()
        },
        s.why
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
