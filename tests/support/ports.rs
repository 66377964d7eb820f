//! Free loopback ports for the daemons and simulators tests start. The kernel may hand a
//! probed port out again as soon as the probing socket closes (two agents were once given one
//! port), so each port is given out at most once per test process.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn once(mut probe: impl FnMut() -> u16) -> u16 {
    loop {
        let port = probe();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A TCP port on 127.0.0.1 nothing listens on now.
pub fn free_tcp_port() -> u16 {
    once(|| {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind a free loopback port")
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A UDP port on 127.0.0.1 nothing listens on now.
pub fn free_udp_port() -> u16 {
    once(|| {
        UdpSocket::bind("127.0.0.1:0")
            .expect("bind a free loopback port")
            .local_addr()
            .unwrap()
            .port()
    })
}
