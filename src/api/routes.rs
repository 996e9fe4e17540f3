//! The route table: which handler serves which method and path.
//!
//! Paths may carry a name that itself contains slashes (`node-01/web`,
//! `registry:5000/busybox`), so a pattern is a fixed prefix, an optional name,
//! and a fixed suffix, as the original's `{name:.*}` routes were.

use http::Method;

/// What serves a route. Forwarding handlers say where the request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Ping,
    Version,
    Info,
    Events,
    SystemDf,
    /// Forward to any healthy engine (`/auth`, `/images/search`).
    AnyEngine,
    ContainersList,
    ContainerCreate,
    /// Forward to every healthy engine and merge the JSON answers (prune).
    Prune,
    ContainerInspect,
    /// Forward to the container's engine; refresh the cache afterwards when `refresh`.
    Container {
        refresh: bool,
    },
    ContainerRemove,
    ContainerRename,
    ExecCreate,
    Exec,
    Commit,
    Build,
    ImagesList,
    ImagesCreate,
    ImagesLoad,
    ImagesSave,
    /// Forward to the first engine that has the image.
    ImageFirst,
    ImageTag,
    ImageRemove,
    NetworksList,
    NetworkCreate,
    NetworkInspect,
    NetworkRemove,
    NetworkConnect,
    VolumesList,
    VolumeCreate,
    VolumeInspect,
    VolumeRemove,
    NodesList,
    NodeInspect,
    NodeUpdate,
    /// `docker swarm init/join/leave/update`, `GET /swarm`: refused.
    SwarmVerb,
    /// `GET /secrets`, `GET /configs`: this cluster keeps none.
    NoSecrets,
    /// Creating a secret or config: refused with the reason.
    SecretCreate,
    ServicesList,
    ServiceCreate,
    ServiceInspect,
    ServiceUpdate,
    ServiceRemove,
    ServiceLogs,
    TasksList,
    TaskInspect,
    TaskLogs,
    /// `GET /metrics`: this manager's own metrics, never relayed.
    Metrics,
}

/// One row of the table.
struct Route {
    method: Method,
    prefix: &'static str,
    /// `None`: the path must equal `prefix`. `Some(suffix)`: a non-empty name
    /// sits between `prefix` and `suffix`.
    suffix: Option<&'static str>,
    handler: Handler,
}

const fn exact(method: Method, path: &'static str, handler: Handler) -> Route {
    Route { method, prefix: path, suffix: None, handler }
}

const fn named(method: Method, prefix: &'static str, suffix: &'static str, handler: Handler) -> Route {
    Route { method, prefix, suffix: Some(suffix), handler }
}

const REFRESH: Handler = Handler::Container { refresh: true };
const PASS: Handler = Handler::Container { refresh: false };

