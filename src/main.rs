//! smtarpit: start-up as a list — configuration, log, signals, listeners,
//! limits, chroot and privilege drop — then the loop. Errors here are fatal,
//! name what is wrong and exit non-zero; once serving, an error only ever
//! ends one connection.

use smtarpit::anchor::Anchored;
use smtarpit::config::{self, Cli, Config};
use smtarpit::server::{Control, Limits, Server};
use smtarpit::session::Settings;
use smtarpit::signals::Signals;
use smtarpit::{listen, logging, privs};
use std::path::Path;
use std::process::ExitCode;

/// Descriptors kept back from `max-clients`: listeners, the signalfd, the
/// poll, the log, and room to accept and refuse one more client politely.
const FD_RESERVE: u64 = 32;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // Once logging is up (under inetd: syslog, not the client's
            // socket) the error goes there; before, to standard error.
            if log::max_level() != log::LevelFilter::Off {
                log::error!("{msg}");
            }
            if log::max_level() == log::LevelFilter::Off || logging::echo_errors() {
                eprintln!("smtarpit: {msg}");
            }
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
    // 1. The configuration, checked whole before anything is touched. The
    //    file stays reachable for SIGHUP through its directory.
    let conf_file = match &cli.config_file {
        Some(path) => {
            Some(Anchored::new(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?)
        }
        None => None,
    };
    let cfg = load(&cli, conf_file.as_ref())?;
    let root = nix::unistd::geteuid().is_root();
    let jail = (root && !cfg.no_chroot).then_some(cfg.chroot.as_path());
    if cli.check_config {
        // What start-up would refuse, -t refuses: the user and the chroot.
        if root {
            privs::resolve_user(&cfg.user)?;
        }
        if let Some(dir) = jail {
            privs::check_chroot(dir)?;
        }
        let what = cli
            .config_file
            .as_ref()
            .map_or("command line".into(), |p| p.display().to_string());
        println!("{what}: configuration OK");
        return Ok(());
    }

    // 2. The log, opened while we may still write where it lives. Under
    //    inetd, standard error is the client's socket: without a log file,
    //    records go to syslog instead.
    let (log_anchor, log_file) = match &cfg.log_file {
        Some(path) => {
            let a = Anchored::new(path).map_err(|e| {
                format!(
                    "log file {}: cannot open its directory: {e}",
                    path.display()
                )
            })?;
            let f = a
                .open_append()
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            (Some(a), logging::Dest::File(f))
        }
        None if cfg.inetd => (None, logging::Dest::Syslog),
        None => (None, logging::Dest::Stderr),
    };
    let log = logging::init(cli.verbose, log_file, cfg.inetd);
    let target = if root {
        let t = privs::resolve_user(&cfg.user)?;
        // So that SIGHUP can reopen the same file once we are that user.
        if let Some(f) = log.file() {
            if let Err(e) = nix::unistd::fchown(&f, Some(t.uid), None) {
                log::warn!("cannot give the log file to '{}': {e}", cfg.user);
            }
        }
        Some(t)
    } else {
        None
    };
    if let Some(dir) = jail {
        privs::check_chroot(dir)?;
    }
    let signals = Signals::install()?;

    // 3. --inetd: the one connection xinetd gave us, after the same drop.
    if cfg.inetd {
        drop_privileges(jail, target.as_ref())?;
        let reason = smtarpit::inetd::serve(&settings(&cfg)?, Some(signals))
            .map_err(|e| format!("inetd: {e}"))?;
        log::debug!("inetd session ended: {}", reason.name());
        return Ok(());
    }

    // 4. Listeners, limits, then the drop: nothing is served as root.
    let listeners = bind(&cfg, root)?;
    let nofile = raise_nofile();
    let limits = limits_for(&cfg, nofile);
    log::info!(
        "max-clients {} (open-file limit {nofile}), max-per-ip {}",
        limits.max_clients,
        limits.max_per_ip
    );
    let settings = settings(&cfg)?;
    drop_privileges(jail, target.as_ref())?;

    // 5. Serve.
    let mut server = Server::new(listeners, Some(signals), settings, limits)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    log::info!("serving");
    loop {
        match server.run().map_err(|e| format!("event loop: {e}"))? {
            Control::Run => {}
            Control::Reload => {
                if let Some(a) = &log_anchor {
                    match a.open_append() {
                        Ok(f) => log.replace(f),
                        Err(e) => log::warn!("reload: cannot reopen {}: {e}", a.path().display()),
                    }
                }
                match load(&cli, conf_file.as_ref())
                    .map(|new| (settings_like(&new, &server.settings), new))
                {
                    Ok((s, new)) => {
                        // Against the configuration we started with: that
                        // is what runs for the restart-only keys.
                        for key in cfg.restart_needed(&new) {
                            log::warn!(
                                "reload: '{key}' changed; it takes effect at the next restart"
                            );
                        }
                        server.settings = s;
                        server.limits = limits_for(&new, nofile);
                        log::info!("reloaded");
                    }
                    Err(e) => log::warn!("reload failed, keeping the running configuration: {e}"),
                }
            }
            Control::Stop => {
                log::info!("shutting down: {} clients", server.clients());
                server.shutdown();
                server.stats_record().emit();
                return Ok(());
            }
        }
    }
}

