//! Where webhooks may be sent (against SSRF: a webhook URL must not turn
//! the server into a client of its own network).
//!
//! Live endpoints: `https://` only, and only to public addresses. The
//! address is checked after DNS resolution, at creation (so a bad URL is a
//! 400) and again when each delivery connects (the delivery client's
//! resolver drops every non-public address, so a DNS answer that changed
//! since cannot reach the inside either). Sandbox endpoints may use
//! `http://` and any address, `http://localhost:3000/…` included, for
//! development; a server can restrict sandbox deliveries to loopback
//! (`--webhook-sandbox-destinations loopback`), as CI does when fuzzers
//! create endpoints with made-up hosts.

use reqwest::Url;
use settle_core::tenancy::Environment;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest URL an endpoint may have.
pub const MAX_URL_CHARS: usize = 2048;

/// Which addresses deliveries may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destinations {
    /// Public unicast addresses only (always for live).
    Public,
    /// Any address (sandbox, by default).
    Any,
    /// Loopback only (sandbox on a server told so).
    Loopback,
}

impl Destinations {
    pub fn parse(text: &str) -> Option<Destinations> {
        match text {
            "any" => Some(Destinations::Any),
            "loopback" => Some(Destinations::Loopback),
            "public" => Some(Destinations::Public),
            _ => None,
        }
    }

    /// The rule for an environment, given the server's sandbox rule.
    pub fn for_environment(environment: Environment, sandbox: Destinations) -> Destinations {
        match environment {
            Environment::Live => Destinations::Public,
            Environment::Sandbox => sandbox,
        }
    }

    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Destinations::Any => true,
            Destinations::Loopback => ip.is_loopback(),
            Destinations::Public => is_public(ip),
        }
    }
}

/// Whether `ip` is a public unicast address: not private, loopback,
/// link-local, shared (CGNAT), documentation, benchmarking, multicast,
/// broadcast, unspecified or reserved, in IPv4 or IPv6 (IPv4-mapped and
/// NAT64 forms included).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) embeds an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo, ORCHID, benchmarking)
                || s[0] == 0x0100 && s[1..4] == [0, 0, 0] // discard-only
                || v6 == Ipv6Addr::UNSPECIFIED)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

/// A URL refused, with the reason shown to the client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks what can be checked without DNS: length, scheme, no credentials,
/// a host, and an IP-literal host against `rule`.
pub fn check(text: &str, environment: Environment, rule: Destinations) -> Result<Url, Refused> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(Refused(format!("url must be at most {MAX_URL_CHARS} characters")));
    }
    let url = Url::parse(text).map_err(|e| Refused(format!("url is not a valid absolute URL: {e}")))?;
    match (url.scheme(), environment) {
        ("https", _) | ("http", Environment::Sandbox) => {}
        ("http", Environment::Live) => return Err(Refused(String::from("live webhook endpoints must use https://"))),
        (other, _) => return Err(Refused(format!("url scheme {other:?} is not supported: use https:// (or http:// in the sandbox)"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused(String::from("url must not carry credentials")));
    }
    if url.fragment().is_some() {
        return Err(Refused(String::from("url must not have a #fragment")));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| Refused(String::from("url must name a host")))?;
    // The URL parser normalizes IP literals (`0x7f.1` is `127.0.0.1`).
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    match (literal, rule) {
        (Some(ip), _) if !rule.allows(ip) => Err(Refused(format!("url's address {ip} is not allowed ({})", describe(rule)))),
        (None, Destinations::Loopback) if url.host_str() != Some("localhost") => {
            Err(Refused(String::from("this server delivers sandbox webhooks to localhost or loopback addresses only")))
        }
        (None, Destinations::Public) if url.host_str().is_some_and(|h| h == "localhost" || h.ends_with(".localhost")) => {
            Err(Refused(String::from("live webhook endpoints must not be on localhost")))
        }
        _ => Ok(url),
    }
}

fn describe(rule: Destinations) -> &'static str {
    match rule {
        Destinations::Public => "live endpoints must be on public addresses, not private, loopback or link-local ones",
        Destinations::Loopback => "this server delivers sandbox webhooks to loopback addresses only",
        Destinations::Any => "",
    }
}

/// Resolves the URL's host and checks every address against `rule`
/// (all must pass: a name with one private address is refused).
pub async fn resolve(url: &Url, rule: Destinations) -> Result<Vec<SocketAddr>, Refused> {
    let host = url.host_str().ok_or_else(|| Refused(String::from("url must name a host")))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|_| Refused(format!("url's host {host:?} does not resolve")))?.collect();
    if addresses.is_empty() {
        return Err(Refused(format!("url's host {host:?} does not resolve")));
    }
    if let Some(bad) = addresses.iter().find(|a| !rule.allows(a.ip())) {
        return Err(Refused(format!("url's host resolves to {}, which is not allowed ({})", bad.ip(), describe(rule))));
    }
    Ok(addresses)
}

/// The delivery client's resolver: only addresses `rule` allows, checked
/// when each connection is made.
#[derive(Debug)]
pub struct Resolver(pub Destinations);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rule = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| rule.allows(a.ip())).collect();
            if found.is_empty() {
                return Err(Box::new(Refused(format!("{host} has no address webhooks may be sent to"))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_urls_must_be_https_and_public() {
        let live = |u: &str| check(u, Environment::Live, Destinations::Public).is_ok();
        assert!(live("https://hooks.example.com/settle"));
        assert!(live("https://93.184.216.34/x"));
        for refused in [
            "http://hooks.example.com/",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://user:pass@hooks.example.com/",
            "ftp://hooks.example.com/",
            "not a url",
        ] {
            assert!(!live(refused), "{refused} must be refused");
        }
    }

    #[test]
    fn sandbox_urls_may_be_local_unless_the_server_says_loopback_only() {
        assert!(check("http://localhost:3000/webhooks", Environment::Sandbox, Destinations::Any).is_ok());
        assert!(check("http://10.0.0.5/", Environment::Sandbox, Destinations::Any).is_ok());
        assert!(check("http://127.0.0.1:9/", Environment::Sandbox, Destinations::Loopback).is_ok());
        assert!(check("http://localhost:9/", Environment::Sandbox, Destinations::Loopback).is_ok());
        assert!(check("http://example.com/", Environment::Sandbox, Destinations::Loopback).is_err());
        assert!(check("http://10.0.0.5/", Environment::Sandbox, Destinations::Loopback).is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_for_live() {
        let url = Url::parse("https://localhost/x").unwrap_or_else(|e| panic!("{e}"));
        assert!(resolve(&url, Destinations::Public).await.is_err());
        assert!(resolve(&url, Destinations::Loopback).await.is_ok());
    }
}
