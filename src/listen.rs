//! Listening sockets, made by hand so that each is exactly what we want on
//! Linux and the BSDs alike: `SO_REUSEADDR` for quick restarts, `IPV6_V6ONLY`
//! so `0.0.0.0:25` and `[::]:25` can both be bound, the longest backlog the
//! kernel allows so a burst of connects waits for us rather than failing.

use nix::sys::socket::{
    bind as nix_bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

/// Where we listen when nothing is configured: port 25 on every address as
/// root; as anyone else a port they may bind, on loopback only.
pub fn default_addrs(root: bool) -> Vec<SocketAddr> {
    if root {
        vec!["0.0.0.0:25".parse().unwrap(), "[::]:25".parse().unwrap()]
    } else {
        vec!["127.0.0.1:2525".parse().unwrap()]
    }
}

pub fn bind(addr: SocketAddr) -> nix::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    nix_bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_wildcards_coexist_on_one_port() {
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        // With IPV6_V6ONLY the v6 socket does not claim the v4 port.
        if let Ok(v6) = bind(SocketAddr::new("::".parse().unwrap(), port)) {
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
        assert!(bind(SocketAddr::new("127.0.0.1".parse().unwrap(), port)).is_err());
    }
}
