//! The SMTP dialogue of RFC 5321, with no I/O and no clock.
//!
//! Lines go in (without their line ending), reply kinds come out. How a reply
//! is delivered — at once to a person, trickled to a machine — is not this
//! module's business; it only decides what the answer is and renders it.
//! The state is a few bytes, so a tarpitted connection can carry it inline.

use std::io::Write;

/// Longest command line we accept, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_LINE: usize = 512;
/// Recipients per message (RFC 5321 4.5.3.1.8 asks servers to take at least 100).
pub const MAX_RCPT: u8 = 100;

/// A command verb (RFC 5321 4.1.1), matched without regard to case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Help,
    Quit,
    /// Commands we know but do not offer: STARTTLS, AUTH, TURN, ...
    Unoffered,
    Unknown,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Help => "HELP",
            Verb::Quit => "QUIT",
            Verb::Unoffered => "UNOFFERED",
            Verb::Unknown => "UNKNOWN",
        }
    }
}

/// A parsed command line: the verb and what follows it, trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    pub verb: Verb,
    /// The first word as the client sent it (for the record of unknown verbs).
    pub word: &'a [u8],
    pub arg: &'a [u8],
}

/// Splits a command line (line ending already removed) into verb and argument.
pub fn parse(line: &[u8]) -> Command<'_> {
    let line = trim(line);
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let (word, rest) = line.split_at(end);
    let verb = match word.to_ascii_uppercase().as_slice() {
        b"HELO" => Verb::Helo,
        b"EHLO" => Verb::Ehlo,
        b"MAIL" => Verb::Mail,
        b"RCPT" => Verb::Rcpt,
        b"DATA" => Verb::Data,
        b"RSET" => Verb::Rset,
        b"NOOP" => Verb::Noop,
        b"VRFY" => Verb::Vrfy,
        b"EXPN" => Verb::Expn,
        b"HELP" => Verb::Help,
        b"QUIT" => Verb::Quit,
        b"STARTTLS" | b"AUTH" | b"TURN" | b"ETRN" | b"ATRN" | b"BDAT" | b"SEND" | b"SOML"
        | b"SAML" => Verb::Unoffered,
        _ => Verb::Unknown,
    };
    Command {
        verb,
        word,
        arg: trim(rest),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// Strips a case-insensitive prefix such as `FROM:`, allowing the space some
/// clients put after the colon.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    Some(trim(&arg[keyword.len()..]))
}

/// The path of `MAIL FROM:<path>` or `RCPT TO:<path>`: the text between the
/// angle brackets, parameters dropped. `<>` (the null sender) is valid.
pub fn path_of<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let rest = strip_keyword(arg, keyword)?;
    if rest.first() == Some(&b'<') {
        let close = rest.iter().position(|&b| b == b'>')?;
        return Some(&rest[1..close]);
    }
    // Many spam engines omit the brackets; a lenient server accepts that.
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    (end > 0).then_some(&rest[..end])
}

/// Every reply this server gives. One byte, so a connection can queue a few.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Greeting,
    Helo,
    Ehlo,
    Ok,
    MailOk,
    RcptOk,
    DataGo,
    Queued,
    Vrfy,
    Help,
    Bye,
    Unrecognized,
    LineTooLong,
    ArgSyntax,
    NotImplemented,
    BadSequence,
    NoRecipients,
    TooManyRecipients,
    Timeout,
    SessionOver,
    TooMany,
    ShuttingDown,
}

impl Reply {
    /// Every reply, in declaration order (a test holds that none is missing).
    pub const ALL: [Reply; 22] = [
        Reply::Greeting,
        Reply::Helo,
        Reply::Ehlo,
        Reply::Ok,
        Reply::MailOk,
        Reply::RcptOk,
        Reply::DataGo,
        Reply::Queued,
        Reply::Vrfy,
        Reply::Help,
        Reply::Bye,
        Reply::Unrecognized,
        Reply::LineTooLong,
        Reply::ArgSyntax,
        Reply::NotImplemented,
        Reply::BadSequence,
        Reply::NoRecipients,
        Reply::TooManyRecipients,
        Reply::Timeout,
        Reply::SessionOver,
        Reply::TooMany,
        Reply::ShuttingDown,
    ];

