//! ARP on the wire: an `AF_PACKET` raw socket bound to one interface (needs CAP_NET_RAW), the
//! RFC 5227 duplicate-address probe and gratuitous ARP announcements.
//!
//! The socket lives in the network namespace of the thread that opens it.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::arp::{ArpPacket, Mac, ETH_P_ARP};

/// A non-blocking `AF_PACKET`/`SOCK_RAW` socket receiving and sending ARP frames on one
/// interface.
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let proto = ETH_P_ARP.to_be();
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as libc::c_int,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: pointer and length describe `sll`.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = ArpSocket {
            // SAFETY: the OwnedFd is a valid descriptor, owned by the AsyncFd from here on and
            // neither replaced nor closed while it is.
            fd: unsafe { AsyncFd::register(fd)? },
            ifindex,
        };
        // Frames from any interface may have queued between socket() and bind().
        let mut buf = [0u8; 128];
        while sock.try_recv(&mut buf)?.is_some() {}
        Ok(sock)
    }

    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: buffer pointer and length describe `frame`.
            let res = guard.try_io(|fd| {
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        frame.as_ptr() as *const libc::c_void,
                        frame.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// One frame received on our interface from another host (our own outgoing frames
    /// skipped), or `None` if none is waiting.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address pointers with their lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_ifindex != self.ifindex as i32
            {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match self.try_recv(buf)? {
                Some(n) => return Ok(n),
                None => guard.clear_ready(),
            }
        }
    }
}

/// RFC 5227 duplicate-address check: probe for `ip` (sender IP 0.0.0.0), again halfway through
/// `wait`, and listen for `wait`. `Some(mac)` of the first other host that shows it uses (or is
/// probing for) the address; `None` if nobody did.
pub async fn probe(
    sock: &ArpSocket,
    own: Mac,
    ip: Ipv4Addr,
    wait: Duration,
) -> io::Result<Option<Mac>> {
    let frame = ArpPacket::probe(own, ip).to_frame();
    sock.send(&frame).await?;
    let start = Instant::now();
    let mut second_sent = false;
    let mut buf = [0u8; 1600];
    loop {
        let until = if second_sent {
            start + wait
        } else {
            start + wait / 2
        };
        match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            Err(_elapsed) if !second_sent => {
                sock.send(&frame).await?;
                second_sent = true;
            }
            Err(_elapsed) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(n)) => {
                if let Some(mac) = ArpPacket::parse(&buf[..n]).and_then(|p| p.conflict_for(ip, own))
                {
                    return Ok(Some(mac));
                }
            }
        }
    }
}

/// Gratuitous ARP for `ip`: `count` rounds `interval` apart, each an announcement (request,
/// sender = target = `ip`) and a gratuitous reply, both broadcast. The first round goes out
/// at once.
pub async fn announce(
    sock: &ArpSocket,
    own: Mac,
    ip: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> io::Result<()> {
    let request = ArpPacket::announcement(own, ip).to_frame();
    let reply = ArpPacket::gratuitous_reply(own, ip).to_frame();
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        sock.send(&request).await?;
        sock.send(&reply).await?;
    }
    Ok(())
}
