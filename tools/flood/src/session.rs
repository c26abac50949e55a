//! One client's side of the SMTP dialogue, as a pure state machine.
//!
//! No I/O and no clock: received bytes and the time come in as arguments,
//! and `step` says what to do next (write the unsent part of a command, wait,
//! or close). The loop in `flood.rs` owns the socket and the timers.
//!
//! The script is fixed: EHLO, MAIL, RCPT × k, DATA, a small body ending in
//! `.`, QUIT. Each command waits for the final line of the previous reply
//! (RFC 5321 4.2.1), however long the server takes to trickle the
//! continuation lines before it.

use crate::mix::Behaviour;
use crate::scan::ReplyScanner;

/// How far a connection got: the last command it sent, or before any, the
/// connection and banner. Ordered; the discriminant indexes tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Established, nothing received yet.
    Connect = 0,
    /// Received some of the banner.
    Banner,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    /// Sent the message body and its terminating `.`.
    Body,
    Quit,
}

impl Stage {
    pub const COUNT: usize = 8;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Connect,
        Stage::Banner,
        Stage::Ehlo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Body,
        Stage::Quit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Body => "body",
            Stage::Quit => "quit",
        }
    }
}

/// How a connection ended. The discriminant indexes tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum End {
    /// The server closed (read returned 0).
    ServerClosed = 0,
    /// The server reset the connection (ECONNRESET).
    ServerReset,
    /// No byte from the server for the stage's timeout.
    ClientTimeout,
    /// `--hold` expired.
    HoldExpired,
    /// `--duration` ran out, or SIGINT/SIGTERM.
    RunEnded,
    /// The client closed after the reply to its QUIT.
    ClientQuit,
    /// The `reset` behaviour did its work (RST mid-reply).
    ClientReset,
    /// Any other I/O error.
    Error,
}

impl End {
    pub const COUNT: usize = 8;
    pub const ALL: [End; End::COUNT] = [
        End::ServerClosed,
        End::ServerReset,
        End::ClientTimeout,
        End::HoldExpired,
        End::RunEnded,
        End::ClientQuit,
        End::ClientReset,
        End::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            End::ServerClosed => "server_closed",
            End::ServerReset => "server_reset",
            End::ClientTimeout => "client_timeout",
            End::HoldExpired => "hold_expired",
            End::RunEnded => "run_ended",
            End::ClientQuit => "client_quit",
            End::ClientReset => "client_reset",
            End::Error => "error",
        }
    }
}

/// The knobs of the dialogue, shared by every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// RCPT TO commands per message.
    pub rcpts: u16,
    /// A `human`'s pause before each command, ms.
    pub think_ms: u32,
    /// Client timeouts by stage reached, ms: how long without a byte from
    /// the server before giving up.
    pub timeouts: [u32; Stage::COUNT],
}

const MINUTE: u32 = 60_000;

impl Plan {
    /// The RFC 5321 4.5.3.2 client timeouts: initial 220 greeting 5 min,
    /// MAIL 5 min, RCPT 5 min, DATA initiation 2 min, DATA termination
    /// 10 min. EHLO and QUIT are not listed there; they get 5 min like MAIL.
    /// (The 3-minute data block timeout bounds our own writes of the body,
    /// which is small enough to go out in one write.)
    pub fn new(rcpts: u16, think_ms: u32) -> Plan {
        let mut timeouts = [5 * MINUTE; Stage::COUNT];
        timeouts[Stage::Data as usize] = 2 * MINUTE;
        timeouts[Stage::Body as usize] = 10 * MINUTE;
        Plan {
            rcpts,
            think_ms,
            timeouts,
        }
    }

    pub fn timeout(&self, stage: Stage) -> u32 {
        self.timeouts[stage as usize]
    }

