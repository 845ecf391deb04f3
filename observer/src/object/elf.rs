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

/// Virtual address → file offset, through the loadable segment that contains it. Segment
/// fields are the file's word: sums that do not fit mean no answer, not a wrapped one.
pub fn file_offset(elf: &object::File<'_>, address: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let into = address.checked_sub(seg.address())?;
        (into < size).then(|| off.checked_add(into)).flatten()
    })
}

/// The load bias of a mapped object (runtime address = ELF virtual address + bias), from its
/// lowest mapping: it maps file `offset` at `start`. 0 for non-PIE executables.
pub fn load_bias(elf: &object::File<'_>, start: u64, offset: u64) -> Option<u64> {
    let seg = elf.segments().find(|s| {
        let (off, size) = s.file_range();
        offset
            .checked_sub(off)
            .is_some_and(|into| into < size.max(1))
    })?;
    let (seg_off, _) = seg.file_range();
    let vaddr_at_mapping = seg.address().checked_add(offset - seg_off)?;
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

    /// Found by the property test below: a segment at the top of the address space (or of the
    /// file) made the containment sums overflow.
    #[test]
    fn segments_at_the_top_of_the_address_space() {
        let mut data = std::fs::read("/usr/bin/true").unwrap();
        let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(data[0x38..0x3a].try_into().unwrap()) as usize;
        let load = (0..phnum)
            .map(|i| phoff + 56 * i)
            .find(|&p| data[p..p + 4] == 1u32.to_le_bytes())
            .expect("a PT_LOAD");
        let top = (u64::MAX - 0x10).to_le_bytes();
        data[load + 8..load + 16].copy_from_slice(&top); // p_offset
        data[load + 16..load + 24].copy_from_slice(&top); // p_vaddr
        let elf = object::File::parse(&*data).unwrap();
        // 8 bytes into the segment: 8 bytes past its file offset, no wrap-around on the way.
        assert_eq!(file_offset(&elf, u64::MAX - 0x8), Some(u64::MAX - 0x8));
        assert!(load_bias(&elf, 0x5555_0000_0000, u64::MAX - 0x8).is_some());
        assert_eq!(file_offset(&elf, 0x1000), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Corrupted files: no panic, and what comes back stays inside what the file says.
        #[test]
        fn corrupted_files_never_panic(
            data in crate::object::hostile_elf::corrupted(),
            address: u64,
            start: u64,
            offset: u64,
        ) {
            let syms = symbols(&data);
            proptest::prop_assert!(syms.windows(2).all(|w| w[0].address <= w[1].address));
            if let Ok(elf) = object::File::parse(&*data) {
                let _ = file_offset(&elf, address);
                let _ = load_bias(&elf, start, offset);
                for s in syms.iter().take(64) {
                    let _ = file_offset(&elf, s.address);
                }
            }
        }
    }
}
