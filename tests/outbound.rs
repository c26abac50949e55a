//! Nothing gets out: once serving, the daemon opens no socket, resolves no
//! name and connects nowhere, whatever a client names (host names, address
//! literals, source routes, VRFY, EXPN, headers); no client can put a line
//! into its log that the daemon did not write; and a machine gets no more
//! bytes than the trickle allows however much it sends.
//!
//! The first test needs `strace` (Debian's package `strace`).

mod common;

use common::{check_log, have_tool, ms, socket_to, Daemon, Record, Rng, ETHERNET, HOST, WAIT};
use smtarpit::smtp::{self, Ident};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Reads everything a client is sent on another thread, until the end.
fn drain(stream: &TcpStream) -> JoinHandle<Vec<u8>> {
    let mut s = stream.try_clone().expect("clone");
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// Closes with a reset (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the length given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A dialogue full of names and addresses a careless server would look up
/// or connect to.
const CRAFTED: &[&str] = &[
    "EHLO mail.example.com",
    "HELO [192.0.2.1]",
    "EHLO [IPv6:2001:db8::1]",
    "HELO localhost",
    "MAIL FROM:<@relay1.example.net,@relay2.example.org:spammer@evil.example>",
    "RCPT TO:<postmaster@[198.51.100.7]>",
    "RCPT TO:<\"user%other.example\"@relay.example>",
    "RCPT TO:<user@127.0.0.1>",
    "RCPT TO:<root@localhost>",
    "VRFY root@localhost",
    "EXPN staff@example.com",
    "DATA",
];

const BODY: &str = "Received: from mx.example.net (mx.example.net [203.0.113.5])\r\n\
    \tby relay.example.org with ESMTP id abc; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
    From: \"Sender\" <sender@example.net>\r\n\
    To: victim@example.com\r\n\
    Return-Path: <bounce@bounce.example>\r\n\
    Reply-To: reply@203.0.113.9\r\n\
    List-Unsubscribe: <http://unsubscribe.example.com/x>, <mailto:u@example.com>\r\n\
    Subject: hello\r\n\
    \r\n\
    Visit http://198.51.100.23:8080/ or https://www.example.com/\r\n\
    .\r\n";

#[test]
fn once_serving_it_opens_no_socket_and_connects_nowhere() {
    if !have_tool("strace") {
        return;
    }
    let d = Daemon::start(&[
        "--human-threshold",
        "300ms",
        "--trickle",
        "10ms-20ms",
        "--trickle-bytes",
        "16",
        "--reply-time",
        "200ms",
    ]);
    let pid = d.pid();
    let trace =
        std::env::temp_dir().join(format!("smtarpit-outbound-{}.strace", std::process::id()));
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=%network,open,openat", "-o"])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    // strace says when it has attached (with -qq it says nothing: wait for
    // the trace file to see the daemon's first traced call instead).
    let t0 = Instant::now();
    let mut probe = d.machine();
    loop {
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        if text.contains("accept4(") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "strace did not attach: {text:?}");
        thread::sleep(ms(20));
        // Each new connection is an accept for strace to see.
        probe = d.machine();
    }
    drop(probe);

    // A person says it all and gets answers at once.
    let mut p = d.human(ms(400));
    for line in CRAFTED {
        p.send(format!("{line}\r\n").as_bytes());
        let reply = p.reply_in(WAIT).pop().unwrap();
        assert!(reply.starts_with(['2', '3', '5']), "{line}: {reply}");
    }
    p.send(BODY.as_bytes());
    assert!(p.line().starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(p.cmd("QUIT", ms(500)), "221 2.0.0 Bye");
    p.eof_in(WAIT);
    // A machine says it all at once and is tarpitted.
    let mut m = d.machine();
    let all: String = CRAFTED.iter().map(|l| format!("{l}\r\n")).collect();
    m.send(all.as_bytes());
    m.send(BODY.as_bytes());
    let mid = d.id_of(&m);
    m.chunk(WAIT);
    thread::sleep(ms(500));
    drop(m);
    d.close_of(&mid);
    d.signal(libc::SIGUSR1);
    d.wait_for("stats", &[]);

    // SAFETY: kill(2) on our own child; SIGINT makes strace detach.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    let status = strace.wait().unwrap();
    let mut err = String::new();
    strace
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let text = std::fs::read_to_string(&trace).expect("the trace");
    let _ = std::fs::remove_file(&trace);
    d.stop();
    // strace detaches on SIGINT and then dies of it, or exits 0.
    assert!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "{status}: {err}"
    );

    let calls = check_trace(&text).unwrap_or_else(|e| panic!("{e}"));
    // The trace saw the clients come: it really watched the daemon.
    assert!(calls.contains("accept4"), "no accept in the trace:\n{text}");
}

