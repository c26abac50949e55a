//! What a client hears: the tarpit's trickle for a machine, an ordinary mail
//! server for a person, the pregreet test, and lines that are odd (bare LF,
//! overlong, binary).

mod common;

use common::{ms, Daemon, HOST, WAIT};
use std::time::{Duration, Instant};

/// The final part of every EHLO reply, as a person gets it.
const EHLO_FINAL: [&str; 5] = [
    "250-mx.test",
    "250-SIZE 10240000",
    "250-8BITMIME",
    "250-ENHANCEDSTATUSCODES",
    "250 SMTPUTF8",
];

/// How long a person's reply may take: immediate, with room for a busy host.
const PROMPT: Duration = Duration::from_millis(200);

#[test]
fn a_machine_gets_its_reply_a_byte_at_a_time() {
    let d = Daemon::start(&[
        "--trickle",
        "50ms-60ms",
        "--trickle-bytes",
        "1",
        "--reply-time",
        "2s",
    ]);
    let mut c = d.machine();
    let t0 = Instant::now();
    c.send(b"EHLO bot.example\r\n");
    // Every byte with the time it arrived (as read, so bytes that came
    // together share a time).
    let mut bytes: Vec<(u8, Duration)> = Vec::new();
    let mut reads = Vec::new();
    while !bytes
        .iter()
        .map(|b| b.0)
        .collect::<Vec<_>>()
        .ends_with(b"250 SMTPUTF8\r\n")
    {
        let chunk = c.chunk(WAIT);
        assert!(!chunk.is_empty(), "closed before the reply ended");
        let at = t0.elapsed();
        reads.push(chunk.len());
        bytes.extend(chunk.into_iter().map(|b| (b, at)));
    }
    // One byte per gap of at least 50ms: the 20th byte comes 20 gaps after
    // the command. The daemon's clock counts whole milliseconds, which may
    // cut one short, hence the 10ms of slack.
    let t20 = bytes[19].1;
    assert!(t20 >= ms(20 * 50 - 10), "20 bytes in {t20:?}");
    assert!(
        t20 < ms(4000),
        "20 bytes took {t20:?}: not a 50-60ms trickle"
    );
    let first_reads = reads
        .iter()
        .scan(0, |sum, n| {
            *sum += n;
            Some(*sum)
        })
        .take_while(|&sum| sum < 20)
        .count()
        + 1;
    assert!(
        first_reads >= 10,
        "the first 20 bytes came in {first_reads} reads: {reads:?}"
    );

    // Split into lines, each with the time of its first byte.
    let mut lines: Vec<(String, Duration)> = Vec::new();
    let mut cur = Vec::new();
    let mut start = Duration::ZERO;
    for &(b, at) in &bytes {
        if cur.is_empty() {
            start = at;
        }
        cur.push(b);
        if b == b'\n' {
            let text = String::from_utf8(std::mem::take(&mut cur)).expect("ASCII");
            let text = text.strip_suffix("\r\n").expect("CRLF").to_owned();
            lines.push((text, start));
        }
    }
    let n = lines.len();
    assert!(n > EHLO_FINAL.len(), "no filler: {lines:?}");
    let (filler, last) = lines.split_at(n - EHLO_FINAL.len());
    for (l, _) in filler {
        assert!(l.starts_with("250-"), "a filler line: {l:?}");
        assert!(!l.contains(HOST), "filler mentions the host: {l:?}");
    }
    let last_text: Vec<&str> = last.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(last_text, EHLO_FINAL);
    // The final part waits for the reply time, counted from the command.
    for (l, at) in last {
        assert!(*at >= ms(2000 - 5), "{l:?} came after {at:?}, before 2s");
    }
    for (l, _) in &lines[..n - 1] {
        assert_eq!(l.as_bytes()[3], b'-', "a continuation line: {l:?}");
    }

    let id = d.id_of(&c);
    d.wait_for(
        "classify",
        &[("id", &id), ("class", "machine"), ("pregreet", "no")],
    );
    let cmd = d.wait_for("cmd", &[("id", &id)]);
    assert_eq!((cmd.at("verb"), cmd.at("arg")), ("EHLO", "bot.example"));
    let got = c.got;
    drop(c);
    let close = d.close_of(&id);
    assert_eq!(close.at("reason"), "client_closed");
    assert_eq!(close.at("class"), "machine");
    assert_eq!(close.at("helo"), "bot.example");
    assert_eq!(close.num("bytes_sent"), got as u64);
    assert_eq!(close.num("bytes_recv"), 18);
    d.stop();
}

