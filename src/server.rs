//! The event loop: one thread, one `mio::Poll`, connections in a slab whose
//! key is both the poll token and the timer key. It only moves bytes and
//! timers; what to send and when is the session's business.

use crate::record::Rec;
use crate::session::{Class, Next, Reason, Session, Settings, Sink};
use crate::signals::Signals;
use crate::smtp::Reply;
use crate::wheel::Wheel;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// Tokens above the slab's range: the listeners count down from the top.
const SIGNALS: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1;
/// Reads per readiness event before the loop serves others: a client that
/// floods us must not starve the rest.
const READS_PER_EVENT: usize = 16;
/// Kernel socket buffers for accepted sockets. A tarpit needs no window; the
/// kernel doubles the value and enforces its own minimum.
const SOCK_BUF: usize = 2048;

/// A held connection: its socket and its session. The socket is kept as a
/// plain std stream (just the descriptor) and registered by descriptor.
pub struct Conn {
    /// 4 bytes.
    stream: std::net::TcpStream,
    session: Session,
}

/// Limits that a reload may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: u32,
    pub max_per_ip: u32,
}

/// What the loop counts for the `event=stats` record.
#[derive(Default)]
pub struct Stats {
    pub accepted: u64,
    pub closed: u64,
    pub rejected: u64,
    pub machines: u64,
    pub humans: u64,
    pub bytes_sent: u64,
    pub held_ms: u64,
    pub lateness: Lateness,
}

/// How late timers fire against their deadlines, in whole milliseconds:
/// exact up to 255 ms, then one bucket for the rest (the maximum is kept).
pub struct Lateness {
    counts: [u64; 257],
    pub max: u64,
    pub fires: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            counts: [0; 257],
            max: 0,
            fires: 0,
        }
    }
}

impl Lateness {
    pub fn add(&mut self, late_ms: u64) {
        self.counts[late_ms.min(256) as usize] += 1;
        self.max = self.max.max(late_ms);
        self.fires += 1;
    }

    /// The smallest lateness that `per_mille`/1000 of the fires did not
    /// exceed (256 means "256 ms or more").
    pub fn quantile(&self, per_mille: u64) -> u64 {
        let want = (self.fires * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (ms, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return ms as u64;
            }
        }
        0
    }
}

/// What the loop asks of its owner between events (reload, exit).
pub enum Control {
    Run,
    Reload,
    Stop,
}

pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    signals: Option<Signals>,
    conns: Slab<Conn>,
    wheel: Wheel,
    per_ip: HashMap<IpAddr, u32>,
    pub settings: Settings,
    pub limits: Limits,
    pub stats: Stats,
    start: Instant,
    next_id: u32,
    /// Connections whose reading was cut short by the per-event budget.
    again: Vec<usize>,
    /// Set while accept fails for want of descriptors (EMFILE, ENFILE).
    starved: bool,
    /// A spare descriptor, given up to refuse one client politely when no
    /// other is left.
    reserve: Option<std::os::fd::OwnedFd>,
    scratch: Box<[u8; 4096]>,
}

/// A socket as a [`Sink`]: one `write`, `WouldBlock` as "0 taken", any other
/// error kept for the loop to close the connection with.
struct SockSink<'a> {
    stream: &'a TcpStream,
    error: Option<io::Error>,
}

impl Sink for SockSink<'_> {
    fn send(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || self.error.is_some() {
            return 0;
        }
        loop {
            match (&*self.stream).write(bytes) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                Err(e) => {
                    self.error = Some(e);
                    return 0;
                }
            }
        }
    }
}

