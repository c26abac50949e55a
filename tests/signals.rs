//! Signals, as a service manager and an admin send them: SIGHUP reloads the
//! file (after the chroot, as nobody) and reopens the log; SIGUSR1 writes a
//! stats record that adds up; SIGINT ends like SIGTERM (which
//! `tests/limits.rs` covers); SIGPIPE never kills the daemon.
//!
//! The reload tests run the daemon chrooted as nobody when the tests run as
//! root (as CI does), which is the case that matters: the file lives outside
//! the chroot and is read through a directory descriptor kept from before.
//! As anyone else they run it without a chroot, and say so.

mod common;

use common::{
    assert_shut_down, file_records, ms, root, wait_file, Client, Daemon, Record, TempDir, TempFile,
    HOST, WAIT,
};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes a configuration file that the daemon, once it is nobody, can
/// still read: 0644 whatever the umask (as /etc/smtarpit.conf must be).
fn write_conf(path: &Path, text: &str) {
    fs::write(path, text).expect("write config");
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod config");
}

/// A configuration with short timings, `listen` in the file (so that the
/// file, not the command line, decides it).
fn conf_text(listen: &[&str], banner: &str, trickle: &str, reply_time: &str) -> String {
    let mut text = String::new();
    for l in listen {
        text += &format!("listen = {l}\n");
    }
    text += &format!(
        "banner = {banner}\nhuman-threshold = 300ms\ntrickle = {trickle}\n\
         trickle-bytes = 64\nreply-time = {reply_time}\n"
    );
    text
}

/// The reply settings before the reload: a machine's reply within ~150 ms.
const FAST: (&str, &str) = ("20ms-30ms", "100ms");
/// After: every reply to a machine takes at least 2 s.
const SLOW: (&str, &str) = ("100ms-200ms", "2s");

/// Runs the daemon on `conf` as a service runs it: as root, chrooted into a
/// fresh root-owned 0755 directory and dropped to nobody (the file outside
/// the chroot); as anyone else, without a chroot. Waits for it to listen.
fn start_service(conf: &TempFile, jail: &TempDir) -> Daemon {
    let mut args = vec!["--hostname", HOST, "-f", conf.path()];
    if root() {
        args.extend(["--chroot", jail.path(), "--user", "nobody"]);
    } else {
        eprintln!("not root: the daemon runs without a chroot in this test");
        args.push("--no-chroot");
    }
    let mut d = Daemon::spawn(&args);
    d.port = listening_port(&d, 1);
    if root() {
        let chrooted = format!("chrooted to {}", jail.path());
        d.wait_line(WAIT, |r| r.get("msg") == Some(&chrooted));
    }
    d.wait_line(WAIT, |r| r.get("msg") == Some("serving"));
    d
}

/// The port of the `n`th `listening on` line.
fn listening_port(d: &Daemon, n: usize) -> u16 {
    let r = wait_nth(d, n, "listening on", |r| {
        r.get("msg").is_some_and(|m| m.starts_with("listening on "))
    });
    r.at("msg")["listening on ".len()..]
        .parse::<SocketAddr>()
        .expect("listening on ADDR:PORT")
        .port()
}

/// Waits for the `n`th record (1-based) that satisfies `pred`: unlike
/// `wait_line`, which finds the first, this tells one reload from the next.
fn wait_nth(d: &Daemon, n: usize, what: &str, pred: impl Fn(&Record) -> bool) -> Record {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut found: Vec<Record> = d.records().into_iter().filter(|r| pred(r)).collect();
        if found.len() >= n {
            return found.swap_remove(n - 1);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for '{what}' #{n}; log:\n{}",
            d.dump()
        );
        std::thread::sleep(ms(10));
    }
}

fn msg_is(want: &'static str) -> impl Fn(&Record) -> bool {
    move |r: &Record| r.get("msg") == Some(want)
}