    /// The three-digit code (RFC 5321 4.2.3), which every line of a
    /// multi-line reply repeats.
    pub fn code(self) -> &'static [u8; 3] {
        match self {
            Reply::Greeting => b"220",
            Reply::Helo
            | Reply::Ehlo
            | Reply::Ok
            | Reply::MailOk
            | Reply::RcptOk
            | Reply::Queued => b"250",
            Reply::Vrfy => b"252",
            Reply::DataGo => b"354",
            Reply::Help => b"214",
            Reply::Bye => b"221",
            Reply::Unrecognized | Reply::LineTooLong => b"500",
            Reply::ArgSyntax => b"501",
            Reply::NotImplemented => b"502",
            Reply::BadSequence => b"503",
            Reply::NoRecipients => b"554",
            Reply::TooManyRecipients => b"452",
            Reply::Timeout | Reply::SessionOver | Reply::TooMany | Reply::ShuttingDown => b"421",
        }
    }

    /// Whether the server closes the connection after this reply.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Reply::Bye | Reply::Timeout | Reply::SessionOver | Reply::TooMany | Reply::ShuttingDown
        )
    }
}

/// What a reply's text needs from the rest of the server.
#[derive(Clone, Copy, Debug)]
pub struct Ident<'a> {
    pub hostname: &'a str,
    pub banner: &'a str,
    /// Shown as `queued as <id>`; unique per message in practice.
    pub queue_id: u64,
}

/// Appends the reply as a person would get it: complete, with CRLF line
/// endings. A tarpitted client gets filler lines first and then exactly these
/// bytes.
pub fn render(reply: Reply, id: &Ident, out: &mut impl Write) {
    let host = id.hostname;
    // Writing into a Vec cannot fail.
    let _ = match reply {
        Reply::Greeting => write!(out, "220 {host} {}\r\n", id.banner),
        Reply::Helo => write!(out, "250 {host}\r\n"),
        // No PIPELINING, STARTTLS or AUTH: a tarpit wants one command at a
        // time, and offers nothing worth stealing (RFC 5321 4.1.1.1).
        Reply::Ehlo => write!(
            out,
            "250-{host}\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
        ),
        Reply::Ok => write!(out, "250 2.0.0 Ok\r\n"),
        Reply::MailOk => write!(out, "250 2.1.0 Ok\r\n"),
        Reply::RcptOk => write!(out, "250 2.1.5 Ok\r\n"),
        Reply::DataGo => write!(out, "354 End data with <CR><LF>.<CR><LF>\r\n"),
        Reply::Queued => write!(out, "250 2.0.0 Ok: queued as {:012X}\r\n", id.queue_id),
        Reply::Vrfy => write!(
            out,
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        ),
        Reply::Help => write!(out, "214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321\r\n"),
        Reply::Bye => write!(out, "221 2.0.0 Bye\r\n"),
        Reply::Unrecognized => write!(out, "500 5.5.2 Error: command not recognized\r\n"),
        Reply::LineTooLong => write!(out, "500 5.5.0 Error: line too long\r\n"),
        Reply::ArgSyntax => write!(out, "501 5.5.4 Syntax error in parameters or arguments\r\n"),
        Reply::NotImplemented => write!(out, "502 5.5.1 Error: command not implemented\r\n"),
        Reply::BadSequence => write!(out, "503 5.5.1 Error: bad sequence of commands\r\n"),
        Reply::NoRecipients => write!(out, "554 5.5.1 Error: no valid recipients\r\n"),
        Reply::TooManyRecipients => write!(out, "452 4.5.3 Error: too many recipients\r\n"),
        Reply::Timeout => write!(out, "421 4.4.2 {host} Error: timeout exceeded\r\n"),
        Reply::SessionOver => write!(out, "421 4.7.0 {host} Error: session too long, closing\r\n"),
        Reply::TooMany => write!(out, "421 4.7.0 {host} Error: too many connections\r\n"),
        Reply::ShuttingDown => write!(out, "421 4.3.2 {host} Service shutting down\r\n"),
    };
}

/// The most bytes any reply renders to: the largest final part a trickle
/// sends at once, after its filler.
pub fn longest_reply(id: &Ident) -> usize {
    let mut text = Vec::new();
    Reply::ALL
        .iter()
        .map(|&r| {
            text.clear();
            render(r, id, &mut text);
            text.len()
        })
        .max()
        .unwrap_or(0)
}

/// Where the dialogue stands (RFC 5321 4.1.4 sequencing).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Greeted; no transaction open.
    Idle,
    /// MAIL accepted.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
    /// Between DATA's 354 and the lone dot.
    Data,
    /// QUIT answered.
    Done,
}

