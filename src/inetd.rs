//! `--inetd`: one connection on standard input and output, as xinetd hands
//! it over (a socket on both, or a pair of pipes). The same session, timings
//! and records as the daemon; a loop of one, with the session's deadline as
//! its only timer.

use crate::record::Rec;
use crate::session::{Next, Reason, Session, Settings, Sink};
use crate::signals::Signals;
use crate::smtp::Reply;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

const IN: Token = Token(0);
const OUT: Token = Token(1);
const SIGNALS: Token = Token(2);

struct FdSink {
    fd: RawFd,
    error: Option<io::Error>,
}

impl Sink for FdSink {
    fn send(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || self.error.is_some() {
            return 0;
        }
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
            if n >= 0 {
                return n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return 0,
                _ => {
                    self.error = Some(e);
                    return 0;
                }
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were given; no memory involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The client's address when stdin is a socket; `0.0.0.0:0` for pipes.
fn peer_of(fd: RawFd) -> SocketAddr {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    match getpeername::<SockaddrStorage>(fd) {
        Ok(a) => {
            if let Some(v4) = a.as_sockaddr_in() {
                SocketAddr::from((v4.ip(), v4.port()))
            } else if let Some(v6) = a.as_sockaddr_in6() {
                SocketAddr::from((v6.ip(), v6.port()))
            } else {
                unknown
            }
        }
        Err(_) => unknown,
    }
}

/// Serves the connection on fds 0 and 1 until it ends; returns its reason.
pub fn serve(settings: &Settings, mut signals: Option<Signals>) -> io::Result<Reason> {
    let (input, output) = (0, 1);
    set_nonblocking(input)?;
    set_nonblocking(output)?;
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&input), IN, Interest::READABLE)?;
    if let Some(s) = &signals {
        poll.registry()
            .register(&mut SourceFd(&s.raw_fd()), SIGNALS, Interest::READABLE)?;
    }
    let peer = crate::record::canonical(&peer_of(input));
    Rec::new("accept").kv("id", 1).peer(&peer).emit();
    let mut sink = FdSink {
        fd: output,
        error: None,
    };
    let (mut session, mut due) = Session::new(1, peer, now(), settings, &mut sink);
    let mut events = Events::with_capacity(8);
    let mut buf = [0u8; 4096];
    let mut out_registered = false;
    let reason = 'serve: loop {
        if let Some(e) = sink.error.take() {
            break Reason::of(&e);
        }
        // Stop reading while a person's replies back up; wait for stdout.
        let pending = session.pending();
        if pending != out_registered {
            if pending {
                poll.registry()
                    .register(&mut SourceFd(&output), OUT, Interest::WRITABLE)?;
            } else {
                poll.registry().deregister(&mut SourceFd(&output))?;
            }
            out_registered = pending;
        }
        let timeout = Duration::from_millis(due.saturating_sub(now()));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    while let Some(sig) = signals.as_mut().and_then(Signals::pending) {
                        if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                            session.end(Reply::ShuttingDown, Reason::Shutdown, settings, &mut sink);
                            break 'serve Reason::Shutdown;
                        }
                    }
                }
                OUT => session.flush(&mut sink),
                _ => {}
            }
        }
        // Level-triggered thinking on an edge-triggered poll: read until
        // the input would block, whatever the events said.
        while !session.pending() {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::read(input, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                break 'serve Reason::ClientClosed;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => break 'serve Reason::of(&e),
                }
            }
            match session.input(&buf[..n as usize], now(), settings, &mut sink) {
                Next::Keep => {}
                Next::At(t) => due = t,
                Next::Close(r) => break 'serve r,
            }
        }
        let t = now();
        if t >= due {
            match session.timer(t, settings, &mut sink) {
                Next::Keep => {}
                Next::At(next) => due = next,
                Next::Close(r) => break r,
            }
        }
    };
    session.close_record(reason, now()).emit();
    Ok(reason)
}
