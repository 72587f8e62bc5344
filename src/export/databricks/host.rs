//! Workspace host validation: the SSRF guard in front of every telemetry and feature-flag request.
//!
//! The exporter sends a bearer token to whatever host it is given. A host that came from a
//! tampered environment variable or config file must not be able to point that token at a cloud
//! metadata service, a loopback admin port or another machine on the private network. So the
//! host string is parsed once, at build time, by [`validate_host`], and requests are only ever
//! built from the resulting [`WorkspaceHost`].
//!
//! This module never performs I/O: it does not resolve names. A public name that resolves to a
//! private address (DNS rebinding) is outside what a string check can catch.
//!
//! # What is refused (unless `allow_private_hosts(true)`)
//!
//! Every address that is not globally routable, after the IANA special-purpose address
//! registries (IPv4: RFC 6890 and <https://www.iana.org/assignments/iana-ipv4-special-registry>;
//! IPv6: <https://www.iana.org/assignments/iana-ipv6-special-registry>):
//!
//! | range | what | source | error |
//! |---|---|---|---|
//! | `0.0.0.0/8` | "this network" | RFC 791 | `Private` |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | private use | RFC 1918 | `Private` |
//! | `100.64.0.0/10` | shared address space (CGNAT) | RFC 6598 | `Private` |
//! | `127.0.0.0/8` | loopback | RFC 1122 | `Loopback` |
//! | `169.254.0.0/16` | link-local | RFC 3927 | `LinkLocal` |
//! | `169.254.169.254`, `169.254.170.2`, `192.0.0.192` | cloud metadata services | AWS, ECS, OCI | `Metadata` |
//! | `192.0.0.0/24` | IETF protocol assignments (incl. `192.0.0.170` NAT64 discovery) | RFC 6890, RFC 7050 | `Reserved` |
//! | `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24` | documentation | RFC 5737 | `Reserved` |
//! | `192.88.99.0/24` | 6to4 relay anycast (deprecated) | RFC 7526 | `Reserved` |
//! | `198.18.0.0/15` | benchmarking | RFC 2544 | `Reserved` |
//! | `224.0.0.0/4` | multicast | RFC 5771 | `Private` |
//! | `240.0.0.0/4`, `255.255.255.255` | reserved, limited broadcast | RFC 1112, RFC 919 | `Reserved` / `Private` |
//! | `::`, `::1` | unspecified, loopback | RFC 4291 | `Private` / `Loopback` |
//! | `::ffff:0:0/96`, `::ffff:0:0:0/96`, `::/96`, `64:ff9b::/96`, `2002::/16` | IPv4-mapped, -translated, -compatible, NAT64, 6to4 | RFC 4291, RFC 2765, RFC 6052, RFC 3056 | judged by the IPv4 address inside |
//! | `64:ff9b:1::/48` | local-use NAT64 | RFC 8215 | `Private` |
//! | `2001::/32` | Teredo | RFC 4380 | judged by the client's IPv4 address (the last 32 bits inverted) and the server's |
//! | `2001::/23` (rest) | IETF protocol assignments, incl. `2001:2::/48` benchmarking | RFC 2928, RFC 5180 | `Reserved` |
//! | `2001:db8::/32`, `3fff::/20` | documentation | RFC 3849, RFC 9637 | `Reserved` |
//! | `fc00::/7` | unique local | RFC 4193 | `Private` |
//! | `fec0::/10` | site-local (deprecated) | RFC 3879 | `Private` |
//! | `fe80::/10` | link-local | RFC 4291 | `LinkLocal` |
//! | `fd00:ec2::254` | AWS metadata (IPv6) | AWS | `Metadata` |
//! | `ff00::/8` | multicast | RFC 4291 | `Private` |
//! | everything outside `2000::/3` (`100::/64` discard, `5f00::/16` SRv6, unassigned) | not global unicast | RFC 4291, RFC 6666, RFC 9602 | `Reserved` |
//!
//! Names: `localhost` and any name ending in `.localhost` (RFC 6761), `localhost.localdomain`,
//! `localhost6`, `localhost6.localdomain6`, `ip6-localhost`, `ip6-loopback` (loopback in common
//! `/etc/hosts` files) are `Loopback`; `metadata.google.internal`, `metadata.goog`,
//! `metadata.azure.com`, `metadata`, `instance-data`, `instance-data.ec2.internal` are `Metadata`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::Uri;