/// Exact routes come before named ones with the same prefix.
static ROUTES: &[Route] = &[
    exact(Method::GET, "/_ping", Handler::Ping),
    exact(Method::HEAD, "/_ping", Handler::Ping),
    exact(Method::GET, "/version", Handler::Version),
    exact(Method::GET, "/info", Handler::Info),
    exact(Method::GET, "/events", Handler::Events),
    exact(Method::GET, "/system/df", Handler::SystemDf),
    exact(Method::POST, "/auth", Handler::AnyEngine),
    exact(Method::GET, "/containers/json", Handler::ContainersList),
    exact(Method::POST, "/containers/create", Handler::ContainerCreate),
    exact(Method::POST, "/containers/prune", Handler::Prune),
    named(Method::GET, "/containers/", "/json", Handler::ContainerInspect),
    named(Method::POST, "/containers/", "/start", REFRESH),
    named(Method::POST, "/containers/", "/stop", REFRESH),
    named(Method::POST, "/containers/", "/kill", REFRESH),
    named(Method::POST, "/containers/", "/restart", REFRESH),
    named(Method::POST, "/containers/", "/pause", REFRESH),
    named(Method::POST, "/containers/", "/unpause", REFRESH),
    named(Method::POST, "/containers/", "/update", REFRESH),
    named(Method::POST, "/containers/", "/rename", Handler::ContainerRename),
    named(Method::POST, "/containers/", "/wait", PASS),
    named(Method::POST, "/containers/", "/resize", PASS),
    named(Method::POST, "/containers/", "/attach", PASS),
    named(Method::GET, "/containers/", "/attach/ws", PASS),
    named(Method::POST, "/containers/", "/exec", Handler::ExecCreate),
    named(Method::GET, "/containers/", "/top", PASS),
    named(Method::GET, "/containers/", "/stats", PASS),
    named(Method::GET, "/containers/", "/changes", PASS),
    named(Method::GET, "/containers/", "/export", PASS),
    named(Method::GET, "/containers/", "/logs", PASS),
    named(Method::GET, "/containers/", "/archive", PASS),
    named(Method::HEAD, "/containers/", "/archive", PASS),
    named(Method::PUT, "/containers/", "/archive", PASS),
    named(Method::DELETE, "/containers/", "", Handler::ContainerRemove),
    named(Method::POST, "/exec/", "/start", Handler::Exec),
    named(Method::POST, "/exec/", "/resize", Handler::Exec),
    named(Method::GET, "/exec/", "/json", Handler::Exec),
    exact(Method::POST, "/commit", Handler::Commit),
    exact(Method::POST, "/build", Handler::Build),
    exact(Method::GET, "/images/json", Handler::ImagesList),
    exact(Method::POST, "/images/create", Handler::ImagesCreate),
    exact(Method::POST, "/images/load", Handler::ImagesLoad),
    exact(Method::GET, "/images/get", Handler::ImagesSave),
    exact(Method::GET, "/images/search", Handler::AnyEngine),
    exact(Method::POST, "/images/prune", Handler::Prune),
    named(Method::GET, "/images/", "/json", Handler::ImageFirst),
    named(Method::GET, "/images/", "/history", Handler::ImageFirst),
    named(Method::GET, "/images/", "/get", Handler::ImageFirst),
    named(Method::POST, "/images/", "/push", Handler::ImageFirst),
    named(Method::POST, "/images/", "/tag", Handler::ImageTag),
    named(Method::DELETE, "/images/", "", Handler::ImageRemove),
    exact(Method::GET, "/networks", Handler::NetworksList),
    exact(Method::POST, "/networks/create", Handler::NetworkCreate),
    exact(Method::POST, "/networks/prune", Handler::Prune),
    named(Method::POST, "/networks/", "/connect", Handler::NetworkConnect),
    named(Method::POST, "/networks/", "/disconnect", Handler::NetworkConnect),
    named(Method::GET, "/networks/", "", Handler::NetworkInspect),
    named(Method::DELETE, "/networks/", "", Handler::NetworkRemove),
    exact(Method::GET, "/volumes", Handler::VolumesList),
    exact(Method::POST, "/volumes/create", Handler::VolumeCreate),
    exact(Method::POST, "/volumes/prune", Handler::Prune),
    named(Method::GET, "/volumes/", "", Handler::VolumeInspect),
    named(Method::DELETE, "/volumes/", "", Handler::VolumeRemove),
    exact(Method::GET, "/nodes", Handler::NodesList),
    named(Method::POST, "/nodes/", "/update", Handler::NodeUpdate),
    named(Method::GET, "/nodes/", "", Handler::NodeInspect),
    exact(Method::GET, "/services", Handler::ServicesList),
    exact(Method::POST, "/services/create", Handler::ServiceCreate),
    named(Method::POST, "/services/", "/update", Handler::ServiceUpdate),
    named(Method::GET, "/services/", "/logs", Handler::ServiceLogs),
    named(Method::GET, "/services/", "", Handler::ServiceInspect),
    named(Method::DELETE, "/services/", "", Handler::ServiceRemove),
    exact(Method::GET, "/tasks", Handler::TasksList),
    named(Method::GET, "/tasks/", "/logs", Handler::TaskLogs),
    named(Method::GET, "/tasks/", "", Handler::TaskInspect),
    exact(Method::GET, "/secrets", Handler::NoSecrets),
    exact(Method::GET, "/configs", Handler::NoSecrets),
    exact(Method::POST, "/secrets/create", Handler::SecretCreate),
    exact(Method::POST, "/configs/create", Handler::SecretCreate),
    named(Method::GET, "/distribution/", "/json", Handler::AnyEngine),
    exact(Method::GET, "/swarm", Handler::SwarmVerb),
    exact(Method::POST, "/swarm/init", Handler::SwarmVerb),
    exact(Method::POST, "/swarm/join", Handler::SwarmVerb),
    exact(Method::POST, "/swarm/leave", Handler::SwarmVerb),
    exact(Method::POST, "/swarm/update", Handler::SwarmVerb),
    exact(Method::GET, "/metrics", Handler::Metrics),
];

