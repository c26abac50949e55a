//! `--inetd`: one connection on standard input and output, as xinetd hands
//! it over — a socket on both (and on standard error), or a pair of pipes.
//! The same dialogue and records as the daemon, the records in `--log-file`
//! (or syslog, never the client's socket), and an exit when the client is
//! done.
//!
//! As root (CI) the process drops to nobody, and the pipe test also chroots,
//! as the xinetd example does; as anyone else it serves as it is.

mod common;

use common::{
    check_log, file_lines, file_records, ms, root, wait_file, Record, TempDir, HOST, WAIT,
};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The client's end of the connection: what we read the daemon's replies
/// from and write our commands to (one socket, or two pipes).
struct Wire {
    rd: File,
    wr: Option<File>,
    buf: Vec<u8>,
    /// Bytes read and written, to hold the close record's counts.
    got: usize,
    sent: usize,
}

impl Wire {
    fn socket(s: UnixStream) -> Wire {
        let rd = File::from(OwnedFd::from(s.try_clone().expect("dup")));
        Wire::new(rd, File::from(OwnedFd::from(s)))
    }

    fn new(rd: File, wr: File) -> Wire {
        Wire {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
            got: 0,
            sent: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.wr
            .as_mut()
            .expect("open for writing")
            .write_all(bytes)
            .expect("send");
        self.sent += bytes.len();
    }

    /// One read before `deadline`: `Some(n)`, 0 at the end; `None` on timeout.
    fn fill(&mut self, deadline: Instant) -> Option<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.rd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let wait = left.as_millis().clamp(1, 60_000) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, wait) } <= 0 {
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.rd.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.got += n;
                    return Some(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(0),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next CRLF line, without the CRLF; panics on timeout or at the end.
    fn line_in(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8(l).expect("ASCII");
                return text
                    .strip_suffix("\r\n")
                    .unwrap_or_else(|| panic!("not CRLF-terminated: {text:?}"))
                    .to_owned();
            }
            match self.fill(deadline) {
                Some(0) => panic!(
                    "the end, not a line; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Some(_) => {}
                None => panic!(
                    "no line in {timeout:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    fn line(&mut self) -> String {
        self.line_in(WAIT)
    }

    /// A command and its one-line reply, which must come within `within`.
    fn cmd(&mut self, line: &str, within: Duration) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let t0 = Instant::now();
        let reply = self.line();
        assert!(
            t0.elapsed() < within,
            "'{line}': reply took {:?}",
            t0.elapsed()
        );
        reply
    }

    /// Reads to the end of the stream; returns what came.
    fn eof_in(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Some(0) => return std::mem::take(&mut self.buf),
                Some(_) => {}
                None => panic!(
                    "no end in {timeout:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }
}

/// One `smtarpit --inetd` process; killed on drop if still running.
struct Inetd {
    child: Child,
}

impl Inetd {
    /// Starts the binary with `args` and the given standard streams.
    fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Inetd {
        let child = Command::new(env!("CARGO_BIN_EXE_smtarpit"))
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn smtarpit");
        Inetd { child }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(ms(5));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The arguments of every test: a person is anyone slower than 300 ms.
fn args<'a>(log: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--inetd",
        "--hostname",
        HOST,
        "--human-threshold",
        "300ms",
        "--log-file",
        log,
    ];
    all.extend_from_slice(more);
    all
}

/// A person's whole dialogue, from the greeting to the end after QUIT.
fn person(w: &mut Wire) {
    assert_eq!(w.line(), format!("220 {HOST} ESMTP"));
    std::thread::sleep(ms(400));
    let prompt = ms(300);
    assert_eq!(w.cmd("HELO p.example", prompt), format!("250 {HOST}"));
    assert_eq!(w.cmd("MAIL FROM:<a@example.org>", prompt), "250 2.1.0 Ok");
    assert_eq!(w.cmd("RCPT TO:<b@example.net>", prompt), "250 2.1.5 Ok");
    assert_eq!(w.cmd("DATA", prompt), "354 End data with <CR><LF>.<CR><LF>");
    let queued = w.cmd("Subject: hi\r\n\r\nhello\r\n.", prompt);
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(w.cmd("QUIT", prompt), "221 2.0.0 Bye");
    assert_eq!(w.eof_in(WAIT), b"", "the end after QUIT");
}

/// The records of a person's session: accept, classify, a cmd per command,
/// one close with what was said; and the file's invariants.
fn check_person_records(log: &Path, w: &Wire, peer: &str) {
    let records = check_log(&file_lines(log));
    let events: Vec<&Record> = records
        .iter()
        .filter(|r| r.get("event").is_some())
        .collect();
    let accept = events.iter().find(|r| r.is("accept")).expect("accept");
    assert_eq!(accept.at("id"), "1");
    assert_eq!(accept.at("peer"), peer);
    let classify = events.iter().find(|r| r.is("classify")).expect("classify");
    assert_eq!(classify.at("class"), "human", "{}", classify.line);
    let verbs: Vec<&str> = events
        .iter()
        .filter(|r| r.is("cmd"))
        .map(|r| r.at("verb"))
        .collect();
    assert_eq!(verbs, ["HELO", "MAIL", "RCPT", "DATA", "QUIT"]);
    let closes: Vec<&&Record> = events.iter().filter(|r| r.is("close")).collect();
    assert_eq!(closes.len(), 1);
    let close = closes[0];
    assert_eq!(close.at("reason"), "quit", "{}", close.line);
    assert_eq!(close.at("class"), "human");
    assert_eq!(close.at("helo"), "p.example");
    assert_eq!(close.at("mail_from"), "a@example.org");
    assert_eq!(close.num("rcpt"), 1);
    assert_eq!(close.num("cmds"), 5);
    assert_eq!(close.num("bytes_sent"), w.got as u64, "{}", close.line);
    assert_eq!(close.num("bytes_recv"), w.sent as u64, "{}", close.line);
    let order: Vec<&str> = events.iter().map(|r| r.event()).collect();
    assert_eq!(order.first(), Some(&"accept"), "{order:?}");
    assert_eq!(order.last(), Some(&"close"), "{order:?}");
}

#[test]
fn on_a_socketpair_a_person_is_served_and_the_process_exits_after_quit() {
    let dir = TempDir::new("sock", 0o755);
    let log = dir.0.join("smtarpit.log");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let out = theirs.try_clone().expect("dup");
    let mut p = Inetd::spawn(
        &args(log.to_str().unwrap(), &["--no-chroot"]),
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::from(OwnedFd::from(out)),
        Stdio::piped(),
    );
    let mut w = Wire::socket(ours);
    person(&mut w);
    let status = p
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running after QUIT"));
    assert!(status.success(), "exit {status}");
    let mut stderr = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stderr, "", "nothing on standard error");
    // A Unix socket has no IP peer: the records say so plainly.
    check_person_records(&log, &w, "0.0.0.0:0");
    if root() {
        let msgs: Vec<String> = file_records(&log)
            .iter()
            .filter_map(|r| r.get("msg").map(str::to_owned))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("dropped privileges to user 'nobody'")),
            "{msgs:#?}"
        );
    }
}

#[test]
fn on_pipes_a_person_is_served_and_the_process_exits_after_quit() {
    let dir = TempDir::new("pipes", 0o755);
    let jail = TempDir::new("jail", 0o755);
    let log = dir.0.join("smtarpit.log");
    // As root, chrooted as the xinetd example runs it.
    let more: Vec<&str> = if root() {
        vec!["--chroot", jail.path(), "--user", "nobody"]
    } else {
        vec!["--no-chroot"]
    };
    let mut p = Inetd::spawn(
        &args(log.to_str().unwrap(), &more),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::null(),
    );
    let stdin = File::from(OwnedFd::from(p.child.stdin.take().unwrap()));
    let stdout = File::from(OwnedFd::from(p.child.stdout.take().unwrap()));
    let mut w = Wire::new(stdout, stdin);
    person(&mut w);
    let status = p
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running after QUIT"));
    assert!(status.success(), "exit {status}");
    check_person_records(&log, &w, "0.0.0.0:0");
    if root() {
        let chrooted = format!("chrooted to {}", jail.path());
        assert!(
            file_records(&log)
                .iter()
                .any(|r| r.get("msg") == Some(&chrooted)),
            "not chrooted"
        );
    }
}

/// As xinetd starts it: the socket on standard input, output and error, and
/// no log file. Every byte the client gets is SMTP: records go to syslog.
#[test]
fn without_a_log_file_only_smtp_reaches_the_client() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let out = theirs.try_clone().expect("dup");
    let err = theirs.try_clone().expect("dup");
    let mut p = Inetd::spawn(
        &[
            "--inetd",
            "--no-chroot",
            "--hostname",
            HOST,
            "--human-threshold",
            "300ms",
            // Debug output too: more that must not reach the client.
            "-vv",
        ],
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::from(OwnedFd::from(out)),
        Stdio::from(OwnedFd::from(err)),
    );
    let mut w = Wire::socket(ours);
    // The first bytes are the greeting's, nothing before them.
    let deadline = Instant::now() + WAIT;
    while w.buf.len() < 4 {
        assert_ne!(w.fill(deadline), Some(0), "closed before the greeting");
        assert!(Instant::now() < deadline, "no greeting");
    }
    assert_eq!(
        &w.buf[..4],
        b"220 ",
        "{:?}",
        String::from_utf8_lossy(&w.buf)
    );
    assert_eq!(w.line(), format!("220 {HOST} ESMTP"));
    std::thread::sleep(ms(400));
    assert_eq!(w.cmd("HELO p.example", ms(300)), format!("250 {HOST}"));
    assert_eq!(w.cmd("NOOP", ms(300)), "250 2.0.0 Ok");
    w.send(b"QUIT\r\n");
    let rest = w.eof_in(WAIT);
    assert_eq!(rest, b"221 2.0.0 Bye\r\n");
    let status = p.wait_exit(WAIT).expect("exit after QUIT");
    assert!(status.success(), "exit {status}");
}

