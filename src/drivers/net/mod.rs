//! Real floating addresses: netlink (rtnetlink), a duplicate-address check, gratuitous ARP.