impl Handler {
    /// The route class: a short, stable name for metrics (the `route` label).
    pub fn label(self) -> &'static str {
        match self {
            Handler::Ping => "ping",
            Handler::Version => "version",
            Handler::Info => "info",
            Handler::Events => "events",
            Handler::SystemDf => "system_df",
            Handler::AnyEngine => "any_engine",
            Handler::ContainersList => "containers_list",
            Handler::ContainerCreate => "containers_create",
            Handler::Prune => "prune",
            Handler::ContainerInspect => "container_inspect",
            Handler::Container { .. } => "container_forward",
            Handler::ContainerRemove => "container_remove",
            Handler::ContainerRename => "container_rename",
            Handler::ExecCreate => "exec_create",
            Handler::Exec => "exec",
            Handler::Commit => "commit",
            Handler::Build => "build",
            Handler::ImagesList => "images_list",
            Handler::ImagesCreate => "images_create",
            Handler::ImagesLoad => "images_load",
            Handler::ImagesSave => "images_save",
            Handler::ImageFirst => "image_forward",
            Handler::ImageTag => "image_tag",
            Handler::ImageRemove => "image_remove",
            Handler::NetworksList => "networks_list",
            Handler::NetworkCreate => "network_create",
            Handler::NetworkInspect => "network_inspect",
            Handler::NetworkRemove => "network_remove",
            Handler::NetworkConnect => "network_connect",
            Handler::VolumesList => "volumes_list",
            Handler::VolumeCreate => "volume_create",
            Handler::VolumeInspect => "volume_inspect",
            Handler::VolumeRemove => "volume_remove",
            Handler::NodesList => "nodes_list",
            Handler::NodeInspect => "node_inspect",
            Handler::NodeUpdate => "node_update",
            Handler::SwarmVerb => "swarm",
            Handler::NoSecrets => "secrets_list",
            Handler::SecretCreate => "secret_create",
            Handler::ServicesList => "services_list",
            Handler::ServiceCreate => "service_create",
            Handler::ServiceInspect => "service_inspect",
            Handler::ServiceUpdate => "service_update",
            Handler::ServiceRemove => "service_remove",
            Handler::ServiceLogs => "service_logs",
            Handler::TasksList => "tasks_list",
            Handler::TaskInspect => "task_inspect",
            Handler::TaskLogs => "task_logs",
            Handler::Metrics => "metrics",
        }
    }

    /// Whether the handler answers from the desired state (nodes, services,
    /// tasks), which must first be current for this primary term.
    pub fn reads_desired_state(self) -> bool {
        matches!(
            self,
            Handler::NodesList
                | Handler::NodeInspect
                | Handler::NodeUpdate
                | Handler::ServicesList
                | Handler::ServiceCreate
                | Handler::ServiceInspect
                | Handler::ServiceUpdate
                | Handler::ServiceRemove
                | Handler::ServiceLogs
                | Handler::TasksList
                | Handler::TaskInspect
                | Handler::TaskLogs
        )
    }
}

/// A request path split into what routing and forwarding need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub handler: Handler,
    /// `/v1.41` or empty: forwarded requests keep the client's version.
    pub version: String,
    /// The route's fixed prefix (e.g. `/containers/`).
    pub prefix: &'static str,
    /// The name between prefix and suffix, percent-decoded; empty for exact routes.
    pub name: String,
    /// The route's fixed suffix (e.g. `/json`).
    pub suffix: &'static str,
}

/// Finds the route for `method` and `path` (path without query).
pub fn route(method: &Method, path: &str) -> Option<Matched> {
    let (version, rest) = split_version(path);
    let rest = if rest.len() > 1 { rest.trim_end_matches('/') } else { rest };
    for r in ROUTES.iter().filter(|r| r.method == *method) {
        match r.suffix {
            None if rest == r.prefix => {
                return Some(Matched {
                    handler: r.handler,
                    version: version.to_string(),
                    prefix: r.prefix,
                    name: String::new(),
                    suffix: "",
                })
            }
            Some(suffix) => {
                let Some(tail) = rest.strip_prefix(r.prefix) else {
                    continue;
                };
                let Some(name) = tail.strip_suffix(suffix) else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().into_owned();
                return Some(Matched {
                    handler: r.handler,
                    version: version.to_string(),
                    prefix: r.prefix,
                    name,
                    suffix,
                });
            }
            None => {}
        }
    }
    None
}

