//! The loop: one thread, one `mio::Poll`, every connection a slot in a `Vec`
//! whose index is its `mio::Token`.
//!
//! Each turn: open the connections that are due (pacing by `--rate`, up to
//! `--count` at once and `--total` in all), poll with the earliest deadline
//! as the timeout, handle the events, fire the due timers, redraw the
//! progress line. Handlers return what should happen; `close` and `fail`
//! are the only places that drop a socket and count the result. Nothing
//! spins: with nothing due, poll sleeps until the next deadline.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Args;
use crate::mix::{Behaviour, Mix};
use crate::session::{End, Plan, Session, Stage, Step};
use crate::sock;
use crate::summary::{fmt_ms, Group, Summary};
use crate::timers::Timers;

/// "No such time" in the `u32` millisecond fields.
const NEVER: u32 = u32::MAX;

/// New connections per loop turn at most, so that a burst of opening (with
/// `--rate 0`) still lets the events of the open ones through.
const OPEN_BATCH: u32 = 256;

/// How far pacing may fall behind before it forgets the debt: after a stall
/// it catches up by at most this many milliseconds' worth of connects.
const RATE_SLACK_MS: f64 = 100.0;

/// How often the progress line is redrawn.
const PROGRESS_MS: u64 = 250;

/// One connection: 48 bytes (in a release build) plus the kernel's socket. Times are
/// milliseconds since the run began.
#[derive(Debug)]
struct Conn {
    /// The socket; `None` for a free slot. 4 bytes (a descriptor).
    stream: Option<TcpStream>,
    /// Bumped when the slot is freed, so the timer entries of its previous
    /// occupant are recognised as stale. 4 bytes.
    gen: u32,
    /// When the connect began. 4 bytes.
    started: u32,
    /// When the connect completed, or `NEVER` while connecting. 4 bytes.
    established: u32,
    /// Last byte received or sent: the idle timeout runs from here. 4 bytes.
    last_act: u32,
    /// First byte received, or `NEVER`. 4 bytes.
    first_byte: u32,
    /// The deadline of the timer entry this connection counts on. 4 bytes.
    timer_at: u32,
    /// Bytes received (saturating). 4 bytes.
    bytes: u32,
    /// The dialogue. 16 bytes.
    session: Session,
}

impl Conn {
    fn vacant() -> Conn {
        Conn {
            stream: None,
            gen: 0,
            started: 0,
            established: NEVER,
            last_act: 0,
            first_byte: NEVER,
            timer_at: NEVER,
            bytes: 0,
            session: Session::new(Behaviour::Bot),
        }
    }

    fn is_established(&self) -> bool {
        self.established != NEVER
    }

    /// When this connection next needs attention without input: the connect
    /// timeout, else the earliest of its idle timeout (while it waits on the
    /// server), a human's next command and `--hold`.
    fn deadline(&self, plan: &Plan, hold: Option<u32>) -> u64 {
        if !self.is_established() {
            return u64::from(self.started) + u64::from(plan.timeout(Stage::Connect));
        }
        let mut at = u64::MAX;
        if self.session.waiting_on_server() {
            at = u64::from(self.last_act) + u64::from(plan.timeout(self.session.stage()));
        }
        if let Some(t) = self.session.wake_at() {
            at = at.min(u64::from(t));
        }
        if let Some(h) = hold {
            at = at.min(u64::from(self.established) + u64::from(h));
        }
        at
    }
}

/// The live progress line's state.
struct Progress {
    next_at: u64,
    last_at: u64,
    last_bytes: u64,
}

pub struct Flood<'a> {
    args: &'a Args,
    poll: Poll,
    conns: Vec<Conn>,
    /// Free slots of `conns`.
    free: Vec<u32>,
    timers: Timers,
    stats: [Group; Behaviour::COUNT],
    mix: Mix,
    /// One read buffer for every connection.
    scratch: Box<[u8]>,
    start: Instant,
    /// Connections opened (attempted) so far.
    opened: u64,
    /// Slots in use: connecting or established.
    live: u32,
    connecting: u32,
    /// How many may be open at once: `--count`, lowered on EMFILE.
    cap: u32,
    /// When the next connect is due under `--rate`, ms.
    next_open: f64,
    progress: Option<Progress>,
    established_total: u64,
    closed_by_server: u64,
    failed_total: u64,
    bytes_total: u64,
}

/// Run the flood to the end and return what it found.
pub fn run(args: &Args) -> io::Result<Summary> {
    let mut flood = Flood::new(args)?;
    flood.run()?;
    Ok(flood.summary())
}

