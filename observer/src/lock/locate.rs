//! Step 2 for locks: from what the user named (`--lock`, `--lock-fns`) to addresses in the target.
use object::SymbolKind;

use crate::{
    error::{Exit, user},
    lock::spec::{FnName, LockSpec},
    object::{
        elf::{Sym, file_offset},
        mapped::{AddressSpace, MappedObject},
    },
};

/// sizeof(pthread_mutex_t) on x86_64 glibc.
pub const PTHREAD_MUTEX_SIZE: u64 = 40;

/// A watched lock.
#[derive(Debug, Clone)]
pub struct WatchedLock {
    pub addr: u64,
    /// What the user typed.
    pub spec: String,
    /// The data symbol, as `object:symbol`, when there is one.
    pub symbol: Option<String>,
}

/// A function to probe.
#[derive(Debug, Clone)]
pub struct Function {
    pub symbol: String,
    pub open_path: std::path::PathBuf,
    pub file_offset: u64,
}

pub fn resolve_lock(
    space: &AddressSpace,
    pid: u32,
    spec: &LockSpec,
) -> anyhow::Result<WatchedLock> {
    match spec {
        LockSpec::Address(addr) => resolve_address(space, pid, *addr, spec),
        LockSpec::Symbol { object, name } => {
            let (obj, sym) = find_data_symbol(space, pid, object.as_deref(), name)?;
            if sym.kind == SymbolKind::Text {
                return Err(user(
                    Exit::Usage,
                    format!(
                        "--lock {spec}: {name} in {} is a function, not a mutex: pass the mutex variable \
                         (for locks taken through your own functions use --lock-fns ACQUIRE:RELEASE)",
                        obj.file.path
                    ),
                ));
            }
            if sym.size != PTHREAD_MUTEX_SIZE {
                return Err(user(
                    Exit::Usage,
                    format!(
                        "--lock {spec}: {name} in {} is a {}-byte object, not a pthread_mutex_t ({PTHREAD_MUTEX_SIZE} bytes): \
                         name the mutex itself (a mutex inside a struct: pass its address as 0xADDRESS)",
                        obj.file.path, sym.size
                    ),
                ));
            }
            let addr = sym.address.wrapping_add(obj.bias);
            Ok(WatchedLock {
                addr,
                spec: spec.to_string(),
                symbol: Some(format!("{}:{}", obj.file_name(), sym.name)),
            })
        }
    }
}

fn resolve_address(
    space: &AddressSpace,
    pid: u32,
    addr: u64,
    spec: &LockSpec,
) -> anyhow::Result<WatchedLock> {
    let Some(region) = space.region_of(addr) else {
        return Err(user(
            Exit::Usage,
            format!(
                "--lock {spec}: address {addr:#x} is not mapped in PID {pid}: check it against /proc/{pid}/maps \
                 (addresses change on every run with ASLR; prefer a symbol name)"
            ),
        ));
    };
    if !region.perms.starts_with("rw") {
        return Err(user(
            Exit::Usage,
            format!(
                "--lock {spec}: address {addr:#x} is in {} memory ({} {}), where no mutex can live: \
                 pass the address of a pthread_mutex_t in writable memory",
                if region.perms.contains('x') {
                    "executable"
                } else {
                    "read-only"
                },
                region.perms,
                if region.path.is_empty() {
                    "anonymous"
                } else {
                    &region.path
                }
            ),
        ));
    }
    if !addr.is_multiple_of(4) {
        return Err(user(
            Exit::Usage,
            format!("--lock {spec}: address {addr:#x} is not aligned as a pthread_mutex_t must be"),
        ));
    }
    Ok(WatchedLock {
        addr,
        spec: spec.to_string(),
        symbol: space.describe(addr),
    })
}

fn searched(space: &AddressSpace) -> String {
    let names: Vec<&str> = space.objects.iter().map(|o| o.file_name()).collect();
    let mut s = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        s.push_str(&format!(" and {} more", names.len() - 8));
    }
    s
}

fn no_object(pid: u32, object: &str, what: &str) -> anyhow::Error {
    user(
        Exit::Usage,
        format!(
            "{what}: PID {pid} maps no object named {object}: see which it maps with \
             grep -o '/.*' /proc/{pid}/maps | sort -u"
        ),
    )
}

/// The object and symbol for a data symbol name (any kind, checked by the caller).
fn find_data_symbol<'a>(
    space: &'a AddressSpace,
    pid: u32,
    object: Option<&'a str>,
    name: &'a str,
) -> anyhow::Result<(&'a MappedObject, &'a Sym)> {
    let what = match object {
        Some(o) => format!("--lock {o}:{name}"),
        None => format!("--lock {name}"),
    };
    let find = |o: &'a MappedObject| {
        o.symbols
            .iter()
            .find(|s| s.name == name && s.kind != SymbolKind::Unknown)
            .map(|s| (o, s))
    };
    if let Some(object) = object {
        let mut named = space.objects_named(object).peekable();
        if named.peek().is_none() {
            return Err(no_object(pid, object, &what));
        }
        let found = named.find_map(find);
        // A library's exported global that the executable uses lives in the executable's copy
        // (a copy relocation): that copy is the one the program locks.
        let exe_copy = found.and_then(|(_, s)| {
            s.dynamic
                .then(|| {
                    space
                        .objects
                        .iter()
                        .filter(|o| o.is_executable)
                        .find_map(find)
                })
                .flatten()
                .filter(|(_, es)| es.dynamic && es.kind == SymbolKind::Data)
        });
        return exe_copy.or(found).ok_or_else(|| {
            user(
                Exit::Usage,
                format!(
                    "{what}: {object} has no symbol {name}: check the name (nm -D or nm on the file; \
                     static variables need the file's symbol table, which stripping removes)"
                ),
            )
        });
    }
    space.objects.iter().find_map(find).ok_or_else(|| {
        user(
            Exit::Usage,
            format!(
                "{what}: no object in PID {pid} has a symbol {name} (searched {}): check the name, \
                 or pass OBJECT:SYMBOL or 0xADDRESS",
                searched(space)
            ),
        )
    })
}

/// A function for `--lock-fns`: in the named object, else the first object that defines it.
pub fn resolve_function(
    space: &AddressSpace,
    pid: u32,
    f: &FnName,
    what: &str,
) -> anyhow::Result<Function> {
    let objects: Vec<&MappedObject> = match &f.object {
        Some(o) => {
            let v: Vec<_> = space.objects_named(o).collect();
            if v.is_empty() {
                return Err(no_object(pid, o, what));
            }
            v
        }
        None => space.objects.iter().collect(),
    };
    for obj in objects {
        let Some(sym) = obj.symbols.iter().find(|s| s.name == f.name) else {
            continue;
        };
        if sym.kind != SymbolKind::Text {
            return Err(user(
                Exit::Usage,
                format!("{what}: {} in {} is not a function", f.name, obj.file.path),
            ));
        }
        let off = obj
            .elf()
            .and_then(|elf| file_offset(&elf, sym.address))
            .ok_or_else(|| {
                anyhow::anyhow!("{} in {} is outside every segment", f.name, obj.file.path)
            })?;
        return Ok(Function {
            symbol: format!("{}:{}", obj.file_name(), f.name),
            open_path: obj.file.open_path.clone(),
            file_offset: off,
        });
    }
    Err(user(
        Exit::Usage,
        format!(
            "{what}: no object in PID {pid} has a function {f} (searched {}): check the name \
             (static functions need the file's symbol table; C++ names are mangled: use the name nm prints)",
            searched(space)
        ),
    ))
}