impl Server {
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        signals: Option<Signals>,
        settings: Settings,
        limits: Limits,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut ls = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE - i), Interest::READABLE)?;
            ls.push(l);
        }
        if let Some(sig) = &signals {
            poll.registry()
                .register(&mut SourceFd(&sig.raw_fd()), SIGNALS, Interest::READABLE)?;
        }
        let reserve = ls.first().and_then(|l| l.as_fd().try_clone_to_owned().ok());
        Ok(Server {
            poll,
            listeners: ls,
            signals,
            // Reserved, not touched: untouched pages cost no memory, and the
            // slab never moves its records while growing to the limit.
            conns: Slab::with_capacity(limits.max_clients as usize),
            wheel: Wheel::with_capacity(limits.max_clients as usize),
            per_ip: HashMap::new(),
            settings,
            limits,
            stats: Stats::default(),
            start: Instant::now(),
            next_id: 0,
            again: Vec::new(),
            starved: false,
            reserve,
            scratch: Box::new([0; 4096]),
        })
    }

    /// Milliseconds since the daemon started: the only clock the sessions see.
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn clients(&self) -> usize {
        self.conns.len()
    }

    /// Runs until a signal asks for something: returns what.
    pub fn run(&mut self) -> io::Result<Control> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = self.now();
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.wheel
                    .next_deadline()
                    .map(|d| Duration::from_millis(d.saturating_sub(now)))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut control = Control::Run;
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => control = self.signal(),
                    Token(t) if t > LISTENER_BASE - self.listeners.len() => {
                        self.accept(LISTENER_BASE - t);
                    }
                    Token(key) => self.ready(key, ev.is_readable(), ev.is_writable()),
                }
            }
            for key in std::mem::take(&mut self.again) {
                if self.conns.contains(key) {
                    self.ready(key, true, false);
                }
            }
            let now = self.now();
            while let Some((key, deadline)) = self.wheel.poll_deadline(now) {
                self.stats.lateness.add(now.saturating_sub(deadline));
                self.fire(key as usize, now);
            }
            match control {
                Control::Run => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads the pending signals: SIGTERM and SIGINT stop, SIGHUP reloads,
    /// SIGUSR1 writes the stats record.
    fn signal(&mut self) -> Control {
        let mut control = Control::Run;
        while let Some(sig) = self.signals.as_mut().and_then(Signals::pending) {
            match sig {
                Signal::SIGTERM | Signal::SIGINT => control = Control::Stop,
                Signal::SIGHUP if !matches!(control, Control::Stop) => control = Control::Reload,
                Signal::SIGUSR1 => self.stats_record().emit(),
                _ => {}
            }
        }
        control
    }

    pub fn stats_record(&self) -> Rec {
        // Now, over the connections held; totals, over the closed ones too.
        let now = self.now();
        let (mut machines, mut humans) = (0, 0);
        let (mut held_ms, mut bytes_sent) = (self.stats.held_ms, self.stats.bytes_sent);
        for (_, c) in &self.conns {
            match c.session.class() {
                Class::Human => humans += 1,
                _ => machines += 1,
            }
            held_ms += u64::from(c.session.age_ms(now));
            bytes_sent += u64::from(c.session.bytes_sent());
        }
        Rec::new("stats")
            .kv("clients", self.conns.len())
            .kv("machines", machines)
            .kv("humans", humans)
            .kv("accepted", self.stats.accepted)
            .kv("closed", self.stats.closed)
            .kv("rejected", self.stats.rejected)
            .kv("classified_machine", self.stats.machines)
            .kv("classified_human", self.stats.humans)
            .kv("bytes_sent", bytes_sent)
            .kv("held_s", held_ms / 1000)
            .kv("timer_fires", self.stats.lateness.fires)
            .kv("late_p50_ms", self.stats.lateness.quantile(500))
            .kv("late_p99_ms", self.stats.lateness.quantile(990))
            .kv("late_max_ms", self.stats.lateness.max)
    }

    /// Drains the listener's backlog.
    fn accept(&mut self, index: usize) {
        loop {
            let (stream, peer) = match self.listeners[index].accept() {
                Ok((s, peer)) => (std_stream(s), peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.starved = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    if errno != libc::EMFILE && errno != libc::ENFILE {
                        log::warn!("accept: {e}");
                        return;
                    }
                    // One record per episode, not per attempt.
                    if !self.starved {
                        Rec::new("accept_error")
                            .quoted("error", e.to_string().as_bytes())
                            .kv("clients", self.conns.len())
                            .emit();
                    }
                    self.starved = true;
                    // Give up the spare descriptor to take one waiting
                    // client, tell it 421 and close it, then take the spare
                    // back: the backlog drains politely instead of timing
                    // out. Without a spare, wait: the poll is edge-triggered,
                    // so nothing spins, and the next close resumes accepting.
                    if self.reserve.take().is_none() {
                        return;
                    }
                    // (Linux reports EMFILE before it looks at the backlog,
                    // so only a client actually taken means "go on".)
                    let taken = self.listeners[index].accept();
                    let got = taken.is_ok();
                    if let Ok((s, peer)) = taken {
                        self.admit(std_stream(s), peer, true);
                    }
                    self.reserve = self.listeners[index].as_fd().try_clone_to_owned().ok();
                    if !got {
                        return;
                    }
                    continue;
                }
            };
            self.admit(stream, peer, false);
        }
    }

    /// Greets a new client, or refuses it with 421 over the limits (or when
    /// `refuse`: out of descriptors); either way with its records.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, refuse: bool) {
        let now = self.now();
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.stats.accepted += 1;
        let peer = crate::record::canonical(&peer);
        Rec::new("accept").kv("id", id).peer(&peer).emit();
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let over_ip = self.limits.max_per_ip > 0 && from_ip >= self.limits.max_per_ip;
        let mut sink = SockSink {
            stream: &stream,
            error: None,
        };
        if refuse || self.conns.len() >= self.limits.max_clients as usize || over_ip {
            // Told and closed at once, never left waiting in the backlog.
            self.stats.rejected += 1;
            let session = Session::refused(id, peer, now, &self.settings, &mut sink);
            self.account(&session, Reason::Limit, now);
            return;
        }
        set_small_buffers(&stream);
        let (session, due) = Session::new(id, peer, now, &self.settings, &mut sink);
        let error = sink.error.take();
        let key = self.conns.insert(Conn { stream, session });
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        let registered = self.poll.registry().register(
            &mut SourceFd(&self.conns[key].stream.as_raw_fd()),
            Token(key),
            Interest::READABLE,
        );
        match (error, registered) {
            (Some(e), _) | (None, Err(e)) => self.close(key, Reason::of(&e)),
            (None, Ok(())) => self.wheel.insert(key as u32, due),
        }
    }

    /// A readiness event (or a read left over from the budget).
    fn ready(&mut self, key: usize, readable: bool, writable: bool) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if writable && conn.session.pending() {
            let mut sink = SockSink {
                stream: &conn.stream,
                error: None,
            };
            conn.session.flush(&mut sink);
            if let Some(e) = sink.error {
                return self.close(key, Reason::of(&e));
            }
            if conn.session.pending() {
                return;
            }
            // Drained: read again. Re-registering re-arms the edge, so input
            // that arrived meanwhile is reported.
            let _ = self.poll.registry().reregister(
                &mut SourceFd(&conn.stream.as_raw_fd()),
                Token(key),
                Interest::READABLE,
            );
        }
        if !readable || conn.session.pending() {
            return;
        }
        for _ in 0..READS_PER_EVENT {
            let n = match (&conn.stream).read(&mut self.scratch[..]) {
                Ok(0) => return self.close(key, Reason::ClientClosed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(key, Reason::of(&e)),
            };
            let mut sink = SockSink {
                stream: &conn.stream,
                error: None,
            };
            let class_before = conn.session.class();
            let next = conn
                .session
                .input(&self.scratch[..n], now, &self.settings, &mut sink);
            if class_before == Class::Unknown {
                match conn.session.class() {
                    Class::Machine => self.stats.machines += 1,
                    Class::Human => self.stats.humans += 1,
                    Class::Unknown => {}
                }
            }
            if let Some(e) = sink.error {
                return self.close(key, Reason::of(&e));
            }
            match next {
                Next::Keep => {}
                Next::At(t) => self.wheel.insert(key as u32, t),
                Next::Close(reason) => return self.close(key, reason),
            }
            if conn.session.pending() {
                // A person's replies back up (a pipelining flood): stop
                // reading until the socket drains.
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&conn.stream.as_raw_fd()),
                    Token(key),
                    Interest::WRITABLE,
                );
                return;
            }
        }
        self.again.push(key);
    }

    fn fire(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut sink = SockSink {
            stream: &conn.stream,
            error: None,
        };
        let next = conn.session.timer(now, &self.settings, &mut sink);
        if let Some(e) = sink.error {
            return self.close(key, Reason::of(&e));
        }
        match next {
            Next::Keep => {}
            Next::At(t) => self.wheel.insert(key as u32, t),
            Next::Close(reason) => self.close(key, reason),
        }
    }

    /// Counts a finished session and writes its close record.
    fn account(&mut self, session: &Session, reason: Reason, now: u64) {
        self.stats.closed += 1;
        self.stats.bytes_sent += u64::from(session.bytes_sent());
        self.stats.held_ms += u64::from(session.age_ms(now));
        session.close_record(reason, now).emit();
    }

    /// The one place a connection ends: timer, registration, slab entry,
    /// per-address count, and exactly one close record.
    fn close(&mut self, key: usize, reason: Reason) {
        let now = self.now();
        let conn = self.conns.remove(key);
        self.wheel.cancel(key as u32);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
        let peer = conn.session.peer();
        if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        self.account(&conn.session, reason, now);
        drop(conn);
        if self.starved {
            // A descriptor came free: take what waits in the backlogs.
            self.starved = false;
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
    }

    /// Ends every connection with a 421 and its close record.
    pub fn shutdown(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            let mut sink = SockSink {
                stream: &conn.stream,
                error: None,
            };
            let next = conn.session.end(
                Reply::ShuttingDown,
                Reason::Shutdown,
                &self.settings,
                &mut sink,
            );
            debug_assert_eq!(next, Next::Close(Reason::Shutdown));
            self.close(key, Reason::Shutdown);
        }
    }
}

