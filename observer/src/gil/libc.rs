//! The C library a target uses, and where its pthread functions are.
//!
//! glibc 2.34+ has the pthread functions in libc.so.6; older glibc in libpthread.so.0. Some
//! names exist in two versions at different addresses (pthread_cond_signal@GLIBC_2.2.5 and
//! @@GLIBC_2.3.2): a probe on the wrong one sees nothing, so we take the default version, the
//! one a program linked today binds (CPython binds GLIBC_2.3.2).
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::{
    object::elf::file_offset,
    target::{
        maps::Mapping,
        process::{Process, file_name},
    },
};

pub struct Libc {
    /// As the target sees it.
    pub path: String,
    pub open_path: PathBuf,
    data: Vec<u8>,
    /// Keeps `open_path` (/proc/self/fd/N for files opened inside a target's root) valid.
    _file: Option<std::fs::File>,
}

/// The object that defines the pthread functions for this process.
pub fn locate(process: &Process, maps: &[Mapping]) -> anyhow::Result<Libc> {
    let find = |prefix: &str| maps.iter().find(|m| file_name(&m.path).starts_with(prefix));
    let path = find("libpthread.so")
        .or_else(|| find("libc.so"))
        .or_else(|| find("libc-"))
        .ok_or_else(|| {
            anyhow!("no libc in the target's memory maps (statically linked against libc?)")
        })?;
    let open = |m: &Mapping| -> anyhow::Result<Libc> {
        let (file, open_path) = process.open_mapping(m)?;
        let mut lib = Libc::load(&m.path, open_path)?;
        lib._file = Some(file);
        Ok(lib)
    };
    let lib = open(path)?;
    // libpthread of old glibc: only if it defines the functions (else they are in libc).
    if file_name(&lib.path).starts_with("libpthread") && lib.function("pthread_mutex_lock").is_err()
    {
        let path =
            find("libc.so").ok_or_else(|| anyhow!("no libc.so in the target's memory maps"))?;
        return open(path);
    }
    Ok(lib)
}

impl Libc {
    pub fn load(path: &str, open_path: PathBuf) -> anyhow::Result<Libc> {
        let data = std::fs::read(&open_path).with_context(|| format!("reading {path}"))?;
        Ok(Libc {
            path: path.to_owned(),
            open_path,
            data,
            _file: None,
        })
    }

    /// File offset of the default version of an exported function.
    pub fn function(&self, name: &str) -> anyhow::Result<u64> {
        let elf =
            object::File::parse(&*self.data).with_context(|| format!("parsing {}", self.path))?;
        // .gnu.version runs parallel to .dynsym; bit 15 marks a hidden (non-default) version.
        let versym = elf
            .section_by_name(".gnu.version")
            .and_then(|s| s.data().ok());
        let is_default = |index: usize| {
            versym
                .and_then(|v| v.get(index * 2..index * 2 + 2))
                .is_none_or(|b| u16::from_le_bytes([b[0], b[1]]) & 0x8000 == 0)
        };
        let sym = elf
            .dynamic_symbols()
            .filter(|s| s.name() == Ok(name) && s.address() != 0)
            .find(|s| is_default(s.index().0))
            .ok_or_else(|| anyhow!("{} does not export {name}", self.path))?;
        file_offset(&elf, sym.address())
            .ok_or_else(|| anyhow!("{name} in {} is outside its segments", self.path))
    }
}
