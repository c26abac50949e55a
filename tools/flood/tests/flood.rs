//! End-to-end: the built binary against small SMTP servers that live inside
//! the test, on 127.0.0.1 port 0. Nothing here connects anywhere else.
//!
//! Every run carries `--duration` as a backstop, so a bug makes a test fail
//! with a summary rather than hang.

#[path = "support/json.rs"]
mod json;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use json::Value;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    messages: AtomicUsize,
    pregreets: AtomicUsize,
    /// The client closed with a FIN (read returned 0).
    fins: AtomicUsize,
    /// The client closed with an RST.
    resets: AtomicUsize,
    peers: Mutex<HashSet<IpAddr>>,
}

type Handler = fn(TcpStream, &Seen) -> std::io::Result<()>;

/// Start a server on 127.0.0.1:0 that runs `handler` on each connection in
/// a thread of its own.
fn serve(handler: Handler) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            s.accepted.fetch_add(1, Ordering::SeqCst);
            s.peers
                .lock()
                .unwrap()
                .insert(stream.peer_addr().unwrap().ip());
            let s = s.clone();
            thread::spawn(move || {
                let _ = handler(stream, &s);
            });
        }
    });
    (addr, seen)
}

/// A fast, ordinary SMTP dialogue; the EHLO reply is multi-line and goes
/// out one byte per write, like a (very quick) tarpit.
fn fast_smtp(stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 test.invalid ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                for &b in b"250-test.invalid\r\n250-PIPELINING\r\n250 8BITMIME\r\n" {
                    out.write_all(&[b])?;
                }
            }
            "MAIL" | "RCPT" => out.write_all(b"250 2.1.0 ok\r\n")?,
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                seen.messages.fetch_add(1, Ordering::SeqCst);
                out.write_all(b"250 2.0.0 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 2.0.0 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"500 what\r\n")?,
        }
    }
}

/// Waits a little before the banner and notes a client that spoke first.
fn late_banner(stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    thread::sleep(Duration::from_millis(300));
    stream.set_nonblocking(true)?;
    let mut b = [0u8; 1];
    if stream.peek(&mut b).is_ok() {
        seen.pregreets.fetch_add(1, Ordering::SeqCst);
    }
    stream.set_nonblocking(false)?;
    fast_smtp(stream, seen)
}

/// Sends the first line of a multi-line banner, then nothing; reports how
/// the client left.
fn stalled_banner(mut stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    stream.write_all(b"220-test.invalid hold on\r\n")?;
    wait_for_close(stream, seen)
}

/// Refuses at once: a 421 greeting and a close, in one go.
fn refuse(mut stream: TcpStream, _: &Seen) -> std::io::Result<()> {
    stream.write_all(b"421 4.3.2 too busy\r\n")
}

/// Says nothing at all; reports how the client left.
fn mute(stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    wait_for_close(stream, seen)
}

