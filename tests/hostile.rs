//! Faults and abuse against the real binary: running out of descriptors,
//! and clients that send what no mail client would — a megabyte without a
//! newline, NULs, random binary, ten thousand pipelined commands, one byte a
//! write, CR without LF, bytes that are not UTF-8, a socket never read, a
//! reset mid-trickle, a half-close.
//!
//! After each, the daemon must still serve a person at once, its memory
//! (VmRSS) must not have grown by more than a few hundred KB, and the
//! hostile connection must end with exactly one close record
//! ([`Daemon::stop`] holds the whole log to that).

mod common;

use common::{check_log, ms, socket_to, Client, Daemon, Opts, Record, Rng, ETHERNET, HOST, WAIT};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Every daemon here: a person is one who waits 300 ms.
const HUMAN: &[&str] = &["--human-threshold", "300ms"];
/// How much a hostile client may make the daemon's memory grow. Buffering
/// the client's input or our replies whole would cost far more.
const RSS_SLACK_KB: u64 = 300;

fn args<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v = HUMAN.to_vec();
    v.extend_from_slice(more);
    v
}

// ---- the daemon's process, seen from /proc ----

/// The fields of /proc/PID/stat after the command name: [state, ppid, ...].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// CPU time used so far (user and system).
fn cpu_time(pid: u32) -> Duration {
    let f = stat_fields(pid).expect("the daemon's stat");
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Resident memory in KB.
fn rss_kb(pid: u32) -> u64 {
    try_rss_kb(pid).expect("the daemon's VmRSS")
}

fn try_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---- what every test checks ----

/// The daemon still serves a person at once: the banner within 200 ms, and
/// an answer to HELO (after a person's pause).
fn still_serves(d: &Daemon) {
    let t0 = Instant::now();
    let mut c = d.connect();
    assert_eq!(c.line_in(ms(200)), format!("220 {HOST} ESMTP"));
    assert!(t0.elapsed() < ms(200), "banner after {:?}", t0.elapsed());
    thread::sleep(ms(350));
    assert_eq!(c.cmd("HELO probe.example", ms(200)), format!("250 {HOST}"));
    assert_eq!(c.cmd("QUIT", ms(200)), "221 2.0.0 Bye");
    c.eof_in(WAIT);
}

/// A daemon with its process id and its memory after a first, ordinary
/// client (so that the allocator's first arenas are counted in).
struct Watched {
    d: Daemon,
    pid: u32,
    rss0: u64,
    peak: Cell<u64>,
}

impl Watched {
    fn start(more: &[&str]) -> Watched {
        let d = Daemon::start(&args(more));
        let pid = d.pid();
        still_serves(&d);
        let rss0 = rss_kb(pid);
        Watched {
            d,
            pid,
            rss0,
            peak: Cell::new(rss0),
        }
    }

    /// Looks at the memory now (call it while the hostile client is held).
    fn sample(&self) -> u64 {
        let kb = rss_kb(self.pid);
        self.peak.set(self.peak.get().max(kb));
        kb
    }

    /// Runs `f` while another thread samples the memory every few ms.
    fn sampling<T>(&self, f: impl FnOnce() -> T) -> T {
        let pid = self.pid;
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let sampler = thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                // (None once a failed test has killed the daemon.)
                peak = peak.max(try_rss_kb(pid).unwrap_or(0));
                thread::sleep(ms(5));
            }
            peak
        });
        let out = f();
        stop.store(true, Ordering::Relaxed);
        self.peak.set(self.peak.get().max(sampler.join().unwrap()));
        out
    }

    /// The end of every test: the daemon still serves, its memory did not
    /// grow, each of `ids` has exactly one close record; then the clean
    /// stop and the whole log's soundness. Returns the records.
    fn finish(self, ids: &[String]) -> Vec<Record> {
        still_serves(&self.d);
        self.sample();
        let peak = self.peak.get();
        let grew = peak.saturating_sub(self.rss0);
        assert!(
            grew <= RSS_SLACK_KB,
            "VmRSS grew by {grew} KB (from {} KB to a peak of {peak} KB)",
            self.rss0,
        );
        eprintln!("VmRSS {} KB, peak {peak} KB", self.rss0);
        for id in ids {
            self.d.close_of(id);
        }
        let records = self.d.stop();
        for id in ids {
            let n = records
                .iter()
                .filter(|r| r.is("close") && r.get("id") == Some(id))
                .count();
            assert_eq!(n, 1, "close records for id={id}");
        }
        records
    }
}

