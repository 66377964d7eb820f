//! The few rtnetlink requests the address driver makes: one interface by name, the addresses,
//! the main table's default routes, adding and deleting them.
//!
//! A [`Rtnl`] opens its own netlink socket (in the network namespace of the calling thread)
//! and runs the connection as a task of the current tokio runtime until it is dropped.

use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Error, Handle, RouteMessageBuilder};

use super::arp::Mac;

pub struct Rtnl {
    handle: Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// An interface as the driver needs it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub mac: Option<Mac>,
    pub up: bool,
}

/// One address on one interface.
#[derive(Debug, Clone)]
pub struct Addr {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix: u8,
    pub dad_failed: bool,
    message: AddressMessage,
}

/// The errno of a netlink error answer, if it is one.
pub fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink error as text: the errno's description rather than a debug dump.
pub fn describe(e: &Error) -> String {
    match errno(e) {
        Some(n) => io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

impl Rtnl {
    pub fn connect() -> io::Result<Rtnl> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok(Rtnl {
            handle,
            conn: tokio::spawn(conn),
        })
    }

    /// The interface named `name`; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(b) if b.len() == 6 => <Mac>::try_from(b.as_slice()).ok(),
            _ => None,
        });
        Ok(Some(Link {
            index: msg.header.index,
            mac,
            up: msg.header.flags.contains(LinkFlags::Up),
        }))
    }

    /// Every address on every interface.
    pub async fn addresses(&self) -> Result<Vec<Addr>, Error> {
        let msgs: Vec<AddressMessage> = self.handle.address().get().execute().try_collect().await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
                // point-to-point links); IPv6 has only IFA_ADDRESS.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = local.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                let dad_failed = m.header.flags.contains(AddressHeaderFlags::Dadfailed)
                    || m.attributes.iter().any(|a| {
                        matches!(a, AddressAttribute::Flags(f)
                            if f.contains(netlink_packet_route::address::AddressFlags::Dadfailed))
                    });
                Some(Addr {
                    index: m.header.index,
                    ip,
                    prefix: m.header.prefix_len,
                    dad_failed,
                    message: m,
                })
            })
            .collect())
    }

    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), Error> {
        self.handle.address().add(index, ip, prefix).execute().await
    }

    pub async fn del_address(&self, addr: &Addr) -> Result<(), Error> {
        self.handle
            .address()
            .del(addr.message.clone())
            .execute()
            .await
    }

    /// Default routes of the main table in `gateway`'s family through `gateway` on `index`.
    pub async fn default_routes_via(
        &self,
        index: u32,
        gateway: IpAddr,
    ) -> Result<Vec<RouteMessage>, Error> {
        let query = match gateway {
            IpAddr::V4(_) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            IpAddr::V6(_) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let family = query.header.address_family;
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                let gw = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
                    _ => None,
                });
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                r.header.address_family == family
                    && table == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.header.destination_prefix_length == 0
                    && gw == Some(gateway)
                    && oif == Some(index)
            })
            .collect())
    }

    /// `ip route add default via GATEWAY dev INDEX` (main table, protocol static).
    pub async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<(), Error> {
        let route = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
            IpAddr::V6(g) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
        };
        self.handle.route().add(route).execute().await
    }

    pub async fn del_route(&self, route: RouteMessage) -> Result<(), Error> {
        self.handle.route().del(route).execute().await
    }
}
