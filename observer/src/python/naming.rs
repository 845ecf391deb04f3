//! Python `threading.Thread` names of a live CPython process, read from outside.
//!
//! Route: `_PyRuntime` → main interpreter → its modules dict (`sys.modules`) → `threading` →
//! the module's `__dict__` → `_active` (ident → Thread) → each Thread's `_name`. The ident is
//! `pthread_self()`, which every `PyThreadState` carries as `thread_id`; the caller pairs
//! kernel TIDs with `PyThreadState*` (a take_gil probe sees both), and on 3.11+ the
//! interpreter's thread list also carries the kernel TID (`native_thread_id`).
//!
//! The target keeps running while we read: every pointer may be stale, every size may be
//! garbage. So every loop is bounded, every length is capped, and a bad entry is skipped
//! rather than allowed to spoil the rest.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};

use super::memory::{ReadBudget, RemoteMemory};
use crate::target::process::Process;

/// Python names longer than this many code points are cut (no real thread name comes close).
const MAX_NAME_CHARS: u64 = 256;
/// `sys.modules` of a big application holds a few thousand entries; anything past this is
/// corrupt or being rebuilt under us.
const MAX_DICT_ENTRIES: u64 = 1 << 17;
const MAX_THREADS: usize = 1 << 14;
const MAX_INTERPRETERS: usize = 256;
/// What one naming pass may read from the target (calls, bytes): a real one takes a few
/// thousand reads; garbage must not turn the bounded structures into hours of reading.
const READ_BUDGET: (u64, u64) = (1 << 18, 256 << 20);

// Type flags (Include/object.h), unchanged 3.7–3.14.
const TPFLAGS_INLINE_VALUES: u64 = 1 << 2; // 3.13+
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4; // 3.11+
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;

// Fixed on x86_64 for every version handled here (offsetof() against each build's headers).
const OB_TYPE: u64 = 8;
const TP_BASICSIZE: u64 = 32;
const TP_FLAGS: u64 = 168;
const TP_DICTOFFSET: u64 = 288;
/// Bytes of `PyTypeObject` we fetch in one read to get the three fields above.
const TYPE_HEAD_LEN: usize = 296;
const MD_DICT: u64 = 16;
const MA_USED: u64 = 16;
const MA_KEYS: u64 = 32;
const MA_VALUES: u64 = 40;
const UNICODE_LENGTH: u64 = 16;
const UNICODE_STATE: u64 = 32;
const LONG_SIZE_OR_TAG: u64 = 16;
const LONG_DIGITS: u64 = 24;
/// `tstate->next` is the second pointer of `PyThreadState` in every version.
const TSTATE_NEXT: u64 = 8;

/// How a dict's keys object is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DictKeys {
    /// 3.6–3.10 (Objects/dict-common.h): refcnt, dk_size, dk_lookup, dk_usable, dk_nentries,
    /// then indices whose width depends on dk_size, then 24-byte {hash, key, value} entries.
    Sized,
    /// 3.11+ (pycore_dict.h): refcnt, dk_log2_size u8, dk_log2_index_bytes u8, dk_kind u8,
    /// dk_version, dk_usable, dk_nentries, indices; entries are 24-byte {hash, key, value}
    /// for DICT_KEYS_GENERAL and 16-byte {key, value} for unicode and split keys.
    Log2,
}

/// Where an instance keeps its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstanceDict {
    /// ≤3.10: a dict pointer at `tp_dictoffset`.
    DictOffset,
    /// 3.11: dict pointer at obj-24, else `PyDictValues*` at obj-32 (keys: ht_cached_keys).
    Managed311,
    /// 3.12: one tagged word at obj-24: a dict, or (low bit set) values pointer minus one.
    Managed312,
    /// 3.13+: dict pointer at obj-24, else values stored inline after the object.
    Inline313,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LongRepr {
    /// ≤3.11: `ob_size` is the signed digit count.
    ObSize,
    /// 3.12+: `lv_tag` = ndigits << 3 | sign (0 positive, 1 zero, 2 negative).
    LvTag,
}

/// Per-minor-version offsets (x86_64, default GIL builds).
///
/// How checked: every number was printed by a C program compiled with -DPy_BUILD_CORE
/// against the build's own headers (offsetof/sizeof), for pyenv 3.7.16, 3.8.18, 3.9.18,
/// 3.10.13, 3.11.7, 3.12.1, 3.13.0 and Debian's 3.11.2 (libpython3.11-dev headers, which match
/// 3.11.7 on every field here), then exercised against live processes by the tests below.
/// 3.13+ prefer the `_Py_DebugOffsets` table at the start of `_PyRuntime` for the runtime,
/// interpreter and thread-state fields, since those move between patch releases; that path
/// is exercised against Debian sid's 3.13.18, 3.14.10 and 3.15.2 (stripped, static, PGO+LTO).
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// `_PyRuntime.interpreters.main`.
    runtime_interp_main: u64,
    /// `interp->modules` (≤3.11) / `interp->imports.modules` (3.12+).
    interp_modules: u64,
    /// `interp->tstate_head` (≤3.10) / `interp->threads.head`.
    interp_threads_head: u64,
    tstate_thread_id: u64,
    /// 3.11+ only.
    tstate_native_thread_id: Option<u64>,
    /// `tstate->interp`, known only from `_Py_DebugOffsets` (3.13+); used to check the walk.
    tstate_interp: Option<u64>,
    /// `offsetof(PyHeapTypeObject, ht_cached_keys)`: the shared keys of inline/split values.
    ht_cached_keys: u64,
    dict_keys: DictKeys,
    /// Where the `PyObject*` array starts inside `PyDictValues` (3.13 put four bytes first).
    values_array: u64,
    instance_dict: InstanceDict,
    /// `sizeof(PyASCIIObject)`: compact ASCII data follows it.
    ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: compact non-ASCII data follows it.
    compact_size: u64,
    /// `PyUnicodeObject.data`: the data pointer of legacy (non-compact) strings.
    legacy_data: u64,
    /// ≤3.11 strings can be "not ready" (only wstr); their `state.ready` bit must be checked.
    has_ready_bit: bool,
    long_repr: LongRepr,
}

#[cfg(test)]
thread_local! {
    /// Which attribute-storage paths a test exercised, so tests can prove coverage.
    static PATHS: std::cell::RefCell<HashSet<&'static str>> = Default::default();
}

fn note_path(_path: &'static str) {
    #[cfg(test)]
    PATHS.with(|p| p.borrow_mut().insert(_path));
}

