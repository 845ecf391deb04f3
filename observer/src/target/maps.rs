//! /proc/PID/maps: the target's memory regions, parsed once for every stage that needs them.

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rw-p`, `r-xp`, …
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// The path as the process sees it (inside its own mount namespace), `[heap]`/`[stack]`, or
    /// empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    /// Maps a file (rather than anonymous memory or `[heap]`, `[stack]`, `[vdso]`…).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Every region, in the kernel's (address) order; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (s, e) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let inode = f.next()?.parse().ok()?;
            let path = f.next().unwrap_or("").trim();
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms,
                offset,
                inode,
                path: path.trim_end_matches(" (deleted)").to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_region() {
        let text = "\
7f00a0000000-7f00a0200000 r--p 00000000 fd:01 1234                       /usr/lib/libpython3.12.so.1.0
7f00a0200000-7f00a0400000 r-xp 00200000 fd:01 1234                       /usr/lib/libpython3.12.so.1.0
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0      [heap]
7f00b0000000-7f00b0001000 rw-p 00000000 00:00 0 
7f00c0000000-7f00c0001000 r--p 00000000 fd:01 99    /tmp/with space.so (deleted)
";
        let m = parse(text);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].start, 0x7f00a0200000);
        assert_eq!(m[1].offset, 0x200000);
        assert_eq!(m[1].perms, "r-xp");
        assert_eq!(m[0].path, "/usr/lib/libpython3.12.so.1.0");
        assert_eq!(m[0].inode, 1234);
        assert_eq!(m[2].path, "[heap]");
        assert_eq!(m[3].path, "");
        assert_eq!(m[3].end, 0x7f00b0001000);
        assert_eq!(m[4].path, "/tmp/with space.so");
        let files: Vec<&Mapping> = m.iter().filter(|m| m.is_file()).collect();
        assert_eq!(files.len(), 3);
    }

    proptest::proptest! {
        /// The kernel writes maps, but a path can hold anything: every line parses or is skipped.
        #[test]
        fn any_text_parses_or_is_skipped(
            text in "([0-9a-f]{1,16}-[0-9a-f]{1,16} [rwxp-]{4} [0-9a-f]{1,16} ..:.. [0-9]{1,8} *\\PC{0,20}\n|\\PC{0,40}\n){0,8}",
        ) {
            for m in parse(&text) {
                proptest::prop_assert!(!m.path.contains('\n'));
            }
        }
    }
}