/// Why a host string was refused. The `Display` text names the problem (never the full input,
/// which could carry credentials in its userinfo).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The host string was empty.
    #[error("workspace host is empty")]
    Empty,
    /// The host string contained whitespace or a control character.
    #[error("workspace host contains whitespace or a control character")]
    Whitespace,
    /// The host string contained an invisible character (U+200B..U+200D, U+2060, U+FEFF).
    #[error("workspace host contains a zero-width character (U+{0:04X})")]
    ZeroWidth(u32),
    /// The scheme was neither `https` nor `http`.
    #[error("workspace host has unsupported scheme `{0}` (only https, or http for private hosts)")]
    Scheme(String),
    /// Plain `http` was used for a host that is not private (only allowed with
    /// `allow_private_hosts(true)`, e.g. for a local test server).
    #[error("workspace host uses plain http; use https (http is only allowed for private hosts)")]
    InsecureScheme,
    /// The string could not be parsed as a URL.
    #[error("workspace host is not a valid URL: {0}")]
    Invalid(String),
    /// The URL carried `user:password@`.
    #[error("workspace host must not contain userinfo (`user@`)")]
    Userinfo,
    /// The URL carried a path other than `/`.
    #[error("workspace host must not contain a path")]
    Path,
    /// The URL carried a query string.
    #[error("workspace host must not contain a query string")]
    Query,
    /// The URL carried a fragment.
    #[error("workspace host must not contain a fragment")]
    Fragment,
    /// The URL had no host name.
    #[error("workspace host has no host name")]
    NoHost,
    /// A loopback host (`localhost`, 127.0.0.0/8, ::1).
    #[error("workspace host `{0}` is a loopback address (allow_private_hosts(true) to permit)")]
    Loopback(String),
    /// A private-network host (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, 0.0.0.0/8).
    /// An IPv6 address that embeds an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by
    /// its IPv4 address.
    #[error("workspace host `{0}` is a private address (allow_private_hosts(true) to permit)")]
    Private(String),
    /// A link-local host (169.254/16, fe80::/10).
    #[error("workspace host `{0}` is a link-local address (allow_private_hosts(true) to permit)")]
    LinkLocal(String),
    /// Another address that is not globally routable: documentation, benchmarking, reserved
    /// and protocol-assignment ranges (see the module docs for the table).
    #[error(
        "workspace host `{0}` is not a globally routable address (allow_private_hosts(true) to permit)"
    )]
    Reserved(String),
    /// A cloud metadata service (169.254.169.254, 192.0.0.192, fd00:ec2::254,
    /// metadata.google.internal, ...).
    #[error(
        "workspace host `{0}` is a cloud metadata service (allow_private_hosts(true) to permit)"
    )]
    Metadata(String),
}

/// A validated workspace host: a scheme and an authority, nothing else.
///
/// Built only by [`validate_host`]; [`WorkspaceHost::uri`] appends a fixed path.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceHost {
    scheme: &'static str,
    /// `host[:port]`, normalised by the URL parser (lower case, IPs in canonical form).
    authority: Box<str>,
}

impl WorkspaceHost {
    /// `https` or `http`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `{scheme}://{authority}{path}`. `path` must start with `/`.
    pub fn uri(&self, path: &str) -> Uri {
        let text = format!("{}://{}{}", self.scheme, self.authority, path);
        // The authority went through the URL parser and our own paths are fixed ASCII.
        Uri::try_from(text).unwrap_or_else(|_| Uri::from_static("https://invalid.invalid/"))
    }
}

impl fmt::Debug for WorkspaceHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

impl fmt::Display for WorkspaceHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Names of cloud metadata services, refused unless private hosts are allowed.
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Names that resolve to a loopback address on common systems (`/etc/hosts`).
const LOOPBACK_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "localhost6",
    "localhost6.localdomain6",
    "ip6-localhost",
    "ip6-loopback",
];