/// Keeps only the descriptor of an accepted socket (nonblocking already).
fn std_stream(s: mio::net::TcpStream) -> TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is a connected TCP socket we now own alone.
    unsafe { TcpStream::from_raw_fd(s.into_raw_fd()) }
}

fn set_small_buffers(stream: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Best effort: a failure leaves the kernel's default, which works.
    let _ = setsockopt(stream, sockopt::SndBuf, &SOCK_BUF);
    let _ = setsockopt(stream, sockopt::RcvBuf, &SOCK_BUF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles() {
        let mut l = Lateness::default();
        assert_eq!(l.quantile(500), 0);
        for ms in 0..100 {
            l.add(ms);
        }
        l.add(5000);
        assert_eq!(l.quantile(500), 50);
        assert_eq!(l.quantile(990), 99);
        assert_eq!(l.quantile(1000), 256);
        assert_eq!(l.max, 5000);
    }

    #[test]
    fn a_held_connection_stays_small() {
        // DESIGN.md's budget is 96 bytes per record. We hold 72, so that a
        // silent client's slab record and its 16-byte wheel node stay under
        // the 96 bytes of memory a held connection may cost in all.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 72, "size_of::<Conn>() = {size}");
        assert_eq!(std::mem::size_of::<std::net::TcpStream>(), 4);
    }
}
#[cfg(test)]
mod size_print {
    #[test]
    fn print() {
        eprintln!(
            "Conn={} Session={} Slab entry={}",
            std::mem::size_of::<super::Conn>(),
            std::mem::size_of::<crate::session::Session>(),
            std::mem::size_of::<slab::Slab<super::Conn>>()
        );
    }
}
