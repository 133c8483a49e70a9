//! An IP network in CIDR notation, as settings name client networks (`legacy_allow`
//! in capf.toml: the legacy TLS listener should serve only the phones that need it,
//! so it can be fenced to their subnets; the listener checks on accept, before any
//! TLS byte is read).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network in CIDR notation (`10.1.0.0/16`, `2001:db8::/32`); a bare address
/// is a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is inside the network. IPv4 peers seen through an IPv6 socket
    /// (`::ffff:10.1.2.3`) are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a network (expected e.g. 10.1.0.0/16)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0–{max}"))?,
        };
        // Host bits set is almost always a typo (10.1.2.0/16 for 10.1.0.0/16 or /24):
        // refuse it rather than guess which was meant. It also keeps `addr` the
        // network address, which `contains` relies on.
        let network = masked(addr, prefix);
        if network != addr {
            return Err(format!(
                "{s:?} has host bits set (the network is {network}/{prefix})"
            ));
        }
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn membership_follows_the_prefix() {
        let net: Network = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.0.1")));
        assert!(net.contains(ip("10.1.255.254")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("2001:db8::1")));
        // An IPv4 peer on a dual-stack socket.
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("::ffff:10.3.2.3")));

        let host: Network = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));

        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));

        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::5")));
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        for (text, reason) in [
            ("10.1.2.0/16", "host bits"),
            ("10.1.0.0/33", "0–32"),
            ("2001:db8::/129", "0–128"),
            ("10.1.0.0/", "prefix"),
            ("10.1.0/16", "not a network"),
            ("phones", "not a network"),
        ] {
            let err = text.parse::<Network>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn round_trips_through_toml() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            allow: Vec<Network>,
        }
        let s: S = toml::from_str("allow = [\"10.1.0.0/16\", \"2001:db8::/32\"]").unwrap();
        assert_eq!(
            toml::from_str::<S>(&toml::to_string(&s).unwrap()).unwrap(),
            s
        );
        assert!(toml::from_str::<S>("allow = [\"10.1.2.0/16\"]").is_err());
    }
}