/// A start-up error under inetd goes to syslog, not to the client.
#[test]
fn a_start_up_error_does_not_reach_the_client() {
    if !root() {
        eprintln!("a_start_up_error_does_not_reach_the_client: skipped, needs root");
        return;
    }
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let out = theirs.try_clone().expect("dup");
    let err = theirs.try_clone().expect("dup");
    let mut p = Inetd::spawn(
        &[
            "--inetd",
            "--no-chroot",
            "--hostname",
            HOST,
            "--user",
            "no-such-user-smtarpit",
        ],
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::from(OwnedFd::from(out)),
        Stdio::from(OwnedFd::from(err)),
    );
    let status = p.wait_exit(ms(1000)).expect("exit within a second");
    assert_eq!(status.code(), Some(1), "exit {status}");
    let mut w = Wire::socket(ours);
    assert_eq!(
        w.eof_in(WAIT),
        b"",
        "the client got bytes from a failed start"
    );
}

/// The reader goes away while the daemon writes to a pipe (EPIPE, the case
/// where SIGPIPE would kill it): a machine mid-trickle, and a person whose
/// reply cannot be written. Each ends with a reset record and exit 0.
#[test]
fn a_vanished_reader_is_a_reset_not_a_sigpipe() {
    for class in ["machine", "human"] {
        let dir = TempDir::new(class, 0o755);
        let log = dir.0.join("smtarpit.log");
        let mut p = Inetd::spawn(
            &args(
                log.to_str().unwrap(),
                &[
                    "--no-chroot",
                    "--trickle",
                    "10ms-20ms",
                    "--reply-time",
                    "10s",
                ],
            ),
            Stdio::piped(),
            Stdio::piped(),
            Stdio::null(),
        );
        let stdin = File::from(OwnedFd::from(p.child.stdin.take().unwrap()));
        let stdout = File::from(OwnedFd::from(p.child.stdout.take().unwrap()));
        let mut w = Wire::new(stdout, stdin);
        assert_eq!(w.line(), format!("220 {HOST} ESMTP"));
        if class == "machine" {
            w.send(b"EHLO bot.example\r\n");
            // The trickle is under way...
            assert!(w.line().starts_with("250-"));
            // ...when the reader goes: the next piece meets EPIPE.
            drop(w.rd);
        } else {
            std::thread::sleep(ms(400));
            let Wire { rd, wr, .. } = w;
            drop(rd);
            w = Wire::new(File::open("/dev/null").unwrap(), wr.unwrap());
            w.send(b"HELO p.example\r\n");
        }
        let status = p
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("{class}: still running with no reader"));
        assert_eq!(
            status.signal(),
            None,
            "{class}: killed by a signal: {status}"
        );
        assert!(status.success(), "{class}: exit {status}");
        let close = wait_file(&log, "close", |r| r.is("close"));
        assert_eq!(close.at("reason"), "reset", "{class}: {}", close.line);
        assert_eq!(close.at("class"), class, "{}", close.line);
        check_log(&file_lines(&log));
    }
}

/// SIGTERM to an inetd session ends it as the daemon's shutdown does: a 421
/// to the client, a close record with reason=shutdown, exit 0.
#[test]
fn sigterm_ends_an_inetd_session_with_a_421() {
    let dir = TempDir::new("term", 0o755);
    let log = dir.0.join("smtarpit.log");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let out = theirs.try_clone().expect("dup");
    let mut p = Inetd::spawn(
        &args(log.to_str().unwrap(), &["--no-chroot"]),
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::from(OwnedFd::from(out)),
        Stdio::null(),
    );
    let mut w = Wire::socket(ours);
    assert_eq!(w.line(), format!("220 {HOST} ESMTP"));
    std::thread::sleep(ms(400));
    assert_eq!(w.cmd("HELO p.example", ms(300)), format!("250 {HOST}"));
    wait_file(&log, "cmd", |r| r.is("cmd"));
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(ms(1000)).expect("exit within a second");
    assert!(status.success(), "exit {status}");
    let close = wait_file(&log, "close", |r| r.is("close"));
    assert_eq!(close.at("reason"), "shutdown", "{}", close.line);
    check_log(&file_lines(&log));
    let rest = w.eof_in(WAIT);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("421 4.3.2 {HOST} Service shutting down\r\n")
    );
}