    /// The `i`-th command of the script: EHLO, MAIL, RCPT × k, DATA, body,
    /// QUIT; `None` past the end.
    pub fn command(&self, i: u16) -> Option<(Stage, &'static [u8])> {
        let k = self.rcpts;
        Some(match i {
            0 => (Stage::Ehlo, EHLO),
            1 => (Stage::Mail, MAIL),
            i if i < 2 + k => (Stage::Rcpt, RCPT),
            i if i == 2 + k => (Stage::Data, DATA),
            i if i == 3 + k => (Stage::Body, BODY),
            i if i == 4 + k => (Stage::Quit, QUIT),
            _ => return None,
        })
    }

    fn quit_index(&self) -> u16 {
        4 + self.rcpts
    }
}

// The script. `.invalid` (RFC 2606) so nothing here names a real mailbox.
const EHLO: &[u8] = b"EHLO flood.invalid\r\n";
const MAIL: &[u8] = b"MAIL FROM:<flood@flood.invalid>\r\n";
const RCPT: &[u8] = b"RCPT TO:<postmaster@flood.invalid>\r\n";
const DATA: &[u8] = b"DATA\r\n";
const BODY: &[u8] = b"From: <flood@flood.invalid>\r\n\
To: <postmaster@flood.invalid>\r\n\
Subject: smtarpit-flood\r\n\
\r\n\
A test message from smtarpit-flood.\r\n\
.\r\n";
const QUIT: &[u8] = b"QUIT\r\n";

/// What the loop should do next for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write `unsent()` and report what went with `wrote`.
    Write,
    /// Nothing to do until more input or `wake_at`.
    Wait,
    /// Close the connection (with an RST for `End::ClientReset`).
    Close(End),
}

// Session flags.
const WRITING: u8 = 1; // a command is partly unsent
const CLOSING: u8 = 2; // the server said 421: send nothing more
const DONE: u8 = 4; // QUIT was answered
const GOT_BYTE: u8 = 8; // something arrived

/// One client's dialogue state: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// A human speaks again at this time (ms since the run began).
    think_until: u32,
    scanner: ReplyScanner,
    /// Index of the next command of the script to send.
    next_cmd: u16,
    /// Bytes written of the command being sent (`next_cmd - 1`).
    out_off: u16,
    behaviour: u8,
    /// Furthest `Stage` reached.
    stage: u8,
    /// Replies still owed by the server (the banner counts as one).
    awaiting: u8,
    flags: u8,
}

