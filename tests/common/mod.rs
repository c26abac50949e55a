//! The integration tests' harness: starts the real daemon on 127.0.0.1:0,
//! collects its standard error (one logfmt record a line), and speaks SMTP to
//! it over loopback.
//!
//! Nothing here sleeps to wait for the daemon: the port comes from its
//! `listening on` line, and every wait is for a record or for bytes, with a
//! deadline. Tests only sleep to play a slow person.
//!
//! [`Daemon::stop`] ends every test the same way: SIGTERM, a clean exit, and
//! the log's invariants (every line parses, one close record per accept).

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

use smtarpit::record;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The host name every test daemon announces.
pub const HOST: &str = "mx.test";
/// How long to wait for what should come soon: generous, since the machine
/// is shared, yet short enough that a hang fails the test quickly.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One parsed record: its line and its pairs, values unescaped.
#[derive(Clone, Debug)]
pub struct Record {
    pub line: String,
    pub pairs: Vec<(String, String)>,
}

impl Record {
    pub fn parse(line: &str) -> Option<Record> {
        record::parse(line).map(|pairs| Record {
            line: line.to_owned(),
            pairs,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, which must be there.
    pub fn at(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no '{key}' in record: {}", self.line))
    }

    pub fn num(&self, key: &str) -> u64 {
        self.at(key)
            .parse()
            .unwrap_or_else(|e| panic!("'{key}' not a number ({e}) in record: {}", self.line))
    }

    pub fn event(&self) -> &str {
        self.get("event").unwrap_or("")
    }

    pub fn is(&self, event: &str) -> bool {
        self.event() == event
    }

    /// A quoted value as the bytes the client sent: the parser turns `\xNN`
    /// into the char U+00NN, so each char is one byte.
    pub fn bytes(&self, key: &str) -> Vec<u8> {
        self.at(key)
            .chars()
            .map(|c| u8::try_from(u32::from(c)).expect("a byte per char"))
            .collect()
    }

    pub fn count(&self, key: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| k == key).count()
    }
}

/// The daemon's standard error, line by line, as the reader thread sees it.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<Vec<u8>>,
    eof: bool,
}

/// A running daemon. Dropping it kills it (a failed test leaks nothing).
pub struct Daemon {
    child: Child,
    pub port: u16,
    log: Arc<Log>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon on 127.0.0.1:0 with host name [`HOST`] and `args`,
    /// and waits for it to listen.
    pub fn start(args: &[&str]) -> Daemon {
        let mut all = vec!["-l", "127.0.0.1:0", "--hostname", HOST, "--no-chroot"];
        all.extend_from_slice(args);
        let mut d = Daemon::spawn(&all);
        let listening = d.wait_line(WAIT, |r| {
            r.get("msg").is_some_and(|m| m.starts_with("listening on "))
        });
        let addr: SocketAddr = listening.at("msg")["listening on ".len()..]
            .parse()
            .expect("listening on ADDR:PORT");
        d.port = addr.port();
        d
    }

    /// Starts the binary with exactly `args`, not waiting for anything.
    pub fn spawn(args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smtarpit"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smtarpit");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            loop {
                let mut line = Vec::new();
                let n = r.read_until(b'\n', &mut line).unwrap_or(0);
                let mut st = sink.state.lock().unwrap();
                if n == 0 {
                    st.eof = true;
                } else {
                    st.lines.push(line);
                }
                sink.grew.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Daemon {
            child,
            port: 0,
            log,
            reader: Some(reader),
        }
    }

    /// The daemon's process id, for what only /proc shows.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Every line so far, raw.
    pub fn raw_lines(&self) -> Vec<Vec<u8>> {
        self.log.state.lock().unwrap().lines.clone()
    }

    /// Every line so far that parses (the others are caught by [`stop`]).
    ///
    /// [`stop`]: Daemon::stop
    pub fn records(&self) -> Vec<Record> {
        self.raw_lines()
            .iter()
            .filter_map(|l| Record::parse(std::str::from_utf8(l).ok()?))
            .collect()
    }

    pub fn records_of(&self, event: &str) -> Vec<Record> {
        self.records().into_iter().filter(|r| r.is(event)).collect()
    }