/// The calls in an strace log, or what is wrong: a socket made, a
/// connection or an address of our own, a send with an address, a file
/// opened (a resolver reads /etc/hosts and /etc/resolv.conf).
fn check_trace(text: &str) -> Result<HashSet<String>, String> {
    let mut calls = HashSet::new();
    for line in text.lines() {
        // "PID  name(args) = result", or "PID  <... name resumed>...".
        let body = line.trim_start();
        let body = body
            .split_once(char::is_whitespace)
            .map_or(body, |(_, rest)| rest)
            .trim_start();
        let body = body.strip_prefix("<... ").unwrap_or(body);
        let call = body
            .split(|c: char| c == '(' || c.is_whitespace())
            .next()
            .unwrap_or("");
        calls.insert(call.to_owned());
        match call {
            "socket" | "socketpair" | "connect" | "bind" | "listen" => {
                return Err(format!("the daemon called {call} while serving: {line}"));
            }
            // A write on an accepted socket is fine; one with an address of
            // its own is not.
            "sendto" | "sendmsg" | "sendmmsg"
                if !(line.contains(", NULL, 0)") || line.contains("msg_name=NULL")) =>
            {
                return Err(format!("an addressed send while serving: {line}"));
            }
            "open" | "openat" => {
                return Err(format!("the daemon opened a file while serving: {line}"));
            }
            _ => {}
        }
    }
    Ok(calls)
}

#[test]
fn the_trace_check_catches_what_it_should() {
    let fine = "2369  accept4(4, {sa_family=AF_INET}, [128 => 16], SOCK_CLOEXEC) = 8\n\
                2369  sendto(8, \"220 mx\", 19, MSG_NOSIGNAL, NULL, 0) = 19\n";
    assert!(check_trace(fine).unwrap().contains("accept4"));
    for bad in [
        "12 socket(AF_INET, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP) = 9",
        "2369  connect(9, {sa_family=AF_INET, sin_port=htons(53)}, 16) = 0",
        "2369  <... connect resumed>) = 0",
        "2369  sendto(9, \"abc\", 3, MSG_NOSIGNAL, {sa_family=AF_INET}, 16) = 3",
        "2369  openat(AT_FDCWD, \"/etc/resolv.conf\", O_RDONLY|O_CLOEXEC) = 9",
    ] {
        assert!(check_trace(bad).is_err(), "{bad}");
    }
}

/// Every key each event may have: a record with another one was forged.
fn allowed(event: &str) -> &'static [&'static str] {
    match event {
        "accept" => &["ts", "event", "id", "peer"],
        "classify" => &[
            "ts",
            "event",
            "id",
            "peer",
            "class",
            "first_reply_ms",
            "pregreet",
        ],
        "cmd" => &["ts", "event", "id", "verb", "arg"],
        "close" => common::CLOSE_KEYS,
        "stats" => &[
            "ts",
            "event",
            "clients",
            "machines",
            "humans",
            "accepted",
            "closed",
            "rejected",
            "classified_machine",
            "classified_human",
            "bytes_sent",
            "held_s",
            "timer_fires",
            "late_p50_ms",
            "late_p99_ms",
            "late_max_ms",
        ],
        _ => &[],
    }
}

/// What a forger sends: verbs, line ends, quotes, a whole fake record,
/// terminal escapes, bytes that are not UTF-8.
const PIECES: &[&[u8]] = &[
    b"HELO ",
    b"EHLO ",
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"DATA\r\n",
    b".\r\n",
    b"RSET\r\n",
    b"NOOP ",
    b"VRFY ",
    b">",
    b"\r\n",
    b"\n",
    b"\r",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\n",
    b"=",
    b" ",
    b"\t",
    b"\x00",
    b"\x1b[2J",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\nts=2026-01-01T00:00:00.000Z event=close id=1 peer=6.6.6.6:25 reason=quit\n",
    b" event=close id=1 peer=6.6.6.6:25 ",
    b"level=error msg=\"forged\"",
];

