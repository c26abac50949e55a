//! Configuration: one table of options drives the command line, the config
//! file, `--help` and the check of `etc/smtarpit.conf`.
//!
//! Every option is a row of [`OPTIONS`]: its long name (also its file key),
//! short letter, value syntax with its limits, default as it would be written
//! in the file, whether the file may set it, whether SIGHUP applies it live,
//! and a line of help. The command-line parser, the file parser, [`usage`],
//! [`Config::default`] and the test that reads `etc/smtarpit.conf` all walk
//! that table, so they cannot disagree.
//!
//! The module is pure: the caller reads the file (so that a reload works after
//! the chroot) and passes its text in. Errors are one line that names the
//! place at fault: `FILE:LINE: what is wrong` or `--flag: what is wrong`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The settings the daemon runs with. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Empty: decided at start-up (0.0.0.0:25 and [::]:25 as root,
    /// 127.0.0.1:2525 otherwise).
    pub listen: Vec<SocketAddr>,
    /// Empty: the system host name, resolved by the daemon.
    pub hostname: String,
    pub banner: String,
    pub human_threshold: u64,
    pub greet_pause: u64,
    pub trickle: Range,
    pub trickle_bytes: u32,
    pub reply_time: Range,
    pub max_session: u64,
    pub idle_timeout: u64,
    /// 0: automatic (the open-file limit less a reserve).
    pub max_clients: u32,
    /// 0: unlimited.
    pub max_per_ip: u32,
    /// `None`: standard error.
    pub log_file: Option<PathBuf>,
    pub user: String,
    pub chroot: PathBuf,
    pub no_chroot: bool,
    pub inetd: bool,
}

/// A span of milliseconds, `min <= max`; the daemon picks at random in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

/// What the command line asked for, besides settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cli {
    pub config_file: Option<PathBuf>,
    pub check_config: bool,
    pub verbose: u8,
    pub help: bool,
    pub version: bool,
    /// The setting flags, already checked and written as `--name=VALUE` (or
    /// `--name` for a flag), kept to re-apply over the file at every reload.
    pub args: Vec<String>,
}

/// One option: a row of [`OPTIONS`].
#[derive(Debug)]
pub struct Opt {
    /// Long name: `--name` on the command line, `name = ...` in the file.
    pub name: &'static str,
    pub short: Option<char>,
    /// Value syntax and limits.
    pub kind: Kind,
    /// The default, as it would be written in the file.
    pub default: &'static str,
    pub scope: Scope,
    /// One line for `--help`.
    pub help: &'static str,
    /// The `Config` field that a setting fills; `None` for command-line-only
    /// options, which fill `Cli`.
    field: Option<FieldFn>,
}

/// Where an option may be given and when a change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Command line only; an error in the file.
    Cli,
    /// A setting that SIGHUP applies to the running daemon.
    Live,
    /// A setting that only a restart applies (sockets, log path, privileges).
    Restart,
}

/// The syntax of an option's value, with its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ADDR:PORT` (`0.0.0.0:25`, `[::1]:2525`); each occurrence adds one.
    Addr,
    /// Printable ASCII of at most `max` bytes; `spaces` allows blanks inside.
    Text { max: usize, spaces: bool },
    /// `250ms`, `2s`, `5m`, `1h` or `0`, at least `min` milliseconds.
    Duration { min: u64 },
    /// `MIN-MAX` durations, or one (then MIN = MAX); MIN at least `min` ms.
    Range { min: u64 },
    /// A decimal integer in `min..=max`.
    Int { min: u32, max: u32 },
    /// A file-system path; `absolute` if it must start with `/`.
    Path { absolute: bool },
    /// `yes|no|true|false|on|off` in the file; on the command line the flag
    /// alone means yes.
    Flag,
    /// Command line only: each occurrence counts one (`-vv` is 2).
    Count,
}

