//! Call sites for `--mutexes`: return addresses → `function+0xoff (object)`, with blazesym.
use blazesym::{
    Pid,
    symbolize::{Input, Symbolized, Symbolizer, source::Process, source::Source},
};

use crate::object::mapped::AddressSpace;

/// The frames of one call site, innermost first: the lock call's own return address (`caller`),
/// then the rest of the recorded stack (`ips`, whose first entry is inside the lock function).
pub fn call_site(
    pid: u32,
    space: &AddressSpace,
    caller: u64,
    ips: &[u64],
    depth: usize,
) -> Vec<String> {
    let mut rets: Vec<u64> = Vec::new();
    if caller != 0 {
        rets.push(caller);
    }
    // Kernels that fix up entry-probe stacks already list the caller second: skip it then.
    rets.extend(
        ips.iter()
            .skip(1)
            .copied()
            .filter(|&ip| ip != caller && ip != 0),
    );
    // A frame-pointer walk through code built without frame pointers yields junk: stop at the
    // first address that is not in executable memory.
    let executable = |ip: u64| space.region_of(ip).is_some_and(|r| r.perms.contains('x'));
    if let Some(bad) = rets.iter().position(|&ip| !executable(ip)) {
        rets.truncate(bad);
    }
    rets.truncate(depth + 2);
    if rets.is_empty() {
        return Vec::new();
    }
    // Return addresses point after the call instruction: look up the byte before it, which
    // belongs to the calling function even when the call is its last instruction.
    let addrs: Vec<u64> = rets.iter().map(|&ip| ip - 1).collect();
    let src = Source::Process(Process::new(Pid::from(pid)));
    let symbolizer = Symbolizer::new();
    let syms = symbolizer
        .symbolize(&src, Input::AbsAddr(&addrs))
        .unwrap_or_default();
    let mut out = Vec::new();
    for (&ip, s) in rets.iter().zip(syms.iter()) {
        let text = match s {
            Symbolized::Sym(sym) if !is_lock_function(&sym.name) => {
                format!(
                    "{}+{:#x} ({})",
                    sym.name,
                    sym.offset + 1,
                    module_of(space, ip)
                )
            }
            Symbolized::Sym(_) => continue,
            Symbolized::Unknown(_) => format!("{ip:#x} ({})", module_of(space, ip)),
        };
        out.push(text);
        if out.len() >= depth {
            break;
        }
    }
    out
}

fn module_of(space: &AddressSpace, ip: u64) -> String {
    space
        .region_of(ip)
        .map(|r| r.path.rsplit('/').next().unwrap_or(&r.path).to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

/// The probed lock functions and their internal aliases: not call sites.
fn is_lock_function(name: &str) -> bool {
    let n = name.trim_start_matches('_');
    n.starts_with("pthread_mutex_") || n.starts_with("pthread_cond_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_functions_are_not_call_sites() {
        assert!(is_lock_function("pthread_mutex_lock"));
        assert!(is_lock_function("___pthread_mutex_lock"));
        assert!(is_lock_function("__pthread_cond_wait"));
        assert!(!is_lock_function("worker"));
        assert!(!is_lock_function("start_thread"));
    }
}
