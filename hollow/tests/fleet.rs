//! A fleet of hollow engines over real HTTP: identities, the API subset,
//! dockerd's errors, the events of each operation, churn and its counts.
//! Needs nothing but loopback ports (port 0: parallel-safe).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use swarm_hollow::{ChurnConfig, Fleet, FleetConfig};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn any_port(n: usize) -> Vec<SocketAddr> {
    vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0); n]
}

async fn fleet(n: usize) -> Fleet {
    Fleet::start(FleetConfig { labels: vec![("storage".into(), "ssd".into())], ..FleetConfig::new(any_port(n)) })
        .await
        .expect("a fleet on free ports")
}

/// Opens a request; the answer's body is left to the caller.
async fn open(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> http::Response<Incoming> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a request");
    client.request(req).await.expect("an answer")
}

/// One whole request: status, headers, body text.
async fn call(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, String) {
    let resp = open(client, addr, method, path, body).await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("a body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get_json(client: &HttpClient, addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = call(client, addr, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// An open events stream, read line by line.
struct Events {
    body: Incoming,
    pending: Vec<u8>,
}

impl Events {
    async fn open(client: &HttpClient, addr: SocketAddr, path: &str) -> Events {
        let resp = open(client, addr, Method::GET, path, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        Events { body: resp.into_body(), pending: Vec::new() }
    }

    /// The next `n` events; panics after 5 s.
    async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.len() < n {
            if let Some(newline) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=newline).collect();
                events.push(serde_json::from_slice(&line).expect("an event is JSON"));
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.frame()).await {
                Ok(Some(Ok(frame))) => self.pending.extend_from_slice(&frame.into_data().unwrap_or_default()),
                other => panic!("after {} of {n} events: {:?}", events.len(), other.map(|f| f.map(|r| r.is_ok()))),
            }
        }
        events
    }
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e["Type"].as_str().unwrap_or(""), e["Action"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn engines_have_their_own_identity_and_containers() {
    let fleet = fleet(3).await;
    let client = client();
    let mut ids = Vec::new();
    for (i, addr) in fleet.addrs().into_iter().enumerate() {
        let info = get_json(&client, addr, "/v1.41/info").await;
        assert_eq!(info["Name"], format!("hollow-{:04}", i + 1));
        assert_eq!(info["NCPU"], 2);
        assert_eq!(info["MemTotal"], 2u64 << 30);
        assert_eq!(info["Labels"], json!(["storage=ssd"]));
        assert_eq!((info["Containers"].as_u64(), info["ContainersRunning"].as_u64()), (Some(30), Some(20)));
        assert!(info["Warnings"].to_string().contains(&addr.to_string()), "the warning names the engine's address");
        ids.push(info["ID"].as_str().unwrap_or_default().to_string());
        let listed = get_json(&client, addr, "/containers/json?all=1").await;
        assert_eq!(listed.as_array().map(Vec::len), Some(30));
        let running = get_json(&client, addr, "/containers/json").await;
        assert_eq!(running.as_array().map(Vec::len), Some(20));
        let first = &listed[0];
        assert!(first["Status"].as_str().is_some_and(|s| s.starts_with("Exited (0)")), "newest first: {first}");
        let inspect =
            get_json(&client, addr, &format!("/containers/{}/json", first["Id"].as_str().unwrap_or(""))).await;
        assert_eq!(inspect["Name"], format!("/{}", first["Names"][0].as_str().unwrap_or("").trim_start_matches('/')));
        assert_eq!(get_json(&client, addr, "/version").await["ApiVersion"], "1.41");
        assert_eq!(get_json(&client, addr, "/images/json").await[0]["RepoTags"], json!(["busybox:latest"]));
        let networks = get_json(&client, addr, "/networks").await;
        assert_eq!(networks.as_array().map(Vec::len), Some(3), "bridge, host, none");
        assert_eq!(get_json(&client, addr, "/volumes").await["Volumes"], json!([]));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct engine IDs");
    assert_eq!(fleet.containers(), 90);
}

#[tokio::test]
async fn answers_with_dockerds_headers_and_errors() {
    let fleet = fleet(1).await;
    let client = client();
    let addr = fleet.addrs()[0];
    let (status, headers, body) = call(&client, addr, Method::GET, "/_ping", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
    assert_eq!(headers["api-version"], "1.41");
    assert!(headers["server"].to_str().unwrap_or_default().starts_with("Docker/20.10"));
    let (status, _, body) = call(&client, addr, Method::HEAD, "/_ping", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, headers, body) = call(&client, addr, Method::GET, "/v1.41/nosuch", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "{\"message\":\"page not found\"}\n"));
    assert!(headers.get("api-version").is_none(), "outside the API middleware, as dockerd");
    let (status, _, body) = call(&client, addr, Method::GET, "/v1.99/version", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("client version 1.99 is too new"), "{body}");

    let create = |name: &str, image: &str| {
        (format!("/v1.41/containers/create?name={name}"), Some(json!({"Image": image, "Cmd": ["sleep", "1000"]})))
    };
    let (path, body) = create("web", "nosuch");
    let (status, _, answer) = call(&client, addr, Method::POST, &path, body).await;
    assert_eq!((status, answer.as_str()), (StatusCode::NOT_FOUND, "{\"message\":\"No such image: nosuch:latest\"}\n"));
    let (path, body) = create("web", "busybox");
    let (status, _, answer) = call(&client, addr, Method::POST, &path, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = serde_json::from_str::<Value>(&answer).expect("JSON")["Id"].as_str().unwrap_or_default().to_string();
    let (status, _, answer) = call(&client, addr, Method::POST, &path, body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        answer.contains(&format!("The container name \\\"/web\\\" is already in use by container \\\"{id}\\\"")),
        "{answer}"
    );
    let (path, body) = create("-bad", "busybox");
    assert_eq!(call(&client, addr, Method::POST, &path, body).await.0, StatusCode::BAD_REQUEST);
    let (status, _, answer) = call(&client, addr, Method::POST, "/containers/web/kill", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "not running: {answer}");
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/stop", None).await.0, StatusCode::NOT_MODIFIED);
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/start", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/start", None).await.0, StatusCode::NOT_MODIFIED);
    let (status, _, answer) = call(&client, addr, Method::DELETE, "/containers/web", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(answer.contains("You cannot remove a running container"), "{answer}");
    assert_eq!(call(&client, addr, Method::DELETE, "/containers/web?force=1", None).await.0, StatusCode::NO_CONTENT);
    let (status, _, answer) = call(&client, addr, Method::GET, "/containers/web/json", None).await;
    assert_eq!((status, answer.as_str()), (StatusCode::NOT_FOUND, "{\"message\":\"No such container: web\"}\n"));
    let (status, _, answer) =
        call(&client, addr, Method::GET, "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D", None).await;
    assert_eq!((status, answer.as_str()), (StatusCode::BAD_REQUEST, "{\"message\":\"Invalid filter 'bogus'\"}\n"));
}

#[tokio::test]
async fn each_operation_emits_what_dockerd_emits() {
    let fleet = fleet(1).await;
    let client = client();
    let addr = fleet.addrs()[0];
    let before = fleet.event_counts();
    let mut stream = Events::open(&client, addr, "/v1.41/events").await;
    let body = json!({"Image": "busybox", "Cmd": ["sleep", "1000"], "Labels": {"app": "web"},
        "HostConfig": {"Binds": ["data:/data"], "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}});
    let (status, _, answer) = call(&client, addr, Method::POST, "/containers/create?name=web", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(actions(&stream.take(2).await), ["volume create", "container create"]);
    let (status, _, answer) =
        call(&client, addr, Method::POST, "/networks/create", Some(json!({"Name": "appnet"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(actions(&stream.take(1).await), ["network create"]);
    // Joined while stopped: at the next start, no event now.
    assert_eq!(
        call(&client, addr, Method::POST, "/networks/appnet/connect", Some(json!({"Container": "web"}))).await.0,
        StatusCode::OK
    );
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/start", None).await.0, StatusCode::NO_CONTENT);
    let started = stream.take(4).await;
    assert_eq!(actions(&started), ["network connect", "network connect", "volume mount", "container start"]);
    assert_eq!(started[0]["Actor"]["Attributes"]["name"], "bridge");
    assert_eq!(started[1]["Actor"]["Attributes"]["name"], "appnet");

    let listed = get_json(&client, addr, "/containers/json?filters=%7B%22name%22%3A%5B%22%5E%2Fweb%24%22%5D%7D").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["Ports"].as_array().map(Vec::len), Some(2), "published on IPv4 and IPv6");
    let inspect = get_json(&client, addr, "/containers/web/json").await;
    assert_eq!(inspect["State"]["Running"], true);
    assert_eq!(inspect["NetworkSettings"]["Networks"]["appnet"]["IPAddress"], "172.18.0.2");
    assert_eq!(inspect["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"], "8080");
    assert_eq!(inspect["HostConfig"]["Binds"], json!(["data:/data"]));
    assert_eq!(inspect["Mounts"][0]["Name"], "data");

    assert_eq!(call(&client, addr, Method::POST, "/containers/web/stop", None).await.0, StatusCode::NO_CONTENT);
    let stopped = stream.take(6).await;
    assert_eq!(
        actions(&stopped),
        [
            "container kill",
            "container die",
            "network disconnect",
            "network disconnect",
            "volume unmount",
            "container stop"
        ]
    );
    assert_eq!(stopped[0]["Actor"]["Attributes"]["signal"], "15");
    assert_eq!(stopped[1]["Actor"]["Attributes"]["exitCode"], "143");
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/restart", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        actions(&stream.take(5).await),
        ["network connect", "network connect", "volume mount", "container start", "container restart"]
    );
    assert_eq!(call(&client, addr, Method::POST, "/containers/web/kill", None).await.0, StatusCode::NO_CONTENT);
    let killed = stream.take(5).await;
    assert_eq!(
        actions(&killed),
        ["container kill", "container die", "network disconnect", "network disconnect", "volume unmount"]
    );
    assert_eq!(killed[1]["Actor"]["Attributes"]["exitCode"], "137");
    assert_eq!(call(&client, addr, Method::DELETE, "/containers/web", None).await.0, StatusCode::NO_CONTENT);
    let destroyed = stream.take(1).await;
    assert_eq!(actions(&destroyed), ["container destroy"]);
    assert_eq!(destroyed[0]["from"], "busybox");
    assert_eq!(destroyed[0]["Actor"]["Attributes"]["app"], "web");
    assert_eq!(call(&client, addr, Method::DELETE, "/networks/appnet", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&client, addr, Method::DELETE, "/volumes/data", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(actions(&stream.take(2).await), ["network destroy", "volume destroy"]);

    let emitted = fleet.event_counts().since(&before);
    assert_eq!((emitted.total, emitted.container, emitted.network, emitted.volume), (26, 10, 10, 6));

    // The same events again from the history, and the answer ends at `until`.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let (status, _, history) = call(&client, addr, Method::GET, &format!("/events?since=0&until={now:.9}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history.lines().count(), 26);
    let filtered = format!("/events?since=0&until={now:.9}&filters=%7B%22type%22%3A%5B%22network%22%5D%7D");
    assert_eq!(call(&client, addr, Method::GET, &filtered, None).await.2.lines().count(), 10);
}

#[tokio::test]
async fn churn_is_real_changes_and_every_event_is_counted() {
    let fleet = fleet(4).await;
    let client = client();
    let mut streams = Vec::new();
    for addr in fleet.addrs() {
        streams.push(Events::open(&client, addr, "/events").await);
    }
    let before = fleet.event_counts();
    fleet.set_churn(ChurnConfig { events_per_second: 400.0, engines: Some(3) });
    tokio::time::sleep(Duration::from_millis(600)).await;
    fleet.stop_churn();
    assert_eq!(fleet.churn(), None);
    let emitted = fleet.event_counts().since(&before);
    assert!((120..=400).contains(&emitted.churn), "about 240 events in 0.6 s: {emitted:?}");
    assert_eq!(emitted.churn, emitted.total);
    let mut received = 0;
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut events = Vec::new();
        // Everything each engine emitted reached its stream; the fourth did not churn.
        while let Ok(more) = tokio::time::timeout(Duration::from_millis(300), stream.take(1)).await {
            events.extend(more);
        }
        if i == 3 {
            assert!(events.is_empty());
        }
        received += events.len() as u64;
    }
    assert_eq!(received, emitted.total);
    // Lifecycles end where they began: at most one churned container per engine is left.
    assert!((120..=123).contains(&fleet.containers()), "{}", fleet.containers());
}

#[tokio::test]
async fn latency_delays_answers_but_not_the_stream() {
    let config = FleetConfig { latency: Duration::from_millis(80), ..FleetConfig::new(any_port(1)) };
    let fleet = Fleet::start(config).await.expect("a fleet");
    let client = client();
    let addr = fleet.addrs()[0];
    let started = Instant::now();
    get_json(&client, addr, "/version").await;
    assert!(started.elapsed() >= Duration::from_millis(80));
    let started = Instant::now();
    let _stream = Events::open(&client, addr, "/events").await;
    assert!(started.elapsed() < Duration::from_millis(80), "the stream opens at once");
}

/// Every field path of `value` with its JSON type (`a.b:string`, `a[]:object`).
fn field_paths(value: &Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                out.insert(format!("{child_path}:{}", kind(child)));
                field_paths(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.insert(format!("{path}[]:{}", kind(item)));
                field_paths(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The field paths, but `Args`' elements: these containers sleep (`sleep
/// infinity`), the captured one ran `true`, without arguments.
fn shape(value: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    field_paths(value, "", &mut out);
    out.retain(|p| !p.starts_with(".Args[]"));
    out
}

/// The containers a fleet starts with (what a bench mostly reads) are
/// shaped exactly like the real ones captured in the same states.
#[tokio::test]
async fn pre_populated_containers_are_shaped_like_the_captured_ones() {
    let config = FleetConfig { container_labels: Vec::new(), ..FleetConfig::new(any_port(1)) };
    let fleet = Fleet::start(config).await.expect("a fleet");
    let client = client();
    let addr = fleet.addrs()[0];
    let captured_list: Value = serde_json::from_str(include_str!("../fixtures/containers.json")).expect("fixture");
    let captured_exited = captured_list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["State"] == "exited"))
        .cloned()
        .expect("an exited container in the fixture");
    let captured_inspect: Value =
        serde_json::from_str(include_str!("../fixtures/inspect-exited.json")).expect("fixture");
    let listed = get_json(&client, addr, "/containers/json?all=1").await;
    let exited =
        listed.as_array().and_then(|l| l.iter().find(|c| c["State"] == "exited")).cloned().expect("an exited one");
    assert_eq!(shape(&exited), shape(&captured_exited), "list entry");
    let inspect = get_json(&client, addr, &format!("/containers/{}/json", exited["Id"].as_str().unwrap_or(""))).await;
    assert_eq!(shape(&inspect), shape(&captured_inspect), "inspect");
    let running =
        listed.as_array().and_then(|l| l.iter().find(|c| c["State"] == "running")).cloned().expect("a running one");
    let inspect = get_json(&client, addr, &format!("/containers/{}/json", running["Id"].as_str().unwrap_or(""))).await;
    assert_eq!(shape(&inspect), shape(&captured_inspect), "a running container has the same fields");
    assert!(inspect["NetworkSettings"]["IPAddress"].as_str().is_some_and(|ip| ip.starts_with("172.17.")), "{inspect}");
}