/// The longest duration any setting takes: a week. It keeps deadlines far
/// from `u64` overflow and within the timer wheel's reach.
const MAX_MS: u64 = 7 * 24 * HOUR;
const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// Every option, in `--help` order. Settings (scope `Live` or `Restart`) are
/// also the keys of the config file, and `etc/smtarpit.conf` shows each with
/// its default.
pub static OPTIONS: &[Opt] = &[
    // Command line only.
    Opt {
        name: "config",
        short: Some('f'),
        kind: Kind::Path { absolute: false },
        default: "",
        scope: Scope::Cli,
        help: "read settings from PATH; command-line settings override it",
        field: None,
    },
    Opt {
        name: "check-config",
        short: Some('t'),
        kind: Kind::Flag,
        default: "no",
        scope: Scope::Cli,
        help: "check the configuration and exit",
        field: None,
    },
    Opt {
        name: "verbose",
        short: Some('v'),
        kind: Kind::Count,
        default: "0",
        scope: Scope::Cli,
        help: "log more; repeat for more (-vv)",
        field: None,
    },
    Opt {
        name: "help",
        short: Some('h'),
        kind: Kind::Flag,
        default: "no",
        scope: Scope::Cli,
        help: "print this help and exit",
        field: None,
    },
    Opt {
        name: "version",
        short: Some('V'),
        kind: Kind::Flag,
        default: "no",
        scope: Scope::Cli,
        help: "print the version and exit",
        field: None,
    },
    // Listening.
    Opt {
        name: "listen",
        short: Some('l'),
        kind: Kind::Addr,
        default: "",
        scope: Scope::Restart,
        help: "address to listen on, repeat for more; none: 0.0.0.0:25 and [::]:25 \
               as root, else 127.0.0.1:2525",
        field: Some(|c| Slot::Addrs(&mut c.listen)),
    },
    Opt {
        name: "inetd",
        short: None,
        kind: Kind::Flag,
        default: "no",
        scope: Scope::Restart,
        help: "serve one connection on standard input and output, from (x)inetd",
        field: Some(|c| Slot::Flag(&mut c.inetd)),
    },
    // Identity.
    Opt {
        name: "hostname",
        short: None,
        kind: Kind::Text {
            max: 255,
            spaces: false,
        },
        default: "",
        scope: Scope::Live,
        help: "host name in the greeting and replies; empty: the system's host name",
        field: Some(|c| Slot::Text(&mut c.hostname)),
    },
    Opt {
        name: "banner",
        short: None,
        kind: Kind::Text {
            max: 200,
            spaces: true,
        },
        default: "ESMTP",
        scope: Scope::Live,
        help: "text after the host name in the greeting: 220 <hostname> <banner>",
        field: Some(|c| Slot::Text(&mut c.banner)),
    },
    // Man or machine.
    Opt {
        name: "human-threshold",
        short: None,
        kind: Kind::Duration { min: 0 },
        default: "2s",
        scope: Scope::Live,
        help: "a client that answers the greeting sooner than this is a machine",
        field: Some(|c| Slot::Ms(&mut c.human_threshold)),
    },
    Opt {
        name: "greet-pause",
        short: None,
        kind: Kind::Duration { min: 0 },
        default: "0",
        scope: Scope::Live,
        help: "pause between 220- and the final 220; who speaks in it is a machine (0: off)",
        field: Some(|c| Slot::Ms(&mut c.greet_pause)),
    },
    // Tarpit timings.
    Opt {
        name: "trickle",
        short: None,
        kind: Kind::Range { min: 1 },
        default: "1s-2s",
        scope: Scope::Live,
        help: "random gap between trickled bytes to a machine",
        field: Some(|c| Slot::Range(&mut c.trickle)),
    },
    Opt {
        name: "trickle-bytes",
        short: None,
        kind: Kind::Int { min: 1, max: 64 },
        default: "1",
        scope: Scope::Live,
        help: "bytes sent at each trickle",
        field: Some(|c| Slot::Int(&mut c.trickle_bytes)),
    },
    Opt {
        name: "reply-time",
        short: None,
        kind: Kind::Range { min: 0 },
        default: "3m-6m",
        scope: Scope::Live,
        help: "how long a machine waits for each reply's final line",
        field: Some(|c| Slot::Range(&mut c.reply_time)),
    },
    Opt {
        name: "max-session",
        short: None,
        kind: Kind::Duration { min: 1 },
        default: "1h",
        scope: Scope::Live,
        help: "end a session with 421 after this long",
        field: Some(|c| Slot::Ms(&mut c.max_session)),
    },
    Opt {
        name: "idle-timeout",
        short: None,
        kind: Kind::Duration { min: 1 },
        default: "5m",
        scope: Scope::Live,
        help: "close a client that sends nothing for this long (RFC 5321 4.5.3.2.7)",
        field: Some(|c| Slot::Ms(&mut c.idle_timeout)),
    },
    // Limits.
    Opt {
        name: "max-clients",
        short: None,
        kind: Kind::Int {
            min: 0,
            max: u32::MAX,
        },
        default: "0",
        scope: Scope::Live,
        help: "most connections held at once; 0: the open-file limit less a reserve",
        field: Some(|c| Slot::Int(&mut c.max_clients)),
    },
    Opt {
        name: "max-per-ip",
        short: None,
        kind: Kind::Int {
            min: 0,
            max: u32::MAX,
        },
        default: "64",
        scope: Scope::Live,
        help: "most connections from one address; 0: unlimited",
        field: Some(|c| Slot::Int(&mut c.max_per_ip)),
    },
    // Logging.
    Opt {
        name: "log-file",
        short: None,
        kind: Kind::Path { absolute: true },
        default: "",
        scope: Scope::Restart,
        help: "append records to this file, reopened on SIGHUP; empty: standard error",
        field: Some(|c| Slot::OptPath(&mut c.log_file)),
    },
    // Privileges.
    Opt {
        name: "user",
        short: None,
        kind: Kind::Text {
            max: 255,
            spaces: false,
        },
        default: "nobody",
        scope: Scope::Restart,
        help: "user to run as once the ports are bound",
        field: Some(|c| Slot::Text(&mut c.user)),
    },
    Opt {
        name: "chroot",
        short: None,
        kind: Kind::Path { absolute: true },
        default: "/var/empty",
        scope: Scope::Restart,
        help: "directory to chroot into before serving",
        field: Some(|c| Slot::Path(&mut c.chroot)),
    },
    Opt {
        name: "no-chroot",
        short: None,
        kind: Kind::Flag,
        default: "no",
        scope: Scope::Restart,
        help: "do not chroot (for running without root)",
        field: Some(|c| Slot::Flag(&mut c.no_chroot)),
    },
];

/// Gives the `Config` field that a setting fills. One accessor serves both
/// writing (parsing) and reading (comparing, printing), so it hands out a
/// mutable view; readers work on a clone.
type FieldFn = fn(&mut Config) -> Slot<'_>;