fn count_msgs(d: &Daemon, pred: impl Fn(&str) -> bool) -> usize {
    d.records()
        .iter()
        .filter(|r| r.get("msg").is_some_and(&pred))
        .count()
}

/// A machine's reply to HELO: all its lines, and how long the whole took.
fn machine_helo(d: &Daemon, banner: &str) -> (Vec<String>, Duration) {
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {HOST} {banner}"));
    let t0 = Instant::now();
    c.send(b"HELO bot.example\r\n");
    let lines = c.reply_in(ms(8000));
    let took = t0.elapsed();
    assert_eq!(lines.last().map(String::as_str), Some("250 mx.test"));
    assert!(lines.len() > 1, "a machine's reply is trickled: {lines:?}");
    (lines, took)
}

#[test]
fn sighup_applies_live_settings_after_the_chroot() {
    let jail = TempDir::new("jail", 0o755);
    let conf = TempFile::new("reload-live.conf", "");
    write_conf(
        &conf.0,
        &conf_text(&["127.0.0.1:0"], "ESMTP ready", FAST.0, FAST.1),
    );
    let d = start_service(&conf, &jail);

    let (_, took) = machine_helo(&d, "ESMTP ready");
    assert!(
        took < ms(1000),
        "reply-time 100ms, yet the reply took {took:?}"
    );
    // A client from before the reload, held across it.
    let mut old = machine_with_banner(&d, "ESMTP ready");

    write_conf(
        &conf.0,
        &conf_text(
            &["127.0.0.1:0"],
            "ESMTP Postfix (Debian/GNU)",
            SLOW.0,
            SLOW.1,
        ),
    );
    d.signal(libc::SIGHUP);
    wait_nth(&d, 1, "reloaded", msg_is("reloaded"));
    assert_eq!(
        count_msgs(&d, |m| m.contains("next restart")),
        0,
        "only live settings changed; log:\n{}",
        d.dump()
    );

    // A new client sees the new banner, and waits the new reply-time.
    let (lines, took) = machine_helo(&d, "ESMTP Postfix (Debian/GNU)");
    assert!(
        took >= ms(1990),
        "reply-time 2s, yet the reply took {took:?}"
    );
    assert!(took < ms(6000), "reply took {took:?}");
    for l in &lines[..lines.len() - 1] {
        assert!(l.starts_with("250-"), "{l:?}");
    }
    // The held client is unharmed.
    old.send(b"QUIT\r\n");
    let rest = old.eof_in(ms(8000));
    assert!(
        String::from_utf8_lossy(&rest).ends_with("221 2.0.0 Bye\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    d.stop();
}

#[test]
fn sighup_warns_that_listen_needs_a_restart_and_keeps_the_old_listener() {
    let jail = TempDir::new("jail", 0o755);
    let conf = TempFile::new("reload-listen.conf", "");
    write_conf(
        &conf.0,
        &conf_text(&["127.0.0.1:0"], "ESMTP", FAST.0, FAST.1),
    );
    let d = start_service(&conf, &jail);
    let old_port = d.port;
    let _held = d.machine();

    // listen changes (restart only) and so does the banner (live).
    write_conf(
        &conf.0,
        &conf_text(
            &["127.0.0.1:0", "127.0.0.2:0"],
            "ESMTP changed",
            FAST.0,
            FAST.1,
        ),
    );
    d.signal(libc::SIGHUP);
    wait_nth(&d, 1, "reloaded", msg_is("reloaded"));
    let warns: Vec<Record> = d
        .records()
        .into_iter()
        .filter(|r| r.get("level") == Some("warn"))
        .collect();
    assert_eq!(warns.len(), 1, "one warning; log:\n{}", d.dump());
    let warn = warns[0].at("msg");
    assert!(
        warn.contains("'listen'") && warn.contains("restart"),
        "the warning names 'listen' as needing a restart: {warn}"
    );
    // Nothing new was bound, the old listener serves, the banner is live.
    assert_eq!(count_msgs(&d, |m| m.starts_with("listening on ")), 1);
    assert_eq!(d.port, old_port);
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {HOST} ESMTP changed"));
    drop(c);
    d.stop();
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let jail = TempDir::new("jail", 0o755);
    let conf = TempFile::new("reload-broken.conf", "");
    write_conf(
        &conf.0,
        &conf_text(&["127.0.0.1:0"], "ESMTP kept", FAST.0, FAST.1),
    );
    let d = start_service(&conf, &jail);
    let failed = |r: &Record| {
        r.get("msg")
            .is_some_and(|m| m.starts_with("reload failed, keeping the running configuration"))
    };

    // A bad value: named with its file and line, and nothing changes.
    let mut bad = conf_text(&["127.0.0.1:0"], "ESMTP broken", FAST.0, FAST.1);
    bad += "max-session = soon\n";
    write_conf(&conf.0, &bad);
    d.signal(libc::SIGHUP);
    let warn = wait_nth(&d, 1, "reload failed", failed);
    let msg = warn.at("msg");
    assert_eq!(warn.at("level"), "warn");
    assert!(
        msg.contains(&format!("{}:7:", conf.path())) && msg.contains("max-session"),
        "FILE:LINE and the key: {msg}"
    );
    let (_, took) = machine_helo(&d, "ESMTP kept");
    assert!(took < ms(1000), "the running reply-time is kept: {took:?}");

    let mut failures = 1;
    if root() {
        // A good file that only root may read: the daemon, now nobody,
        // cannot (hence the README's 0644 for /etc/smtarpit.conf).
        write_conf(
            &conf.0,
            &conf_text(&["127.0.0.1:0"], "ESMTP secret", FAST.0, FAST.1),
        );
        fs::set_permissions(&conf.0, fs::Permissions::from_mode(0o600)).unwrap();
        d.signal(libc::SIGHUP);
        failures += 1;
        let warn = wait_nth(&d, failures, "reload failed", failed);
        assert!(
            warn.at("msg").contains("cannot read") && warn.at("msg").contains("ermission denied"),
            "{}",
            warn.line
        );
    }

    // A file that is gone: the same.
    fs::remove_file(&conf.0).unwrap();
    d.signal(libc::SIGHUP);
    failures += 1;
    let warn = wait_nth(&d, failures, "reload failed", failed);
    assert!(warn.at("msg").contains("cannot read"), "{}", warn.line);
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {HOST} ESMTP kept"));
    drop(c);
    assert_eq!(count_msgs(&d, |m| m == "reloaded"), 0);

    // Put back (a new file, found by name through the kept directory), the
    // next reload applies it.
    write_conf(
        &conf.0,
        &conf_text(&["127.0.0.1:0"], "ESMTP back", FAST.0, FAST.1),
    );
    d.signal(libc::SIGHUP);
    wait_nth(&d, 1, "reloaded", msg_is("reloaded"));
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {HOST} ESMTP back"));
    drop(c);
    d.stop();
}

/// A machine (as `Daemon::machine`) that expects a configured banner.
fn machine_with_banner(d: &Daemon, banner: &str) -> Client {
    let mut c = d.connect();
    assert_eq!(c.line(), format!("220 {HOST} {banner}"));
    c
}

// ---------------------------------------------------------------------------
// The log file and logrotate.

fn accepted_from(c: &Client) -> impl Fn(&Record) -> bool {
    let peer = c.local.to_string();
    move |r: &Record| r.is("accept") && r.get("peer") == Some(peer.as_str())
}

/// What the README tells logrotate to do, done by hand: the daemon, chrooted
/// as nobody, gives itself the log file at start; after a rename and a new
/// file (`create 0640 nobody adm`) SIGHUP moves it to the new file; after a
/// rename alone it cannot create one in a root-owned directory, says so, and
/// goes on in the old one; `copytruncate` needs no signal at all.
#[test]
fn sighup_reopens_the_log_file_for_logrotate() {
    if !root() {
        eprintln!("sighup_reopens_the_log_file_for_logrotate: skipped, needs root");
        return;
    }
    let jail = TempDir::new("jail", 0o755);
    let logdir = TempDir::new("log", 0o755);
    let log = logdir.0.join("smtarpit.log");
    let rotated = logdir.0.join("smtarpit.log.1");
    let args = [
        "-l",
        "127.0.0.1:0",
        "--hostname",
        HOST,
        "--chroot",
        jail.path(),
        "--user",
        "nobody",
        "--log-file",
        log.to_str().unwrap(),
    ];
    let mut d = Daemon::spawn(&args);
    let listening = wait_file(&log, "listening on", |r| {
        r.get("msg").is_some_and(|m| m.starts_with("listening on "))
    });
    d.port = listening.at("msg")["listening on ".len()..]
        .parse::<SocketAddr>()
        .unwrap()
        .port();
    wait_file(&log, "serving", msg_is("serving"));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&log).unwrap().uid(),
        nobody.uid.as_raw(),
        "the log file is given to the user at start"
    );
    let c1 = d.machine();
    wait_file(&log, "c1's accept", accepted_from(&c1));

    // logrotate's default: rename, then "create 0640 nobody adm".
    fs::rename(&log, &rotated).unwrap();
    let group = nix::unistd::Group::from_name("adm")
        .ok()
        .flatten()
        .map_or(nobody.gid, |g| g.gid);
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&log, Some(nobody.uid.as_raw()), Some(group.as_raw())).unwrap();
    d.signal(libc::SIGHUP);
    wait_file(&log, "reloaded", msg_is("reloaded"));
    let c2 = d.machine();
    wait_file(&log, "c2's accept", accepted_from(&c2));
    let old = file_records(&rotated);
    assert!(old.iter().any(accepted_from(&c1)));
    assert!(
        !old.iter().any(accepted_from(&c2)),
        "c2 went to the old file"
    );
    assert!(!old.iter().any(msg_is("reloaded")));

    // A rename without "create": nobody cannot create the file in a
    // root-owned directory; the daemon says so and keeps the old one.
    let rotated2 = logdir.0.join("smtarpit.log.2");
    fs::rename(&log, &rotated2).unwrap();
    d.signal(libc::SIGHUP);
    let warn = wait_file(&rotated2, "cannot reopen", |r| {
        r.get("msg")
            .is_some_and(|m| m.starts_with("reload: cannot reopen"))
    });
    assert_eq!(warn.at("level"), "warn");
    wait_file(&rotated2, "reloaded", msg_is("reloaded"));
    assert!(!log.exists(), "the daemon created the log as nobody");
    let c3 = d.machine();
    wait_file(&rotated2, "c3's accept", accepted_from(&c3));

    // copytruncate: the file is emptied in place; with O_APPEND the next
    // record starts at offset 0, no hole of NULs before it.
    fs::OpenOptions::new()
        .write(true)
        .open(&rotated2)
        .unwrap()
        .set_len(0)
        .unwrap();
    let c4 = d.machine();
    wait_file(&rotated2, "c4's accept", accepted_from(&c4));
    let text = fs::read(&rotated2).unwrap();
    assert!(
        text.starts_with(b"ts="),
        "{:?}",
        String::from_utf8_lossy(&text)
    );
    assert!(!text.contains(&0), "NULs in the truncated log");

    drop((c1, c2, c3, c4));
    let (status, _) = d.terminate();
    assert!(status.success(), "exit {status}");
}

