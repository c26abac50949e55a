//! One client's session: man-or-machine, the tarpit's trickle, the honeypot's
//! fast replies. Pure: bytes and the time (ms since the daemon started) come
//! in; bytes to send, records and the next deadline come out. The event loop
//! owns the socket and the timer wheel and does nothing but carry these.
//!
//! A tarpitted reply is never stored. Continuation line `n` is a function of
//! the connection's seed and `n` ([`smtp::filler_line`]); the final part is
//! re-rendered from the reply kind. So a stalled spammer costs a position (a
//! line counter and a byte offset), not a buffer.

use crate::record::Rec;
use crate::smtp::{self, BodyScan, Dialogue, Ident, LineBuf, Remember, Reply, Verb, MAX_LINE};
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The timings and texts a session needs, resolved from the configuration.
/// Durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub hostname: String,
    pub banner: String,
    pub human_threshold: u32,
    pub greet_pause: u32,
    pub trickle: (u32, u32),
    pub trickle_bytes: u32,
    pub reply_time: (u32, u32),
    pub max_session: u32,
    pub idle_timeout: u32,
    /// Mixed into every connection's random stream, so two daemons (or two
    /// runs) never trickle in step.
    pub seed: u32,
}

/// At most this many `event=cmd` records per connection: a client that
/// pipelines thousands of commands must not be able to flood the log. The
/// close record still counts them all.
pub const MAX_CMD_RECORDS: u16 = 100;
/// How much of a client's argument a record or the close record keeps.
pub const MAX_ARG_RECORD: usize = 100;
/// Replies a tarpitted client may have waiting behind the one being trickled.
/// We do not offer PIPELINING, so only a client breaking RFC 5321 2.4 gets
/// here; past this its replies are dropped rather than buffered.
const QUEUE: usize = 3;

/// Why a connection ended; the `reason` of the close record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Quit,
    ClientClosed,
    Reset,
    MaxSession,
    Idle,
    Limit,
    Shutdown,
    Error,
}

impl Reason {
    /// Why a read or write on the client's socket ended it.
    pub fn of(e: &std::io::Error) -> Reason {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => Reason::Reset,
            _ => Reason::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::Quit => "quit",
            Reason::ClientClosed => "client_closed",
            Reason::Reset => "reset",
            Reason::MaxSession => "max_session",
            Reason::Idle => "idle",
            Reason::Limit => "limit",
            Reason::Shutdown => "shutdown",
            Reason::Error => "error",
        }
    }
}

/// What the loop should do with the connection's timer after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The timer stands as it was.
    Keep,
    /// Fire at this time (ms since start).
    At(u64),
    /// Send what was produced, then close with this reason.
    Close(Reason),
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Unknown,
    Machine,
    Human,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            // A client that never spoke is held as a machine (DESIGN.md).
            Class::Unknown | Class::Machine => "machine",
            Class::Human => "human",
        }
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `220-` sent, the final greeting line waits for the greet pause.
    GreetPause,
    /// Waiting for the client's next command.
    Wait,
    /// Trickling a reply to a machine.
    Trickle,
    /// Trickling done; the final part of the reply goes out (maybe in pieces).
    Final,
}

const PREGREET: u8 = 1;
/// Discarding the rest of an overlong line, already answered with 500.
const SKIPPING: u8 = 2;

/// What only some connections need, allocated only for them: the envelope
/// the close record reports (a bot that has said HELO and MAIL), and rarer
/// still, a partial line or a person's unsent replies.
#[derive(Default)]
struct Extra {
    /// The HELO name, then the MAIL FROM path: one allocation for both.
    said: Box<[u8]>,
    helo_len: u16,
    rcpts: u32,
    io: Option<Box<Io>>,
}

#[derive(Default)]
struct Io {
    line: Vec<u8>,
    out: Vec<u8>,
}

impl Extra {
    fn helo(&self) -> &[u8] {
        &self.said[..usize::from(self.helo_len)]
    }

    fn mail_from(&self) -> &[u8] {
        &self.said[usize::from(self.helo_len)..]
    }

    fn set_helo(&mut self, helo: &[u8]) {
        self.said = [helo, self.mail_from()].concat().into_boxed_slice();
        self.helo_len = helo.len() as u16;
    }

    fn set_mail_from(&mut self, mail_from: &[u8]) {
        self.said = [self.helo(), mail_from].concat().into_boxed_slice();
    }
}

