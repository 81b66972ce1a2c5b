//! The socket calls the shard makes itself: binding a listener that
//! shares its port with the other shards, and sending.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;

use socket2::{Domain, SockRef, Socket, Type};

/// Binds a non-blocking listener on `addr` with `SO_REUSEPORT` (every
/// shard binds the same address; the kernel spreads connections over
/// them) and `SO_REUSEADDR`, listening with `backlog`; returns it with
/// the address it got (the port resolved if `addr` said 0).
///
/// # Errors
/// The socket cannot be made, bound or put in the listening state.
pub(crate) fn bind_listener(addr: SocketAddr, backlog: i32) -> io::Result<(OwnedFd, SocketAddr)> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a TCP listener without an IP address"))?;
    Ok((socket.into(), local))
}

/// Writes as much of `bytes` as the socket takes now, without blocking;
/// never raises `SIGPIPE`.
///
/// # Errors
/// `WouldBlock` when the socket is full; any other error is the socket's.
pub(crate) fn send(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    SockRef::from(stream).send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

/// Writes as much of `slices`, in order, as the socket takes now: one
/// `sendmsg`. Never raises `SIGPIPE`.
///
/// # Errors
/// As for [`send`].
pub(crate) fn send_vectored(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    SockRef::from(stream).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
}
