//! smtarpit-flood: many bot-like SMTP clients at once, to load and measure
//! an SMTP tarpit.
//!
//! One thread, one `mio::Poll`, so one process can hold about as many
//! connections as it may open files. Modules:
//! - `args`    — the command line, durations, the loopback guard;
//! - `mix`     — behaviours and the weighted mix of them;
//! - `scan`    — finds the final line of a (trickled) SMTP reply;
//! - `session` — one client's dialogue, a pure state machine;
//! - `timers`  — a lazy heap of deadlines;
//! - `sock`    — libc glue: bind-before-connect, RST, rlimit, signals;
//! - `flood`   — the loop;
//! - `summary` — counts, percentiles, the table and the JSON line.

mod args;
mod flood;
mod mix;
mod scan;
mod session;
mod sock;
mod summary;
mod timers;

use std::process::ExitCode;

use args::Command;

/// Descriptors the process needs besides its connections (stdio, epoll).
const SPARE_FDS: u64 = 16;

fn main() -> ExitCode {
    let argv = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let args = match args::parse(argv) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("smtarpit-flood: {e}");
            eprintln!("try 'smtarpit-flood --help'");
            return ExitCode::from(2);
        }
    };

    // Every connection is a descriptor: take all the kernel allows.
    match sock::raise_nofile() {
        Ok(limit) if u64::from(args.count) + SPARE_FDS > limit => eprintln!(
            "smtarpit-flood: --count {} is more than the open-file limit {limit} allows \
             (EMFILE will cap it); run several processes for more (see README)",
            args.count
        ),
        Ok(_) => {}
        Err(e) => eprintln!("smtarpit-flood: cannot raise RLIMIT_NOFILE: {e}"),
    }
    if let Err(e) = sock::catch_stop_signals() {
        eprintln!("smtarpit-flood: cannot catch SIGINT/SIGTERM: {e}");
    }

    match flood::run(&args) {
        Ok(summary) => {
            if args.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtarpit-flood: {e}");
            ExitCode::from(1)
        }
    }
}
