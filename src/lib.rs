//! smtarpit: an SMTP tarpit and honeypot in one small event loop.
//!
//! The pure core (`smtp`, `session`, `wheel`, `record`, `config`) takes time
//! and bytes as arguments and is tested without sockets; `server` (and
//! `inetd`, its one-connection twin) is the thin shell that moves bytes and
//! timers.

pub mod anchor;
pub mod config;
pub mod inetd;
pub mod listen;
pub mod logging;
pub mod privs;
pub mod record;
pub mod server;
pub mod session;
pub mod signals;
pub mod smtp;
pub mod wheel;