/// A typed, mutable view of one `Config` field.
#[derive(Debug, PartialEq)]
enum Slot<'a> {
    Addrs(&'a mut Vec<SocketAddr>),
    Text(&'a mut String),
    Ms(&'a mut u64),
    Range(&'a mut Range),
    Int(&'a mut u32),
    Path(&'a mut PathBuf),
    OptPath(&'a mut Option<PathBuf>),
    Flag(&'a mut bool),
}

impl Opt {
    /// Whether the config file may set it.
    pub fn in_file(&self) -> bool {
        self.scope != Scope::Cli
    }

    /// Whether it may be given more than once.
    pub fn repeatable(&self) -> bool {
        matches!(self.kind, Kind::Addr | Kind::Count)
    }
}

impl Kind {
    /// Whether it takes a value on the command line.
    pub fn takes_value(self) -> bool {
        !matches!(self, Kind::Flag | Kind::Count)
    }

    /// The placeholder for its value in `--help`.
    fn metavar(self) -> &'static str {
        match self {
            Kind::Addr => "ADDR:PORT",
            Kind::Text { spaces: false, .. } => "NAME",
            Kind::Text { spaces: true, .. } => "TEXT",
            Kind::Duration { .. } => "TIME",
            Kind::Range { .. } => "MIN-MAX",
            Kind::Int { .. } => "N",
            Kind::Path { .. } => "PATH",
            Kind::Flag | Kind::Count => "",
        }
    }
}

impl Default for Config {
    /// The table's defaults, parsed from their text, so there is one source.
    fn default() -> Self {
        let mut c = Config {
            listen: Vec::new(),
            hostname: String::new(),
            banner: String::new(),
            human_threshold: 0,
            greet_pause: 0,
            trickle: Range { min: 0, max: 0 },
            trickle_bytes: 0,
            reply_time: Range { min: 0, max: 0 },
            max_session: 0,
            idle_timeout: 0,
            max_clients: 0,
            max_per_ip: 0,
            log_file: None,
            user: String::new(),
            chroot: PathBuf::new(),
            no_chroot: false,
            inetd: false,
        };
        for opt in OPTIONS.iter().filter(|o| o.in_file()) {
            if let Err(e) = store(opt, &mut c, opt.default, true) {
                panic!("OPTIONS: the default of {}: {e}", opt.name);
            }
        }
        c
    }
}

impl Config {
    /// Names of the restart-only settings whose value differs in `new`: a
    /// reload applies the rest and should say that these wait for a restart.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        // Clones, because fields are reached through a mutable view; this runs
        // once per reload.
        let (mut old, mut new) = (self.clone(), new.clone());
        OPTIONS
            .iter()
            .filter(|o| o.scope == Scope::Restart)
            .filter(|o| {
                let field = o.field.expect("a setting has a field");
                field(&mut old) != field(&mut new)
            })
            .map(|o| o.name)
            .collect()
    }
}

/// The settings in file syntax, one `key = value` line each (one per address
/// for `listen`), in table order; `load` reads it back to the same `Config`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut c = self.clone();
        for opt in OPTIONS.iter().filter(|o| o.in_file()) {
            let field = opt.field.expect("a setting has a field");
            let value = match field(&mut c) {
                Slot::Addrs(list) if !list.is_empty() => {
                    for addr in list.iter() {
                        writeln!(f, "{} = {addr}", opt.name)?;
                    }
                    continue;
                }
                Slot::Addrs(_) => String::new(),
                Slot::Text(s) => s.clone(),
                Slot::Ms(ms) => show_ms(*ms),
                Slot::Range(r) => show_range(*r),
                Slot::Int(n) => n.to_string(),
                Slot::Path(p) => p.display().to_string(),
                Slot::OptPath(p) => p
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                Slot::Flag(b) => if *b { "yes" } else { "no" }.to_owned(),
            };
            if value.is_empty() {
                writeln!(f, "{} =", opt.name)?;
            } else {
                writeln!(f, "{} = {value}", opt.name)?;
            }
        }
        Ok(())
    }
}

/// Reads the command line (without argv[0]). Setting values are checked here,
/// so a bad flag fails at once, and kept in `Cli::args` for [`load`].
pub fn parse_cli(args: &[String]) -> Result<Cli, String> {
    let mut cli = Cli::default();
    parse_args(args, &mut cli, &mut Config::default())?;
    Ok(cli)
}

/// Defaults, then the file (if any), then the command-line settings.
/// `file` is (path for messages, contents).
pub fn load(cli: &Cli, file: Option<(&str, &str)>) -> Result<Config, String> {
    let mut cfg = Config::default();
    if let Some((path, text)) = file {
        apply_file(&mut cfg, path, text)?;
    }
    parse_args(&cli.args, &mut Cli::default(), &mut cfg)?;
    Ok(cfg)
}

/// `--help`, generated from [`OPTIONS`].
pub fn usage() -> String {
    let left = |o: &Opt| {
        let short = o.short.map_or("    ".to_owned(), |c| format!("-{c}, "));
        let meta = o.kind.metavar();
        let sep = if meta.is_empty() { "" } else { " " };
        format!("  {short}--{}{sep}{meta}", o.name)
    };
    let width = OPTIONS.iter().map(|o| left(o).len()).max().unwrap_or(0) + 2;
    let entry = |out: &mut String, o: &Opt| {
        let mut help = o.help.to_owned();
        if o.kind.takes_value() && !o.default.is_empty() {
            help += &format!(" [{}]", o.default);
        }
        if o.scope == Scope::Restart {
            help += " (restart)";
        }
        wrap(out, &left(o), width, &help);
    };
    let mut out = String::from(
        "Usage: smtarpit [OPTION]...\n\
         An SMTP tarpit: trickles replies to spam machines, answers people normally.\n\n\
         Options:\n",
    );
    OPTIONS
        .iter()
        .filter(|o| !o.in_file())
        .for_each(|o| entry(&mut out, o));
    out += "\nSettings, also keys of the config file (key = value), which these override:\n";
    OPTIONS
        .iter()
        .filter(|o| o.in_file())
        .for_each(|o| entry(&mut out, o));
    out += "\nTIME is 250ms, 2s, 5m, 1h or 0; MIN-MAX is one TIME or two; [default].\n\
            SIGHUP reloads the file; settings marked (restart) change only at a restart.\n";
    out
}

/// Appends `left`, padded to `width`, and `text` word-wrapped to 79 columns
/// with its continuation lines indented to `width`.
fn wrap(out: &mut String, left: &str, width: usize, text: &str) {
    let mut line = format!("{left:width$}");
    let mut fresh = true;
    for word in text.split(' ') {
        if !fresh && line.len() + 1 + word.len() > 79 {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(width);
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// Applies the file's lines in order; errors are `PATH:LINE: what is wrong`.
fn apply_file(cfg: &mut Config, path: &str, text: &str) -> Result<(), String> {
    // Settings seen so far, with the line that set each.
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = |what: String| format!("{path}:{}: {what}", i + 1);
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(at(format!("expected 'key = value', found '{line}'")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(at("missing key before '='".to_owned()));
        }
        let opt = OPTIONS
            .iter()
            .find(|o| o.name == key)
            .ok_or_else(|| at(format!("unknown key '{key}'")))?;
        if !opt.in_file() {
            return Err(at(format!(
                "'{key}' is a command-line option, not a file key"
            )));
        }
        let earlier = seen.iter().find(|(k, _)| *k == key).map(|&(_, n)| n);
        if let (Some(n), false) = (earlier, opt.repeatable()) {
            return Err(at(format!("duplicate key '{key}' (first set on line {n})")));
        }
        store(opt, cfg, value, earlier.is_none()).map_err(|e| at(format!("{key}: {e}")))?;
        seen.push((opt.name, i + 1));
    }
    Ok(())
}

/// The line without its comment: `#` at the start or after a blank begins one,
/// so `banner = ESMTP#1` keeps its `#`.
fn strip_comment(line: &str) -> &str {
    let mut after_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && after_blank {
            return &line[..i];
        }
        after_blank = c.is_whitespace();
    }
    line
}

/// Reads command-line arguments into `cli` and `cfg`: getopt style, with
/// `--name VALUE`, `--name=VALUE`, `-n VALUE`, `-nVALUE` and clusters (`-tvv`).
fn parse_args(args: &[String], cli: &mut Cli, cfg: &mut Config) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            // The daemon takes no operands.
            return match rest.next() {
                Some(extra) => Err(format!("unexpected argument '{extra}'")),
                None => Ok(()),
            };
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let flag = format!("--{name}");
            let opt = OPTIONS
                .iter()
                .find(|o| o.name == name)
                .ok_or_else(|| format!("unknown option '{flag}'"))?;
            let value = match (opt.kind.takes_value(), inline) {
                (true, Some(v)) => Some(v),
                (true, None) => Some(
                    rest.next()
                        .ok_or_else(|| format!("{flag}: missing value"))?
                        .as_str(),
                ),
                (false, Some(_)) => return Err(format!("{flag}: takes no value")),
                (false, None) => None,
            };
            take(opt, &flag, value, cli, cfg, &mut seen)?;
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (i, c) in cluster.char_indices() {
                let flag = format!("-{c}");
                let opt = OPTIONS
                    .iter()
                    .find(|o| o.short == Some(c))
                    .ok_or_else(|| format!("unknown option '{flag}'"))?;
                if !opt.kind.takes_value() {
                    take(opt, &flag, None, cli, cfg, &mut seen)?;
                    continue;
                }
                // The rest of the cluster is the value, or else the next argument.
                let value = match &cluster[i + c.len_utf8()..] {
                    "" => rest
                        .next()
                        .ok_or_else(|| format!("{flag}: missing value"))?
                        .as_str(),
                    inline => inline,
                };
                take(opt, &flag, Some(value), cli, cfg, &mut seen)?;
                break;
            }
        } else {
            return Err(format!("unexpected argument '{arg}'"));
        }
    }
    Ok(())
}

/// One command-line option: a setting goes into `cfg` (and, normalised, into
/// `cli.args`); a command-line-only option goes into `cli`.
fn take(
    opt: &'static Opt,
    flag: &str,
    value: Option<&str>,
    cli: &mut Cli,
    cfg: &mut Config,
    seen: &mut Vec<&'static str>,
) -> Result<(), String> {
    let first = !seen.contains(&opt.name);
    if !first && !opt.repeatable() {
        return Err(format!("{flag}: given twice"));
    }
    seen.push(opt.name);
    if opt.field.is_some() {
        store(opt, cfg, value.unwrap_or("yes"), first).map_err(|e| format!("{flag}: {e}"))?;
        cli.args.push(match value {
            Some(v) => format!("--{}={v}", opt.name),
            None => format!("--{}", opt.name),
        });
        return Ok(());
    }
    match (opt.name, value) {
        ("config", Some("")) => return Err(format!("{flag}: missing value")),
        ("config", Some(path)) => cli.config_file = Some(PathBuf::from(path)),
        ("check-config", _) => cli.check_config = true,
        ("verbose", _) => cli.verbose = cli.verbose.saturating_add(1),
        ("help", _) => cli.help = true,
        ("version", _) => cli.version = true,
        _ => unreachable!("OPTIONS: command-line option {} is not handled", opt.name),
    }
    Ok(())
}

/// Parses `text` as `opt`'s value into its field. `first` says this is the
/// first occurrence in the current source (file or command line), where a
/// repeatable setting starts its list afresh. Errors are `'VALUE': problem`.
fn store(opt: &Opt, cfg: &mut Config, text: &str, first: bool) -> Result<(), String> {
    let field = opt.field.expect("a setting has a field");
    // An empty value means the default only where the default is empty.
    if text.is_empty() && !opt.default.is_empty() {
        return Err("missing value".to_owned());
    }
    let quoted = |e: String| format!("'{text}': {e}");
    match (opt.kind, field(cfg)) {
        (Kind::Addr, Slot::Addrs(list)) => {
            if first {
                list.clear();
            }
            if !text.is_empty() {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    quoted("expected ADDR:PORT, e.g. 0.0.0.0:25 or [::1]:2525".to_owned())
                })?;
                if addr.port() != 0 && list.contains(&addr) {
                    return Err(quoted("already listed".to_owned()));
                }
                list.push(addr);
            }
        }
        (Kind::Text { max, spaces }, Slot::Text(s)) => {
            check_text(text, max, spaces).map_err(quoted)?;
            *s = text.to_owned();
        }
        (Kind::Duration { min }, Slot::Ms(ms)) => {
            let v = parse_ms(text).map_err(quoted)?;
            if v < min {
                return Err(quoted(format!("must be at least {}", show_ms(min))));
            }
            *ms = v;
        }
        (Kind::Range { min }, Slot::Range(r)) => *r = parse_range(text, min).map_err(quoted)?,
        (Kind::Int { min, max }, Slot::Int(n)) => {
            *n = parse_int(text, min, max).map_err(quoted)?;
        }
        (Kind::Path { absolute }, Slot::Path(p)) => {
            check_path(text, absolute).map_err(quoted)?;
            *p = PathBuf::from(text);
        }
        (Kind::Path { absolute }, Slot::OptPath(p)) => {
            *p = if text.is_empty() {
                None
            } else {
                check_path(text, absolute).map_err(quoted)?;
                Some(PathBuf::from(text))
            };
        }
        (Kind::Flag, Slot::Flag(b)) => *b = parse_flag(text).map_err(quoted)?,
        (kind, slot) => unreachable!("OPTIONS: {} is {kind:?} but fills {slot:?}", opt.name),
    }
    Ok(())
}

