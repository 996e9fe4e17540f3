//! A fake Docker engine: a small hyper server holding a few containers,
//! images, networks and volumes in memory, answering just enough of the
//! Engine API for a manager to validate, refresh and use it, and recording
//! every request so a test can check what the manager sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use swarm_proxy::TlsConfigs;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One request as the engine received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as sent, version prefix included.
    pub uri: String,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A container as the fake engine keeps it.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub labels: Value,
    /// List-form ports (`IP`, `PrivatePort`, `PublicPort`, `Type`).
    pub ports: Value,
    pub created: i64,
    /// Not listed before this instant: a create still in progress, whose
    /// name dockerd already holds.
    pub listed_from: Option<Instant>,
}

impl FakeContainer {
    fn summary(&self) -> Value {
        json!({
            "Id": self.id, "Names": [format!("/{}", self.name)], "Image": self.image,
            "ImageID": "sha256:0000", "Command": "sh", "Created": self.created, "State": self.state,
            "Status": self.state, "Ports": self.ports, "Labels": self.labels,
            "NetworkSettings": {"Networks": {}}, "Mounts": [],
        })
    }

    fn inspect(&self) -> Value {
        json!({
            "Id": self.id, "Name": format!("/{}", self.name), "Image": "sha256:0000",
            "Config": {"Image": self.image, "Labels": self.labels},
            "HostConfig": {},
            "State": {"Status": self.state, "Running": self.state == "running", "ExitCode": 0},
            "NetworkSettings": {"Networks": {}, "Ports": {}},
        })
    }
}

