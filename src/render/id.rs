//! Identifiers derived from names: a domain's UUID and its interfaces' MAC addresses.
//!
//! A VM must have the same UUID and the same MACs on every node it may run on: libvirt refuses
//! to migrate to, or define over, a domain of the same name with another UUID, and a guest whose
//! MAC changes on failover sees a new NIC and leaves stale ARP entries behind. So neither may be
//! random (libvirt's default when the XML leaves them out); both are hashed from names.
//!
//! The UUID is a real RFC 4122 version-5 UUID (SHA-1, name-based), so anyone can recompute it:
//! `uuid5(uuid5(NAMESPACE_DNS, "rampart.dev"), "VirtualMachine/NAME")` in Python gives the same
//! value. SHA-1 is implemented here because it is needed for nothing else and Rampart takes no
//! dependency for it; it is an identifier, not a security measure.

/// Rampart's UUID namespace: `uuid5(NAMESPACE_DNS, "rampart.dev")`,
/// `3d5ef74e-d4c4-59a4-849d-f5901d00f799`.
const NAMESPACE: [u8; 16] = [
    0x3d, 0x5e, 0xf7, 0x4e, 0xd4, 0xc4, 0x59, 0xa4, 0x84, 0x9d, 0xf5, 0x90, 0x1d, 0x00, 0xf7, 0x99,
];

/// The version-5 UUID of the object `kind`/`name` in Rampart's namespace, formatted the way
/// libvirt prints UUIDs (lower-case, hyphenated). For a VM: `derived_uuid("VirtualMachine", name)`.
pub fn derived_uuid(kind: &str, name: &str) -> String {
    let mut input = Vec::with_capacity(16 + kind.len() + 1 + name.len());
    input.extend_from_slice(&NAMESPACE);
    input.extend_from_slice(kind.as_bytes());
    input.push(b'/');
    input.extend_from_slice(name.as_bytes());
    let h = sha1(&input);
    let mut u = [0u8; 16];
    u.copy_from_slice(&h[..16]);
    u[6] = (u[6] & 0x0f) | 0x50; // version 5
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The MAC address of interface `index` (0-based, in manifest order) of VM `vm`, for
/// interfaces whose manifest gives none: `52` followed by the first five bytes of
/// `SHA-1("VirtualMachine/VM/interface/INDEX")`. `0x52` marks it locally administered and
/// unicast; 40 hashed bits keep collisions unlikely in clusters of thousands of VMs (libvirt's
/// own random `52:54:00:xx:xx:xx` has 24). Reordering interfaces changes their derived MACs:
/// give `mac` explicitly where that matters.
pub fn derived_mac(vm: &str, index: usize) -> String {
    let h = sha1(format!("VirtualMachine/{vm}/interface/{index}").as_bytes());
    let mut mac = String::from("52");
    for b in &h[..5] {
        mac.push_str(&format!(":{b:02x}"));
    }
    mac
}

/// SHA-1 (FIPS 180-4) of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_matches_known_digests() {
        // Lengths around the padding boundaries (55, 56, 64) and a multi-block input.
        let cases: [(&[u8], &str); 6] = [
            (b"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (&[b'a'; 55], "c1c8bbdc22796e28c0e15163d20899b65621d65a"),
            (&[b'a'; 56], "c2db330f6083854c99d4b5bfb6e8f29f201be699"),
            (&[b'a'; 64], "0098ba824b5c16427bd7a1122a5a442a25ec644d"),
            (&[b'a'; 1000], "291e9a6c66994949b57ba5e650361e98fc36b1ba"),
        ];
        for (input, want) in cases {
            assert_eq!(hex(&sha1(input)), want, "input of {} bytes", input.len());
        }
    }

    #[test]
    fn uuid_is_python_uuid5() {
        // python3 -c 'import uuid; ns = uuid.uuid5(uuid.NAMESPACE_DNS, "rampart.dev");
        //             print(uuid.uuid5(ns, "VirtualMachine/www"))'
        assert_eq!(
            derived_uuid("VirtualMachine", "www"),
            "8bede6a1-fbce-5dfc-92a5-e8cec794b27d"
        );
        assert_eq!(
            derived_uuid("VirtualMachine", "ns1"),
            "19dbc218-6cb4-5966-b174-27b4b6bd8f65"
        );
    }

    #[test]
    fn mac_is_stable_unicast_and_locally_administered() {
        assert_eq!(derived_mac("t", 0), "52:2a:be:9f:23:c9");
        assert_eq!(derived_mac("t", 1), "52:62:7f:c8:af:6e");
        let first = u8::from_str_radix(&derived_mac("anything", 3)[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10);
    }
}
