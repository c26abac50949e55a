//! Signals as events in the poll: no work in signal handlers, no threads.
//! On Linux the signals are blocked and read from a `signalfd`; elsewhere
//! (FreeBSD) a handler writes the signal's number to a pipe — the classic
//! self-pipe — and the loop reads it. SIGPIPE is ignored everywhere: a
//! client's hang-up is an error on one write, not the end of the daemon.

use nix::sys::signal::{signal, SigHandler, Signal};
use std::os::fd::RawFd;

/// The signals the daemon acts on.
pub const HANDLED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

pub struct Signals {
    #[cfg(target_os = "linux")]
    fd: nix::sys::signalfd::SignalFd,
    #[cfg(not(target_os = "linux"))]
    read: std::os::fd::OwnedFd,
}

impl Signals {
    pub fn install() -> Result<Signals, String> {
        // SAFETY: SigIgn installs no handler code.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
            .map_err(|e| format!("cannot ignore SIGPIPE: {e}"))?;
        Signals::deliver()
    }

    #[cfg(target_os = "linux")]
    fn deliver() -> Result<Signals, String> {
        use nix::sys::signal::SigSet;
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let mut mask = SigSet::empty();
        for s in HANDLED {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("cannot block signals: {e}"))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("cannot create the signalfd: {e}"))?;
        Ok(Signals { fd })
    }

    #[cfg(not(target_os = "linux"))]
    fn deliver() -> Result<Signals, String> {
        use nix::fcntl::OFlag;
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigSet};
        use std::os::fd::IntoRawFd;
        use std::sync::atomic::Ordering;
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create the signal pipe: {e}"))?;
        PIPE.store(write.into_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for s in HANDLED {
            // SAFETY: the handler only calls write(2), which is
            // async-signal-safe, on a descriptor set before installing it.
            unsafe { sigaction(s, &action) }.map_err(|e| format!("cannot handle {s}: {e}"))?;
        }
        Ok(Signals { read })
    }

    /// The descriptor to poll for readability.
    pub fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        #[cfg(target_os = "linux")]
        return self.fd.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        return self.read.as_raw_fd();
    }

    /// The next pending signal, if any; never blocks.
    pub fn pending(&mut self) -> Option<Signal> {
        #[cfg(target_os = "linux")]
        {
            match self.fd.read_signal() {
                Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
                Ok(None) => None,
                Err(e) => {
                    log::warn!("reading the signalfd: {e}");
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut b = [0u8; 1];
            match nix::unistd::read(&self.read, &mut b) {
                Ok(1) => Signal::try_from(i32::from(b[0])).ok(),
                _ => None,
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
static PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

#[cfg(not(target_os = "linux"))]
extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE.load(std::sync::atomic::Ordering::Relaxed);
    let b = [sig as u8];
    // SAFETY: write(2) is async-signal-safe; a full pipe just drops the
    // byte, and then signals are already waiting to be read.
    unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
}
