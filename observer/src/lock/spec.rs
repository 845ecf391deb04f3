//! What the user asked for on the command line: `--lock SYMBOL|OBJ:SYMBOL|0xADDR` and
//! `--lock-fns ACQUIRE:RELEASE[:ARG]`, parsed (pure; resolved against the target in `locate`).

/// What the lock path is asked to watch (built once from the command line).
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// `--lock`: pthread mutexes by symbol or address.
    pub locks: Vec<LockSpec>,
    /// `--lock-fns`: custom lock functions.
    pub lock_fns: Vec<LockFnSpec>,
    /// `--mutexes`: every contended pthread mutex, with call sites.
    pub discover: bool,
    /// `--py-locks`: every Python thread lock (threading.Lock, RLock and what is built on them).
    pub python: bool,
}

/// One `--lock` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSpec {
    /// A data symbol, optionally in one object (`libfoo.so:g_lock`; the object is matched by
    /// file name prefix, so `libfoo.so` matches `libfoo.so.1.2`).
    Symbol {
        object: Option<String>,
        name: String,
    },
    /// A raw address in the target.
    Address(u64),
}

/// One `--lock-fns` argument: custom lock functions, and which argument names the lock instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFnSpec {
    pub acquire: FnName,
    pub release: FnName,
    /// 0-based index of the argument that identifies the lock (0: the first).
    pub arg: u8,
}

/// A function, optionally in one object (`libfoo.so@my_lock`: `@` separates, since `:` already
/// separates the acquire and release functions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnName {
    pub object: Option<String>,
    pub name: String,
}

/// The highest argument index a probe can read (x86_64 passes six integer arguments in registers).
pub const MAX_ARG: u8 = 5;

impl std::fmt::Display for LockSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockSpec::Symbol {
                object: Some(o),
                name,
            } => write!(f, "{o}:{name}"),
            LockSpec::Symbol { object: None, name } => write!(f, "{name}"),
            LockSpec::Address(a) => write!(f, "{a:#x}"),
        }
    }
}

impl std::fmt::Display for FnName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.object {
            Some(o) => write!(f, "{o}@{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

fn is_symbol_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
}

/// Parses a `--lock` value (clap value parser: the error is shown after "invalid value").
pub fn parse_lock(s: &str) -> Result<LockSpec, String> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16)
            .ok()
            .filter(|&a| a != 0)
            .map(LockSpec::Address)
            .ok_or_else(|| format!("{s:?} is not a non-zero hex address (e.g. 0x55d0c0a4c040)"));
    }
    let (object, name) = match s.rsplit_once(':') {
        Some((o, n)) if !o.is_empty() => (Some(o.to_owned()), n),
        Some(_) => return Err(format!("{s:?}: the object before ':' is empty")),
        None => (None, s),
    };
    if !is_symbol_name(name) {
        return Err(format!(
            "{s:?} is not a symbol name: pass SYMBOL, OBJECT:SYMBOL (libfoo.so:g_cache_lock) or 0xADDRESS"
        ));
    }
    Ok(LockSpec::Symbol {
        object,
        name: name.to_owned(),
    })
}

fn parse_fn(s: &str) -> Result<FnName, String> {
    let (object, name) = match s.split_once('@') {
        Some((o, n)) if !o.is_empty() => (Some(o.to_owned()), n),
        Some(_) => return Err(format!("{s:?}: the object before '@' is empty")),
        None => (None, s),
    };
    if !is_symbol_name(name) {
        return Err(format!("{name:?} is not a function name"));
    }
    Ok(FnName {
        object,
        name: name.to_owned(),
    })
}

/// Parses a `--lock-fns` value: `ACQUIRE:RELEASE[:ARG]`.
pub fn parse_lock_fns(s: &str) -> Result<LockFnSpec, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let usage =
        "expected ACQUIRE:RELEASE[:ARG], e.g. my_lock:my_unlock or spin_acquire:spin_release:1";
    let (acq, rel, arg) = match parts.as_slice() {
        [a, r] => (*a, *r, 0),
        [a, r, n] => {
            let n: u8 = n.parse().ok().filter(|&n| n <= MAX_ARG).ok_or_else(|| {
                format!("{s:?}: ARG must be an argument index 0..={MAX_ARG} (0 = first)")
            })?;
            (*a, *r, n)
        }
        _ => return Err(format!("{s:?}: {usage}")),
    };
    Ok(LockFnSpec {
        acquire: parse_fn(acq).map_err(|e| format!("{e}; {usage}"))?,
        release: parse_fn(rel).map_err(|e| format!("{e}; {usage}"))?,
        arg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_specs() {
        assert_eq!(
            parse_lock("g_lock"),
            Ok(LockSpec::Symbol {
                object: None,
                name: "g_lock".into()
            })
        );
        assert_eq!(
            parse_lock("libfoo.so:g_cache_lock"),
            Ok(LockSpec::Symbol {
                object: Some("libfoo.so".into()),
                name: "g_cache_lock".into()
            })
        );
        assert_eq!(
            parse_lock("0x7f00a0001040"),
            Ok(LockSpec::Address(0x7f00a0001040))
        );
        assert!(parse_lock("0x").is_err());
        assert!(parse_lock("0x0").is_err());
        assert!(parse_lock("0xzz").is_err());
        assert!(parse_lock(":g").is_err());
        assert!(parse_lock("12abc").is_err());
        assert!(parse_lock("a b").is_err());
        assert_eq!(
            parse_lock("libfoo.so:g").unwrap().to_string(),
            "libfoo.so:g"
        );
    }

    #[test]
    fn lock_fn_specs() {
        let s = parse_lock_fns("my_lock:my_unlock").unwrap();
        assert_eq!(s.acquire.name, "my_lock");
        assert_eq!(s.release.name, "my_unlock");
        assert_eq!(s.arg, 0);
        let s = parse_lock_fns("libx.so@acq:libx.so@rel:2").unwrap();
        assert_eq!(s.acquire.object.as_deref(), Some("libx.so"));
        assert_eq!(s.arg, 2);
        assert_eq!(s.acquire.to_string(), "libx.so@acq");
        assert!(parse_lock_fns("onlyone").is_err());
        assert!(parse_lock_fns("a:b:9").is_err());
        assert!(parse_lock_fns("a:b:c:d").is_err());
        assert!(parse_lock_fns("a::1").is_err());
    }
}
