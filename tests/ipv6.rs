//! IPv6: a listener on `[::1]` beside one on 127.0.0.1 (each `IPV6_V6ONLY`),
//! and records that write an IPv6 peer as `[addr]:port`.

mod common;

use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};

#[test]
fn serves_ipv6_beside_ipv4_and_records_the_peer_in_brackets() {
    // A host without IPv6 loopback cannot run this; say so.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let d = Daemon::start(&["-l", "[::1]:0"]);
    let v6: SocketAddr = d
        .wait_line(WAIT, |r| {
            r.get("msg")
                .is_some_and(|m| m.starts_with("listening on [::1]:"))
        })
        .at("msg")["listening on ".len()..]
        .parse()
        .expect("listening on [::1]:PORT");

    let mut c = TcpStream::connect(v6).expect("connect to [::1]");
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut banner = [0u8; 64];
    let n = c.read(&mut banner).unwrap();
    assert!(banner[..n].starts_with(format!("220 {HOST} ESMTP").as_bytes()));
    let local = c.local_addr().unwrap();
    drop(c);

    let want = format!("[::1]:{}", local.port());
    let close = d.wait_for("close", &[("peer", want.as_str())]);
    assert_eq!(close.at("reason"), "client_closed");
    d.wait_for("accept", &[("peer", want.as_str())]);

    // The IPv4 listener still serves on its own port.
    let mut v4 = Client::connect(d.addr());
    v4.expect_line(&format!("220 {HOST} ESMTP"));
    d.stop();
}