/// What a record keeps of a client's argument.
fn clip(arg: &[u8]) -> &[u8] {
    &arg[..arg.len().min(MAX_ARG_RECORD)]
}

/// The compact peer address: IPv4 kept as an IPv4-mapped IPv6 address.
#[derive(Clone, Copy)]
struct Peer {
    ip: [u8; 16],
    port: u16,
}

pub struct Session {
    /// 8 bytes; `None` for a silent or a simple bot until it says HELO.
    extra: Option<Box<Extra>>,
    /// 4: the connection's number in the records.
    id: u32,
    /// 4: the loop's clock at accept, truncated; ages below are offsets from it
    /// (wrapping, fine for sessions shorter than 24 days).
    born: u32,
    /// 4: an age: the end of the banner until classified; while waiting, the
    /// start of the wait (for the idle limit); while trickling, when the final
    /// line may go.
    mark: u32,
    /// 4 + 4: byte counters for the close record.
    sent: u32,
    recv: u32,
    /// 18
    peer: Peer,
    /// 2: continuation lines trickled so far (the filler's index).
    line: u16,
    /// 2: commands seen.
    cmds: u16,
    /// 2: byte offset in the current filler line or final part.
    col: u16,
    /// 1 byte each: where the dialogue and the trickle stand, and up to
    /// three replies queued behind the one being trickled.
    phase: Phase,
    class: Class,
    flags: u8,
    body: BodyScan,
    reply: Reply,
    queued: u8,
    queue: [Reply; QUEUE],
    /// 2
    dialogue: Dialogue,
}

/// Where a session's bytes go: the loop's socket, or a test's buffer. Takes
/// what it can and says how much; 0 means "not now" (`WouldBlock`).
pub trait Sink {
    fn send(&mut self, bytes: &[u8]) -> usize;
}

impl Sink for Vec<u8> {
    fn send(&mut self, bytes: &[u8]) -> usize {
        self.extend_from_slice(bytes);
        bytes.len()
    }
}

impl Session {
    /// A new connection: the greeting (or its first line, under a greet
    /// pause) goes out at once; the returned time is the first deadline.
    pub fn new(
        id: u32,
        peer: SocketAddr,
        now: u64,
        set: &Settings,
        out: &mut impl Sink,
    ) -> (Session, u64) {
        Session::start(id, peer, now, set, out, false)
    }

    /// A connection over the limits: told `421` instead of greeted, to be
    /// closed at once. The session exists only for its close record.
    pub fn refused(
        id: u32,
        peer: SocketAddr,
        now: u64,
        set: &Settings,
        out: &mut impl Sink,
    ) -> Session {
        Session::start(id, peer, now, set, out, true).0
    }

