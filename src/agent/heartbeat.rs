//! The agent's side of heartbeats: a UDP socket that echoes the leading controller's probes
//! (see [`crate::controller::heartbeat`] for what they are for and the probe's format).
//!
//! Only probes that name this node are answered, so a probe sent to an address that now
//! belongs to another host never makes a dead node look alive. Nothing here decides anything:
//! an agent that does not answer is found lost by its lease, as without heartbeats.

use tokio::net::UdpSocket;

/// Whether `probe` is a heartbeat probe for `node`.
pub fn is_probe_for(probe: &[u8], node: &str) -> bool {
    crate::controller::heartbeat::Probe::parse(probe).is_some_and(|p| p.node == node)
}

/// Answer probes for `node` until the task is dropped.
pub async fn answer(socket: UdpSocket, node: String) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // An ICMP error from an earlier answer: keep serving (never in a tight loop).
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        if is_probe_for(&buf[..n], &node) {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    }
}
