//! Reads another process's memory from outside: `process_vm_readv` first (one syscall, no file
//! descriptor), `/proc/PID/mem` when that syscall is unavailable (ENOSYS, seccomp'd, or refused
//! under some ptrace policies while the file still works).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Reads of another address space: a live process, or (in tests) bytes served at will. The
/// readers of interpreter state go through this, so tests can feed them garbage.
pub trait RemoteMemory {
    /// The process whose memory this is (its /proc entries name its threads).
    fn pid(&self) -> u32;

    /// Fills `buf` from `addr`, or fails: a short read is an error, because a half-filled
    /// struct is worse than none.
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;

    fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }
}

/// Caps what one walk of a target's memory may read, in calls and in bytes: each structure
/// read is bounded on its own, but garbage can chain bounded structures (every entry of a big
/// dict pointing at another big dict) into hours of reading.
pub struct ReadBudget<'a> {
    inner: &'a dyn RemoteMemory,
    reads_left: AtomicU64,
    bytes_left: AtomicU64,
    refused: AtomicBool,
}

impl<'a> ReadBudget<'a> {
    pub fn new(inner: &'a dyn RemoteMemory, reads: u64, bytes: u64) -> Self {
        Self {
            inner,
            reads_left: AtomicU64::new(reads),
            bytes_left: AtomicU64::new(bytes),
            refused: AtomicBool::new(false),
        }
    }

    /// True once a read has been refused for lack of budget.
    pub fn exhausted(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}

impl RemoteMemory for ReadBudget<'_> {
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let take = |left: &AtomicU64, n: u64| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(n))
                .is_ok()
        };
        if !take(&self.reads_left, 1) || !take(&self.bytes_left, buf.len() as u64) {
            self.reads_left.store(0, Ordering::Relaxed);
            self.refused.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "read budget of this walk exhausted",
            ));
        }
        self.inner.read(addr, buf)
    }
}

pub struct ProcessMemory {
    pid: u32,
    /// Set once `process_vm_readv` has failed in a way that will not change, so later reads go
    /// straight to `/proc/PID/mem`.
    vm_readv_unusable: AtomicBool,
    /// Opened on first fallback only, then kept: reopening per read would cost a path lookup
    /// and a ptrace access check every time.
    mem_file: Mutex<Option<File>>,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            vm_readv_unusable: AtomicBool::new(false),
            mem_file: Mutex::new(None),
        }
    }

    fn read_vm(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes exactly `buf`, which we borrow mutably for the call; the
        // remote iovec is only interpreted by the kernel in the target's address space.
        let n =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "short read at {addr:#x}: {n} of {} bytes (range crosses an unmapped page)",
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    fn read_proc_mem(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut guard = self
            .mem_file
            .lock()
            .map_err(|_| io::Error::other("memory reader lock poisoned"))?;
        if guard.is_none() {
            *guard = Some(File::open(format!("/proc/{}/mem", self.pid))?);
        }
        match guard.as_ref() {
            Some(f) => f.read_exact_at(buf, addr),
            None => Err(io::Error::other("/proc/PID/mem not open")),
        }
    }
}

impl RemoteMemory for ProcessMemory {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read of {} bytes at {addr:#x} wraps around", buf.len()),
            ));
        }
        if !self.vm_readv_unusable.load(Ordering::Relaxed) {
            match self.read_vm(addr, buf) {
                Ok(()) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    // The address (or part of the range) is not mapped, or the process is gone:
                    // /proc/PID/mem would say the same, so do not pay for a second attempt.
                    Some(libc::EFAULT) | Some(libc::ESRCH) => return Err(e),
                    Some(libc::ENOSYS) | Some(libc::EPERM) => {
                        self.vm_readv_unusable.store(true, Ordering::Relaxed);
                    }
                    _ if e.kind() == io::ErrorKind::UnexpectedEof => return Err(e),
                    _ => {}
                },
            }
        }
        self.read_proc_mem(addr, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_both_ways() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let addr = data.as_ptr() as u64;
        let mem = ProcessMemory::new(std::process::id());
        let mut buf = vec![0u8; data.len()];
        mem.read(addr, &mut buf).expect("process_vm_readv");
        assert_eq!(buf, data);
        assert_eq!(mem.read_u64(addr + 8).expect("u64"), 0x0f0e_0d0c_0b0a_0908);

        let mut buf = vec![0u8; data.len()];
        mem.read_proc_mem(addr, &mut buf).expect("/proc/self/mem");
        assert_eq!(buf, data);
    }

    #[test]
    fn unmapped_and_wrapping_reads_fail() {
        let mem = ProcessMemory::new(std::process::id());
        let mut buf = [0u8; 16];
        assert!(mem.read(8, &mut buf).is_err());
        assert!(mem.read(u64::MAX - 4, &mut buf).is_err());
        assert!(mem.read_proc_mem(8, &mut buf).is_err());
    }
}
