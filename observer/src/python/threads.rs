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

use super::memory::ProcessMemory;

/// Python names longer than this many code points are cut (no real thread name comes close).
const MAX_NAME_CHARS: u64 = 256;
/// `sys.modules` of a big application holds a few thousand entries; anything past this is
/// corrupt or being rebuilt under us.
const MAX_DICT_ENTRIES: u64 = 1 << 17;
const MAX_THREADS: usize = 1 << 14;
const MAX_INTERPRETERS: usize = 256;

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
/// interpreter and thread-state fields, since those move between patch releases.
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
        // 3.14 starts from 3.13's object layouts; the debug-offsets table then overrides the
        // runtime/interpreter/thread fields and the type size (see `apply_debug_offsets`).
        // Not checked against a live 3.14.
        13 | 14 => Layout {
            runtime_interp_main: 640,
            interp_modules: 7656,
            interp_threads_head: 7344,
            tstate_thread_id: 152,
            tstate_native_thread_id: Some(160),
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

/// Positions inside `_Py_DebugOffsets` (Include/internal/pycore_runtime.h in 3.13,
/// pycore_debug_offsets.h in 3.14, which inserted `interpreter_state.threads_main`).
struct DebugTable {
    interpreters_head: u64,
    interp_next: u64,
    interp_threads_head: u64,
    interp_imports_modules: u64,
    tstate_thread_id: u64,
    tstate_native_thread_id: u64,
    /// `type_object.size`: ht_cached_keys sits a fixed distance after it.
    type_size: u64,
    /// `unicode_object.asciiobject_size`.
    unicode_ascii_size: u64,
}

fn debug_table(minor: u8) -> Option<DebugTable> {
    match minor {
        // offsetof() against 3.13.0's pycore_runtime.h.
        13 => Some(DebugTable {
            interpreters_head: 40,
            interp_next: 64,
            interp_threads_head: 72,
            interp_imports_modules: 88,
            tstate_thread_id: 192,
            tstate_native_thread_id: 200,
            type_size: 368,
            unicode_ascii_size: 560,
        }),
        // Counted from the 3.14 header's field order (interpreter_state gained threads_main,
        // a set_object block appeared before dict_object); not checked against a live 3.14.
        14 => Some(DebugTable {
            interpreters_head: 40,
            interp_next: 64,
            interp_threads_head: 72,
            interp_imports_modules: 96,
            tstate_thread_id: 200,
            tstate_native_thread_id: 208,
            type_size: 384,
            unicode_ascii_size: 608,
        }),
        _ => None,
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
    mem: &ProcessMemory,
    version: (u8, u8),
    runtime_addr: u64,
    tstates: &HashMap<u32, u64>,
) -> Result<HashMap<u32, String>> {
    let (major, minor) = version;
    if major != 3 || minor < 7 {
        // No `_PyRuntime` before 3.7; naming threads there is not supported.
        return Ok(HashMap::new());
    }
    let mut layout =
        layout_for(minor).with_context(|| format!("Python {major}.{minor} is not supported"))?;
    let mut reader = Reader {
        mem,
        layout,
        types: HashMap::new(),
    };
    let interp = reader.main_interpreter(minor, runtime_addr, &mut layout)?;
    reader.layout = layout;

    let by_ident = reader
        .active_thread_names(interp)
        .context("reading threading._active")?;

    let mut out = HashMap::new();
    for (&tid, &tstate) in tstates {
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
                if let Some(name) = by_ident.get(&ident) {
                    out.entry(tid).or_insert_with(|| name.clone());
                }
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
struct TypeInfo {
    flags: u64,
    basicsize: u64,
    dictoffset: i64,
}

struct Reader<'a> {
    mem: &'a ProcessMemory,
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
                Ok(None) if minor == 13 => {}
                Ok(None) => bail!("no _Py_DebugOffsets cookie at _PyRuntime {runtime:#x}"),
                Err(e) => return Err(e),
            }
        }
        self.nonnull(
            runtime.wrapping_add(layout.runtime_interp_main),
            "_PyRuntime.interpreters.main",
        )
    }

    /// Ok(None) when `_PyRuntime` carries no debug table (so the static layout stands).
    fn apply_debug_offsets(
        &mut self,
        minor: u8,
        runtime: u64,
        table: &DebugTable,
        layout: &mut Layout,
    ) -> Result<Option<u64>> {
        let mut head = [0u8; 24];
        self.mem
            .read(runtime, &mut head)
            .with_context(|| format!("reading _Py_DebugOffsets at {runtime:#x}"))?;
        if &head[..8] != b"xdebugpy" {
            return Ok(None);
        }
        let hex = u64::from_ne_bytes(word(&head, 8));
        let (vmaj, vmin) = ((hex >> 24) & 0xff, (hex >> 16) & 0xff);
        if vmaj != 3 || vmin != u64::from(minor) {
            bail!("_PyRuntime says Python {vmaj}.{vmin}, expected 3.{minor}");
        }
        if u64::from_ne_bytes(word(&head, 16)) != 0 {
            bail!("free-threaded CPython builds are not supported");
        }
        let field = |off: u64| -> Result<u64> {
            let v = self.ptr(runtime.wrapping_add(off))?;
            // Offsets into these structs are below a megabyte; larger means a wrong table.
            if v >= 1 << 20 {
                bail!("implausible _Py_DebugOffsets entry {v:#x} at +{off}");
            }
            Ok(v)
        };
        let interpreters_head = field(table.interpreters_head)?;
        let interp_next = field(table.interp_next)?;
        layout.interp_threads_head = field(table.interp_threads_head)?;
        layout.interp_modules = field(table.interp_imports_modules)?;
        layout.tstate_thread_id = field(table.tstate_thread_id)?;
        layout.tstate_native_thread_id = Some(field(table.tstate_native_thread_id)?);
        layout.ht_cached_keys = field(table.type_size)? + HEAPTYPE_CACHED_KEYS_AFTER_TYPE;
        let ascii = field(table.unicode_ascii_size)?;
        if !(32..=128).contains(&ascii) {
            bail!("implausible sizeof(PyASCIIObject) {ascii} in _Py_DebugOffsets");
        }
        layout.ascii_size = ascii;
        // utf8_length and utf8 follow the ASCII header in every version since 3.12.
        layout.compact_size = ascii + 16;
        layout.legacy_data = ascii + 16;
        // New interpreters are pushed at the head, so the main one is the list's tail.
        let mut interp =
            self.nonnull(runtime.wrapping_add(interpreters_head), "interpreters.head")?;
        let mut seen = HashSet::new();
        loop {
            if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
                bail!("interpreter list loops or is too long");
            }
            let next = self.ptr(interp.wrapping_add(interp_next))?;
            if next == 0 {
                return Ok(Some(interp));
            }
            interp = next;
        }
    }

    /// (kernel TID, pthread ident) of every thread state in the interpreter's list.
    fn walk_threads(&self, interp: u64, native_off: u64) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut ts = self.ptr(interp.wrapping_add(self.layout.interp_threads_head))?;
        while ts != 0 && seen.len() < MAX_THREADS && seen.insert(ts) {
            let native = self.ptr(ts.wrapping_add(native_off))?;
            let ident = self.ptr(ts.wrapping_add(self.layout.tstate_thread_id))?;
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
mod tests {
    //! Live tests: start a real interpreter with named threads, read it from outside, compare
    //! with what the interpreter says about itself.

    use super::*;
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

    fn start(python: &str) -> Target {
        let mut child = Command::new(python)
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let stdout = child.stdout.take().expect("stdout");
        let mut target = Target {
            child,
            runtime: 0,
            threads: Vec::new(),
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read line");
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "R" => target.runtime = f[1].parse().expect("runtime"),
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
        let Some(python) = python else {
            eprintln!("note: no Python 3.{minor} here, skipping");
            return;
        };
        let target = start(&python);
        let mem = ProcessMemory::new(target.child.id());
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
    fn names_3_14() {
        check(pyenv(14), 14);
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
        for minor in 7..=14u8 {
            let Some(python) = pyenv(minor) else {
                continue;
            };
            let mut child = Command::new(&python)
                .args(["-c", CHURN])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python");
            let stdout = child.stdout.take().expect("stdout");
            // Killed on every exit path, a failed assertion included.
            let child = Target {
                child,
                runtime: 0,
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
            eprintln!("note: no pyenv Python here, skipping");
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
        for minor in 7..=14 {
            let r = thread_names(&mem, (3, minor), junk.as_ptr() as u64, &HashMap::new());
            assert!(r.is_err(), "3.{minor} accepted junk");
        }
    }
}