/// An answer the test forces for one method and path (without version prefix).
struct Forced {
    method: Method,
    path: String,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct State {
    /// Requests (method, unversioned path) the engine handles, then drops
    /// the connection instead of answering, as a dockerd that dies would.
    lost_answers: Vec<(Method, String)>,
    /// See [`FakeEngine::conflict_after_creating`]: how long the container
    /// made stays unlisted.
    conflict_after_create: Option<Duration>,
    /// See [`FakeEngine::list_new_containers_after`].
    new_containers_unlisted_for: Option<Duration>,
    containers: Vec<FakeContainer>,
    images: Vec<Value>,
    networks: Vec<Value>,
    volumes: Vec<Value>,
    /// Exec ID → container ID.
    execs: HashMap<String, String>,
    requests: Vec<Recorded>,
    forced: Vec<Forced>,
    /// Open `/events` streams.
    event_streams: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Every event emitted (its `timeNano`, 0 if none, and its line), which
    /// a stream opened with `since` replays first, as dockerd does.
    event_history: Vec<(i64, Bytes)>,
}

/// What the engine says about itself in `/info`.
struct Identity {
    id: String,
    name: String,
    labels: Vec<String>,
}

pub struct FakeEngine {
    pub addr: SocketAddr,
    pub name: String,
    identity: Arc<Identity>,
    state: Arc<Mutex<State>>,
    /// The accept loop; `None` once stopped.
    server: Mutex<Option<JoinHandle<()>>>,
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl FakeEngine {
    /// Starts an engine named `name` with the engine labels `labels` (`key=value`).
    pub async fn start(name: &str, labels: &[&str]) -> FakeEngine {
        FakeEngine::start_with(name, labels, None).await
    }

    /// Starts an engine that serves TLS only, with `tls`'s server
    /// configuration (client certificates required when it verifies peers).
    pub async fn start_tls(name: &str, labels: &[&str], tls: Arc<TlsConfigs>) -> FakeEngine {
        FakeEngine::start_with(name, labels, Some(tls)).await
    }

    async fn start_with(name: &str, labels: &[&str], tls: Option<Arc<TlsConfigs>>) -> FakeEngine {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a fake engine");
        let addr = listener.local_addr().expect("fake engine address");
        let identity = Arc::new(Identity {
            id: random_hex(6).to_uppercase(),
            name: name.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        });
        let state = Arc::new(Mutex::new(State::default()));
        let server = tokio::spawn(serve(listener, identity.clone(), state.clone(), tls));
        let engine = FakeEngine { addr, name: name.to_string(), identity, state, server: Mutex::new(Some(server)) };
        engine.add_network("bridge", "bridge");
        engine
    }

    /// `host:port` as discovery lists it.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The cluster-wide ID the manager gives this engine.
    pub fn swarm_id(&self) -> String {
        format!("{}|{}", self.identity.id, self.addr)
    }

    /// Stops serving: new connections are refused and open ones are cut.
    pub async fn stop(&self) {
        let Some(server) = self.server.lock().take() else { return };
        server.abort();
        // Once the task is gone, so are its listener and connections.
        let _ = server.await;
    }

    pub fn add_container(&self, name: &str, image: &str, state: &str, ports: Value) -> String {
        let id = random_hex(32);
        let container = FakeContainer {
            id: id.clone(),
            name: name.to_string(),
            image: image.to_string(),
            state: state.to_string(),
            labels: json!({}),
            ports,
            created: now(),
            listed_from: None,
        };
        self.state.lock().containers.push(container);
        id
    }

    /// Puts a copy of `container` (its name, labels and state) here under a
    /// new ID, telling nobody; returns that ID.
    pub fn add_copy(&self, container: &FakeContainer) -> String {
        let id = random_hex(32);
        self.state.lock().containers.push(FakeContainer { id: id.clone(), created: now(), ..container.clone() });
        id
    }

    /// Changes a container's state, as a crash or restart of its engine would.
    pub fn set_state(&self, name: &str, state: &str) {
        let mut engine = self.state.lock();
        let container = engine.containers.iter_mut().find(|c| c.name == name).expect("a container of this name");
        container.state = state.to_string();
    }

    pub fn container(&self, name: &str) -> Option<FakeContainer> {
        self.state.lock().containers.iter().find(|c| c.name == name).cloned()
    }

    pub fn add_image(&self, id: &str, tags: &[&str]) {
        self.state.lock().images.push(json!({"Id": id, "RepoTags": tags, "RepoDigests": [], "Size": 1000}));
    }

    pub fn has_image_tag(&self, tag: &str) -> bool {
        find_image(&self.state.lock().images, tag).is_some()
    }

    pub fn add_network(&self, name: &str, driver: &str) -> String {
        let id = random_hex(32);
        self.state.lock().networks.push(network(&id, name, driver));
        id
    }

    pub fn network_id(&self, name: &str) -> Option<String> {
        let state = self.state.lock();
        state.networks.iter().find(|n| n["Name"] == name).and_then(|n| n["Id"].as_str().map(str::to_string))
    }

    pub fn add_volume(&self, name: &str) {
        self.state.lock().volumes.push(volume(name));
    }

    pub fn has_volume(&self, name: &str) -> bool {
        self.state.lock().volumes.iter().any(|v| v["Name"] == name)
    }

    /// From now on, handles `method path` but closes the connection
    /// instead of answering.
    pub fn lose_answers_to(&self, method: Method, path: &str) {
        self.state.lock().lost_answers.push((method, path.to_string()));
    }

    /// From now on, a create makes its container but answers that the name
    /// is taken, as when another manager's create of the same name came
    /// just before; nothing tells a manager about that container, which is
    /// listed only after `unlisted_for` (that other create still running).
    pub fn conflict_after_creating(&self, unlisted_for: Duration) {
        self.state.lock().conflict_after_create = Some(unlisted_for);
    }

    /// From now on, a container created is listed only `unlisted_for`
    /// later, as one whose create is still running (dockerd lists it when
    /// its create is done).
    pub fn list_new_containers_after(&self, unlisted_for: Duration) {
        self.state.lock().new_containers_unlisted_for = Some(unlisted_for);
    }

    /// Every container the engine holds.
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.state.lock().containers.clone()
    }

    /// Answers `method path` (path without version prefix) with `status` and `body` from now on.
    pub fn force(&self, method: Method, path: &str, status: StatusCode, body: Value) {
        self.state.lock().forced.push(Forced { method, path: path.to_string(), status, body });
    }