/// As root: chroot (unless told not to) and become `--user`, checked. As
/// anyone else there is nothing to drop; say so once.
fn drop_privileges(jail: Option<&Path>, target: Option<&privs::Target>) -> Result<(), String> {
    match target {
        Some(t) => privs::enter(jail, t),
        None => {
            log::info!("not root: serving without chroot or privilege drop");
            Ok(())
        }
    }
}

fn bind(cfg: &Config, root: bool) -> Result<Vec<std::net::TcpListener>, String> {
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
    Ok(listeners)
}

/// The configuration from the file (if any) with the command line over it.
fn load(cli: &Cli, file: Option<&Anchored>) -> Result<Config, String> {
    match file {
        Some(a) => {
            let text = a
                .read_to_string()
                .map_err(|e| format!("{}: cannot read: {e}", a.path().display()))?;
            config::load(cli, Some((&a.path().display().to_string(), &text)))
        }
        None => config::load(cli, None),
    }
}

/// Settings for a reload: keeps the running seed, and the running host name
/// unless one is configured (the system's cannot change under us).
fn settings_like(cfg: &Config, running: &Settings) -> Settings {
    let hostname = if cfg.hostname.is_empty() {
        running.hostname.clone()
    } else {
        cfg.hostname.clone()
    };
    Settings {
        seed: running.seed,
        ..settings_with(cfg, hostname)
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
    Ok(settings_with(cfg, hostname))
}

fn settings_with(cfg: &Config, hostname: String) -> Settings {
    let ms = |v: u64| v.min(u64::from(u32::MAX / 2)) as u32;
    Settings {
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
    }
}

fn limits_for(cfg: &Config, nofile: u64) -> Limits {
    let auto = nofile.saturating_sub(FD_RESERVE).max(1);
    let max_clients = match cfg.max_clients {
        0 => auto,
        n => {
            // Honoured all the same: past the limit accept fails with
            // EMFILE, which the loop survives (it refuses politely).
            if u64::from(n) > auto {
                log::warn!("max-clients {n} is more than the open-file limit allows ({auto})");
            }
            u64::from(n)
        }
    };
    Limits {
        max_clients: max_clients.min(u64::from(u32::MAX)) as u32,
        max_per_ip: cfg.max_per_ip,
    }
}

/// Raises the soft open-file limit to the hard one: every held client is a
/// descriptor. Returns the limit now in force.
// rlim_t is u64 on Linux and i64 on FreeBSD: the casts matter on one.
#[allow(clippy::unnecessary_cast)]
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                    return soft as u64;
                }
                log::info!("open-file limit raised from {soft} to {hard}");
            }
            hard as u64
        }
        Err(e) => {
            log::warn!("cannot read the open-file limit: {e}");
            1024
        }
    }
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