const fn layout_for(minor: u8) -> Option<Layout> {
    let base = Layout {
        runtime_interp_main: 40,
        interp_modules: 856,
        interp_threads_head: 8,
        tstate_thread_id: 176,
        tstate_native_thread_id: None,
        // `prev, next, interp` open PyThreadState in every version (checked live 3.7–3.15).
        tstate_interp: Some(16),
        ht_cached_keys: 872,
        dict_keys: DictKeys::Sized,
        values_array: 0,
        instance_dict: InstanceDict::DictOffset,
        ascii_size: 48,
        compact_size: 72,
        legacy_data: 72,
        has_ready_bit: true,
        long_repr: LongRepr::ObSize,
    };
    Some(match minor {
        7 => Layout {
            runtime_interp_main: 32,
            interp_modules: 40,
            ht_cached_keys: 856,
            ..base
        },
        8 => Layout {
            interp_modules: 56,
            ..base
        },
        9 => Layout {
            ht_cached_keys: 864,
            ..base
        },
        10 => base,
        // Debian's 3.11.2 agrees with 3.11.7 on every field.
        11 => Layout {
            runtime_interp_main: 48,
            interp_modules: 888,
            interp_threads_head: 16,
            tstate_thread_id: 152,
            tstate_native_thread_id: Some(160),
            dict_keys: DictKeys::Log2,
            instance_dict: InstanceDict::Managed311,
            ..base
        },
        12 => Layout {
            runtime_interp_main: 48,
            interp_modules: 944,
            interp_threads_head: 72,
            tstate_thread_id: 136,
            tstate_native_thread_id: Some(144),
            ht_cached_keys: 880,
            dict_keys: DictKeys::Log2,
            instance_dict: InstanceDict::Managed312,
            ascii_size: 40,
            compact_size: 56,
            legacy_data: 56,
            has_ready_bit: false,
            long_repr: LongRepr::LvTag,
            ..base
        },
        // 3.14 and 3.15 start from 3.13's object layouts; the debug-offsets table then
        // overrides the runtime/interpreter/thread fields and the string/type sizes (see
        // `apply_debug_offsets`), which is what moved in Debian's 3.13.18, 3.14.10, 3.15.2.
        13..=15 => Layout {
            runtime_interp_main: 640,
            interp_modules: 7656,
            interp_threads_head: 7344,
            tstate_thread_id: 152,
            tstate_native_thread_id: Some(160),
            tstate_interp: Some(16),
            ht_cached_keys: 880,
            dict_keys: DictKeys::Log2,
            values_array: 8,
            instance_dict: InstanceDict::Inline313,
            ascii_size: 40,
            compact_size: 56,
            legacy_data: 56,
            has_ready_bit: false,
            long_repr: LongRepr::LvTag,
        },
        _ => return None,
    })
}

/// Where the entries we use sit inside `_Py_DebugOffsets` (byte positions from its start).
///
/// The table's own layout changes between minors: sub-structs gain fields in the middle, so
/// every later position moves. 3.13: Include/internal/pycore_runtime.h. 3.14:
/// pycore_debug_offsets.h (interpreter_state gained threads_main, code_object_generation and
/// tlbc_generation; interpreter_frame, code_object gained fields; a set_object block appeared
/// before dict_object). 3.15: thread_state grew to 17 entries and type_object to 8; positions
/// read from Debian's 3.15.2 table and checked against live values (ctypes: PyThreadState_Get,
/// threading.get_ident/get_native_id, id(sys.modules)). Whatever the positions, the entries
/// are checked against facts the reader relies on anyway (see `DebugTable::check`), so a
/// wrong position fails loudly instead of yielding wrong offsets.
#[derive(Clone, Copy, Debug)]
struct DebugTable {
    /// `runtime_state` block: size, finalizing, interpreters_head.
    runtime: u64,
    /// `interpreter_state` block: size, id, next, threads_head, … (same order 3.13–3.15);
    /// `imports_modules` sits at the position below.
    interp: u64,
    interp_imports_modules: u64,
    /// `thread_state` block: size, prev, next, interp, current_frame, … (same order 3.13–3.15).
    tstate: u64,
    tstate_thread_id: u64,
    tstate_native_thread_id: u64,
    /// `pyobject` block: size, ob_type.
    pyobject: u64,
    /// `type_object` block: size, tp_name, tp_repr, tp_flags.
    type_object: u64,
    /// `dict_object` block: size, ma_keys, ma_values.
    dict_object: u64,
    /// `long_object` block: size, lv_tag, ob_digit.
    long_object: u64,
    /// `unicode_object` block: size, state, length, asciiobject_size.
    unicode_object: u64,
}

/// Bytes of `_Py_DebugOffsets` fetched in one read: covers every position used for 3.13–3.15.
const DEBUG_TABLE_LEN: usize = 768;

fn debug_table(minor: u8) -> Option<DebugTable> {
    match minor {
        // Same in 3.13.0 and 3.13.18 (only the values differ).
        13 => Some(DebugTable {
            runtime: 24,
            interp: 48,
            interp_imports_modules: 88,
            tstate: 152,
            tstate_thread_id: 192,
            tstate_native_thread_id: 200,
            pyobject: 352,
            type_object: 368,
            dict_object: 448,
            long_object: 488,
            unicode_object: 536,
        }),
        14 => Some(DebugTable {
            runtime: 24,
            interp: 48,
            interp_imports_modules: 96,
            tstate: 176,
            tstate_thread_id: 216,
            tstate_native_thread_id: 224,
            pyobject: 400,
            type_object: 416,
            dict_object: 528,
            long_object: 568,
            unicode_object: 616,
        }),
        15 => Some(DebugTable {
            runtime: 24,
            interp: 48,
            interp_imports_modules: 96,
            tstate: 176,
            tstate_thread_id: 240,
            tstate_native_thread_id: 248,
            pyobject: 464,
            type_object: 480,
            dict_object: 624,
            long_object: 664,
            unicode_object: 712,
        }),
        _ => None,
    }
}

/// What a validated `_Py_DebugOffsets` says about the structs we walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DebugValues {
    interpreters_head: u64,
    interp_id: u64,
    interp_next: u64,
    interp_threads_head: u64,
    interp_imports_modules: u64,
    tstate_interp: u64,
    tstate_thread_id: u64,
    tstate_native_thread_id: u64,
    type_size: u64,
    ascii_size: u64,
}

