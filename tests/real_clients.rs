//! Real SMTP clients against the real daemon: swaks (Perl's Net::SMTP-style
//! client) and Python's smtplib. With short timings a machine is tarpitted
//! through a whole transaction, so these show that clients written by others
//! accept our multi-line replies and wait for the final line.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Timings short enough for a whole tarpitted transaction in seconds.
const FAST_TARPIT: &[&str] = &[
    "--trickle",
    "5ms-10ms",
    "--trickle-bytes",
    "4",
    "--reply-time",
    "300ms-400ms",
];

#[test]
fn swaks_is_tarpitted_through_a_whole_transaction() {
    if !have_tool("swaks") {
        return;
    }
    let d = Daemon::start(FAST_TARPIT);
    let t0 = Instant::now();
    let out = Command::new("swaks")
        .args(["--server", &d.addr().to_string()])
        .args(["--helo", "swaks.test", "--from", "spam@sender.test"])
        .args(["--to", "victim@mx.test", "--timeout", "30"])
        .output()
        .expect("run swaks");
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed: {text}");
    // Six replies after the greeting (EHLO, MAIL, RCPT, DATA, the body, QUIT),
    // each held at least the minimum reply time.
    assert!(took >= Duration::from_millis(6 * 300), "took {took:?}");
    assert!(text.contains("<-  250 2.0.0 Ok: queued as"), "{text}");
    // swaks shows continuation lines as it got them: the filler came first.
    assert!(text.contains("<-  250-"), "{text}");
    let close = d.wait_for("close", &[("reason", "quit")]);
    assert_eq!(close.at("class"), "machine");
    assert_eq!(close.at("helo"), "swaks.test");
    assert_eq!(close.at("mail_from"), "spam@sender.test");
    assert_eq!(close.at("rcpt"), "1");
    d.stop();
}

#[test]
fn python_smtplib_is_tarpitted_and_delivers_nothing() {
    if !have_tool("python3") {
        return;
    }
    let d = Daemon::start(FAST_TARPIT);
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         code, text = s.ehlo('py.test')\n\
         assert code == 250 and b'SMTPUTF8' in text, (code, text)\n\
         assert not s.has_extn('starttls') and not s.has_extn('auth')\n\
         refused = s.sendmail('a@py.test', ['b@mx.test', 'c@mx.test'], 'Subject: hi\\r\\n\\r\\n.dot\\r\\n')\n\
         assert refused == {{}}, refused\n\
         print(s.quit())\n",
        port = d.port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("221"));
    let close = d.wait_for("close", &[("reason", "quit")]);
    assert_eq!(close.at("class"), "machine");
    assert_eq!(close.at("helo"), "py.test");
    assert_eq!(close.at("rcpt"), "2");
    d.stop();
}
