//! Where an object's full symbol table comes from when its own `.symtab` is gone.
//!
//! Static functions (CPython's take_gil/drop_gil) are named only by a full symbol table. Stripped
//! builds still ship one somewhere, and the places are tried in this order:
//! 1. the object's own `.symtab` (pyenv, python.org, Docker's full images);
//! 2. MiniDebugInfo: an xz-compressed ELF with just a `.symtab` of the functions that are not in
//!    `.dynsym`, in the object's `.gnu_debugdata` section (Fedora);
//! 3. a separate debug file (Debian's `-dbgsym` packages, `objcopy --only-keep-debug`), found by
//!    build-id under `/usr/lib/debug/.build-id/`, or by the name in `.gnu_debuglink` next to the
//!    object, in its `.debug/` directory, or under `/usr/lib/debug/<its directory>/`. A file is
//!    used only when its build-id (or, for a debuglink, its CRC32) says it belongs to the object.
//!
//! The symbols found in 2 and 3 carry the same virtual addresses as the stripped object, but their
//! file has no code (`NOBITS` sections, other offsets): uprobe file offsets must always come from
//! the object's own segments (`object::elf::file_offset`).
use std::{
    borrow::Cow,
    ffi::CString,
    fs::File,
    io::Read as _,
    os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolScope};

/// Overrides where debug directories (`usr/lib/debug`) are searched: for tests, and for a
/// container whose debug files were installed on the host or in another directory.
pub const DEBUG_ROOT_ENV: &str = "GILWATCH_DEBUG_ROOT";

/// Debug files larger than this are not read: libpython's is tens of MB; a file this large is
/// not the interpreter's.
const MAX_DEBUG_FILE: u64 = 1 << 30;
/// MiniDebugInfo holds function symbols only (a few MB for libpython); the cap keeps a corrupt
/// or hostile section from decompressing into all of memory.
const MAX_MINIDEBUGINFO: usize = 256 << 20;
/// The decoder's own memory (its dictionary): `xz -9` needs 65 MiB, MiniDebugInfo is made with
/// far less.
const XZ_MEMLIMIT: u64 = 96 << 20;

/// Where the symbol table came from (the report's `interpreter.symbols_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    MiniDebugInfo,
    /// The debug file, as found (inside the search root, e.g. `/usr/lib/debug/.build-id/…`).
    DebugFile(PathBuf),
}

impl SymbolSource {
    /// The JSON label: `symtab`, `minidebuginfo`, `debug-file`.
    pub fn label(&self) -> &'static str {
        match self {
            SymbolSource::Symtab => "symtab",
            SymbolSource::MiniDebugInfo => "minidebuginfo",
            SymbolSource::DebugFile(_) => "debug-file",
        }
    }

    /// For people: `.symtab`, `MiniDebugInfo (.gnu_debugdata)`, `debug file /usr/lib/debug/…`.
    pub fn describe(&self) -> String {
        match self {
            SymbolSource::Symtab => ".symtab".to_owned(),
            SymbolSource::MiniDebugInfo => "MiniDebugInfo (.gnu_debugdata)".to_owned(),
            SymbolSource::DebugFile(p) => format!("debug file {}", p.display()),
        }
    }

    pub fn debug_file(&self) -> Option<&Path> {
        match self {
            SymbolSource::DebugFile(p) => Some(p),
            _ => None,
        }
    }
}

/// What the search found: the ELF whose `.symtab` names the object's local functions, and
/// the candidates it looked at and refused (for the error when nothing was found).
pub struct SymbolSearch<'a> {
    pub found: Option<(SymbolSource, Cow<'a, [u8]>)>,
    /// One line per refused candidate: which file and why (wrong build-id, bad CRC, no symbols);
    /// when nothing was refused and nothing found, where the debug file was expected.
    pub rejected: Vec<String>,
}

/// The filesystem roots to search: debug directories under `debug`, the object's own directory
/// under `target` (the target's root: `/proc/PID/root`, or `/` for `gilwatch -- CMD`).
#[derive(Debug, Clone)]
pub struct Roots {
    pub target: PathBuf,
    pub debug: PathBuf,
}

impl Roots {
    /// The target's root, and `GILWATCH_DEBUG_ROOT` (or the same root) for debug directories.
    pub fn of(target_root: &Path) -> Roots {
        let target = target_root.to_path_buf();
        let debug = std::env::var_os(DEBUG_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| target.clone(), PathBuf::from);
        Roots { target, debug }
    }
}

