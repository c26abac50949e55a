//! What a run found: counts per behaviour, percentiles, and the two ways of
//! printing them (a table for people, one JSON line for scripts).
//!
//! JSON shape (keys stable; every count an integer; a percentile of no
//! samples is `null`; `failed` lists only the errnos met, sorted by name;
//! `stages` and `ends` always list every key):
//!
//! ```text
//! {"target":"127.0.0.1:2525","elapsed_ms":1234,"mix":"bot=70,silent=30",
//!  "total":GROUP,"behaviours":{"bot":GROUP,"silent":GROUP}}
//!
//! GROUP = {"attempted":N,"established":N,"failed":{"ECONNREFUSED":N,...},
//!   "held_ms":{"p50":N,"p90":N,"p99":N,"max":N},
//!   "ttfb_ms":{"p50":N,"p99":N},"bytes_received":N,
//!   "stages":{"connect":N,"banner":N,"ehlo":N,"mail":N,"rcpt":N,
//!             "data":N,"body":N,"quit":N},
//!   "ends":{"server_closed":N,"server_reset":N,"client_timeout":N,
//!           "hold_expired":N,"run_ended":N,"client_quit":N,
//!           "client_reset":N,"error":N}}
//! ```
//!
//! `behaviours` holds the members of the mix, in the order bot, human,
//! pregreet, silent, reset. `held_ms` runs from established to the end of
//! the connection, `ttfb_ms` from established to the first byte received;
//! `stages` counts the furthest stage each established connection reached
//! (the last command sent, or `connect`/`banner` before any); `ends` counts
//! how each established connection ended. A connect that failed is counted
//! in `failed` by errno (`ETIMEDOUT` for our own connect timeout,
//! `EINPROGRESS` for one still connecting when the run ended), never in
//! `stages` or `ends`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::mix::Behaviour;
use crate::session::{End, Stage};
use crate::sock::errno_name;

/// Nearest-rank percentile (`p` in percent) of sorted samples: the smallest
/// sample with at least p% of the samples at or below it. `None` when there
/// are none.
pub fn percentile(sorted: &[u32], p: u32) -> Option<u32> {
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "unsorted");
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).max(1);
    Some(sorted[(rank - 1) as usize])
}

/// The counts for one behaviour (or all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub attempted: u64,
    pub established: u64,
    /// Failed connects by errno.
    pub failed: BTreeMap<i32, u64>,
    /// Established → end, ms, one per established connection.
    pub held_ms: Vec<u32>,
    /// Established → first byte, ms, for those that got one.
    pub ttfb_ms: Vec<u32>,
    pub bytes_received: u64,
    pub stages: [u64; Stage::COUNT],
    pub ends: [u64; End::COUNT],
}

