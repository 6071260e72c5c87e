//! Is a Redis or RabbitMQ server really answering at an address? Raw TCP and a few protocol
//! bytes, no client crate.
//!
//! This file is also compiled into `xtask` (through `#[path]`), which must not depend on any
//! workspace crate: `cargo xtask services` has to work while a library crate does not build.
//! So it uses std only, and everything here is `pub(crate)`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// The address did not resolve.
    Resolve(String, io::Error),
    /// Nothing accepted a TCP connection.
    Connect(io::Error),
    /// The connection broke or timed out mid-conversation.
    Io(io::Error),
    /// Something answered, but not the expected protocol.
    Protocol(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Resolve(addr, e) => write!(f, "cannot resolve {addr}: {e}"),
            ProbeError::Connect(e) => write!(f, "cannot connect: {e}"),
            ProbeError::Io(e) => write!(f, "connection failed during the handshake: {e}"),
            ProbeError::Protocol(what) => f.write_str(what),
        }
    }
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve(addr.to_owned(), e))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout)).map_err(ProbeError::Io)?;
                s.set_write_timeout(Some(timeout)).map_err(ProbeError::Io)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(ProbeError::Connect(last))
}

/// Sends `PING` and expects `+PONG`. A server that wants a password answers `-NOAUTH`; that is
/// still a Redis server, and the credentials are the client's business, so it counts as up.
pub(crate) fn redis(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    let mut s = connect(addr, timeout)?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(ProbeError::Io)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 512 {
        match s.read(&mut byte).map_err(ProbeError::Io)? {
            0 => break,
            _ => line.push(byte[0]),
        }
    }
    let reply = String::from_utf8_lossy(&line);
    let reply = reply.trim_end();
    if reply == "+PONG" || reply.starts_with("-NOAUTH") {
        Ok(())
    } else if reply.starts_with("-LOADING") {
        Err(ProbeError::Protocol(format!(
            "Redis is still loading its dataset ({reply})"
        )))
    } else {
        Err(ProbeError::Protocol(format!(
            "expected +PONG to PING, got {reply:?}"
        )))
    }
}

/// Sends the AMQP 0-9-1 protocol header and expects the server's first frame to be the method
/// frame `Connection.Start` (class 10, method 10) on channel 0. Only a broker that has finished
/// booting answers it, unlike a bare TCP accept.
pub(crate) fn amqp(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    let mut s = connect(addr, timeout)?;
    s.write_all(b"AMQP\x00\x00\x09\x01")
        .map_err(ProbeError::Io)?;
    // Frame header (type, channel, size) and the method's class and method ids.
    let mut head = [0u8; 11];
    s.read_exact(&mut head).map_err(ProbeError::Io)?;
    if head.starts_with(b"AMQP") {
        return Err(ProbeError::Protocol(format!(
            "the server refused AMQP 0-9-1 and offered {:?}",
            &head[..8]
        )));
    }
    let (kind, channel) = (head[0], u16::from_be_bytes([head[1], head[2]]));
    let (class, method) = (
        u16::from_be_bytes([head[7], head[8]]),
        u16::from_be_bytes([head[9], head[10]]),
    );
    if (kind, channel, class, method) == (1, 0, 10, 10) {
        Ok(())
    } else {
        Err(ProbeError::Protocol(format!(
            "expected Connection.Start (frame 1, channel 0, method 10.10), got frame {kind}, \
             channel {channel}, method {class}.{method}"
        )))
    }
}

/// The `host:port` a `redis://` or `amqp://` URL points at, or `None` if it has no host.
/// Credentials, path and query are ignored; `[v6]` literals keep their brackets, which
/// `ToSocketAddrs` expects.
pub(crate) fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.is_empty() {
        return None;
    }
    let has_port = match hostport.rfind(']') {
        Some(close) => hostport[close..].contains(':'),
        None => hostport.contains(':'),
    };
    if has_port {
        Some(hostport.to_owned())
    } else {
        Some(format!("{hostport}:{default_port}"))
    }
}