impl DebugTable {
    /// Reads the entries out of `raw` (the table's first `DEBUG_TABLE_LEN` bytes, cookie and
    /// version already checked) and checks them: struct sizes plausible, every offset inside
    /// its struct, and the entries whose values the reader hard-codes equal to those values.
    fn check(&self, raw: &[u8]) -> Result<DebugValues> {
        let at = |pos: u64| -> Result<u64> {
            let pos = usize::try_from(pos)?;
            let bytes = raw
                .get(pos..pos + 8)
                .with_context(|| format!("_Py_DebugOffsets position {pos} out of range"))?;
            Ok(u64::from_ne_bytes(word(bytes, 0)))
        };
        let sized = |pos: u64, what: &str, range: std::ops::RangeInclusive<u64>| -> Result<u64> {
            let v = at(pos)?;
            if !range.contains(&v) {
                bail!("_Py_DebugOffsets: implausible sizeof({what}) {v} at +{pos}");
            }
            Ok(v)
        };
        let inside = |pos: u64, size: u64, what: &str| -> Result<u64> {
            let v = at(pos)?;
            if v.saturating_add(8) > size {
                bail!(
                    "_Py_DebugOffsets: {what} offset {v} (at +{pos}) outside a {size}-byte struct"
                );
            }
            Ok(v)
        };
        let expect = |pos: u64, want: u64, what: &str| -> Result<()> {
            let v = at(pos)?;
            if v != want {
                bail!(
                    "_Py_DebugOffsets: {what} is {v} (at +{pos}), expected {want}: table layout not understood"
                );
            }
            Ok(())
        };
        // Sizes: _PyRuntimeState ~280–350 KB and PyInterpreterState ~190–230 KB in 3.13–3.15.
        let runtime_size = sized(self.runtime, "_PyRuntimeState", 4096..=(16 << 20))?;
        let interp_size = sized(self.interp, "PyInterpreterState", 1024..=(16 << 20))?;
        let tstate_size = sized(self.tstate, "PyThreadState", 64..=(64 << 10))?;
        let type_size = sized(self.type_object, "PyTypeObject", 256..=2048)?;
        // The reader's fixed offsets must agree with the table's.
        expect(self.pyobject + 8, OB_TYPE, "PyObject.ob_type")?;
        expect(self.type_object + 24, TP_FLAGS, "PyTypeObject.tp_flags")?;
        expect(self.dict_object + 8, MA_KEYS, "PyDictObject.ma_keys")?;
        expect(self.dict_object + 16, MA_VALUES, "PyDictObject.ma_values")?;
        expect(
            self.long_object + 8,
            LONG_SIZE_OR_TAG,
            "PyLongObject.lv_tag",
        )?;
        expect(self.long_object + 16, LONG_DIGITS, "PyLongObject.ob_digit")?;
        expect(
            self.unicode_object + 8,
            UNICODE_STATE,
            "PyASCIIObject.state",
        )?;
        expect(
            self.unicode_object + 16,
            UNICODE_LENGTH,
            "PyASCIIObject.length",
        )?;
        expect(self.tstate + 16, TSTATE_NEXT, "PyThreadState.next")?;
        let ascii_size = sized(self.unicode_object + 24, "PyASCIIObject", 32..=128)?;
        Ok(DebugValues {
            interpreters_head: inside(self.runtime + 16, runtime_size, "interpreters.head")?,
            interp_id: inside(self.interp + 8, interp_size, "interp id")?,
            interp_next: inside(self.interp + 16, interp_size, "interp next")?,
            interp_threads_head: inside(self.interp + 24, interp_size, "threads.head")?,
            interp_imports_modules: inside(
                self.interp_imports_modules,
                interp_size,
                "imports.modules",
            )?,
            tstate_interp: inside(self.tstate + 24, tstate_size, "tstate interp")?,
            tstate_thread_id: inside(self.tstate_thread_id, tstate_size, "thread_id")?,
            tstate_native_thread_id: inside(
                self.tstate_native_thread_id,
                tstate_size,
                "native_thread_id",
            )?,
            type_size,
            ascii_size,
        })
    }
}

/// Bytes between `sizeof(PyTypeObject)` and `ht_cached_keys` in `PyHeapTypeObject` (3.10+:
/// the five method suites plus ht_name, ht_slots, ht_qualname).
const HEAPTYPE_CACHED_KEYS_AFTER_TYPE: u64 = 464;

/// Python thread names keyed by kernel TID.
///
/// Address arithmetic below is wrapping on purpose: pointers come from a process that may be
/// rewriting them, and a wrapped address fails in `ProcessMemory::read` instead of panicking.
///
/// `tstates` maps kernel TID → `PyThreadState*` (e.g. from a take_gil probe). On 3.11+ the
/// interpreter's own thread list is walked as well, so TIDs missing from `tstates` are found
/// too. Threads not registered in `threading._active` (bare `_thread.start_new_thread`) have
/// no name and are absent from the result. 3.6 and older give an empty map.
pub fn thread_names(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
    tstates: &HashMap<u32, u64>,
) -> Result<HashMap<u32, String>> {
    let (major, minor) = version;
    if major != 3 || minor < 7 {
        // No `_PyRuntime` before 3.7; naming threads there is not supported.
        return Ok(HashMap::new());
    }
    let budget = ReadBudget::new(mem, READ_BUDGET.0, READ_BUDGET.1);
    let names = thread_names_within(&budget, version, runtime_addr, tstates);
    if budget.exhausted() {
        bail!("gave up reading thread names: the interpreter's structures look corrupt");
    }
    names
}

fn thread_names_within(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
    tstates: &HashMap<u32, u64>,
) -> Result<HashMap<u32, String>> {
    let (mut reader, interp) = Reader::at_main_interpreter(mem, version, runtime_addr)?;
    let layout = reader.layout;

    let by_ident = reader
        .active_thread_names(interp)
        .context("reading threading._active")?;

    // TIDs read from the interpreter's memory are the ones the process sees: in a container
    // (its own PID namespace) they differ from ours.
    let here = Process { pid: mem.pid() }.namespace_tids();
    let mut out = HashMap::new();
    for (&tid, &tstate) in tstates {
        // A stale thread state (its thread gone, its memory reused) must not lend a name.
        if let Some(off) = layout.tstate_interp {
            if mem.read_u64(tstate.wrapping_add(off)).ok() != Some(interp) {
                continue;
            }
        }
        let Ok(ident) = mem.read_u64(tstate.wrapping_add(layout.tstate_thread_id)) else {
            continue;
        };
        if let Some(name) = by_ident.get(&ident) {
            out.insert(tid, name.clone());
        }
    }
    if let Some(native_off) = layout.tstate_native_thread_id {
        // A failed walk only loses threads the caller did not already give us.
        if let Ok(pairs) = reader.walk_threads(interp, native_off) {
            for (tid, ident) in pairs {
                let (Some(name), Some(&tid)) = (by_ident.get(&ident), here.get(&tid)) else {
                    continue;
                };
                out.entry(tid).or_insert_with(|| name.clone());
            }
        }
    } else if out.len() < by_ident.len() {
        // 3.7–3.10 keep no kernel TID, and a caller without a take_gil probe (the symbol-free
        // strategy) cannot pair TIDs with thread states. The ident is pthread_self(), the
        // address of glibc's struct pthread, which records the kernel TID.
        for (&ident, name) in &by_ident {
            let Ok(raw) = mem.read_u64(ident.wrapping_add(GLIBC_PTHREAD_TID)) else {
                continue;
            };
            if let Some(&tid) = here.get(&(raw as u32)) {
                out.entry(tid).or_insert_with(|| name.clone());
            }
        }
    }
    Ok(out)
}

/// Offset of `tid` in glibc's `struct pthread` on x86_64 (checked on glibc 2.36 and 2.43:
/// unchanged for years). Only a value that is a live TID of the process is believed.
const GLIBC_PTHREAD_TID: u64 = 0x2d0;

/// The main interpreter's `PyInterpreterState*` (3.7+; 3.13+ through `_Py_DebugOffsets`).
pub fn main_interpreter(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
) -> Result<u64> {
    Reader::at_main_interpreter(mem, version, runtime_addr).map(|(_, interp)| interp)
}

