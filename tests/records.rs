//! The records an abuse desk reads: one accept and one close per connection,
//! whatever ends it, with every field, and nothing a client sends can forge,
//! break or colour a line.

mod common;

use common::{ms, outside_quotes, Daemon, CLOSE_KEYS, HOST, WAIT};
use std::collections::{HashMap, HashSet};

#[test]
fn a_reset_in_the_middle_of_a_trickle_closes_once() {
    let d = Daemon::start(&[
        "--trickle",
        "20ms-30ms",
        "--trickle-bytes",
        "1",
        "--reply-time",
        "5s",
    ]);
    let mut c = d.machine();
    c.send(b"EHLO bot.example\r\n");
    // Some of the trickle has come: the reply is in the middle of a line.
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(c.chunk(WAIT));
    }
    assert!(got.starts_with(b"250"), "{got:?}");
    let id = d.id_of(&c);
    c.reset();
    let close = d.close_of(&id);
    let reason = close.at("reason");
    assert!(
        reason == "reset" || reason == "client_closed",
        "{}",
        close.line
    );
    assert_eq!(close.at("class"), "machine");
    // The daemon goes on trickling to others.
    let mut other = d.machine();
    other.send(b"HELO other.example\r\n");
    let first = other.chunk(WAIT);
    assert!(first.starts_with(b"2"), "{first:?}");
    // Several trickle gaps later, still one close record for the reset one.
    std::thread::sleep(ms(200));
    let records = d.stop();
    let closes = records
        .iter()
        .filter(|r| r.is("close") && r.get("id") == Some(&id))
        .count();
    assert_eq!(closes, 1);
}

#[test]
fn every_connection_has_an_accept_and_a_complete_close() {
    const N: usize = 50;
    let d = Daemon::start(&[
        "--human-threshold",
        "300ms",
        "--trickle",
        "20ms-40ms",
        "--reply-time",
        "100ms-200ms",
        "--max-per-ip",
        "0",
    ]);
    // Four kinds, round robin: a silent client, a machine that says EHLO and
    // waits, a machine that says EHLO and QUIT at once and hangs up, and a
    // person who says HELO and MAIL after a pause.
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = d.machine();
        match i % 4 {
            1 => c.send(format!("EHLO bot{i}.example\r\n").as_bytes()),
            2 => c.send(format!("EHLO hit{i}.example\r\nQUIT\r\n").as_bytes()),
            _ => {}
        }
        clients.push(c);
    }
    std::thread::sleep(ms(400));
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 4 == 3 {
            c.send(format!("HELO person{i}.example\r\nMAIL FROM:<p{i}@x.example>\r\n").as_bytes());
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        match i % 4 {
            2 => {
                // The machine's QUIT is trickled too, then the line closes.
                let rest = c.eof_in(WAIT);
                assert!(rest.ends_with(b"221 2.0.0 Bye\r\n"), "{rest:?}");
            }
            3 => {
                assert_eq!(c.line(), format!("250 {HOST}"));
                assert_eq!(c.line(), "250 2.1.0 Ok");
            }
            _ => {}
        }
    }
    // Every client was accepted (each read its greeting), so each must be
    // closed, by the daemon or at shutdown.
    let peers: HashMap<String, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.local.to_string(), i))
        .collect();
    let records = d.stop();
    drop(clients);

    let accepts: Vec<_> = records.iter().filter(|r| r.is("accept")).collect();
    let closes: Vec<_> = records.iter().filter(|r| r.is("close")).collect();
    assert_eq!(accepts.len(), N);
    assert_eq!(closes.len(), N);
    let ids: HashSet<&str> = accepts.iter().map(|r| r.at("id")).collect();
    assert_eq!(ids.len(), N, "ids are unique");
    let classified: HashMap<&str, &str> = records
        .iter()
        .filter(|r| r.is("classify"))
        .map(|r| (r.at("id"), r.at("class")))
        .collect();
    for r in &closes {
        for key in CLOSE_KEYS {
            assert!(r.get(key).is_some(), "no {key}: {}", r.line);
        }
        for key in ["duration_ms", "bytes_sent", "bytes_recv", "cmds", "rcpt"] {
            r.num(key);
        }
        let i = *peers
            .get(r.at("peer"))
            .unwrap_or_else(|| panic!("not our client: {}", r.line));
        let id = r.at("id");
        let (class, reason, helo, cmds) = match i % 4 {
            0 => ("machine", "shutdown", String::new(), 0),
            1 => ("machine", "shutdown", format!("bot{i}.example"), 1),
            2 => ("machine", "quit", format!("hit{i}.example"), 2),
            _ => ("human", "shutdown", format!("person{i}.example"), 2),
        };
        assert_eq!(r.at("class"), class, "client {i}: {}", r.line);
        assert_eq!(r.at("reason"), reason, "client {i}: {}", r.line);
        assert_eq!(r.at("helo"), helo, "client {i}: {}", r.line);
        assert_eq!(r.num("cmds"), cmds, "client {i}: {}", r.line);
        assert_eq!(r.num("rcpt"), 0, "client {i}: {}", r.line);
        let from = if i % 4 == 3 {
            format!("p{i}@x.example")
        } else {
            String::new()
        };
        assert_eq!(r.at("mail_from"), from, "client {i}: {}", r.line);
        assert!(r.num("bytes_sent") >= 19, "the greeting: {}", r.line);
        assert_eq!(
            classified.get(id).copied(),
            (i % 4 != 0).then_some(class),
            "client {i}'s classify record"
        );
    }
}

#[test]
fn what_a_client_says_cannot_forge_or_break_a_record() {
    let d = Daemon::start(&["--human-threshold", "300ms"]);
    let mut c = d.human(ms(500));
    let evil: &[u8] = b"a\rb\x1b[31mred\"q\\ event=close peer=1.2.3.4 \xc3\xa9\tz";
    c.send(&[b"HELO ", evil, b"\r\n"].concat());
    assert_eq!(c.line(), format!("250 {HOST}"));
    c.send(&[b"MAIL FROM:<", evil, b">\r\n"].concat());
    assert_eq!(c.line(), "250 2.1.0 Ok");
    c.send(b"QUIT\r\n");
    assert_eq!(c.line(), "221 2.0.0 Bye");
    c.eof_in(WAIT);
    let id = d.id_of(&c);
    // stop() has already held every line to printable ASCII.
    let records = d.stop();

    let closes: Vec<_> = records.iter().filter(|r| r.is("close")).collect();
    assert_eq!(closes.len(), 1, "one connection, one close record");
    let close = closes[0];
    assert_eq!(close.at("id"), id);
    assert_eq!(close.count("event"), 1);
    assert_eq!(close.count("peer"), 1);
    assert_eq!(close.at("peer"), c.local.to_string());
    assert_eq!(close.bytes("helo"), evil);
    assert_eq!(close.bytes("mail_from"), evil);
    let helo_cmd = records
        .iter()
        .find(|r| r.is("cmd") && r.get("verb") == Some("HELO"))
        .unwrap();
    assert_eq!(helo_cmd.bytes("arg"), evil);
    for r in &records {
        let text = r.line.trim_end_matches('\n');
        assert!(
            !text.contains(['\x1b', '\r', '\n']),
            "raw control in {text:?}"
        );
        assert!(
            !outside_quotes(text).contains("1.2.3.4"),
            "a forged key in {text:?}"
        );
    }
}
