//! Reads another process's memory from outside: `process_vm_readv` first (one syscall, no file
//! descriptor), `/proc/PID/mem` when that syscall is unavailable (ENOSYS, seccomp'd, or refused
//! under some ptrace policies while the file still works).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// Fills `buf` from `addr` in the target, or fails: a short read is an error, because a
    /// half-filled struct is worse than none.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
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

    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
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