// ---------------------------------------------------------------------------
// SIGUSR1.

/// Waits until the daemon has classified a client.
fn classified(d: &Daemon, c: &Client, class: &str) {
    let id = d.id_of(c);
    d.wait_for("classify", &[("id", &id), ("class", class)]);
}

/// Two machines, a person who said HELO, one client refused over
/// --max-per-ip: the stats record counts exactly these.
#[test]
fn sigusr1_stats_count_what_the_clients_did() {
    let d = Daemon::start(&[
        "--max-per-ip",
        "2",
        "--human-threshold",
        "300ms",
        "--trickle",
        "10ms-20ms",
        "--reply-time",
        "10s",
    ]);
    let mut m1 = d.machine();
    let mut m2 = d.machine();
    for m in [&mut m1, &mut m2] {
        m.send(b"EHLO bot.example\r\n");
        // Some trickle has come: timers have fired.
        m.chunk(WAIT);
    }
    classified(&d, &m1, "machine");
    classified(&d, &m2, "machine");
    let mut person = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), d.addr());
    assert_eq!(person.line(), format!("220 {HOST} ESMTP"));
    std::thread::sleep(ms(400));
    assert_eq!(person.cmd("HELO p.example", ms(300)), format!("250 {HOST}"));
    classified(&d, &person, "human");
    let mut third = d.connect();
    assert_eq!(
        third.line(),
        format!("421 4.7.0 {HOST} Error: too many connections")
    );
    let refused = d.close_of(&d.id_of(&third));
    assert_eq!(refused.at("reason"), "limit");

    d.signal(libc::SIGUSR1);
    let s = wait_nth(&d, 1, "stats", |r| r.is("stats"));
    let want = [
        ("clients", 3),
        ("machines", 2),
        ("humans", 1),
        ("accepted", 4),
        ("closed", 1),
        ("rejected", 1),
        ("classified_machine", 2),
        ("classified_human", 1),
    ];
    for (key, n) in want {
        assert_eq!(s.num(key), n, "{key} in {}", s.line);
    }
    for key in [
        "timer_fires",
        "late_p50_ms",
        "late_p99_ms",
        "late_max_ms",
        "bytes_sent",
        "held_s",
    ] {
        assert_eq!(s.count(key), 1, "want one '{key}' in {}", s.line);
        s.num(key);
    }
    assert!(s.num("timer_fires") > 0, "{}", s.line);
    assert!(s.num("late_p50_ms") <= s.num("late_p99_ms"), "{}", s.line);
    assert!(
        s.num("late_p99_ms") <= s.num("late_max_ms").max(256),
        "{}",
        s.line
    );

    // One machine leaves; the next record says so.
    let m1_id = d.id_of(&m1);
    drop(m1);
    d.close_of(&m1_id);
    d.signal(libc::SIGUSR1);
    let s = wait_nth(&d, 2, "stats", |r| r.is("stats"));
    for (key, n) in [
        ("clients", 2),
        ("machines", 1),
        ("humans", 1),
        ("closed", 2),
    ] {
        assert_eq!(s.num(key), n, "{key} in {}", s.line);
    }
    assert!(s.num("held_s") <= 60, "{}", s.line);

    // The last one, at exit, has everyone closed.
    let records = d.stop();
    let last = records.iter().rev().find(|r| r.is("stats")).unwrap();
    for (key, n) in [
        ("clients", 0),
        ("accepted", 4),
        ("closed", 4),
        ("rejected", 1),
        ("classified_machine", 2),
        ("classified_human", 1),
    ] {
        assert_eq!(last.num(key), n, "{key} in {}", last.line);
    }
    drop((m2, person, third));
}

