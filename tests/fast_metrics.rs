//! `GET /metrics` of managers in front of fake engines: every request
//! answered is counted once with its route class and final status, the
//! cluster's states are read at scrape time, and a replica answers for
//! itself while counting what it relays. No root: runs in seconds.

mod fast;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use swarm_leadership::{Election, ElectionConfig, Leadership, Role};
use swarm_testkit::metrics::{parse, Samples};
use tokio::sync::watch;

use fast::client::{self, get, post};
use fast::engine::FakeEngine;
use fast::lock_store::MemoryLockStore;
use fast::manager::{self, wait_until, Cluster, ManagerProcess};

const REQUESTS: &str = "swarm_http_requests_total";

/// Scrapes `addr` and checks the answer's form.
async fn scrape(addr: std::net::SocketAddr) -> Samples {
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let content_type = reply.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    parse(&reply.text())
}

#[tokio::test]
async fn metrics_count_every_request_by_route_and_status_and_read_the_cluster() {
    let engines = vec![FakeEngine::start("fake-01", &[]).await, FakeEngine::start("fake-02", &[]).await];
    engines[0].add_container("web", "nginx", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;

    let created = post(c.addr, "/v1.41/containers/create?name=new", json!({"Image": "nginx"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let taken = post(c.addr, "/v1.41/containers/create?name=web", json!({"Image": "nginx"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{taken:?}");
    assert_eq!(get(c.addr, "/v1.41/containers/json").await.status, StatusCode::OK);
    assert_eq!(get(c.addr, "/v1.41/nowhere").await.status, StatusCode::NOT_FOUND);

    let m = scrape(c.addr).await;
    let requests = |route: &str, status: &str| m.value(REQUESTS, &[("route", route), ("status", status)]);
    assert_eq!(requests("containers_create", "201"), 1.0);
    assert_eq!(requests("containers_create", "409"), 1.0);
    assert_eq!(requests("containers_list", "200"), 1.0);
    assert_eq!(requests("unrouted", "404"), 1.0);
    assert_eq!(m.sum(REQUESTS, &[]), 4.0, "those requests and no other (the scrape counts once answered)");
    assert_eq!(m.sum(REQUESTS, &[("relayed", "true")]), 0.0);
    let durations = |route: &str| m.value("swarm_http_request_duration_seconds_count", &[("route", route)]);
    assert_eq!((durations("containers_create"), durations("containers_list"), durations("unrouted")), (2.0, 1.0, 1.0));
    assert_eq!(m.value("swarm_relay_duration_seconds_count", &[]), 0.0);

    assert_eq!(m.get("swarm_engines", &[("health", "Healthy")]), Some(2.0));
    for other in ["Pending", "Unhealthy", "Disconnected"] {
        assert_eq!(m.get("swarm_engines", &[("health", other)]), Some(0.0), "{other} listed, at 0");
    }
    assert_eq!(m.get("swarm_containers", &[]), Some(2.0), "web and the new one");
    assert_eq!(m.get("swarm_leader", &[]), Some(1.0), "alone, so primary");
    assert_eq!(m.value("swarm_container_creates_total", &[("result", "created")]), 1.0);
    assert_eq!(m.value("swarm_container_creates_total", &[("result", "name_in_use")]), 1.0);
    assert!(m.value("swarm_client_connections", &[]) >= 1.0, "the scrape's own connection is open");

    // The scrape itself is counted once answered; other methods are not routed.
    assert_eq!(client::send(c.addr, Method::POST, "/metrics", "").await.status, StatusCode::NOT_FOUND);
    let m = scrape(c.addr).await;
    assert_eq!(m.value(REQUESTS, &[("route", "metrics"), ("status", "200")]), 1.0);
    assert_eq!(m.value(REQUESTS, &[("route", "unrouted"), ("status", "404")]), 2.0);
    assert_eq!(m.sum(REQUESTS, &[]), 6.0);
}

#[tokio::test]
async fn an_engine_that_stops_answering_moves_to_unhealthy() {
    let engines = vec![FakeEngine::start("fake-01", &[]).await, FakeEngine::start("fake-02", &[]).await];
    let quick = ["--engine-refresh-min-interval", "100ms", "--engine-refresh-max-interval", "100ms"];
    let c = Cluster::start(engines, &[&quick[..], &["--engine-failure-retry", "2"]].concat()).await;
    c.engine("fake-02").stop().await;
    wait_until("fake-02 is counted unhealthy", || async {
        let m = scrape(c.addr).await;
        m.get("swarm_engines", &[("health", "Unhealthy")]) == Some(1.0)
    })
    .await;
    let m = scrape(c.addr).await;
    assert_eq!(m.get("swarm_engines", &[("health", "Healthy")]), Some(1.0));
    assert_eq!(m.value("swarm_engine_health_changes_total", &[("health", "Unhealthy")]), 1.0);
    assert!(m.value("swarm_engine_event_stream_reconnects_total", &[]) >= 1.0, "its events stream broke");
}

/// One manager of a replicated set on `store`, with an engine of its own.
struct Member {
    manager: ManagerProcess,
    leadership: Arc<Leadership>,
    /// Dropping it would end the election.
    _election: watch::Sender<bool>,
    _engine: FakeEngine,
}

async fn member(name: &str, store: &MemoryLockStore) -> Member {
    let engine = FakeEngine::start(&format!("engine-{name}"), &[]).await;
    engine.add_container(&format!("from-{name}"), "nginx", "running", json!([]));
    let listener = manager::bind();
    let addr = listener.local_addr().expect("address").to_string();
    let config =
        ElectionConfig { key: "fast/docker/swarm/leader".into(), advertise: addr, ttl: Duration::from_secs(10) };
    let (election, leadership) = Election::new(Arc::new(store.clone()), config, |_| {});
    let (stop, stopped) = watch::channel(false);
    let discovery = manager::discovery(&[&engine]);
    let flags = ["--replication-ttl", "2s", discovery.as_str()];
    let manager =
        ManagerProcess::start(listener, &flags, Some(leadership.clone()), Some(Box::pin(election.run(stopped)))).await;
    engine.wait_for_request(Method::GET, "/events").await;
    Member { manager, leadership, _election: stop, _engine: engine }
}

#[tokio::test]
async fn a_replica_answers_metrics_itself_and_counts_what_it_relays() {
    let store = MemoryLockStore::default();
    let a = member("a", &store).await;
    wait_until("a is primary", || async { a.leadership.role() == Role::Primary }).await;
    let b = member("b", &store).await;
    wait_until("b is a replica", || async { matches!(b.leadership.role(), Role::Replica { primary: Some(_) }) }).await;

    for _ in 0..2 {
        let list = get(b.manager.addr, "/v1.41/containers/json").await;
        assert_eq!(list.json()[0]["Names"][0], "/engine-a/from-a", "answered by the primary");
    }
    assert_eq!(get(b.manager.addr, "/_ping").await.status, StatusCode::OK);

    let replica = scrape(b.manager.addr).await;
    assert_eq!(replica.get("swarm_leader", &[]), Some(0.0), "the replica's own answer, not relayed");
    assert_eq!(replica.get("swarm_engines", &[("health", "Healthy")]), Some(1.0), "its own engine");
    assert_eq!(replica.value(REQUESTS, &[("route", "containers_list"), ("status", "200"), ("relayed", "true")]), 2.0);
    assert_eq!(replica.value(REQUESTS, &[("route", "ping"), ("status", "200"), ("relayed", "false")]), 1.0);
    assert_eq!(replica.sum(REQUESTS, &[]), 3.0);
    assert_eq!(replica.value("swarm_relay_duration_seconds_count", &[]), 2.0);
    assert!(replica.value("swarm_relay_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(replica.value("swarm_relay_duration_seconds_bucket", &[("le", "+Inf")]), 2.0);

    let primary = scrape(a.manager.addr).await;
    assert_eq!(primary.get("swarm_leader", &[]), Some(1.0));
    assert_eq!(primary.value(REQUESTS, &[("route", "containers_list"), ("status", "200"), ("relayed", "false")]), 2.0);
    assert_eq!(primary.sum(REQUESTS, &[]), 2.0, "the relayed requests, answered here");
    assert_eq!(primary.value("swarm_relay_duration_seconds_count", &[]), 0.0);
}