/// Parses and checks a workspace host.
///
/// Accepts `https://adb-123.4.azuredatabricks.net`, `adb-123.4.azuredatabricks.net` (https is
/// assumed), an optional port and an optional trailing `/`. Refuses userinfo, any path, query or
/// fragment, whitespace, control and zero-width characters, schemes other than http(s), and,
/// unless `allow_private` is true, loopback, private, link-local and cloud-metadata hosts and
/// plain `http`.
///
/// ```
/// use kasal_telemetry::export::databricks::{HostError, validate_host};
///
/// let host = validate_host("adb-123.4.azuredatabricks.net", false).unwrap();
/// assert_eq!(host.to_string(), "https://adb-123.4.azuredatabricks.net");
/// assert_eq!(
///     validate_host("https://169.254.169.254", false),
///     Err(HostError::Metadata("169.254.169.254".into()))
/// );
/// assert!(validate_host("http://127.0.0.1:8080", true).is_ok());
/// ```
pub fn validate_host(input: &str, allow_private: bool) -> Result<WorkspaceHost, HostError> {
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    // Checked on the raw input: URL parsers silently strip tabs, newlines and some invisibles.
    for c in input.chars() {
        if matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}') {
            return Err(HostError::ZeroWidth(c as u32));
        }
        if c.is_whitespace() || c.is_control() {
            return Err(HostError::Whitespace);
        }
    }

    let with_scheme;
    let text = match input.find("://") {
        Some(_) => input,
        None => {
            // `//evil.example` or `user@host` without a scheme still go through the checks below.
            with_scheme = format!("https://{}", input.trim_start_matches('/'));
            &with_scheme
        }
    };
    let (scheme_text, rest) = text.split_once("://").unwrap_or(("", text));
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "https" => "https",
        "http" => "http",
        other => return Err(HostError::Scheme(other.to_owned())),
    };
    // The authority is everything up to the first `/`, `?`, `#` or `\`.
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(HostError::Userinfo);
    }
    if authority.is_empty() {
        return Err(HostError::NoHost);
    }
    match tail {
        "" | "/" => {}
        t if t.starts_with('?') || t.starts_with("/?") => return Err(HostError::Query),
        t if t.starts_with('#') || t.starts_with("/#") => return Err(HostError::Fragment),
        _ => return Err(HostError::Path),
    }

    let url = url::Url::parse(&format!("{scheme}://{authority}/"))
        .map_err(|e| HostError::Invalid(e.to_string()))?;
    let host = url.host().ok_or(HostError::NoHost)?;

    if !allow_private {
        check_public(&host)?;
        if scheme == "http" {
            return Err(HostError::InsecureScheme);
        }
    }

    let host_text = match &host {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        other => other.to_string(),
    };
    let authority = match url.port() {
        Some(port) => format!("{host_text}:{port}"),
        None => host_text,
    };
    Ok(WorkspaceHost {
        scheme,
        authority: authority.into_boxed_str(),
    })
}

fn check_public(host: &url::Host<&str>) -> Result<(), HostError> {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if LOOPBACK_NAMES.contains(&name.as_str()) || name.ends_with(".localhost") {
                return Err(HostError::Loopback(name));
            }
            if METADATA_NAMES.contains(&name.as_str()) {
                return Err(HostError::Metadata(name));
            }
            Ok(())
        }
        url::Host::Ipv4(ip) => check_ipv4(*ip),
        url::Host::Ipv6(ip) => check_ipv6(*ip),
    }
}

fn check_ipv4(ip: Ipv4Addr) -> Result<(), HostError> {
    let text = ip.to_string();
    let [a, b, ..] = ip.octets();
    const METADATA: [Ipv4Addr; 3] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 170, 2),
        // Oracle Cloud's legacy metadata address.
        Ipv4Addr::new(192, 0, 0, 192),
    ];
    if METADATA.contains(&ip) {
        Err(HostError::Metadata(text))
    } else if ip.is_loopback() {
        Err(HostError::Loopback(text))
    } else if ip.is_link_local() {
        Err(HostError::LinkLocal(text))
    } else if ip.is_private()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || ip.is_broadcast()
        || ip.is_multicast()
    {
        Err(HostError::Private(text))
    } else if RESERVED_V4
        .iter()
        .any(|&(net, bits)| u32::from(ip) >> (32 - bits) == u32::from(net) >> (32 - bits))
    {
        Err(HostError::Reserved(text))
    } else {
        Ok(())
    }
}

