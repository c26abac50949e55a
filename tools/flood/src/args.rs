//! Command-line parsing: the flags, durations, source ranges and the loopback
//! guard.
//!
//! Parsing is hand-written (no dependency): every flag takes its value either
//! as the next argument or after `=`. Every error names the flag at fault, and
//! `main` exits with status 2 on any of them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::mix::Mix;
use crate::session::{Plan, Stage};

/// The usage text printed by `-h/--help`. Keep it in step with `parse` and
/// with the flag list in README.md.
pub const USAGE: &str = "\
usage: smtarpit-flood [OPTIONS] TARGET

Open many concurrent SMTP client connections to TARGET (IP[:PORT], port 25
by default; IPv6 as [::1]:25) and report how long the server held them.
TARGET must be a loopback address unless --allow-remote is given.

connections:
  --count N          connections open at once (default 100)
  --total N          connections to open in all; a closed one is replaced
                     until this many were opened (default: --count)
  --rate R           new connections per second, 0 = as fast as possible
                     (default 1000)
  --sources K        source addresses to spread over, from --source-base
                     (default 16: 127.0.0.1 .. 127.0.0.16)
  --source-base IP   first source address (default 127.0.0.1 for a loopback
                     target; a remote target gets the kernel's choice)
  --allow-remote     allow a TARGET outside 127.0.0.0/8 and ::1

behaviour:
  --mix SPEC         weighted mix of behaviours, e.g. bot=70,silent=20,reset=10
                     (a bare name weighs 1; default bot=1)
  --behaviour NAME   the same as --mix NAME=1
                       bot       EHLO at once, MAIL, RCPT x k, DATA, body, QUIT
                       human     the same, thinking --think before each command
                       pregreet  sends EHLO before reading the banner
                       silent    connects and only reads
                       reset     resets the connection (RST) mid-reply
  --rcpts K          RCPT TO commands per message (default 1)
  --think DUR        a human's pause before each command (default 3s)

timing (DUR: 250ms, 2s, 5m, 1h):
  --timeout DUR      client timeout for every stage, as \"no byte received for
                     that long\" (default: RFC 5321 4.5.3.2 - greeting, EHLO,
                     MAIL, RCPT, QUIT 5m; DATA 2m; end of data 10m)
  --hold DUR         close each connection this long after it was established
                     (default: hold until the server closes or a timeout)
  --duration DUR     end the whole run after this, closing everything

output:
  --json             print the summary as one JSON object on one line
  -h, --help         print this help

A live progress line goes to stderr when it is a terminal; the summary goes
to stdout. Exit status: 0 after a run, 1 on a run-time error, 2 on bad
arguments.
";

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Args {
    /// Where to connect; a v4-mapped IPv6 address is already turned into v4.
    pub target: SocketAddr,
    /// Connections open at once.
    pub count: u32,
    /// Connections to open in all.
    pub total: u64,
    /// Connects per second; 0 = no pacing.
    pub rate: u32,
    pub mix: Mix,
    /// The dialogue's knobs: recipients, think time, per-stage timeouts.
    pub plan: Plan,
    /// Close each connection this many ms after it was established.
    pub hold_ms: Option<u32>,
    /// End the run after this many ms.
    pub duration_ms: Option<u32>,
    /// Source addresses to bind before connecting; `None` = kernel's choice.
    pub sources: Option<Sources>,
    pub json: bool,
}

/// A run of consecutive IPv4 source addresses, used round-robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub base: Ipv4Addr,
    pub count: u32,
}

impl Sources {
    /// The `i`-th source address, wrapping around the range.
    pub fn addr(&self, i: u64) -> Ipv4Addr {
        let off = (i % u64::from(self.count)) as u32;
        Ipv4Addr::from(u32::from(self.base) + off)
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Args>),
    Help,
}

/// A bad argument: the flag at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    pub flag: String,
    pub msg: String,
}

