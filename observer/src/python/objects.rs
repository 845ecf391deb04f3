//! Reading CPython objects out of another process: types, dicts (and the split/inline values
//! of instances), str and int. Every length is capped and every pointer may be stale.

use std::collections::HashMap;
#[cfg(test)]
use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::layout::{
    DictKeys, InstanceDict, LONG_DIGITS, LONG_SIZE_OR_TAG, Layout, LongRepr, MA_KEYS, MA_USED,
    MA_VALUES, OB_TYPE, TP_BASICSIZE, TP_DICTOFFSET, TP_FLAGS, TPFLAGS_INLINE_VALUES,
    TPFLAGS_LONG_SUBCLASS, TPFLAGS_MANAGED_DICT, TPFLAGS_UNICODE_SUBCLASS, TYPE_HEAD_LEN,
    UNICODE_LENGTH, UNICODE_STATE, word, word4,
};
use super::memory::RemoteMemory;

/// Python names longer than this many code points are cut (no real thread name comes close).
pub(super) const MAX_NAME_CHARS: u64 = 256;
/// `sys.modules` of a big application holds a few thousand entries; anything past this is
/// corrupt or being rebuilt under us.
pub(super) const MAX_DICT_ENTRIES: u64 = 1 << 17;

#[cfg(test)]
thread_local! {
    /// Which attribute-storage paths a test exercised, so tests can prove coverage.
    pub(super) static PATHS: std::cell::RefCell<HashSet<&'static str>> = Default::default();
}

pub(super) fn note_path(_path: &'static str) {
    #[cfg(test)]
    PATHS.with(|p| p.borrow_mut().insert(_path));
}

#[derive(Clone, Copy)]
pub(super) struct TypeInfo {
    pub(super) flags: u64,
    pub(super) basicsize: u64,
    pub(super) dictoffset: i64,
}

pub(super) struct Reader<'a> {
    pub(super) mem: &'a dyn RemoteMemory,
    pub(super) layout: Layout,
    /// Types are few (str, int, dict, Thread subclasses) and never move while alive.
    pub(super) types: HashMap<u64, TypeInfo>,
}

impl Reader<'_> {
    pub(super) fn ptr(&self, addr: u64) -> Result<u64> {
        self.mem
            .read_u64(addr)
            .with_context(|| format!("reading pointer at {addr:#x}"))
    }

    pub(super) fn nonnull(&self, addr: u64, what: &str) -> Result<u64> {
        let p = self.ptr(addr)?;
        if p == 0 {
            bail!("{what} is NULL (read at {addr:#x})");
        }
        Ok(p)
    }

    pub(super) fn type_info(&mut self, obj: u64) -> Result<TypeInfo> {
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

    pub(super) fn expect_flag(&mut self, obj: u64, flag: u64, what: &str) -> Result<TypeInfo> {
        let t = self.type_info(obj)?;
        if t.flags & flag == 0 {
            bail!(
                "object at {obj:#x} is not a {what} (tp_flags {:#x})",
                t.flags
            );
        }
        Ok(t)
    }

    /// An attribute from the instance's own namespace, wherever this version keeps it.
    pub(super) fn instance_attr(&mut self, obj: u64, attr: &str) -> Result<Option<u64>> {
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

    pub(super) fn dict_get_opt(&mut self, dict: u64, key: &str) -> Result<Option<u64>> {
        if dict == 0 {
            return Ok(None);
        }
        self.dict_get(dict, key)
    }

    /// Values held outside a dict, keyed by the type's shared (cached) keys.
    pub(super) fn shared_keys_get(
        &mut self,
        obj: u64,
        values: u64,
        key: &str,
    ) -> Result<Option<u64>> {
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

    pub(super) fn dict_get(&mut self, dict: u64, key: &str) -> Result<Option<u64>> {
        let items = self.dict_items(dict)?;
        self.find_key(&items, key)
    }

    pub(super) fn find_key(&self, items: &[(u64, u64)], key: &str) -> Result<Option<u64>> {
        for &(k, v) in items {
            if self.str_equals(k, key).unwrap_or(false) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    pub(super) fn dict_items(&self, dict: u64) -> Result<Vec<(u64, u64)>> {
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
    pub(super) fn keys_items(&self, keys: u64, values: Option<u64>) -> Result<Vec<(u64, u64)>> {
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
    pub(super) fn str_equals(&self, obj: u64, want: &str) -> Result<bool> {
        let ascii = self.layout.ascii_size as usize;
        let mut buf = vec![0u8; ascii + want.len()];
        self.mem.read(obj, &mut buf)?;
        let length = i64::from_ne_bytes(word(&buf, UNICODE_LENGTH as usize));
        let state = u32::from_ne_bytes(word4(&buf, UNICODE_STATE as usize));
        Ok(state & 0x60 == 0x60 && length == want.len() as i64 && &buf[ascii..] == want.as_bytes())
    }

    /// A str's text, lenient: unpaired surrogates and bad code points become U+FFFD.
    pub(super) fn read_str(&mut self, obj: u64) -> Result<String> {
        self.read_str_upto(obj, MAX_NAME_CHARS)
    }

    /// `read_str`, cut at `max_chars` code points.
    pub(super) fn read_str_upto(&mut self, obj: u64, max_chars: u64) -> Result<String> {
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
        let chars = (length as u64).min(max_chars);
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
    pub(super) fn read_ident(&mut self, obj: u64) -> Result<u64> {
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

pub(super) fn to_char(c: u32) -> char {
    char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
}