/// `250ms`, `2s`, `5m`, `1h` or a bare `0`, in milliseconds, at most a week.
fn parse_ms(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err("not a duration (write e.g. 250ms, 2s, 5m, 1h)".to_owned());
    }
    let too_long = || format!("longer than {}", show_ms(MAX_MS));
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let scale = match unit {
        "ms" => 1,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        "" if n == 0 => 1,
        "" => return Err(format!("add a unit: {n}ms, {n}s, {n}m or {n}h")),
        _ if unit.starts_with(['.', ',']) => {
            return Err("whole numbers only: write 1500ms, not 1.5s".to_owned())
        }
        _ => return Err(format!("unknown unit '{unit}' (use ms, s, m or h)")),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms <= MAX_MS => Ok(ms),
        _ => Err(too_long()),
    }
}

/// `MIN-MAX` or one duration (then min = max); min at least `least` ms.
fn parse_range(text: &str, least: u64) -> Result<Range, String> {
    let (min, max) = match text.split_once('-') {
        Some((lo, hi)) => (
            parse_ms(lo).map_err(|e| format!("minimum: {e}"))?,
            parse_ms(hi).map_err(|e| format!("maximum: {e}"))?,
        ),
        None => parse_ms(text).map(|ms| (ms, ms))?,
    };
    if min < least {
        return Err(format!("minimum must be at least {}", show_ms(least)));
    }
    if min > max {
        return Err("minimum exceeds maximum".to_owned());
    }
    Ok(Range { min, max })
}

/// Decimal digits only (no sign), in `min..=max`.
fn parse_int(text: &str, min: u32, max: u32) -> Result<u32, String> {
    let range = || format!("must be from {min} to {max}");
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a whole number; {}", range()));
    }
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(range()),
    }
}

