//! The C library a target uses, and where its pthread functions are.
//!
//! glibc 2.34+ has the pthread functions in libc.so.6; older glibc in libpthread.so.0. Some
//! names exist in two versions at different addresses (pthread_cond_signal@GLIBC_2.2.5 and
//! @@GLIBC_2.3.2): a probe on the wrong one sees nothing, so we take the default version, the
//! one a program linked today binds (CPython binds GLIBC_2.3.2).
use std::path::PathBuf;

use anyhow::anyhow;
use object::{Object, ObjectSection, ObjectSymbol};

use crate::{
    object::{elf::file_offset, file::ObjectFile},
    target::{
        maps::Mapping,
        process::{Process, file_name},
    },
};

pub struct Libc {
    pub file: ObjectFile,
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
        Ok(Libc {
            file: ObjectFile::open_mapping(process, m)?,
        })
    };
    let lib = open(path)?;
    // libpthread of old glibc: only if it defines the functions (else they are in libc).
    if lib.file.file_name().starts_with("libpthread") && lib.function("pthread_mutex_lock").is_err()
    {
        let path =
            find("libc.so").ok_or_else(|| anyhow!("no libc.so in the target's memory maps"))?;
        return open(path);
    }
    Ok(lib)
}

impl Libc {
    pub fn load(path: &str, open_path: PathBuf) -> anyhow::Result<Libc> {
        Ok(Libc {
            file: ObjectFile::read(path, open_path)?,
        })
    }

    /// File offset of the default version of an exported function.
    pub fn function(&self, name: &str) -> anyhow::Result<u64> {
        let elf = self.file.elf()?;
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
            .ok_or_else(|| anyhow!("{} does not export {name}", self.file.path))?;
        file_offset(&elf, sym.address())
            .ok_or_else(|| anyhow!("{name} in {} is outside its segments", self.file.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn corrupted_files_never_panic(data in crate::object::hostile_elf::corrupted()) {
            let libc = Libc { file: ObjectFile::in_memory("/lib/libc.so.6", data) };
            for name in ["pthread_mutex_lock", "main", "take_gil"] {
                let _ = libc.function(name);
            }
        }
    }
}
