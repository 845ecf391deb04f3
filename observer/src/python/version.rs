//! Which CPython a binary is, read from the binary itself.
use std::fmt;

use object::{Object, ObjectSection, ObjectSymbol};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PythonVersion {
    pub major: u8,
    pub minor: u8,
    /// None when the binary says only major.minor.
    pub patch: Option<u8>,
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{p}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl PythonVersion {
    pub fn minor_version(&self) -> (u8, u8) {
        (self.major, self.minor)
    }
}

/// `python3.12`, `libpython3.12.so.1.0`, `libpython3.6m.so`, `libpython3.13t.so` → (3, 12) …
pub fn from_file_name(name: &str) -> Option<(u8, u8)> {
    let rest = &name[name.find("python")? + "python".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The version a CPython binary carries. 3.11+ export `Py_Version` (PY_VERSION_HEX), which is
/// exact; before that, major.minor comes from the file name and the patch level from the
/// PY_VERSION string in .rodata (which the linker may have tail-merged into a longer string,
/// e.g. the end of an install prefix such as `/root/.pyenv/versions/3.9.18`).
pub fn detect(file_name: &str, elf: &object::File<'_>) -> Option<PythonVersion> {
    if let Some(v) = from_py_version_symbol(elf) {
        return Some(v);
    }
    let (major, minor) = from_file_name(file_name)?;
    let patch = elf
        .section_by_name(".rodata")
        .and_then(|s| s.data().ok())
        .and_then(|data| patch_from_rodata(data, major, minor));
    Some(PythonVersion {
        major,
        minor,
        patch,
    })
}

/// A free-threaded build (3.13t+): `t` after the version in the file name (python3.13t,
/// libpython3.13t.so), or `_Py_DebugOffsets.free_threaded` at the start of the `.PyRuntime`
/// section (3.13+ initialise it statically, so the file itself says).
pub fn is_free_threaded(file_name: &str, elf: &object::File<'_>) -> bool {
    if let Some(rest) = file_name
        .find("python")
        .map(|i| &file_name[i + "python".len()..])
    {
        let after_version = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        if after_version.starts_with('t') {
            return true;
        }
    }
    elf.section_by_name(".PyRuntime")
        .and_then(|s| s.data().ok())
        .is_some_and(debug_offsets_say_free_threaded)
}

fn debug_offsets_say_free_threaded(data: &[u8]) -> bool {
    data.len() >= 24
        && &data[..8] == b"xdebugpy"
        && u64::from_le_bytes(data[16..24].try_into().unwrap_or_default()) != 0
}

fn from_py_version_symbol(elf: &object::File<'_>) -> Option<PythonVersion> {
    let sym = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("Py_Version"))?;
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let data = section.data().ok()?;
    let at = usize::try_from(sym.address().checked_sub(section.address())?).ok()?;
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    let hex = u32::from_le_bytes(bytes);
    let (major, minor, patch) = ((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8);
    (major == 3).then_some(PythonVersion {
        major,
        minor,
        patch: Some(patch),
    })
}

/// Finds `MAJOR.MINOR.PATCH` followed by NUL (optionally with a release tag such as `rc1` or `+`).
fn patch_from_rodata(data: &[u8], major: u8, minor: u8) -> Option<u8> {
    let needle = format!("{major}.{minor}.");
    let needle = needle.as_bytes();
    let mut from = 0;
    while let Some(pos) = find(&data[from..], needle) {
        let start = from + pos;
        from = start + 1;
        // Not the tail of a longer number ("13.12.1").
        if start > 0 && (data[start - 1].is_ascii_digit() || data[start - 1] == b'.') {
            continue;
        }
        let tail = &data[start + needle.len()..];
        let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            continue;
        }
        let tag = tail[digits..].iter().take_while(|&&b| b != 0).count();
        let tag_ok = tail[digits..digits + tag]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+');
        if tag <= 4 && tag_ok && tail.get(digits + tag) == Some(&0) {
            return std::str::from_utf8(&tail[..digits]).ok()?.parse().ok();
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(from_file_name("libpython3.12.so.1.0"), Some((3, 12)));
        assert_eq!(from_file_name("libpython3.6m.so.1.0"), Some((3, 6)));
        assert_eq!(from_file_name("libpython3.13t.so"), Some((3, 13)));
        assert_eq!(from_file_name("python3.11"), Some((3, 11)));
        assert_eq!(from_file_name("libpython2.7.so.1.0"), Some((2, 7)));
        assert_eq!(from_file_name("python3"), None);
        assert_eq!(from_file_name("sleep"), None);
    }

    #[test]
    fn free_threaded_markers() {
        let mut table = b"xdebugpy".to_vec();
        table.extend(0x030d00f0u64.to_le_bytes());
        table.extend(1u64.to_le_bytes());
        assert!(debug_offsets_say_free_threaded(&table));
        table[16] = 0;
        assert!(!debug_offsets_say_free_threaded(&table));
        assert!(!debug_offsets_say_free_threaded(b"xdebugpy"));
    }

    #[test]
    fn rodata_patch() {
        let data = b"x\x00/root/.pyenv/versions/3.9.18\x00junk 13.9.1\x00";
        assert_eq!(patch_from_rodata(data, 3, 9), Some(18));
        assert_eq!(patch_from_rodata(b"\x003.12.0rc1\x00", 3, 12), Some(0));
        assert_eq!(patch_from_rodata(b"\x003.12.1+\x00", 3, 12), Some(1));
        assert_eq!(patch_from_rodata(b"\x003.12.x\x00", 3, 12), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        #[test]
        fn corrupted_files_never_panic(data in crate::object::hostile_elf::corrupted()) {
            if let Ok(elf) = object::File::parse(&*data) {
                let _ = detect("libpython3.12.so.1.0", &elf);
                let _ = detect("python3", &elf);
                let _ = is_free_threaded("python3.13", &elf);
                let _ = from_py_version_symbol(&elf);
            }
        }

        #[test]
        fn names_and_rodata_of_any_bytes(
            name in "\\PC{0,24}(python[0-9.tm]{0,8})?\\PC{0,8}",
            rodata in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::any::<u8>(), proptest::sample::select(b"3.12\0".to_vec())],
                0..64),
        ) {
            let _ = from_file_name(&name);
            if let Some(p) = patch_from_rodata(&rodata, 3, 12) {
                let text = format!("3.12.{p}");
                proptest::prop_assert!(find(&rodata, text.as_bytes()).is_some());
            }
        }
    }
}