impl Session {
    pub fn new(behaviour: Behaviour) -> Session {
        Session {
            think_until: 0,
            scanner: ReplyScanner::default(),
            next_cmd: 0,
            out_off: 0,
            behaviour: behaviour as u8,
            stage: Stage::Connect as u8,
            awaiting: 1,
            flags: 0,
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        Behaviour::from_index(self.behaviour)
    }

    pub fn stage(&self) -> Stage {
        Stage::ALL[usize::from(self.stage)]
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The connection is up. A pregreeting client speaks at once, before
    /// the banner (what postscreen calls PREGREET).
    pub fn on_connected(&mut self, plan: &Plan) {
        if self.behaviour() == Behaviour::Pregreet {
            self.begin(plan);
        }
    }

    /// Start sending the next command of the script.
    fn begin(&mut self, plan: &Plan) {
        let (stage, _) = plan.command(self.next_cmd).expect("command in script");
        self.next_cmd += 1;
        self.awaiting = self.awaiting.saturating_add(1);
        self.stage = self.stage.max(stage as u8);
        self.out_off = 0;
        self.flags |= WRITING;
    }

    /// Bytes from the server.
    pub fn on_input(&mut self, bytes: &[u8], now: u32, plan: &Plan) {
        if !self.has(GOT_BYTE) {
            self.flags |= GOT_BYTE;
            self.stage = self.stage.max(Stage::Banner as u8);
        }
        for &b in bytes {
            if let Some(code) = self.scanner.feed(b) {
                self.on_reply(code, now, plan);
                if self.has(DONE) {
                    break; // whatever follows the 221 does not matter
                }
            }
        }
    }

    /// A complete reply (its final line) with its code.
    fn on_reply(&mut self, code: u16, now: u32, plan: &Plan) {
        if code == 421 {
            // RFC 5321 3.8: the server is closing the channel. Send nothing
            // more; wait for its close.
            self.flags |= CLOSING;
        }
        if self.awaiting == 0 {
            return; // unsolicited: nothing was asked
        }
        self.awaiting -= 1;
        if self.awaiting > 0 {
            return; // a pregreeter's banner: its EHLO's reply is still owed
        }
        let answered = self
            .next_cmd
            .checked_sub(1)
            .and_then(|i| plan.command(i))
            .map(|(stage, _)| stage);
        match answered {
            // RFC 5321 3.1: after a 554 greeting the client should QUIT.
            None if code / 100 == 5 => self.next_cmd = plan.quit_index(),
            // No 354 to DATA: the body would be read as commands; skip it.
            Some(Stage::Data) if code / 100 != 3 => self.next_cmd = plan.quit_index(),
            Some(Stage::Quit) => self.flags |= DONE,
            _ => {}
        }
        if self.behaviour() == Behaviour::Human {
            self.think_until = now.saturating_add(plan.think_ms);
        }
    }

    /// What to do now.
    pub fn step(&mut self, now: u32, plan: &Plan) -> Step {
        if now >= self.think_until {
            self.think_until = 0; // a pause that is over is no reason to wake
        }
        if self.has(WRITING) {
            return Step::Write;
        }
        let behaviour = self.behaviour();
        if behaviour == Behaviour::Reset && self.scanner.mid_reply() {
            return Step::Close(End::ClientReset);
        }
        if self.has(DONE) {
            return Step::Close(End::ClientQuit);
        }
        if self.has(CLOSING) || behaviour == Behaviour::Silent || self.awaiting > 0 {
            return Step::Wait;
        }
        let Some((stage, _)) = plan.command(self.next_cmd) else {
            return Step::Wait;
        };
        if behaviour == Behaviour::Reset && stage == Stage::Quit {
            // Every reply came whole, so there was no "mid-reply" to reset
            // in: reset instead of saying goodbye.
            return Step::Close(End::ClientReset);
        }
        if now < self.think_until {
            return Step::Wait;
        }
        self.begin(plan);
        Step::Write
    }

    /// The part of the current command not written yet.
    pub fn unsent(&self, plan: &Plan) -> &'static [u8] {
        if !self.has(WRITING) {
            return &[];
        }
        let (_, bytes) = plan
            .command(self.next_cmd - 1)
            .expect("a command is being written");
        &bytes[usize::from(self.out_off)..]
    }

    /// `n` bytes of `unsent()` were written.
    pub fn wrote(&mut self, n: usize, plan: &Plan) {
        let left = self.unsent(plan).len();
        debug_assert!(n <= left, "wrote {n} of {left}");
        if n >= left {
            self.flags &= !WRITING;
        } else {
            self.out_off += n as u16;
        }
    }

    /// The reply to QUIT has come: nothing more to read.
    pub fn finished(&self) -> bool {
        self.has(DONE)
    }

    /// When `step` may have something new to do without input: the end of
    /// a human's pause.
    pub fn wake_at(&self) -> Option<u32> {
        let thinking = self.awaiting == 0 && !self.has(WRITING | CLOSING | DONE);
        (thinking && self.think_until > 0 && self.behaviour() == Behaviour::Human)
            .then_some(self.think_until)
    }

    /// The client is waiting for the server (a reply, the close after a 421,
    /// a write to go through; a silent client always): the stage's timeout
    /// runs. A human thinking is not waiting on anybody.
    pub fn waiting_on_server(&self) -> bool {
        self.awaiting > 0 || self.has(WRITING | CLOSING) || self.behaviour() == Behaviour::Silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &[u8] = b"220 mx ESMTP\r\n";
    const OK: &[u8] = b"250 ok\r\n";

    fn plan() -> Plan {
        Plan::new(2, 3_000)
    }

    /// Run `step` and, while it says Write, take the whole command.
    fn sent(s: &mut Session, now: u32, p: &Plan) -> (Vec<u8>, Step) {
        let mut out = Vec::new();
        loop {
            match s.step(now, p) {
                Step::Write => {
                    let u = s.unsent(p);
                    out.extend_from_slice(u);
                    s.wrote(u.len(), p);
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn size() {
        assert_eq!(std::mem::size_of::<Session>(), 16);
    }

    #[test]
    fn bot_runs_the_script() {
        let p = plan();
        let mut s = Session::new(Behaviour::Bot);
        s.on_connected(&p);
        assert_eq!(
            sent(&mut s, 0, &p),
            (vec![], Step::Wait),
            "waits for the banner"
        );
        assert_eq!(s.stage(), Stage::Connect);
        s.on_input(BANNER, 1, &p);
        assert_eq!(sent(&mut s, 1, &p).0, EHLO);
        // A trickled multi-line reply: nothing until the final line.
        s.on_input(b"250-mx\r\n250-PIPE", 2, &p);
        assert_eq!(sent(&mut s, 2, &p), (vec![], Step::Wait));
        s.on_input(b"LINING\r\n250 8BITMIME\r\n", 3, &p);
        assert_eq!(sent(&mut s, 3, &p).0, MAIL);
        s.on_input(OK, 4, &p);
        assert_eq!(sent(&mut s, 4, &p).0, RCPT);
        assert_eq!(s.stage(), Stage::Rcpt);
        s.on_input(OK, 5, &p);
        assert_eq!(sent(&mut s, 5, &p).0, RCPT, "k = 2");
        s.on_input(OK, 6, &p);
        assert_eq!(sent(&mut s, 6, &p).0, DATA);
        s.on_input(b"354 go ahead\r\n", 7, &p);
        assert_eq!(sent(&mut s, 7, &p).0, BODY);
        assert!(BODY.ends_with(b"\r\n.\r\n"));
        s.on_input(b"250 queued\r\n", 8, &p);
        assert_eq!(sent(&mut s, 8, &p).0, QUIT);
        assert_eq!(s.stage(), Stage::Quit);
        s.on_input(b"221 bye\r\n", 9, &p);
        assert_eq!(s.step(9, &p), Step::Close(End::ClientQuit));
    }

    #[test]
    fn partial_writes_resume() {
        let p = plan();
        let mut s = Session::new(Behaviour::Bot);
        s.on_input(BANNER, 0, &p);
        assert_eq!(s.step(0, &p), Step::Write);
        s.wrote(4, &p);
        assert_eq!(s.unsent(&p), &EHLO[4..]);
        assert_eq!(s.step(0, &p), Step::Write);
        s.wrote(EHLO.len() - 4, &p);
        assert_eq!(s.step(0, &p), Step::Wait);
        assert!(s.waiting_on_server());
    }

    #[test]
    fn data_refused_skips_the_body() {
        let p = Plan::new(1, 0);
        let mut s = Session::new(Behaviour::Bot);
        s.on_input(BANNER, 0, &p);
        for reply in [OK, OK, OK] {
            sent(&mut s, 0, &p);
            s.on_input(reply, 0, &p);
        }
        assert_eq!(sent(&mut s, 0, &p).0, DATA);
        s.on_input(b"554 no valid recipients\r\n", 0, &p);
        assert_eq!(sent(&mut s, 0, &p).0, QUIT);
    }

    #[test]
    fn refused_banner_quits() {
        let p = plan();
        let mut s = Session::new(Behaviour::Bot);
        s.on_input(b"554 go away\r\n", 0, &p);
        assert_eq!(sent(&mut s, 0, &p).0, QUIT);
    }

    #[test]
    fn service_closing_stops_sending() {
        let p = plan();
        let mut s = Session::new(Behaviour::Bot);
        s.on_input(BANNER, 0, &p);
        sent(&mut s, 0, &p);
        s.on_input(b"421 closing\r\n", 0, &p);
        assert_eq!(sent(&mut s, 0, &p), (vec![], Step::Wait));
        assert!(s.waiting_on_server(), "the close is still due");
        assert_eq!(s.stage(), Stage::Ehlo);
    }

    #[test]
    fn human_thinks_before_each_command() {
        let p = plan();
        let mut s = Session::new(Behaviour::Human);
        s.on_input(BANNER, 1_000, &p);
        assert_eq!(s.wake_at(), Some(4_000));
        assert!(!s.waiting_on_server(), "thinking is not waiting");
        assert_eq!(sent(&mut s, 3_999, &p), (vec![], Step::Wait));
        assert_eq!(sent(&mut s, 4_000, &p).0, EHLO);
        assert_eq!(s.wake_at(), None);
        s.on_input(OK, 5_000, &p);
        assert_eq!(sent(&mut s, 7_999, &p).0, b"");
        assert_eq!(sent(&mut s, 8_000, &p).0, MAIL);
    }

    #[test]
    fn pregreet_speaks_first() {
        let p = plan();
        let mut s = Session::new(Behaviour::Pregreet);
        s.on_connected(&p);
        assert_eq!(sent(&mut s, 0, &p).0, EHLO);
        assert_eq!(s.stage(), Stage::Ehlo);
        // The daemon's pregreet test: `220-` first, a pause, then the rest.
        s.on_input(b"220-mx\r\n", 1, &p);
        s.on_input(b"220 mx\r\n", 2, &p);
        assert_eq!(sent(&mut s, 2, &p).0, b"", "the EHLO reply is still owed");
        s.on_input(OK, 3, &p);
        assert_eq!(sent(&mut s, 3, &p).0, MAIL);
    }

    #[test]
    fn silent_never_speaks() {
        let p = plan();
        let mut s = Session::new(Behaviour::Silent);
        s.on_connected(&p);
        s.on_input(BANNER, 0, &p);
        assert_eq!(sent(&mut s, 99_999, &p), (vec![], Step::Wait));
        assert!(s.waiting_on_server());
        assert_eq!(s.stage(), Stage::Banner);
    }

    #[test]
    fn reset_resets_mid_reply() {
        let p = plan();
        let mut s = Session::new(Behaviour::Reset);
        s.on_input(b"220-", 0, &p);
        assert_eq!(s.step(0, &p), Step::Close(End::ClientReset));
        // Whole replies: it follows the script, and resets instead of QUIT.
        let mut s = Session::new(Behaviour::Reset);
        s.on_input(BANNER, 0, &p);
        assert_eq!(sent(&mut s, 0, &p).0, EHLO);
        s.on_input(b"250-mx\r\n", 0, &p);
        assert_eq!(s.step(0, &p), Step::Close(End::ClientReset));
        let mut s = Session::new(Behaviour::Reset);
        s.on_input(BANNER, 0, &p);
        for reply in [OK, OK, OK, OK, b"354 go\r\n" as &[u8], OK] {
            sent(&mut s, 0, &p);
            s.on_input(reply, 0, &p);
        }
        assert_eq!(sent(&mut s, 0, &p), (vec![], Step::Close(End::ClientReset)));
        assert_eq!(s.stage(), Stage::Body);
    }

    #[test]
    fn unsolicited_replies_are_ignored() {
        let p = plan();
        let mut s = Session::new(Behaviour::Bot);
        s.on_input(b"220 a\r\n220 b\r\n", 0, &p);
        assert_eq!(sent(&mut s, 0, &p).0, EHLO);
        assert_eq!(sent(&mut s, 0, &p).0, b"");
    }

    #[test]
    fn rfc_timeouts() {
        let p = plan();
        assert_eq!(p.timeout(Stage::Connect), 300_000);
        assert_eq!(p.timeout(Stage::Mail), 300_000);
        assert_eq!(p.timeout(Stage::Rcpt), 300_000);
        assert_eq!(p.timeout(Stage::Data), 120_000);
        assert_eq!(p.timeout(Stage::Body), 600_000);
    }
}