    fn start(
        id: u32,
        peer: SocketAddr,
        now: u64,
        set: &Settings,
        out: &mut impl Sink,
        refuse: bool,
    ) -> (Session, u64) {
        let ip = match peer.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let mut s = Session {
            extra: None,
            id,
            born: now as u32,
            mark: 0,
            sent: 0,
            recv: 0,
            peer: Peer {
                ip,
                port: peer.port(),
            },
            line: 0,
            cmds: 0,
            col: 0,
            phase: Phase::Wait,
            class: Class::Unknown,
            flags: 0,
            body: BodyScan::default(),
            reply: Reply::Greeting,
            queued: 0,
            queue: [Reply::Greeting; QUEUE],
            dialogue: Dialogue::default(),
        };
        let mut text = LineBuf::default();
        if refuse {
            smtp::render(Reply::TooMany, &s.ident(set), &mut text);
            s.emit(text.as_slice(), out);
            return (s, now);
        }
        smtp::render(Reply::Greeting, &s.ident(set), &mut text);
        if set.greet_pause > 0 {
            // Postfix postscreen's PREGREET test: a client that talks before
            // the final greeting line is not waiting for us — a machine.
            s.phase = Phase::GreetPause;
            s.mark = set.greet_pause;
            let mut first = LineBuf::default();
            let _ = first.write_all(b"220-");
            let _ = first.write_all(&text.as_slice()[4..]);
            s.emit(first.as_slice(), out);
        } else {
            s.emit(text.as_slice(), out);
        }
        let first = s.deadline_after(now, set);
        (s, first)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn peer(&self) -> SocketAddr {
        let ip = Ipv6Addr::from(self.peer.ip);
        let ip = match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ip),
        };
        SocketAddr::new(ip, self.peer.port)
    }

    pub fn bytes_sent(&self) -> u32 {
        self.sent
    }

    /// How long the connection has been held.
    pub fn age_ms(&self, now: u64) -> u32 {
        self.age(now)
    }

    fn age(&self, now: u64) -> u32 {
        (now as u32).wrapping_sub(self.born)
    }

    /// The absolute time of an age of this session.
    fn at(&self, now: u64, age: u32) -> u64 {
        now + u64::from(age.saturating_sub(self.age(now)))
    }

    fn ident<'a>(&self, set: &'a Settings) -> Ident<'a> {
        Ident {
            hostname: &set.hostname,
            banner: &set.banner,
            queue_id: (u64::from(self.born) << 32 | u64::from(self.id)) ^ u64::from(self.cmds),
        }
    }

    /// A draw from `min..=max`. Hashed from the daemon's secret seed and the
    /// session's moving counters instead of kept as generator state: four
    /// bytes fewer per connection, and just as unpredictable from outside.
    fn random(&self, set: &Settings, (min, max): (u32, u32), salt: u32) -> u32 {
        let pos = u32::from(self.line) << 16 ^ u32::from(self.col) << 4 ^ salt;
        let x = smtp::mix(set.seed ^ self.seed() ^ self.sent.rotate_left(11) ^ smtp::mix(pos));
        min + x % max.saturating_sub(min).saturating_add(1)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn io(&mut self) -> &mut Io {
        self.extra().io.get_or_insert_with(Box::default)
    }

    fn io_ref(&self) -> Option<&Io> {
        self.extra.as_ref().and_then(|e| e.io.as_deref())
    }

    /// Frees the partial-line and output buffers once both are empty, so
    /// no connection keeps a buffer it is not using.
    fn tidy(&mut self) {
        if let Some(e) = self.extra.as_mut() {
            if e.io
                .as_ref()
                .is_some_and(|io| io.line.is_empty() && io.out.is_empty())
            {
                e.io = None;
            }
        }
    }

    /// Replies the socket did not take yet; while any are pending the loop
    /// stops reading this client and waits for it to become writable.
    pub fn pending(&self) -> bool {
        self.io_ref().is_some_and(|io| !io.out.is_empty())
    }

    /// The socket is writable again: send what is pending.
    pub fn flush(&mut self, out: &mut impl Sink) {
        if let Some(io) = self.extra.as_mut().and_then(|e| e.io.as_mut()) {
            let n = out.send(&io.out);
            io.out.drain(..n);
            self.sent = self.sent.wrapping_add(n as u32);
            self.tidy();
        }
    }

    /// Sends whole replies (greeting, a person's answers, a 421) in order:
    /// behind anything pending, else straight out with the rest kept.
    fn emit(&mut self, bytes: &[u8], out: &mut impl Sink) {
        if self.pending() {
            self.io().out.extend_from_slice(bytes);
            return;
        }
        let n = out.send(bytes);
        self.sent = self.sent.wrapping_add(n as u32);
        if n < bytes.len() {
            self.io().out.extend_from_slice(&bytes[n..]);
        }
    }

    /// Bytes from the client. A person's replies go out at once; a machine's
    /// wait for the timer.
    pub fn input(&mut self, bytes: &[u8], now: u64, set: &Settings, out: &mut impl Sink) -> Next {
        self.recv = self.recv.saturating_add(bytes.len() as u32);
        if self.phase == Phase::GreetPause {
            self.flags |= PREGREET;
        }
        let was = self.phase;
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.dialogue.in_data() {
                match self.body.scan(rest) {
                    Some(n) => {
                        rest = &rest[n..];
                        let reply = self.dialogue.end_data();
                        self.answer(reply, now, set, out);
                    }
                    None => break,
                }
                continue;
            }
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.keep_partial(rest, now, set, out);
                break;
            };
            let chunk = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.flags & SKIPPING != 0 {
                self.flags &= !SKIPPING;
                continue;
            }
            let held = match self.extra.as_mut().and_then(|e| e.io.as_mut()) {
                Some(io) if !io.line.is_empty() => Some(std::mem::take(&mut io.line)),
                _ => None,
            };
            let mut joined;
            let whole: &[u8] = match held {
                Some(h) => {
                    joined = h;
                    joined.extend_from_slice(chunk);
                    &joined
                }
                None => chunk,
            };
            // The limit counts the CRLF (RFC 5321 4.5.3.1.4).
            if whole.len() + 2 > MAX_LINE + usize::from(whole.ends_with(b"\r")) {
                self.answer(Reply::LineTooLong, now, set, out);
            } else {
                self.command(whole.strip_suffix(b"\r").unwrap_or(whole), now, set, out);
            }
        }
        self.tidy();
        if self.dialogue.state == smtp::State::Done && self.phase == Phase::Wait {
            return Next::Close(Reason::Quit);
        }
        match (was, self.phase) {
            (Phase::Wait, Phase::Trickle) => Next::At(self.deadline_after(now, set)),
            // A person's reply restarts the idle clock.
            (Phase::Wait, Phase::Wait) if self.class == Class::Human => {
                self.mark = self.age(now);
                Next::At(self.deadline_after(now, set))
            }
            _ => Next::Keep,
        }
    }

    /// Keeps an unfinished line, up to the limit: past it, answer 500 now and
    /// discard the rest of the line as it comes, never buffering it whole.
    fn keep_partial(&mut self, bytes: &[u8], now: u64, set: &Settings, out: &mut impl Sink) {
        if self.flags & SKIPPING != 0 {
            return;
        }
        let held = self.io_ref().map_or(0, |io| io.line.len());
        if held + bytes.len() + 2 > MAX_LINE + 1 {
            if let Some(io) = self.extra.as_mut().and_then(|e| e.io.as_mut()) {
                io.line = Vec::new();
            }
            self.flags |= SKIPPING;
            self.answer(Reply::LineTooLong, now, set, out);
        } else {
            let line = &mut self.io().line;
            // One allocation of the limit's size, never a doubling past it.
            line.reserve_exact(MAX_LINE - line.len());
            line.extend_from_slice(bytes);
        }
    }

    fn command(&mut self, line: &[u8], now: u64, set: &Settings, out: &mut impl Sink) {
        if self.class == Class::Unknown {
            self.classify(now, set);
        }
        let cmd = smtp::parse(line);
        self.cmds = self.cmds.saturating_add(1);
        if self.cmds <= MAX_CMD_RECORDS {
            let word: &[u8] = match cmd.verb {
                Verb::Unknown | Verb::Unoffered => cmd.word,
                v => v.name().as_bytes(),
            };
            Rec::new("cmd")
                .kv("id", self.id)
                .quoted("verb", &word[..word.len().min(16)])
                .quoted("arg", clip(cmd.arg))
                .emit();
        }
        let step = self.dialogue.command(&cmd);
        match step.remember {
            Remember::Nothing => {}
            Remember::Helo => self.extra().set_helo(clip(cmd.arg)),
            Remember::MailFrom => {
                let path = smtp::path_of(cmd.arg, b"FROM:").unwrap_or_default();
                self.extra().set_mail_from(clip(path));
            }
            Remember::Rcpt => self.extra().rcpts += 1,
        }
        if self.dialogue.in_data() {
            self.body = BodyScan::default();
        }
        self.answer(step.reply, now, set, out);
    }

    fn classify(&mut self, now: u64, set: &Settings) {
        let pregreet = self.flags & PREGREET != 0;
        // `mark` is the end of the greeting; under a greet pause a pregreeter
        // speaks before it, and is a machine whatever the clock says.
        let first_reply_ms = self.age(now).saturating_sub(self.mark);
        self.class = if pregreet || first_reply_ms < set.human_threshold {
            Class::Machine
        } else {
            Class::Human
        };
        Rec::new("classify")
            .kv("id", self.id)
            .peer(&self.peer())
            .kv("class", self.class.name())
            .kv("first_reply_ms", first_reply_ms)
            .kv("pregreet", if pregreet { "yes" } else { "no" })
            .emit();
    }

    /// Delivers a reply: to a person at once, to a machine by the trickle —
    /// now if nothing is trickling, else after what is already queued.
    fn answer(&mut self, reply: Reply, now: u64, set: &Settings, out: &mut impl Sink) {
        // A first line too long to be a command still tells man from machine.
        if self.class == Class::Unknown {
            self.classify(now, set);
        }
        if self.class == Class::Human && self.phase == Phase::Wait {
            let mut text = LineBuf::default();
            smtp::render(reply, &self.ident(set), &mut text);
            self.emit(text.as_slice(), out);
            return;
        }
        if self.phase == Phase::Wait {
            self.start_reply(reply, now, set);
        } else if (self.queued as usize) < QUEUE {
            self.queue[self.queued as usize] = reply;
            self.queued += 1;
        }
    }

    fn start_reply(&mut self, reply: Reply, now: u64, set: &Settings) {
        self.reply = reply;
        self.phase = Phase::Trickle;
        self.col = 0;
        let t = self.random(set, set.reply_time, 2);
        self.mark = self.age(now).saturating_add(t);
    }

    /// The connection's timer fired: the greet pause ended, a piece of the
    /// trickle is due, or the session or the wait ran out.
    pub fn timer(&mut self, now: u64, set: &Settings, out: &mut impl Sink) -> Next {
        let age = self.age(now);
        if age >= set.max_session {
            return self.end(Reply::SessionOver, Reason::MaxSession, set, out);
        }
        match self.phase {
            Phase::GreetPause if age < self.mark => {}
            Phase::GreetPause => {
                let mut text = LineBuf::default();
                smtp::render(Reply::Greeting, &self.ident(set), &mut text);
                self.emit(text.as_slice(), out);
                self.phase = Phase::Wait;
                self.next_queued(now, set);
            }
            Phase::Wait if age.wrapping_sub(self.mark) >= set.idle_timeout => {
                return self.end(Reply::Timeout, Reason::Idle, set, out);
            }
            Phase::Wait => {}
            // A client that does not read (a zero window) still costs one
            // write attempt per fire; its position simply does not move.
            Phase::Trickle => {
                let mut text = LineBuf::default();
                smtp::filler_line(self.reply.code(), self.seed(), self.line, &mut text);
                let line = text.as_slice();
                let from = usize::from(self.col);
                let to = (from + set.trickle_bytes as usize).min(line.len());
                let n = out.send(&line[from..to]);
                self.sent = self.sent.wrapping_add(n as u32);
                self.col += n as u16;
                if usize::from(self.col) == line.len() {
                    self.line = self.line.wrapping_add(1);
                    self.col = 0;
                    if age >= self.mark {
                        self.phase = Phase::Final;
                    }
                }
            }
            Phase::Final => {
                let mut text = LineBuf::default();
                smtp::render(self.reply, &self.ident(set), &mut text);
                let text = text.as_slice();
                let n = out.send(&text[usize::from(self.col)..]);
                self.sent = self.sent.wrapping_add(n as u32);
                self.col += n as u16;
                if usize::from(self.col) == text.len() {
                    if self.reply.closes() {
                        return Next::Close(Reason::Quit);
                    }
                    self.phase = Phase::Wait;
                    self.col = 0;
                    self.mark = age;
                    self.next_queued(now, set);
                }
            }
        }
        Next::At(self.deadline_after(now, set))
    }

    /// Ends the session with a 421 of its own: after a half-sent
    /// continuation line, a line end first, so the 421 stands alone.
    pub fn end(
        &mut self,
        reply: Reply,
        reason: Reason,
        set: &Settings,
        out: &mut impl Sink,
    ) -> Next {
        let mut text = LineBuf::default();
        let cut = match self.phase {
            Phase::Trickle | Phase::Final => self.col > 0,
            Phase::GreetPause | Phase::Wait => false,
        };
        if cut {
            if self.phase == Phase::Trickle && self.col < 4 {
                // Finish the code and dash at least: a line of "25" alone
                // would be no reply line at all.
                let mut line = LineBuf::default();
                smtp::filler_line(self.reply.code(), self.seed(), self.line, &mut line);
                let _ = text.write_all(&line.as_slice()[usize::from(self.col)..4]);
            }
            let _ = text.write_all(b"\r\n");
        }
        smtp::render(reply, &self.ident(set), &mut text);
        self.emit(text.as_slice(), out);
        Next::Close(reason)
    }

    /// Selects the filler: fixed for the connection's life, so a line reads
    /// the same however it is cut into pieces.
    fn seed(&self) -> u32 {
        smtp::mix(self.id ^ self.born)
    }

    fn next_queued(&mut self, now: u64, set: &Settings) {
        if self.queued > 0 {
            let reply = self.queue[0];
            self.queue.copy_within(1.., 0);
            self.queued -= 1;
            self.start_reply(reply, now, set);
        }
    }

    /// When the timer should next fire, given the phase; never after the
    /// session's end.
    fn deadline_after(&self, now: u64, set: &Settings) -> u64 {
        let end = self.at(now, set.max_session);
        let due = match self.phase {
            Phase::GreetPause => self.at(now, self.mark),
            Phase::Wait => self.at(now, self.mark.saturating_add(set.idle_timeout)),
            Phase::Trickle | Phase::Final => now + u64::from(self.random(set, set.trickle, 1)),
        };
        due.min(end)
    }

    /// The close record: everything an abuse desk needs about the session.
    pub fn close_record(&self, reason: Reason, now: u64) -> Rec {
        let empty: &[u8] = b"";
        let (helo, mail_from, rcpts) = self
            .extra
            .as_ref()
            .map_or((empty, empty, 0), |e| (e.helo(), e.mail_from(), e.rcpts));
        Rec::new("close")
            .kv("id", self.id)
            .peer(&self.peer())
            .kv("class", self.class.name())
            .kv("duration_ms", self.age(now))
            .kv("bytes_sent", self.sent)
            .kv("bytes_recv", self.recv)
            .kv("reason", reason.name())
            .kv("cmds", self.cmds)
            .quoted("helo", helo)
            .quoted("mail_from", mail_from)
            .kv("rcpt", rcpts)
    }
}