fn forgery(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let want = 64 + rng.below(1500);
    while out.len() < want {
        if rng.below(4) == 0 {
            for _ in 0..1 + rng.below(20) {
                out.push(rng.next() as u8);
            }
        } else {
            out.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
    }
    out
}

#[test]
fn no_client_can_forge_or_break_a_record() {
    const N: usize = 60;
    // All people (a threshold of 0 makes everyone late enough), then all
    // machines (the default threshold): both paths write records.
    for (threshold, seed) in [("0", 0x1234_5678_9abc_def1u64), ("2s", 0xfeed_beef)] {
        let d = Daemon::start(&[
            "--human-threshold",
            threshold,
            "--max-per-ip",
            "0",
            "--trickle",
            "5ms-10ms",
            "--trickle-bytes",
            "8",
            "--reply-time",
            "50ms",
        ]);
        let mut rng = Rng(seed);
        let mut peers = HashSet::new();
        for i in 0..N {
            let s = socket_to(d.addr(), ETHERNET);
            peers.insert(s.local_addr().unwrap().to_string());
            // Replies are read only by the one that half-closes (the others
            // leave them in a receive buffer big enough for them all).
            let reader = (i % 3 == 1).then(|| drain(&s));
            let bytes = forgery(&mut rng);
            let mut at = 0;
            while at < bytes.len() {
                let n = (1 + rng.below(700)).min(bytes.len() - at);
                if (&s).write_all(&bytes[at..at + n]).is_err() {
                    break; // QUIT came up, and the daemon hung up.
                }
                at += n;
            }
            match i % 3 {
                0 => reset(s),
                1 => {
                    let _ = s.shutdown(Shutdown::Write);
                    reader.unwrap().join().unwrap();
                }
                _ => drop(s),
            }
        }
        // Every one of them is closed, with its record.
        let deadline = Instant::now() + WAIT * 2;
        while d.records_of("close").len() < N {
            assert!(Instant::now() < deadline, "not all closed:\n{}", d.dump());
            thread::sleep(ms(20));
        }
        d.signal(libc::SIGUSR1);
        d.wait_for("stats", &[]);
        let raw = d.raw_lines();
        // stop() holds every line to printable ASCII, parsing, `ts=` first,
        // and one close record per accept.
        let records = d.stop();
        assert_eq!(check_log(&raw).len(), raw.len());
        let accepts: Vec<&Record> = records.iter().filter(|r| r.is("accept")).collect();
        assert_eq!(accepts.len(), N);
        for r in &records {
            assert!(r.line.starts_with("ts="), "{}", r.line);
            if r.get("level").is_some() {
                let keys: Vec<&str> = r.pairs.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(keys, ["ts", "level", "msg"], "{}", r.line);
                assert!(!r.at("msg").contains("forged"), "{}", r.line);
                continue;
            }
            let keys = allowed(r.event());
            assert!(!keys.is_empty(), "an unknown event: {}", r.line);
            let mut seen = HashSet::new();
            for (k, _) in &r.pairs {
                assert!(keys.contains(&k.as_str()), "a forged key '{k}': {}", r.line);
                assert!(seen.insert(k.as_str()), "'{k}' twice: {}", r.line);
            }
            if let Some(peer) = r.get("peer") {
                assert!(peers.contains(peer), "a forged peer: {}", r.line);
            }
        }
    }
}

/// The longest final part of any reply, with the tests' host name.
fn max_final() -> usize {
    smtp::longest_reply(&Ident {
        hostname: HOST,
        banner: "ESMTP",
        queue_id: u64::MAX,
    })
}

#[test]
fn ten_thousand_commands_from_a_machine_get_no_more_than_the_trickle() {
    const MIN_TRICKLE_MS: u64 = 50;
    const TRICKLE_BYTES: u64 = 8;
    let d = Daemon::start(&[
        "--trickle",
        "50ms-80ms",
        "--trickle-bytes",
        "8",
        "--reply-time",
        "1s",
    ]);
    let s = socket_to(d.addr(), ETHERNET);
    let mut greeting = [0u8; 19];
    (&s).read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, format!("220 {HOST} ESMTP\r\n").as_bytes());
    let mut all = Vec::new();
    for i in 0..10_000 {
        all.extend_from_slice(match i % 4 {
            0 => b"EHLO flood.example\r\n".as_slice(),
            1 => b"MAIL FROM:<a@flood.example>\r\n",
            2 => b"RCPT TO:<b@victim.example>\r\n",
            _ => b"VRFY postmaster\r\n",
        });
    }
    // Everything that comes within a window of 5 s, which opens before the
    // commands are sent.
    let window = Duration::from_secs(5);
    let reader = {
        let mut r = s.try_clone().unwrap();
        r.set_read_timeout(Some(ms(50))).unwrap();
        thread::spawn(move || {
            let t0 = Instant::now();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while t0.elapsed() < window {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(_) => {}
                }
            }
            got
        })
    };
    (&s).write_all(&all).unwrap();
    let got = reader.join().unwrap();
    let elapsed = window;
    let bytes: Vec<u8> = got.concat();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let finals = text
        .split("\r\n")
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .count() as u64;
    let fires = elapsed.as_millis() as u64 / MIN_TRICKLE_MS + 2;
    let bound = fires * TRICKLE_BYTES + finals * max_final() as u64;
    eprintln!(
        "{} bytes in {elapsed:?}, {finals} final lines, bound {bound}",
        bytes.len()
    );
    assert!(
        bytes.len() as u64 <= bound,
        "{} bytes in {elapsed:?} ({finals} final parts): more than {bound}: {text:?}",
        bytes.len()
    );
    // The trickle did run, and the reply-time held: one final part at most
    // a second, and no more than the few replies a machine may queue.
    assert!(bytes.len() > 100, "{text:?}");
    assert!((1..=5).contains(&finals), "{finals} final lines: {text:?}");
    drop(s);
    let records = d.stop();
    let close = records.iter().find(|r| r.is("close")).unwrap();
    assert!(close.num("cmds") >= 100, "{}", close.line);
}
