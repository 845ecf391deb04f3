//! `gilwatch doctor -p PID`: the probe plan for a process, explained, with nothing attached.
use std::fmt::Write as _;

use object::Object;

use crate::{
    find_gil,
    gil::plan::Strategy,
    prepare,
    probe::{cost::TrapCosts, site::Site},
};

pub fn run(pid: u32, strategy: Strategy) -> anyhow::Result<()> {
    let t = prepare(pid, strategy)?;
    let mut out = String::new();
    let p = &t.process;
    let ns = match p.namespace_pid() {
        Some(ns) if ns != pid => format!(" (PID {ns} in its own PID namespace)"),
        _ => String::new(),
    };
    let _ = writeln!(out, "target       PID {pid} ({}){ns}", p.comm());
    let i = &t.interpreter;
    let elf = i.elf()?;
    let linkage = if crate::gil::locate::is_libpython(&i.file.path) {
        "shared libpython"
    } else {
        "interpreter linked into the executable"
    };
    let _ = writeln!(out, "interpreter  {} ({linkage})", i.file.path);
    // Files are opened through /proc/PID/map_files: the mapped file itself, wherever it lives.
    let _ = writeln!(
        out,
        "  opened as  /proc/{pid}/map_files/… (the file the process mapped)"
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
    // .symtab, MiniDebugInfo or a debug file: what the symtab strategy would use.
    let found = crate::gil::symbols::gil_functions(i)?;
    let syms = &found.symbols;
    let from = found
        .source
        .as_ref()
        .map_or_else(|| "no symbol table".to_owned(), |s| s.describe());
    let names = |v: &[crate::gil::symbols::FuncSymbol]| {
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

    // What a trap costs here: measured like a run does (needs root), else the assumed figures.
    let costs = crate::probe::attach::load_object(crate::probe::attach::MapNeeds::NONE)
        .and_then(|mut ebpf| {
            crate::probe::attach::load_counters(&mut ebpf)?;
            crate::probe::calibrate::run(&mut ebpf)
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
    for point in &t.plan.points {
        let _ = writeln!(
            out,
            "  probe      {:<20} at {}+{:#x} → {}",
            point.symbol,
            crate::target::process::file_name(&point.object_name),
            point.attach_offset(),
            point.program
        );
        let _ = writeln!(
            out,
            "{}",
            site_line(&point.symbol, point.program, point.site.as_ref(), &costs)
        );
    }
    if t.plan.needs_gil_address() || t.plan.wants_gil_address() || i.free_threaded {
        match find_gil(p, i) {
            Ok(gil) => {
                let state = match gil.enabled {
                    Some(true) => ", switched on at run time",
                    Some(false) => ", DISABLED: nothing to watch",
                    None => "",
                };
                let _ = writeln!(out, "GIL          {:#x} ({}{state})", gil.addr, gil.how);
            }
            Err(e) if t.plan.needs_gil_address() || i.free_threaded => {
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
    for blind in &t.plan.blind_spots {
        let _ = writeln!(out, "cannot see   {blind}");
    }
    print!("{out}");
    Ok(())
}

/// `    site  pthread_mutex_lock+0xe  jne …  emulated, 0.45 µs/hit: why`
pub fn site_line(symbol: &str, program: &str, site: Option<&Site>, costs: &TrapCosts) -> String {
    let Some(s) = site else {
        return format!("    site     {symbol}+0x0, not placed (counted as single-stepped)");
    };
    let is_return = crate::probe::site::needs(program).is_some_and(|n| n.is_return);
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