/// Finds an object's symbols: its `.symtab`, then MiniDebugInfo, then a debug file. `path` is
/// the object as the target sees it, `data` the whole file.
pub fn symbol_file<'a>(
    path: &str,
    data: &'a [u8],
    roots: &Roots,
) -> anyhow::Result<SymbolSearch<'a>> {
    let elf = object::File::parse(data).with_context(|| format!("parsing ELF {path}"))?;
    let mut rejected = Vec::new();
    if has_local_functions(&elf) {
        return Ok(SymbolSearch {
            found: Some((SymbolSource::Symtab, Cow::Borrowed(data))),
            rejected,
        });
    }
    if let Some(section) = elf.section_by_name(".gnu_debugdata") {
        let what = format!("{path} .gnu_debugdata (MiniDebugInfo)");
        match section
            .data()
            .map_err(anyhow::Error::from)
            .and_then(|xz| decompress_xz(xz, MAX_MINIDEBUGINFO))
        {
            Ok(data) if parses_with_local_functions(&data) => {
                return Ok(SymbolSearch {
                    found: Some((SymbolSource::MiniDebugInfo, Cow::Owned(data))),
                    rejected,
                });
            }
            Ok(_) => rejected.push(format!("{what} has no function symbols")),
            Err(e) => rejected.push(format!("{what} cannot be read: {e:#}")),
        }
    }
    let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
    let link = elf
        .section_by_name(".gnu_debuglink")
        .and_then(|s| s.data().ok())
        .and_then(|d| parse_debuglink(d, elf.is_little_endian()))
        .map(|(name, crc)| (name.to_vec(), crc));
    drop(elf);

    let mut candidates: Vec<(PathBuf, PathBuf, Expect)> = Vec::new();
    if let Some((id, path)) = build_id
        .as_deref()
        .and_then(|id| Some((id, build_id_path(id)?)))
    {
        candidates.push((roots.debug.clone(), path, Expect::BuildId(id.to_vec())));
    }
    if let Some((name, crc)) = &link {
        let dir = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        for (in_debug_root, rel) in
            debuglink_paths(&dir, Path::new(std::ffi::OsStr::from_bytes(name)))
        {
            let root = if in_debug_root {
                &roots.debug
            } else {
                &roots.target
            };
            candidates.push((root.clone(), rel, Expect::Crc(*crc, build_id.clone())));
        }
    }
    let first = candidates
        .first()
        .map(|(_, rel, _)| Path::new("/").join(rel));
    for (root, rel, expect) in candidates {
        let shown = Path::new("/").join(&rel);
        let data = match read_in_root(&root, &rel, MAX_DEBUG_FILE) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                rejected.push(format!("{} cannot be read: {e:#}", shown.display()));
                continue;
            }
        };
        match check_debug_file(&data, &expect) {
            Ok(()) => {
                return Ok(SymbolSearch {
                    found: Some((SymbolSource::DebugFile(shown), Cow::Owned(data))),
                    rejected,
                });
            }
            Err(why) => rejected.push(format!("{} is not its debug file: {why}", shown.display())),
        }
    }
    if rejected.is_empty() {
        if let Some(path) = first {
            rejected.push(format!("no debug file is at {}", path.display()));
        }
    }
    Ok(SymbolSearch {
        found: None,
        rejected,
    })
}

/// What a debug file must match to belong to the object.
enum Expect {
    BuildId(Vec<u8>),
    /// The debuglink's CRC32 of the whole file, and the object's build-id if it has one.
    Crc(u32, Option<Vec<u8>>),
}

fn check_debug_file(data: &[u8], expect: &Expect) -> Result<(), String> {
    let elf = object::File::parse(data).map_err(|_| "not an ELF file".to_owned())?;
    let file_id = elf.build_id().ok().flatten();
    match expect {
        Expect::BuildId(want) => match file_id {
            Some(got) if got == want.as_slice() => {}
            Some(got) => {
                return Err(format!(
                    "its build-id is {}, the interpreter's {}",
                    hex(got),
                    hex(want)
                ));
            }
            None => return Err(format!("it has no build-id (want {})", hex(want))),
        },
        Expect::Crc(want, object_id) => {
            let got = crc32fast::hash(data);
            if got != *want {
                return Err(format!(
                    "its CRC32 is {got:08x}, the interpreter's .gnu_debuglink asks for {want:08x}"
                ));
            }
            // The CRC is enough (it is what gdb checks); a build-id that disagrees is still a
            // sign of a mixed-up install.
            if let (Some(want), Some(got)) = (object_id, file_id) {
                if got != want.as_slice() {
                    return Err(format!(
                        "its build-id is {}, the interpreter's {}",
                        hex(got),
                        hex(want)
                    ));
                }
            }
        }
    }
    if !has_local_functions(&elf) {
        return Err("it has no function symbols".to_owned());
    }
    Ok(())
}

