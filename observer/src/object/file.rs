//! One ELF file of the target, read whole, under both its names: the path the target sees and the
//! path gilwatch can open.
use std::{fs::File, path::PathBuf};

use anyhow::Context as _;

use crate::target::{
    maps::Mapping,
    process::{Process, file_name},
};

pub struct ObjectFile {
    /// As the target sees it (what reports and messages show).
    pub path: String,
    /// The same file, reachable from gilwatch's mount namespace (for reading and attaching).
    pub open_path: PathBuf,
    /// The whole file.
    pub data: Vec<u8>,
    /// Keeps `open_path` (/proc/self/fd/N for files opened through map_files) valid.
    _file: Option<File>,
}

impl ObjectFile {
    /// The file kept open (its `open_path` stays valid for attaching probes again) without its
    /// contents: a run over many processes keeps one per process.
    pub fn into_handle(mut self) -> ObjectFile {
        self.data = Vec::new();
        self
    }

    /// The very file behind one of the process's mappings (through /proc/PID/map_files: no path
    /// lookup, whatever mount namespace the process has).
    pub fn open_mapping(process: &Process, mapping: &Mapping) -> anyhow::Result<Self> {
        let (file, open_path) = process.open_mapping(mapping)?;
        let mut object = Self::read(&mapping.path, open_path)?;
        object._file = Some(file);
        Ok(object)
    }

    /// Reads `open_path`, known to the target as `path`.
    pub fn read(path: &str, open_path: PathBuf) -> anyhow::Result<Self> {
        let data = std::fs::read(&open_path)
            .with_context(|| format!("reading {path} (as {})", open_path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            open_path,
            data,
            _file: None,
        })
    }

    /// A file already in memory, for tests: `path` is both of its names.
    #[cfg(test)]
    pub fn in_memory(path: &str, data: Vec<u8>) -> Self {
        Self {
            path: path.to_owned(),
            open_path: PathBuf::from(path),
            data,
            _file: None,
        }
    }

    pub fn elf(&self) -> anyhow::Result<object::File<'_>> {
        object::File::parse(&*self.data).with_context(|| format!("parsing ELF {}", self.path))
    }

    pub fn file_name(&self) -> &str {
        file_name(&self.path)
    }
}
