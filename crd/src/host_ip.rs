//! One notion of "every address" for published host ports, shared by the CLI's input checks
//! and the operator's planner, so that what resolve calls a collision is what the planner
//! treats as one (and forces StopFirst for).
//!
//! Docker publishes a port with hostIP `""` on every address of both families; `0.0.0.0` on
//! every IPv4 address; `::` on every IPv6 address. Two bindings of one port and protocol
//! collide when their address sets meet.

use std::net::IpAddr;

/// The set of addresses a `hostIP` value binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addresses<'a> {
    /// `""`: every address, IPv4 and IPv6.
    Every,
    /// `0.0.0.0`: every IPv4 address.
    EveryV4,
    /// `::`: every IPv6 address.
    EveryV6,
    One(IpAddr),
    /// Not an IP address (validation refuses it); only the same text is the same address.
    Text(&'a str),
}

fn addresses(ip: &str) -> Addresses<'_> {
    if ip.is_empty() {
        return Addresses::Every;
    }
    match ip.parse::<IpAddr>() {
        Ok(a) if a.is_unspecified() && a.is_ipv4() => Addresses::EveryV4,
        Ok(a) if a.is_unspecified() => Addresses::EveryV6,
        Ok(a) => Addresses::One(a),
        Err(_) => Addresses::Text(ip),
    }
}

/// Whether two `hostIP` values share an address: `""` overlaps everything, `0.0.0.0` every
/// IPv4 address, `::` every IPv6 address; two specific addresses only themselves (compared as
/// addresses, so `::1` is `0:0::1`).
pub fn host_ips_overlap(a: &str, b: &str) -> bool {
    use Addresses::*;
    match (addresses(a), addresses(b)) {
        (Every, _) | (_, Every) => true,
        (EveryV4, EveryV4) | (EveryV6, EveryV6) => true,
        (EveryV4, One(x)) | (One(x), EveryV4) => x.is_ipv4(),
        (EveryV6, One(x)) | (One(x), EveryV6) => x.is_ipv6(),
        (One(x), One(y)) => x == y,
        (Text(x), Text(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::host_ips_overlap;

    #[test]
    fn every_address_is_one_notion_per_family() {
        let yes = [
            ("", ""),
            ("", "0.0.0.0"),
            ("", "::"),
            ("", "127.0.0.1"),
            ("", "::1"),
            ("0.0.0.0", "0.0.0.0"),
            ("0.0.0.0", "127.0.0.1"),
            ("::", "::"),
            ("::", "::1"),
            ("::", "fd00::5"),
            ("10.0.0.1", "10.0.0.1"),
            ("::1", "0:0::1"),
        ];
        let no = [("0.0.0.0", "::"), ("0.0.0.0", "::1"), ("::", "127.0.0.1"), ("10.0.0.1", "10.0.0.2"), ("::1", "::2")];
        for (a, b) in yes {
            assert!(host_ips_overlap(a, b) && host_ips_overlap(b, a), "{a:?} and {b:?} overlap");
        }
        for (a, b) in no {
            assert!(!host_ips_overlap(a, b) && !host_ips_overlap(b, a), "{a:?} and {b:?} do not overlap");
        }
    }
}
