//! Step 2a: where take_gil and drop_gil are in the interpreter object, from its symbol table.
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// One function to probe.
#[derive(Debug, Clone)]
pub struct FuncSymbol {
    pub name: String,
    /// ELF virtual address.
    pub address: u64,
    /// Offset in the file: what the kernel's uprobe wants.
    pub file_offset: u64,
}

#[derive(Debug, Clone)]
pub struct GilSymbols {
    pub take: Vec<FuncSymbol>,
    pub drop: Vec<FuncSymbol>,
}

/// True for `base` and its compiler clones: `take_gil.constprop.0`, `take_gil.lto_priv.0`, …
fn is_clone_of(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// take_gil/drop_gil and every clone of them. Both are static, so only `.symtab` has them;
/// an empty result means the object is stripped (or its compiler inlined them everywhere).
pub fn find_gil_functions(elf: &object::File<'_>) -> GilSymbols {
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
        let Some(file_offset) = file_offset(elf, sym.address()) else {
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

/// Virtual address → file offset, through the loadable segment that contains it.
pub fn file_offset(elf: &object::File<'_>, address: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (start <= address && address < start + size).then(|| address - start + off)
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
}
