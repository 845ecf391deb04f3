//! Step 1 of the data path: which file in the target is the CPython interpreter.
//!
//! When the executable links libpython (pyenv, Docker's official images) the GIL code lives in
//! `libpython3.X.so`; otherwise it is linked into the executable (Debian, uv, conda).
use std::path::PathBuf;

use object::{Object, ObjectSymbol};

use crate::{
    error::{Exit, user},
    object::{elf, file::ObjectFile},
    python::version::{self, PythonVersion},
    target::{
        maps::Mapping,
        process::{Process, file_name},
    },
};

/// Oldest and newest CPython this build knows how to read.
pub const OLDEST: (u8, u8) = (3, 6);
pub const NEWEST: (u8, u8) = (3, 15);

/// The interpreter object of a target, loaded and identified.
pub struct Interpreter {
    /// The file: the symbol tables are read from it, and later strategies read sections.
    pub file: ObjectFile,
    pub version: PythonVersion,
    /// A free-threaded build (3.13t+): the GIL exists only when switched on at run time.
    pub free_threaded: bool,
    /// Where the object is loaded: runtime address = ELF virtual address + bias. None when the
    /// object is not mapped yet (`gilwatch -- CMD` before exec).
    pub load_bias: Option<u64>,
    /// The target's filesystem root (`/proc/PID/root`, `/` for `gilwatch -- CMD`): where debug
    /// files for a stripped interpreter are looked for (object/debuginfo.rs).
    pub root: PathBuf,
}

impl Interpreter {
    pub fn elf(&self) -> anyhow::Result<object::File<'_>> {
        self.file.elf()
    }

    /// Recomputes where the object is loaded (after exec, for `gilwatch -- CMD`).
    pub fn refresh_load_bias(&mut self, maps: &[Mapping]) {
        self.load_bias = load_bias(self, maps);
    }

    /// Runtime address of an exported data symbol (e.g. `_PyRuntime`), if the object is mapped.
    pub fn runtime_address_of(&self, name: &str) -> Option<u64> {
        let elf = self.elf().ok()?;
        let sym = elf
            .dynamic_symbols()
            .chain(elf.symbols())
            .find(|s| s.name() == Ok(name))?;
        Some(sym.address().wrapping_add(self.load_bias?))
    }
}

/// Finds and identifies the interpreter of a running process.
pub fn locate(process: &Process) -> anyhow::Result<Interpreter> {
    let maps = process.maps()?;
    let mapping = match maps.iter().find(|m| is_libpython(&m.path)) {
        Some(m) => m,
        None => process.exe_mapping(&maps)?,
    };
    let who = || format!("PID {} ({})", process.pid, process.comm());
    let mut interp = identify(ObjectFile::open_mapping(process, mapping)?, who)?;
    interp.root = process.proc_path("root");
    interp.load_bias = load_bias(&interp, &maps);
    Ok(interp)
}

pub fn is_libpython(path: &str) -> bool {
    file_name(path).starts_with("libpython")
}

/// Reads and identifies an interpreter file; `who` names the target in errors.
pub fn load(
    path: &str,
    open_path: PathBuf,
    who: impl Fn() -> String,
) -> anyhow::Result<Interpreter> {
    identify(ObjectFile::read(path, open_path)?, who)
}

/// Identifies an interpreter file: CPython, which version, free-threaded or not.
fn identify(file: ObjectFile, who: impl Fn() -> String) -> anyhow::Result<Interpreter> {
    let path = file.path.as_str();
    let name = file.file_name().to_owned();
    let elf = object::File::parse(&*file.data).map_err(|_| {
        user(
            Exit::Unsupported,
            format!(
                "{} is not a CPython process: {path} is not an ELF file",
                who()
            ),
        )
    })?;
    let is_cpython = elf.dynamic_symbols().chain(elf.symbols()).any(|s| {
        matches!(
            s.name(),
            Ok("Py_Initialize" | "Py_InitializeEx" | "PyEval_SaveThread")
        )
    });
    if !is_cpython {
        return Err(user(
            Exit::Unsupported,
            format!(
                "{} is not a CPython process: no libpython in its memory maps and {path} has no CPython symbols; \
                 point gilwatch at a python3 process (pgrep -a python)",
                who()
            ),
        ));
    }
    let version = version::detect(&name, &elf).ok_or_else(|| {
        user(
            Exit::Unsupported,
            format!("{}: cannot tell which CPython version {path} is (no Py_Version symbol, no version in its name)", who()),
        )
    })?;
    let mm = version.minor_version();
    if mm < OLDEST || mm > NEWEST {
        return Err(user(
            Exit::Unsupported,
            format!(
                "{} runs CPython {version} ({path}); gilwatch supports CPython {}.{} to {}.{}",
                who(),
                OLDEST.0,
                OLDEST.1,
                NEWEST.0,
                NEWEST.1
            ),
        ));
    }
    let free_threaded = version::is_free_threaded(&name, &elf);
    drop(elf);
    Ok(Interpreter {
        file,
        version,
        free_threaded,
        load_bias: None,
        root: PathBuf::from("/"),
    })
}

/// The load bias of the interpreter object, from its lowest mapping.
fn load_bias(interp: &Interpreter, maps: &[Mapping]) -> Option<u64> {
    let file = interp.elf().ok()?;
    let first = maps
        .iter()
        .filter(|m| m.path == interp.file.path)
        .min_by_key(|m| m.start)?;
    elf::load_bias(&file, first.start, first.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A corrupted file is identified or refused with a user error, never a panic.
        #[test]
        fn corrupted_files_never_panic(data in crate::object::hostile_elf::corrupted()) {
            let file = ObjectFile::in_memory("/usr/lib/libpython3.12.so.1.0", data);
            if let Ok(i) = identify(file, || "PID 1".to_owned()) {
                let _ = load_bias(&i, &[]);
            }
        }
    }
}