fn parse_flag(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err("expected yes or no (or true/false, on/off)".to_owned()),
    }
}

/// Host names, banners and user names go into SMTP replies or system calls:
/// printable ASCII only (RFC 5321 2.4: replies are ASCII), bounded in length.
/// The bounds keep `220 <hostname> <banner>` within the 512-octet reply line
/// of RFC 5321 4.5.3.1.5 (a domain is at most 255 octets, 4.5.3.1.2).
fn check_text(text: &str, max: usize, spaces: bool) -> Result<(), String> {
    for c in text.chars() {
        match c {
            ' ' if spaces => {}
            ' ' => return Err("must not contain blanks".to_owned()),
            c if c.is_control() => return Err("contains a control character".to_owned()),
            c if !c.is_ascii() => return Err("must be ASCII (RFC 5321 2.4)".to_owned()),
            _ => {}
        }
    }
    if text.contains(" #") {
        // It would read back as a comment from the file.
        return Err("' #' would start a comment".to_owned());
    }
    if text.len() > max {
        return Err(format!("longer than {max} bytes"));
    }
    Ok(())
}

fn check_path(text: &str, absolute: bool) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err("contains a control character".to_owned());
    }
    if absolute && !text.starts_with('/') {
        // The daemon chroots, so a relative path would change meaning.
        return Err("must be an absolute path".to_owned());
    }
    Ok(())
}

/// Milliseconds in the largest unit that divides them: `2s`, `250ms`, `0`.
fn show_ms(ms: u64) -> String {
    match ms {
        0 => "0".to_owned(),
        _ if ms % HOUR == 0 => format!("{}h", ms / HOUR),
        _ if ms % MINUTE == 0 => format!("{}m", ms / MINUTE),
        _ if ms % SECOND == 0 => format!("{}s", ms / SECOND),
        _ => format!("{ms}ms"),
    }
}