/// Waits for the `cmd` record of `verb` from connection `id`: the daemon has
/// read everything sent before it.
fn wait_cmd(d: &Daemon, id: &str, verb: &str) -> Record {
    d.wait_line(WAIT * 2, |r| {
        r.is("cmd") && r.get("id") == Some(id) && r.get("verb") == Some(verb)
    })
}

/// Reads everything a client is sent on another thread, until the end.
fn drain(stream: &TcpStream) -> JoinHandle<Vec<u8>> {
    let mut s = stream.try_clone().expect("clone");
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
}

// ---- clients made by hand ----

/// A client that never reads: the smallest buffers, so the daemon's
/// replies back up at once.
const TINY_BUFFERS: Opts = &[
    (libc::SOL_SOCKET, libc::SO_RCVBUF, 1024),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, 1024),
];

/// A client over an Ethernet-sized MSS, reading lines with a deadline.
struct Wire {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn connect(d: &Daemon) -> Wire {
        Wire {
            s: socket_to(d.addr(), ETHERNET),
            buf: Vec::new(),
        }
    }

    /// Connects and reads the greeting; a person then waits 400 ms.
    fn greeted(d: &Daemon, person: bool) -> Wire {
        let mut w = Wire::connect(d);
        assert_eq!(w.line(), format!("220 {HOST} ESMTP"));
        if person {
            thread::sleep(ms(400));
        }
        w
    }

    /// The daemon's id for this connection.
    fn id(&self, d: &Daemon) -> String {
        let peer = self.s.local_addr().unwrap().to_string();
        d.wait_for("accept", &[("peer", &peer)]).at("id").to_owned()
    }

    fn send(&mut self, bytes: &[u8]) {
        (&self.s).write_all(bytes).expect("send");
    }

    /// The next line without its CRLF; panics on timeout or the end.
    fn line(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line[..i].to_vec()).expect("ASCII");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no line in {WAIT:?}: {:?}", self.buf);
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match (&self.s).read(&mut chunk) {
                Ok(0) => panic!("the end of the stream, not a line: {:?}", self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e} (have {:?})", self.buf),
            }
        }
    }

    /// Nothing arrives for `d`.
    fn quiet_for(&mut self, d: Duration) {
        self.s.set_read_timeout(Some(d)).unwrap();
        let mut chunk = [0u8; 256];
        match (&self.s).read(&mut chunk) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}: {:?}", &chunk[..16]),
        }
    }
}

// ---- descriptors running out ----

