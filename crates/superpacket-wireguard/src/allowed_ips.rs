//! Cryptokey routing: which peer owns an inner address (outbound: where to send; inbound: who may use
//! that source). Longest prefix wins; a prefix added again moves to the later peer, as `wg` does.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with a prefix length (`198.18.0.0/15`, `2001:db8::1/128`). The address keeps its host bits
/// as written (wg-quick's `Address = 198.18.77.1/24` names both the address and the network); the
/// routing table masks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address as written.
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Bits in an address of this family.
    fn family_bits(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `addr/prefix`, or a bare address as a host route (/32 or /128) as `wg` does.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr =
            addr_text.parse().map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address with an optional /prefix"))?;
        let bits = Cidr::family_bits(addr);
        let prefix = match prefix_text {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("`{s}` has a prefix length that is not 0 to {bits}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The prefixes of one address family, grouped by length, longest first.
#[derive(Debug, Clone, Default)]
struct FamilyTable {
    by_len: Vec<(u8, HashMap<u128, usize>)>,
}

impl FamilyTable {
    fn insert(&mut self, bits: u8, network: u128, prefix: u8, peer: usize) {
        let key = mask(bits, network, prefix);
        match self.by_len.binary_search_by(|(len, _)| prefix.cmp(len)) {
            Ok(i) => {
                self.by_len[i].1.insert(key, peer);
            }
            Err(i) => self.by_len.insert(i, (prefix, HashMap::from([(key, peer)]))),
        }
    }

    fn lookup(&self, bits: u8, addr: u128) -> Option<usize> {
        self.by_len.iter().find_map(|(len, nets)| nets.get(&mask(bits, addr, *len)).copied())
    }
}

/// `addr` with everything after the first `prefix` of its `bits` bits cleared.
fn mask(bits: u8, addr: u128, prefix: u8) -> u128 {
    addr & (!0u128).checked_shl(u32::from(bits - prefix)).unwrap_or(0)
}

/// An address of either family as a number, with its family's width.
fn as_number(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128, u128::from(a)),
    }
}

/// The cryptokey routing table: prefixes of both families, each owned by one peer index.
#[derive(Debug, Clone, Default)]
pub struct AllowedIps {
    v4: FamilyTable,
    v6: FamilyTable,
}

impl AllowedIps {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `cidr` to `peer`, taking it from whichever peer had exactly this prefix before.
    pub fn insert(&mut self, cidr: Cidr, peer: usize) {
        let (bits, network) = as_number(cidr.addr);
        let prefix = cidr.prefix.min(bits);
        let table = if bits == 32 { &mut self.v4 } else { &mut self.v6 };
        table.insert(bits, network, prefix, peer);
    }

    /// The peer owning the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<usize> {
        let (bits, number) = as_number(addr);
        let table = if bits == 32 { &self.v4 } else { &self.v6 };
        table.lookup(bits, number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let mut t = AllowedIps::new();
        t.insert(cidr("0.0.0.0/0"), 0);
        t.insert(cidr("198.18.0.0/15"), 1);
        t.insert(cidr("198.18.77.0/24"), 2);
        t.insert(cidr("198.18.77.9"), 3);
        t.insert(cidr("::/0"), 4);
        t.insert(cidr("2001:db8::/32"), 5);
        t.insert(cidr("2001:db8:77::/48"), 6);
        t.insert(cidr("2001:db8:77::9/128"), 7);
        let cases = [
            ("203.0.113.1", 0),
            ("198.19.255.255", 1),
            ("198.18.77.1", 2),
            ("198.18.77.9", 3),
            ("198.18.77.10", 2),
            ("2001:db9::1", 4),
            ("2001:db8:1::1", 5),
            ("2001:db8:77::1", 6),
            ("2001:db8:77::9", 7),
        ];
        for (addr, peer) in cases {
            assert_eq!(t.lookup(ip(addr)), Some(peer), "{addr}");
        }
    }

    #[test]
    fn families_do_not_mix_and_gaps_have_no_peer() {
        let mut t = AllowedIps::new();
        t.insert(cidr("198.18.0.0/16"), 0);
        assert_eq!(t.lookup(ip("198.19.0.1")), None);
        // ::ffff:198.18.0.1 is an IPv6 address and must not match the IPv4 prefix.
        assert_eq!(t.lookup(ip("::ffff:198.18.0.1")), None);
        assert_eq!(t.lookup(ip("::")), None);
        assert_eq!(AllowedIps::new().lookup(ip("198.18.0.1")), None);
    }

    #[test]
    fn a_later_owner_of_the_same_prefix_replaces_the_earlier() {
        let mut t = AllowedIps::new();
        t.insert(cidr("198.18.1.0/24"), 0);
        // Host bits are masked: this is the same prefix.
        t.insert(cidr("198.18.1.77/24"), 1);
        assert_eq!(t.lookup(ip("198.18.1.5")), Some(1));
        t.insert(cidr("2001:db8::/32"), 0);
        t.insert(cidr("2001:db8::/32"), 2);
        assert_eq!(t.lookup(ip("2001:db8::5")), Some(2));
    }

    #[test]
    fn zero_prefix_and_host_routes_at_the_edges() {
        let mut t = AllowedIps::new();
        t.insert(cidr("255.255.255.255/32"), 1);
        t.insert(cidr("0.0.0.0/0"), 0);
        t.insert(cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 3);
        t.insert(cidr("::/0"), 2);
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(1));
        assert_eq!(t.lookup(ip("255.255.255.254")), Some(0));
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(0));
        assert_eq!(t.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), Some(3));
        assert_eq!(t.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")), Some(2));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(cidr("198.18.0.1"), Cidr { addr: ip("198.18.0.1"), prefix: 32 });
        assert_eq!(cidr("2001:db8::1"), Cidr { addr: ip("2001:db8::1"), prefix: 128 });
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        for bad in ["198.18.0.0/33", "2001:db8::/129", "198.18.0.0/", "198.18.0.0/-1", "example.com/8", "", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