fn show_range(r: Range) -> String {
    if r.min == r.max {
        show_ms(r.min)
    } else {
        format!("{}-{}", show_ms(r.min), show_ms(r.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped, annotated config file.
    const CONF: &str = include_str!("../etc/smtarpit.conf");

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn cli(line: &str) -> Cli {
        parse_cli(&args(line)).unwrap()
    }

    fn cli_err(line: &str) -> String {
        parse_cli(&args(line)).unwrap_err()
    }

    fn file(text: &str) -> Result<Config, String> {
        load(&Cli::default(), Some(("test.conf", text)))
    }

    /// Loads `key = value` alone and returns the config or the error.
    fn set(key: &str, value: &str) -> Result<Config, String> {
        file(&format!("{key} = {value}\n"))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // --- the table ---

    #[test]
    fn table_names_are_unique_and_shaped() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(
                o.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{}",
                o.name
            );
            assert!(
                OPTIONS[i + 1..].iter().all(|p| p.name != o.name),
                "{}",
                o.name
            );
            if let Some(c) = o.short {
                assert!(OPTIONS[i + 1..].iter().all(|p| p.short != Some(c)), "-{c}");
            }
            assert_eq!(o.in_file(), o.field.is_some(), "{}", o.name);
            assert!(!o.help.is_empty() && !o.help.contains('\n'), "{}", o.name);
        }
        let cli_only: Vec<_> = OPTIONS
            .iter()
            .filter(|o| !o.in_file())
            .map(|o| o.name)
            .collect();
        assert_eq!(
            cli_only,
            ["config", "check-config", "verbose", "help", "version"]
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let want = Config {
            listen: vec![],
            hostname: String::new(),
            banner: "ESMTP".into(),
            human_threshold: 2000,
            greet_pause: 0,
            trickle: Range {
                min: 1000,
                max: 2000,
            },
            trickle_bytes: 1,
            reply_time: Range {
                min: 180_000,
                max: 360_000,
            },
            max_session: 3_600_000,
            idle_timeout: 300_000,
            max_clients: 0,
            max_per_ip: 64,
            log_file: None,
            user: "nobody".into(),
            chroot: "/var/empty".into(),
            no_chroot: false,
            inetd: false,
        };
        assert_eq!(Config::default(), want);
    }

    #[test]
    fn defaults_print_back_as_the_table_text() {
        let shown = Config::default().to_string();
        let lines: Vec<&str> = shown.lines().collect();
        let settings: Vec<&Opt> = OPTIONS.iter().filter(|o| o.in_file()).collect();
        assert_eq!(lines.len(), settings.len());
        for (line, o) in lines.iter().zip(settings) {
            assert_eq!(*line, format!("{} = {}", o.name, o.default).trim_end());
        }
    }

    #[test]
    fn display_round_trips_through_load() {
        let c = load(
            &cli(
                "-l 0.0.0.0:25 -l [::1]:2525 --hostname=mx.example.org --banner=ESMTP_x \
                  --trickle=250ms-90s --reply-time=4m --log-file=/var/log/smtarpit.log \
                  --no-chroot --inetd --max-per-ip=3",
            ),
            None,
        )
        .unwrap();
        assert_eq!(file(&c.to_string()).unwrap(), c);
        assert!(c
            .to_string()
            .contains("listen = 0.0.0.0:25\nlisten = [::1]:2525\n"));
    }

    // --- values ---

    #[test]
    fn durations() {
        for (text, ms) in [
            ("250ms", 250),
            ("2s", 2000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                set("human-threshold", text).unwrap().human_threshold,
                ms,
                "{text}"
            );
        }
        for text in ["0", "0s", "0ms"] {
            assert_eq!(set("greet-pause", text).unwrap().greet_pause, 0);
        }
        assert_eq!(set("max-session", "168h").unwrap().max_session, MAX_MS);
        let bad = [
            ("5", "add a unit: 5ms, 5s, 5m or 5h"),
            ("5x", "unknown unit 'x' (use ms, s, m or h)"),
            ("5 s", "unknown unit ' s' (use ms, s, m or h)"),
            ("1.5s", "whole numbers only: write 1500ms, not 1.5s"),
            ("s", "not a duration (write e.g. 250ms, 2s, 5m, 1h)"),
            ("-1s", "not a duration (write e.g. 250ms, 2s, 5m, 1h)"),
            ("169h", "longer than 168h"),
            ("99999999999999999999h", "longer than 168h"),
        ];
        for (text, why) in bad {
            assert_eq!(
                set("greet-pause", text).unwrap_err(),
                format!("test.conf:1: greet-pause: '{text}': {why}")
            );
        }
    }

    #[test]
    fn durations_with_a_floor() {
        for key in ["max-session", "idle-timeout"] {
            assert_eq!(
                set(key, "0").unwrap_err(),
                format!("test.conf:1: {key}: '0': must be at least 1ms")
            );
            assert!(set(key, "1ms").is_ok());
        }
    }

    #[test]
    fn ranges() {
        let r = |min, max| Range { min, max };
        assert_eq!(set("trickle", "1s-2s").unwrap().trickle, r(1000, 2000));
        assert_eq!(set("trickle", "500ms-1m").unwrap().trickle, r(500, 60_000));
        assert_eq!(set("trickle", "3s").unwrap().trickle, r(3000, 3000));
        assert_eq!(set("trickle", "1ms").unwrap().trickle, r(1, 1));
        assert_eq!(set("reply-time", "0").unwrap().reply_time, r(0, 0));
        assert_eq!(set("reply-time", "0-6m").unwrap().reply_time, r(0, 360_000));
        let bad = [
            ("2s-1s", "minimum exceeds maximum"),
            ("0-2s", "minimum must be at least 1ms"),
            ("0", "minimum must be at least 1ms"),
            (
                "1s-",
                "maximum: not a duration (write e.g. 250ms, 2s, 5m, 1h)",
            ),
            (
                "-1s",
                "minimum: not a duration (write e.g. 250ms, 2s, 5m, 1h)",
            ),
            ("1-2s", "minimum: add a unit: 1ms, 1s, 1m or 1h"),
            (
                "1s-2s-3s",
                "maximum: unknown unit 's-3s' (use ms, s, m or h)",
            ),
            ("1s - 2s", "minimum: unknown unit 's ' (use ms, s, m or h)"),
        ];
        for (text, why) in bad {
            assert_eq!(
                set("trickle", text).unwrap_err(),
                format!("test.conf:1: trickle: '{text}': {why}")
            );
        }
    }

    #[test]
    fn integers() {
        assert_eq!(set("trickle-bytes", "1").unwrap().trickle_bytes, 1);
        assert_eq!(set("trickle-bytes", "64").unwrap().trickle_bytes, 64);
        assert_eq!(
            set("max-clients", "4294967295").unwrap().max_clients,
            u32::MAX
        );
        assert_eq!(set("max-per-ip", "0").unwrap().max_per_ip, 0);
        let bad = [
            ("trickle-bytes", "0", "must be from 1 to 64"),
            ("trickle-bytes", "65", "must be from 1 to 64"),
            (
                "trickle-bytes",
                "+5",
                "not a whole number; must be from 1 to 64",
            ),
            (
                "trickle-bytes",
                "-1",
                "not a whole number; must be from 1 to 64",
            ),
            (
                "trickle-bytes",
                "1k",
                "not a whole number; must be from 1 to 64",
            ),
            ("max-clients", "4294967296", "must be from 0 to 4294967295"),
        ];
        for (key, text, why) in bad {
            assert_eq!(
                set(key, text).unwrap_err(),
                format!("test.conf:1: {key}: '{text}': {why}")
            );
        }
    }

    #[test]
    fn flags_in_the_file() {
        for (text, want) in [
            ("yes", true),
            ("no", false),
            ("true", true),
            ("false", false),
            ("on", true),
            ("off", false),
            ("Yes", true),
        ] {
            assert_eq!(set("no-chroot", text).unwrap().no_chroot, want, "{text}");
        }
        assert_eq!(
            set("inetd", "maybe").unwrap_err(),
            "test.conf:1: inetd: 'maybe': expected yes or no (or true/false, on/off)"
        );
        assert_eq!(
            set("inetd", "").unwrap_err(),
            "test.conf:1: inetd: missing value"
        );
    }

    #[test]
    fn addresses() {
        let c = set("listen", "[::1]:2525").unwrap();
        assert_eq!(c.listen, [addr("[::1]:2525")]);
        assert_eq!(
            set("listen", "0.0.0.0:0").unwrap().listen,
            [addr("0.0.0.0:0")]
        );
        for text in [
            "localhost:25",
            "0.0.0.0",
            "::1:25",
            "[::1]:99999",
            "1.2.3.4:25x",
        ] {
            assert_eq!(
                set("listen", text).unwrap_err(),
                format!(
                    "test.conf:1: listen: '{text}': expected ADDR:PORT, e.g. 0.0.0.0:25 or [::1]:2525"
                )
            );
        }
        // An empty value is the start-up default: no addresses.
        assert_eq!(set("listen", "").unwrap().listen, []);
    }

    #[test]
    fn text_values() {
        assert_eq!(
            set("hostname", "mx.example.org").unwrap().hostname,
            "mx.example.org"
        );
        assert_eq!(set("hostname", "").unwrap().hostname, "");
        assert_eq!(
            set("banner", "ESMTP Postfix (Debian)").unwrap().banner,
            "ESMTP Postfix (Debian)"
        );
        assert_eq!(
            set("hostname", &"a".repeat(255)).unwrap().hostname.len(),
            255
        );
        assert_eq!(set("banner", &"b".repeat(200)).unwrap().banner.len(), 200);
        let err = |key, text: &str| set(key, text).unwrap_err();
        assert_eq!(
            err("hostname", "mx example"),
            "test.conf:1: hostname: 'mx example': must not contain blanks"
        );
        assert_eq!(
            err("hostname", "mx\u{1}"),
            "test.conf:1: hostname: 'mx\u{1}': contains a control character"
        );
        assert_eq!(
            err("hostname", "mx\u{e9}"),
            "test.conf:1: hostname: 'mx\u{e9}': must be ASCII (RFC 5321 2.4)"
        );
        assert!(err("hostname", &"a".repeat(256)).ends_with("': longer than 255 bytes"));
        assert!(err("banner", &"b".repeat(201)).ends_with("': longer than 200 bytes"));
        assert_eq!(
            err("banner", "ESMTP\tx"),
            "test.conf:1: banner: 'ESMTP\tx': contains a control character"
        );
        assert_eq!(err("banner", ""), "test.conf:1: banner: missing value");
        assert_eq!(err("user", ""), "test.conf:1: user: missing value");
        assert_eq!(
            err("user", "no body"),
            "test.conf:1: user: 'no body': must not contain blanks"
        );
        // From the command line, where no comment can cut it short.
        assert_eq!(
            parse_cli(&["--banner=ESMTP\u{a0}#1".into()]).unwrap_err(),
            "--banner: 'ESMTP\u{a0}#1': must be ASCII (RFC 5321 2.4)"
        );
        assert_eq!(
            parse_cli(&["--banner".into(), "ESMTP #1".into()]).unwrap_err(),
            "--banner: 'ESMTP #1': ' #' would start a comment"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            set("log-file", "/var/log/smtarpit.log").unwrap().log_file,
            Some("/var/log/smtarpit.log".into())
        );
        assert_eq!(set("log-file", "").unwrap().log_file, None);
        assert_eq!(
            set("chroot", "/srv/empty dir").unwrap().chroot,
            PathBuf::from("/srv/empty dir")
        );
        assert_eq!(
            set("chroot", "var/empty").unwrap_err(),
            "test.conf:1: chroot: 'var/empty': must be an absolute path"
        );
        assert_eq!(
            set("chroot", "").unwrap_err(),
            "test.conf:1: chroot: missing value"
        );
        assert_eq!(
            cli("-f ./smtarpit.conf").config_file,
            Some("./smtarpit.conf".into())
        );
    }

    // --- the file ---

    #[test]
    fn comments_blanks_and_whitespace() {
        let c = file(
            "# a whole-line comment\n\
             \n\
             \t  # an indented one\n\
             banner = ESMTP ready  # after the value\r\n\
             \thostname=mx.example.org#not-a-comment\n\
             trickle =   2s-3s   \n\
             #trickle = 9s\n",
        )
        .unwrap();
        assert_eq!(c.banner, "ESMTP ready");
        assert_eq!(c.hostname, "mx.example.org#not-a-comment");
        assert_eq!(
            c.trickle,
            Range {
                min: 2000,
                max: 3000
            }
        );
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let text = "# header\n\nbanner = ESMTP\n\n\n\ntrickel = 1s\n";
        assert_eq!(
            load(&Cli::default(), Some(("/etc/smtarpit.conf", text))).unwrap_err(),
            "/etc/smtarpit.conf:7: unknown key 'trickel'"
        );
        assert_eq!(
            file("\n\ntrickle = 2s-1s\n").unwrap_err(),
            "test.conf:3: trickle: '2s-1s': minimum exceeds maximum"
        );
        assert_eq!(
            file("banner ESMTP\n").unwrap_err(),
            "test.conf:1: expected 'key = value', found 'banner ESMTP'"
        );
        assert_eq!(
            file("= 3\n").unwrap_err(),
            "test.conf:1: missing key before '='"
        );
        assert_eq!(
            file("max clients = 3\n").unwrap_err(),
            "test.conf:1: unknown key 'max clients'"
        );
        assert_eq!(
            file("Banner = x\n").unwrap_err(),
            "test.conf:1: unknown key 'Banner'"
        );
        assert_eq!(
            file("--banner = x\n").unwrap_err(),
            "test.conf:1: unknown key '--banner'"
        );
    }

    #[test]
    fn command_line_keys_are_not_file_keys() {
        for key in ["config", "check-config", "verbose", "help", "version"] {
            assert_eq!(
                set(key, "x").unwrap_err(),
                format!("test.conf:1: '{key}' is a command-line option, not a file key")
            );
        }
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            file("trickle = 1s\nbanner = x\ntrickle = 2s\n").unwrap_err(),
            "test.conf:3: duplicate key 'trickle' (first set on line 1)"
        );
        assert_eq!(
            file("no-chroot = yes\n\nno-chroot = yes\n").unwrap_err(),
            "test.conf:3: duplicate key 'no-chroot' (first set on line 1)"
        );
    }

    #[test]
    fn listen_repeats_in_the_file() {
        let c = file("listen = 0.0.0.0:25\nlisten = [::]:25\n").unwrap();
        assert_eq!(c.listen, [addr("0.0.0.0:25"), addr("[::]:25")]);
        assert_eq!(
            file("listen = 0.0.0.0:25\nlisten = 0.0.0.0:25\n").unwrap_err(),
            "test.conf:2: listen: '0.0.0.0:25': already listed"
        );
    }

    // --- the command line ---

    #[test]
    fn command_line_forms() {
        let want = vec![addr("127.0.0.1:2525")];
        for line in [
            "--listen 127.0.0.1:2525",
            "--listen=127.0.0.1:2525",
            "-l 127.0.0.1:2525",
            "-l127.0.0.1:2525",
        ] {
            let c = cli(line);
            assert_eq!(c.args, ["--listen=127.0.0.1:2525"], "{line}");
            assert_eq!(load(&c, None).unwrap().listen, want, "{line}");
        }
        assert_eq!(cli("").args, Vec::<String>::new());
        assert_eq!(cli("-vv").verbose, 2);
        assert_eq!(cli("-v --verbose -v").verbose, 3);
        let c = cli("-tvf/etc/x.conf -V -h --no-chroot");
        assert!(c.check_config && c.version && c.help);
        assert_eq!(
            (c.verbose, c.config_file.clone()),
            (1, Some("/etc/x.conf".into()))
        );
        assert_eq!(c.args, ["--no-chroot"]);
        assert!(load(&c, None).unwrap().no_chroot);
        assert_eq!(
            cli("--config /etc/x.conf").config_file,
            Some("/etc/x.conf".into())
        );
        assert_eq!(cli("--").args, Vec::<String>::new());
    }

    #[test]
    fn command_line_errors_name_the_flag() {
        assert_eq!(cli_err("--x"), "unknown option '--x'");
        assert_eq!(cli_err("--x=1"), "unknown option '--x'");
        assert_eq!(cli_err("-x"), "unknown option '-x'");
        assert_eq!(cli_err("-vx"), "unknown option '-x'");
        assert_eq!(cli_err("extra"), "unexpected argument 'extra'");
        assert_eq!(cli_err("-"), "unexpected argument '-'");
        assert_eq!(cli_err("-- -v"), "unexpected argument '-v'");
        assert_eq!(cli_err("--trickle"), "--trickle: missing value");
        assert_eq!(cli_err("-l"), "-l: missing value");
        assert_eq!(cli_err("-f"), "-f: missing value");
        assert_eq!(cli_err("--config="), "--config: missing value");
        assert_eq!(cli_err("--no-chroot=yes"), "--no-chroot: takes no value");
        assert_eq!(cli_err("--help=1"), "--help: takes no value");
        assert_eq!(
            cli_err("--trickle 2s-1s"),
            "--trickle: '2s-1s': minimum exceeds maximum"
        );
        assert_eq!(
            cli_err("--trickle=5"),
            "--trickle: '5': add a unit: 5ms, 5s, 5m or 5h"
        );
        assert_eq!(
            cli_err("-lfoo"),
            "-l: 'foo': expected ADDR:PORT, e.g. 0.0.0.0:25 or [::1]:2525"
        );
        assert_eq!(
            cli_err("--trickle=1s --trickle=2s"),
            "--trickle: given twice"
        );
        assert_eq!(cli_err("-f a -f b"), "-f: given twice");
        assert_eq!(cli_err("--banner="), "--banner: missing value");
    }

    #[test]
    fn flags_override_the_file() {
        let text = "trickle = 1s-3s\nbanner = ESMTP file\nmax-per-ip = 5\n";
        let c = load(
            &cli("--trickle 5s --max-per-ip=7 --no-chroot"),
            Some(("f", text)),
        )
        .unwrap();
        assert_eq!(
            c.trickle,
            Range {
                min: 5000,
                max: 5000
            }
        );
        assert_eq!(c.max_per_ip, 7);
        assert_eq!(c.banner, "ESMTP file");
        assert!(c.no_chroot);
        // A flag can only say yes; the file cannot undo it.
        let c = load(&cli("--no-chroot"), Some(("f", "no-chroot = no\n"))).unwrap();
        assert!(c.no_chroot);
    }

    #[test]
    fn command_line_listen_replaces_the_files() {
        let text = "listen = 0.0.0.0:25\nlisten = [::]:25\n";
        let from_file = load(&cli("-v"), Some(("f", text))).unwrap();
        assert_eq!(from_file.listen.len(), 2);
        let c = load(
            &cli("-l 127.0.0.1:2525 --listen [::1]:2525"),
            Some(("f", text)),
        )
        .unwrap();
        assert_eq!(c.listen, [addr("127.0.0.1:2525"), addr("[::1]:2525")]);
        // An empty --listen goes back to the start-up choice.
        let c = load(&cli("--listen="), Some(("f", text))).unwrap();
        assert_eq!(c.listen, []);
        assert_eq!(
            cli_err("-l 0.0.0.0:25 -l 0.0.0.0:25"),
            "-l: '0.0.0.0:25': already listed"
        );
        assert!(parse_cli(&args("-l 0.0.0.0:0 -l 0.0.0.0:0")).is_ok());
    }

    #[test]
    fn file_errors_come_before_flags_and_name_the_file() {
        assert_eq!(
            load(&cli("--trickle=5s"), Some(("a.conf", "trickle = x\n"))).unwrap_err(),
            "a.conf:1: trickle: 'x': not a duration (write e.g. 250ms, 2s, 5m, 1h)"
        );
    }

    #[test]
    fn restart_needed_names_restart_only_changes() {
        let old = Config::default();
        assert_eq!(old.restart_needed(&old.clone()), Vec::<&str>::new());
        let new = file(
            "listen = 127.0.0.1:25\nuser = mail\ntrickle = 9s\nbanner = x\n\
             log-file = /tmp/l\nno-chroot = yes\ninetd = yes\nchroot = /tmp\n",
        )
        .unwrap();
        assert_eq!(
            old.restart_needed(&new),
            ["listen", "inetd", "log-file", "user", "chroot", "no-chroot"]
        );
        let live_only = file("trickle = 9s\nbanner = x\nhostname = h\nmax-per-ip = 1\n").unwrap();
        assert_eq!(old.restart_needed(&live_only), Vec::<&str>::new());
    }

    #[test]
    fn usage_lists_every_option_with_its_default() {
        let u = usage();
        assert!(u.lines().all(|l| l.len() <= 79), "{u}");
        // One line per option: continuation lines (deeply indented) joined on.
        let mut entries: Vec<String> = Vec::new();
        for l in u.lines() {
            match entries.last_mut() {
                Some(e) if l.starts_with("        ") => *e += &format!(" {}", l.trim()),
                _ => entries.push(l.to_owned()),
            }
        }
        for o in OPTIONS {
            let line = entries
                .iter()
                .find(|l| l.split_whitespace().any(|w| w == format!("--{}", o.name)))
                .unwrap_or_else(|| panic!("--{} missing from usage", o.name));
            assert!(line.contains(o.help), "{line}");
            if let Some(c) = o.short {
                assert!(line.contains(&format!("-{c}, --{}", o.name)), "{line}");
            }
            if o.kind.takes_value() && !o.default.is_empty() {
                assert!(line.contains(&format!("[{}]", o.default)), "{line}");
            }
            assert_eq!(
                line.contains("(restart)"),
                o.scope == Scope::Restart,
                "{line}"
            );
        }
    }

    // --- etc/smtarpit.conf ---

    /// The conf file's setting lines: `#key = value` (commented out, `#` then
    /// a letter) or `key = value`, as (line number, key, value, the rest).
    fn conf_settings() -> Vec<(usize, String, String, String)> {
        CONF.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.strip_prefix('#').unwrap_or(l);
                if !l.starts_with(|c: char| c.is_ascii_lowercase()) {
                    return None;
                }
                let (key, value) = l.split_once('=')?;
                let kept = strip_comment(value);
                let note = value[kept.len()..].to_owned();
                Some((i + 1, key.trim().to_owned(), kept.trim().to_owned(), note))
            })
            .collect()
    }

    #[test]
    fn conf_shows_every_setting_with_its_default() {
        let settings = conf_settings();
        for o in OPTIONS {
            let lines: Vec<_> = settings.iter().filter(|s| s.1 == o.name).collect();
            if !o.in_file() {
                assert!(lines.is_empty(), "{} is command-line only", o.name);
                continue;
            }
            assert_eq!(
                lines.len(),
                1,
                "etc/smtarpit.conf: want one '#{} = ...' line",
                o.name
            );
            let (n, _, value, note) = lines[0];
            assert_eq!(
                value, o.default,
                "etc/smtarpit.conf:{n}: {} default",
                o.name
            );
            // Restart-only settings say so on their line.
            assert_eq!(
                note.contains("# restart"),
                o.scope == Scope::Restart,
                "etc/smtarpit.conf:{n}: {}: '# restart' iff restart-only",
                o.name
            );
        }
        for (n, key, ..) in &settings {
            assert!(
                OPTIONS.iter().any(|o| o.name == key),
                "etc/smtarpit.conf:{n}: unknown key '{key}'"
            );
        }
    }

    #[test]
    fn conf_loads_to_the_defaults() {
        let path = "etc/smtarpit.conf";
        assert_eq!(
            load(&Cli::default(), Some((path, CONF))).unwrap(),
            Config::default()
        );
        // And with every setting uncommented, so each line is really parsed.
        let uncommented: String = CONF
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        assert_ne!(uncommented, CONF);
        let c = load(&Cli::default(), Some((path, &uncommented))).unwrap();
        assert_eq!(c, Config::default());
    }
}