fn ms32(now: u64) -> u32 {
    now.min(u64::from(NEVER - 1)) as u32
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl<'a> Flood<'a> {
    fn new(args: &'a Args) -> io::Result<Flood<'a>> {
        Ok(Flood {
            args,
            poll: Poll::new()?,
            conns: Vec::new(),
            free: Vec::new(),
            timers: Timers::default(),
            stats: Default::default(),
            mix: args.mix.clone(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            start: Instant::now(),
            opened: 0,
            live: 0,
            connecting: 0,
            cap: args.count,
            next_open: 0.0,
            progress: sock::stderr_is_tty().then_some(Progress {
                next_at: 0,
                last_at: 0,
                last_bytes: 0,
            }),
            established_total: 0,
            closed_by_server: 0,
            failed_total: 0,
            bytes_total: 0,
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let end_at = self.args.duration_ms.map(u64::from);
        loop {
            let now = self.now();
            if sock::stop_requested() || end_at.is_some_and(|e| now >= e) {
                break;
            }
            self.open_due(now);
            if self.live == 0 && !self.can_open() {
                break; // everything opened has ended
            }
            let timeout = self.poll_timeout(now, end_at);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal
                Err(e) => return Err(e),
            }
            let now = self.now();
            for ev in events.iter() {
                self.on_event(ev, now);
            }
            self.fire_timers(now);
            self.draw_progress(now, false);
        }
        let now = self.now();
        for idx in 0..self.conns.len() {
            if self.conns[idx].stream.is_some() {
                if self.conns[idx].is_established() {
                    self.close(idx, End::RunEnded, now);
                } else {
                    // Still connecting when the run ended.
                    self.fail(idx, libc::EINPROGRESS);
                }
            }
        }
        self.draw_progress(now, true);
        Ok(())
    }

    fn can_open(&self) -> bool {
        self.opened < self.args.total && self.live < self.cap && !sock::stop_requested()
    }

    /// The poll timeout: until the earliest of the next timer, the next
    /// paced connect, the progress redraw and the end of the run.
    fn poll_timeout(&self, now: u64, end_at: Option<u64>) -> Option<Duration> {
        let mut at = self.timers.next_at();
        let mut soonest = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        if self.can_open() {
            if self.args.rate == 0 {
                soonest(now);
            } else {
                soonest(self.next_open.ceil() as u64);
            }
        }
        if let Some(p) = &self.progress {
            soonest(p.next_at);
        }
        if let Some(e) = end_at {
            soonest(e);
        }
        at.map(|t| Duration::from_millis(t.saturating_sub(now)))
    }

    /// Open what `--rate`, `--count` and `--total` allow now.
    fn open_due(&mut self, now: u64) {
        let interval = match self.args.rate {
            0 => 0.0,
            r => 1000.0 / f64::from(r),
        };
        let mut budget = OPEN_BATCH;
        while budget > 0 && self.can_open() {
            if interval > 0.0 {
                if (now as f64) < self.next_open {
                    break;
                }
                self.next_open = self.next_open.max(now as f64 - RATE_SLACK_MS) + interval;
            }
            self.open_one(now);
            budget -= 1;
        }
    }

    fn open_one(&mut self, now: u64) {
        let behaviour = self.mix.next();
        let src = self.args.sources.map(|s| s.addr(self.opened));
        self.opened += 1;
        self.stats[behaviour as usize].attempted += 1;
        let mut stream = match sock::connect(src, self.args.target) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(behaviour, errno_of(&e)),
        };
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.conns.push(Conn::vacant());
                self.conns.len() - 1
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(idx), interest)
        {
            self.free.push(idx as u32);
            return self.connect_failed(behaviour, errno_of(&e));
        }
        // Writable interest stays on for good: it reports the connect's
        // completion, and later a blocked command's drain, without a
        // reregister per command.
        let t = ms32(now);
        let conn = &mut self.conns[idx];
        *conn = Conn {
            stream: Some(stream),
            gen: conn.gen,
            started: t,
            last_act: t,
            session: Session::new(behaviour),
            ..Conn::vacant()
        };
        self.live += 1;
        self.connecting += 1;
        self.arm(idx, now);
    }

    /// A connect that failed before there was a slot for it.
    fn connect_failed(&mut self, behaviour: Behaviour, errno: i32) {
        self.stats[behaviour as usize].fail(errno);
        self.failed_total += 1;
        if errno == libc::EMFILE || errno == libc::ENFILE {
            // Out of descriptors: hold what we have and open again only as
            // connections end.
            if self.cap > self.live {
                self.note(&format!(
                    "{} with {} connections open: opening more only as these end \
                     (see the README to run several processes)",
                    sock::errno_name(errno),
                    self.live
                ));
            }
            self.cap = self.live;
        }
    }

    fn on_event(&mut self, ev: &Event, now: u64) {
        let idx = ev.token().0;
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        let Some(stream) = conn.stream.as_ref() else {
            return; // closed earlier in this batch
        };
        if !conn.is_established() {
            // The non-blocking connect finished, one way or the other: the
            // answer is in SO_ERROR; a spurious wake-up is "not connected".
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(idx, errno_of(&e)),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => self.establish(idx, now),
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.fail(idx, errno_of(&e)),
            }
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            // With the FIN already in, a short read is not the end: read on
            // to see it, as no new edge will come for it.
            let drain = ev.is_read_closed() || ev.is_error();
            if let Some(end) = self.read_all(idx, now, drain) {
                return self.close(idx, end, now);
            }
        }
        self.drive(idx, now);
    }

    fn establish(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        conn.established = ms32(now);
        conn.last_act = ms32(now);
        conn.session.on_connected(&self.args.plan);
        self.stats[conn.session.behaviour() as usize].established += 1;
        self.connecting -= 1;
        self.established_total += 1;
    }

    /// Read what the socket holds and feed it to the dialogue. `Some(end)`
    /// when the connection is over. `drain`: read until WouldBlock or EOF
    /// even after a short read.
    fn read_all(&mut self, idx: usize, now: u64, drain: bool) -> Option<End> {
        let Flood {
            conns,
            scratch,
            args,
            bytes_total,
            ..
        } = self;
        let conn = &mut conns[idx];
        let stream = conn.stream.as_mut()?;
        loop {
            match stream.read(scratch) {
                Ok(0) => return Some(End::ServerClosed),
                Ok(n) => {
                    conn.bytes = conn.bytes.saturating_add(n as u32);
                    *bytes_total += n as u64;
                    conn.last_act = ms32(now);
                    if conn.first_byte == NEVER {
                        conn.first_byte = ms32(now);
                    }
                    conn.session.on_input(&scratch[..n], ms32(now), &args.plan);
                    if (n < scratch.len() && !drain) || conn.session.finished() {
                        // A short read emptied the socket (more data or a
                        // later FIN raises a new edge): this saves a read
                        // that would only say WouldBlock, per trickled byte.
                        // And after the reply to QUIT nothing more matters.
                        return None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(End::ServerReset),
                Err(_) => return Some(End::Error),
            }
        }
    }

    /// Let the dialogue act: write its commands, close when it says so,
    /// then arm its timer.
    fn drive(&mut self, idx: usize, now: u64) {
        let plan = &self.args.plan;
        loop {
            let conn = &mut self.conns[idx];
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            match conn.session.step(ms32(now), plan) {
                Step::Wait => break,
                Step::Close(end) => return self.close(idx, end, now),
                Step::Write => match stream.write(conn.session.unsent(plan)) {
                    Ok(0) => return self.close(idx, End::Error, now),
                    Ok(n) => {
                        conn.session.wrote(n, plan);
                        conn.last_act = ms32(now);
                    }
                    // The writable edge comes back here when it drains.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        let end = match e.kind() {
                            ErrorKind::ConnectionReset => End::ServerReset,
                            // Writing after the server's close.
                            ErrorKind::BrokenPipe => End::ServerClosed,
                            _ => End::Error,
                        };
                        return self.close(idx, end, now);
                    }
                },
            }
        }
        self.arm(idx, now);
    }

    /// Make sure a timer entry is due no later than the connection's
    /// deadline. A later deadline needs nothing: the old entry fires early
    /// and `on_timer` re-arms (see `timers.rs`).
    fn arm(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        let at = conn.deadline(&self.args.plan, self.args.hold_ms);
        if at >= u64::from(NEVER) {
            return; // nothing due, ever (or not within the u32 clock)
        }
        // Never in the past: whatever is due is handled a millisecond on,
        // so a deadline that somehow stays due cannot spin the loop.
        let at = at.max(now + 1).min(u64::from(NEVER - 1));
        if at < u64::from(conn.timer_at) {
            conn.timer_at = at as u32;
            self.timers.push(at, idx as u32, conn.gen);
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(due) = self.timers.pop_due(now) {
            let idx = due.token as usize;
            let conn = &mut self.conns[idx];
            if conn.stream.is_none() || conn.gen != due.gen || u64::from(conn.timer_at) != due.at {
                continue; // stale: closed, reused, or superseded
            }
            conn.timer_at = NEVER;
            self.on_timer(idx, now);
        }
    }

    fn on_timer(&mut self, idx: usize, now: u64) {
        let conn = &self.conns[idx];
        let plan = &self.args.plan;
        if !conn.is_established() {
            let limit = u64::from(conn.started) + u64::from(plan.timeout(Stage::Connect));
            if now >= limit {
                return self.fail(idx, libc::ETIMEDOUT);
            }
            return self.arm(idx, now);
        }
        if let Some(h) = self.args.hold_ms {
            if now >= u64::from(conn.established) + u64::from(h) {
                return self.close(idx, End::HoldExpired, now);
            }
        }
        let idle = u64::from(conn.last_act) + u64::from(plan.timeout(conn.session.stage()));
        if conn.session.waiting_on_server() && now >= idle {
            return self.close(idx, End::ClientTimeout, now);
        }
        self.drive(idx, now); // a human's pause may be over; drive re-arms
    }

    /// Free the slot of an established connection and count how it ended.
    fn close(&mut self, idx: usize, end: End, now: u64) {
        let conn = &mut self.conns[idx];
        let Some(stream) = conn.stream.take() else {
            return;
        };
        debug_assert!(conn.is_established(), "close of a connect: use fail");
        let now = ms32(now);
        let held = now.saturating_sub(conn.established);
        let ttfb =
            (conn.first_byte != NEVER).then(|| conn.first_byte.saturating_sub(conn.established));
        let s = &conn.session;
        self.stats[s.behaviour() as usize].ended(held, ttfb, u64::from(conn.bytes), s.stage(), end);
        if matches!(end, End::ServerClosed | End::ServerReset) {
            self.closed_by_server += 1;
        }
        // Dropping the socket closes it, and the kernel drops it from the
        // epoll set: no deregister call needed.
        if end == End::ClientReset {
            sock::abort(stream);
        } else {
            drop(stream);
        }
        self.release(idx);
    }

    /// Free the slot of a connect that failed, counting it by errno.
    fn fail(&mut self, idx: usize, errno: i32) {
        let conn = &mut self.conns[idx];
        if conn.stream.take().is_none() {
            return;
        }
        debug_assert!(!conn.is_established(), "fail of an established connection");
        let behaviour = conn.session.behaviour();
        self.stats[behaviour as usize].fail(errno);
        self.failed_total += 1;
        self.connecting -= 1;
        self.release(idx);
    }

    fn release(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        conn.gen = conn.gen.wrapping_add(1);
        conn.timer_at = NEVER;
        self.free.push(idx as u32);
        self.live -= 1;
    }

    /// A message on stderr that does not tangle with the progress line.
    fn note(&self, msg: &str) {
        let clear = if self.progress.is_some() {
            "\r\x1b[K"
        } else {
            ""
        };
        eprintln!("{clear}smtarpit-flood: {msg}");
    }

    /// Redraw the progress line (a terminal only) when due, or at the end
    /// for the last time with a newline.
    fn draw_progress(&mut self, now: u64, last: bool) {
        let Some(p) = &mut self.progress else {
            return;
        };
        if now < p.next_at && !last {
            return;
        }
        let span = now.saturating_sub(p.last_at).max(1);
        let rate = (self.bytes_total - p.last_bytes) * 1000 / span;
        p.next_at = now + PROGRESS_MS;
        p.last_at = now;
        p.last_bytes = self.bytes_total;
        let line = format!(
            "\r{:>7}  connected {}  held {}  connecting {}  closed by server {}  failed {}  rx {} B/s\x1b[K{}",
            fmt_ms(now),
            self.established_total,
            self.live - self.connecting,
            self.connecting,
            self.closed_by_server,
            self.failed_total,
            rate,
            if last { "\n" } else { "" }
        );
        let mut err = io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    fn summary(&mut self) -> Summary {
        let groups = self
            .mix
            .members()
            .map(|b| (b, std::mem::take(&mut self.stats[b as usize])))
            .collect();
        Summary::new(
            self.args.target.to_string(),
            self.now(),
            self.args.mix.to_string(),
            groups,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_record_stays_small() {
        // The budget: "a few dozen bytes plus the socket". 44 bytes of our
        // own; the socket is a descriptor in a release build (mio adds a
        // selector id to it in a debug build).
        let stream = std::mem::size_of::<Option<TcpStream>>();
        let limit = (44 + stream).next_multiple_of(std::mem::align_of::<Conn>());
        let size = std::mem::size_of::<Conn>();
        assert!(size <= limit, "Conn is {size} bytes, the budget {limit}");
        if stream == 4 {
            assert_eq!(size, 48);
        }
    }
}