    /// Sends `event` on every open `/events` stream.
    pub fn emit_event(&self, event: Value) {
        let mut line = serde_json::to_vec(&event).expect("event");
        line.push(b'\n');
        let line = Bytes::from(line);
        let mut state = self.state.lock();
        state.event_history.push((event["timeNano"].as_i64().unwrap_or(0), line.clone()));
        state.event_streams.retain(|tx| tx.send(line.clone()).is_ok());
    }

    /// Ends every open `/events` stream, as an engine going away does.
    pub fn end_event_streams(&self) {
        self.state.lock().event_streams.clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// The requests with `method` whose path (version prefix removed) is `path`.
    pub fn requests_to(&self, method: Method, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && unversioned(path_of(&r.uri)) == path).collect()
    }

    /// Waits until the engine received `method path`; the manager opens its
    /// `/events` stream only after its first full refresh, so that request
    /// means the manager's cache holds this engine's state.
    pub async fn wait_for_request(&self, method: Method, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.requests_to(method.clone(), path).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{} never received {method} {path}", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

fn network(id: &str, name: &str, driver: &str) -> Value {
    json!({"Name": name, "Id": id, "Driver": driver, "Scope": "local", "Labels": {}, "Options": {},
        "Internal": false, "EnableIPv6": false, "Attachable": false, "Containers": {}})
}

fn volume(name: &str) -> Value {
    json!({"Name": name, "Driver": "local", "Mountpoint": format!("/var/lib/docker/volumes/{name}/_data"),
        "Labels": {}, "Scope": "local", "Options": {}})
}

fn find_image<'a>(images: &'a [Value], reference: &str) -> Option<&'a Value> {
    let with_tag = if reference.contains(':') { reference.to_string() } else { format!("{reference}:latest") };
    images.iter().find(|i| {
        i["Id"] == reference
            || i["RepoTags"].as_array().into_iter().flatten().any(|t| t.as_str() == Some(with_tag.as_str()))
    })
}

/// Accepts connections until aborted; the connections end with it.
async fn serve(listener: TcpListener, identity: Arc<Identity>, state: Arc<Mutex<State>>, tls: Option<Arc<TlsConfigs>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let (identity, state) = (identity.clone(), state.clone());
        let tls = tls.as_ref().map(|tls| TlsAcceptor::from(tls.server_config()));
        connections.spawn(async move {
            match tls {
                Some(acceptor) => {
                    // A client the handshake refuses just gets a closed connection.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_http(stream, identity, state).await;
                    }
                }
                None => serve_http(stream, identity, state).await,
            }
        });
    }
}

async fn serve_http<S>(stream: S, identity: Arc<Identity>, state: Arc<Mutex<State>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(identity.clone(), state.clone(), req));
    let _ =
        http1::Builder::new().half_close(true).serve_connection(TokioIo::new(stream), service).with_upgrades().await;
}

fn path_of(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

/// The path without a leading `/vX.Y`.
fn unversioned(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            if rest[..slash].chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[slash..];
            }
        }
    }
    path
}

/// Nanoseconds of Docker's `seconds.nanoseconds` timestamp form.
fn nanos_of(timestamp: &str) -> Option<i64> {
    let (secs, nanos) = timestamp.split_once('.').unwrap_or((timestamp, "0"));
    Some(secs.parse::<i64>().ok()? * 1_000_000_000 + format!("{nanos:0<9}").parse::<i64>().ok()?)
}

fn query_value(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    full(status, serde_json::to_vec(&body).expect("json"))
}

fn no_content() -> Response<Body> {
    full(StatusCode::NO_CONTENT, Bytes::new())
}

fn not_found(what: &str) -> Response<Body> {
    reply(StatusCode::NOT_FOUND, json!({"message": what}))
}

async fn handle(
    identity: Arc<Identity>,
    state: Arc<Mutex<State>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, AnswerLost> {
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(hijack(&state, &mut req));
    }
    let method = req.method().clone();
    let uri = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut state = state.lock();
    state.requests.push(Recorded { method: method.clone(), uri: uri.clone(), body: body.clone() });
    let path = unversioned(path_of(&uri)).to_string();
    let query = uri.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    if let Some(forced) = state.forced.iter().find(|f| f.method == method && f.path == path) {
        return Ok(reply(forced.status, forced.body.clone()));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = route(&identity, &mut state, &method, &segments, &query, &body);
    if state.lost_answers.iter().any(|(m, p)| *m == method && *p == path) {
        // hyper closes a connection whose service fails, without answering.
        return Err(AnswerLost);
    }
    Ok(answer)
}

/// The error a request whose answer is lost fails with.
#[derive(Debug)]
pub struct AnswerLost;

impl std::fmt::Display for AnswerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the engine died before answering")
    }
}