#[test]
fn a_person_gets_a_fast_ordinary_dialogue() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    assert_eq!(c.cmd("HELO client.example", PROMPT), format!("250 {HOST}"));
    assert_eq!(
        c.cmd("MAIL FROM:<alice@client.example>", PROMPT),
        "250 2.1.0 Ok"
    );
    assert_eq!(c.cmd("RCPT TO:<bob@mx.test>", PROMPT), "250 2.1.5 Ok");
    assert_eq!(c.cmd("DATA", PROMPT), "354 End data with <CR><LF>.<CR><LF>");
    // A dot-stuffed line and a line holding a dot after text are body, not
    // the end: nothing may answer them.
    c.send(b"Subject: test\r\n\r\n..x\r\n.y\r\nlast line\r\n");
    c.quiet_for(ms(150));
    c.send(b".\r\n");
    let t0 = Instant::now();
    let queued = c.line();
    assert!(t0.elapsed() < PROMPT, "queued after {:?}", t0.elapsed());
    assert!(
        queued.starts_with("250 2.0.0 Ok: queued as "),
        "after the dot: {queued:?}"
    );
    assert_eq!(c.cmd("QUIT", PROMPT), "221 2.0.0 Bye");
    assert_eq!(c.eof_in(WAIT), b"", "nothing after 221");

    let id = d.id_of(&c);
    let class = d.wait_for("classify", &[("id", &id)]);
    assert_eq!(class.at("class"), "human");
    assert_eq!(class.at("pregreet"), "no");
    assert!(class.num("first_reply_ms") >= 450, "{}", class.line);
    let close = d.close_of(&id);
    assert_eq!(close.at("class"), "human");
    assert_eq!(close.at("reason"), "quit");
    assert_eq!(close.at("helo"), "client.example");
    assert_eq!(close.at("mail_from"), "alice@client.example");
    assert_eq!(close.num("rcpt"), 1);
    assert_eq!(close.num("cmds"), 5);
    assert_eq!(close.num("bytes_sent"), c.got as u64);
    assert_eq!(close.num("bytes_recv"), c.sent as u64);
    let verbs: Vec<String> = d
        .records_of("cmd")
        .iter()
        .map(|r| r.at("verb").to_owned())
        .collect();
    assert_eq!(verbs, ["HELO", "MAIL", "RCPT", "DATA", "QUIT"]);
    d.stop();
}

#[test]
fn pregreet_catches_a_machine_and_spares_a_patient_client() {
    let d = Daemon::start(&[
        "--greet-pause",
        "500ms",
        "--human-threshold",
        "300ms",
        "--trickle",
        "20ms-30ms",
        "--reply-time",
        "100ms",
    ]);
    // The impatient one talks after the first greeting line.
    let t0 = Instant::now();
    let mut bot = d.connect();
    assert_eq!(bot.line(), format!("220-{HOST} ESMTP"));
    bot.send(b"EHLO bot.example\r\n");
    // The patient one waits for the final greeting line.
    let t1 = Instant::now();
    let mut person = d.connect();
    assert_eq!(person.line(), format!("220-{HOST} ESMTP"));
    assert_eq!(person.line(), format!("220 {HOST} ESMTP"));
    assert!(
        t1.elapsed() >= ms(495),
        "final 220 after {:?}",
        t1.elapsed()
    );

    let bot_id = d.id_of(&bot);
    let class = d.wait_for("classify", &[("id", &bot_id)]);
    assert_eq!(class.at("class"), "machine", "{}", class.line);
    assert_eq!(class.at("pregreet"), "yes", "{}", class.line);
    // It still gets its greeting, after the pause, and then a tarpitted reply.
    assert_eq!(bot.line(), format!("220 {HOST} ESMTP"));
    assert!(
        t0.elapsed() >= ms(495),
        "final 220 after {:?}",
        t0.elapsed()
    );
    let reply = bot.reply_in(WAIT);
    assert!(reply.len() > EHLO_FINAL.len(), "not tarpitted: {reply:?}");
    assert!(reply.ends_with(&EHLO_FINAL.map(String::from)), "{reply:?}");

    std::thread::sleep(ms(500));
    assert_eq!(
        person.cmd("HELO person.example", PROMPT),
        format!("250 {HOST}")
    );
    let person_id = d.id_of(&person);
    let class = d.wait_for("classify", &[("id", &person_id)]);
    assert_eq!(class.at("class"), "human", "{}", class.line);
    assert_eq!(class.at("pregreet"), "no", "{}", class.line);
    d.stop();
}

#[test]
fn bare_lf_ends_a_line_for_a_person() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    c.send(b"HELO x\n");
    assert_eq!(c.line(), format!("250 {HOST}"));
    c.send(b"MAIL FROM:<a@b.example>\n");
    assert_eq!(c.line(), "250 2.1.0 Ok");
    c.send(b"QUIT\n");
    assert_eq!(c.line(), "221 2.0.0 Bye");
    c.eof_in(WAIT);
    let close = d.close_of(&d.id_of(&c));
    assert_eq!(close.at("helo"), "x");
    assert_eq!(close.at("mail_from"), "a@b.example");
    assert_eq!(close.at("reason"), "quit");
    d.stop();
}