#[cfg(test)]
mod tests {
    //! Grouped by what the client does; every time is explicit (ms).
    use super::*;

    fn set() -> Settings {
        Settings {
            hostname: "mx.test".into(),
            banner: "ESMTP".into(),
            human_threshold: 2000,
            greet_pause: 0,
            trickle: (1000, 2000),
            trickle_bytes: 1,
            reply_time: (10_000, 10_000),
            max_session: 3_600_000,
            idle_timeout: 300_000,
            seed: 7,
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:4000".parse().unwrap()
    }

    fn open(s: &Settings, now: u64) -> (Session, u64, Vec<u8>) {
        let mut out = Vec::new();
        let (sess, due) = Session::new(1, peer(), now, s, &mut out);
        (sess, due, out)
    }

    /// Drives the timer as the loop would, until the reply's final line is
    /// out or `until`; returns the bytes and the time it ended.
    fn trickle(sess: &mut Session, s: &Settings, mut due: u64, until: u64) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        while due <= until {
            match sess.timer(due, s, &mut out) {
                Next::At(t) => {
                    assert!(t > due, "a timer must move forward: {t} after {due}");
                    if sess.phase == Phase::Wait {
                        return (out, due);
                    }
                    due = t;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (out, due)
    }

    /// A cut-price Sink that takes nothing: a client that never reads.
    struct Full;
    impl Sink for Full {
        fn send(&mut self, _: &[u8]) -> usize {
            0
        }
    }

    #[test]
    fn the_session_fits_its_budget() {
        // 64 bytes, so that with its 4-byte socket a Conn is 72.
        assert_eq!(std::mem::size_of::<Session>(), 64);
    }

    #[test]
    fn greeting_at_once_and_idle_deadline() {
        let s = set();
        let (_, due, out) = open(&s, 5_000);
        assert_eq!(out, b"220 mx.test ESMTP\r\n");
        assert_eq!(due, 5_000 + 300_000);
    }

    #[test]
    fn a_fast_client_is_a_machine_and_its_reply_trickles() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let mut out = Vec::new();
        let next = sess.input(b"EHLO bot\r\n", 50, &s, &mut out);
        assert!(out.is_empty(), "nothing at once to a machine");
        assert_eq!(sess.class(), Class::Machine);
        let Next::At(first) = next else {
            panic!("{next:?}")
        };
        assert!((1050..=2050).contains(&first));
        let (bytes, end) = trickle(&mut sess, &s, first, 1_000_000);
        // One byte per fire, 1-2 s apart, and nothing final before 10 s.
        assert!(end >= 10_050, "final line at {end}");
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
        assert!(lines.len() > 5);
        assert!(lines[..lines.len() - 5]
            .iter()
            .all(|l| l.starts_with("250-")));
        assert!(text.ends_with("250-mx.test\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"));
        // Back to waiting: the idle clock runs from the reply's end.
        assert_eq!(sess.deadline_after(end, &s), end + 300_000);
    }

    #[test]
    fn trickle_gaps_stay_in_range_and_vary() {
        let s = Settings {
            reply_time: (1_000_000, 1_000_000),
            ..set()
        };
        let (mut sess, _, _) = open(&s, 0);
        let Next::At(mut due) = sess.input(b"HELO x\r\n", 10, &s, &mut Vec::new()) else {
            panic!()
        };
        let mut gaps = std::collections::HashSet::new();
        for _ in 0..50 {
            let Next::At(t) = sess.timer(due, &s, &mut Vec::new()) else {
                panic!()
            };
            assert!((1000..=2000).contains(&(t - due)), "gap {}", t - due);
            gaps.insert(t - due);
            due = t;
        }
        assert!(gaps.len() > 10, "gaps must be randomised: {gaps:?}");
    }

    #[test]
    fn a_slow_client_is_a_human_and_gets_normal_replies() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let mut out = Vec::new();
        sess.input(b"HELO me\r\n", 2_500, &s, &mut out);
        assert_eq!(sess.class(), Class::Human);
        for line in [
            &b"MAIL FROM:<a@b>\r\n"[..],
            b"RCPT TO:<c@d>\r\n",
            b"DATA\r\n",
            b"Subject: hi\r\n\r\n..dot\r\n.\r\n",
        ] {
            sess.input(line, 3_000, &s, &mut out);
        }
        let next = sess.input(b"QUIT\r\n", 3_000, &s, &mut out);
        assert_eq!(next, Next::Close(Reason::Quit));
        let text = String::from_utf8(out).unwrap();
        let codes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "250", "250", "354", "250", "221"]);
        assert!(text.contains("queued as"));
        let rec = sess.close_record(Reason::Quit, 3_000);
        let line = rec.line();
        assert!(line.contains(" class=human ") && line.contains(" helo=\"me\" "));
        assert!(line.contains(" mail_from=\"a@b\" ") && line.ends_with(" rcpt=1"));
    }

    #[test]
    fn a_pregreeter_is_a_machine_whatever_the_clock() {
        let s = Settings {
            greet_pause: 3000,
            ..set()
        };
        let (mut sess, due, out) = open(&s, 0);
        assert_eq!(out, b"220-mx.test ESMTP\r\n");
        assert_eq!(due, 3000);
        // It speaks before the final line, slowly enough to pass for a person.
        let next = sess.input(b"EHLO bot\r\n", 2_900, &s, &mut Vec::new());
        assert_eq!(next, Next::Keep);
        assert_eq!(sess.class(), Class::Machine);
        let mut out = Vec::new();
        let Next::At(t) = sess.timer(3000, &s, &mut out) else {
            panic!()
        };
        assert_eq!(out, b"220 mx.test ESMTP\r\n");
        // Its queued EHLO now trickles.
        assert!(t > 3000 && sess.phase == Phase::Trickle);
    }

    #[test]
    fn a_patient_client_under_greet_pause_is_judged_from_the_final_line() {
        let s = Settings {
            greet_pause: 3000,
            ..set()
        };
        let (mut sess, _, _) = open(&s, 0);
        sess.timer(3000, &s, &mut Vec::new());
        // 2.5 s after the final line, though 5.5 s after the first.
        sess.input(b"HELO me\r\n", 5_500, &s, &mut Vec::new());
        assert_eq!(sess.class(), Class::Human);
    }

    #[test]
    fn lines_are_assembled_across_reads_and_bare_lf_works() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let mut out = Vec::new();
        sess.input(b"HE", 3_000, &s, &mut out);
        sess.input(b"LO x", 3_000, &s, &mut out);
        assert!(out.is_empty());
        sess.input(b"\nNOOP\n", 3_000, &s, &mut out);
        assert_eq!(out, b"250 mx.test\r\n250 2.0.0 Ok\r\n");
    }

    #[test]
    fn an_overlong_line_is_answered_once_and_never_buffered() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let mut out = Vec::new();
        sess.input(b"HELO me\r\n", 3_000, &s, &mut out);
        out.clear();
        for _ in 0..100 {
            sess.input(&[b'A'; 100], 3_000, &s, &mut out);
            let held = sess.io_ref().map_or(0, |io| io.line.capacity());
            assert!(held <= MAX_LINE, "held {held}");
        }
        assert_eq!(out, b"500 5.5.0 Error: line too long\r\n");
        sess.input(b"\r\nNOOP\r\n", 3_000, &s, &mut out);
        assert!(out.ends_with(b"500 5.5.0 Error: line too long\r\n250 2.0.0 Ok\r\n"));
        // Exactly at the limit is fine: 510 bytes and CRLF.
        out.clear();
        let mut line = b"NOOP ".to_vec();
        line.resize(510, b'x');
        line.extend_from_slice(b"\r\n");
        sess.input(&line, 3_000, &s, &mut out);
        assert_eq!(out, b"250 2.0.0 Ok\r\n");
    }

    #[test]
    fn a_client_that_never_reads_costs_no_buffer_and_loses_no_byte() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let Next::At(due) = sess.input(b"EHLO bot\r\n", 10, &s, &mut Vec::new()) else {
            panic!()
        };
        for i in 0..20 {
            assert!(matches!(
                sess.timer(due + i * 2000, &s, &mut Full),
                Next::At(_)
            ));
        }
        assert!(sess.io_ref().is_none());
        // When it reads again, the reply resumes from its first byte.
        let mut out = Vec::new();
        sess.timer(due + 50_000, &s, &mut out);
        assert_eq!(out, b"2");
    }

    #[test]
    fn pipelined_commands_to_a_machine_queue_and_quit_closes_after_its_reply() {
        let s = Settings {
            reply_time: (0, 0),
            ..set()
        };
        let (mut sess, _, _) = open(&s, 0);
        let Next::At(due) = sess.input(b"HELO a\r\nNOOP\r\nQUIT\r\n", 10, &s, &mut Vec::new())
        else {
            panic!()
        };
        let mut out = Vec::new();
        let mut t = due;
        let reason = loop {
            match sess.timer(t, &s, &mut out) {
                Next::At(n) => t = n,
                Next::Close(r) => break r,
                Next::Keep => panic!(),
            }
        };
        assert_eq!(reason, Reason::Quit);
        let text = String::from_utf8(out).unwrap();
        let finals: Vec<&str> = text.lines().filter(|l| l.as_bytes()[3] == b' ').collect();
        assert_eq!(finals, ["250 mx.test", "250 2.0.0 Ok", "221 2.0.0 Bye"]);
    }

    #[test]
    fn the_session_ends_at_max_session_with_421() {
        let s = Settings {
            max_session: 60_000,
            ..set()
        };
        let (mut sess, _, _) = open(&s, 0);
        let Next::At(mut t) = sess.input(b"EHLO bot\r\n", 10, &s, &mut Vec::new()) else {
            panic!()
        };
        let mut out = Vec::new();
        loop {
            match sess.timer(t, &s, &mut out) {
                Next::At(n) => {
                    assert!(n <= 60_000);
                    t = n;
                }
                Next::Close(r) => {
                    assert_eq!(r, Reason::MaxSession);
                    break;
                }
                Next::Keep => panic!(),
            }
        }
        assert_eq!(t, 60_000);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("\r\n421 4.7.0 mx.test Error: session too long, closing\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_421_after_a_line_cut_in_its_code_completes_the_code_first() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let Next::At(due) = sess.input(b"EHLO bot\r\n", 10, &s, &mut Vec::new()) else {
            panic!()
        };
        let mut out = Vec::new();
        sess.timer(due, &s, &mut out);
        assert_eq!(out, b"2");
        sess.end(Reply::ShuttingDown, Reason::Shutdown, &s, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "250-\r\n421 4.3.2 mx.test Service shutting down\r\n");
    }

    #[test]
    fn a_silent_client_is_closed_when_idle() {
        let s = set();
        let (mut sess, due, _) = open(&s, 0);
        let mut out = Vec::new();
        assert_eq!(sess.timer(due, &s, &mut out), Next::Close(Reason::Idle));
        assert!(out.starts_with(b"421 4.4.2"));
        assert_eq!(sess.class().name(), "machine");
    }

    #[test]
    fn nul_and_binary_bytes_are_just_unknown_commands() {
        let s = set();
        let (mut sess, _, _) = open(&s, 0);
        let mut out = Vec::new();
        sess.input(b"HELO me\r\n", 3_000, &s, &mut out);
        sess.input(b"\x00\xff\x1b[2J\r\n", 3_000, &s, &mut out);
        assert!(out.ends_with(b"500 5.5.2 Error: command not recognized\r\n"));
    }
}
