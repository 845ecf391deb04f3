//! The target's address space as locks need it: every region (file-backed or not, with its
//! permissions) and the ELF objects it maps, with their symbols and load bias.
use std::{collections::BTreeMap, path::PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::target::process::{Process, file_name};

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    /// The path, `[heap]`/`[stack]`, or empty for anonymous memory.
    pub path: String,
}

pub fn parse_regions(text: &str) -> Vec<Region> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (s, e) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let _inode = f.next()?;
            let path = f.next().unwrap_or("").trim();
            Some(Region {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms,
                offset,
                path: path.trim_end_matches(" (deleted)").to_owned(),
            })
        })
        .collect()
}

/// A symbol of a mapped object.
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

/// A mapped ELF object.
pub struct MappedObject {
    /// As the target sees it.
    pub path: String,
    /// Reachable from gilwatch (through /proc/PID/root).
    pub open_path: PathBuf,
    pub bias: u64,
    pub is_executable: bool,
    pub data: Vec<u8>,
    /// Defined symbols with a non-zero address, sorted by address.
    pub symbols: Vec<Sym>,
}

impl MappedObject {
    pub fn file_name(&self) -> &str {
        file_name(&self.path)
    }

    pub fn elf(&self) -> Option<object::File<'_>> {
        object::File::parse(&*self.data).ok()
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
            .find(|s| vaddr < s.address + s.size.max(1))
            .map(|s| (s, vaddr - s.address))
    }
}

/// Virtual address → file offset, through the loadable segment that contains it.
pub fn file_offset(elf: &object::File<'_>, address: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (start <= address && address < start + size).then(|| address - start + off)
    })
}

/// The target's regions and objects at one moment.
pub struct AddressSpace {
    pub regions: Vec<Region>,
    pub objects: Vec<MappedObject>,
}

impl AddressSpace {
    pub fn read(process: &Process) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(process.proc_path("maps"))
            .map_err(|e| anyhow::anyhow!("reading /proc/{}/maps: {e}", process.pid))?;
        let regions = parse_regions(&text);
        let exe = process.exe().unwrap_or_default();
        // The first mapping of each file decides its load bias.
        let mut first: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in regions.iter().filter(|r| r.path.starts_with('/')) {
            let e = first.entry(r.path.clone()).or_insert((r.start, r.offset));
            if r.start < e.0 {
                *e = (r.start, r.offset);
            }
        }
        let mut objects = Vec::new();
        for (path, (start, offset)) in first {
            let open_path = process.host_path(&path);
            let Ok(data) = std::fs::read(&open_path) else {
                continue;
            };
            let Some(bias) = load_bias(&data, start, offset) else {
                continue; // not an ELF object (a data file mapped by the program)
            };
            let symbols = symbols(&data);
            objects.push(MappedObject {
                is_executable: path == exe,
                path,
                open_path,
                bias,
                data,
                symbols,
            });
        }
        // The executable first: it holds copy-relocated globals of the libraries it uses.
        objects.sort_by_key(|o| !o.is_executable);
        Ok(Self { regions, objects })
    }

    pub fn region_of(&self, addr: u64) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.start <= addr && addr < r.end)
    }

    /// The object whose mapping contains `addr`.
    pub fn object_of(&self, addr: u64) -> Option<&MappedObject> {
        let region = self.region_of(addr)?;
        self.objects.iter().find(|o| o.path == region.path)
    }

    /// Objects whose file name is `name` or starts with it (`libfoo.so` matches `libfoo.so.1`).
    pub fn objects_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a MappedObject> {
        self.objects.iter().filter(move |o| {
            o.path == name || o.file_name() == name || o.file_name().starts_with(name)
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

/// Where file offset 0's virtual address is mapped: the mapping of the first segment minus the
/// address that segment asks for (0 for non-PIE executables).
fn load_bias(data: &[u8], start: u64, offset: u64) -> Option<u64> {
    let elf = object::File::parse(data).ok()?;
    let seg = elf.segments().find(|s| {
        let (off, size) = s.file_range();
        off <= offset && offset < off + size.max(1)
    })?;
    let (seg_off, _) = seg.file_range();
    let vaddr_at_mapping = seg.address() + (offset - seg_off);
    Some(start.wrapping_sub(vaddr_at_mapping & !0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_region() {
        let text = "\
55d0c0a4b000-55d0c0a4c000 rw-p 00003000 fd:01 42     /tmp/locks2
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0      [heap]
7f00b0000000-7f00b0001000 rw-p 00000000 00:00 0 
";
        let r = parse_regions(text);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].path, "/tmp/locks2");
        assert_eq!(r[0].offset, 0x3000);
        assert_eq!(r[0].perms, "rw-p");
        assert_eq!(r[1].path, "[heap]");
        assert_eq!(r[2].path, "");
        assert_eq!(r[2].end, 0x7f00b0001000);
    }
}
