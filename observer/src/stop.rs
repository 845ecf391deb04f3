//! What ends a run from outside, seen the moment it happens: SIGINT/SIGTERM and the target's exit.
//!
//! The two signals are blocked and read from a signalfd rather than caught by a handler: a
//! signal that arrives before the session is ready (while `-- CMD` is still being attached, or
//! between releasing the command and the first poll) stays pending until it is read, instead of
//! being lost or killing gilwatch with no report. The target's exit is its pidfd turning
//! readable, not a PID polled in /proc. One thread waits on both and hands events to the session.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread::JoinHandle,
};

use anyhow::Context as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::target::pidfd::PidFd;

/// The signal mask as it was before [`block`]: what a started command must get back.
pub struct Blocked {
    pub previous: libc::sigset_t,
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later. Call it
/// while gilwatch has one thread: a thread with the signals unblocked would die of them.
pub fn block() -> anyhow::Result<Blocked> {
    let set = stop_signals();
    // SAFETY: both sigsets are ours; pthread_sigmask only reads `set` and writes `previous`.
    let previous = unsafe {
        let mut previous: libc::sigset_t = std::mem::zeroed();
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r)).context("blocking SIGINT and SIGTERM");
        }
        previous
    };
    Ok(Blocked { previous })
}

impl Blocked {
    /// Puts the signal mask back as it was before [`block`].
    pub fn restore(self) -> anyhow::Result<()> {
        // SAFETY: setting the mask from a sigset we own.
        let r = unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r)).context("unblocking SIGINT and SIGTERM");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGINT or SIGTERM. `from_terminal`: the terminal sent it (Ctrl-C) to the whole foreground
    /// process group, so a command gilwatch started got it too.
    Signal {
        signo: i32,
        from_terminal: bool,
    },
    TargetExited,
}

/// Waits for stop signals (which must be blocked, see [`block`]) and the target's exit.
pub struct Watcher {
    events: UnboundedReceiver<Event>,
    /// Closing it wakes the thread to end.
    quit: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(target: PidFd) -> anyhow::Result<Self> {
        let set = stop_signals();
        // SAFETY: signalfd creates a new fd for a sigset we own.
        let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if sfd < 0 {
            return Err(io::Error::last_os_error()).context("creating a signalfd");
        }
        // SAFETY: the fd was just created and is owned by nothing else.
        let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error()).context("creating the watcher's pipe");
        }
        // SAFETY: both fds were just created and are owned by nothing else.
        let (quit_rx, quit_tx) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (tx, events) = unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("gilwatch-stop".into())
            .spawn(move || watch(sfd, target, quit_rx, tx))
            .context("starting the signal watcher")?;
        Ok(Self {
            events,
            quit: Some(quit_tx),
            thread: Some(thread),
        })
    }

    /// The next event; `None` only if the watcher failed (then nothing more will come).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.quit.take());
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

fn watch(signals: OwnedFd, target: PidFd, quit: OwnedFd, tx: UnboundedSender<Event>) {
    use std::os::fd::AsFd as _;
    let mut exited = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: quit.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A pidfd stays readable once its process has exited: listen to it only until then.
                fd: if exited {
                    -1
                } else {
                    target.as_fd().as_raw_fd()
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: an array of pollfds we own, its true length, no timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: all-zero bytes are a valid signalfd_siginfo (plain integers).
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `size` bytes into the struct we own.
            let got = unsafe {
                libc::read(
                    signals.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if got == size as isize {
                let event = Event::Signal {
                    signo: info.ssi_signo as i32,
                    from_terminal: info.ssi_code == libc::SI_KERNEL,
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
        if fds[2].revents != 0 && !exited {
            exited = true;
            if tx.send(Event::TargetExited).is_err() {
                return;
            }
        }
    }
}