/// Splits a leading `/vX.Y` off the path.
fn split_version(path: &str) -> (&str, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return (&path[..end + 2], &rest[end..]);
        }
    }
    ("", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_exact_and_named_paths() {
        let m = route(&Method::GET, "/v1.41/containers/json").unwrap();
        assert_eq!((m.handler, m.version.as_str()), (Handler::ContainersList, "/v1.41"));
        let m = route(&Method::GET, "/containers/node-01/web/json").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::ContainerInspect, "node-01/web"));
        let m = route(&Method::POST, "/v1.41/images/10.250.1.1:5000/busybox/push").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::ImageFirst, "10.250.1.1:5000/busybox"));
        let m = route(&Method::DELETE, "/v1.41/containers/abc").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::ContainerRemove, "abc"));
        let m = route(&Method::HEAD, "/_ping").unwrap();
        assert_eq!(m.handler, Handler::Ping);
        let m = route(&Method::GET, "/images/get").unwrap();
        assert_eq!(m.handler, Handler::ImagesSave);
        let m = route(&Method::GET, "/v1.41/services/web/logs").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::ServiceLogs, "web"));
        let m = route(&Method::GET, "/v1.41/services/web").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::ServiceInspect, "web"));
        let m = route(&Method::POST, "/v1.41/services/create").unwrap();
        assert_eq!(m.handler, Handler::ServiceCreate);
        let m = route(&Method::GET, "/v1.41/tasks/abc/logs").unwrap();
        assert_eq!((m.handler, m.name.as_str()), (Handler::TaskLogs, "abc"));
        assert_eq!(route(&Method::GET, "/metrics").map(|m| m.handler), Some(Handler::Metrics));
        assert!(route(&Method::POST, "/metrics").is_none());
    }

    /// Route classes are metric labels: short, snake case, one per handler kind.
    #[test]
    fn every_route_has_a_label() {
        for row in ROUTES {
            let label = row.handler.label();
            assert!(!label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{label}");
        }
    }

    #[test]
    fn unknown_routes_do_not_match() {
        assert_eq!(route(&Method::GET, "/secrets").map(|m| m.handler), Some(Handler::NoSecrets));
        let distribution = route(&Method::GET, "/v1.47/distribution/10.0.0.1:5000/busybox:latest/json");
        assert_eq!(
            distribution.map(|m| (m.handler, m.name)),
            Some((Handler::AnyEngine, "10.0.0.1:5000/busybox:latest".into()))
        );
        assert!(route(&Method::POST, "/containers/json").is_none());
        assert!(route(&Method::GET, "/containers//json").is_none());
    }

    #[test]
    fn splits_versions() {
        assert_eq!(split_version("/v1.41/info"), ("/v1.41", "/info"));
        assert_eq!(split_version("/volumes"), ("", "/volumes"));
        assert_eq!(split_version("/vx/info"), ("", "/vx/info"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::HEAD),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::DELETE),
            Just(Method::PATCH),
            Just(Method::OPTIONS),
            "[A-Z]{1,8}".prop_filter_map("not a method", |m| Method::from_bytes(m.as_bytes()).ok()),
        ]
    }

    /// Paths built from the table's own pieces, version prefixes, names
    /// with escapes and multi-byte characters, and stray slashes.
    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(ROUTES.iter().map(|r| r.prefix.to_string()).collect::<Vec<_>>()),
            prop::sample::select(ROUTES.iter().filter_map(|r| r.suffix.map(str::to_string)).collect::<Vec<_>>()),
            Just("/v1.41".to_string()),
            Just("/v".to_string()),
            Just("/v1..2".to_string()),
            Just("/".to_string()),
            Just("%2F".to_string()),
            Just("%".to_string()),
            Just("%e9".to_string()),
            Just("é".to_string()),
            "[a-z0-9:._-]{0,6}",
        ];
        prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        /// Any method and path routes or does not, without panicking; a
        /// route found belongs to the table and says what it matched.
        #[test]
        fn any_path_routes_or_not(method in method(), path in path_like(), any_path in any::<String>()) {
            for p in [&path, &any_path] {
                if let Some(m) = route(&method, p) {
                    let row = ROUTES.iter().find(|r| r.method == method && r.prefix == m.prefix && r.handler == m.handler);
                    prop_assert!(row.is_some());
                    prop_assert!(p.starts_with(&m.version));
                    prop_assert_eq!(m.name.is_empty(), m.suffix.is_empty() && row.is_some_and(|r| r.suffix.is_none()));
                }
            }
        }

        /// Every named route takes any name, versioned or not.
        #[test]
        fn named_routes_take_any_name(index in 0..ROUTES.len(), name in "[a-z0-9:._-][a-z0-9:._/-]{0,10}[a-z0-9:._-]|[a-z0-9]") {
            let row = &ROUTES[index];
            let Some(suffix) = row.suffix else { return Ok(()) };
            for version in ["", "/v1.41"] {
                let path = format!("{version}{}{name}{suffix}", row.prefix);
                let m = route(&row.method, &path);
                prop_assert!(m.is_some(), "{}", path);
                prop_assert_eq!(m.map(|m| m.version), Some(version.to_string()));
            }
        }
    }
}
