//! How connections end: limits on clients, per address, on the session and
//! on silence, and shutdown.

mod common;

use common::{assert_shut_down, ms, Client, Daemon, HOST, SHUTTING_DOWN, WAIT};
use std::net::Ipv4Addr;
use std::time::Instant;

const TOO_MANY: &str = "421 4.7.0 mx.test Error: too many connections";

/// A client that must be refused: a 421 at once, then the end of the stream.
fn expect_refused(c: &mut Client) {
    let t0 = Instant::now();
    assert_eq!(c.line(), TOO_MANY);
    assert_eq!(c.eof_in(WAIT), b"", "closed after the 421");
    assert!(t0.elapsed() < ms(1000), "refused after {:?}", t0.elapsed());
}

#[test]
fn max_clients_refuses_the_one_too_many() {
    let d = Daemon::start(&["--max-clients", "2", "--human-threshold", "300ms"]);
    let a = d.machine();
    let _b = d.machine();
    let mut third = d.connect();
    expect_refused(&mut third);
    let id = d.id_of(&third);
    let close = d.close_of(&id);
    assert_eq!(close.at("reason"), "limit", "{}", close.line);
    assert_eq!(close.at("peer"), third.local.to_string());
    // The two held ones are unharmed; when one goes, a newcomer gets in.
    let a_id = d.id_of(&a);
    drop(a);
    assert_eq!(d.close_of(&a_id).at("reason"), "client_closed");
    let mut c = d.human(ms(400));
    assert_eq!(c.cmd("HELO late.example", ms(200)), format!("250 {HOST}"));
    d.stop();
}

/// The close record counts the 421, not a greeting that was never sent.
#[test]
fn a_refused_clients_close_record_counts_the_421() {
    let d = Daemon::start(&["--max-clients", "1"]);
    let _a = d.machine();
    let mut b = d.connect();
    expect_refused(&mut b);
    let close = d.close_of(&d.id_of(&b));
    assert_eq!(close.num("bytes_sent"), b.got as u64, "{}", close.line);
    d.stop();
}

#[test]
fn max_per_ip_refuses_a_second_client_from_one_address() {
    let d = Daemon::start(&["--max-per-ip", "1"]);
    let first = d.machine();
    let mut second = d.connect();
    expect_refused(&mut second);
    let close = d.close_of(&d.id_of(&second));
    assert_eq!(close.at("reason"), "limit");
    // Another address is admitted.
    let mut elsewhere = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), d.addr());
    assert_eq!(elsewhere.line(), format!("220 {HOST} ESMTP"));
    let id = d.id_of(&elsewhere);
    assert!(
        elsewhere.local.to_string().starts_with("127.0.0.2:"),
        "{}",
        elsewhere.local
    );
    // The first one gone, its address may come again.
    let first_id = d.id_of(&first);
    drop(first);
    assert_eq!(d.close_of(&first_id).at("reason"), "client_closed");
    let mut again = d.connect();
    assert_eq!(again.line(), format!("220 {HOST} ESMTP"));
    let records = d.stop();
    let closes: Vec<_> = records.iter().filter(|r| r.is("close")).collect();
    let reason = |id: &str| {
        closes
            .iter()
            .find(|r| r.at("id") == id)
            .unwrap()
            .at("reason")
    };
    assert_eq!(reason(&id), "shutdown");
    assert_eq!(reason(&d_id(&records, &again)), "shutdown");
}

/// The id of a client's connection from a finished daemon's records.
fn d_id(records: &[common::Record], c: &Client) -> String {
    let peer = c.local.to_string();
    records
        .iter()
        .find(|r| r.is("accept") && r.get("peer") == Some(&peer))
        .expect("accepted")
        .at("id")
        .to_owned()
}

#[test]
fn max_session_ends_a_tarpitted_machine() {
    let d = Daemon::start(&[
        "--max-session",
        "2s",
        "--trickle",
        "30ms-50ms",
        "--trickle-bytes",
        "1",
        "--reply-time",
        "10s",
    ]);
    let t0 = Instant::now();
    let mut c = d.machine();
    c.send(b"EHLO bot.example\r\n");
    let all = c.eof_in(ms(4000));
    let took = t0.elapsed();
    assert!(took >= ms(1995), "closed after {took:?}");
    assert!(took < ms(2800), "closed after {took:?}");
    let text = String::from_utf8(all).unwrap();
    let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    let (last, filler) = lines.split_last().unwrap();
    // The 421 stands on a line of its own, even if a filler line was cut.
    assert_eq!(
        *last,
        format!("421 4.7.0 {HOST} Error: session too long, closing\r\n")
    );
    assert!(!filler.is_empty(), "no trickle before the 421");
    for l in filler {
        assert!(l.starts_with("250-") && l.ends_with("\r\n"), "{l:?}");
    }
    let close = d.close_of(&d.id_of(&c));
    assert_eq!(close.at("reason"), "max_session");
    let dur = close.num("duration_ms");
    assert!((2000..2300).contains(&dur), "{}", close.line);
    assert_eq!(close.num("bytes_sent"), c.got as u64);
    d.stop();
}

