//! Privileges: the last steps of start-up. The daemon starts as root to bind
//! port 25, open the log and raise the open-file limit; then it chroots into
//! an empty directory and becomes an unprivileged user, for good, and only
//! then serves. Nothing it does while serving needs root or the file system.
//!
//! Three calls, in this order:
//!
//! 1. [`resolve_user`], while `/etc/passwd` can still be read (not after the
//!    chroot);
//! 2. [`check_chroot`], so that a bad directory is a start-up error that names
//!    what is wrong rather than a failed `chroot(2)`;
//! 3. [`enter`], once the sockets are bound, the log is open and the limits
//!    are raised.
//!
//! The order inside [`enter`] is the one every privilege-separated daemon
//! uses (OpenSSH's `permanently_set_uid`, OpenBSD's spamd): chroot while still
//! root; supplementary groups, then the group, then the user, because once the
//! user is not root it may change neither. Real, effective *and* saved ids are
//! all set, so there is no id left to switch back to. `PR_SET_NO_NEW_PRIVS`
//! then stops any exec from gaining privilege (the daemon never execs; this
//! keeps it so). Last, it checks its own work: `setuid(0)` must fail.

use nix::unistd::{Gid, Uid, User};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Who the daemon becomes, looked up before the chroot hides `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uid: Uid,
    /// The user's primary group, which is also the one group it keeps.
    pub gid: Gid,
}

/// Looks `name` up in the user database (`getpwnam`). Must run before the
/// chroot. Refuses root, and a user whose group is root: dropping to either
/// would not drop anything.
pub fn resolve_user(name: &str) -> Result<Target, String> {
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => return Err(format!("unknown user '{name}'")),
        Err(e) => return Err(format!("cannot look up user '{name}': {e}")),
    };
    if user.uid.is_root() {
        return Err(format!(
            "user '{name}' is root (uid 0): the daemon must run as an unprivileged user"
        ));
    }
    if user.gid.as_raw() == 0 {
        return Err(format!(
            "user '{name}' has group root (gid 0): the daemon must run in an unprivileged group"
        ));
    }
    log::info!("user '{name}' is uid {}, gid {}", user.uid, user.gid);
    Ok(Target {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    })
}

/// Checks that `dir` is fit to chroot into: an absolute path to an existing
/// directory, owned by root and writable by no one else. A chroot the daemon's
/// user (or anyone but root) could write to would let it plant files, such as
/// a `/etc` or a device node, that a later exec or library would trust.
pub fn check_chroot(dir: &Path) -> Result<(), String> {
    let d = dir.display();
    if !dir.is_absolute() {
        return Err(format!("chroot directory {d} is not an absolute path"));
    }
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!("chroot directory {d} does not exist"))
        }
        Err(e) => return Err(format!("chroot directory {d}: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("chroot directory {d} is not a directory"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "chroot directory {d} is writable by others: a chroot must not be \
             (mode {:04o}; chmod 755 it)",
            mode & 0o7777
        ));
    }
    if mode & 0o020 != 0 {
        return Err(format!(
            "chroot directory {d} is writable by its group: a chroot must not be \
             (mode {:04o}; chmod 755 it)",
            mode & 0o7777
        ));
    }
    if meta.uid() != 0 {
        return Err(format!(
            "chroot directory {d} is owned by uid {}: a chroot must be owned by root",
            meta.uid()
        ));
    }
    log::info!("chroot directory {d}: a directory owned by root, writable by no one else");
    Ok(())
}

/// Chroots into `chroot` (if given) and becomes `target`, for good: see the
/// module doc for the order. Then checks that root cannot be regained, and
/// fails if it can. Needs root; on any error the caller must not serve.
pub fn enter(chroot: Option<&Path>, target: &Target) -> Result<(), String> {
    use nix::unistd::{chdir, setgroups, setresgid, setresuid};

    match chroot {
        Some(dir) => {
            let d = dir.display();
            nix::unistd::chroot(dir).map_err(|e| format!("cannot chroot to {d}: {e}"))?;
            // Without this the working directory would still be outside.
            chdir("/").map_err(|e| format!("cannot change to / inside the chroot {d}: {e}"))?;
            log::info!("chrooted to {d}");
        }
        None => log::info!("not chrooting (no-chroot)"),
    }
    let (name, uid, gid) = (&target.name, target.uid, target.gid);
    // Root's supplementary groups (often several) must go first: setgid does
    // not touch them, and once no longer root the process cannot drop them.
    setgroups(&[gid])
        .map_err(|e| format!("cannot drop the supplementary groups (setgroups): {e}"))?;
    setresgid(gid, gid, gid).map_err(|e| format!("cannot set the group to gid {gid}: {e}"))?;
    setresuid(uid, uid, uid)
        .map_err(|e| format!("cannot set the user to '{name}' (uid {uid}): {e}"))?;
    log::info!("dropped privileges to user '{name}' (uid {uid}, gid {gid})");
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| format!("cannot set no_new_privs (prctl): {e}"))?;
    verify(target)?;
    log::info!("verified: root cannot be regained");
    Ok(())
}

/// Checks that the drop held: every id is the target's, no group of root's is
/// left, and neither `setuid(0)` nor `setgid(0)` works.
fn verify(target: &Target) -> Result<(), String> {
    use nix::unistd::{getgroups, getresgid, getresuid, setgid, setuid};

    if setuid(Uid::from_raw(0)).is_ok() {
        return Err("setuid(0) succeeded after the privilege drop: root can be regained".into());
    }
    if setgid(Gid::from_raw(0)).is_ok() {
        return Err(
            "setgid(0) succeeded after the privilege drop: group root can be regained".into(),
        );
    }
    let u = getresuid().map_err(|e| format!("cannot read the user ids (getresuid): {e}"))?;
    if [u.real, u.effective, u.saved] != [target.uid; 3] {
        return Err(format!(
            "after the privilege drop the user ids are real {}, effective {}, saved {}: not uid {}",
            u.real, u.effective, u.saved, target.uid
        ));
    }
    let g = getresgid().map_err(|e| format!("cannot read the group ids (getresgid): {e}"))?;
    if [g.real, g.effective, g.saved] != [target.gid; 3] {
        return Err(format!(
            "after the privilege drop the group ids are real {}, effective {}, saved {}: not gid {}",
            g.real, g.effective, g.saved, target.gid
        ));
    }
    let groups = getgroups().map_err(|e| format!("cannot read the groups (getgroups): {e}"))?;
    if groups.iter().any(|&g| g != target.gid) {
        return Err(format!(
            "after the privilege drop supplementary groups remain: {groups:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::geteuid;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str, mode: u32) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("smtarpit-privs-{}-{n}-{tag}", std::process::id()));
            fs::create_dir(&path).unwrap();
            // Explicitly, so that the umask does not decide.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> bool {
        geteuid().is_root()
    }

    #[test]
    fn check_chroot_accepts_a_root_owned_0755_directory() {
        let dir = TempDir::new("ok", 0o755);
        if root() {
            assert_eq!(check_chroot(&dir.0), Ok(()));
        } else {
            // Not root: the directory is ours, not root's.
            let err = check_chroot(&dir.0).unwrap_err();
            assert!(err.ends_with("a chroot must be owned by root"), "{err}");
        }
    }

    #[test]
    fn check_chroot_refuses_a_directory_writable_by_others() {
        let dir = TempDir::new("others", 0o777);
        assert_eq!(
            check_chroot(&dir.0).unwrap_err(),
            format!(
                "chroot directory {} is writable by others: a chroot must not be \
                 (mode 0777; chmod 755 it)",
                dir.0.display()
            )
        );
    }

    #[test]
    fn check_chroot_refuses_a_directory_writable_by_its_group() {
        let dir = TempDir::new("group", 0o775);
        let err = check_chroot(&dir.0).unwrap_err();
        assert!(
            err.contains("is writable by its group: a chroot must not be"),
            "{err}"
        );
    }

    #[test]
    fn check_chroot_refuses_a_directory_not_owned_by_root() {
        if !root() {
            eprintln!("skipped: needs root to give a directory away");
            return;
        }
        let dir = TempDir::new("owner", 0o755);
        let nobody = resolve_user("nobody").unwrap();
        nix::unistd::chown(&dir.0, Some(nobody.uid), None).unwrap();
        assert_eq!(
            check_chroot(&dir.0).unwrap_err(),
            format!(
                "chroot directory {} is owned by uid {}: a chroot must be owned by root",
                dir.0.display(),
                nobody.uid
            )
        );
    }

    #[test]
    fn check_chroot_refuses_a_file() {
        let dir = TempDir::new("file", 0o755);
        let file = dir.0.join("file");
        fs::write(&file, "").unwrap();
        assert_eq!(
            check_chroot(&file).unwrap_err(),
            format!("chroot directory {} is not a directory", file.display())
        );
    }

    #[test]
    fn check_chroot_refuses_a_missing_path() {
        let dir = TempDir::new("missing", 0o755);
        let missing = dir.0.join("no-such-dir");
        assert_eq!(
            check_chroot(&missing).unwrap_err(),
            format!("chroot directory {} does not exist", missing.display())
        );
    }

    #[test]
    fn check_chroot_refuses_a_relative_path() {
        assert_eq!(
            check_chroot(Path::new("var/empty")).unwrap_err(),
            "chroot directory var/empty is not an absolute path"
        );
    }

    #[test]
    fn resolve_user_finds_nobody() {
        let t = resolve_user("nobody").unwrap();
        assert_eq!(t.name, "nobody");
        assert!(!t.uid.is_root());
        assert_ne!(t.gid.as_raw(), 0);
    }

    #[test]
    fn resolve_user_refuses_an_unknown_user() {
        assert_eq!(
            resolve_user("no-such-user-xyz").unwrap_err(),
            "unknown user 'no-such-user-xyz'"
        );
    }

    #[test]
    fn resolve_user_refuses_root() {
        let err = resolve_user("root").unwrap_err();
        assert!(err.starts_with("user 'root' is root (uid 0)"), "{err}");
    }

    #[test]
    fn enter_fails_before_any_change_on_a_missing_chroot() {
        // chroot(2) fails (ENOENT as root, EPERM otherwise) before any id is
        // touched, so this is safe in the test process itself.
        let target = resolve_user("nobody").unwrap();
        let err = enter(Some(Path::new("/no-such-dir-smtarpit")), &target).unwrap_err();
        assert!(
            err.starts_with("cannot chroot to /no-such-dir-smtarpit: "),
            "{err}"
        );
    }

    /// The real thing, in a forked child so the test process keeps root: the
    /// child chroots into an empty directory as nobody and checks it cannot
    /// get back; it reports on a pipe and through its exit status.
    #[test]
    fn enter_chroots_and_drops_for_good() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        use std::io::{Read, Write};

        if !root() {
            eprintln!("skipped: enter needs root (run the tests as root to exercise it)");
            return;
        }
        let target = resolve_user("nobody").unwrap();
        let dir = TempDir::new("enter", 0o755);
        let (rx, tx) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only runs `in_child` (system calls and small
        // allocations, which glibc's fork keeps usable) and then _exit, never
        // returning into the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(rx);
                let code = match in_child(&dir.0, &target) {
                    Ok(()) => 0,
                    Err(msg) => {
                        let _ = fs::File::from(tx).write_all(msg.as_bytes());
                        1
                    }
                };
                // SAFETY: ends the child without unwinding or running the
                // parent's atexit handlers and destructors (such as TempDir).
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(tx);
                let mut msg = String::new();
                fs::File::from(rx).read_to_string(&mut msg).unwrap();
                let status = waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Exited(child, 0), "child: {msg}");
            }
        }
    }

    fn in_child(dir: &Path, target: &Target) -> Result<(), String> {
        use nix::unistd::{getegid, geteuid, getgid, getuid, setuid};

        check_chroot(dir)?;
        enter(Some(dir), target)?;
        if getuid() != target.uid || geteuid() != target.uid {
            return Err(format!(
                "uid {} euid {}, not {}",
                getuid(),
                geteuid(),
                target.uid
            ));
        }
        if getgid() != target.gid || getegid() != target.gid {
            return Err(format!(
                "gid {} egid {}, not {}",
                getgid(),
                getegid(),
                target.gid
            ));
        }
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err("setuid(0) succeeded".into());
        }
        if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
            return Err("no_new_privs is not set".into());
        }
        // The root is now the empty directory: no /etc, no /proc.
        let entries = fs::read_dir("/").map_err(|e| format!("cannot list /: {e}"))?;
        if let Some(e) = entries.into_iter().next() {
            return Err(format!("/ is not the empty chroot: it holds {e:?}"));
        }
        if Path::new("/etc/passwd").exists() || Path::new("/proc/self/status").exists() {
            return Err("/etc/passwd or /proc/self/status is visible".into());
        }
        Ok(())
    }
}
