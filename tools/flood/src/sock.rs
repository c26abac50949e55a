//! The few things std and mio do not do: a socket bound to a chosen source
//! address before a non-blocking connect, an RST on close, the open-file
//! limit, errno names, the terminal check and the stop signals.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::TcpStream;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A `sockaddr_storage` holding `addr`, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Start a non-blocking connect to `dst`, from `src` if given.
///
/// The source is bound with `IP_BIND_ADDRESS_NO_PORT` (Linux): without it,
/// `bind(src:0)` picks an ephemeral port at bind time, unique for the source
/// address alone, and ~28,000 ports per source would be the limit whatever
/// the target; with it the port is chosen at connect time, unique for the
/// whole 4-tuple. Success means "connecting": the first event tells whether
/// it worked (`SO_ERROR`).
pub fn connect(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::socket(family, libc::SOCK_STREAM, 0))?) };
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    let fd = OwnedFd::from(std);
    if let Some(src) = src {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        setsockopt(
            &fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &1 as &libc::c_int,
        )?;
        let (ss, len) = sockaddr(SocketAddr::new(IpAddr::V4(src), 0));
        // SAFETY: `ss` holds a sockaddr of `len` bytes.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&ss as *const libc::sockaddr_storage).cast(),
                len,
            )
        })?;
    }
    let (ss, len) = sockaddr(dst);
    // SAFETY: as above.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(fd)))
}

/// Close with an RST instead of a FIN: SO_LINGER on with a zero timeout
/// makes close(2) abort the connection (RFC 793 "ABORT").
pub fn abort(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is live for the call and the value is a linger.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // If it failed, a plain close is the best we can do; nothing to report.
    let _ = r;
    drop(stream);
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft
/// limit. Every connection is one descriptor, so this is the tool's size.
pub fn raise_nofile() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        let mut rl: libc::rlimit = mem::zeroed();
        cvt(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl))?;
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            cvt(libc::setrlimit(libc::RLIMIT_NOFILE, &rl))?;
        }
        Ok(rl.rlim_cur as u64)
    }
}

pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty on a descriptor number only reads.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

/// Set by SIGINT/SIGTERM: the loop ends the run and prints the summary.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Catch SIGINT and SIGTERM so that ^C still prints a summary. The handler
/// only sets a flag; epoll_wait(2) returns EINTR and the loop looks at it.
pub fn catch_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an async-signal-safe handler (one atomic store).
        unsafe {
            let mut sa: libc::sigaction = mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The symbolic name of an errno, for the summary. The ones a connect or a
/// connection can meet; others as `E<number>`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EPIPE => "EPIPE",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EAGAIN => "EAGAIN",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EALREADY => "EALREADY",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(libc::EMFILE), "EMFILE");
        assert_eq!(errno_name(9999), "E9999");
    }

    #[test]
    fn connect_to_a_closed_port_is_refused_on_first_event() {
        // Bind and drop a listener to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dst: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        let src = Some(Ipv4Addr::new(127, 0, 0, 3));
        let s = match connect(src, dst) {
            Ok(s) => s,
            Err(e) => return assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
        };
        let mut poll = mio::Poll::new().unwrap();
        let mut s = s;
        poll.registry()
            .register(&mut s, mio::Token(0), mio::Interest::WRITABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let err = s.take_error().unwrap().expect("SO_ERROR is set");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn connect_binds_the_source() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let src = Ipv4Addr::new(127, 0, 0, 7);
        let _s = connect(Some(src), l.local_addr().unwrap()).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(src));
    }
}
