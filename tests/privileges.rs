//! Privileges, seen from outside: started as root, the daemon serves from its
//! chroot as the unprivileged user, with every id dropped, no capability and
//! no_new_privs, as `/proc/PID` shows while it answers a client; and a chroot
//! or user it cannot use is a start-up error that names it, before anything
//! listens.
//!
//! These need root (CI runs as root); as anyone else they print a note and
//! pass, since the daemon then neither chroots nor drops.

mod common;

use common::{ms, root, Daemon, TempDir, HOST, WAIT};
use std::fs;
use std::path::Path;
use std::time::Instant;

/// Whether to skip: prints why when not root.
fn skip_unless_root(test: &str) -> bool {
    if root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (CI runs the tests as root)");
    true
}

/// The user the daemon drops to: its uid and primary gid, from the system.
fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("a user 'nobody'");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Starts the daemon as `Daemon::start` does, but with exactly these extra
/// arguments (no `--no-chroot`), and waits for it to listen.
fn start(args: &[&str]) -> Daemon {
    let mut all = vec!["-l", "127.0.0.1:0", "--hostname", HOST];
    all.extend_from_slice(args);
    let mut d = Daemon::spawn(&all);
    let listening = d.wait_line(WAIT, |r| {
        r.get("msg").is_some_and(|m| m.starts_with("listening on "))
    });
    d.port = listening.at("msg")["listening on ".len()..]
        .parse::<std::net::SocketAddr>()
        .expect("listening on ADDR:PORT")
        .port();
    d
}

/// `/proc/PID/status` as (field, value) pairs, values trimmed.
fn status(pid: u32) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn field<'a>(status: &'a [(String, String)], name: &str) -> &'a str {
    status
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
}

/// Checks the identity of a serving daemon: every uid and gid (real,
/// effective, saved, file system) is nobody's, nobody's group is its only
/// group, no capability is left, and no_new_privs is set.
fn assert_dropped(pid: u32) {
    let (uid, gid) = nobody();
    let st = status(pid);
    let ids = |name: &str| -> Vec<u32> {
        field(&st, name)
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect()
    };
    assert_eq!(ids("Uid"), [uid; 4], "Uid: real, effective, saved, fs");
    assert_eq!(ids("Gid"), [gid; 4], "Gid: real, effective, saved, fs");
    let groups = ids("Groups");
    assert!(
        groups.is_empty() || groups == [gid],
        "supplementary groups left: {groups:?}"
    );
    assert_eq!(field(&st, "NoNewPrivs"), "1");
    for cap in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(field(&st, cap), "0000000000000000", "{cap}");
    }
}

