//! The Docker API as the manager serves it.
//!
//! A request goes through these phases, each in one place:
//! 1. **gate** ([`Api::handle`]): a replica relays everything but the few
//!    routes it answers itself to the primary (`to_primary.rs`);
//! 2. **route** (`routes.rs`): method and path to a [`Handler`], once;
//! 3. **resolve** the target: a container, image, network or volume to the
//!    engine(s) that hold it, or a cluster-level answer (the handler modules);
//! 4. **forward or answer** (`forward.rs`, `reply.rs`);
//! 5. **observe** ([`Api::answer_here`]): failures become Docker-style JSON
//!    (`error.rs`, the one place errors get their status) and a log line;
//!    every answer gets the manager's headers; [`Api::handle`] counts every
//!    answer once, with its route class and final status (`GET /metrics`).

mod containers;
mod error;
mod events;
mod forward;
mod images;
mod info;
mod logs;
mod networks;
mod nodes;
mod reply;
mod request;
pub mod routes;
mod scrape;
mod server;
mod services;
mod tasks;
mod to_primary;
mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use swarm_leadership::{Leadership, Role};
use swarm_proxy::{ProxyBody, Upstream};

use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::observe::Observed;
pub use error::ApiError;
use routes::{Handler, Matched};
pub use server::{accept_all, bind, ClientLimits, Listener};

/// What every request handler can reach.
pub struct Api {
    pub cluster: Arc<Cluster>,
    /// Add CORS headers (`--api-enable-cors`).
    pub cors: bool,
    /// With `--replication`: who is primary. `None`: this manager is alone
    /// and always primary.
    pub leadership: Option<Arc<Leadership>>,
    /// How long a replica's request waits for a primary during a failover.
    pub failover_wait: Duration,
    /// Pooled clients to primary managers, by address; an entry is made on
    /// the first request relayed to that address and kept.
    pub primaries: parking_lot::Mutex<HashMap<String, Upstream>>,
    /// With `--tls`/`--tlsverify`: TCP listeners serve TLS and the primary
    /// is reached over TLS. Unix sockets stay plain.
    pub tls: Option<Arc<swarm_proxy::TlsConfigs>>,
    /// What one client may hold: time to send headers, connections, body size.
    pub limits: ClientLimits,
    /// This manager's metrics (shared with the cluster), served on `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

/// One routed request, as handlers see it.
pub struct Ctx<'a> {
    pub api: &'a Arc<Api>,
    pub route: &'a Matched,
}

impl Ctx<'_> {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.api.cluster
    }

    /// The request path with the route's name replaced by `name` (e.g. an ID),
    /// keeping the client's version prefix and query.
    pub fn with_name(&self, name: &str, query: Option<&str>) -> String {
        self.path(&format!("{}{}{}", self.route.prefix, name, self.route.suffix), query)
    }

    /// `rest` under the client's version prefix, with `query`.
    pub fn path(&self, rest: &str, query: Option<&str>) -> String {
        match query {
            Some(q) if !q.is_empty() => format!("{}{}?{}", self.route.version, rest, q),
            _ => format!("{}{}", self.route.version, rest),
        }
    }
}

impl Api {
    /// Answers one request. Boxed as `Send` here, where the compiler can see
    /// the concrete lifetimes, so the connection task can be spawned.
    pub fn handle(
        self: Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> {
        Box::pin(async move {
            let arrived = Instant::now();
            let method = req.method().clone();
            let route = routes::route(req.method(), req.uri().path());
            let class = route.as_ref().map_or("unrouted", |r| r.handler.label());
            // A replica answers for itself what describes it (its metrics included).
            let answered_here =
                matches!(route.as_ref().map(|r| r.handler), Some(Handler::Ping | Handler::Info | Handler::Metrics));
            let (resp, relayed) = match &self.leadership {
                Some(leadership) if !answered_here && !leadership.is_primary() => {
                    to_primary::relay(&self, leadership, req, route).await
                }
                _ => (self.clone().answer_here(req, route).await, false),
            };
            Observed::RequestAnswered {
                method: method.as_str(),
                route: class,
                status: resp.status().as_u16(),
                relayed,
                elapsed: arrived.elapsed(),
            }
            .record(&self.metrics);
            resp
        })
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
        let upstream = to_primary::primary_client(addr, self.tls.clone())?;
        primaries.insert(addr.to_string(), upstream.clone());
        Ok(upstream)
    }

    /// Answers a request on this manager: dispatches the route, turns a
    /// failure into its Docker-style answer, and adds the manager's headers.
    async fn answer_here(self: Arc<Self>, req: Request<ProxyBody>, route: Option<Matched>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let mut resp = if method == Method::OPTIONS && self.cors {
            let mut resp = Response::new(swarm_proxy::empty());
            *resp.status_mut() = StatusCode::OK;
            resp
        } else {
            let path = req.uri().path().to_string();
            let result = match &route {
                Some(route) => self.dispatch(req, route).await,
                None => Err(ApiError::NotFound("page not found".into())),
            };
            result.unwrap_or_else(|e| {
                let error = e.to_string();
                Observed::RequestFailed {
                    method: method.as_str(),
                    path: &path,
                    status: e.status().as_u16(),
                    error: &error,
                }
                .emit();
                e.into_response()
            })
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
        route: &Matched,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let ctx = Ctx { api: self, route };
        if route.handler.reads_desired_state() {
            if let Some(term) = crate::reconcile::primary_term(self.leadership.as_deref()) {
                self.cluster.state.refresh_for(term).await?;
            }
        }
        match route.handler {
            Handler::Ping => info::ping(&ctx, req),
            Handler::Version => info::version(&ctx),
            Handler::Info => info::info(&ctx, &req),
            Handler::NodesList => nodes::list(&ctx),
            Handler::NodeInspect => nodes::inspect(&ctx),
            Handler::NodeUpdate => nodes::update(&ctx, req).await,
            Handler::SwarmVerb => nodes::swarm_refused(),
            Handler::NoSecrets => Ok(reply::json_response(StatusCode::OK, &serde_json::json!([]))),
            Handler::SecretCreate => nodes::secrets_refused(),
            Handler::ServicesList => services::list(&ctx, &req),
            Handler::ServiceCreate => services::create(&ctx, req).await,
            Handler::ServiceInspect => services::inspect(&ctx),
            Handler::ServiceUpdate => services::update(&ctx, req).await,
            Handler::ServiceRemove => services::remove(&ctx).await,
            Handler::ServiceLogs => logs::service(&ctx, req).await,
            Handler::TasksList => tasks::list(&ctx, &req),
            Handler::TaskInspect => tasks::inspect(&ctx),
            Handler::TaskLogs => logs::task(&ctx, req).await,
            Handler::SystemDf => info::system_df(&ctx).await,
            Handler::Events => events::events(&ctx, req).await,
            Handler::AnyEngine => forward::to_any_engine(&ctx, req).await,
            Handler::Prune => forward::to_every_engine(&ctx, req).await,
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
            Handler::Metrics => scrape::metrics(&ctx),
        }
    }
}
