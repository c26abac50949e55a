//! Arbitrary text as the configuration file, arbitrary arguments as the
//! command line: `config::parse_cli` and `config::load` return a result or
//! an error line, and never panic.
//!
//! The first byte chooses what the rest is: a file, arguments (split at NUL
//! bytes), or both (split at the first 0xFF byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtarpit::config;

fn args_of(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let (args, file) = match how % 3 {
        0 => (Vec::new(), rest),
        1 => (args_of(rest), &[][..]),
        _ => {
            let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            (args_of(&rest[..cut]), rest.get(cut + 1..).unwrap_or(&[]))
        }
    };
    let text = String::from_utf8_lossy(file);
    let cli = match config::parse_cli(&args) {
        Ok(cli) => cli,
        Err(e) => {
            assert!(!e.is_empty(), "an empty error");
            config::Cli::default()
        }
    };
    for file in [None, Some(("fuzz.conf", &*text))] {
        match config::load(&cli, file) {
            Ok(cfg) => {
                // What loads is within the table's limits.
                assert!(cfg.trickle.min <= cfg.trickle.max, "{cfg:?}");
                assert!(cfg.reply_time.min <= cfg.reply_time.max, "{cfg:?}");
                assert!((1..=64).contains(&cfg.trickle_bytes), "{cfg:?}");
                assert!(cfg.max_session >= 1 && cfg.idle_timeout >= 1, "{cfg:?}");
            }
            Err(e) => assert!(!e.is_empty(), "an empty error"),
        }
    }
});
