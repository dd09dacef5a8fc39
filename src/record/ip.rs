/*!
IP addresses in Segment events: kept, truncated or dropped before an event is journaled
(`[privacy] ip`), so that with `truncate` or `drop` no full address ever reaches the journal, the
store, the lake or the dead-letter area.

Truncation keeps the network and zeroes the host: an IPv4 address to its /24 (`203.0.113.77` →
`203.0.113.0`), an IPv6 address to its /48 (`2001:db8:85a3:8d3:…` → `2001:db8:85a3::`), what
Google Analytics and Matomo do. An IPv4 address written as IPv6 (`::ffff:203.0.113.77`) is
truncated as the IPv4 address it is and written as one (`203.0.113.0`): its /48 would keep
nothing, and every other reader of it wants the IPv4 form. A value that is not an address (a
typo, `1.2.3.4:80`, a list from `X-Forwarded-For`, a number) is dropped: it might still hold one.
*/

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// What happens to a Segment event's `context.ip` before it is journaled.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpPolicy {
    /// Journaled as sent (the default: what sluice always did).
    #[default]
    Keep,
    /// Only the network: IPv4 /24, IPv6 /48; a value that is not an address is removed.
    Truncate,
    /// Removed.
    Drop,
}

/// Bits kept of an IPv4 address.
pub const IPV4_PREFIX: u32 = 24;
/// Bits kept of an IPv6 address.
pub const IPV6_PREFIX: u32 = 48;

/// `addr` with every bit after its network prefix zeroed (see the module docs).
pub fn truncate(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & !(u32::MAX >> IPV4_PREFIX))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> IPV6_PREFIX))),
    }
}

/// What `policy` makes of the `ip` text: `None` when it is removed.
pub fn apply(policy: IpPolicy, ip: &str) -> Option<String> {
    match policy {
        IpPolicy::Keep => Some(ip.to_owned()),
        IpPolicy::Truncate => ip.parse().ok().map(|addr| truncate(addr).to_string()),
        IpPolicy::Drop => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truncated(ip: &str) -> Option<String> {
        apply(IpPolicy::Truncate, ip)
    }

    #[test]
    fn ipv4_keeps_its_24_bit_network() {
        assert_eq!(truncated("203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(truncated("10.0.0.0").as_deref(), Some("10.0.0.0"));
        assert_eq!(truncated("255.255.255.255").as_deref(), Some("255.255.255.0"));
    }

    #[test]
    fn ipv6_keeps_its_48_bit_network() {
        assert_eq!(truncated("2001:db8:85a3:8d3:1319:8a2e:370:7348").as_deref(), Some("2001:db8:85a3::"));
        assert_eq!(truncated("2001:DB8:1::1").as_deref(), Some("2001:db8:1::"));
        assert_eq!(truncated("::1").as_deref(), Some("::"));
        assert_eq!(truncated("fe80::1").as_deref(), Some("fe80::"));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_truncated_as_ipv4() {
        assert_eq!(truncated("::ffff:203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(truncated("::ffff:cb00:714d").as_deref(), Some("203.0.113.0"));
    }

    #[test]
    fn anything_that_is_not_an_address_is_dropped() {
        for garbage in [
            "",
            "unknown",
            " 203.0.113.77",
            "203.0.113.77:8080",
            "203.0.113.77, 10.0.0.1",
            "203.0.113",
            "203.0.113.256",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "2001:db8::1/64",
        ] {
            assert_eq!(truncated(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn keep_keeps_and_drop_drops_whatever_the_value() {
        assert_eq!(apply(IpPolicy::Keep, "203.0.113.77").as_deref(), Some("203.0.113.77"));
        assert_eq!(apply(IpPolicy::Keep, "garbage").as_deref(), Some("garbage"));
        assert_eq!(apply(IpPolicy::Drop, "203.0.113.77"), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// The bits a truncated address may hold: its network prefix.
        fn only_the_prefix(out: IpAddr, of: IpAddr) -> bool {
            match (out, of.to_canonical()) {
                (IpAddr::V4(out), IpAddr::V4(of)) => {
                    let mask = u32::MAX << (32 - IPV4_PREFIX);
                    out.to_bits() & !mask == 0 && out.to_bits() == of.to_bits() & mask
                }
                (IpAddr::V6(out), IpAddr::V6(of)) => {
                    let mask = u128::MAX << (128 - IPV6_PREFIX);
                    out.to_bits() & !mask == 0 && out.to_bits() == of.to_bits() & mask
                }
                _ => false,
            }
        }

        proptest! {
            #[test]
            fn a_truncated_address_holds_nothing_beyond_its_prefix(addr in any::<IpAddr>()) {
                let text = apply(IpPolicy::Truncate, &addr.to_string()).expect("an address is kept truncated");
                let out: IpAddr = text.parse().expect("the result is an address");
                prop_assert!(only_the_prefix(out, addr), "{addr} -> {out}");
            }

            #[test]
            fn any_text_truncates_to_nothing_or_to_a_network(text in "[0-9a-fA-F:.]{0,45}|\\PC{0,45}") {
                if let Some(out) = apply(IpPolicy::Truncate, &text) {
                    let parsed: IpAddr = text.parse().expect("only an address is kept");
                    prop_assert!(only_the_prefix(out.parse().expect("an address"), parsed), "{text} -> {out}");
                }
            }
        }
    }
}