/// What the connection should do about one command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub reply: Reply,
    /// A path the close record keeps: HELO name, MAIL FROM or RCPT TO.
    pub remember: Remember,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remember {
    Nothing,
    Helo,
    MailFrom,
    Rcpt,
}

/// The dialogue's state: two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialogue {
    pub state: State,
    rcpts: u8,
}

impl Default for Dialogue {
    fn default() -> Self {
        Dialogue {
            state: State::Idle,
            rcpts: 0,
        }
    }
}

impl Dialogue {
    pub fn in_data(&self) -> bool {
        self.state == State::Data
    }

    /// Answers one command line. Not to be called in the DATA state: body
    /// lines go to [`Dialogue::end_data`] through the body scanner.
    pub fn command(&mut self, cmd: &Command) -> Step {
        debug_assert!(self.state != State::Data, "command() during DATA");
        let step = |reply| Step {
            reply,
            remember: Remember::Nothing,
        };
        if self.state == State::Done {
            return step(Reply::BadSequence);
        }
        match cmd.verb {
            Verb::Helo | Verb::Ehlo => {
                if cmd.arg.is_empty() {
                    return step(Reply::ArgSyntax);
                }
                // A new greeting resets any transaction (RFC 5321 4.1.4).
                self.reset();
                Step {
                    reply: if cmd.verb == Verb::Ehlo {
                        Reply::Ehlo
                    } else {
                        Reply::Helo
                    },
                    remember: Remember::Helo,
                }
            }
            Verb::Mail => {
                if self.state != State::Idle {
                    return step(Reply::BadSequence);
                }
                if path_of(cmd.arg, b"FROM:").is_none() {
                    return step(Reply::ArgSyntax);
                }
                self.state = State::Mail;
                Step {
                    reply: Reply::MailOk,
                    remember: Remember::MailFrom,
                }
            }
            Verb::Rcpt => {
                if self.state == State::Idle {
                    return step(Reply::BadSequence);
                }
                match path_of(cmd.arg, b"TO:") {
                    None | Some(b"") => step(Reply::ArgSyntax),
                    Some(_) if self.rcpts >= MAX_RCPT => step(Reply::TooManyRecipients),
                    Some(_) => {
                        self.rcpts += 1;
                        self.state = State::Rcpt;
                        Step {
                            reply: Reply::RcptOk,
                            remember: Remember::Rcpt,
                        }
                    }
                }
            }
            Verb::Data => match self.state {
                _ if !cmd.arg.is_empty() => step(Reply::ArgSyntax),
                State::Rcpt => {
                    self.state = State::Data;
                    step(Reply::DataGo)
                }
                State::Mail => step(Reply::NoRecipients),
                _ => step(Reply::BadSequence),
            },
            Verb::Rset => {
                self.reset();
                step(Reply::Ok)
            }
            Verb::Noop => step(Reply::Ok),
            Verb::Vrfy => step(Reply::Vrfy),
            Verb::Help => step(Reply::Help),
            Verb::Quit => {
                self.state = State::Done;
                step(Reply::Bye)
            }
            Verb::Expn | Verb::Unoffered => step(Reply::NotImplemented),
            Verb::Unknown => step(Reply::Unrecognized),
        }
    }

    /// The lone dot came: the message is "queued" (and discarded).
    pub fn end_data(&mut self) -> Reply {
        debug_assert!(self.state == State::Data);
        self.reset();
        Reply::Queued
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.rcpts = 0;
    }
}

/// Finds the end of a message body (RFC 5321 4.1.1.4) in a stream of bytes
/// without buffering lines: a line holding only `.` ends it. Bare LF is taken
/// as a line ending too, as most servers do. One byte of state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyScan {
    at: u8,
}

const BODY_LINE_START: u8 = 0;
const BODY_MID: u8 = 1;
const BODY_DOT: u8 = 2;
const BODY_DOT_CR: u8 = 3;

impl BodyScan {
    /// Scans `bytes`; returns how many were consumed through the end marker
    /// (`Some(n)`), or `None` if the body goes on past them. Dot-stuffed lines
    /// (`..text`) are body text, not the end.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.at = match (self.at, b) {
                (BODY_DOT | BODY_DOT_CR, b'\n') => {
                    self.at = BODY_LINE_START;
                    return Some(i + 1);
                }
                (_, b'\n') => BODY_LINE_START,
                (BODY_LINE_START, b'.') => BODY_DOT,
                (BODY_DOT, b'\r') => BODY_DOT_CR,
                _ => BODY_MID,
            };
        }
        None
    }
}