    /// Everything logged so far, for failure messages.
    pub fn dump(&self) -> String {
        self.raw_lines()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// Waits for a line whose record satisfies `pred`; panics with the log
    /// on timeout or if the daemon's stderr closes first.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&Record) -> bool) -> Record {
        let deadline = Instant::now() + timeout;
        let mut st = self.log.state.lock().unwrap();
        let mut seen = 0;
        loop {
            for l in &st.lines[seen..] {
                if let Some(r) = std::str::from_utf8(l).ok().and_then(Record::parse) {
                    if pred(&r) {
                        return r;
                    }
                }
            }
            seen = st.lines.len();
            let now = Instant::now();
            if st.eof || now >= deadline {
                let why = if st.eof {
                    "daemon's stderr closed"
                } else {
                    "timed out"
                };
                drop(st);
                panic!("{why} waiting for a record; log:\n{}", self.dump());
            }
            st = self.log.grew.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits for a record of `event` with `key=value` for every pair given.
    pub fn wait_for(&self, event: &str, keys: &[(&str, &str)]) -> Record {
        self.wait_line(WAIT, |r| {
            r.is(event) && keys.iter().all(|(k, v)| r.get(k) == Some(v))
        })
    }

    /// The id the daemon gave to this client's connection (from its accept
    /// record, matched on the client's address).
    pub fn id_of(&self, c: &Client) -> String {
        let peer = c.local.to_string();
        self.wait_for("accept", &[("peer", &peer)])
            .at("id")
            .to_owned()
    }

    /// Waits for the close record of a connection id.
    pub fn close_of(&self, id: &str) -> Record {
        self.wait_for("close", &[("id", id)])
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// A client that reads the greeting and then takes its time, like a
    /// person at a terminal.
    pub fn human(&self, pause: Duration) -> Client {
        let mut c = self.connect();
        c.expect_line(&format!("220 {HOST} ESMTP"));
        std::thread::sleep(pause);
        c
    }

    /// A client that answers the greeting at once, like a spam engine.
    pub fn machine(&self) -> Client {
        let mut c = self.connect();
        c.expect_line(&format!("220 {HOST} ESMTP"));
        c
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(h) = self.reader.take() {
                    h.join().expect("stderr reader");
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(ms(5));
        }
    }

    /// SIGTERM; returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", self.dump()));
        (status, t0.elapsed())
    }

    /// Ends a test: SIGTERM, exit status 0, and the log's invariants hold.
    /// Returns every record.
    pub fn stop(mut self) -> Vec<Record> {
        let (status, _) = self.terminate();
        assert!(status.success(), "exit {status}; log:\n{}", self.dump());
        check_log(&self.raw_lines())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What every daemon's log must satisfy, whatever the test did: every line is
/// printable ASCII and parses, starting with `ts=`; accept ids are unique; each
/// accepted connection has exactly one close record, with every field, from
/// the same peer. Returns the records.
pub fn check_log(lines: &[Vec<u8>]) -> Vec<Record> {
    let mut records = Vec::new();
    for l in lines {
        let text = String::from_utf8_lossy(l);
        let body = l.strip_suffix(b"\n").expect("lines end with LF");
        assert!(
            body.iter().all(|b| (0x20..0x7f).contains(b)),
            "a byte that is not printable ASCII in: {text:?}"
        );
        let r = Record::parse(&text).unwrap_or_else(|| panic!("does not parse: {text:?}"));
        assert_eq!(r.pairs[0].0, "ts", "{text}");
        records.push(r);
    }
    let mut accepts: HashMap<String, String> = HashMap::new();
    for r in records.iter().filter(|r| r.is("accept")) {
        let old = accepts.insert(r.at("id").to_owned(), r.at("peer").to_owned());
        assert!(old.is_none(), "accept id used twice: {}", r.line);
    }
    let mut closes: HashMap<String, usize> = HashMap::new();
    for r in records.iter().filter(|r| r.is("close")) {
        for key in CLOSE_KEYS {
            assert_eq!(r.count(key), 1, "want one '{key}' in {}", r.line);
        }
        let id = r.at("id");
        let peer = accepts
            .get(id)
            .unwrap_or_else(|| panic!("close without accept: {}", r.line));
        assert_eq!(peer, r.at("peer"), "{}", r.line);
        *closes.entry(id.to_owned()).or_default() += 1;
    }
    for id in accepts.keys() {
        assert_eq!(
            closes.get(id).copied().unwrap_or(0),
            1,
            "want exactly one close record for id={id}; log:\n{}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<String>()
        );
    }
    records
}

/// The fields of every close record.
pub const CLOSE_KEYS: &[&str] = &[
    "ts",
    "event",
    "id",
    "peer",
    "class",
    "duration_ms",
    "bytes_sent",
    "bytes_recv",
    "reason",
    "cmds",
    "helo",
    "mail_from",
    "rcpt",
];

/// The part of a log line outside its quoted values (which are replaced by
/// `""`): where a forged key would be a real one.
pub fn outside_quotes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            loop {
                match chars.next() {
                    Some('\\') => {
                        chars.next();
                    }
                    Some('"') | None => break,
                    Some(_) => {}
                }
            }
            out.push('"');
        }
    }
    out
}

/// One SMTP client connection with a read buffer and byte counts.
pub struct Client {
    pub stream: TcpStream,
    /// The client's own address, as the daemon's records show its peer.
    pub local: SocketAddr,
    buf: Vec<u8>,
    /// Bytes received and sent so far, to hold the close record's counts.
    pub got: usize,
    pub sent: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::wrap(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from a chosen loopback address (127.0.0.2, ...), which std
    /// cannot bind before connecting.
    pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Client {
        let SocketAddr::V4(to) = to else {
            panic!("IPv4 only")
        };
        let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a fresh socket, owned by the TcpStream at once; the
        // addresses are valid sockaddr_in values of the length given.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let stream = TcpStream::from_raw_fd(fd);
            let a = sockaddr(from, 0);
            let rc = libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len);
            assert_eq!(rc, 0, "bind {from}: {}", io::Error::last_os_error());
            let a = sockaddr(*to.ip(), to.port());
            let rc = libc::connect(fd, (&a as *const libc::sockaddr_in).cast(), len);
            assert_eq!(rc, 0, "connect {to}: {}", io::Error::last_os_error());
            Client::wrap(stream)
        }
    }