impl<'a> Reader<'a> {
    /// A reader with this version's layout (refreshed from `_Py_DebugOffsets` on 3.13+), and the
    /// main interpreter it found.
    fn at_main_interpreter(
        mem: &'a dyn RemoteMemory,
        version: (u8, u8),
        runtime_addr: u64,
    ) -> Result<(Self, u64)> {
        let (major, minor) = version;
        let mut layout = layout_for(minor)
            .with_context(|| format!("Python {major}.{minor} is not supported"))?;
        let mut reader = Reader {
            mem,
            layout,
            types: HashMap::new(),
        };
        let interp = reader.main_interpreter(minor, runtime_addr, &mut layout)?;
        reader.layout = layout;
        Ok((reader, interp))
    }
}

#[derive(Clone, Copy)]
struct TypeInfo {
    flags: u64,
    basicsize: u64,
    dictoffset: i64,
}

struct Reader<'a> {
    mem: &'a dyn RemoteMemory,
    layout: Layout,
    /// Types are few (str, int, dict, Thread subclasses) and never move while alive.
    types: HashMap<u64, TypeInfo>,
}

impl Reader<'_> {
    fn ptr(&self, addr: u64) -> Result<u64> {
        self.mem
            .read_u64(addr)
            .with_context(|| format!("reading pointer at {addr:#x}"))
    }

    fn nonnull(&self, addr: u64, what: &str) -> Result<u64> {
        let p = self.ptr(addr)?;
        if p == 0 {
            bail!("{what} is NULL (read at {addr:#x})");
        }
        Ok(p)
    }

    /// Finds the main interpreter; on 3.13+ also refreshes `layout` from the debug table.
    fn main_interpreter(&mut self, minor: u8, runtime: u64, layout: &mut Layout) -> Result<u64> {
        if let Some(table) = debug_table(minor) {
            match self.apply_debug_offsets(minor, runtime, &table, layout) {
                Ok(Some(interp)) => return Ok(interp),
                // 3.13 builds without the table keep the static layout (checked on 3.13.0).
                Ok(None) if minor == 13 => {}
                Ok(None) => bail!("no _Py_DebugOffsets cookie at _PyRuntime {runtime:#x}"),
                Err(e) => return Err(e),
            }
        }
        let interp = self.nonnull(
            runtime.wrapping_add(layout.runtime_interp_main),
            "_PyRuntime.interpreters.main",
        )?;
        // Garbage there would pass for an interpreter: its first thread state must name it.
        let head = self.nonnull(
            interp.wrapping_add(layout.interp_threads_head),
            "main interpreter's thread list",
        )?;
        if let Some(off) = layout.tstate_interp {
            let owner = self.ptr(head.wrapping_add(off))?;
            if owner != interp {
                bail!("{interp:#x} is not an interpreter: its first thread state names {owner:#x}");
            }
        }
        Ok(interp)
    }

    /// Ok(None) when `_PyRuntime` carries no debug table (so the static layout stands).
    fn apply_debug_offsets(
        &mut self,
        minor: u8,
        runtime: u64,
        table: &DebugTable,
        layout: &mut Layout,
    ) -> Result<Option<u64>> {
        let mut raw = [0u8; DEBUG_TABLE_LEN];
        self.mem
            .read(runtime, &mut raw)
            .with_context(|| format!("reading _Py_DebugOffsets at {runtime:#x}"))?;
        if &raw[..8] != b"xdebugpy" {
            return Ok(None);
        }
        let hex = u64::from_ne_bytes(word(&raw, 8));
        let (vmaj, vmin) = ((hex >> 24) & 0xff, (hex >> 16) & 0xff);
        if vmaj != 3 || vmin != u64::from(minor) || hex >> 32 != 0 {
            bail!("_PyRuntime says version {hex:#x}, expected 3.{minor}");
        }
        if u64::from_ne_bytes(word(&raw, 16)) != 0 {
            bail!("free-threaded CPython builds are not supported");
        }
        let v = table
            .check(&raw)
            .with_context(|| format!("_Py_DebugOffsets of Python {hex:#x}"))?;
        layout.interp_threads_head = v.interp_threads_head;
        layout.interp_modules = v.interp_imports_modules;
        layout.tstate_thread_id = v.tstate_thread_id;
        layout.tstate_native_thread_id = Some(v.tstate_native_thread_id);
        layout.tstate_interp = Some(v.tstate_interp);
        layout.ht_cached_keys = v.type_size + HEAPTYPE_CACHED_KEYS_AFTER_TYPE;
        layout.ascii_size = v.ascii_size;
        // utf8_length and utf8 follow the ASCII header in every version since 3.12.
        layout.compact_size = v.ascii_size + 16;
        layout.legacy_data = v.ascii_size + 16;
        self.layout = *layout;
        // New interpreters are pushed at the head, so the main one is the list's tail.
        let mut interp = self.nonnull(
            runtime.wrapping_add(v.interpreters_head),
            "interpreters.head",
        )?;
        let mut seen = HashSet::new();
        loop {
            if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
                bail!("interpreter list loops or is too long");
            }
            let next = self.ptr(interp.wrapping_add(v.interp_next))?;
            if next == 0 {
                break;
            }
            interp = next;
        }
        // The main interpreter's id is 0 (the id is an int64_t).
        let id = self.ptr(interp.wrapping_add(v.interp_id))?;
        if id != 0 {
            bail!("last interpreter at {interp:#x} has id {id}, not the main interpreter's 0");
        }
        Ok(Some(interp))
    }

    /// (kernel TID, pthread ident) of every thread state in the interpreter's list.
    fn walk_threads(&self, interp: u64, native_off: u64) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut ts = self.ptr(interp.wrapping_add(self.layout.interp_threads_head))?;
        while ts != 0 && seen.len() < MAX_THREADS && seen.insert(ts) {
            let native = self.ptr(ts.wrapping_add(native_off))?;
            let ident = self.ptr(ts.wrapping_add(self.layout.tstate_thread_id))?;
            // A thread state of another interpreter means the list (or offset) is wrong.
            if let Some(off) = self.layout.tstate_interp {
                let owner = self.ptr(ts.wrapping_add(off))?;
                if owner != interp {
                    bail!(
                        "thread state {ts:#x} belongs to interpreter {owner:#x}, not {interp:#x}"
                    );
                }
            }
            if let Ok(tid) = u32::try_from(native) {
                if tid != 0 {
                    out.push((tid, ident));
                }
            }
            ts = self.ptr(ts.wrapping_add(TSTATE_NEXT))?;
        }
        Ok(out)
    }

    fn type_info(&mut self, obj: u64) -> Result<TypeInfo> {
        let tp = self.nonnull(obj.wrapping_add(OB_TYPE), "ob_type")?;
        if let Some(t) = self.types.get(&tp) {
            return Ok(*t);
        }
        let mut buf = [0u8; TYPE_HEAD_LEN];
        self.mem
            .read(tp, &mut buf)
            .with_context(|| format!("reading type object at {tp:#x}"))?;
        let info = TypeInfo {
            flags: u64::from_ne_bytes(word(&buf, TP_FLAGS as usize)),
            basicsize: u64::from_ne_bytes(word(&buf, TP_BASICSIZE as usize)),
            dictoffset: i64::from_ne_bytes(word(&buf, TP_DICTOFFSET as usize)),
        };
        // Bounded: a corrupt stream of distinct type pointers must not grow this forever.
        if self.types.len() < 1024 {
            self.types.insert(tp, info);
        }
        Ok(info)
    }

    fn expect_flag(&mut self, obj: u64, flag: u64, what: &str) -> Result<TypeInfo> {
        let t = self.type_info(obj)?;
        if t.flags & flag == 0 {
            bail!(
                "object at {obj:#x} is not a {what} (tp_flags {:#x})",
                t.flags
            );
        }
        Ok(t)
    }

    fn active_thread_names(&mut self, interp: u64) -> Result<HashMap<u64, String>> {
        let modules = self.nonnull(
            interp.wrapping_add(self.layout.interp_modules),
            "interp modules",
        )?;
        self.expect_flag(modules, TPFLAGS_DICT_SUBCLASS, "dict (sys.modules)")?;
        let threading = self
            .dict_get(modules, "threading")?
            .context("module threading is not imported")?;
        let md_dict = self.nonnull(threading.wrapping_add(MD_DICT), "threading.__dict__")?;
        self.expect_flag(md_dict, TPFLAGS_DICT_SUBCLASS, "dict (module __dict__)")?;
        let active = self
            .dict_get(md_dict, "_active")?
            .context("threading has no _active")?;
        self.expect_flag(active, TPFLAGS_DICT_SUBCLASS, "dict (threading._active)")?;

        let mut names = HashMap::new();
        for (key, thread) in self.dict_items(active)? {
            // One unreadable thread (exiting right now, say) must not hide the others.
            let Ok(ident) = self.read_ident(key) else {
                continue;
            };
            if let Ok(name) = self.thread_name(thread) {
                names.insert(ident, name);
            }
        }
        Ok(names)
    }

    fn thread_name(&mut self, thread: u64) -> Result<String> {
        let name = self
            .instance_attr(thread, "_name")?
            .context("Thread has no _name")?;
        self.read_str(name)
    }

    /// An attribute from the instance's own namespace, wherever this version keeps it.
    fn instance_attr(&mut self, obj: u64, attr: &str) -> Result<Option<u64>> {
        let t = self.type_info(obj)?;
        let managed = t.flags & TPFLAGS_MANAGED_DICT != 0;
        match self.layout.instance_dict {
            _ if !managed => {
                if t.dictoffset <= 0 {
                    bail!(
                        "instance at {obj:#x} has no dict at a fixed offset (tp_dictoffset {})",
                        t.dictoffset
                    );
                }
                note_path("dictoffset");
                let dict = self.ptr(obj.wrapping_add(t.dictoffset as u64))?;
                self.dict_get_opt(dict, attr)
            }
            InstanceDict::DictOffset => bail!("managed dict flag on a pre-3.11 type"),
            InstanceDict::Managed311 => {
                let dict = self.ptr(obj.wrapping_sub(24))?;
                if dict != 0 {
                    note_path("managed dict");
                    return self.dict_get(dict, attr);
                }
                note_path("shared values");
                let values = self.ptr(obj.wrapping_sub(32))?;
                self.shared_keys_get(obj, values, attr)
            }
            InstanceDict::Managed312 => {
                let dorv = self.ptr(obj.wrapping_sub(24))?;
                if dorv & 1 != 0 {
                    note_path("shared values");
                    self.shared_keys_get(obj, dorv.wrapping_add(1), attr)
                } else {
                    note_path("managed dict");
                    self.dict_get_opt(dorv, attr)
                }
            }
            InstanceDict::Inline313 => {
                let dict = self.ptr(obj.wrapping_sub(24))?;
                if dict != 0 {
                    note_path("managed dict");
                    return self.dict_get(dict, attr);
                }
                note_path("shared values");
                if t.flags & TPFLAGS_INLINE_VALUES == 0 {
                    return Ok(None);
                }
                let values = obj.wrapping_add(t.basicsize);
                let mut head = [0u8; 4];
                self.mem.read(values, &mut head)?;
                // `valid` drops to 0 once a dict has taken the values over.
                if head[3] == 0 {
                    return Ok(None);
                }
                self.shared_keys_get(obj, values, attr)
            }
        }
    }

    fn dict_get_opt(&mut self, dict: u64, key: &str) -> Result<Option<u64>> {
        if dict == 0 {
            return Ok(None);
        }
        self.dict_get(dict, key)
    }

    /// Values held outside a dict, keyed by the type's shared (cached) keys.
    fn shared_keys_get(&mut self, obj: u64, values: u64, key: &str) -> Result<Option<u64>> {
        if values == 0 {
            return Ok(None);
        }
        let tp = self.nonnull(obj.wrapping_add(OB_TYPE), "ob_type")?;
        let keys = self.nonnull(
            tp.wrapping_add(self.layout.ht_cached_keys),
            "ht_cached_keys",
        )?;
        let items = self.keys_items(keys, Some(values))?;
        self.find_key(&items, key)
    }

    fn dict_get(&mut self, dict: u64, key: &str) -> Result<Option<u64>> {
        let items = self.dict_items(dict)?;
        self.find_key(&items, key)
    }

    fn find_key(&self, items: &[(u64, u64)], key: &str) -> Result<Option<u64>> {
        for &(k, v) in items {
            if self.str_equals(k, key).unwrap_or(false) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn dict_items(&self, dict: u64) -> Result<Vec<(u64, u64)>> {
        let mut buf = [0u8; 48];
        self.mem
            .read(dict, &mut buf)
            .with_context(|| format!("reading dict at {dict:#x}"))?;
        let used = i64::from_ne_bytes(word(&buf, MA_USED as usize));
        if !(0..=MAX_DICT_ENTRIES as i64).contains(&used) {
            bail!("dict at {dict:#x} claims {used} items");
        }
        let keys = u64::from_ne_bytes(word(&buf, MA_KEYS as usize));
        let values = u64::from_ne_bytes(word(&buf, MA_VALUES as usize));
        if keys == 0 {
            bail!("dict at {dict:#x} has no keys object");
        }
        self.keys_items(keys, (values != 0).then_some(values))
    }

    /// (key, value) pointer pairs, live entries only. With `values`, the dict is split: the
    /// keys object holds only keys, and value i lives in the separate values array.
    fn keys_items(&self, keys: u64, values: Option<u64>) -> Result<Vec<(u64, u64)>> {
        let mut head = [0u8; 40];
        self.mem
            .read(keys, &mut head)
            .with_context(|| format!("reading dict keys at {keys:#x}"))?;
        let (nentries, entries_at, entry_size, value_in_entry) = match self.layout.dict_keys {
            DictKeys::Sized => {
                let size = u64::from_ne_bytes(word(&head, 8));
                let nentries = i64::from_ne_bytes(word(&head, 32));
                if !size.is_power_of_two() || size > 4 * MAX_DICT_ENTRIES {
                    bail!("dict keys at {keys:#x}: bad dk_size {size}");
                }
                let index_width = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x1_0000..=0xffff_ffff => 4,
                    _ => 8,
                };
                (nentries, keys.wrapping_add(40 + size * index_width), 24, 16)
            }
            DictKeys::Log2 => {
                let log2_size = u64::from(head[8]);
                let log2_index_bytes = u64::from(head[9]);
                let kind = head[10];
                let nentries = i64::from_ne_bytes(word(&head, 24));
                if log2_size > 20 || log2_index_bytes > log2_size + 3 || kind > 2 {
                    bail!("dict keys at {keys:#x}: bad header {:?}", &head[8..11]);
                }
                // DICT_KEYS_GENERAL = 0 keeps the hash in each entry; unicode/split do not.
                let (size, value_at) = if kind == 0 { (24, 16) } else { (16, 8) };
                (
                    nentries,
                    keys.wrapping_add(32 + (1 << log2_index_bytes)),
                    size,
                    value_at,
                )
            }
        };
        if !(0..=MAX_DICT_ENTRIES as i64).contains(&nentries) {
            bail!("dict keys at {keys:#x} claims {nentries} entries");
        }
        let mut n = nentries as usize;
        let mut vals = Vec::new();
        if let Some(values) = values {
            let array = values.wrapping_add(self.layout.values_array);
            if self.layout.values_array != 0 {
                // 3.13+: `capacity` is the first byte of PyDictValues and bounds the array.
                let mut cap = [0u8; 1];
                self.mem.read(values, &mut cap)?;
                n = n.min(usize::from(cap[0]));
            }
            let mut raw = vec![0u8; n * 8];
            self.mem
                .read(array, &mut raw)
                .with_context(|| format!("reading dict values at {array:#x}"))?;
            vals = raw
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(word(c, 0)))
                .collect();
        }
        let mut raw = vec![0u8; n * entry_size];
        self.mem
            .read(entries_at, &mut raw)
            .with_context(|| format!("reading dict entries at {entries_at:#x}"))?;
        let key_at = entry_size - 16;
        let mut out = Vec::new();
        for (i, e) in raw.chunks_exact(entry_size).enumerate() {
            let key = u64::from_ne_bytes(word(e, key_at));
            let value = match values {
                Some(_) => vals.get(i).copied().unwrap_or(0),
                None => u64::from_ne_bytes(word(e, value_in_entry)),
            };
            // Deleted slots have a NULL value (and a NULL or dummy key).
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Cheap test for dict keys: one read, compact ASCII only (all identifiers are).
    fn str_equals(&self, obj: u64, want: &str) -> Result<bool> {
        let ascii = self.layout.ascii_size as usize;
        let mut buf = vec![0u8; ascii + want.len()];
        self.mem.read(obj, &mut buf)?;
        let length = i64::from_ne_bytes(word(&buf, UNICODE_LENGTH as usize));
        let state = u32::from_ne_bytes(word4(&buf, UNICODE_STATE as usize));
        Ok(state & 0x60 == 0x60 && length == want.len() as i64 && &buf[ascii..] == want.as_bytes())
    }

    /// A str's text, lenient: unpaired surrogates and bad code points become U+FFFD.
    fn read_str(&mut self, obj: u64) -> Result<String> {
        self.expect_flag(obj, TPFLAGS_UNICODE_SUBCLASS, "str")?;
        let mut head = [0u8; 40];
        self.mem.read(obj, &mut head)?;
        let length = i64::from_ne_bytes(word(&head, UNICODE_LENGTH as usize));
        let state = u32::from_ne_bytes(word4(&head, UNICODE_STATE as usize));
        if length < 0 {
            bail!("str at {obj:#x} has length {length}");
        }
        let kind = u64::from((state >> 2) & 7);
        let compact = state & 0x20 != 0;
        let ascii = state & 0x40 != 0;
        if self.layout.has_ready_bit && state & 0x80 == 0 {
            bail!("str at {obj:#x} is not ready (wstr only)");
        }
        if !matches!(kind, 1 | 2 | 4) {
            bail!("str at {obj:#x} has kind {kind}");
        }
        let data = match (compact, ascii) {
            (true, true) => obj.wrapping_add(self.layout.ascii_size),
            (true, false) => obj.wrapping_add(self.layout.compact_size),
            (false, _) => self.nonnull(obj.wrapping_add(self.layout.legacy_data), "str data")?,
        };
        let chars = (length as u64).min(MAX_NAME_CHARS);
        let mut raw = vec![0u8; (chars * kind) as usize];
        self.mem.read(data, &mut raw)?;
        let text = match kind {
            // Latin-1: each byte is its own code point.
            1 => raw.iter().map(|&b| char::from(b)).collect(),
            2 => raw
                .chunks_exact(2)
                .map(|c| to_char(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
                .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| to_char(u32::from_ne_bytes(word4(c, 0))))
                .collect(),
        };
        Ok(text)
    }

    /// The int key of `_active`: a pthread_t, so non-negative and at most 64 bits.
    fn read_ident(&mut self, obj: u64) -> Result<u64> {
        self.expect_flag(obj, TPFLAGS_LONG_SUBCLASS, "int")?;
        let mut head = [0u8; 40];
        self.mem.read(obj, &mut head)?;
        let tag = i64::from_ne_bytes(word(&head, LONG_SIZE_OR_TAG as usize));
        let ndigits = match self.layout.long_repr {
            LongRepr::ObSize => {
                if tag < 0 {
                    bail!("negative int at {obj:#x}");
                }
                tag as u64
            }
            LongRepr::LvTag => {
                if tag & 3 == 2 {
                    bail!("negative int at {obj:#x}");
                }
                (tag as u64) >> 3
            }
        };
        // 30-bit digits: three cover 64 bits; 40 bytes of head hold digits 0..3.
        if ndigits > 3 {
            bail!("int at {obj:#x} has {ndigits} digits, too big for a thread ident");
        }
        let mut value: u128 = 0;
        for i in 0..ndigits as usize {
            let at = LONG_DIGITS as usize + 4 * i;
            let digit = u32::from_ne_bytes(word4(&head, at)) & 0x3fff_ffff;
            value |= u128::from(digit) << (30 * i);
        }
        u64::try_from(value).with_context(|| format!("int at {obj:#x} exceeds 64 bits"))
    }
}

fn to_char(c: u32) -> char {
    char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// 8 bytes at `at`; callers size their buffers so this is always in bounds, and a short slice
/// yields zeros rather than a panic.
fn word(buf: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    w
}

fn word4(buf: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    w
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests {
    //! Live tests: start a real interpreter with named threads, read it from outside, compare
    //! with what the interpreter says about itself.

    use super::*;
    use crate::python::memory::ProcessMemory;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    /// Each thread reports (kernel tid, ident, PyThreadState*, UTF-8 name as hex). The bare
    /// `_thread` one reports an empty name: it is not in `_active`, so must stay unnamed.
    const SCRIPT: &str = r#"
import ctypes, sys, threading, _thread
libc = ctypes.CDLL(None)
ctypes.pythonapi.PyThreadState_Get.restype = ctypes.c_void_p
lock = threading.Lock()
ready = threading.Semaphore(0)
stop = threading.Event()
lines = []
def report(name):
    with lock:
        lines.append("T %d %d %d %s" % (libc.syscall(186), _thread.get_ident(),
                     ctypes.pythonapi.PyThreadState_Get(), name.encode("utf-8").hex()))
def named():
    report(threading.current_thread().name)
    ready.release()
    stop.wait()
def bare():
    report("")
    ready.release()
    stop.wait()
names = ["io-1", "w\u00f6rker-2", "\u7ebf\u7a0b-3", "\U0001f9f5-4", "x" * 300, "dict-5"]
threads = [threading.Thread(name=n, target=named, daemon=True) for n in names]
for t in threads:
    t.start()
_thread.start_new_thread(bare, ())
for _ in range(len(names) + 1):
    ready.acquire()
# Materialize the instance __dict__ of one thread (3.11+ otherwise keep inline values).
vars(threads[5])["extra"] = 1
# A rename after start must show: we read the live attribute.
threads[0].name = "renamed-io-1"
lines = [l.replace("696f2d31", "72656e616d65642d696f2d31", 1) if l.endswith(" 696f2d31") else l
         for l in lines]
report(threading.current_thread().name)
runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
print("R %d" % runtime)
if hasattr(ctypes.pythonapi, "PyInterpreterState_Main"):
    ctypes.pythonapi.PyInterpreterState_Main.restype = ctypes.c_void_p
    print("I %d" % ctypes.pythonapi.PyInterpreterState_Main())
print("V %d" % sys.hexversion)
for l in lines:
    print(l)
print("READY", flush=True)
sys.stdin.read()
"#;

    struct Seen {
        tid: u32,
        tstate: u64,
        name: String,
    }

    struct Target {
        child: Child,
        runtime: u64,
        /// `PyInterpreterState_Main()` as the target sees it (0 if it has no such function).
        main_interp: u64,
        hexversion: u64,
        threads: Vec<Seen>,
    }

    impl Drop for Target {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn hex_to_string(h: &str) -> String {
        let bytes: Vec<u8> = (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Runs SCRIPT under `argv` (a python, or `chroot ROOT /usr/bin/python3.X`: chroot execs
    /// the python, so the child's PID is the interpreter's).
    fn start(argv: &[String]) -> Target {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let stdout = child.stdout.take().expect("stdout");
        let mut target = Target {
            child,
            runtime: 0,
            main_interp: 0,
            hexversion: 0,
            threads: Vec::new(),
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read line");
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "R" => target.runtime = f[1].parse().expect("runtime"),
                "I" => target.main_interp = f[1].parse().expect("interp"),
                "V" => target.hexversion = f[1].parse().expect("version"),
                "T" => target.threads.push(Seen {
                    tid: f[1].parse().expect("tid"),
                    tstate: f[3].parse().expect("tstate"),
                    name: hex_to_string(f.get(4).copied().unwrap_or("")),
                }),
                "READY" => break,
                _ => panic!("unexpected line {line}"),
            }
        }
        assert_ne!(target.runtime, 0, "script gave no runtime address");
        target
    }

    /// First pyenv build of 3.`minor`, if installed.
    fn pyenv(minor: u8) -> Option<String> {
        let prefix = format!("3.{minor}.");
        let mut dirs: Vec<_> = std::fs::read_dir("/root/.pyenv/versions")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        dirs.sort();
        let bin = format!("/root/.pyenv/versions/{}/bin/python3", dirs.first()?);
        std::path::Path::new(&bin).exists().then_some(bin)
    }

    fn check(python: Option<String>, minor: u8) {
        check_argv(python.map(|p| vec![p]), minor);
    }

    /// A missing interpreter fails under `cargo xtask test` (GILWATCH_REQUIRE_FIXTURES), and is
    /// skipped out loud under a developer's plain `cargo test -- --ignored`.
    fn missing_fixture(what: &str) {
        let required = std::env::var_os("GILWATCH_REQUIRE_FIXTURES")
            .is_some_and(|v| v != "0" && !v.is_empty());
        assert!(
            !required,
            "{what} is missing (`cargo xtask test` provides it)"
        );
        eprintln!("note: {what} is missing, skipping it");
    }

    fn check_argv(argv: Option<Vec<String>>, minor: u8) -> Option<Target> {
        let Some(argv) = argv else {
            missing_fixture(&format!("Python 3.{minor}"));
            return None;
        };
        let python = argv.join(" ");
        let target = start(&argv);
        assert_eq!(
            (target.hexversion >> 16) & 0xffff,
            0x0300 | u64::from(minor),
            "{python}: sys.hexversion {:#x}",
            target.hexversion
        );
        let mem = ProcessMemory::new(target.child.id());
        if target.main_interp != 0 {
            let interp = main_interpreter(&mem, (3, minor), target.runtime)
                .unwrap_or_else(|e| panic!("{python}: main_interpreter: {e:#}"));
            assert_eq!(
                interp, target.main_interp,
                "{python}: main_interpreter disagrees with PyInterpreterState_Main()"
            );
        }
        let expected: HashMap<u32, String> = target
            .threads
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| {
                (
                    t.tid,
                    t.name.chars().take(MAX_NAME_CHARS as usize).collect(),
                )
            })
            .collect();
        assert_eq!(
            expected.len(),
            7,
            "script reported {} named threads",
            expected.len()
        );
        let mut tstates: HashMap<u32, u64> =
            target.threads.iter().map(|t| (t.tid, t.tstate)).collect();
        // A stale or garbage tstate from the caller must be skipped, not fail the rest.
        tstates.insert(u32::MAX, u64::MAX - 2);
        tstates.insert(u32::MAX - 1, 8);

        PATHS.with(|p| p.borrow_mut().clear());
        let got = thread_names(&mem, (3, minor), target.runtime, &tstates)
            .unwrap_or_else(|e| panic!("{python}: {e:#}"));
        assert_eq!(got, expected, "{python}, tid → tstate given");
        let paths = PATHS.with(|p| p.borrow().clone());
        let want: &[&str] = if minor >= 11 {
            &["managed dict", "shared values"]
        } else {
            &["dictoffset"]
        };
        for w in want {
            assert!(
                paths.contains(w),
                "{python}: path {w:?} not exercised: {paths:?}"
            );
        }

        if minor >= 11 {
            // The interpreter's own thread list must be enough on its own.
            let got = thread_names(&mem, (3, minor), target.runtime, &HashMap::new())
                .unwrap_or_else(|e| panic!("{python}: {e:#}"));
            assert_eq!(got, expected, "{python}, thread list walked");
        }
        eprintln!("{python}: {} threads named correctly", got.len());
        Some(target)
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_7() {
        check(pyenv(7), 7);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_8() {
        check(pyenv(8), 8);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_9() {
        check(pyenv(9), 9);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_10() {
        check(pyenv(10), 10);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_11() {
        check(pyenv(11), 11);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_12() {
        check(pyenv(12), 12);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_3_13() {
        check(pyenv(13), 13);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_debian_3_11() {
        let bin = "/usr/bin/python3.11";
        check(
            std::path::Path::new(bin).exists().then(|| bin.to_string()),
            11,
        );
    }

    /// Debian sid's interpreters (stripped, static, PGO+LTO, non-PIE) in a debootstrap root.
    const SID: &str = "/var/lib/gilwatch-test/sid";

    /// `chroot SID /usr/bin/python3.X`, if the root has that interpreter.
    fn sid(minor: u8) -> Option<Vec<String>> {
        let bin = format!("/usr/bin/python3.{minor}");
        std::path::Path::new(&format!("{SID}{bin}"))
            .exists()
            .then(|| vec!["chroot".to_string(), SID.to_string(), bin])
    }

    /// `_PyRuntime` from the ELF's dynamic symbols, and whether the file is position-dependent
    /// (then that address is the runtime address as is).
    fn elf_runtime(path: &str) -> Option<(u64, bool)> {
        use object::{Object, ObjectKind, ObjectSymbol};
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let addr = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok("_PyRuntime"))?
            .address();
        Some((addr, file.kind() == ObjectKind::Executable))
    }

    /// Names and the main interpreter on a sid interpreter, plus the two facts the GIL locator
    /// builds on: `_PyRuntime` as the ELF exports it, and the GIL behind `interp->ceval.gil`.
    fn check_sid(minor: u8) {
        let Some(argv) = sid(minor) else {
            missing_fixture(&format!("{SID}/usr/bin/python3.{minor}"));
            return;
        };
        let Some(target) = check_argv(Some(argv.clone()), minor) else {
            return;
        };
        assert_ne!(
            target.main_interp, 0,
            "3.{minor}: no PyInterpreterState_Main"
        );
        let host = format!("{SID}{}", argv[2]);
        let (elf, fixed) = elf_runtime(&host).expect("_PyRuntime in .dynsym");
        if fixed {
            assert_eq!(elf, target.runtime, "{host}: .dynsym _PyRuntime vs ctypes");
        }
        let mem = ProcessMemory::new(target.child.id());
        let interp = main_interpreter(&mem, (3, minor), target.runtime).expect("interp");
        // ceval.gil is at +16 on 3.13–3.15 (the table says so; gil/address.rs relies on it).
        let gil = mem.read_u64(interp + 16).expect("ceval.gil");
        let interval = mem.read_u64(gil).expect("gil interval");
        let locked = mem.read_u64(gil + 16).expect("gil locked") as u32;
        assert_eq!(interval, 5000, "3.{minor}: GIL interval at {gil:#x}");
        assert!(locked <= 1, "3.{minor}: GIL locked {locked}");
        eprintln!(
            "{host} ({:#x}): main interpreter {interp:#x}, GIL {gil:#x}",
            target.hexversion
        );
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_13() {
        check_sid(13);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_14() {
        check_sid(14);
    }

    #[test]
    #[ignore = "needs root and pyenv"]
    fn names_sid_3_15() {
        check_sid(15);
    }

    /// Threads start and finish while we read: errors are allowed, panics and hangs are not,
    /// and whatever comes back must be a name the script could have given.
    #[test]
    #[ignore = "needs root and pyenv"]
    fn churn_never_panics() {
        const CHURN: &str = r#"
import ctypes, sys, threading
def work():
    pass
print("R %d" % ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")))
print("READY", flush=True)
i = 0
while True:
    ts = [threading.Thread(name="churn-%d" % (i + k), target=work) for k in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    i += 8
"#;
        let mut ran = 0;
        let pyenvs = (7..=13u8).map(|m| (pyenv(m).map(|p| vec![p]), m, "pyenv"));
        let sids = (13..=15u8).map(|m| (sid(m), m, "sid"));
        let pythons = pyenvs.chain(sids).filter_map(|(argv, m, from)| {
            if argv.is_none() {
                missing_fixture(&format!("{from} Python 3.{m}"));
            }
            Some((argv?, m))
        });
        for (argv, minor) in pythons {
            let python = argv.join(" ");
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .args(["-c", CHURN])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python");
            let stdout = child.stdout.take().expect("stdout");
            // Killed on every exit path, a failed assertion included.
            let child = Target {
                child,
                runtime: 0,
                main_interp: 0,
                hexversion: 0,
                threads: Vec::new(),
            };
            let mut runtime = 0;
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("line");
                if let Some(r) = line.strip_prefix("R ") {
                    runtime = r.parse().expect("runtime");
                }
                if line == "READY" {
                    break;
                }
            }
            let mem = ProcessMemory::new(child.child.id());
            let (mut ok, mut err) = (0, 0);
            for _ in 0..300 {
                match thread_names(&mem, (3, minor), runtime, &HashMap::new()) {
                    Ok(m) => {
                        ok += 1;
                        for name in m.values() {
                            assert!(
                                name == "MainThread" || name.starts_with("churn-"),
                                "{python}: odd name {name:?}"
                            );
                        }
                    }
                    Err(_) => err += 1,
                }
            }
            drop(child);
            eprintln!("{python}: churn: {ok} ok, {err} errors");
            assert!(ok > 0, "{python}: every read failed");
            ran += 1;
        }
        if ran == 0 {
            missing_fixture("every pyenv and sid Python");
        }
    }

    /// The sid binaries' own tables (from the ELF, no process needed): each minor's positions
    /// must pass the checks and give the offsets seen live; any other minor's must fail.
    #[test]
    fn debug_tables_of_sid_binaries() {
        use object::{Object, ObjectSection};
        // (minor, thread_id, native_thread_id, imports.modules), as ctypes saw them live.
        let live = [
            (13, 152, 160, 7656),
            (14, 152, 160, 7688),
            (15, 176, 184, 7592),
        ];
        for (minor, thread_id, native, modules) in live {
            let path = format!("{SID}/usr/bin/python3.{minor}");
            let Ok(data) = std::fs::read(&path) else {
                missing_fixture(&path);
                continue;
            };
            let file = object::File::parse(&*data).expect("ELF");
            let section = file.section_by_name(".PyRuntime").expect(".PyRuntime");
            let raw = section.data().expect("section data");
            let raw = &raw[..DEBUG_TABLE_LEN];
            assert_eq!(&raw[..8], b"xdebugpy");
            let v = debug_table(minor)
                .expect("table")
                .check(raw)
                .unwrap_or_else(|e| panic!("{path}: {e:#}"));
            assert_eq!(
                (
                    v.tstate_thread_id,
                    v.tstate_native_thread_id,
                    v.interp_imports_modules
                ),
                (thread_id, native, modules),
                "{path}"
            );
            assert_eq!((v.tstate_interp, v.ascii_size), (16, 40), "{path}");
            for other in [13u8, 14, 15] {
                if other != minor {
                    let r = debug_table(other).expect("table").check(raw);
                    assert!(r.is_err(), "{path}: 3.{other} positions accepted: {r:?}");
                }
            }
        }
    }

    #[test]
    fn old_versions_give_empty_map() {
        let mem = ProcessMemory::new(std::process::id());
        let got = thread_names(&mem, (3, 6), 0, &HashMap::new()).expect("3.6");
        assert!(got.is_empty());
    }

    #[test]
    fn garbage_runtime_address_is_an_error_not_a_panic() {
        // Our own memory: readable but not a CPython runtime.
        let junk = [0x5au8; 4096];
        let mem = ProcessMemory::new(std::process::id());
        for minor in 7..=15 {
            let r = thread_names(&mem, (3, minor), junk.as_ptr() as u64, &HashMap::new());
            assert!(r.is_err(), "3.{minor} accepted junk");
        }
    }
}
