//! Step 2a: where take_gil and drop_gil are in the interpreter object, from its symbol table
//! (its own, its MiniDebugInfo or its debug file: `object::debuginfo`).
use anyhow::Context as _;
use object::{Object, ObjectSymbol, SymbolKind};

use crate::{
    gil::locate::Interpreter,
    object::{
        debuginfo::{self, Roots, SymbolSource},
        elf::file_offset,
    },
};

/// One function to probe.
#[derive(Debug, Clone)]
pub struct FuncSymbol {
    pub name: String,
    /// ELF virtual address.
    pub address: u64,
    /// Offset in the file: what the kernel's uprobe wants.
    pub file_offset: u64,
}

#[derive(Debug, Clone, Default)]
pub struct GilSymbols {
    pub take: Vec<FuncSymbol>,
    pub drop: Vec<FuncSymbol>,
}

/// True for `base` and its compiler clones: `take_gil.constprop.0`, `take_gil.lto_priv.0`, …
fn is_clone_of(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// take_gil/drop_gil and every clone of them. Both are static, so only a full symbol table has
/// them; an empty result means there is none (or the compiler inlined them everywhere).
/// The names come from `symbols` (the object itself, its MiniDebugInfo or a debug file: same
/// virtual addresses), the file offsets from the `object` the kernel probes (a debug file has no
/// code, and its sections sit at other offsets).
pub fn find_gil_functions(symbols: &object::File<'_>, object: &object::File<'_>) -> GilSymbols {
    let elf = symbols;
    let mut out = GilSymbols {
        take: Vec::new(),
        drop: Vec::new(),
    };
    for sym in elf.symbols() {
        if sym.kind() != SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let list = if is_clone_of(name, "take_gil") {
            &mut out.take
        } else if is_clone_of(name, "drop_gil") {
            &mut out.drop
        } else {
            continue;
        };
        let Some(file_offset) = file_offset(object, sym.address()) else {
            continue;
        };
        if list.iter().any(|f: &FuncSymbol| f.address == sym.address()) {
            continue; // aliases
        }
        list.push(FuncSymbol {
            name: name.to_owned(),
            address: sym.address(),
            file_offset,
        });
    }
    out.take.sort_by_key(|f| f.address);
    out.drop.sort_by_key(|f| f.address);
    out
}

/// take_gil/drop_gil (and clones) from the first symbol source that has the interpreter's
/// local functions, with uprobe file offsets from the interpreter object itself.
#[derive(Default)]
pub struct GilFunctions {
    pub symbols: GilSymbols,
    /// None when no source has a symbol table (then `symbols` is empty).
    pub source: Option<SymbolSource>,
    /// Debug files and sections looked at and refused, for the error message.
    pub rejected: Vec<String>,
}

pub fn gil_functions(interp: &Interpreter) -> anyhow::Result<GilFunctions> {
    let search = debuginfo::symbol_file(
        &interp.file.path,
        &interp.file.data,
        &Roots::of(&interp.root),
    )?;
    let object = interp.elf()?;
    let (symbols, source) = match search.found {
        Some((source, data)) => {
            let elf = object::File::parse(&*data).with_context(|| {
                format!(
                    "parsing the symbols of {} ({})",
                    interp.file.path,
                    source.label()
                )
            })?;
            (find_gil_functions(&elf, &object), Some(source))
        }
        None => (GilSymbols::default(), None),
    };
    Ok(GilFunctions {
        symbols,
        source,
        rejected: search.rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones() {
        assert!(is_clone_of("take_gil", "take_gil"));
        assert!(is_clone_of("take_gil.constprop.0", "take_gil"));
        assert!(is_clone_of("take_gil.lto_priv.3", "take_gil"));
        assert!(!is_clone_of("take_gil_helper", "take_gil"));
        assert!(!is_clone_of("_take_gil", "take_gil"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Corrupted interpreters: whatever is found has a file offset inside the object.
        #[test]
        fn corrupted_files_never_panic(data in crate::object::hostile_elf::corrupted()) {
            if let Ok(elf) = object::File::parse(&*data) {
                let found = find_gil_functions(&elf, &elf);
                for f in found.take.iter().chain(&found.drop) {
                    proptest::prop_assert!(is_clone_of(&f.name, "take_gil") || is_clone_of(&f.name, "drop_gil"));
                }
            }
        }
    }
}