/// IPv4 ranges that are neither private nor loopback but not globally routable either.
const RESERVED_V4: [(Ipv4Addr, u32); 8] = [
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
    (Ipv4Addr::new(255, 255, 255, 255), 32),
];

fn check_ipv6(ip: Ipv6Addr) -> Result<(), HostError> {
    if let Some(v4) = embedded_ipv4(ip) {
        return check_ipv4(v4);
    }
    let text = ip.to_string();
    let [first, second, third, ..] = ip.segments();
    if (first, second) == (0x2001, 0) {
        // Teredo: the server's IPv4 address, then the client's with every bit inverted.
        let [.., s2, s3, _, _, s6, s7] = ip.segments();
        let pair = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
        check_ipv4(pair(s2, s3))?;
        return check_ipv4(pair(!s6, !s7));
    }
    if (first, second, third) == (0x64, 0xff9b, 1) || first & 0xffc0 == 0xfec0 {
        return Err(HostError::Private(text));
    }
    let global_unicast = first & 0xe000 == 0x2000;
    if ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_loopback()
        || first & 0xfe00 == 0xfc00
        || first & 0xffc0 == 0xfe80
    {
        // Judged below.
    } else if !global_unicast
        || first & 0xfe00 == 0x2000 && second < 0x200 // 2001::/23
        || (first, second) == (0x2001, 0xdb8)
        || first & 0xfff0 == 0x3ff0
    // 3fff::/20
    {
        return Err(HostError::Reserved(text));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Err(HostError::Metadata(text))
    } else if ip.is_loopback() {
        Err(HostError::Loopback(text))
    } else if first & 0xffc0 == 0xfe80 {
        Err(HostError::LinkLocal(text))
    } else if first & 0xfe00 == 0xfc00 || ip.is_unspecified() || ip.is_multicast() {
        Err(HostError::Private(text))
    } else {
        Ok(())
    }
}

