//! The fast test layer's helpers: fake engines, an in-memory lock store,
//! managers started in-process, a bare HTTP client, and test certificates. Nothing here needs
//! root: every socket is a loopback port picked by binding port 0.
#![allow(dead_code)] // not every test binary uses every helper

pub mod certs;
pub mod client;
pub mod engine;
pub mod lock_store;
pub mod manager;
