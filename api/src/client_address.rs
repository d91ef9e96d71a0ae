//! The client's address: the connection's peer, or, when that peer is a
//! configured reverse proxy (`server.trusted_proxies`), the address the
//! proxy names in `X-Real-IP`. Anyone else's `X-Real-IP` is ignored, so a
//! client cannot pick the address its password failures are counted under.

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use ipnet::IpNet;

use crate::error::ApiError;

const REAL_IP_HEADER: &str = "x-real-ip";

/// Reverse proxies whose `X-Real-IP` names the client (`server.trusted_proxies`),
/// registered as app data of its own so that this extractor needs nothing
/// else of the application.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// Where a request comes from, as far as this instance can trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The address of a request from `peer` carrying `real_ip`.
    pub fn resolve(peer: IpAddr, real_ip: Option<&str>, trusted_proxies: &[IpNet]) -> Self {
        let named_by_proxy = trusted_proxies
            .iter()
            .any(|proxy| proxy.contains(&peer))
            .then(|| real_ip.and_then(|value| value.trim().parse().ok()))
            .flatten();
        Self(canonical(named_by_proxy.unwrap_or(peer)))
    }
}

impl ClientAddress {
    /// What throttling counts per: the address, or for IPv6 its /64, which
    /// one subscriber usually holds whole (one address each would let a
    /// single client guess from 2^64 "addresses").
    pub fn throttle_key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        }
    }
}

/// `::ffff:a.b.c.d` is a.b.c.d: one client, one address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromRequest for ClientAddress {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(peer) = request.peer_addr() else {
            return ready(Err(ApiError::Internal(
                "request without a peer address".to_owned(),
            )));
        };
        let trusted = request
            .app_data::<web::Data<TrustedProxies>>()
            .map(|proxies| proxies.0.as_slice())
            .unwrap_or_default();
        let real_ip = request
            .headers()
            .get(REAL_IP_HEADER)
            .and_then(|value| value.to_str().ok());
        ready(Ok(Self::resolve(peer.ip(), real_ip, trusted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted: Vec<IpNet> = vec!["10.151.7.0/24".parse().expect("a block")];
        let from_proxy = ClientAddress::resolve(ip("10.151.7.200"), Some("203.0.113.9"), &trusted);
        assert_eq!(from_proxy, ClientAddress(ip("203.0.113.9")));
        let spoofed = ClientAddress::resolve(ip("198.51.100.7"), Some("203.0.113.9"), &trusted);
        assert_eq!(spoofed, ClientAddress(ip("198.51.100.7")));
        let garbage = ClientAddress::resolve(ip("10.151.7.200"), Some("not an address"), &trusted);
        assert_eq!(garbage, ClientAddress(ip("10.151.7.200")));
        let mapped = ClientAddress::resolve(ip("::ffff:192.0.2.1"), None, &[]);
        assert_eq!(mapped, ClientAddress(ip("192.0.2.1")));
    }

    #[test]
    fn throttling_counts_an_ipv6_client_by_its_slash_64() {
        let one = ClientAddress(ip("2001:db8:1:2:aaaa::1")).throttle_key();
        let same_subscriber = ClientAddress(ip("2001:db8:1:2:ffff:1:2:3")).throttle_key();
        let other = ClientAddress(ip("2001:db8:1:3::1")).throttle_key();
        assert_eq!(one, "2001:db8:1:2::/64");
        assert_eq!(one, same_subscriber);
        assert_ne!(one, other);
        assert_eq!(ClientAddress(ip("192.0.2.7")).throttle_key(), "192.0.2.7");
    }
}
