//! Where records and diagnostics go: standard error, a log file that SIGHUP
//! reopens (for logrotate), or syslog (under inetd, where standard error is
//! the client's socket). Records are written as they are; any other
//! message becomes a logfmt line too (`level=... msg="..."`), so the whole
//! stream parses the same way.

use crate::record::{escape_into, utc_timestamp};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where the log goes, chosen at start-up.
#[derive(Default)]
pub enum Dest {
    #[default]
    Stderr,
    File(File),
    /// The `mail` facility, the socket opened before the chroot.
    Syslog,
}

/// The log's destination, shared between the logger and the loop (which
/// swaps the file on reopen). One thread writes; the mutex is uncontended.
#[derive(Clone, Default)]
pub struct LogFile(Arc<Mutex<Dest>>);

static ECHO_ERRORS: AtomicBool = AtomicBool::new(false);

/// Whether a fatal error, logged, should also be printed on standard error:
/// yes when the log is elsewhere, unless standard error is a client (inetd).
pub fn echo_errors() -> bool {
    ECHO_ERRORS.load(Ordering::Relaxed)
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dest> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn replace(&self, file: File) {
        *self.lock() = Dest::File(file);
    }

    /// The log file, if we write to one.
    pub fn file(&self) -> Option<File> {
        match &*self.lock() {
            Dest::File(f) => f.try_clone().ok(),
            _ => None,
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.lock() {
            Dest::File(f) => f.write(buf),
            Dest::Stderr => io::stderr().write(buf),
            Dest::Syslog => {
                let line = buf.strip_suffix(b"\n").unwrap_or(buf);
                // Our lines are escaped ASCII; a NUL cannot occur, but if it
                // did the line would be cut, not lost.
                let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
                let text = CString::new(&line[..end]).unwrap_or_default();
                // SAFETY: both strings are NUL-terminated and live for the call.
                unsafe { libc::syslog(libc::LOG_INFO, c"%s".as_ptr(), text.as_ptr()) };
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets up `log` with our format. `verbose` 0 shows records, warnings and
/// errors; 1 adds debug; 2 trace.
pub fn init(verbose: u8, dest: Dest, stderr_is_client: bool) -> LogFile {
    let sink = LogFile::default();
    let echo = !stderr_is_client && !matches!(dest, Dest::Stderr);
    ECHO_ERRORS.store(echo, Ordering::Relaxed);
    if let Dest::Syslog = dest {
        // LOG_NDELAY: connect to /dev/log now, before the chroot hides it.
        // SAFETY: the identifier is a static NUL-terminated string.
        unsafe {
            libc::openlog(
                c"smtarpit".as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_MAIL,
            )
        };
    }
    *sink.lock() = dest;
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            let msg = record.args().to_string();
            if msg.starts_with("ts=") && record.level() == log::Level::Info {
                return writeln!(buf, "{msg}");
            }
            let mut line = String::with_capacity(msg.len() + 64);
            line.push_str("ts=");
            utc_timestamp(SystemTime::now(), &mut line);
            line.push_str(" level=");
            line.push_str(&record.level().as_str().to_ascii_lowercase());
            line.push_str(" msg=\"");
            escape_into(msg.as_bytes(), &mut line);
            line.push('"');
            writeln!(buf, "{line}")
        })
        .target(env_logger::Target::Pipe(Box::new(sink.clone())))
        .init();
    sink
}
