//! Where CPython keeps the fields gilwatch reads: fixed object offsets, per-minor struct
//! layouts (x86_64), and field extraction from bytes fetched in one read.

// Type flags (Include/object.h), unchanged 3.7–3.14.
pub(super) const TPFLAGS_INLINE_VALUES: u64 = 1 << 2; // 3.13+
pub(super) const TPFLAGS_MANAGED_DICT: u64 = 1 << 4; // 3.11+
pub(super) const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub(super) const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
pub(super) const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;

// Fixed on x86_64 for every version handled here (offsetof() against each build's headers).
pub(super) const OB_TYPE: u64 = 8;
pub(super) const TP_BASICSIZE: u64 = 32;
pub(super) const TP_FLAGS: u64 = 168;
pub(super) const TP_DICTOFFSET: u64 = 288;
/// Bytes of `PyTypeObject` we fetch in one read to get the three fields above.
pub(super) const TYPE_HEAD_LEN: usize = 296;
pub(super) const MD_DICT: u64 = 16;
pub(super) const MA_USED: u64 = 16;
pub(super) const MA_KEYS: u64 = 32;
pub(super) const MA_VALUES: u64 = 40;
pub(super) const UNICODE_LENGTH: u64 = 16;
pub(super) const UNICODE_STATE: u64 = 32;
pub(super) const LONG_SIZE_OR_TAG: u64 = 16;
pub(super) const LONG_DIGITS: u64 = 24;
/// `tstate->next` is the second pointer of `PyThreadState` in every version.
pub(super) const TSTATE_NEXT: u64 = 8;

/// How a dict's keys object is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DictKeys {
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
pub(super) enum InstanceDict {
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
pub(super) enum LongRepr {
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
/// 3.11.7 on every field here), then exercised against live processes by the tests in naming.rs.
/// 3.13+ prefer the `_Py_DebugOffsets` table at the start of `_PyRuntime` for the runtime,
/// interpreter and thread-state fields, since those move between patch releases; that path
/// is exercised against Debian sid's 3.13.18, 3.14.10 and 3.15.2 (stripped, static, PGO+LTO).
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// `_PyRuntime.interpreters.main`.
    pub(super) runtime_interp_main: u64,
    /// `interp->modules` (≤3.11) / `interp->imports.modules` (3.12+).
    pub(super) interp_modules: u64,
    /// `interp->tstate_head` (≤3.10) / `interp->threads.head`.
    pub(super) interp_threads_head: u64,
    pub(super) tstate_thread_id: u64,
    /// 3.11+ only.
    pub(super) tstate_native_thread_id: Option<u64>,
    /// `tstate->interp`, known only from `_Py_DebugOffsets` (3.13+); used to check the walk.
    pub(super) tstate_interp: Option<u64>,
    /// `offsetof(PyHeapTypeObject, ht_cached_keys)`: the shared keys of inline/split values.
    pub(super) ht_cached_keys: u64,
    pub(super) dict_keys: DictKeys,
    /// Where the `PyObject*` array starts inside `PyDictValues` (3.13 put four bytes first).
    pub(super) values_array: u64,
    pub(super) instance_dict: InstanceDict,
    /// `sizeof(PyASCIIObject)`: compact ASCII data follows it.
    pub(super) ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: compact non-ASCII data follows it.
    pub(super) compact_size: u64,
    /// `PyUnicodeObject.data`: the data pointer of legacy (non-compact) strings.
    pub(super) legacy_data: u64,
    /// ≤3.11 strings can be "not ready" (only wstr); their `state.ready` bit must be checked.
    pub(super) has_ready_bit: bool,
    pub(super) long_repr: LongRepr,
}

pub(super) const fn layout_for(minor: u8) -> Option<Layout> {
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

/// 8 bytes at `at`; callers size their buffers so this is always in bounds, and a short slice
/// yields zeros rather than a panic.
pub(super) fn word(buf: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    w
}

pub(super) fn word4(buf: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    w
}
