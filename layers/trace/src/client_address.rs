//! [`ClientAddress`]: who called a server, as a request extension.

use std::net::{IpAddr, SocketAddr};

/// The address of the client that made an incoming request, as a request extension: a server
/// adapter inserts it (from axum's `ConnectInfo<SocketAddr>`, or a trusted proxy header) and a
/// server span reports it as `client.address` (and `client.port` when known).
///
/// ```
/// use std::net::SocketAddr;
/// use kasal_trace::ClientAddress;
///
/// let peer: SocketAddr = "10.0.0.7:51234".parse().unwrap();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientAddress::from(peer));
/// let address = request.extensions().get::<ClientAddress>().unwrap();
/// assert_eq!(address.ip().to_string(), "10.0.0.7");
/// assert_eq!(address.port(), Some(51234));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddress {
    ip: IpAddr,
    port: Option<u16>,
}

impl ClientAddress {
    /// A client known by its IP address only (e.g. from `X-Forwarded-For`).
    pub fn new(ip: IpAddr) -> Self {
        ClientAddress { ip, port: None }
    }

    /// The client's IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client's port, when known.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl From<SocketAddr> for ClientAddress {
    fn from(address: SocketAddr) -> Self {
        ClientAddress {
            ip: address.ip(),
            port: Some(address.port()),
        }
    }
}

impl From<IpAddr> for ClientAddress {
    fn from(ip: IpAddr) -> Self {
        ClientAddress::new(ip)
    }
}