/// Filler for the continuation lines of a tarpitted reply: plausible text of
/// varied length, so neither the content nor the rhythm gives the tarpit away.
pub static FILLER: &[&str] = &[
    "Checking sender reputation, please wait",
    "Greylisting in progress",
    "Verifying recipient address with upstream",
    "Policy service busy, retrying",
    "DNS lookup in progress",
    "Content scanner warming up",
    "Queue is busy, hold on",
    "SPF check pending",
    "DKIM key fetch pending",
    "Waiting for cluster quorum",
    "Scanning for viruses",
    "Rate limiting in effect, please be patient",
    "Connecting to backend store",
    "Mailbox index rebuilding",
    "Still working",
    "Hold on",
];

/// Writes continuation line `n` of a tarpitted reply with the given code:
/// `250-Text\r\n`. The choice of text depends only on `seed` and `n`, so a
/// connection never stores the reply it is trickling.
pub fn filler_line(code: &[u8; 3], seed: u32, n: u16, out: &mut impl Write) {
    let text = FILLER[(mix(seed ^ u32::from(n).wrapping_mul(0x9E37_79B9)) as usize) % FILLER.len()];
    let _ = out.write_all(code);
    let _ = write!(out, "-{text}\r\n");
}

/// A reply or a line rendered on the stack, so neither the trickle nor a
/// person's reply allocates. Every reply we render fits (the host name is at
/// most 255 bytes); what does not fit is cut, never overflows.
pub struct LineBuf {
    bytes: [u8; 2 * MAX_LINE],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            bytes: [0; 2 * MAX_LINE],
            len: 0,
        }
    }
}

impl LineBuf {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for LineBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 32-bit integer hash (from Chris Wellons's hash-prospector).
pub fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut Dialogue, line: &str) -> Reply {
        d.command(&parse(line.as_bytes())).reply
    }

