//! smtarpit: start-up as a list — configuration, listeners, log, limits,
//! signals — then the loop. Errors here are fatal, name what is wrong and exit
//! non-zero; once serving, an error only ever ends one connection.

use smtarpit::config::{self, Cli, Config};
use smtarpit::server::{Control, Limits, Server};
use smtarpit::session::Settings;
use smtarpit::{listen, logging};
use std::process::ExitCode;

/// Descriptors kept back from `max-clients`: listeners, the signalfd, the
/// poll, the log, and room to accept and refuse one more client politely.
const FD_RESERVE: u64 = 32;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("smtarpit: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let cli = config::parse_cli(args).map_err(|e| format!("{e}\nTry 'smtarpit --help'."))?;
    if cli.help {
        print!("{}", config::usage());
        return Ok(());
    }
    if cli.version {
        println!("smtarpit {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let cfg = load(&cli)?;
    if cli.check_config {
        let what = cli
            .config_file
            .as_ref()
            .map_or("command line".into(), |p| p.display().to_string());
        println!("{what}: configuration OK");
        return Ok(());
    }

    let log_file = match &cfg.log_file {
        Some(path) => Some(
            logging::LogFile::open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    logging::init(cli.verbose, log_file);

    let nofile = raise_nofile();
    let root = nix::unistd::geteuid().is_root();
    let (addrs, explicit) = if cfg.listen.is_empty() {
        (listen::default_addrs(root), false)
    } else {
        (cfg.listen.clone(), true)
    };
    let mut listeners = Vec::new();
    for addr in &addrs {
        match listen::bind(*addr) {
            Ok(l) => {
                // The bound address, so a port of 0 shows the one chosen.
                let bound = l.local_addr().map_or(*addr, |a| a);
                log::info!("listening on {bound}");
                listeners.push(l);
            }
            // A default IPv6 listener on a host without IPv6 is no reason to
            // refuse to start; an address the admin asked for is.
            Err(e) if !explicit && addr.is_ipv6() => log::warn!("not listening on {addr}: {e}"),
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }

    let signals = signals()?;
    let limits = limits_for(&cfg, nofile);
    log::info!(
        "max-clients {} (open-file limit {nofile}), max-per-ip {}",
        limits.max_clients,
        limits.max_per_ip
    );
    let mut server = Server::new(listeners, Some(signals), settings(&cfg)?, limits)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    log::info!("serving");
    loop {
        match server.run().map_err(|e| format!("event loop: {e}"))? {
            Control::Run => {}
            Control::Reload => match load(&cli) {
                Ok(new) => {
                    for key in cfg.restart_needed(&new) {
                        log::warn!("reload: '{key}' changed, but takes effect only on restart");
                    }
                    match settings(&new) {
                        Ok(s) => server.settings = s,
                        Err(e) => log::warn!("reload: {e}"),
                    }
                    server.limits = limits_for(&new, nofile);
                    log::info!("reloaded");
                }
                Err(e) => log::warn!("reload failed, keeping the running configuration: {e}"),
            },
            Control::Stop => {
                log::info!("shutting down: {} clients", server.clients());
                server.shutdown();
                server.stats_record().emit();
                return Ok(());
            }
        }
    }
}

/// The configuration from the file (if any) with the command line over it.
fn load(cli: &Cli) -> Result<Config, String> {
    match &cli.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            config::load(cli, Some((&path.display().to_string(), &text)))
        }
        None => config::load(cli, None),
    }
}

fn settings(cfg: &Config) -> Result<Settings, String> {
    let hostname = if cfg.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| format!("cannot get the host name (set 'hostname'): {e}"))?
            .to_string_lossy()
            .into_owned()
    } else {
        cfg.hostname.clone()
    };
    let ms = |v: u64| v.min(u64::from(u32::MAX / 2)) as u32;
    Ok(Settings {
        hostname,
        banner: cfg.banner.clone(),
        human_threshold: ms(cfg.human_threshold),
        greet_pause: ms(cfg.greet_pause),
        trickle: (ms(cfg.trickle.min), ms(cfg.trickle.max)),
        trickle_bytes: cfg.trickle_bytes,
        reply_time: (ms(cfg.reply_time.min), ms(cfg.reply_time.max)),
        max_session: ms(cfg.max_session),
        idle_timeout: ms(cfg.idle_timeout),
        seed: random_seed(),
    })
}

fn limits_for(cfg: &Config, nofile: u64) -> Limits {
    let auto = nofile.saturating_sub(FD_RESERVE).max(1);
    let max_clients = match cfg.max_clients {
        0 => auto,
        n => u64::from(n).min(auto),
    };
    Limits {
        max_clients: max_clients.min(u64::from(u32::MAX)) as u32,
        max_per_ip: cfg.max_per_ip,
    }
}

/// Raises the soft open-file limit to the hard one: every held client is a
/// descriptor. Returns the limit now in force.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                    return soft;
                }
                log::info!("open-file limit raised from {soft} to {hard}");
            }
            hard
        }
        Err(e) => {
            log::warn!("cannot read the open-file limit: {e}");
            1024
        }
    }
}

/// Blocks the signals we handle and delivers them on a signalfd instead, so
/// the loop sees them as events: no work in signal handlers, no threads.
/// SIGPIPE is ignored: a client's hang-up is an error on one write.
fn signals() -> Result<nix::sys::signalfd::SignalFd, String> {
    use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map_err(|e| format!("cannot ignore SIGPIPE: {e}"))?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot create the signalfd: {e}"))
}

/// A secret per run, so trickle timings cannot be predicted or fingerprinted.
fn random_seed() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: b is a valid buffer of its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        std::process::id().wrapping_mul(0x9E37_79B9)
            ^ std::time::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.subsec_nanos())
    }
}