#[test]
fn idle_timeout_ends_a_silent_client_and_an_idle_person() {
    let d = Daemon::start(&["--idle-timeout", "1s", "--human-threshold", "300ms"]);
    let t0 = Instant::now();
    let mut silent = d.machine();
    let mut person = d.human(ms(500));
    assert_eq!(person.cmd("HELO p.example", ms(200)), format!("250 {HOST}"));
    let t1 = Instant::now();

    let timeout = format!("421 4.4.2 {HOST} Error: timeout exceeded");
    assert_eq!(silent.line_in(ms(3000)), timeout);
    assert_eq!(silent.eof_in(WAIT), b"");
    let took = t0.elapsed();
    assert!(took >= ms(995) && took < ms(1800), "idle after {took:?}");
    let close = d.close_of(&d.id_of(&silent));
    assert_eq!(close.at("reason"), "idle");
    assert_eq!(close.num("bytes_sent"), silent.got as u64);

    // A person's reply restarted the clock: the 421 comes a second after it,
    // not a second after the greeting.
    assert_eq!(person.line_in(ms(3000)), timeout);
    let took = t1.elapsed();
    assert!(took >= ms(990) && took < ms(1800), "idle after {took:?}");
    assert_eq!(person.eof_in(WAIT), b"");
    let close = d.close_of(&d.id_of(&person));
    assert_eq!(close.at("reason"), "idle");
    assert_eq!(close.at("class"), "human");
    assert_eq!(close.at("helo"), "p.example");
    d.stop();
}

/// Three connections of each kind, then SIGTERM.
fn three_connections(d: &Daemon) -> [Client; 3] {
    let silent = d.machine();
    let mut machine = d.machine();
    machine.send(b"EHLO bot.example\r\n");
    // Part of the trickle has come: the machine is in the middle of a line.
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(machine.chunk(WAIT));
    }
    let mut person = d.human(ms(400));
    assert_eq!(person.cmd("HELO p.example", ms(200)), format!("250 {HOST}"));
    for c in [&silent, &machine, &person] {
        d.id_of(c);
    }
    [silent, machine, person]
}

const SHUTDOWN_ARGS: &[&str] = &[
    "--human-threshold",
    "300ms",
    "--trickle",
    "20ms-30ms",
    "--trickle-bytes",
    "1",
    "--reply-time",
    "10s",
];

#[test]
fn sigterm_closes_every_connection_and_exits_0() {
    let mut d = Daemon::start(SHUTDOWN_ARGS);
    let mut clients = three_connections(&d);
    let (status, took) = d.terminate();
    let records = assert_shut_down(&d, status, took, &mut clients);
    assert!(records.iter().any(|r| r.is("stats")), "a last stats record");
}

#[test]
fn the_shutdown_421_stands_on_a_line_of_its_own() {
    let mut d = Daemon::start(SHUTDOWN_ARGS);
    let [_, mut machine, _] = three_connections(&d);
    let (status, _) = d.terminate();
    assert!(status.success());
    let rest = machine.eof_in(WAIT);
    let text = String::from_utf8_lossy(&rest);
    let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    assert_eq!(
        lines.last().copied(),
        Some(format!("{SHUTTING_DOWN}\r\n").as_str()),
        "{text:?}"
    );
}

#[test]
fn the_shutdown_421_is_counted_in_bytes_sent() {
    let mut d = Daemon::start(SHUTDOWN_ARGS);
    let mut clients = three_connections(&d);
    let (status, _) = d.terminate();
    assert!(status.success());
    let records = common::check_log(&d.raw_lines());
    let mut wrong = Vec::new();
    for c in &mut clients {
        c.eof_in(WAIT);
        let close = records
            .iter()
            .find(|r| r.is("close") && r.at("peer") == c.local.to_string())
            .unwrap();
        if close.num("bytes_sent") != c.got as u64 {
            wrong.push(format!("got {} bytes: {}", c.got, close.line));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