    #[test]
    fn parse_is_case_insensitive_and_trims() {
        let c = parse(b"  eHlO   mx.example.org  ");
        assert_eq!(c.verb, Verb::Ehlo);
        assert_eq!(c.arg, b"mx.example.org");
        assert_eq!(parse(b"").verb, Verb::Unknown);
        assert_eq!(parse(b"STARTTLS").verb, Verb::Unoffered);
        assert_eq!(parse(b"auth login").verb, Verb::Unoffered);
        assert_eq!(parse(b"XYZZY plugh").word, b"XYZZY");
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_of(b"FROM:<a@b.c> SIZE=10", b"FROM:"),
            Some(&b"a@b.c"[..])
        );
        assert_eq!(path_of(b"from: <>", b"FROM:"), Some(&b""[..]));
        assert_eq!(path_of(b"FROM:a@b.c", b"FROM:"), Some(&b"a@b.c"[..]));
        assert_eq!(path_of(b"FROM:<a@b.c", b"FROM:"), None);
        assert_eq!(path_of(b"TO:<x@y>", b"FROM:"), None);
        assert_eq!(path_of(b"FROM:", b"FROM:"), None);
    }

    #[test]
    fn a_whole_transaction() {
        let mut d = Dialogue::default();
        assert_eq!(run(&mut d, "EHLO bot"), Reply::Ehlo);
        assert_eq!(run(&mut d, "MAIL FROM:<s@x>"), Reply::MailOk);
        assert_eq!(run(&mut d, "RCPT TO:<r@y>"), Reply::RcptOk);
        assert_eq!(run(&mut d, "RCPT TO:<r2@y>"), Reply::RcptOk);
        assert_eq!(run(&mut d, "DATA"), Reply::DataGo);
        assert!(d.in_data());
        assert_eq!(d.end_data(), Reply::Queued);
        assert_eq!(run(&mut d, "MAIL FROM:<s@x>"), Reply::MailOk);
        assert_eq!(run(&mut d, "QUIT"), Reply::Bye);
        assert_eq!(run(&mut d, "NOOP"), Reply::BadSequence);
    }

    #[test]
    fn sequence_errors() {
        let mut d = Dialogue::default();
        assert_eq!(run(&mut d, "RCPT TO:<r@y>"), Reply::BadSequence);
        assert_eq!(run(&mut d, "DATA"), Reply::BadSequence);
        assert_eq!(run(&mut d, "MAIL FROM:<s@x>"), Reply::MailOk);
        assert_eq!(run(&mut d, "MAIL FROM:<s@x>"), Reply::BadSequence);
        assert_eq!(run(&mut d, "DATA"), Reply::NoRecipients);
        assert_eq!(run(&mut d, "RCPT TO:"), Reply::ArgSyntax);
        assert_eq!(run(&mut d, "RCPT FROM:<x>"), Reply::ArgSyntax);
        assert_eq!(run(&mut d, "RSET"), Reply::Ok);
        assert_eq!(d.state, State::Idle);
        assert_eq!(run(&mut d, "HELO"), Reply::ArgSyntax);
        assert_eq!(run(&mut d, "MAIL TO:<x>"), Reply::ArgSyntax);
    }

    #[test]
    fn unknown_and_unoffered() {
        let mut d = Dialogue::default();
        assert_eq!(run(&mut d, "FOO"), Reply::Unrecognized);
        assert_eq!(run(&mut d, "STARTTLS"), Reply::NotImplemented);
        assert_eq!(run(&mut d, "AUTH PLAIN AAAA"), Reply::NotImplemented);
        assert_eq!(run(&mut d, "EXPN staff"), Reply::NotImplemented);
        assert_eq!(run(&mut d, "VRFY root"), Reply::Vrfy);
        assert_eq!(run(&mut d, "HELP"), Reply::Help);
    }

    #[test]
    fn recipient_limit() {
        let mut d = Dialogue::default();
        run(&mut d, "MAIL FROM:<>");
        for _ in 0..MAX_RCPT {
            assert_eq!(run(&mut d, "RCPT TO:<a@b>"), Reply::RcptOk);
        }
        assert_eq!(run(&mut d, "RCPT TO:<a@b>"), Reply::TooManyRecipients);
    }

    #[test]
    fn ehlo_offers_no_starttls_auth_or_pipelining() {
        let mut out = Vec::new();
        let id = Ident {
            hostname: "mx.test",
            banner: "ESMTP",
            queue_id: 7,
        };
        render(Reply::Ehlo, &id, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("250-mx.test\r\n") && text.ends_with("250 SMTPUTF8\r\n"));
        for word in ["STARTTLS", "AUTH", "PIPELINING"] {
            assert!(!text.contains(word), "{text}");
        }
    }

    #[test]
    fn every_reply_renders_lines_under_the_limit_with_its_code() {
        let id = Ident {
            hostname: "h",
            banner: "ESMTP",
            queue_id: u64::MAX,
        };
        // The list is whole: one entry per discriminant, in order.
        for (i, reply) in Reply::ALL.iter().enumerate() {
            assert_eq!(*reply as usize, i);
        }
        assert_eq!(Reply::ALL.len(), Reply::ShuttingDown as usize + 1);
        for reply in Reply::ALL {
            let mut out = Vec::new();
            render(reply, &id, &mut out);
            assert!(out.ends_with(b"\r\n"));
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.len() < MAX_LINE);
                assert_eq!(&line[..3], reply.code());
            }
        }
    }

    #[test]
    fn body_scan_finds_the_lone_dot() {
        let mut s = BodyScan::default();
        assert_eq!(s.scan(b"Subject: x\r\n\r\n..not the end\r\n"), None);
        assert_eq!(s.scan(b".\r\nQUIT\r\n"), Some(3));
        let mut s = BodyScan::default();
        assert_eq!(s.scan(b"a\n.\n"), Some(4));
        // The marker split over reads.
        let mut s = BodyScan::default();
        assert_eq!(s.scan(b"x\r\n."), None);
        assert_eq!(s.scan(b"\r"), None);
        assert_eq!(s.scan(b"\n"), Some(1));
        // A dot mid-line is text.
        let mut s = BodyScan::default();
        assert_eq!(s.scan(b"a.\r\n"), None);
    }

    #[test]
    fn filler_is_a_continuation_line_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..64 {
            let mut out = Vec::new();
            filler_line(b"250", 42, n, &mut out);
            assert!(out.starts_with(b"250-") && out.ends_with(b"\r\n"));
            assert!(out.len() < MAX_LINE);
            seen.insert(out);
        }
        assert!(seen.len() > 4);
    }
}
