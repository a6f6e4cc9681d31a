//! Tries, in `begin`, to open a TCP connection to the `address` setting (`127.0.0.1:PORT`)
//! through `wasi:sockets`, which no configuration grants. Reports `denied` with the refusal, or
//! `other("CONNECTED ...")` if the connection was made.

use std::cell::RefCell;

use wasip2::sockets::network::{IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

/// An IPv4 address and port: four octets, then the port.
type Ipv4Address = (u8, u8, u8, u8, u16);

thread_local! {
    static ADDRESS: RefCell<Option<Ipv4Address>> = const { RefCell::new(None) };
}

struct Component;

fn parse(address: &str) -> Option<Ipv4Address> {
    let (ip, port) = address.split_once(':')?;
    let parts: Vec<u8> = ip
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    Some((parts[0], parts[1], parts[2], parts[3], port.parse().ok()?))
}

fn connect(address: (u8, u8, u8, u8, u16)) -> Result<(), String> {
    let network = wasip2::sockets::instance_network::instance_network();
    let socket = wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
        .map_err(|e| format!("create-tcp-socket: {e}"))?;
    let (a, b, c, d, port) = address;
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port,
        address: (a, b, c, d),
    });
    socket
        .start_connect(&network, remote)
        .map_err(|e| format!("start-connect: {e}"))?;
    socket.subscribe().block();
    socket
        .finish_connect()
        .map(|_| ())
        .map_err(|e| format!("finish-connect: {e}"))
}

impl Guest for Component {
    type Upload = Nothing;
    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        for (key, value) in settings {
            if key == "address" {
                let parsed = parse(&value).ok_or_else(|| {
                    Error::InvalidSettings(format!("`address` must be IPv4:PORT, not `{value}`"))
                })?;
                ADDRESS.with(|a| *a.borrow_mut() = Some(parsed));
            }
        }
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        let address = ADDRESS
            .with(|a| *a.borrow())
            .ok_or_else(|| Error::InvalidSettings("`address` is required".to_owned()))?;
        let _ = IpAddress::Ipv4((0, 0, 0, 0));
        match connect(address) {
            Ok(()) => Err(Error::Other("CONNECTED without a grant".to_owned())),
            Err(refusal) => Err(Error::Denied(format!("TCP connection refused: {refusal}"))),
        }
    }
}

struct Nothing;

impl GuestUpload for Nothing {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
