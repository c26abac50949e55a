//! Files a reload must reach after the chroot: the configuration (SIGHUP
//! re-reads it) and the log (SIGHUP reopens it for logrotate). Each is kept
//! as its directory, opened before the chroot, and its name; `openat` then
//! finds the file as it is now, even if it was replaced. The directory
//! descriptor reaches only that directory, and we no longer hold root.

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub struct Anchored {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Anchored {
    pub fn new(path: &Path) -> io::Result<Anchored> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Anchored {
            dir,
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The path as configured, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, flags: OFlag, mode: Mode) -> io::Result<File> {
        let fd = openat(
            &self.dir,
            self.name.as_os_str(),
            flags | OFlag::O_CLOEXEC,
            mode,
        )?;
        Ok(File::from(fd))
    }

    pub fn read_to_string(&self) -> io::Result<String> {
        let mut text = String::new();
        self.open(OFlag::O_RDONLY, Mode::empty())?
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Opens for appending, creating the file (mode 0640) if it is gone.
    pub fn open_append(&self) -> io::Result<File> {
        self.open(
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o640),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_a_replaced_file_by_its_name() {
        let dir = std::env::temp_dir().join(format!("smtarpit-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.conf");
        std::fs::write(&path, "one").unwrap();
        let a = Anchored::new(&path).unwrap();
        assert_eq!(a.read_to_string().unwrap(), "one");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "two").unwrap();
        assert_eq!(a.read_to_string().unwrap(), "two");
        std::fs::remove_file(&path).unwrap();
        a.open_append().unwrap().write_all(b"x").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