#[test]
fn an_overlong_line_gets_500_at_once_and_the_line_after_it_works() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut other = d.connect();
    let mut c = d.human(ms(500));
    assert_eq!(c.cmd("HELO client.example", PROMPT), format!("250 {HOST}"));
    // 10 kB and no line end: answered before the line ends.
    c.send(&[b'A'; 10 * 1024]);
    let t0 = Instant::now();
    assert_eq!(c.line(), "500 5.5.0 Error: line too long");
    assert!(t0.elapsed() < ms(500), "500 after {:?}", t0.elapsed());
    // The daemon still serves others meanwhile.
    other.expect_line(&format!("220 {HOST} ESMTP"));
    assert_eq!(
        other.cmd("HELO other.example", PROMPT),
        format!("250 {HOST}")
    );
    // The line's end is not a second command; the next line is.
    c.send(b"AAAA\r\n");
    c.quiet_for(ms(150));
    assert_eq!(c.cmd("HELO again.example", PROMPT), format!("250 {HOST}"));
    assert_eq!(c.cmd("QUIT", PROMPT), "221 2.0.0 Bye");
    c.eof_in(WAIT);
    let close = d.close_of(&d.id_of(&c));
    assert_eq!(close.num("bytes_recv"), c.sent as u64);
    assert!(close.num("bytes_recv") > 10 * 1024, "{}", close.line);
    assert_eq!(close.num("bytes_sent"), c.got as u64);
    assert_eq!(close.at("helo"), "again.example");
    assert_eq!(close.num("cmds"), 3, "the long line is no command");
    d.stop();
}

#[test]
fn a_line_of_513_bytes_is_too_long_and_512_is_not() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    // RFC 5321 4.5.3.1.4: 512 bytes with the CRLF.
    let arg = |len: usize| "x".repeat(len - "NOOP \r\n".len());
    assert_eq!(c.cmd(&format!("NOOP {}", arg(512)), PROMPT), "250 2.0.0 Ok");
    assert_eq!(
        c.cmd(&format!("NOOP {}", arg(513)), PROMPT),
        "500 5.5.0 Error: line too long"
    );
    assert_eq!(c.cmd("NOOP", PROMPT), "250 2.0.0 Ok");
    d.stop();
}

#[test]
fn a_machine_gets_its_line_too_long_trickled() {
    let d = Daemon::start(&[
        "--trickle",
        "10ms-20ms",
        "--trickle-bytes",
        "4",
        "--reply-time",
        "300ms",
    ]);
    let mut c = d.machine();
    c.send(b"EHLO bot.example\r\n");
    let reply = c.reply_in(WAIT);
    assert!(reply.ends_with(&EHLO_FINAL.map(String::from)), "{reply:?}");
    let t0 = Instant::now();
    c.send(format!("MAIL FROM:<{}@x>\r\n", "a".repeat(600)).as_bytes());
    let reply = c.reply_in(WAIT);
    assert!(t0.elapsed() >= ms(295), "reply after {:?}", t0.elapsed());
    let (last, filler) = reply.split_last().unwrap();
    assert_eq!(last, "500 5.5.0 Error: line too long");
    assert!(!filler.is_empty(), "not trickled: {reply:?}");
    assert!(filler.iter().all(|l| l.starts_with("500-")), "{reply:?}");
    d.stop();
}

#[test]
fn an_overlong_first_line_classifies_the_client() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    c.send(format!("HELO {}\r\n", "h".repeat(600)).as_bytes());
    let t0 = Instant::now();
    let reply = c.reply_in(WAIT);
    assert_eq!(reply, ["500 5.5.0 Error: line too long"]);
    assert!(t0.elapsed() < PROMPT, "500 after {:?}", t0.elapsed());
    let id = d.id_of(&c);
    let class = d.wait_for("classify", &[("id", &id)]);
    assert_eq!(class.at("class"), "human");
    d.stop();
}

#[test]
fn binary_in_a_command_is_answered_and_escaped() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    let verb: &[u8] = b"X\x00Y\xff\x7f";
    let arg: &[u8] = b"\x01arg\x00\x1b[0m\xc3\xa9";
    c.send(&[verb, b" ", arg, b"\r\n"].concat());
    assert_eq!(c.line(), "500 5.5.2 Error: command not recognized");
    // NULs in a HELO name do not cut it short.
    c.send(b"HELO a\x00b\r\n");
    assert_eq!(c.line(), format!("250 {HOST}"));
    assert_eq!(c.cmd("QUIT", PROMPT), "221 2.0.0 Bye");
    c.eof_in(WAIT);

    let id = d.id_of(&c);
    let close = d.close_of(&id);
    assert_eq!(close.bytes("helo"), b"a\x00b");
    assert!(close.line.contains(r#"helo="a\x00b""#), "{}", close.line);
    let cmds = d.records_of("cmd");
    let first = cmds.iter().find(|r| r.get("id") == Some(&id)).unwrap();
    assert_eq!(first.bytes("verb"), verb);
    assert_eq!(first.bytes("arg"), arg);
    assert!(
        first.line.contains(r#"verb="X\x00Y\xff\x7f""#),
        "{}",
        first.line
    );
    // And the daemon is still well: another client is greeted.
    d.machine();
    d.stop();
}
