//! Thread groups: the threads of one pool under one name, so that reports compared across runs
//! match threads by what they are, and metric label sets stay bounded however many threads a
//! pool starts over days.

/// The group a thread name belongs to: the last number of a pool-style name (after `-` or `_`,
/// at the end or before CPython's ` (target)` suffix) becomes `*`. `ThreadPoolExecutor-0_7` →
/// `ThreadPoolExecutor-0_*`, `Thread-3 (worker)` → `Thread-* (worker)`, `io-2` → `io-*`;
/// `python3` and `cpu-hog` stay as they are.
pub fn group_of(name: &str) -> String {
    let (head, suffix) = match name.find(" (") {
        Some(i) if name.ends_with(')') => name.split_at(i),
        _ => (name, ""),
    };
    let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let stem = &head[..head.len() - digits];
    if digits == 0 || !(stem.ends_with('-') || stem.ends_with('_')) {
        return name.to_owned();
    }
    format!("{stem}*{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_members_share_a_group() {
        assert_eq!(group_of("ThreadPoolExecutor-0_7"), "ThreadPoolExecutor-0_*");
        assert_eq!(
            group_of("ThreadPoolExecutor-0_12"),
            "ThreadPoolExecutor-0_*"
        );
        assert_eq!(group_of("Thread-3 (worker)"), "Thread-* (worker)");
        assert_eq!(group_of("Thread-14"), "Thread-*");
        assert_eq!(group_of("Dummy-2"), "Dummy-*");
        assert_eq!(group_of("io-1"), "io-*");
        assert_eq!(group_of("asyncio_0"), "asyncio_*");
    }

    #[test]
    fn other_names_stay() {
        for n in [
            "python3",
            "cpu-hog",
            "MainThread",
            "worker",
            "x-",
            "gunicorn (x)",
            "a-1b",
            "",
        ] {
            assert_eq!(group_of(n), n, "{n}");
        }
    }
}
