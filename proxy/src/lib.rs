//! HTTP forwarding for the swarm manager.
//!
//! Everything the manager sends to a Docker engine (or, on a replica, to the
//! primary manager) goes through an [`Upstream`]: a pooled keep-alive HTTP/1.1
//! client bound to one address. [`forward`] relays one request unchanged but
//! for its path, streaming both bodies, and splices hijacked connections
//! (`Upgrade: tcp`, used by attach and exec) into a raw byte pipe. With
//! [`TlsConfigs`], the same connections are TLS ones.
#![forbid(unsafe_code)]

mod body;
mod error;
mod forward;
mod pool;
mod tls;
mod upstream;

pub use body::{empty, full, BoxError, ProxyBody};
pub use error::ProxyError;
pub use forward::{forward, forward_with_upgrade, is_upgrade_request, strip_hop_headers};
pub use hyper::upgrade::OnUpgrade;
pub use pool::UpstreamBody;
pub use tls::{FilesStamp, TlsConfigs, TlsError, TlsFiles};
pub use upstream::Upstream;
