//! smtarpit: an SMTP tarpit and honeypot in one small event loop.
//!
//! The pure core (`smtp`, `trickle`, `wheel`, `record`, `config`) takes time
//! and bytes as arguments and is tested without sockets; `server` is the thin
//! shell that moves bytes and timers.

pub mod config;
pub mod listen;
pub mod logging;
pub mod record;
pub mod server;
pub mod session;
pub mod smtp;
pub mod wheel;