#[test]
fn serves_from_the_chroot_as_nobody_with_no_way_back() {
    if skip_unless_root("serves_from_the_chroot_as_nobody_with_no_way_back") {
        return;
    }
    let jail = TempDir::new("jail", 0o755);
    let d = start(&["--chroot", jail.path(), "--user", "nobody"]);
    // The greeting proves it serves; what /proc shows now is what serves.
    let mut c = d.machine();
    let pid = d.pid();
    assert_dropped(pid);
    let link = |what: &str| fs::read_link(format!("/proc/{pid}/{what}")).expect("readlink");
    assert_eq!(link("root"), jail.0, "/proc/PID/root");
    assert_eq!(
        link("cwd"),
        jail.0,
        "/proc/PID/cwd (chdir / inside the jail)"
    );
    // It still answers after being looked at.
    c.send(b"QUIT\r\n");
    drop(c);

    // Start-up reads as a list, and nothing is served before the drop.
    let records = d.stop();
    let msgs: Vec<&str> = records.iter().filter_map(|r| r.get("msg")).collect();
    let at = |prefix: &str| {
        msgs.iter()
            .position(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}...' in the log: {msgs:#?}"))
    };
    let order = [
        at("user 'nobody' is uid"),
        at(&format!(
            "chroot directory {}: a directory owned by root",
            jail.path()
        )),
        at("listening on "),
        at(&format!("chrooted to {}", jail.path())),
        at("dropped privileges to user 'nobody'"),
        at("verified: root cannot be regained"),
        at("serving"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{msgs:#?}");
    let first_accept = records.iter().position(|r| r.is("accept")).unwrap();
    let serving = records
        .iter()
        .position(|r| r.get("msg") == Some("serving"))
        .unwrap();
    assert!(serving < first_accept, "accepted before serving");
}

#[test]
fn no_chroot_still_drops_to_the_user() {
    if skip_unless_root("no_chroot_still_drops_to_the_user") {
        return;
    }
    // A marker for finding the process: an empty configuration file.
    let conf = common::TempFile::new("privs-nochroot.conf", "");
    let d = start(&["--no-chroot", "--user", "nobody", "-f", conf.path()]);
    let _c = d.machine();
    let pid = d.pid();
    assert_dropped(pid);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        Path::new("/")
    );
    let records = d.stop();
    assert!(
        records
            .iter()
            .any(|r| r.get("msg") == Some("not chrooting (no-chroot)")),
        "the skipped step is logged"
    );
}

/// Runs the daemon expecting a start-up error: it must exit non-zero within
/// a second, never having listened. Returns what it wrote on stderr.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["-l", "127.0.0.1:0", "--hostname", HOST];
    all.extend_from_slice(args);
    let t0 = Instant::now();
    let mut d = Daemon::spawn(&all);
    let status = d
        .wait_exit(ms(1000))
        .unwrap_or_else(|| panic!("still running after 1s; log:\n{}", d.dump()));
    let took = t0.elapsed();
    let err = d.dump();
    assert!(!status.success(), "exit {status}: {err}");
    assert_eq!(status.code(), Some(1), "an exit code, not a signal: {err}");
    assert!(!err.contains("listening on"), "it listened: {err}");
    assert!(!err.contains("serving"), "it served: {err}");
    assert!(took < ms(1000), "exit after {took:?}");
    err
}

#[test]
fn a_missing_chroot_directory_is_a_start_up_error() {
    if skip_unless_root("a_missing_chroot_directory_is_a_start_up_error") {
        return;
    }
    let parent = TempDir::new("parent", 0o755);
    let missing = parent.0.join("no-such-jail");
    let missing = missing.to_str().unwrap();
    let err = refused(&["--chroot", missing, "--user", "nobody"]);
    assert!(
        err.contains(&format!("chroot directory {missing} does not exist")),
        "{err}"
    );
}

#[test]
fn a_world_writable_chroot_directory_is_a_start_up_error() {
    if skip_unless_root("a_world_writable_chroot_directory_is_a_start_up_error") {
        return;
    }
    let jail = TempDir::new("open", 0o777);
    let err = refused(&["--chroot", jail.path(), "--user", "nobody"]);
    assert!(
        err.contains(&format!(
            "chroot directory {} is writable by others",
            jail.path()
        )),
        "{err}"
    );
    // The sticky bit of /tmp does not make it any safer.
    let jail = TempDir::new("sticky", 0o1777);
    let err = refused(&["--chroot", jail.path(), "--user", "nobody"]);
    assert!(err.contains("is writable by others"), "{err}");
}

#[test]
fn a_chroot_directory_the_user_owns_is_a_start_up_error() {
    if skip_unless_root("a_chroot_directory_the_user_owns_is_a_start_up_error") {
        return;
    }
    let jail = TempDir::new("owned", 0o755);
    let (uid, _) = nobody();
    std::os::unix::fs::chown(&jail.0, Some(uid), None).expect("chown");
    let err = refused(&["--chroot", jail.path(), "--user", "nobody"]);
    assert!(
        err.contains(&format!(
            "chroot directory {} is owned by uid {uid}: a chroot must be owned by root",
            jail.path()
        )),
        "{err}"
    );
}

#[test]
fn an_unknown_user_is_a_start_up_error() {
    if skip_unless_root("an_unknown_user_is_a_start_up_error") {
        return;
    }
    let jail = TempDir::new("user", 0o755);
    let err = refused(&["--chroot", jail.path(), "--user", "no-such-user-smtarpit"]);
    assert!(
        err.contains("unknown user 'no-such-user-smtarpit'"),
        "{err}"
    );
    let err = refused(&["--no-chroot", "--user", "no-such-user-smtarpit"]);
    assert!(
        err.contains("unknown user 'no-such-user-smtarpit'"),
        "{err}"
    );
}

#[test]
fn root_as_the_user_is_a_start_up_error() {
    if skip_unless_root("root_as_the_user_is_a_start_up_error") {
        return;
    }
    let err = refused(&["--no-chroot", "--user", "root"]);
    assert!(err.contains("user 'root' is root (uid 0)"), "{err}");
}