/// The daemon started under a shell's `ulimit -n`, which the harness cannot
/// do: its standard error collected line by line as the harness does.
struct Limited {
    child: Child,
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    reader: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Limited {
    fn start(nofile: u32, args: &[&str]) -> Limited {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_smtarpit"))
            .args(["-l", "127.0.0.1:0", "--hostname", HOST, "--no-chroot"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    return;
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut l = Limited {
            child,
            lines,
            reader: Some(reader),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let listening = l.wait(|r| r.get("msg").is_some_and(|m| m.starts_with("listening on ")));
        l.addr = listening.at("msg")["listening on ".len()..]
            .parse()
            .unwrap();
        l.wait(|r| r.get("msg") == Some("serving"));
        l
    }

    fn records(&self) -> Vec<Record> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| Record::parse(std::str::from_utf8(l).ok()?))
            .collect()
    }

    fn dump(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn wait(&self, pred: impl Fn(&Record) -> bool) -> Record {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a record; log:\n{}",
                self.dump()
            );
            thread::sleep(ms(5));
        }
    }

    fn count(&self, event: &str) -> usize {
        self.records().iter().filter(|r| r.is(event)).count()
    }

    fn pid(&self) -> u32 {
        // bash exec'd the daemon: same process.
        self.child.id()
    }

    /// SIGTERM, a clean exit, and the log's invariants.
    fn stop(mut self) -> Vec<Record> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            thread::sleep(ms(5));
        };
        self.reader.take().unwrap().join().unwrap();
        assert!(status.success(), "exit {status}; log:\n{}", self.dump());
        check_log(&self.lines.lock().unwrap())
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn out_of_descriptors_it_refuses_politely_records_once_and_never_spins() {
    // max-clients above what 64 descriptors allow is honoured (with a
    // warning), so accept really fails with EMFILE.
    let d = Limited::start(64, &["--max-clients", "1000", "--max-per-ip", "0"]);
    assert!(
        d.dump().contains("max-clients 1000 is more than"),
        "{}",
        d.dump()
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let mut c = Client::connect(d.addr);
        let first = c.line();
        if first == format!("220 {HOST} ESMTP") {
            held.push(c);
        } else {
            assert!(first.starts_with("421 "), "client {i} got {first:?}");
            assert_eq!(c.eof_in(WAIT), b"", "closed after the 421");
            refused += 1;
        }
    }
    eprintln!("held {}, refused {refused}", held.len());
    assert!(held.len() >= 30 && refused >= 100, "held {}", held.len());

    // Nothing to do now: the daemon sleeps, whatever waits to be accepted.
    let cpu0 = cpu_time(d.pid());
    let extra: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    thread::sleep(ms(5000));
    let used = cpu_time(d.pid()) - cpu0;
    assert!(used < ms(200), "{used:?} of CPU in 5 s while starved");
    drop(extra);
    assert_eq!(d.count("accept_error"), 1, "{}", d.dump());
    let err = d.wait(|r| r.is("accept_error"));
    assert!(err.at("error").contains("open files"), "{}", err.line);

    // The held ones leave; a newcomer is greeted.
    let n = held.len();
    drop(held);
    let deadline = Instant::now() + WAIT;
    while d.count("close") < d.count("accept") {
        assert!(Instant::now() < deadline, "not all closed: {}", d.dump());
        thread::sleep(ms(10));
    }
    let mut c = Client::connect(d.addr);
    assert_eq!(c.line(), format!("220 {HOST} ESMTP"));
    drop(c);
    let records = d.stop();
    let closes = records.iter().filter(|r| r.is("close")).count();
    assert!(closes > n, "{closes} close records");
    assert_eq!(
        records.iter().filter(|r| r.is("accept_error")).count(),
        1,
        "one record per episode"
    );
}

// ---- hostile input ----

#[test]
fn a_megabyte_without_a_newline() {
    let w = Watched::start(&[]);
    let mut c = Wire::greeted(&w.d, true);
    let id = c.id(&w.d);
    let chunk = vec![b'A'; 64 * 1024];
    w.sampling(|| {
        for _ in 0..16 {
            c.send(&chunk);
        }
        // Answered once, at once, and never buffered.
        assert_eq!(c.line(), "500 5.5.0 Error: line too long");
        c.send(b"\r\nNOOP\r\n");
        assert_eq!(c.line(), "250 2.0.0 Ok");
    });
    drop(c);
    let close = w.d.close_of(&id);
    assert_eq!(
        close.num("bytes_recv"),
        16 * 64 * 1024 + 8,
        "{}",
        close.line
    );
    // The overlong line is answered but is no command.
    assert_eq!(close.num("cmds"), 1, "{}", close.line);
    w.finish(&[id]);
}

#[test]
fn a_stream_of_nuls() {
    let w = Watched::start(&[]);
    let mut c = Wire::greeted(&w.d, false);
    let id = c.id(&w.d);
    let nuls = vec![0u8; 64 * 1024];
    w.sampling(|| {
        for _ in 0..16 {
            c.send(&nuls);
        }
        c.send(b"\nNOOP\r\n");
        let noop = wait_cmd(&w.d, &id, "NOOP");
        assert_eq!(noop.at("arg"), "");
    });
    drop(c);
    let close = w.d.close_of(&id);
    assert_eq!(close.at("class"), "machine");
    assert_eq!(close.num("cmds"), 1, "NOOP: {}", close.line);
    assert_eq!(
        close.num("bytes_recv"),
        16 * 64 * 1024 + 7,
        "{}",
        close.line
    );
    // NULs inside a shorter line reach the record escaped.
    let mut p = w.d.human(ms(400));
    let pid = w.d.id_of(&p);
    p.send(b"\0\0HELO\0\r\n");
    assert_eq!(p.line(), "500 5.5.2 Error: command not recognized");
    let rec = w.d.wait_for("cmd", &[("id", &pid)]);
    assert!(
        rec.line.contains(r#"verb="\x00\x00HELO\x00""#),
        "{}",
        rec.line
    );
    drop(p);
    w.finish(&[id, pid]);
}

#[test]
fn random_binary() {
    let w = Watched::start(&[]);
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let data: Vec<u8> = (0..256 * 1024).map(|_| (rng.next() >> 56) as u8).collect();
    let mut ids = Vec::new();
    // As a person (answered at once) and as a machine (tarpitted).
    for person in [true, false] {
        let c = Wire::greeted(&w.d, person);
        let id = c.id(&w.d);
        let reader = drain(&c.s);
        let mut s = &c.s;
        for piece in data.chunks(1000 + (rng.next() % 3000) as usize) {
            s.write_all(piece).expect("send");
        }
        s.write_all(b"\r\nNOOP\r\n").unwrap();
        // (The cmd records stop at 100: the close record, written once all
        // was read, is the sign that it was.)
        let close = w.sampling(|| {
            c.s.shutdown(Shutdown::Write).unwrap();
            w.d.close_of(&id)
        });
        let got = reader.join().unwrap();
        assert_eq!(close.num("bytes_recv"), data.len() as u64 + 8);
        assert_eq!(close.num("bytes_sent"), got.len() as u64 + 19);
        if person {
            // Every line came back as a reply line.
            let text = String::from_utf8(got).expect("replies are ASCII");
            assert!(text.lines().count() > 100);
            assert!(text.ends_with("250 2.0.0 Ok\r\n"), "{text}");
            for l in text.lines() {
                assert!(
                    l.len() >= 4 && l.as_bytes()[..3].iter().all(u8::is_ascii_digit),
                    "{l:?}"
                );
            }
        }
        ids.push(id);
    }
    w.finish(&ids);
}

#[test]
fn ten_thousand_pipelined_commands_to_a_person() {
    let w = Watched::start(&[]);
    let c = Wire::greeted(&w.d, true);
    let id = c.id(&w.d);
    let cmds = ["NOOP", "HELP", "VRFY someone", "XYZZY"];
    let replies = [
        "250 2.0.0 Ok",
        "214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321",
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
        "500 5.5.2 Error: command not recognized",
    ];
    let mut all = Vec::new();
    for i in 0..10_000 {
        all.extend_from_slice(cmds[i % 4].as_bytes());
        all.extend_from_slice(b"\r\n");
    }
    all.extend_from_slice(b"QUIT\r\n");
    let reader = drain(&c.s);
    // One write: the kernel takes what it can, the rest as the daemon reads,
    // which it does only as fast as its replies drain.
    let got = w.sampling(|| {
        (&c.s).write_all(&all).unwrap();
        reader.join().unwrap()
    });
    let text = String::from_utf8(got).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10_001, "every command answered, and QUIT");
    for (i, l) in lines[..10_000].iter().enumerate() {
        assert_eq!(*l, replies[i % 4], "reply {i} out of order");
    }
    assert_eq!(lines[10_000], "221 2.0.0 Bye");
    let close = w.d.close_of(&id);
    assert_eq!(close.num("cmds"), 10_001, "{}", close.line);
    assert_eq!(close.at("reason"), "quit");
    let records = w.finish(std::slice::from_ref(&id));
    let cmd_records = records
        .iter()
        .filter(|r| r.is("cmd") && r.get("id") == Some(&id))
        .count();
    assert_eq!(cmd_records, 100, "cmd records are capped");
}

#[test]
fn ten_thousand_pipelined_commands_to_a_machine() {
    let w = Watched::start(&["--trickle", "20ms-40ms", "--reply-time", "1s"]);
    let c = Wire::greeted(&w.d, false);
    let id = c.id(&w.d);
    let mut all = b"EHLO pipeliner.example\r\nMAIL FROM:<bulk@example.org>\r\n".to_vec();
    for i in 2..10_000 {
        all.extend_from_slice(format!("RCPT TO:<r{i}@example.org>\r\n").as_bytes());
    }
    let reader = drain(&c.s);
    let close = w.sampling(|| {
        (&c.s).write_all(&all).unwrap();
        // Everything sent is read before the end of the stream is seen.
        c.s.shutdown(Shutdown::Write).unwrap();
        w.d.close_of(&id)
    });
    let got = reader.join().unwrap();
    assert_eq!(close.num("cmds"), 10_000, "{}", close.line);
    assert_eq!(close.at("reason"), "client_closed");
    assert_eq!(close.num("bytes_recv"), all.len() as u64);
    assert_eq!(close.num("bytes_sent"), got.len() as u64 + 19);
    assert_eq!(close.at("helo"), "pipeliner.example");
    assert_eq!(close.at("mail_from"), "bulk@example.org");
    // The RCPT count the record keeps is capped by the dialogue (100).
    assert!(close.num("rcpt") <= 100, "{}", close.line);
    let records = w.finish(std::slice::from_ref(&id));
    let cmd_records: Vec<_> = records
        .iter()
        .filter(|r| r.is("cmd") && r.get("id") == Some(&id))
        .collect();
    assert_eq!(cmd_records.len(), 100, "cmd records are capped");
    assert_eq!(cmd_records[99].at("arg"), "TO:<r99@example.org>");
}

#[test]
fn a_command_in_one_byte_writes() {
    let w = Watched::start(&[]);
    let mut c = w.d.human(ms(400));
    let id = w.d.id_of(&c);
    for line in [
        "HELO one.byte.example\r\n",
        "MAIL FROM:<slow@example.org>\r\n",
    ] {
        for b in line.bytes() {
            c.send(&[b]);
            thread::sleep(ms(2));
        }
    }
    assert_eq!(c.line(), format!("250 {HOST}"));
    assert_eq!(c.line(), "250 2.1.0 Ok");
    // A machine, too: its command is whole however it came.
    let mut m = w.d.machine();
    let mid = w.d.id_of(&m);
    for b in b"EHLO drip.example\r\n" {
        m.send(&[*b]);
    }
    let ehlo = wait_cmd(&w.d, &mid, "EHLO");
    assert_eq!(ehlo.at("arg"), "drip.example");
    let helo = wait_cmd(&w.d, &id, "HELO");
    assert_eq!(helo.at("arg"), "one.byte.example");
    w.sample();
    drop(c);
    drop(m);
    w.finish(&[id, mid]);
}

#[test]
fn cr_without_lf() {
    let w = Watched::start(&[]);
    let mut c = Wire::greeted(&w.d, true);
    let id = c.id(&w.d);
    // A lone CR ends nothing: no reply until the LF.
    c.send(b"NOOP\rNOOP\r");
    c.quiet_for(ms(300));
    c.send(b"\n");
    assert_eq!(c.line(), "500 5.5.2 Error: command not recognized");
    let rec = wait_cmd(&w.d, &id, "NOOP\rNOOP");
    assert!(rec.line.contains(r#"verb="NOOP\rNOOP""#), "{}", rec.line);
    // A flood of CRs is just a long line.
    w.sampling(|| {
        c.send(&[b'\r'; 100_000]);
        assert_eq!(c.line(), "500 5.5.0 Error: line too long");
        c.send(b"\nNOOP\r\n");
        assert_eq!(c.line(), "250 2.0.0 Ok");
    });
    drop(c);
    w.finish(&[id]);
}

#[test]
fn utf8_valid_and_invalid_in_arguments() {
    let w = Watched::start(&[]);
    let mut c = w.d.human(ms(400));
    let id = w.d.id_of(&c);
    let helo: &[u8] = "h\u{e9}llo.\u{4f8b}\u{3048}.jp".as_bytes();
    let from: &[u8] = b"\xff\xfe\xc3(@bad.example";
    let rcpt: &[u8] = "\u{65e5}\u{672c}@\u{4f8b}\u{3048}.jp".as_bytes();
    let rcpt2: &[u8] = b"x\xed\xa0\x80y@surrogate.example";
    c.send(&[b"HELO ", helo, b"\r\n"].concat());
    assert_eq!(c.line(), format!("250 {HOST}"));
    c.send(&[b"MAIL FROM:<", from, b">\r\n"].concat());
    assert_eq!(c.line(), "250 2.1.0 Ok");
    c.send(&[b"RCPT TO:<", rcpt, b">\r\n"].concat());
    assert_eq!(c.line(), "250 2.1.5 Ok");
    c.send(&[b"RCPT TO:<", rcpt2, b">\r\n"].concat());
    assert_eq!(c.line(), "250 2.1.5 Ok");
    c.send(b"QUIT\r\n");
    assert_eq!(c.line(), "221 2.0.0 Bye");
    c.eof_in(WAIT);
    w.sample();
    let records = w.finish(std::slice::from_ref(&id));
    let close = records
        .iter()
        .find(|r| r.is("close") && r.get("id") == Some(&id))
        .unwrap();
    assert_eq!(close.bytes("helo"), helo);
    assert_eq!(close.bytes("mail_from"), from);
    assert_eq!(close.num("rcpt"), 2);
    assert!(close
        .line
        .contains(r#"mail_from="\xff\xfe\xc3(@bad.example""#));
    let args: Vec<Vec<u8>> = records
        .iter()
        .filter(|r| r.is("cmd") && r.get("id") == Some(&id))
        .map(|r| r.bytes("arg"))
        .collect();
    assert_eq!(args[0], helo);
    assert_eq!(args[1], [b"FROM:<", from, b">"].concat());
    assert_eq!(args[2], [b"TO:<", rcpt, b">"].concat());
    assert_eq!(args[3], [b"TO:<", rcpt2, b">"].concat());
}

#[test]
fn a_client_that_never_reads() {
    let w = Watched::start(&[
        "--max-session",
        "4s",
        "--trickle",
        "10ms-20ms",
        "--trickle-bytes",
        "64",
        "--reply-time",
        "100ms-200ms",
    ]);
    // A person who floods commands and reads no reply: the daemon stops
    // reading it once its replies back up.
    let person = socket_to(w.d.addr(), TINY_BUFFERS);
    let t0 = Instant::now();
    let pid_rec = w.d.wait_for(
        "accept",
        &[("peer", &person.local_addr().unwrap().to_string())],
    );
    let person_id = pid_rec.at("id").to_owned();
    thread::sleep(ms(400));
    person.set_write_timeout(Some(ms(1000))).unwrap();
    let help = b"HELP\r\n".repeat(1000);
    let mut pushed = 0;
    while (&person).write(&help).is_ok_and(|n| n > 0) {
        pushed += 1;
        assert!(
            pushed < 10_000,
            "the daemon reads a client that never reads"
        );
    }
    // A machine that never reads its trickle.
    let machine = socket_to(w.d.addr(), TINY_BUFFERS);
    (&machine).write_all(b"EHLO deaf.example\r\n").unwrap();
    let mid =
        w.d.wait_for(
            "accept",
            &[("peer", &machine.local_addr().unwrap().to_string())],
        )
        .at("id")
        .to_owned();
    for _ in 0..20 {
        w.sample();
        thread::sleep(ms(100));
    }
    // Both are closed at max-session, whatever they did not read.
    let a = w.d.close_of(&person_id);
    let b = w.d.close_of(&mid);
    assert_eq!(a.at("reason"), "max_session", "{}", a.line);
    assert_eq!(b.at("reason"), "max_session", "{}", b.line);
    assert!(
        t0.elapsed() < ms(4000 + 3000),
        "closed after {:?}",
        t0.elapsed()
    );
    assert!(a.num("bytes_recv") > 1000, "{}", a.line);
    drop(person);
    drop(machine);
    w.finish(&[person_id, mid]);
}

#[test]
fn a_reset_in_the_middle_of_a_trickle() {
    let w = Watched::start(&["--trickle", "20ms-30ms", "--reply-time", "5s"]);
    let mut c = w.d.machine();
    let id = w.d.id_of(&c);
    c.send(b"EHLO bot.example\r\n");
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(c.chunk(WAIT));
    }
    assert!(got.starts_with(b"250"), "{got:?}");
    c.reset();
    let close = w.d.close_of(&id);
    let reason = close.at("reason");
    assert!(
        reason == "reset" || reason == "client_closed",
        "{}",
        close.line
    );
    w.sample();
    // Trickle gaps later, the daemon has not written to it again.
    thread::sleep(ms(200));
    w.finish(&[id]);
}

#[test]
fn a_half_close() {
    let w = Watched::start(&["--trickle", "20ms-30ms", "--reply-time", "5s"]);
    // A person says HELO, then shuts its side: the daemon closes too.
    let mut p = w.d.human(ms(400));
    let pid = w.d.id_of(&p);
    assert_eq!(p.cmd("HELO half.example", ms(200)), format!("250 {HOST}"));
    p.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(p.eof_in(WAIT), b"");
    // A machine shuts its side in the middle of a trickle.
    let mut m = w.d.machine();
    let mid = w.d.id_of(&m);
    m.send(b"EHLO bot.example\r\nMAIL FROM:<a@b.example>\r\n");
    m.chunk(WAIT);
    m.stream.shutdown(Shutdown::Write).unwrap();
    m.eof_in(WAIT);
    for id in [&pid, &mid] {
        let close = w.d.close_of(id);
        assert_eq!(close.at("reason"), "client_closed", "{}", close.line);
    }
    w.sample();
    thread::sleep(ms(200));
    w.finish(&[pid, mid]);
}

/// A host name may be up to 255 bytes (RFC 1035 allows 253 for a name), and
/// `--hostname` takes 255. The final part of the EHLO reply then passes 255
/// bytes. When `Session::col`, the offset into it, was a `u8`, it wrapped,
/// the part never counted as sent, and its last 256 bytes went out again at
/// every fire until max-session.
#[test]
fn a_long_host_name_is_sent_once_per_reply() {
    let host = format!("{}.example", "a".repeat(200));
    let mut d = Daemon::spawn(&[
        "-l",
        "127.0.0.1:0",
        "--hostname",
        &host,
        "--no-chroot",
        "--trickle",
        "10ms-20ms",
        "--trickle-bytes",
        "64",
        "--reply-time",
        "100ms",
    ]);
    let listening = d.wait_line(WAIT, |r| {
        r.get("msg").is_some_and(|m| m.starts_with("listening on "))
    });
    let addr: SocketAddr = listening.at("msg")["listening on ".len()..]
        .parse()
        .unwrap();
    d.port = addr.port();
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {host} ESMTP"));
    c.send(b"EHLO bot.example\r\n");
    let reply = c.reply_in(WAIT);
    assert_eq!(reply.last().unwrap(), "250 SMTPUTF8");
    // Nothing more: the reply is over, and no command is waiting.
    c.quiet_for(ms(500));
    d.stop();
}