impl Group {
    pub fn fail(&mut self, errno: i32) {
        *self.failed.entry(errno).or_default() += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Record one established connection that ended.
    pub fn ended(
        &mut self,
        held_ms: u32,
        ttfb_ms: Option<u32>,
        bytes: u64,
        stage: Stage,
        end: End,
    ) {
        self.held_ms.push(held_ms);
        self.ttfb_ms.extend(ttfb_ms);
        self.bytes_received += bytes;
        self.stages[stage as usize] += 1;
        self.ends[end as usize] += 1;
    }

    fn merge(&mut self, other: &Group) {
        self.attempted += other.attempted;
        self.established += other.established;
        for (&e, &n) in &other.failed {
            *self.failed.entry(e).or_default() += n;
        }
        self.held_ms.extend_from_slice(&other.held_ms);
        self.ttfb_ms.extend_from_slice(&other.ttfb_ms);
        self.bytes_received += other.bytes_received;
        for i in 0..Stage::COUNT {
            self.stages[i] += other.stages[i];
        }
        for i in 0..End::COUNT {
            self.ends[i] += other.ends[i];
        }
    }

    /// Sort the samples so that percentiles can be read.
    fn sorted(mut self) -> Group {
        self.held_ms.sort_unstable();
        self.ttfb_ms.sort_unstable();
        self
    }

    /// Failures by errno name, sorted by name.
    fn failed_by_name(&self) -> BTreeMap<String, u64> {
        self.failed
            .iter()
            .map(|(&e, &n)| (errno_name(e), n))
            .collect()
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub target: String,
    pub elapsed_ms: u64,
    pub mix: String,
    /// One per member of the mix, in `Behaviour::ALL` order.
    pub groups: Vec<(Behaviour, Group)>,
}

impl Summary {
    /// Sort every group's samples (call once, before printing).
    pub fn new(
        target: String,
        elapsed_ms: u64,
        mix: String,
        groups: Vec<(Behaviour, Group)>,
    ) -> Summary {
        let groups = groups.into_iter().map(|(b, g)| (b, g.sorted())).collect();
        Summary {
            target,
            elapsed_ms,
            mix,
            groups,
        }
    }

    pub fn total(&self) -> Group {
        let mut t = Group::default();
        for (_, g) in &self.groups {
            t.merge(g);
        }
        t.sorted()
    }

    /// The JSON line (without the newline); the shape is in the module doc.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        s.push_str("{\"target\":");
        json_str(&mut s, &self.target);
        let _ = write!(s, ",\"elapsed_ms\":{},\"mix\":", self.elapsed_ms);
        json_str(&mut s, &self.mix);
        s.push_str(",\"total\":");
        json_group(&mut s, &self.total());
        s.push_str(",\"behaviours\":{");
        for (i, (b, g)) in self.groups.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, b.name());
            s.push(':');
            json_group(&mut s, g);
        }
        s.push_str("}}");
        s
    }

    /// The table for people: one column per behaviour, then the total.
    pub fn to_text(&self) -> String {
        let total = self.total();
        let mut cols: Vec<(&str, &Group)> =
            self.groups.iter().map(|(b, g)| (b.name(), g)).collect();
        if cols.len() > 1 {
            cols.push(("total", &total));
        }
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&Group) -> String| {
            rows.push((label.to_string(), cols.iter().map(|(_, g)| f(g)).collect()));
        };
        row("attempted", &|g| g.attempted.to_string());
        row("established", &|g| g.established.to_string());
        row("failed", &|g| g.failed_total().to_string());
        for name in total.failed_by_name().keys() {
            let n = name.clone();
            row(&format!("  {name}"), &move |g| {
                g.failed_by_name().get(&n).copied().unwrap_or(0).to_string()
            });
        }
        row("held p50", &|g| ms_or_dash(percentile(&g.held_ms, 50)));
        row("held p90", &|g| ms_or_dash(percentile(&g.held_ms, 90)));
        row("held p99", &|g| ms_or_dash(percentile(&g.held_ms, 99)));
        row("held max", &|g| ms_or_dash(g.held_ms.last().copied()));
        row("first byte p50", &|g| {
            ms_or_dash(percentile(&g.ttfb_ms, 50))
        });
        row("first byte p99", &|g| {
            ms_or_dash(percentile(&g.ttfb_ms, 99))
        });
        row("bytes received", &|g| g.bytes_received.to_string());
        row("furthest stage", &|_| String::new());
        for st in Stage::ALL {
            row(&format!("  {}", st.name()), &|g| {
                g.stages[st as usize].to_string()
            });
        }
        row("ended by", &|_| String::new());
        for end in End::ALL {
            row(&format!("  {}", end.name()), &|g| {
                g.ends[end as usize].to_string()
            });
        }

        let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let col_w: Vec<usize> = (0..cols.len())
            .map(|i| {
                rows.iter()
                    .map(|(_, v)| v[i].len())
                    .chain([cols[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut s = format!(
            "smtarpit-flood: {} for {}, mix {}\n\n",
            self.target,
            fmt_ms(self.elapsed_ms),
            self.mix
        );
        let _ = write!(s, "{:label_w$}", "");
        for (i, (name, _)) in cols.iter().enumerate() {
            let _ = write!(s, "  {:>w$}", name, w = col_w[i]);
        }
        s.push('\n');
        for (label, vals) in &rows {
            let _ = write!(s, "{label:label_w$}");
            for (i, v) in vals.iter().enumerate() {
                let _ = write!(s, "  {:>w$}", v, w = col_w[i]);
            }
            s.truncate(s.trim_end().len());
            s.push('\n');
        }
        s
    }
}

fn ms_or_dash(ms: Option<u32>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| fmt_ms(u64::from(ms)))
}

/// A duration for people: `250ms`, `4.2s`, `3m07s`, `2h05m`.
pub fn fmt_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}.{}s", ms / 1_000, ms % 1_000 / 100),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A JSON string. Our strings are addresses and names, but escape anyway.
fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

fn json_opt(s: &mut String, v: Option<u32>) {
    match v {
        Some(n) => {
            let _ = write!(s, "{n}");
        }
        None => s.push_str("null"),
    }
}

fn json_group(s: &mut String, g: &Group) {
    let _ = write!(
        s,
        "{{\"attempted\":{},\"established\":{},\"failed\":{{",
        g.attempted, g.established
    );
    for (i, (name, n)) in g.failed_by_name().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        json_str(s, name);
        let _ = write!(s, ":{n}");
    }
    s.push_str("},\"held_ms\":{\"p50\":");
    json_opt(s, percentile(&g.held_ms, 50));
    s.push_str(",\"p90\":");
    json_opt(s, percentile(&g.held_ms, 90));
    s.push_str(",\"p99\":");
    json_opt(s, percentile(&g.held_ms, 99));
    s.push_str(",\"max\":");
    json_opt(s, g.held_ms.last().copied());
    s.push_str("},\"ttfb_ms\":{\"p50\":");
    json_opt(s, percentile(&g.ttfb_ms, 50));
    s.push_str(",\"p99\":");
    json_opt(s, percentile(&g.ttfb_ms, 99));
    let _ = write!(
        s,
        "}},\"bytes_received\":{},\"stages\":{{",
        g.bytes_received
    );
    for (i, st) in Stage::ALL.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{}\":{}", st.name(), g.stages[*st as usize]);
    }
    s.push_str("},\"ends\":{");
    for (i, end) in End::ALL.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{}\":{}", end.name(), g.ends[*end as usize]);
    }
    s.push_str("}}");
}

