//! The reply-line scanner: finds the end of an SMTP reply in a byte stream.
//!
//! RFC 5321 4.2.1: a multi-line reply is `250-text` continuation lines and
//! then one final line whose code is followed by a space (`250 text`), or by
//! nothing at all (`250`). The tarpit trickles continuation lines a byte at a
//! time for minutes, so a reply arrives over any number of reads and the
//! scanner keeps its few bytes of state between them: no line buffer.

/// Marks a reply code that was not three digits.
pub const NO_CODE: u16 = u16::MAX;

/// Scanner state: four bytes (this sits in every connection record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyScanner {
    /// Bits 0-2: bytes seen of the current line, saturating at 4 (only
    /// 0..=4 matter); `LAST_LINE`; `IN_REPLY`.
    state: u8,
    /// The current line's code so far, or `NO_CODE`.
    code: u16,
}

/// Bytes of the current line counted, up to 4.
const COL: u8 = 0b0111;
/// The current line's 4th byte said "final" (a space, or the line end).
const LAST_LINE: u8 = 0b1000;
/// Some byte of a reply has arrived and its final line has not ended.
const IN_REPLY: u8 = 0b1_0000;

impl ReplyScanner {
    /// Feed one byte; at the LF that ends a reply's final line, returns that
    /// line's code (`NO_CODE` if it was not three digits).
    #[inline]
    pub fn feed(&mut self, b: u8) -> Option<u16> {
        let col = self.state & COL;
        if b == b'\n' {
            // "250\n" or "250\r\n": a code alone is a final line as well.
            let done = self.state & LAST_LINE != 0 || col == 3;
            let code = self.code;
            self.state = if done { 0 } else { IN_REPLY };
            self.code = 0;
            return done.then_some(code);
        }
        self.state |= IN_REPLY;
        match col {
            0..=2 => {
                self.code = match b {
                    b'0'..=b'9' if self.code != NO_CODE => self.code * 10 + u16::from(b - b'0'),
                    _ => NO_CODE,
                }
            }
            3 if b == b' ' || b == b'\r' => self.state |= LAST_LINE,
            _ => {}
        }
        if col < 4 {
            self.state += 1;
        }
        None
    }

    /// Part of a reply has arrived and it is not complete yet.
    pub fn mid_reply(&self) -> bool {
        self.state & IN_REPLY != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(s: &mut ReplyScanner, bytes: &[u8]) -> Vec<u16> {
        bytes.iter().filter_map(|&b| s.feed(b)).collect()
    }

    #[test]
    fn size() {
        assert_eq!(std::mem::size_of::<ReplyScanner>(), 4);
    }

    #[test]
    fn single_line() {
        let mut s = ReplyScanner::default();
        assert_eq!(codes(&mut s, b"220 mx.example ESMTP\r\n"), [220]);
        assert!(!s.mid_reply());
    }

    #[test]
    fn continuation_is_not_final() {
        let mut s = ReplyScanner::default();
        assert_eq!(codes(&mut s, b"250-mx.example\r\n250-PIPELINING\r\n"), []);
        assert!(s.mid_reply());
        assert_eq!(codes(&mut s, b"250 8BITMIME\r\n"), [250]);
        assert!(!s.mid_reply());
    }

    #[test]
    fn final_line_split_over_many_reads() {
        // The tarpit's way: every byte its own read.
        let reply = b"250-a\r\n250-bb\r\n250-ccc\r\n250 done\r\n354 go\r\n";
        let mut s = ReplyScanner::default();
        let mut got = Vec::new();
        for (i, &b) in reply.iter().enumerate() {
            if let Some(c) = s.feed(b) {
                got.push((i, c));
            }
            if i == 0 {
                assert!(s.mid_reply(), "one byte is part of a reply");
            }
        }
        assert_eq!(got, [(33, 250), (41, 354)]);
        // And split at every possible point into two reads.
        for cut in 0..reply.len() {
            let mut s = ReplyScanner::default();
            let mut c = codes(&mut s, &reply[..cut]);
            c.extend(codes(&mut s, &reply[cut..]));
            assert_eq!(c, [250, 354], "cut at {cut}");
        }
    }

    #[test]
    fn the_fourth_byte_decides() {
        let mut s = ReplyScanner::default();
        assert_eq!(codes(&mut s, b"220-"), []);
        assert_eq!(codes(&mut s, b"pause\r\n"), []);
        assert!(s.mid_reply());
        assert_eq!(codes(&mut s, b"220 "), []);
        assert_eq!(codes(&mut s, b"ok\r\n"), [220]);
    }

    #[test]
    fn code_only_and_bare_lf() {
        let mut s = ReplyScanner::default();
        assert_eq!(codes(&mut s, b"250\r\n"), [250]);
        assert_eq!(codes(&mut s, b"221\n"), [221]);
        assert_eq!(codes(&mut s, b"250-x\n250 y\n"), [250]);
    }

    #[test]
    fn garbage_is_not_a_code() {
        let mut s = ReplyScanner::default();
        assert_eq!(codes(&mut s, b"\r\n"), []);
        assert_eq!(codes(&mut s, b"ab\n"), []);
        assert_eq!(codes(&mut s, b"2x0 what\r\n"), [NO_CODE]);
        // A long line with a '-' beyond the 4th byte is still final.
        assert_eq!(codes(&mut s, b"421 4.7.0 try-again-later\r\n"), [421]);
    }
}
