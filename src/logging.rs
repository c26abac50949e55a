//! Where records and diagnostics go: standard error, or a log file that
//! SIGHUP reopens (for logrotate). Records are written as they are; any other
//! message becomes a logfmt line too (`level=... msg="..."`), so the whole
//! stream parses the same way.

use crate::record::{escape_into, utc_timestamp};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The log's destination, shared between the logger and the loop (which
/// swaps the file on reopen). One thread writes; the mutex is uncontended.
#[derive(Clone, Default)]
pub struct LogFile(Arc<Mutex<Option<File>>>);

impl LogFile {
    pub fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    }

    pub fn replace(&self, file: File) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets up `log` with our format. `verbose` 0 shows records, warnings and
/// errors; 1 adds debug; 2 trace.
pub fn init(verbose: u8, file: Option<File>) -> LogFile {
    let sink = LogFile::default();
    if let Some(f) = file {
        sink.replace(f);
    }
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
