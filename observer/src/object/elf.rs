//! What an ELF file says about itself: where an address is in the file, where the file is loaded
//! in a process, and its symbols.
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// A symbol of an ELF file.
#[derive(Debug, Clone)]
pub struct Sym {
    pub name: String,
    /// ELF virtual address (add the object's bias for the runtime address).
    pub address: u64,
    pub size: u64,
    pub kind: SymbolKind,
    /// From .dynsym (exported), else .symtab.
    pub dynamic: bool,
}

/// Virtual address → file offset, through the loadable segment that contains it.
pub fn file_offset(elf: &object::File<'_>, address: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (start <= address && address < start + size).then(|| address - start + off)
    })
}

/// The load bias of a mapped object (runtime address = ELF virtual address + bias), from its
/// lowest mapping: it maps file `offset` at `start`. 0 for non-PIE executables.
pub fn load_bias(elf: &object::File<'_>, start: u64, offset: u64) -> Option<u64> {
    let seg = elf.segments().find(|s| {
        let (off, size) = s.file_range();
        off <= offset && offset < off + size.max(1)
    })?;
    let (seg_off, _) = seg.file_range();
    let vaddr_at_mapping = seg.address() + (offset - seg_off);
    Some(start.wrapping_sub(vaddr_at_mapping & !0xfff))
}

/// Defined symbols of an ELF file with a non-zero address, sorted by address (.dynsym first).
pub fn symbols(data: &[u8]) -> Vec<Sym> {
    let Ok(elf) = object::File::parse(data) else {
        return Vec::new();
    };
    let mut out: Vec<Sym> = elf
        .dynamic_symbols()
        .map(|s| (s, true))
        .chain(elf.symbols().map(|s| (s, false)))
        .filter(|(s, _)| s.is_definition() && s.address() != 0)
        .filter_map(|(s, dynamic)| {
            Some(Sym {
                name: s.name().ok()?.to_owned(),
                address: s.address(),
                size: s.size(),
                kind: s.kind(),
                dynamic,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.address, !s.dynamic));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gilwatch's own executable: a real ELF whose text segment holds `main`.
    #[test]
    fn offsets_and_bias_of_a_real_file() {
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let syms = symbols(&data);
        assert!(syms.windows(2).all(|w| w[0].address <= w[1].address));
        let main = syms.iter().find(|s| s.name == "main").expect("main");
        let off = file_offset(&elf, main.address).expect("main in a segment");
        assert!(off < data.len() as u64);
        // A mapping of file offset 0 at 0x5555_0000_0000 biases every address by that much
        // minus the first segment's (page-aligned) virtual address.
        let first = elf.segments().next().unwrap();
        let bias = load_bias(&elf, 0x5555_0000_0000, 0).unwrap();
        assert_eq!(bias, 0x5555_0000_0000 - (first.address() & !0xfff));
    }
}
