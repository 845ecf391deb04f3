//! `_Py_DebugOffsets` (3.13+): where its entries sit per minor, and the checks that turn a
//! table we do not understand into an error rather than wrong offsets.
use anyhow::{Context, Result, bail};

use super::memory::RemoteMemory;

use super::layout::{
    LONG_DIGITS, LONG_SIZE_OR_TAG, Layout, MA_KEYS, MA_VALUES, OB_TYPE, TP_FLAGS, TSTATE_NEXT,
    UNICODE_LENGTH, UNICODE_STATE, word,
};

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
pub(super) struct DebugTable {
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
    /// `code_object` block: size, filename, name, qualname, linetable, firstlineno, argcount,
    /// localsplusnames, localspluskinds, co_code_adaptive (same order 3.13–3.15; 3.14 appended
    /// co_tlbc).
    code_object: u64,
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
pub(super) const DEBUG_TABLE_LEN: usize = 768;

pub(super) fn debug_table(minor: u8) -> Option<DebugTable> {
    match minor {
        // Same in 3.13.0 and 3.13.18 (only the values differ).
        13 => Some(DebugTable {
            runtime: 24,
            interp: 48,
            interp_imports_modules: 88,
            tstate: 152,
            tstate_thread_id: 192,
            tstate_native_thread_id: 200,
            code_object: 272,
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
            code_object: 312,
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
            code_object: 376,
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
pub(super) struct DebugValues {
    pub(super) interpreters_head: u64,
    pub(super) interp_id: u64,
    pub(super) interp_next: u64,
    pub(super) interp_threads_head: u64,
    pub(super) interp_imports_modules: u64,
    pub(super) tstate_interp: u64,
    pub(super) tstate_thread_id: u64,
    pub(super) tstate_native_thread_id: u64,
    pub(super) type_size: u64,
    pub(super) ascii_size: u64,
    pub(super) code: CodeOffsets,
}

/// Where `PyCodeObject` keeps what the code symbolizer reads (from the table's `code_object`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CodeOffsets {
    /// `sizeof(PyCodeObject)`.
    pub(super) size: u64,
    pub(super) filename: u64,
    pub(super) name: u64,
    pub(super) qualname: u64,
    pub(super) linetable: u64,
    pub(super) firstlineno: u64,
    /// The bytecode, inline at the end of the object.
    pub(super) code_adaptive: u64,
}

impl DebugTable {
    /// Reads the entries out of `raw` (the table's first `DEBUG_TABLE_LEN` bytes, cookie and
    /// version already checked) and checks them: struct sizes plausible, every offset inside
    /// its struct, and the entries whose values the reader hard-codes equal to those values.
    pub(super) fn check(&self, raw: &[u8]) -> Result<DebugValues> {
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
        // 208 bytes in 3.13, 216 in 3.14 and 3.15.
        let code_size = sized(self.code_object, "PyCodeObject", 128..=1024)?;
        let code_field = |i: u64, what: &str| inside(self.code_object + 8 * i, code_size, what);
        let code = CodeOffsets {
            size: code_size,
            filename: code_field(1, "co_filename")?,
            name: code_field(2, "co_name")?,
            qualname: code_field(3, "co_qualname")?,
            linetable: code_field(4, "co_linetable")?,
            firstlineno: code_field(5, "co_firstlineno")?,
            code_adaptive: code_field(9, "co_code_adaptive")?,
        };
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
            code,
        })
    }
}

/// The validated table at `_PyRuntime` (`runtime`), or Ok(None) when the cookie is absent
/// (builds without the table).
pub(super) fn read_table(
    mem: &dyn RemoteMemory,
    minor: u8,
    runtime: u64,
) -> Result<Option<DebugValues>> {
    let table = debug_table(minor).with_context(|| format!("no _Py_DebugOffsets in 3.{minor}"))?;
    let mut raw = [0u8; DEBUG_TABLE_LEN];
    mem.read(runtime, &mut raw)
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
    table
        .check(&raw)
        .with_context(|| format!("_Py_DebugOffsets of Python {hex:#x}"))
        .map(Some)
}

/// Bytes between `sizeof(PyTypeObject)` and `ht_cached_keys` in `PyHeapTypeObject` (3.10+:
/// the five method suites plus ht_name, ht_slots, ht_qualname).
const HEAPTYPE_CACHED_KEYS_AFTER_TYPE: u64 = 464;

impl DebugValues {
    /// The static layout with the fields this table knows better.
    pub(super) fn apply(&self, layout: &mut Layout) {
        layout.interp_threads_head = self.interp_threads_head;
        layout.interp_modules = self.interp_imports_modules;
        layout.tstate_thread_id = self.tstate_thread_id;
        layout.tstate_native_thread_id = Some(self.tstate_native_thread_id);
        layout.tstate_interp = Some(self.tstate_interp);
        layout.ht_cached_keys = self.type_size + HEAPTYPE_CACHED_KEYS_AFTER_TYPE;
        layout.ascii_size = self.ascii_size;
        // utf8_length and utf8 follow the ASCII header in every version since 3.12.
        layout.compact_size = self.ascii_size + 16;
        layout.legacy_data = self.ascii_size + 16;
    }
}

/// Where the `interpreter_frame` block (size, previous, executable, instr_ptr, localsplus,
/// owner, …) sits in the table; the `thread_state` block's `current_frame` is its fifth entry
/// (position `tstate + 32`) in 3.13–3.15. Read from the live tables of pyenv 3.13.0, Debian's
/// 3.13.18, 3.14.10 and 3.15.2 (3.15's thread_state has 17 entries, 3.14's 9).
pub(super) fn frame_block(minor: u8) -> Option<u64> {
    match minor {
        13 => Some(224),
        14 => Some(248),
        15 => Some(312),
        _ => None,
    }
}

/// Position of `thread_state.current_frame` in the table.
pub(super) fn tstate_current_frame(minor: u8) -> Option<u64> {
    debug_table(minor).map(|t| t.tstate + 32)
}