/// At exit every connection is closed, so the stats record's bytes_sent
/// should be the sum of the close records' (each counts what that client was
/// sent, a refused client's 421 included).
#[test]
fn final_stats_bytes_sent_is_the_sum_of_the_close_records() {
    let d = Daemon::start(&["--max-per-ip", "1", "--human-threshold", "300ms"]);
    let mut person = d.human(ms(400));
    assert_eq!(person.cmd("HELO p.example", ms(300)), format!("250 {HOST}"));
    let mut refused = d.connect();
    assert_eq!(
        refused.line(),
        format!("421 4.7.0 {HOST} Error: too many connections")
    );
    d.close_of(&d.id_of(&refused));
    let records = d.stop();
    let sum: u64 = records
        .iter()
        .filter(|r| r.is("close"))
        .map(|r| r.num("bytes_sent"))
        .sum();
    let last = records.iter().rev().find(|r| r.is("stats")).unwrap();
    assert_eq!(last.num("bytes_sent"), sum, "{}", last.line);
}

// ---------------------------------------------------------------------------
// SIGINT and SIGPIPE.

#[test]
fn sigint_closes_every_connection_and_exits_0() {
    let mut d = Daemon::start(&[
        "--human-threshold",
        "300ms",
        "--trickle",
        "20ms-30ms",
        "--reply-time",
        "10s",
    ]);
    let silent = d.machine();
    let mut machine = d.machine();
    machine.send(b"EHLO bot.example\r\n");
    machine.chunk(WAIT);
    let mut person = d.human(ms(400));
    assert_eq!(person.cmd("HELO p.example", ms(300)), format!("250 {HOST}"));
    let mut clients = [silent, machine, person];
    for c in &clients {
        d.id_of(c);
    }

    let t0 = Instant::now();
    d.signal(libc::SIGINT);
    let status = d
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("no exit after SIGINT; log:\n{}", d.dump()));
    let took = t0.elapsed();
    let records = assert_shut_down(&d, status, took, &mut clients);
    let last = records.iter().rev().find(|r| r.is("stats")).expect("stats");
    assert_eq!(last.num("clients"), 0, "{}", last.line);
    assert_eq!(last.num("closed"), 3, "{}", last.line);
}