/// True when the symbol table names static functions (what stripping removes first).
fn has_local_functions(elf: &object::File<'_>) -> bool {
    elf.symbols().any(|s| {
        s.kind() == SymbolKind::Text && s.address() != 0 && s.scope() == SymbolScope::Compilation
    })
}

fn parses_with_local_functions(data: &[u8]) -> bool {
    object::File::parse(data).is_ok_and(|e| has_local_functions(&e))
}

/// `usr/lib/debug/.build-id/ab/cdef….debug` for build-id `abcdef…` (relative to a root); None
/// for an id too short to split that way.
pub fn build_id_path(id: &[u8]) -> Option<PathBuf> {
    let (dir, rest) = id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    Some(PathBuf::from(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        hex(&[*dir]),
        hex(rest)
    )))
}

/// Where a `.gnu_debuglink` name is looked for, as gdb does: next to the object, in its
/// `.debug/` directory, and under `/usr/lib/debug/<the object's directory>/`. The flag says
/// whether the path is under the debug root (else under the target's root).
pub fn debuglink_paths(object_dir: &Path, name: &Path) -> Vec<(bool, PathBuf)> {
    let rel_dir = object_dir.strip_prefix("/").unwrap_or(object_dir);
    vec![
        (false, rel_dir.join(name)),
        (false, rel_dir.join(".debug").join(name)),
        (true, Path::new("usr/lib/debug").join(rel_dir).join(name)),
    ]
}

/// `.gnu_debuglink`: a file name, NUL, padding to 4 bytes, the CRC32 of the debug file. A name
/// with a slash would leave the directories searched, so it is refused.
pub fn parse_debuglink(data: &[u8], little_endian: bool) -> Option<(&[u8], u32)> {
    let nul = data.iter().position(|&b| b == 0)?;
    let name = &data[..nul];
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return None;
    }
    let crc_at = (nul + 1).next_multiple_of(4);
    let bytes: [u8; 4] = data.get(crc_at..crc_at + 4)?.try_into().ok()?;
    let crc = if little_endian {
        u32::from_le_bytes(bytes)
    } else {
        u32::from_be_bytes(bytes)
    };
    Some((name, crc))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decompresses an xz stream, refusing output larger than `cap`. liblzma streams: memory is
/// its dictionary (refused past `XZ_MEMLIMIT`) plus at most `cap` bytes of output, whatever the
/// stream's headers claim.
fn decompress_xz(xz: &[u8], cap: usize) -> anyhow::Result<Vec<u8>> {
    let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
        .map_err(|e| anyhow::anyhow!("xz: {e}"))?;
    let mut out = Vec::new();
    xz2::read::XzDecoder::new_stream(xz, stream)
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| anyhow::anyhow!("xz: {e}"))?;
    if out.len() > cap {
        anyhow::bail!("decompresses to more than {} MiB", cap >> 20);
    }
    Ok(out)
}