fn wait_for_close(mut stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                seen.fins.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                seen.resets.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

fn flood(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smtarpit-flood"))
        .args(args)
        .output()
        .expect("run smtarpit-flood")
}

/// Run with `--json` and a backstop `--duration`; return the summary.
fn flood_json(target: SocketAddr, args: &[&str]) -> Value {
    let target = target.to_string();
    let mut all = vec!["--json", "--duration", "20s", target.as_str()];
    all.extend_from_slice(args);
    let out = flood(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    json::parse(stdout.trim_end()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for k in path {
        v = v.get(k);
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count: {v:?}"))
}

/// Wait (briefly) for the server threads to note how the clients left.
fn settle(cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn twenty_bots_reach_quit() {
    let (addr, seen) = serve(fast_smtp);
    let v = flood_json(addr, &["--count", "20", "--mix", "bot=1", "--rcpts", "2"]);
    let t = v.get("total");
    assert_eq!(n(t, &["attempted"]), 20);
    assert_eq!(n(t, &["established"]), 20, "{v:?}");
    assert_eq!(n(t, &["stages", "quit"]), 20, "{v:?}");
    assert_eq!(n(t, &["ends", "client_quit"]), 20, "{v:?}");
    assert_eq!(n(&v, &["behaviours", "bot", "established"]), 20);
    assert!(t.get("failed").as_object().unwrap().is_empty());
    assert!(n(t, &["bytes_received"]) > 20 * 100);
    assert!(!t.get("ttfb_ms").get("p50").is_null());
    assert_eq!(seen.messages.load(Ordering::SeqCst), 20);
    // 20 connections over the default 16 sources: 127.0.0.1 .. 127.0.0.16.
    let peers = seen.peers.lock().unwrap();
    assert_eq!(peers.len(), 16, "{peers:?}");
    assert!(peers
        .iter()
        .all(|ip| ip.to_string().starts_with("127.0.0.")));
}

#[test]
fn total_replaces_closed_connections() {
    let (addr, seen) = serve(fast_smtp);
    let v = flood_json(
        addr,
        &[
            "--count",
            "5",
            "--total",
            "30",
            "--rate",
            "0",
            "--sources",
            "3",
        ],
    );
    let t = v.get("total");
    assert_eq!(n(t, &["attempted"]), 30);
    assert_eq!(n(t, &["established"]), 30);
    assert_eq!(n(t, &["stages", "quit"]), 30);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 30);
    assert_eq!(seen.peers.lock().unwrap().len(), 3);
}

#[test]
fn mix_of_reset_and_silent_with_hold() {
    let (addr, seen) = serve(stalled_banner);
    let v = flood_json(
        addr,
        &[
            "--count",
            "4",
            "--mix",
            "reset=1,silent=1",
            "--hold",
            "300ms",
        ],
    );
    let reset = v.get("behaviours").get("reset");
    let silent = v.get("behaviours").get("silent");
    assert_eq!(n(reset, &["established"]), 2);
    assert_eq!(n(reset, &["ends", "client_reset"]), 2, "{v:?}");
    assert_eq!(n(reset, &["stages", "banner"]), 2);
    assert_eq!(n(silent, &["ends", "hold_expired"]), 2, "{v:?}");
    let held = n(silent, &["held_ms", "p50"]);
    assert!((300..2_000).contains(&held), "held {held}ms");
    // The server saw two RSTs and two FINs.
    settle(|| seen.resets.load(Ordering::SeqCst) + seen.fins.load(Ordering::SeqCst) == 4);
    assert_eq!(seen.resets.load(Ordering::SeqCst), 2);
    assert_eq!(seen.fins.load(Ordering::SeqCst), 2);
}

#[test]
fn pregreet_speaks_before_the_banner() {
    let (addr, seen) = serve(late_banner);
    let v = flood_json(addr, &["--count", "3", "--mix", "pregreet=1"]);
    assert_eq!(seen.pregreets.load(Ordering::SeqCst), 3);
    assert_eq!(n(&v, &["total", "stages", "quit"]), 3, "{v:?}");
    // And a bot waits for the banner.
    let (addr, seen) = serve(late_banner);
    let v = flood_json(addr, &["--count", "3", "--mix", "bot=1"]);
    assert_eq!(seen.pregreets.load(Ordering::SeqCst), 0);
    assert_eq!(n(&v, &["total", "stages", "quit"]), 3);
}

#[test]
fn human_thinks() {
    let (addr, _) = serve(fast_smtp);
    let v = flood_json(
        addr,
        &["--count", "2", "--mix", "human=1", "--think", "50ms"],
    );
    let t = v.get("total");
    assert_eq!(n(t, &["stages", "quit"]), 2, "{v:?}");
    // Six commands (EHLO MAIL RCPT DATA body QUIT), a 50 ms pause before
    // each: at least 300 ms.
    assert!(n(t, &["held_ms", "p50"]) >= 300, "{v:?}");
}

#[test]
fn client_timeout_on_a_mute_server() {
    let (addr, seen) = serve(mute);
    let v = flood_json(addr, &["--count", "3", "--timeout", "200ms"]);
    let t = v.get("total");
    assert_eq!(n(t, &["ends", "client_timeout"]), 3, "{v:?}");
    assert_eq!(n(t, &["stages", "connect"]), 3);
    assert!(t.get("ttfb_ms").get("p50").is_null());
    settle(|| seen.fins.load(Ordering::SeqCst) == 3);
    assert_eq!(seen.fins.load(Ordering::SeqCst), 3);
}

#[test]
fn server_closing_at_once_is_seen() {
    let (addr, _) = serve(refuse);
    let v = flood_json(
        addr,
        &["--count", "10", "--rate", "0", "--mix", "bot=1,reset=1"],
    );
    let t = v.get("total");
    assert_eq!(n(t, &["established"]), 10);
    assert_eq!(n(t, &["ends", "server_closed"]), 10, "{v:?}");
    assert_eq!(n(t, &["stages", "banner"]), 10);
    assert_eq!(n(t, &["bytes_received"]), 10 * 20);
}

#[test]
fn duration_ends_the_run() {
    let (addr, _) = serve(mute);
    let start = Instant::now();
    let out = flood(&[
        "--json",
        "--duration",
        "400ms",
        "--mix",
        "silent=1",
        "--count",
        "5",
        &addr.to_string(),
    ]);
    assert!(out.status.success());
    assert!(start.elapsed() < Duration::from_secs(5));
    let v = json::parse(String::from_utf8_lossy(&out.stdout).trim_end()).unwrap();
    assert_eq!(n(&v, &["total", "ends", "run_ended"]), 5, "{v:?}");
    assert!(n(&v, &["elapsed_ms"]) >= 400);
}

#[test]
fn refused_connects_are_counted_by_errno() {
    // A port nobody listens on: bind, note it, drop.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let v = flood_json(addr, &["--count", "4"]);
    let t = v.get("total");
    assert_eq!(n(t, &["attempted"]), 4);
    assert_eq!(n(t, &["established"]), 0);
    assert_eq!(n(t, &["failed", "ECONNREFUSED"]), 4, "{v:?}");
}

#[test]
fn text_summary() {
    let (addr, _) = serve(fast_smtp);
    let out = flood(&[
        "--count",
        "3",
        "--mix",
        "bot=2,silent=0,reset=1",
        "--duration",
        "20s",
        &addr.to_string(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("smtarpit-flood: 127.0.0.1:"), "{text}");
    for label in [
        "attempted",
        "established",
        "held p99",
        "first byte p50",
        "  quit",
        "  client_reset",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "{label} in\n{text}"
        );
    }
    let header = text.lines().nth(2).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["bot", "reset", "total"]
    );
}

#[test]
fn refuses_a_remote_target() {
    // Refused while parsing the arguments: nothing is ever sent.
    for target in ["10.0.0.1:25", "0.0.0.0:25", "[::ffff:8.8.8.8]:25"] {
        let out = flood(&["--count", "1", target]);
        assert_eq!(out.status.code(), Some(2), "{target}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--allow-remote") && err.contains("loopback"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_arguments_name_the_flag() {
    for (args, flag) in [
        (&["--rate", "fast", "127.0.0.1"][..], "--rate"),
        (&["--mix", "bot=70,spam=30", "127.0.0.1"][..], "--mix"),
        (&["--hold", "5", "127.0.0.1"][..], "--hold"),
        (&["--bogus", "127.0.0.1"][..], "--bogus"),
        (&["--count", "5"][..], "TARGET"),
    ] {
        let out = flood(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("smtarpit-flood: {flag}: ")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help() {
    let out = flood(&["--help"]);
    assert!(out.status.success());
    let usage = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--count",
        "--total",
        "--rate",
        "--sources",
        "--source-base",
        "--allow-remote",
        "--mix",
        "--behaviour",
        "--rcpts",
        "--think",
        "--timeout",
        "--hold",
        "--duration",
        "--json",
    ] {
        assert!(usage.contains(flag), "{flag} missing from --help");
    }
}
