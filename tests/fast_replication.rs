//! Replicated managers sharing an in-memory lock store: what a replica
//! answers itself, what it relays, and how a relay survives the loss of
//! the primary. No root, no store server: runs in seconds.

mod fast;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use swarm_leadership::{Election, ElectionConfig, Leadership, Role};
use tokio::sync::watch;

use fast::client::{self, get, post};
use fast::engine::FakeEngine;
use fast::lock_store::MemoryLockStore;
use fast::manager::{self, wait_until, ManagerProcess};

/// One manager of a replicated set. Each has an engine of its own holding
/// one container, `from-<name>`, so a container list says which manager
/// answered it.
struct Member {
    manager: ManagerProcess,
    /// `host:port`, as advertised in the election.
    addr: String,
    leadership: Arc<Leadership>,
    engine: FakeEngine,
    /// Dropping it would end the election.
    _election: watch::Sender<bool>,
}

/// Starts manager `name` as a candidate on `store`. `ttl` is the lock's TTL;
/// `failover` the manager's `--replication-ttl`, which sets how long a
/// request waits for a new primary.
async fn member(name: &str, store: &MemoryLockStore, ttl: Duration, failover: &str) -> Member {
    let engine = FakeEngine::start(&format!("engine-{name}"), &[]).await;
    engine.add_container(&format!("from-{name}"), "nginx", "running", json!([]));
    let listener = manager::bind();
    let addr = listener.local_addr().expect("address").to_string();
    let config = ElectionConfig { key: "fast/docker/swarm/leader".into(), advertise: addr.clone(), ttl };
    let (election, leadership) = Election::new(Arc::new(store.clone()), config, |_| {});
    let (stop, stopped) = watch::channel(false);
    let discovery = manager::discovery(&[&engine]);
    let flags = ["--replication-ttl", failover, discovery.as_str()];
    let manager =
        ManagerProcess::start(listener, &flags, Some(leadership.clone()), Some(Box::pin(election.run(stopped)))).await;
    engine.wait_for_request(Method::GET, "/events").await;
    Member { manager, addr, leadership, engine, _election: stop }
}

async fn wait_for_role(member: &Member, role: Role) {
    wait_until(&format!("{} is {role:?}", member.addr), || async { member.leadership.role() == role }).await;
}

fn replica_of(primary: &Member) -> Role {
    Role::Replica { primary: Some(primary.addr.clone()) }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().expect("a list").iter().map(|c| c["Names"][0].as_str().expect("a name")).collect()
}

const TTL: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_replica_answers_ping_and_info_itself_and_relays_the_rest() {
    let store = MemoryLockStore::default();
    let a = member("a", &store, TTL, "2s").await;
    wait_for_role(&a, Role::Primary).await;
    let b = member("b", &store, TTL, "2s").await;
    wait_for_role(&b, replica_of(&a)).await;
    let replica = b.manager.addr;

    let ping = get(replica, "/_ping").await;
    assert_eq!((ping.status, ping.text().as_str()), (StatusCode::OK, "OK"));
    let info = get(replica, "/v1.41/info").await.system_status();
    assert_eq!(info[0], ("Role".to_string(), "replica".to_string()));
    assert_eq!(info[1], ("Primary".to_string(), a.addr.clone()));
    assert!(info.iter().any(|(k, v)| k == " engine-b" && *v == b.engine.addr()), "its own nodes: {info:?}");
    assert_eq!(get(a.manager.addr, "/info").await.system_status()[0], ("Role".to_string(), "primary".to_string()));

    let list = get(replica, "/containers/json?all=1").await;
    assert_eq!(names(&list.json()), ["/engine-a/from-a"], "answered by the primary");
    let created = post(replica, "/v1.41/containers/create?name=web", json!({"Image": "nginx", "Env": ["A=1"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let sent = a.engine.requests_to(Method::POST, "/containers/create");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, "/v1.41/containers/create?name=web", "path, version and query relayed unchanged");
    assert_eq!(sent[0].json()["Env"], json!(["A=1"]));
    assert!(b.engine.requests_to(Method::POST, "/containers/create").is_empty());
    let inspect = get(replica, "/containers/web/json").await.json();
    assert_eq!(inspect["Node"]["Name"], "engine-a");
    let missing = get(replica, "/containers/nope/json").await;
    assert_eq!((missing.status, missing.message()), (StatusCode::NOT_FOUND, "No such container: nope".to_string()));
}

#[tokio::test]
async fn a_request_refused_by_a_dead_primary_is_resent_to_the_new_one() {
    let store = MemoryLockStore::default();
    let mut a = member("a", &store, TTL, "10s").await;
    wait_for_role(&a, Role::Primary).await;
    let b = member("b", &store, TTL, "10s").await;
    // `c` never takes the lock, so `b` is the next primary.
    let c = member("c", &store.follower(), TTL, "10s").await;
    wait_for_role(&b, replica_of(&a)).await;
    wait_for_role(&c, replica_of(&a)).await;
    let before = get(c.manager.addr, "/containers/json").await;
    assert_eq!(names(&before.json()), ["/engine-a/from-a"]);

    a.manager.kill();
    let started = Instant::now();
    let after = get(c.manager.addr, "/containers/json").await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
    assert_eq!(names(&after.json()), ["/engine-b/from-b"], "resent to the new primary");
    // The refusal ended the dead primary's lock: no wait for its TTL.
    assert!(started.elapsed() < TTL / 2, "took {:?}", started.elapsed());
    assert_eq!(store.holder(), Some(b.addr.clone()));
    assert_eq!(c.leadership.role(), replica_of(&b));
}

#[tokio::test]
async fn with_no_primary_at_all_a_replica_answers_503_after_the_failover_wait() {
    let store = MemoryLockStore::default();
    let c = member("c", &store.follower(), TTL, "500ms").await;
    assert_eq!(get(c.manager.addr, "/_ping").await.status, StatusCode::OK);
    let info = get(c.manager.addr, "/info").await.system_status();
    assert_eq!(info[..2], [("Role".into(), "replica".into()), ("Primary".into(), String::new())]);

    let started = Instant::now();
    let reply = client::send(c.manager.addr, Method::POST, "/containers/create", "{}").await;
    assert_eq!(
        (reply.status, reply.message()),
        (StatusCode::SERVICE_UNAVAILABLE, "No elected primary cluster manager".into())
    );
    // --replication-ttl plus the two seconds an election may take.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2500) && waited < Duration::from_secs(8), "waited {waited:?}");
    assert!(c.engine.requests_to(Method::POST, "/containers/create").is_empty());
}

#[tokio::test]
async fn a_dead_primary_without_a_successor_is_a_503_naming_it() {
    let store = MemoryLockStore::default();
    let mut a = member("a", &store, TTL, "500ms").await;
    wait_for_role(&a, Role::Primary).await;
    let c = member("c", &store.follower(), TTL, "500ms").await;
    wait_for_role(&c, replica_of(&a)).await;

    a.manager.kill();
    let started = Instant::now();
    let reply = get(c.manager.addr, "/containers/json").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let prefix = format!("Unable to reach primary cluster manager {}: ", a.addr);
    assert!(reply.message().starts_with(&prefix), "{}", reply.message());
    assert!(started.elapsed() >= Duration::from_millis(2500), "waited {:?} for a successor", started.elapsed());
    assert_eq!(store.holder(), None, "the refusal ended the dead primary's lock");
}