#[cfg(test)]
#[path = "../tests/support/json.rs"]
mod json;

#[cfg(test)]
mod tests {
    use super::json::{parse, Value};
    use super::*;

    #[test]
    fn percentile_empty_and_single() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[], 99), None);
        for p in [0, 1, 50, 90, 99, 100] {
            assert_eq!(percentile(&[7], p), Some(7), "p{p}");
        }
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 90), Some(90));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&v, 0), Some(1));
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 50), Some(20));
        assert_eq!(percentile(&v, 51), Some(30));
        assert_eq!(percentile(&v, 99), Some(40));
        let v = [5, 5, 5, 1000];
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(1000));
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(fmt_ms(250), "250ms");
        assert_eq!(fmt_ms(4_250), "4.2s");
        assert_eq!(fmt_ms(187_000), "3m07s");
        assert_eq!(fmt_ms(7_500_000), "2h05m");
    }

    fn sample() -> Summary {
        let mut bot = Group {
            attempted: 3,
            established: 2,
            ..Group::default()
        };
        bot.fail(libc::ECONNREFUSED);
        bot.ended(300, Some(5), 100, Stage::Quit, End::ClientQuit);
        bot.ended(100, Some(1), 50, Stage::Rcpt, End::ServerClosed);
        let mut silent = Group {
            attempted: 2,
            ..Group::default()
        };
        silent.fail(libc::EADDRNOTAVAIL);
        silent.fail(libc::EADDRNOTAVAIL);
        Summary::new(
            "127.0.0.1:2525".into(),
            1234,
            "bot=3,silent=2".into(),
            vec![(Behaviour::Bot, bot), (Behaviour::Silent, silent)],
        )
    }

    #[test]
    fn json_shape() {
        let line = sample().to_json();
        assert!(!line.contains('\n'));
        let v = parse(&line).expect("valid JSON");
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, _)| k.clone())
                .collect()
        };
        assert_eq!(
            keys(&v),
            ["target", "elapsed_ms", "mix", "total", "behaviours"]
        );
        assert_eq!(v.get("target").as_str(), Some("127.0.0.1:2525"));
        assert_eq!(v.get("elapsed_ms").as_u64(), Some(1234));
        assert_eq!(keys(v.get("behaviours")), ["bot", "silent"]);
        let t = v.get("total");
        assert_eq!(
            keys(t),
            [
                "attempted",
                "established",
                "failed",
                "held_ms",
                "ttfb_ms",
                "bytes_received",
                "stages",
                "ends"
            ]
        );
        assert_eq!(t.get("attempted").as_u64(), Some(5));
        assert_eq!(t.get("established").as_u64(), Some(2));
        assert_eq!(keys(t.get("failed")), ["EADDRNOTAVAIL", "ECONNREFUSED"]);
        assert_eq!(t.get("failed").get("EADDRNOTAVAIL").as_u64(), Some(2));
        assert_eq!(keys(t.get("held_ms")), ["p50", "p90", "p99", "max"]);
        assert_eq!(t.get("held_ms").get("p50").as_u64(), Some(100));
        assert_eq!(t.get("held_ms").get("max").as_u64(), Some(300));
        assert_eq!(t.get("ttfb_ms").get("p99").as_u64(), Some(5));
        assert_eq!(t.get("bytes_received").as_u64(), Some(150));
        let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(keys(t.get("stages")), stages);
        assert_eq!(t.get("stages").get("quit").as_u64(), Some(1));
        let ends: Vec<&str> = End::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(keys(t.get("ends")), ends);
        assert_eq!(t.get("ends").get("client_quit").as_u64(), Some(1));
        // No samples: null, not 0.
        let s = v.get("behaviours").get("silent");
        assert!(s.get("held_ms").get("p50").is_null());
        assert!(s.get("ttfb_ms").get("p99").is_null());
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n");
        assert_eq!(s, r#""a\"b\\c\u000a""#);
    }

    #[test]
    fn text_table() {
        let t = sample().to_text();
        assert!(t.starts_with("smtarpit-flood: 127.0.0.1:2525 for 1.2s, mix bot=3,silent=2\n"));
        let line = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("{label} in\n{t}"))
                .to_string()
        };
        let words = |l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(line("   ")), ["bot", "silent", "total"]);
        assert_eq!(words(line("attempted")), ["attempted", "3", "2", "5"]);
        assert_eq!(
            words(line("  EADDRNOTAVAIL")),
            ["EADDRNOTAVAIL", "0", "2", "2"]
        );
        assert_eq!(
            words(line("held p50")),
            ["held", "p50", "100ms", "-", "100ms"]
        );
        assert_eq!(words(line("  quit")), ["quit", "1", "0", "1"]);
    }
}