    fn wrap(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        Client {
            local: stream.local_addr().expect("local_addr"),
            stream,
            buf: Vec::new(),
            got: 0,
            sent: 0,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.sent += bytes.len();
    }

    /// One read into the buffer before `deadline`: `Some(n)` bytes (0 at end
    /// of stream), `None` on timeout. A reset counts as the end.
    fn fill(&mut self, deadline: Instant) -> Option<usize> {
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(ms(1))))
                .expect("set_read_timeout");
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.got += n;
                    return Some(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(0),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Whatever arrives next (at least a byte), as it arrives; empty at the
    /// end of the stream. Panics on timeout.
    pub fn chunk(&mut self, timeout: Duration) -> Vec<u8> {
        if self.buf.is_empty() {
            let deadline = Instant::now() + timeout;
            self.fill(deadline)
                .unwrap_or_else(|| panic!("nothing came in {timeout:?}"));
        }
        std::mem::take(&mut self.buf)
    }

    /// The next line, CRLF included; `None` at the end of the stream (a
    /// partial line then is an error). Panics on timeout.
    pub fn try_line(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            match self.fill(deadline) {
                Some(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended inside a line: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                Some(_) => {}
                None => panic!(
                    "no line in {timeout:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// The next line, which must end with CRLF, without it.
    pub fn line_in(&mut self, timeout: Duration) -> String {
        let l = self.try_line(timeout).expect("a line, not the end");
        let text = String::from_utf8(l).expect("replies are ASCII");
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("not CRLF-terminated: {text:?}"))
            .to_owned()
    }

    pub fn line(&mut self) -> String {
        self.line_in(WAIT)
    }

    pub fn expect_line(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// A whole reply: its lines up to the one with a space after the code.
    pub fn reply_in(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let l = self.line_in(deadline.saturating_duration_since(Instant::now()));
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return lines;
            }
        }
    }

    /// Sends a command line (CRLF added) and returns the reply's last line,
    /// which must come within `within` (a person's reply is immediate).
    pub fn cmd(&mut self, line: &str, within: Duration) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let t0 = Instant::now();
        let reply = self.reply_in(WAIT);
        let took = t0.elapsed();
        assert!(took < within, "'{line}': reply took {took:?}: {reply:?}");
        assert_eq!(reply.len(), 1, "'{line}': a one-line reply: {reply:?}");
        reply.into_iter().next().unwrap()
    }

    /// Nothing arrives for `d` (and the stream does not end).
    pub fn quiet_for(&mut self, d: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        if let Some(n) = self.fill(Instant::now() + d) {
            panic!(
                "expected silence, got {n} bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads to the end of the stream; returns what came.
    pub fn eof_in(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Some(0) => return std::mem::take(&mut self.buf),
                Some(_) => {}
                None => panic!(
                    "no end of stream in {timeout:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Closes with a TCP reset instead of a FIN (SO_LINGER 0, then close).
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a linger struct of the length given.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(self);
    }
}

/// A unique temporary file with `text`, removed when dropped.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("smtarpit-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether the tests run as root (CI does): chroot and privilege tests need it.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory under the system temp dir, with an exact mode (not the
/// umask's), owned by whoever runs the tests; removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str, mode: u32) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("smtarpit-dir-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir(&path).expect("create temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether an outside program the test needs (strace, swaks, python3) is
/// installed. Missing, the test is skipped with a note on a developer's
/// machine; CI sets `SMTARPIT_REQUIRE_TOOLS=1` (its script installs them),
/// and there a missing tool fails the test instead of skipping it.
pub fn have_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("SMTARPIT_REQUIRE_TOOLS").is_none(),
            "{tool} is required here (SMTARPIT_REQUIRE_TOOLS is set) but not installed"
        );
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {tool})");
    }
    found
}

/// A seeded xorshift64*: reproducible garbage for the hostile-input tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Socket options: (level, name, value), set before connecting.
pub type Opts = &'static [(libc::c_int, libc::c_int, libc::c_int)];

/// An Ethernet-sized MSS. Over loopback the MSS is about 64 KB, far above
/// the 4 KB receive window the daemon gives its sockets, and a sender then
/// crawls on window probes (about 20 KB/s): true on loopback only, so the
/// clients that send in bulk clamp their MSS as a real network would.
pub const ETHERNET: Opts = &[(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 1460)];

/// Connects to `to` with `opts` set first.
pub fn socket_to(to: std::net::SocketAddr, opts: Opts) -> std::net::TcpStream {
    let std::net::SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    // SAFETY: a fresh socket owned by the TcpStream at once; option values
    // and the address are valid for the lengths given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream: std::net::TcpStream = std::os::fd::FromRawFd::from_raw_fd(fd);
        for &(level, name, value) in opts {
            let rc = libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
        }
        let a = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream.set_nodelay(true).unwrap();
        stream
    }
}

/// Every complete line of a log file (the daemon's `--log-file`) so far.
pub fn file_lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap_or_default();
    text.split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The records of a log file as it is now (complete lines only).
pub fn file_records(path: &std::path::Path) -> Vec<Record> {
    file_lines(path)
        .iter()
        .filter_map(|l| Record::parse(std::str::from_utf8(l).ok()?))
        .collect()
}

/// Waits for a record in a log file that satisfies `pred`; panics with the
/// file's text on timeout.
pub fn wait_file(path: &std::path::Path, what: &str, pred: impl Fn(&Record) -> bool) -> Record {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = file_records(path).into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for '{what}' in {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default())
        );
        std::thread::sleep(ms(10));
    }
}

/// The 421 every client gets when the daemon is stopped.
pub const SHUTTING_DOWN: &str = "421 4.3.2 mx.test Service shutting down";

/// After a stop signal: the daemon exited 0 within a second, each client's
/// stream ends with the 421, and each has its close record with
/// reason=shutdown. Returns the log's records.
pub fn assert_shut_down(
    d: &Daemon,
    status: ExitStatus,
    took: Duration,
    clients: &mut [Client],
) -> Vec<Record> {
    assert!(status.success(), "exit {status}");
    assert!(took < ms(1000), "exit after {took:?}");
    let records = check_log(&d.raw_lines());
    let closes: Vec<&Record> = records.iter().filter(|r| r.is("close")).collect();
    assert_eq!(closes.len(), clients.len(), "one close record each");
    for c in clients {
        let rest = c.eof_in(WAIT);
        let text = String::from_utf8_lossy(&rest);
        assert!(text.ends_with(&format!("{SHUTTING_DOWN}\r\n")), "{text:?}");
        let close = closes
            .iter()
            .find(|r| r.at("peer") == c.local.to_string())
            .expect("a close record for each client");
        assert_eq!(close.at("reason"), "shutdown", "{}", close.line);
    }
    records
}