/// Reads `rel` inside `root` with every symlink resolved as if `root` were `/` (the kernel's
/// `RESOLVE_IN_ROOT`): a debug directory in a container, or a test root, cannot send gilwatch
/// to a file outside it. `Ok(None)` when there is no such file.
fn read_in_root(root: &Path, rel: &Path, cap: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let root_c = CString::new(root.as_os_str().as_bytes()).context("root path has a NUL")?;
    let rel_c = CString::new(rel.as_os_str().as_bytes()).context("path has a NUL")?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned by `root_dir` below.
    let root_fd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root_fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("opening {}", root.display()));
    }
    // SAFETY: root_fd is a fresh descriptor nobody else owns.
    let root_dir = unsafe { std::os::fd::OwnedFd::from_raw_fd(root_fd) };
    // SAFETY: open_how is plain integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&root_dir),
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(None),
            Some(libc::ENOSYS) => Err(e).context("the kernel has no openat2 (Linux 5.6+)"),
            _ => Err(e).with_context(|| format!("opening {}", rel.display())),
        };
    }
    // SAFETY: fd is a fresh descriptor from openat2, owned by `file` from here on.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let meta = file.metadata().context("stat")?;
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > cap {
        anyhow::bail!(
            "{} MiB, more than the {} MiB a debug file may have",
            meta.len() >> 20,
            cap >> 20
        );
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(cap).read_to_end(&mut data).context("reading")?;
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_paths() {
        let id = [0xf9, 0xd5, 0xc8, 0x2f, 0x00, 0x01];
        assert_eq!(
            build_id_path(&id).unwrap(),
            Path::new("usr/lib/debug/.build-id/f9/d5c82f0001.debug")
        );
        // Found by the property test below: a one-byte (or empty) id used to panic.
        assert_eq!(build_id_path(&[0xf9]), None);
        assert_eq!(build_id_path(&[]), None);
    }

    #[test]
    fn debuglink_parsing() {
        // "libpython3.12.so.1.0.debug" is 26 bytes: NUL at 26, CRC at 28.
        let mut d = b"libpython3.12.so.1.0.debug\0\0".to_vec();
        d.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(
            parse_debuglink(&d, true),
            Some((&b"libpython3.12.so.1.0.debug"[..], 0x1234_5678))
        );
        // A name whose NUL ends on a 4-byte boundary: the CRC follows at once.
        let mut d = b"abc\0".to_vec();
        d.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse_debuglink(&d, false), Some((&b"abc"[..], 7)));
        // Truncated, empty or escaping names.
        assert_eq!(parse_debuglink(b"abc\0\x01\x02", true), None);
        assert_eq!(parse_debuglink(b"\0\0\0\0\x01\x02\x03\x04", true), None);
        assert_eq!(parse_debuglink(b"../x\0\0\0\0\x01\x02\x03\x04", true), None);
        assert_eq!(parse_debuglink(b"abc", true), None);
    }

    #[test]
    fn debuglink_search_order() {
        let p = debuglink_paths(
            Path::new("/usr/lib/x86_64-linux-gnu"),
            Path::new("libpy.debug"),
        );
        let want: Vec<(bool, PathBuf)> = vec![
            (false, "usr/lib/x86_64-linux-gnu/libpy.debug".into()),
            (false, "usr/lib/x86_64-linux-gnu/.debug/libpy.debug".into()),
            (
                true,
                "usr/lib/debug/usr/lib/x86_64-linux-gnu/libpy.debug".into(),
            ),
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn crc_and_build_id_checks() {
        // The CRC gdb and objcopy --add-gnu-debuglink use is the common CRC-32 (IEEE).
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        assert!(check_debug_file(b"123456789", &Expect::Crc(0xcbf4_3926, None)).is_err());
        // A real stripped ELF with a build-id: every check is reached in turn.
        let data = std::fs::read("/usr/bin/true").unwrap();
        let id = object::File::parse(&*data)
            .unwrap()
            .build_id()
            .unwrap()
            .unwrap()
            .to_vec();
        let crc = crc32fast::hash(&data);
        let err = check_debug_file(&data, &Expect::Crc(crc ^ 1, None)).unwrap_err();
        assert!(err.starts_with("its CRC32 is"), "{err}");
        let err = check_debug_file(&data, &Expect::Crc(crc, Some(vec![1, 2]))).unwrap_err();
        assert_eq!(
            err,
            format!("its build-id is {}, the interpreter's 0102", hex(&id))
        );
        let err = check_debug_file(&data, &Expect::BuildId(vec![0xab])).unwrap_err();
        assert!(err.starts_with("its build-id is"), "{err}");
        // Right file, but stripped: no symbols to give.
        let err = check_debug_file(&data, &Expect::BuildId(id)).unwrap_err();
        assert_eq!(err, "it has no function symbols");
    }

    #[test]
    fn xz_is_capped() {
        // 4096 zero bytes: `head -c 4096 /dev/zero | xz -c` (xz 5.4, CRC64 check).
        const XZ: &[u8] = &[
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00,
            0x21, 0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0xe0, 0x0f, 0xff, 0x00,
            0x19, 0x5d, 0x00, 0x00, 0x6f, 0xfd, 0xff, 0xff, 0xa3, 0xb7, 0xff, 0x47, 0x3e, 0x48,
            0x15, 0x72, 0x39, 0x61, 0x51, 0xb8, 0x92, 0x28, 0xe6, 0xa3, 0x84, 0x9e, 0x29, 0x46,
            0x00, 0x00, 0x00, 0x00, 0xa5, 0xf0, 0xea, 0x25, 0x94, 0xd3, 0xd3, 0x26, 0x00, 0x01,
            0x35, 0x80, 0x20, 0x00, 0x00, 0x00, 0x6f, 0x5d, 0x36, 0x86, 0xb1, 0xc4, 0x67, 0xfb,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
        ];
        assert_eq!(decompress_xz(XZ, 1 << 20).unwrap(), vec![0u8; 4096]);
        assert!(decompress_xz(XZ, 1000).is_err());
        assert!(decompress_xz(b"not xz", 1 << 20).is_err());
    }

    #[test]
    fn reads_stay_inside_the_root() {
        let base = std::env::temp_dir().join(format!("gilwatch-root-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(base.join("outside"), b"secret").unwrap();
        std::fs::write(root.join("inside"), b"ok").unwrap();
        // An absolute link resolves inside the root; `..` cannot climb above it.
        std::os::unix::fs::symlink("/inside", root.join("d/abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("d/up")).unwrap();
        assert_eq!(
            read_in_root(&root, Path::new("d/abs"), 100)
                .unwrap()
                .unwrap(),
            b"ok"
        );
        assert!(
            read_in_root(&root, Path::new("d/up"), 100)
                .unwrap()
                .is_none()
        );
        assert!(
            read_in_root(&root, Path::new("missing"), 100)
                .unwrap()
                .is_none()
        );
        assert!(read_in_root(&root, Path::new("inside"), 1).is_err());
        std::fs::remove_dir_all(&base).ok();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// A corrupted object: the search answers (found or not), never panics; nothing is
        /// read outside the (empty) roots.
        #[test]
        fn symbol_search_survives_corrupted_objects(
            data in crate::object::hostile_elf::corrupted(),
        ) {
            let empty = std::env::temp_dir().join("gilwatch-no-debug-root");
            let roots = Roots { target: empty.clone(), debug: empty };
            let _ = symbol_file("/usr/lib/libpython3.12.so", &data, &roots);
            let _ = check_debug_file(&data, &Expect::BuildId(vec![1, 2, 3]));
            let _ = check_debug_file(&data, &Expect::Crc(0, Some(vec![1])));
        }

        #[test]
        fn debuglink_and_build_id_of_any_bytes(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            little_endian: bool,
        ) {
            if let Some((name, _)) = parse_debuglink(&data, little_endian) {
                proptest::prop_assert!(!name.is_empty() && !name.contains(&b'/'));
            }
            match build_id_path(&data) {
                Some(path) => proptest::prop_assert!(path.starts_with("usr/lib/debug/.build-id")),
                None => proptest::prop_assert!(data.len() < 2),
            }
        }

        /// A corrupted xz stream: an error or bytes within the cap, never a panic.
        #[test]
        fn corrupted_xz_is_an_error_or_capped(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), proptest::prelude::any::<usize>(),
                 proptest::prelude::any::<u8>()), 1..8),
            cut: Option<usize>,
        ) {
            let mut xz = crate::object::hostile_elf::seeds().xz.clone();
            crate::object::hostile_elf::corrupt(&mut xz, &edits, cut);
            if let Ok(out) = decompress_xz(&xz, 1 << 20) {
                proptest::prop_assert!(out.len() <= 1 << 20);
            }
        }
    }

    /// The MiniDebugInfo of a program compiled here (its .symtab, xz'd, in .gnu_debugdata of
    /// its stripped copy) names its static function.
    #[test]
    fn minidebuginfo_round_trip() {
        let seeds = crate::object::hostile_elf::seeds();
        let empty = std::env::temp_dir().join("gilwatch-no-debug-root");
        let roots = Roots {
            target: empty.clone(),
            debug: empty,
        };
        let search = symbol_file("/x/prog", &seeds.with_minidebuginfo, &roots).unwrap();
        let (source, data) = search.found.expect("MiniDebugInfo found");
        assert_eq!(source, SymbolSource::MiniDebugInfo);
        assert_eq!(&*data, &seeds.with_symtab[..]);
        let search = symbol_file("/x/prog", &seeds.stripped, &roots).unwrap();
        assert!(search.found.is_none());
    }

    /// 64 MiB of zeros is a 10 KB xz stream: the cap holds without holding the 64 MiB.
    #[test]
    fn xz_bomb_is_refused() {
        let out = std::process::Command::new("sh")
            .args(["-c", "head -c 67108864 /dev/zero | xz -c"])
            .output()
            .expect("xz");
        assert!(out.status.success());
        assert!(out.stdout.len() < 64 << 10, "{} bytes", out.stdout.len());
        let e = decompress_xz(&out.stdout, 1 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("more than 1 MiB"), "{e:#}");
        assert_eq!(
            decompress_xz(&out.stdout, 64 << 20).unwrap().len(),
            64 << 20
        );
    }
}