impl ArgError {
    fn new(flag: &str, msg: impl Into<String>) -> ArgError {
        ArgError {
            flag: flag.to_string(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.msg)
    }
}

/// Default number of source addresses: 16 × ~28,000 ephemeral ports leaves
/// room for TIME_WAIT churn far beyond one process's ~19,000 descriptors.
const DEFAULT_SOURCES: u32 = 16;
const DEFAULT_COUNT: u32 = 100;
const DEFAULT_RATE: u32 = 1000;
const DEFAULT_THINK_MS: u32 = 3_000;

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Command, ArgError> {
    let mut it = argv.into_iter();
    let mut target: Option<String> = None;
    let mut count: Option<u32> = None;
    let mut total: Option<u64> = None;
    let mut rate = DEFAULT_RATE;
    let mut mix: Option<(String, Mix)> = None;
    let mut rcpts: u16 = 1;
    let mut think_ms = DEFAULT_THINK_MS;
    let mut timeout: Option<u32> = None;
    let mut hold_ms = None;
    let mut duration_ms = None;
    let mut nsources = DEFAULT_SOURCES;
    let mut source_base: Option<Ipv4Addr> = None;
    let mut allow_remote = false;
    let mut json = false;

    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if !arg.starts_with('-') || arg == "-" {
            if let Some(first) = &target {
                return Err(ArgError::new(
                    "TARGET",
                    format!("given twice ('{first}' and '{arg}')"),
                ));
            }
            target = Some(arg);
            continue;
        }
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let boolean = matches!(flag.as_str(), "--allow-remote" | "--json");
        if boolean {
            if inline.is_some() {
                return Err(ArgError::new(&flag, "takes no value"));
            }
            match flag.as_str() {
                "--allow-remote" => allow_remote = true,
                _ => json = true,
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| ArgError::new(&flag, "needs a value"))?,
        };
        let f = flag.as_str();
        let e = |msg: String| ArgError::new(f, msg);
        match f {
            "--count" => count = Some(number(&value, 1, u64::from(u32::MAX)).map_err(e)? as u32),
            "--total" => total = Some(number(&value, 1, u64::MAX).map_err(e)?),
            "--rate" => rate = number(&value, 0, u64::from(u32::MAX)).map_err(e)? as u32,
            "--mix" | "--behaviour" | "--behavior" => {
                if let Some((prev, _)) = &mix {
                    return Err(e(format!(
                        "the mix was already given by {prev}; give one --mix"
                    )));
                }
                let spec = if f == "--mix" {
                    value
                } else {
                    format!("{value}=1")
                };
                mix = Some((f.to_string(), Mix::parse(&spec).map_err(e)?));
            }
            "--rcpts" => rcpts = number(&value, 1, 1000).map_err(e)? as u16,
            "--think" => think_ms = parse_duration(&value).map_err(e)?,
            "--timeout" => {
                let ms = parse_duration(&value).map_err(e)?;
                if ms == 0 {
                    return Err(e("must be more than 0".into()));
                }
                timeout = Some(ms);
            }
            "--hold" => hold_ms = Some(parse_duration(&value).map_err(e)?),
            "--duration" => {
                let ms = parse_duration(&value).map_err(e)?;
                if ms == 0 {
                    return Err(e("must be more than 0".into()));
                }
                duration_ms = Some(ms);
            }
            "--sources" => nsources = number(&value, 1, 1 << 24).map_err(e)? as u32,
            "--source-base" => {
                source_base = Some(
                    value
                        .parse::<Ipv4Addr>()
                        .map_err(|_| e(format!("'{value}' is not an IPv4 address")))?,
                )
            }
            _ => return Err(ArgError::new(f, "unknown flag (see --help)")),
        }
    }

    let target = target.ok_or_else(|| ArgError::new("TARGET", "missing (see --help)"))?;
    let target = parse_target(&target).map_err(|m| ArgError::new("TARGET", m))?;
    let target = check_target(target, allow_remote).map_err(|m| ArgError::new("TARGET", m))?;
    let sources = pick_sources(target, source_base, nsources)?;
    let count = count.unwrap_or(DEFAULT_COUNT);
    let mut plan = Plan::new(rcpts, think_ms);
    if let Some(ms) = timeout {
        plan.timeouts = [ms; Stage::COUNT];
    }
    Ok(Command::Run(Box::new(Args {
        target,
        count,
        total: total.unwrap_or(u64::from(count)),
        rate,
        mix: mix.map(|(_, m)| m).unwrap_or_else(Mix::bots),
        plan,
        hold_ms,
        duration_ms,
        sources,
        json,
    })))
}

/// A decimal integer in `min..=max`.
fn number(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("expected a whole number, got '{s}'"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    Ok(n)
}

/// A duration such as `250ms`, `2s`, `5m` or `1h`, in milliseconds. A unit
/// is required (a bare `30` could mean anything) except for `0`. Capped to
/// fit the `u32` millisecond clocks of the loop (about 49 days).
pub fn parse_duration(s: &str) -> Result<u32, String> {
    let bad = || format!("expected a duration like 250ms, 2s, 5m or 1h, got '{s}'");
    if s == "0" {
        return Ok(0);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .filter(|&ms| ms <= u64::from(u32::MAX / 2))
        .map(|ms| ms as u32)
        .ok_or_else(|| format!("'{s}' is too long (at most about 24 days)"))
}

/// `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`; port 25 when not given. Only
/// literal addresses: a load tool should not depend on (or hammer) DNS.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 25))
        .map_err(|_| format!("'{s}' is not IP[:PORT] (a literal address, such as 127.0.0.1:2525)"))
}

/// True for 127.0.0.0/8 and ::1 (and ::ffff:127.x.y.z, which is 127.x.y.z).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback(),
            None => v6 == Ipv6Addr::LOCALHOST,
        },
    }
}