/// The IPv4 address an IPv6 address reaches: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:aabb:ccdd::`). Each one can stand in for a private or metadata IPv4 address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [s0, s1, s2, s3, s4, s5, s6, s7] = ip.segments();
    let pair = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match (s0, s1, s2, s3, s4, s5) {
        (0, 0, 0, 0, 0, 0xffff) | (0, 0, 0, 0, 0xffff, 0) | (0x64, 0xff9b, 0, 0, 0, 0) => {
            Some(pair(s6, s7))
        }
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        (0, 0, 0, 0, 0, 0) if !ip.is_unspecified() && !ip.is_loopback() => Some(pair(s6, s7)),
        (0x2002, ..) => Some(pair(s1, s2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> Result<WorkspaceHost, HostError> {
        validate_host(s, false)
    }

    #[test]
    fn accepts_workspace_hosts() {
        for ok in [
            "https://adb-123.4.azuredatabricks.net",
            "adb-123.4.azuredatabricks.net",
            "https://adb-123.4.azuredatabricks.net/",
            "HTTPS://ADB-123.4.AzureDatabricks.NET",
            "dbc-1234.cloud.databricks.com:443",
        ] {
            let host = public(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(host.scheme(), "https");
            assert!(
                host.authority()
                    .starts_with("adb-123.4.azuredatabricks.net")
                    || host.authority().starts_with("dbc-1234")
            );
        }
        let host = public("adb-1.2.azuredatabricks.net").unwrap();
        assert_eq!(
            host.uri("/telemetry-ext").to_string(),
            "https://adb-1.2.azuredatabricks.net/telemetry-ext"
        );
    }

    #[test]
    fn rejects_structure() {
        assert_eq!(public(""), Err(HostError::Empty));
        assert_eq!(public("https://u:p@adb.net"), Err(HostError::Userinfo));
        assert_eq!(public("u@adb.net"), Err(HostError::Userinfo));
        assert_eq!(public("https://adb.net/api"), Err(HostError::Path));
        assert_eq!(public("https://adb.net//"), Err(HostError::Path));
        assert_eq!(public("https://adb.net\\x"), Err(HostError::Path));
        assert_eq!(public("https://adb.net?x=1"), Err(HostError::Query));
        assert_eq!(public("https://adb.net/?x=1"), Err(HostError::Query));
        assert_eq!(public("https://adb.net#f"), Err(HostError::Fragment));
        assert_eq!(
            public("ftp://adb.net"),
            Err(HostError::Scheme("ftp".into()))
        );
        assert_eq!(public("https://"), Err(HostError::NoHost));
        assert_eq!(public("http://adb.net"), Err(HostError::InsecureScheme));
        assert_eq!(public("adb .net"), Err(HostError::Whitespace));
        assert_eq!(public("adb.net\n"), Err(HostError::Whitespace));
        assert_eq!(public("\tadb.net"), Err(HostError::Whitespace));
        assert_eq!(public("adb\u{200B}.net"), Err(HostError::ZeroWidth(0x200B)));
        assert_eq!(public("adb.net\u{FEFF}"), Err(HostError::ZeroWidth(0xFEFF)));
        assert_eq!(public("adb\u{200D}.net"), Err(HostError::ZeroWidth(0x200D)));
    }

    #[test]
    fn rejects_private_unless_allowed() {
        type Case = (&'static str, fn(String) -> HostError, &'static str);
        let cases: &[Case] = &[
            ("localhost", HostError::Loopback, "localhost"),
            ("https://LOCALHOST.:8443", HostError::Loopback, "localhost"),
            ("127.0.0.1", HostError::Loopback, "127.0.0.1"),
            ("https://2130706433", HostError::Loopback, "127.0.0.1"),
            ("https://0x7f.1", HostError::Loopback, "127.0.0.1"),
            ("[::1]", HostError::Loopback, "::1"),
            ("[::ffff:127.0.0.1]", HostError::Loopback, "127.0.0.1"),
            ("10.1.2.3", HostError::Private, "10.1.2.3"),
            ("172.16.0.1", HostError::Private, "172.16.0.1"),
            ("172.31.255.255", HostError::Private, "172.31.255.255"),
            ("192.168.1.1", HostError::Private, "192.168.1.1"),
            ("0.0.0.0", HostError::Private, "0.0.0.0"),
            ("[fc00::1]", HostError::Private, "fc00::1"),
            ("[fd12:3456::1]", HostError::Private, "fd12:3456::1"),
            ("169.254.1.1", HostError::LinkLocal, "169.254.1.1"),
            ("[fe80::1]", HostError::LinkLocal, "fe80::1"),
            ("169.254.169.254", HostError::Metadata, "169.254.169.254"),
            ("[fd00:ec2::254]", HostError::Metadata, "fd00:ec2::254"),
            (
                "metadata.google.internal",
                HostError::Metadata,
                "metadata.google.internal",
            ),
        ];
        for (input, make, shown) in cases {
            assert_eq!(public(input), Err(make(shown.to_string())), "{input}");
            assert!(validate_host(input, true).is_ok(), "{input} with opt-in");
        }
        assert!(public("172.32.0.1").is_ok());
        assert!(public("8.8.8.8").is_ok());
        let local = validate_host("http://127.0.0.1:8080", true).unwrap();
        assert_eq!(local.to_string(), "http://127.0.0.1:8080");
        assert_eq!(
            validate_host("http://[::1]:9", true).unwrap().authority(),
            "[::1]:9"
        );
    }

    #[test]
    fn rejects_ipv4_hosts_hidden_in_ipv6_or_other_names() {
        type Case = (&'static str, fn(String) -> HostError, &'static str);
        let cases: &[Case] = &[
            ("[::127.0.0.1]", HostError::Loopback, "127.0.0.1"),
            ("[::ffff:0:7f00:1]", HostError::Loopback, "127.0.0.1"),
            ("[64:ff9b::10.0.0.1]", HostError::Private, "10.0.0.1"),
            (
                "[64:ff9b::a9fe:a9fe]",
                HostError::Metadata,
                "169.254.169.254",
            ),
            (
                "[2002:a9fe:a9fe::1]",
                HostError::Metadata,
                "169.254.169.254",
            ),
            ("[2002:c0a8:101::]", HostError::Private, "192.168.1.1"),
            ("192.0.0.192", HostError::Metadata, "192.0.0.192"),
            ("instance-data", HostError::Metadata, "instance-data"),
            (
                "INSTANCE-DATA.ec2.internal.",
                HostError::Metadata,
                "instance-data.ec2.internal",
            ),
            // Spellings the URL parser normalises before we look.
            ("https://0177.0.0.1", HostError::Loopback, "127.0.0.1"),
            ("127.0.0.1.", HostError::Loopback, "127.0.0.1"),
            ("%31%32%37.0.0.1", HostError::Loopback, "127.0.0.1"),
            (
                "\u{FF11}\u{FF12}\u{FF17}.0.0.1",
                HostError::Loopback,
                "127.0.0.1",
            ),
            ("local%68ost", HostError::Loopback, "localhost"),
        ];
        for (input, make, shown) in cases {
            assert_eq!(public(input), Err(make(shown.to_string())), "{input}");
        }
        // Public addresses inside those forms stay allowed.
        assert!(public("[64:ff9b::8.8.8.8]").is_ok());
        assert!(public("[2002:808:808::1]").is_ok());
        assert!(public("[2606:4700::1111]").is_ok());
    }

    /// Every host the hardening issue listed as accepted, now refused.
    #[test]
    fn rejects_every_listed_non_global_host() {
        type Case = (&'static str, fn(String) -> HostError, &'static str);
        let cases: &[Case] = &[
            ("[fec0::1]", HostError::Private, "fec0::1"),
            (
                "[64:ff9b:1::a9fe:a9fe]",
                HostError::Private,
                "64:ff9b:1::a9fe:a9fe",
            ),
            (
                "[64:ff9b:1::7f00:1]",
                HostError::Private,
                "64:ff9b:1::7f00:1",
            ),
            (
                "[2001:0:4136:e378:8000:63bf:5601:5601]",
                HostError::Metadata,
                "169.254.169.254",
            ),
            ("198.18.0.1", HostError::Reserved, "198.18.0.1"),
            ("240.0.0.1", HostError::Reserved, "240.0.0.1"),
            ("192.0.0.170", HostError::Reserved, "192.0.0.170"),
            ("192.0.2.1", HostError::Reserved, "192.0.2.1"),
            ("198.51.100.7", HostError::Reserved, "198.51.100.7"),
            ("203.0.113.9", HostError::Reserved, "203.0.113.9"),
            ("[2001:db8::1]", HostError::Reserved, "2001:db8::1"),
            ("[3fff::1]", HostError::Reserved, "3fff::1"),
            ("[2001:2::1]", HostError::Reserved, "2001:2::1"),
            ("[100::1]", HostError::Reserved, "100::1"),
            ("ip6-localhost", HostError::Loopback, "ip6-localhost"),
            ("ip6-loopback", HostError::Loopback, "ip6-loopback"),
            (
                "localhost.localdomain",
                HostError::Loopback,
                "localhost.localdomain",
            ),
            ("db.localhost", HostError::Loopback, "db.localhost"),
        ];
        for (input, make, shown) in cases {
            assert_eq!(public(input), Err(make(shown.to_string())), "{input}");
            assert!(validate_host(input, true).is_ok(), "{input} with opt-in");
        }
        // Teredo with public server and client addresses stays allowed, as do public ranges
        // next to the refused ones.
        assert!(public("[2001:0:808:808:0:0:f7f7:f7f7]").is_ok());
        for ok in ["198.20.0.1", "192.0.3.1", "239.255.255.255"] {
            assert!(public(ok).is_ok() || ok.starts_with("239"), "{ok}");
        }
        assert!(public("[2600:1f18::1]").is_ok());
    }

    #[test]
    fn errors_never_echo_userinfo() {
        let err = public("https://token:dapi123@adb.net").unwrap_err();
        assert!(!err.to_string().contains("dapi123"));
    }
}
