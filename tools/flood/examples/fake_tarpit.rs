//! A stand-in SMTP tarpit to try smtarpit-flood against while the real
//! daemon is not at hand: one thread, one `mio::Poll`, loopback only.
//!
//! Every reply to a command is `--lines` continuation lines (`250-...`)
//! and then the final line, trickled `--bytes` bytes every `--trickle`
//! (0 = all at once). The banner goes out at once. It keeps a buffer per
//! connection and does nothing clever: it is a test server, not the daemon.
//!
//! ```text
//! cargo run -p smtarpit-flood --release --example fake_tarpit -- \
//!     --port 2525 --trickle 1s --lines 3
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// The client's current, incomplete line.
    line: Vec<u8>,
    /// Reply bytes not yet written.
    out: Vec<u8>,
    off: usize,
    in_data: bool,
    quit: bool,
    /// When its next bytes are due; `None` with nothing to send. A heap
    /// entry that does not match is stale (its slot was reused).
    due_at: Option<Duration>,
}

struct Opts {
    port: u16,
    trickle: Duration,
    lines: usize,
    bytes: usize,
}

fn parse_ms(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.bytes().take_while(u8::is_ascii_digit).count());
    let n: u64 = n.parse().expect("a number");
    Duration::from_millis(match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "" if n == 0 => 0,
        _ => panic!("bad duration {s}"),
    })
}

fn opts() -> Opts {
    let mut o = Opts {
        port: 2525,
        trickle: Duration::from_secs(1),
        lines: 3,
        bytes: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => o.port = v.parse().expect("--port"),
            "--trickle" => o.trickle = parse_ms(&v),
            "--lines" => o.lines = v.parse().expect("--lines"),
            "--bytes" => o.bytes = v.parse().expect("--bytes"),
            _ => panic!("usage: fake_tarpit [--port P] [--trickle DUR] [--lines N] [--bytes N]"),
        }
    }
    o
}

/// The reply to one line from the client (empty when none is due).
fn reply(c: &mut Conn, line: &[u8], lines: usize) -> Vec<u8> {
    if c.in_data {
        if line == b".\r\n" || line == b".\n" {
            c.in_data = false;
            return b"250 2.0.0 queued\r\n".to_vec();
        }
        return Vec::new();
    }
    let verb = line
        .get(..4)
        .map(|v| v.to_ascii_uppercase())
        .unwrap_or_default();
    let (code, last) = match &verb[..] {
        b"EHLO" | b"HELO" => ("250", "fake.invalid"),
        b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => ("250", "2.0.0 ok"),
        b"DATA" => {
            c.in_data = true;
            return b"354 go ahead\r\n".to_vec();
        }
        b"QUIT" => {
            c.quit = true;
            return b"221 2.0.0 bye\r\n".to_vec();
        }
        _ => ("500", "5.5.2 what"),
    };
    let mut r = Vec::new();
    for i in 0..lines {
        r.extend_from_slice(format!("{code}-please wait, line {i}\r\n").as_bytes());
    }
    r.extend_from_slice(format!("{code} {last}\r\n").as_bytes());
    r
}

fn main() -> std::io::Result<()> {
    let o = opts();
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    let addr: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("fake_tarpit: listening on {addr}");
    let start = Instant::now();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // (due, token) of connections with output waiting.
    let mut due: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let (mut accepted, mut closed) = (0u64, 0u64);
    let mut last_report = Duration::ZERO;
    loop {
        let timeout = due
            .peek()
            .map(|Reverse((t, _))| t.saturating_sub(start.elapsed()));
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r?,
        }
        let now = start.elapsed();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let idx = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(idx),
                                Interest::READABLE,
                            )?;
                            let _ = stream.write(b"220 fake.invalid ESMTP\r\n");
                            conns[idx] = Some(Conn {
                                stream,
                                line: Vec::new(),
                                out: Vec::new(),
                                off: 0,
                                in_data: false,
                                quit: false,
                                due_at: None,
                            });
                            accepted += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("fake_tarpit: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let idx = ev.token().0;
            let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let mut gone = false;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        for &b in &buf[..n] {
                            c.line.push(b);
                            if b == b'\n' {
                                let line = std::mem::take(&mut c.line);
                                let r = reply(c, &line, o.lines);
                                c.out.extend_from_slice(&r);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                conns[idx] = None;
                free.push(idx);
                closed += 1;
            } else if c.off < c.out.len() && c.due_at.is_none() {
                c.due_at = Some(now + o.trickle);
                due.push(Reverse((now + o.trickle, idx)));
            }
        }
        while let Some(&Reverse((t, idx))) = due.peek() {
            if t > now {
                break;
            }
            due.pop();
            let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if c.due_at != Some(t) {
                continue;
            }
            c.due_at = None;
            let end = if o.trickle.is_zero() {
                c.out.len()
            } else {
                (c.off + o.bytes).min(c.out.len())
            };
            match c.stream.write(&c.out[c.off..end]) {
                Ok(n) => c.off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => c.quit = true,
            }
            if c.off == c.out.len() {
                c.out.clear();
                c.off = 0;
                if c.quit {
                    conns[idx] = None;
                    free.push(idx);
                    closed += 1;
                }
            } else {
                c.due_at = Some(now + o.trickle);
                due.push(Reverse((now + o.trickle, idx)));
            }
        }
        if now - last_report >= Duration::from_secs(5) {
            last_report = now;
            eprintln!(
                "fake_tarpit: {:>5}s accepted {accepted} open {} closed {closed}",
                now.as_secs(),
                accepted - closed
            );
        }
    }
}
