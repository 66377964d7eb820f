//! ARP over Ethernet (RFC 826, RFC 5227): building the frames the address driver sends and
//! reading the ones it receives. Pure byte layout, no I/O.
//!
//! Frames carry the 14-byte Ethernet header (they go out on an `AF_PACKET`/`SOCK_RAW` socket)
//! and are padded with zeros to the 60-byte Ethernet minimum (without FCS), as NICs would.

use std::net::Ipv4Addr;

/// A MAC address.
pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ZERO_MAC: Mac = [0; 6];
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Length of an Ethernet header plus an IPv4-over-Ethernet ARP packet.
pub const ARP_FRAME_LEN: usize = 14 + 28;
/// The Ethernet minimum frame length without the FCS.
pub const MIN_FRAME_LEN: usize = 60;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// One IPv4-over-Ethernet ARP packet with the Ethernet addresses it travelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// RFC 5227 probe: "is anyone using `target`?" Sender IP 0.0.0.0 so that no host's cache
    /// learns anything from it; broadcast.
    pub fn probe(mac: Mac, target: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: OP_REQUEST,
            sender_mac: mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: ZERO_MAC,
            target_ip: target,
        }
    }

    /// RFC 5227 announcement (gratuitous ARP request): sender = target = `ip`, broadcast.
    /// Hosts with an entry for `ip` update it to `mac`.
    pub fn announcement(mac: Mac, ip: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: OP_REQUEST,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: ZERO_MAC,
            target_ip: ip,
        }
    }

    /// Gratuitous ARP reply, broadcast: sender = target = `ip` and target MAC = sender MAC,
    /// which Linux requires to treat a reply as gratuitous (`arp_is_garp`).
    pub fn gratuitous_reply(mac: Mac, ip: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: OP_REPLY,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: mac,
            target_ip: ip,
        }
    }

    /// The frame on the wire, padded to [`MIN_FRAME_LEN`].
    pub fn to_frame(&self) -> [u8; MIN_FRAME_LEN] {
        let mut f = [0u8; MIN_FRAME_LEN];
        f[0..6].copy_from_slice(&self.eth_dst);
        f[6..12].copy_from_slice(&self.eth_src);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        // Hardware type Ethernet (1), protocol type IPv4, hlen 6, plen 4.
        f[14..16].copy_from_slice(&1u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&self.op.to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Read an Ethernet frame; `None` unless it is an IPv4-over-Ethernet ARP packet.
    pub fn parse(frame: &[u8]) -> Option<ArpPacket> {
        if frame.len() < ARP_FRAME_LEN
            || frame[12..14] != ETH_P_ARP.to_be_bytes()
            || frame[14..16] != 1u16.to_be_bytes()
            || frame[16..18] != 0x0800u16.to_be_bytes()
            || frame[18] != 6
            || frame[19] != 4
        {
            return None;
        }
        let mac = |at: usize| -> Mac { frame[at..at + 6].try_into().unwrap() };
        let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
        Some(ArpPacket {
            eth_dst: mac(0),
            eth_src: mac(6),
            op: u16::from_be_bytes([frame[20], frame[21]]),
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }

    /// Whether this packet, received while probing for `ip` from `own` MAC, shows another host
    /// using `ip` (RFC 5227 §2.1.1): any ARP packet whose sender IP is `ip`, or another host's
    /// probe for `ip` (it is probing at the same time). `None` when it does not, else the
    /// other host's MAC.
    pub fn conflict_for(&self, ip: Ipv4Addr, own: Mac) -> Option<Mac> {
        if self.sender_mac == own {
            return None;
        }
        let probing_too =
            self.op == OP_REQUEST && self.sender_ip.is_unspecified() && self.target_ip == ip;
        (self.sender_ip == ip || probing_too).then_some(self.sender_mac)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const OTHER: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);

    #[test]
    fn probe_layout() {
        let f = ArpPacket::probe(MAC, VIP).to_frame();
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,   // eth dst: broadcast
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,   // eth src
            0x08, 0x06,                           // EtherType ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,         // Ethernet, IPv4, hlen, plen
            0x00, 0x01,                           // request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,   // sender MAC
            0, 0, 0, 0,                           // sender IP 0.0.0.0 (RFC 5227 probe)
            0, 0, 0, 0, 0, 0,                     // target MAC unknown
            10, 213, 0, 100,                      // target IP
        ];
        assert_eq!(f[..42], expected);
        assert!(f[42..].iter().all(|b| *b == 0), "zero padding");
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn announcement_layout() {
        let f = ArpPacket::announcement(MAC, VIP).to_frame();
        assert_eq!(f[0..6], BROADCAST);
        assert_eq!(f[20..22], [0, 1], "request");
        assert_eq!(f[22..28], MAC);
        assert_eq!(f[28..32], [10, 213, 0, 100], "sender IP is the VIP");
        assert_eq!(f[32..38], ZERO_MAC);
        assert_eq!(f[38..42], [10, 213, 0, 100], "target IP is the VIP");
    }

    #[test]
    fn gratuitous_reply_layout() {
        let f = ArpPacket::gratuitous_reply(MAC, VIP).to_frame();
        assert_eq!(f[0..6], BROADCAST);
        assert_eq!(f[6..12], MAC);
        assert_eq!(f[20..22], [0, 2], "reply");
        assert_eq!(f[22..28], MAC);
        assert_eq!(f[28..32], VIP.octets());
        assert_eq!(
            f[32..38],
            MAC,
            "target MAC = sender MAC, as Linux wants for a GARP reply"
        );
        assert_eq!(f[38..42], VIP.octets());
    }

    #[test]
    fn parse_round_trips_and_rejects() {
        for p in [
            ArpPacket::probe(MAC, VIP),
            ArpPacket::announcement(MAC, VIP),
            ArpPacket::gratuitous_reply(MAC, VIP),
        ] {
            assert_eq!(ArpPacket::parse(&p.to_frame()), Some(p));
            assert_eq!(ArpPacket::parse(&p.to_frame()[..42]), Some(p), "unpadded");
        }
        let f = ArpPacket::probe(MAC, VIP).to_frame();
        assert_eq!(ArpPacket::parse(&f[..41]), None, "short");
        let mut ipv4 = f;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(ArpPacket::parse(&ipv4), None, "not ARP");
        let mut ipv6 = f;
        ipv6[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(ArpPacket::parse(&ipv6), None, "not IPv4 ARP");
    }

    #[test]
    fn conflicts() {
        // The kernel's answer to a probe: a reply from the holder, target IP 0.0.0.0.
        let reply = ArpPacket {
            eth_dst: MAC,
            eth_src: OTHER,
            op: OP_REPLY,
            sender_mac: OTHER,
            sender_ip: VIP,
            target_mac: MAC,
            target_ip: Ipv4Addr::UNSPECIFIED,
        };
        assert_eq!(reply.conflict_for(VIP, MAC), Some(OTHER));
        assert_eq!(
            ArpPacket::announcement(OTHER, VIP).conflict_for(VIP, MAC),
            Some(OTHER)
        );
        assert_eq!(
            ArpPacket::probe(OTHER, VIP).conflict_for(VIP, MAC),
            Some(OTHER),
            "someone probing for the same address at the same time"
        );
        assert_eq!(
            ArpPacket::probe(MAC, VIP).conflict_for(VIP, MAC),
            None,
            "our own"
        );
        assert_eq!(
            ArpPacket::announcement(OTHER, Ipv4Addr::new(10, 213, 0, 7)).conflict_for(VIP, MAC),
            None,
            "another address"
        );
        assert_eq!(
            ArpPacket::probe(OTHER, Ipv4Addr::new(10, 213, 0, 7)).conflict_for(VIP, MAC),
            None
        );
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&MAC), "02:11:22:33:44:55");
    }
}
