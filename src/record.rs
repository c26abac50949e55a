//! Records: one logfmt line per event, `key=value` pairs with fixed keys.
//!
//! Whatever came from a client goes through [`Rec::quoted`], which escapes
//! every byte that is not printable ASCII, the quote and the backslash, so no
//! client can end a record, start a forged one, or colour a terminal.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// A record being built. Starts with the wall-clock time (for matching
/// against RADIUS and firewall logs) and the event name.
pub struct Rec(String);

impl Rec {
    pub fn new(event: &str) -> Rec {
        let mut s = String::with_capacity(256);
        s.push_str("ts=");
        utc_timestamp(SystemTime::now(), &mut s);
        s.push_str(" event=");
        s.push_str(event);
        Rec(s)
    }

    /// A value of our own making: a number, a fixed word.
    pub fn kv(mut self, key: &str, value: impl std::fmt::Display) -> Rec {
        let _ = write!(self.0, " {key}={value}");
        self
    }

    /// A value that came from a client, or any free text: always quoted.
    pub fn quoted(mut self, key: &str, value: &[u8]) -> Rec {
        let _ = write!(self.0, " {key}=\"");
        escape_into(value, &mut self.0);
        self.0.push('"');
        self
    }

    pub fn peer(self, addr: &SocketAddr) -> Rec {
        // SocketAddr's Display already writes IPv6 as [addr]:port.
        self.kv("peer", canonical(addr))
    }

    pub fn line(&self) -> &str {
        &self.0
    }

    /// Emits the record through `log` at info level.
    pub fn emit(self) {
        log::info!("{}", self.0);
    }
}

/// Shows an IPv4 client reached over an IPv6 socket as plain IPv4.
pub fn canonical(addr: &SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => *addr,
        },
        SocketAddr::V4(_) => *addr,
    }
}

/// Escapes bytes for a double-quoted logfmt value: printable ASCII passes,
/// `"` and `\` get a backslash, CR, LF and TAB their usual escapes, anything
/// else (control bytes, DEL, non-ASCII) `\xNN`.
pub fn escape_into(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// Writes `2026-12-04T16:08:10.123Z`. Civil-from-days after Howard Hinnant's
/// algorithm, so we need no date crate for one format.
pub fn utc_timestamp(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Parses a record back into its pairs, unescaping quoted values. The tests
/// use it to hold the format; tools may too.
pub fn parse(line: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = line.trim_end_matches('\n');
    while !rest.is_empty() {
        rest = rest.strip_prefix(' ').unwrap_or(rest);
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        rest = &rest[eq + 1..];
        let mut value = String::new();
        if let Some(q) = rest.strip_prefix('"') {
            let mut chars = q.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'r' => value.push('\r'),
                        'n' => value.push('\n'),
                        't' => value.push('\t'),
                        'x' => {
                            let hi = chars.next()?.1.to_digit(16)?;
                            let lo = chars.next()?.1.to_digit(16)?;
                            value.push(char::from_u32(hi * 16 + lo)?);
                        }
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            };
            rest = &q[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        pairs.push((key.to_string(), value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escaping_keeps_a_record_one_line() {
        let evil = b"x\r\n\x1b[31m\"\\ event=close peer=1.2.3.4\x00\xff";
        let r = Rec::new("cmd").quoted("arg", evil);
        let line = r.line();
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line}");
        let pairs = parse(line).unwrap();
        assert_eq!(pairs.iter().filter(|(k, _)| k == "event").count(), 1);
        let arg = &pairs.iter().find(|(k, _)| k == "arg").unwrap().1;
        let back: Vec<u8> = arg.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(back, evil);
    }

    #[test]
    fn timestamps() {
        let mut s = String::new();
        utc_timestamp(UNIX_EPOCH, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        utc_timestamp(
            UNIX_EPOCH + Duration::from_millis(1_796_400_490_123),
            &mut s,
        );
        assert_eq!(s, "2026-12-04T16:08:10.123Z");
        s.clear();
        utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut s);
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn peers_print_as_ip_port() {
        let v4: SocketAddr = "[::ffff:10.1.2.3]:25".parse().unwrap();
        assert_eq!(canonical(&v4).to_string(), "10.1.2.3:25");
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(
            Rec::new("x").peer(&v6).line().split(' ').nth(2),
            Some("peer=[2001:db8::1]:4000")
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse("a=1 b").is_none());
        assert!(parse("a=\"unterminated").is_none());
        assert_eq!(parse("a=1 b=\"x y\"").unwrap()[1].1, "x y");
    }
}