/// The guard: this is a load tool and must not be aimed at somebody else's
/// server by accident, so anything but loopback needs `--allow-remote`. A
/// v4-mapped IPv6 target is returned as plain IPv4 (the socket family the
/// kernel would use anyway).
pub fn check_target(target: SocketAddr, allow_remote: bool) -> Result<SocketAddr, String> {
    let target = match target.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), target.port()),
            None => target,
        },
        IpAddr::V4(_) => target,
    };
    if target.port() == 0 {
        return Err("port 0 is not a port one can connect to".into());
    }
    if !allow_remote && !is_loopback(target.ip()) {
        return Err(format!(
            "{} is not a loopback address (127.0.0.0/8 or ::1); smtarpit-flood is a \
             load tool and refuses to flood another host by accident; give \
             --allow-remote if you really mean it (and own that host)",
            target.ip()
        ));
    }
    Ok(target)
}

/// The source range to bind from, checked against the target.
fn pick_sources(
    target: SocketAddr,
    base: Option<Ipv4Addr>,
    count: u32,
) -> Result<Option<Sources>, ArgError> {
    let loopback_v4 = matches!(target.ip(), IpAddr::V4(v4) if v4.is_loopback());
    if target.is_ipv6() {
        if base.is_some() {
            return Err(ArgError::new(
                "--source-base",
                "an IPv4 source cannot reach an IPv6 target",
            ));
        }
        // ::1 is the only loopback address in IPv6: nothing to spread over.
        return Ok(None);
    }
    let base = match base {
        Some(b) => b,
        None if loopback_v4 => Ipv4Addr::new(127, 0, 0, 1),
        None => return Ok(None),
    };
    let last = u32::from(base)
        .checked_add(count - 1)
        .ok_or_else(|| ArgError::new("--sources", "the range runs past 255.255.255.255"))?;
    let sources = Sources { base, count };
    if loopback_v4 {
        // Stay inside 127.0.0.0/8 and off its network and broadcast addresses.
        let lo = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        let hi = u32::from(Ipv4Addr::new(127, 255, 255, 254));
        if u32::from(base) < lo || u32::from(base) > hi {
            return Err(ArgError::new(
                "--source-base",
                format!("{base} is not in 127.0.0.1..127.255.255.254 (the target is loopback)"),
            ));
        }
        if last > hi {
            return Err(ArgError::new(
                "--sources",
                format!(
                    "{count} addresses from {base} run past 127.255.255.254 (ends at {})",
                    Ipv4Addr::from(last)
                ),
            ));
        }
    }
    Ok(Some(sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, ArgError> {
        parse(list.iter().map(|s| s.to_string()))
    }

    fn run(list: &[&str]) -> Args {
        match args(list) {
            Ok(Command::Run(a)) => *a,
            other => panic!("{list:?} gave {other:?}"),
        }
    }

    fn flag_of(list: &[&str]) -> String {
        match args(list) {
            Err(e) => e.flag,
            other => panic!("{list:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2s"), Ok(2_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0s"), Ok(0));
        for bad in [
            "", "5", "s", "5x", "-1s", "1.5s", "5 s", "ms", "5sec", "1h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("1000h").is_err(), "past the u32 ms clock");
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn loopback_guard_accepts_loopback() {
        for t in [
            "127.0.0.1:25",
            "127.255.255.254:25",
            "[::1]:25",
            "[::ffff:127.0.0.1]:25",
        ] {
            let sa = parse_target(t).unwrap();
            assert!(check_target(sa, false).is_ok(), "{t} refused");
        }
    }

    #[test]
    fn loopback_guard_refuses_others() {
        for t in [
            "10.0.0.1:25",
            "0.0.0.0:25",
            "[::ffff:8.8.8.8]:25",
            "[::]:25",
            "8.8.8.8",
        ] {
            let sa = parse_target(t).unwrap();
            let err = check_target(sa, false).unwrap_err();
            assert!(err.contains("--allow-remote"), "{t}: {err}");
            assert!(
                check_target(sa, true).is_ok(),
                "{t} refused with --allow-remote"
            );
        }
        assert_eq!(flag_of(&["10.0.0.1:25"]), "TARGET");
    }

    #[test]
    fn mapped_target_becomes_v4() {
        let sa = check_target(parse_target("[::ffff:127.0.0.2]:2525").unwrap(), false).unwrap();
        assert_eq!(sa, "127.0.0.2:2525".parse().unwrap());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1").unwrap(),
            "127.0.0.1:25".parse().unwrap()
        );
        assert_eq!(parse_target("[::1]").unwrap(), "[::1]:25".parse().unwrap());
        assert!(parse_target("localhost:25").is_err());
        assert!(parse_target("127.0.0.1:99999").is_err());
        assert_eq!(flag_of(&["127.0.0.1:0"]), "TARGET");
    }

    #[test]
    fn defaults() {
        let a = run(&["127.0.0.1:2525"]);
        assert_eq!(a.count, 100);
        assert_eq!(a.total, 100);
        assert_eq!(a.rate, 1000);
        assert_eq!(a.plan.rcpts, 1);
        assert_eq!(a.plan.think_ms, 3_000);
        assert_eq!(a.plan.timeouts[Stage::Connect as usize], 300_000);
        assert_eq!(a.plan.timeouts[Stage::Data as usize], 120_000);
        assert_eq!(a.plan.timeouts[Stage::Body as usize], 600_000);
        assert_eq!(a.hold_ms, None);
        assert_eq!(a.duration_ms, None);
        let s = a.sources.unwrap();
        assert_eq!((s.base, s.count), (Ipv4Addr::new(127, 0, 0, 1), 16));
        assert_eq!(s.addr(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.addr(17), Ipv4Addr::new(127, 0, 0, 2));
        assert!(!a.json);
    }

    #[test]
    fn flags() {
        let a = run(&[
            "--count=20",
            "--total",
            "50",
            "--rate",
            "0",
            "--mix",
            "bot=70,silent=20,reset=10",
            "--rcpts",
            "3",
            "--think=250ms",
            "--timeout",
            "10s",
            "--hold",
            "1m",
            "--duration",
            "1h",
            "--sources",
            "300",
            "--source-base",
            "127.0.1.1",
            "--json",
            "127.0.0.1:2525",
        ]);
        assert_eq!((a.count, a.total, a.rate), (20, 50, 0));
        assert_eq!(a.plan.rcpts, 3);
        assert_eq!(a.plan.think_ms, 250);
        assert!(a.plan.timeouts.iter().all(|&t| t == 10_000));
        assert_eq!((a.hold_ms, a.duration_ms), (Some(60_000), Some(3_600_000)));
        let s = a.sources.unwrap();
        assert_eq!(s.addr(299), Ipv4Addr::new(127, 0, 2, 44));
        assert_eq!(s.addr(300), Ipv4Addr::new(127, 0, 1, 1));
        assert!(a.json);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(flag_of(&["--rate", "fast", "127.0.0.1"]), "--rate");
        assert_eq!(flag_of(&["--count", "0", "127.0.0.1"]), "--count");
        assert_eq!(flag_of(&["--count"]), "--count");
        assert_eq!(flag_of(&["--mix", "bot=x", "127.0.0.1"]), "--mix");
        assert_eq!(
            flag_of(&["--behaviour", "spammer", "127.0.0.1"]),
            "--behaviour"
        );
        assert_eq!(flag_of(&["--hold", "5", "127.0.0.1"]), "--hold");
        assert_eq!(flag_of(&["--duration", "0", "127.0.0.1"]), "--duration");
        assert_eq!(flag_of(&["--json=yes", "127.0.0.1"]), "--json");
        assert_eq!(flag_of(&["--frobnicate", "127.0.0.1"]), "--frobnicate");
        assert_eq!(
            flag_of(&[
                "--sources",
                "300",
                "--source-base",
                "127.255.255.1",
                "127.0.0.1"
            ]),
            "--sources"
        );
        assert_eq!(
            flag_of(&["--source-base", "10.0.0.1", "127.0.0.1"]),
            "--source-base"
        );
        assert_eq!(
            flag_of(&["--source-base", "127.0.0.1", "[::1]:25"]),
            "--source-base"
        );
        assert_eq!(
            flag_of(&["--mix", "bot=1", "--behaviour", "human", "127.0.0.1"]),
            "--behaviour"
        );
        assert_eq!(flag_of(&[]), "TARGET");
        assert_eq!(flag_of(&["127.0.0.1", "127.0.0.2"]), "TARGET");
    }

    #[test]
    fn help() {
        assert!(matches!(args(&["--count", "5", "-h"]), Ok(Command::Help)));
        assert!(matches!(args(&["--help"]), Ok(Command::Help)));
    }

    #[test]
    fn remote_target_binds_nothing_unless_asked() {
        let a = run(&["--allow-remote", "192.0.2.1:25"]);
        assert_eq!(a.sources, None);
        let a = run(&[
            "--allow-remote",
            "--source-base",
            "192.0.2.50",
            "192.0.2.1:25",
        ]);
        assert_eq!(a.sources.unwrap().base, Ipv4Addr::new(192, 0, 2, 50));
        assert_eq!(run(&["[::1]:25"]).sources, None);
    }
}
