//! The Docker API as the manager serves it.

mod containers;
mod error;
mod events;
mod images;
mod info;
mod networks;
mod relay;
pub mod routes;
mod server;
mod util;
mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use swarm_leadership::{Leadership, Role};
use swarm_proxy::{ProxyBody, Upstream};

use crate::cluster::Cluster;
use crate::observe::Observed;
use crate::scheduler::Scheduler;
pub use containers::place_and_create;
pub use error::ApiError;
use routes::{Handler, Matched};
pub use server::{accept_all, bind, Listener};

/// What every request handler can reach.
pub struct Api {
    pub cluster: Arc<Cluster>,
    pub scheduler: Scheduler,
    /// Add CORS headers (`--api-enable-cors`).
    pub cors: bool,
    /// With `--replication`: who is primary. `None`: this manager is alone
    /// and always primary.
    pub leadership: Option<Arc<Leadership>>,
    /// How long a replica's request waits for a primary during a failover.
    pub failover_wait: Duration,
    /// Pooled clients to primary managers, by address.
    pub primaries: parking_lot::Mutex<HashMap<String, Upstream>>,
}

impl Api {
    /// Answers one request; errors become Docker-style JSON answers here.
    /// Answers one request. Boxed as `Send` here, where the compiler can see
    /// the concrete lifetimes, so the connection task can be spawned.
    pub fn handle(
        self: Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> {
        Box::pin(async move { self.respond(req).await })
    }

    /// True when this manager may act on its own (primary, or not replicated).
    pub fn is_primary(&self) -> bool {
        self.leadership.as_ref().is_none_or(|l| l.is_primary())
    }

    /// The role pairs that open `docker info`'s status.
    pub fn role_status(&self) -> Vec<[String; 2]> {
        match self.leadership.as_ref().map(|l| l.role()) {
            None | Some(Role::Primary) => vec![["Role".into(), "primary".into()]],
            Some(Role::Replica { primary }) => {
                vec![["Role".into(), "replica".into()], ["Primary".into(), primary.unwrap_or_default()]]
            }
        }
    }

    /// A pooled client to the primary at `addr` (from the election's lock).
    fn primary_upstream(&self, addr: &str) -> Result<Upstream, swarm_proxy::ProxyError> {
        let mut primaries = self.primaries.lock();
        if let Some(upstream) = primaries.get(addr) {
            return Ok(upstream.clone());
        }
        let upstream = relay::primary_client(addr)?;
        primaries.insert(addr.to_string(), upstream.clone());
        Ok(upstream)
    }

    async fn respond(self: &Arc<Self>, req: Request<ProxyBody>) -> Response<ProxyBody> {
        if let Some(leadership) = &self.leadership {
            if !leadership.is_primary() && !relay::answered_by_replica(req.method(), req.uri().path()) {
                return relay::relay(self, leadership, req).await;
            }
        }
        self.clone().serve(req).await
    }

    /// Answers a request on this manager.
    async fn serve(self: Arc<Self>, req: Request<ProxyBody>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut resp = if method == Method::OPTIONS && self.cors {
            let mut resp = Response::new(swarm_proxy::empty());
            *resp.status_mut() = StatusCode::OK;
            resp
        } else {
            match routes::route(&method, &path) {
                Some(matched) => {
                    let matched = Matched { version: "", ..matched };
                    let version = routes::split_version(&path).0.to_string();
                    match self.dispatch(req, matched, &version).await {
                        Ok(resp) => resp,
                        Err(e) => {
                            Observed::RequestFailed {
                                method: method.as_str(),
                                path: &path,
                                status: e.status().as_u16(),
                                error: &e.to_string(),
                            }
                            .emit();
                            e.into_response()
                        }
                    }
                }
                None => error::json_error(StatusCode::NOT_FOUND, "page not found"),
            }
        };
        let headers = resp.headers_mut();
        if !headers.contains_key("api-version") {
            if let Ok(v) = HeaderValue::from_str(&self.cluster.api_version()) {
                headers.insert("api-version", v);
            }
        }
        headers
            .insert(header::SERVER, HeaderValue::from_static(concat!("swarm/", env!("CARGO_PKG_VERSION"), " (linux)")));
        if self.cors {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Origin, X-Requested-With, Content-Type, Accept, X-Registry-Auth"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, PUT, OPTIONS, HEAD"),
            );
        }
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
        m: Matched<'_>,
        version: &str,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let ctx = util::Ctx { api: self, version, m: &m };
        match m.handler {
            Handler::Ping => info::ping(&ctx, req),
            Handler::Version => info::version(&ctx),
            Handler::Info => info::info(&ctx),
            Handler::SystemDf => info::system_df(&ctx).await,
            Handler::Events => events::events(&ctx, req).await,
            Handler::AnyEngine => util::to_any_engine(&ctx, req).await,
            Handler::Prune => util::to_every_engine(&ctx, req).await,
            Handler::ContainersList => containers::list(&ctx, req),
            Handler::ContainerCreate => containers::create(&ctx, req).await,
            Handler::ContainerInspect => containers::inspect(&ctx, req).await,
            Handler::Container { refresh } => containers::forward(&ctx, req, refresh).await,
            Handler::ContainerRemove => containers::remove(&ctx, req).await,
            Handler::ContainerRename => containers::rename(&ctx, req).await,
            Handler::ExecCreate => containers::exec_create(&ctx, req).await,
            Handler::Exec => containers::exec(&ctx, req).await,
            Handler::Commit => containers::commit(&ctx, req).await,
            Handler::Build => containers::build(&ctx, req).await,
            Handler::ImagesList => images::list(&ctx, req).await,
            Handler::ImagesCreate => images::create(&ctx, req).await,
            Handler::ImagesLoad => images::load(&ctx, req).await,
            Handler::ImagesSave | Handler::ImageFirst => images::first_with(&ctx, req).await,
            Handler::ImageTag => images::tag(&ctx, req).await,
            Handler::ImageRemove => images::remove(&ctx, req).await,
            Handler::NetworksList => networks::list(&ctx, req),
            Handler::NetworkCreate => networks::create(&ctx, req).await,
            Handler::NetworkInspect => networks::inspect(&ctx, req).await,
            Handler::NetworkRemove => networks::remove(&ctx, req).await,
            Handler::NetworkConnect => networks::connect(&ctx, req).await,
            Handler::VolumesList => volumes::list(&ctx, req).await,
            Handler::VolumeCreate => volumes::create(&ctx, req).await,
            Handler::VolumeInspect => volumes::inspect(&ctx, req).await,
            Handler::VolumeRemove => volumes::remove(&ctx, req).await,
        }
    }
}
