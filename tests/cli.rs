//! Start-up errors are fatal, name the place at fault and exit non-zero;
//! `-t` checks a configuration without serving.

mod common;

use common::{root, Daemon, TempFile, WAIT};

/// Runs the binary to its exit; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let mut d = Daemon::spawn(args);
    let status = d
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running; log:\n{}", d.dump()));
    (status.success(), d.dump())
}

#[test]
fn check_config_names_the_bad_line_of_the_file() {
    let conf = TempFile::new(
        "bad.conf",
        "# a comment\nhostname = mx.test\n\ntrickle = 2s-1s\n",
    );
    let (ok, err) = run(&["-t", "-f", conf.path()]);
    assert!(!ok, "a bad file must fail: {err}");
    assert!(
        err.contains(&format!("{}:4:", conf.path())),
        "FILE:LINE in {err:?}"
    );
    assert!(err.contains("trickle"), "{err:?}");

    let conf = TempFile::new("unknown.conf", "trickle = 1s-2s\nno-such-key = 1\n");
    let (ok, err) = run(&["--check-config", "--config", conf.path()]);
    assert!(!ok);
    assert!(err.contains(&format!("{}:2:", conf.path())), "{err:?}");
    assert!(err.contains("no-such-key"), "{err:?}");
}

#[test]
fn check_config_accepts_a_good_file_and_serves_nothing() {
    let conf = TempFile::new(
        "good.conf",
        "hostname = mx.test\ntrickle = 1s-2s\nmax-per-ip = 4\nno-chroot = yes\n",
    );
    let (ok, err) = run(&["-t", "-f", conf.path(), "-l", "127.0.0.1:0"]);
    assert!(ok, "{err}");
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn check_config_refuses_what_start_up_would_refuse() {
    // As root, -t checks the chroot directory and the user too.
    if !root() {
        return;
    }
    let (ok, err) = run(&["-t", "--chroot", "/nonexistent-smtarpit-jail"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent-smtarpit-jail") && err.contains("does not exist"),
        "{err}"
    );
    let (ok, err) = run(&["-t", "--no-chroot", "--user", "no-such-user-smtarpit"]);
    assert!(!ok);
    assert!(
        err.contains("unknown user 'no-such-user-smtarpit'"),
        "{err}"
    );
}

#[test]
fn a_bad_flag_fails_at_start_naming_the_flag() {
    let (ok, err) = run(&["-l", "127.0.0.1:0", "--trickle", "2s-1s"]);
    assert!(!ok, "{err}");
    assert!(err.contains("--trickle"), "{err:?}");
    assert!(!err.contains("listening"), "{err}");
    let (ok, err) = run(&["-l", "127.0.0.1:0", "--max-clients", "lots"]);
    assert!(!ok);
    assert!(err.contains("--max-clients"), "{err:?}");
}