impl std::error::Error for AnswerLost {}

/// Takes over the connection (attach, exec) and answers, once the client
/// has shut its side, `echo:` followed by everything it sent.
fn hijack(state: &Mutex<State>, req: &mut Request<Incoming>) -> Response<Body> {
    let uri = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    state.lock().requests.push(Recorded { method: req.method().clone(), uri, body: Bytes::new() });
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upgraded) = upgrade.await else { return };
        let mut stream = TokioIo::new(upgraded);
        let mut input = Vec::new();
        if stream.read_to_end(&mut input).await.is_ok() {
            let _ = stream.write_all(&[b"echo:".as_slice(), &input].concat()).await;
            let _ = stream.shutdown().await;
        }
    });
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    resp.headers_mut().remove(http::header::CONTENT_TYPE);
    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    resp.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static("tcp"));
    resp
}

fn route(
    identity: &Identity,
    state: &mut State,
    method: &Method,
    segments: &[&str],
    query: &str,
    body: &Value,
) -> Response<Body> {
    let param = |key: &str| query_value(query, key).unwrap_or_default();
    match (method.as_str(), segments) {
        ("GET", ["_ping"]) => full(StatusCode::OK, "OK"),
        ("GET", ["info"]) => reply(
            StatusCode::OK,
            json!({
                "ID": identity.id, "Name": identity.name, "NCPU": 2, "MemTotal": 2_147_483_648_i64,
                "Labels": identity.labels, "ServerVersion": "20.10.24", "KernelVersion": "6.1.0",
                "OperatingSystem": "Debian GNU/Linux 12", "OSType": "linux", "Driver": "overlay2",
                "Containers": state.containers.len(),
            }),
        ),
        ("GET", ["version"]) => {
            reply(StatusCode::OK, json!({"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"}))
        }
        // With `until` the manager asks for history, which ends; without, a live stream.
        ("GET", ["events"]) if !param("until").is_empty() => full(StatusCode::OK, Bytes::new()),
        ("GET", ["events"]) => {
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            // dockerd replays its events at or after `since` (`seconds.nanoseconds`).
            if let Some(since) = query_value(query, "since").and_then(|s| nanos_of(&s)) {
                for (_, line) in state.event_history.iter().filter(|(t, _)| *t >= since) {
                    let _ = tx.send(line.clone());
                }
            }
            state.event_streams.push(tx);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
            });
            let mut resp = Response::new(StreamBody::new(stream).boxed());
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            resp
        }
        ("GET", ["system", "df"]) => reply(
            StatusCode::OK,
            json!({
                "LayersSize": 100, "Images": state.images,
                "Containers": state.containers.iter().map(FakeContainer::summary).collect::<Vec<_>>(),
                "Volumes": state.volumes, "BuildCache": [],
            }),
        ),
        ("POST", ["auth"]) => reply(StatusCode::OK, json!({"Status": "Login Succeeded"})),
        ("GET", ["images", "search"]) => reply(StatusCode::OK, json!([{"name": param("term"), "star_count": 1}])),
        ("POST", [kind, "prune"]) => {
            let key = format!("{}Deleted", capitalize(kind));
            reply(StatusCode::OK, json!({key: [format!("{}-pruned", identity.name)], "SpaceReclaimed": 10}))
        }
        ("GET", ["containers", "json"]) => {
            let filters = query_value(query, "filters").and_then(|f| serde_json::from_str::<Value>(&f).ok());
            let wanted_id = filters.as_ref().and_then(|f| f["id"][0].as_str().map(str::to_string));
            let wanted_label = filters
                .as_ref()
                .and_then(|f| f["label"][0].as_str())
                .and_then(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()));
            let listed: Vec<Value> = state
                .containers
                .iter()
                .filter(|c| c.listed_from.is_none_or(|from| Instant::now() >= from))
                .filter(|c| wanted_id.as_ref().is_none_or(|id| c.id.starts_with(id.as_str())))
                .filter(|c| wanted_label.as_ref().is_none_or(|(k, v)| c.labels[k.as_str()] == v.as_str()))
                .map(FakeContainer::summary)
                .collect();
            reply(StatusCode::OK, Value::Array(listed))
        }
        ("POST", ["containers", "create"]) => {
            let name = param("name");
            if state.containers.iter().any(|c| c.name == name) {
                return reply(StatusCode::CONFLICT, json!({"message": format!("name {name} in use")}));
            }
            let id = random_hex(32);
            state.containers.push(FakeContainer {
                id: id.clone(),
                name: if name.is_empty() { format!("anon_{}", &id[..6]) } else { name },
                image: body["Image"].as_str().unwrap_or_default().to_string(),
                state: "created".into(),
                labels: body["Labels"].clone(),
                ports: json!([]),
                created: now(),
                listed_from: state.new_containers_unlisted_for.map(|d| Instant::now() + d),
            });
            if let Some(unlisted_for) = state.conflict_after_create {
                if let Some(made) = state.containers.last_mut() {
                    made.listed_from = Some(Instant::now() + unlisted_for);
                }
                return reply(StatusCode::CONFLICT, json!({"message": "name in use"}));
            }
            reply(StatusCode::CREATED, json!({"Id": id, "Warnings": []}))
        }
        ("POST", ["containers", id, "exec"]) => {
            let Some(container) = state.containers.iter().find(|c| c.id == *id) else {
                return not_found(&format!("No such container: {id}"));
            };
            let exec = random_hex(32);
            let owner = container.id.clone();
            state.execs.insert(exec.clone(), owner);
            reply(StatusCode::CREATED, json!({"Id": exec}))
        }
        ("POST", ["exec", id, "start"]) if state.execs.contains_key(*id) => full(StatusCode::OK, "exec output\n"),
        ("GET", ["exec", id, "json"]) => match state.execs.get(*id) {
            Some(container) => reply(StatusCode::OK, json!({"ID": id, "ContainerID": container, "Running": false})),
            None => not_found(&format!("No such exec instance: {id}")),
        },
        ("POST", ["commit"]) => {
            let id = format!("sha256:{}", random_hex(32));
            let tag =
                format!("{}:{}", param("repo"), if param("tag").is_empty() { "latest".into() } else { param("tag") });
            state.images.push(json!({"Id": id, "RepoTags": [tag], "RepoDigests": []}));
            reply(StatusCode::CREATED, json!({"Id": id}))
        }
        ("POST", ["build"]) => full(StatusCode::OK, "{\"stream\":\"Successfully built\"}\n"),
        ("GET", ["images", "json"]) => reply(StatusCode::OK, Value::Array(state.images.clone())),
        ("POST", ["images", "create"]) => {
            let tag = if param("tag").is_empty() { "latest".into() } else { param("tag") };
            let reference = format!("{}:{tag}", param("fromImage"));
            if find_image(&state.images, &reference).is_none() {
                let id = format!("sha256:{}", random_hex(32));
                state.images.push(json!({"Id": id, "RepoTags": [reference], "RepoDigests": []}));
            }
            full(
                StatusCode::OK,
                format!("{{\"status\":\"Pulling from {reference}\"}}\n{{\"status\":\"Downloaded\"}}\n"),
            )
        }
        ("POST", ["images", "load"]) => reply(StatusCode::OK, json!({"stream": "Loaded image"})),
        ("GET", ["images", "get"]) => full(StatusCode::OK, "image archive"),
        ("GET", ["images", name @ .., "json"]) => match find_image(&state.images, &name.join("/")) {
            Some(image) => reply(StatusCode::OK, image.clone()),
            None => not_found(&format!("No such image: {}", name.join("/"))),
        },
        ("POST", ["images", name @ .., "tag"]) => {
            let name = name.join("/");
            let new_tag = format!("{}:{}", param("repo"), param("tag"));
            let Some(index) = state.images.iter().position(|i| find_image(std::slice::from_ref(i), &name).is_some())
            else {
                return not_found(&format!("No such image: {name}"));
            };
            if let Some(tags) = state.images[index]["RepoTags"].as_array_mut() {
                tags.push(Value::String(new_tag));
            }
            full(StatusCode::CREATED, Bytes::new())
        }
        ("DELETE", ["images", name @ ..]) => {
            let name = name.join("/");
            let Some(index) = state.images.iter().position(|i| find_image(std::slice::from_ref(i), &name).is_some())
            else {
                return not_found(&format!("No such image: {name}"));
            };
            let image = state.images.remove(index);
            reply(StatusCode::OK, json!([{"Untagged": name}, {"Deleted": image["Id"]}]))
        }
        ("GET", ["networks"]) => reply(StatusCode::OK, Value::Array(state.networks.clone())),
        ("POST", ["networks", "create"]) => {
            let name = body["Name"].as_str().unwrap_or_default();
            if state.networks.iter().any(|n| n["Name"] == name) {
                return reply(
                    StatusCode::CONFLICT,
                    json!({"message": format!("network with name {name} already exists")}),
                );
            }
            let id = random_hex(32);
            state.networks.push(network(&id, name, body["Driver"].as_str().unwrap_or("bridge")));
            reply(StatusCode::CREATED, json!({"Id": id, "Warning": ""}))
        }
        ("POST", ["networks", _, "connect" | "disconnect"]) => full(StatusCode::OK, Bytes::new()),
        ("GET", ["networks", id]) => match state.networks.iter().find(|n| n["Id"] == *id || n["Name"] == *id) {
            Some(n) => reply(StatusCode::OK, n.clone()),
            None => not_found(&format!("network {id} not found")),
        },
        ("DELETE", ["networks", id]) => {
            let before = state.networks.len();
            state.networks.retain(|n| n["Id"] != *id && n["Name"] != *id);
            if state.networks.len() == before {
                return not_found(&format!("network {id} not found"));
            }
            no_content()
        }
        ("GET", ["volumes"]) => reply(StatusCode::OK, json!({"Volumes": state.volumes, "Warnings": null})),
        ("POST", ["volumes", "create"]) => {
            let v = volume(body["Name"].as_str().unwrap_or_default());
            state.volumes.push(v.clone());
            reply(StatusCode::CREATED, v)
        }
        ("GET", ["volumes", name]) => match state.volumes.iter().find(|v| v["Name"] == *name) {
            Some(v) => reply(StatusCode::OK, v.clone()),
            None => not_found(&format!("get {name}: no such volume")),
        },
        ("DELETE", ["volumes", name]) => {
            state.volumes.retain(|v| v["Name"] != *name);
            no_content()
        }
        (_, ["containers", id, rest @ ..]) => container_route(state, method, id, rest, query),
        _ => not_found("page not found"),
    }
}

/// Routes on one container, by full ID (the manager resolves names first).
fn container_route(state: &mut State, method: &Method, id: &str, rest: &[&str], query: &str) -> Response<Body> {
    let Some(index) = state.containers.iter().position(|c| c.id == id) else {
        return not_found(&format!("No such container: {id}"));
    };
    let container = &mut state.containers[index];
    match (method.as_str(), rest) {
        ("GET", ["json"]) => reply(StatusCode::OK, container.inspect()),
        ("GET", ["logs"]) => full(StatusCode::OK, format!("logs of {}\n", container.name)),
        ("POST", ["start" | "restart" | "unpause"]) => {
            container.state = "running".into();
            no_content()
        }
        ("POST", ["stop" | "kill"]) => {
            container.state = "exited".into();
            no_content()
        }
        ("POST", ["pause"]) => {
            container.state = "paused".into();
            no_content()
        }
        ("POST", ["rename"]) => {
            container.name = query_value(query, "name").unwrap_or_default();
            no_content()
        }
        ("DELETE", []) => {
            state.containers.remove(index);
            no_content()
        }
        _ => not_found("page not found"),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