/// A signal mask field of `/proc/PID/status` (SigIgn, SigBlk, ...).
fn sigmask(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

/// Clients that vanish while the daemon writes to them: a machine that
/// closes mid-trickle, one that resets, a person who resets right after a
/// command (so the reply's write fails), one gone before its greeting. The
/// daemon closes each with a record and goes on serving.
#[test]
fn sigpipe_never_kills_the_daemon() {
    // An empty file, as a marker to find the process by.
    let marker = TempFile::new("sigpipe.conf", "");
    let mut d = Daemon::start(&[
        "-f",
        marker.path(),
        "--human-threshold",
        "300ms",
        "--trickle",
        "5ms-10ms",
        "--reply-time",
        "10s",
    ]);
    let pid = d.pid();
    assert_ne!(
        sigmask(pid, "SigIgn") & bit(libc::SIGPIPE),
        0,
        "SIGPIPE ignored"
    );
    let blocked = sigmask(pid, "SigBlk");
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
        assert_ne!(
            blocked & bit(sig),
            0,
            "signal {sig} blocked, for the signalfd"
        );
    }

    let mut ids = Vec::new();
    for reset in [false, true] {
        let mut m = d.machine();
        m.send(b"EHLO bot.example\r\n");
        let mut got = 0;
        while got < 3 {
            got += m.chunk(WAIT).len();
        }
        ids.push(d.id_of(&m));
        if reset {
            m.reset();
        } else {
            drop(m);
        }
    }
    let mut person = d.human(ms(400));
    person.send(b"HELO p.example\r\n");
    ids.push(d.id_of(&person));
    person.reset();
    let early = d.connect();
    ids.push(d.id_of(&early));
    early.reset();
    // Many more, for luck: a write after a reset is the one that would
    // raise SIGPIPE.
    for _ in 0..20 {
        let mut m = d.machine();
        m.send(b"HELO bot.example\r\n");
        m.reset();
    }
    for (id, want) in ids.iter().zip([
        &["client_closed"][..],
        &["reset"],
        &["reset", "client_closed"],
        &["reset", "client_closed"],
    ]) {
        let close = d.close_of(id);
        assert!(want.contains(&close.at("reason")), "{}", close.line);
    }

    assert!(
        d.wait_exit(ms(100)).is_none(),
        "the daemon died: {}",
        d.dump()
    );
    let mut c = d.human(ms(400));
    assert_eq!(c.cmd("HELO after.example", ms(300)), format!("250 {HOST}"));
    drop(c);
    d.stop();
}
