//! A target's address space with its objects: every region (file-backed or not, with its
//! permissions) and the ELF objects it maps, with their symbols and load bias.
use std::collections::BTreeMap;

use object::SymbolKind;

use crate::{
    object::{
        elf::{self, Sym},
        file::ObjectFile,
    },
    target::{maps::Mapping, process::Process},
};

/// A mapped ELF object.
pub struct MappedObject {
    pub file: ObjectFile,
    pub bias: u64,
    pub is_executable: bool,
    /// Defined symbols with a non-zero address, sorted by address.
    pub symbols: Vec<Sym>,
}

impl MappedObject {
    pub fn file_name(&self) -> &str {
        self.file.file_name()
    }

    pub fn elf(&self) -> Option<object::File<'_>> {
        self.file.elf().ok()
    }

    /// The data symbol that contains a runtime address, with the offset into it.
    pub fn data_symbol_at(&self, addr: u64) -> Option<(&Sym, u64)> {
        let vaddr = addr.wrapping_sub(self.bias);
        let i = self.symbols.partition_point(|s| s.address <= vaddr);
        self.symbols[..i]
            .iter()
            .rev()
            .take(64)
            .filter(|s| s.kind == SymbolKind::Data)
            .find(|s| vaddr - s.address < s.size.max(1))
            .map(|s| (s, vaddr - s.address))
    }
}

/// The target's regions and objects at one moment.
pub struct AddressSpace {
    pub regions: Vec<Mapping>,
    pub objects: Vec<MappedObject>,
}

impl AddressSpace {
    pub fn read(process: &Process) -> anyhow::Result<Self> {
        let regions = process.regions()?;
        let exe = process.exe().unwrap_or_default();
        // The first mapping of each file decides its load bias.
        let mut first: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in regions.iter().filter(|r| r.is_file()) {
            let e = first.entry(r.path.clone()).or_insert((r.start, r.offset));
            if r.start < e.0 {
                *e = (r.start, r.offset);
            }
        }
        let mut objects = Vec::new();
        for (path, (start, offset)) in first {
            let Ok(file) = ObjectFile::read(&path, process.host_path(&path)) else {
                continue;
            };
            let bias = file
                .elf()
                .ok()
                .and_then(|e| elf::load_bias(&e, start, offset));
            let Some(bias) = bias else {
                continue; // not an ELF object (a data file mapped by the program)
            };
            objects.push(MappedObject {
                is_executable: path == exe,
                symbols: elf::symbols(&file.data),
                file,
                bias,
            });
        }
        // The executable first: it holds copy-relocated globals of the libraries it uses.
        objects.sort_by_key(|o| !o.is_executable);
        Ok(Self { regions, objects })
    }

    pub fn region_of(&self, addr: u64) -> Option<&Mapping> {
        self.regions.iter().find(|r| r.contains(addr))
    }

    /// The object whose mapping contains `addr`.
    pub fn object_of(&self, addr: u64) -> Option<&MappedObject> {
        let region = self.region_of(addr)?;
        self.objects.iter().find(|o| o.file.path == region.path)
    }

    /// Objects whose file name is `name` or starts with it (`libfoo.so` matches `libfoo.so.1`).
    pub fn objects_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a MappedObject> {
        self.objects.iter().filter(move |o| {
            o.file.path == name || o.file_name() == name || o.file_name().starts_with(name)
        })
    }

    /// `libfoo.so:g_lock @ 0x…`-style name of an address: the data symbol it lies in, if any.
    pub fn describe(&self, addr: u64) -> Option<String> {
        // The region's own object first, then the executable (copy relocations live in its .bss).
        let obj = self.object_of(addr)?;
        let (sym, off) = obj.data_symbol_at(addr)?;
        Some(if off == 0 {
            format!("{}:{}", obj.file_name(), sym.name)
        } else {
            format!("{}:{}+{off:#x}", obj.file_name(), sym.name)
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::object::file::ObjectFile;

    fn object(bias: u64, mut symbols: Vec<Sym>) -> MappedObject {
        symbols.sort_by_key(|s| s.address);
        MappedObject {
            file: ObjectFile::in_memory("/lib/x.so", Vec::new()),
            bias,
            is_executable: false,
            symbols,
        }
    }

    fn data(address: u64, size: u64) -> Sym {
        Sym {
            name: format!("d{address:x}"),
            address,
            size,
            kind: SymbolKind::Data,
            dynamic: true,
        }
    }

    #[test]
    fn a_symbol_at_the_top_of_the_address_space() {
        // Found by the property test below: address + size used to overflow.
        let o = object(0, vec![data(u64::MAX - 1, 16)]);
        let (s, off) = o.data_symbol_at(u64::MAX).expect("inside");
        assert_eq!((s.address, off), (u64::MAX - 1, 1));
        assert!(o.data_symbol_at(u64::MAX - 2).is_none());
    }

    proptest! {
        /// Symbols of a corrupt file: the answer, if any, is a symbol that contains the address.
        #[test]
        fn data_symbol_at_any_address(
            bias: u64,
            addr: u64,
            syms in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..16),
        ) {
            let o = object(bias, syms.into_iter().map(|(a, s)| data(a, s)).collect());
            if let Some((s, off)) = o.data_symbol_at(addr) {
                prop_assert_eq!(s.address.wrapping_add(off), addr.wrapping_sub(bias));
                prop_assert!(off < s.size.max(1));
            }
        }
    }
}
