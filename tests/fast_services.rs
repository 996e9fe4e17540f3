//! Swarm mode's service and task endpoints on one manager in front of fake
//! engines: create, list, inspect, update, rollback, remove, the task list
//! and their errors, over HTTP only.

mod fast;

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use fast::client::{self, get, post};
use fast::engine::FakeEngine;
use fast::manager::{wait_until, Cluster};

async fn cluster() -> Cluster {
    let engines = vec![FakeEngine::start("fake-01", &[]).await, FakeEngine::start("fake-02", &[]).await];
    Cluster::start(engines, &[]).await
}

fn filters(value: Value) -> String {
    url::form_urlencoded::byte_serialize(value.to_string().as_bytes()).collect()
}

/// What `docker service create --name <name> --replicas <n> busybox sleep 300` sends.
fn spec(name: &str, replicas: u64) -> Value {
    json!({
        "Name": name,
        "Labels": {"tier": "test"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": ["sleep", "300"], "Init": false, "Isolation": "default"},
            "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
            "Placement": {},
            "ForceUpdate": 0,
            "Runtime": "container"
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
    })
}

async fn create(c: &Cluster, spec: Value) -> String {
    let created = post(c.addr, "/v1.41/services/create", spec).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    assert_eq!(body["Warnings"], json!([]));
    body["ID"].as_str().expect("an ID").to_string()
}

#[tokio::test]
async fn create_list_inspect_and_remove() {
    let c = cluster().await;
    let id = create(&c, spec("web", 2)).await;
    assert_eq!(id.len(), 25, "{id}");

    let service = get(c.addr, "/v1.41/services/web").await.json();
    assert_eq!(service["ID"], id);
    assert_eq!(service["Version"]["Index"], 1);
    assert_eq!(service["Spec"], spec("web", 2), "the spec is shown back as sent");
    assert_eq!(service["CreatedAt"], service["UpdatedAt"]);
    assert_eq!(service["Endpoint"]["Spec"], spec("web", 2)["EndpointSpec"]);
    assert_eq!(service["Endpoint"]["Ports"][0]["PublishMode"], "host", "published on the task's node");
    for key in [&id[..], &id[..5]] {
        assert_eq!(get(c.addr, &format!("/v1.41/services/{key}")).await.json()["ID"], id, "by {key}");
    }

    let listed = get(c.addr, "/v1.41/services?status=true").await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["ServiceStatus"]["DesiredTasks"], 2);
    assert!(listed[0]["ServiceStatus"]["RunningTasks"].as_u64().is_some());
    assert!(get(c.addr, "/v1.41/services").await.json()[0].get("ServiceStatus").is_none());

    let removed = client::delete(c.addr, &format!("/v1.41/services/{}", &id[..6])).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    assert_eq!(get(c.addr, "/v1.41/services").await.json(), json!([]));
    let gone = get(c.addr, "/v1.41/services/web").await;
    assert_eq!((gone.status, gone.message()), (StatusCode::NOT_FOUND, "service web not found".to_string()));
    let gone = client::delete(c.addr, "/v1.41/services/web").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_filters() {
    let c = cluster().await;
    let web = create(&c, spec("web", 1)).await;
    let mut global = spec("agent", 0);
    global["Mode"] = json!({"Global": {}});
    global["Labels"] = json!({"tier": "infra"});
    let agent = create(&c, global).await;
    let ids = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> =
            v.as_array().unwrap().iter().map(|s| s["ID"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    let list = |f: Value| {
        let path = format!("/v1.41/services?filters={}", filters(f));
        async move { get(c.addr, &path).await }
    };
    assert_eq!(ids(list(json!({"name": ["we"]})).await.json()), [web.as_str()], "names match by prefix");
    assert_eq!(ids(list(json!({"id": [&agent[..4]]})).await.json()), [agent.as_str()]);
    assert_eq!(ids(list(json!({"mode": ["global"]})).await.json()), [agent.as_str()]);
    assert_eq!(ids(list(json!({"label": ["tier=test"]})).await.json()), [web.as_str()]);
    let mut both = vec![web.clone(), agent.clone()];
    both.sort();
    assert_eq!(ids(list(json!({"label": ["tier"]})).await.json()), both);
    assert_eq!(ids(list(json!({"name": ["web", "agent"]})).await.json()), both);
    assert_eq!(ids(list(json!({"name": ["web"], "mode": ["global"]})).await.json()), Vec::<String>::new());
    let bad = list(json!({"mode": ["sometimes"]})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    let bad = list(json!({"colour": ["red"]})).await;
    assert_eq!((bad.status, bad.message()), (StatusCode::BAD_REQUEST, "invalid filter 'colour'".to_string()));
}

#[tokio::test]
async fn create_refuses_bad_specs_and_taken_names() {
    let c = cluster().await;
    create(&c, spec("web", 1)).await;
    let taken = post(c.addr, "/v1.41/services/create", spec("WEB", 1)).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(
        taken.message(),
        "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service WEB already exists"
    );
    let mut no_image = spec("img", 1);
    no_image["TaskTemplate"]["ContainerSpec"]["Image"] = json!("");
    let mut job = spec("job", 1);
    job["Mode"] = json!({"ReplicatedJob": {"TotalCompletions": 1}});
    let mut manager_only = spec("mgr", 1);
    manager_only["TaskTemplate"]["Placement"] = json!({"Constraints": ["node.role==manager"]});
    let mut bad_constraint = spec("bad", 1);
    bad_constraint["TaskTemplate"]["Placement"] = json!({"Constraints": ["node.colour~blue"]});
    for (what, body) in [
        ("no image", no_image),
        ("a job", job),
        ("a manager constraint", manager_only),
        ("a malformed constraint", bad_constraint),
        ("a bad name", spec("no.dots", 1)),
        ("not a spec", json!({"Mode": {"Sometimes": {}}})),
    ] {
        let refused = post(c.addr, "/v1.41/services/create", body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{what}: {}", refused.text());
        assert!(!refused.message().is_empty());
    }
    assert_eq!(get(c.addr, "/v1.41/services").await.json().as_array().map(Vec::len), Some(1), "nothing stored");

    // No name: one is made up, as dockerd does.
    let mut unnamed = spec("", 1);
    unnamed.as_object_mut().unwrap().remove("Name");
    let id = create(&c, unnamed).await;
    let name = get(c.addr, &format!("/v1.41/services/{id}")).await.json()["Spec"]["Name"].clone();
    assert!(name.as_str().is_some_and(|n| n.contains('_')), "{name}");
}

/// Creates racing for one name: exactly one wins.
#[tokio::test]
async fn concurrent_creates_with_one_name_make_one_service() {
    let c = cluster().await;
    let answers =
        futures_util::future::join_all((0..10).map(|_| post(c.addr, "/v1.41/services/create", spec("race", 1)))).await;
    let created = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let refused = answers.iter().filter(|a| a.status == StatusCode::CONFLICT).count();
    assert_eq!((created, refused), (1, 9));
    let listed = get(c.addr, "/v1.41/services").await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[tokio::test]
async fn update_needs_the_current_version_and_rollback_returns_to_the_previous_spec() {
    let c = cluster().await;
    let id = create(&c, spec("web", 1)).await;
    let mut scaled = spec("web", 3);
    let stale = post(c.addr, "/v1.41/services/web/update?version=7", scaled.clone()).await;
    assert_eq!((stale.status, stale.message()), (StatusCode::CONFLICT, "update out of sequence".to_string()));
    let missing = post(c.addr, "/v1.41/services/web/update", scaled.clone()).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let updated = post(c.addr, &format!("/v1.41/services/{id}/update?version=1"), scaled.clone()).await;
    assert_eq!((updated.status, updated.json()), (StatusCode::OK, json!({"Warnings": []})));
    let service = get(c.addr, "/v1.41/services/web").await.json();
    assert_eq!(service["Version"]["Index"], 2);
    assert_eq!(service["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    assert_eq!(service["PreviousSpec"], spec("web", 1));
    assert!(service.get("UpdateStatus").is_none(), "scaling replaces no task: {service}");
    assert!(service["UpdatedAt"].as_str() > service["CreatedAt"].as_str());

    scaled["TaskTemplate"]["ContainerSpec"]["Image"] = json!("busybox:1.36");
    scaled["TaskTemplate"]["ForceUpdate"] = json!(1);
    let updated = post(c.addr, "/v1.41/services/web/update?version=2", scaled.clone()).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let service = get(c.addr, "/v1.41/services/web").await.json();
    assert_eq!(service["UpdateStatus"]["State"], "updating", "{service}");
    assert!(service["UpdateStatus"]["StartedAt"].is_string());
    let again = post(c.addr, "/v1.41/services/web/update?version=2", scaled.clone()).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "the same version twice");

    let rollback =
        post(c.addr, "/v1.41/services/web/update?version=3&rollback=previous", service["Spec"].clone()).await;
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.text());
    let service = get(c.addr, "/v1.41/services/web").await.json();
    assert_eq!(service["Spec"], spec("web", 3));
    assert_eq!(service["PreviousSpec"], scaled);
    assert_eq!(service["Version"]["Index"], 4);
    // Fake engines start the rolled-back tasks within milliseconds, so the
    // reconciler may already have completed the rollback.
    let state = service["UpdateStatus"]["State"].as_str().unwrap_or_default();
    assert!(["rollback_started", "rollback_completed"].contains(&state), "{service}");

    let mut renamed = spec("other", 3);
    renamed["Name"] = json!("other");
    let refused = post(c.addr, "/v1.41/services/web/update?version=4", renamed).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let refused = post(c.addr, "/v1.41/services/web/update?version=4&rollback=sideways", spec("web", 1)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let missing = post(c.addr, "/v1.41/services/nope/update?version=1", spec("nope", 1)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollback_without_a_previous_spec_is_refused() {
    let c = cluster().await;
    create(&c, spec("web", 1)).await;
    let refused = post(c.addr, "/v1.41/services/web/update?version=1&rollback=previous", spec("web", 1)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.message().contains("does not have a previous spec"), "{}", refused.text());
}

#[tokio::test]
async fn tasks_are_listed_filtered_and_inspected() {
    let c = cluster().await;
    let id = create(&c, spec("web", 2)).await;
    create(&c, spec("other", 1)).await;
    let tasks_of = |f: Value| {
        let path = format!("/v1.41/tasks?filters={}", filters(f));
        async move { get(c.addr, &path).await }
    };
    // The reconciler makes the tasks, web's two and other's one.
    wait_until("the reconciler made every task", || async {
        tasks_of(json!({"service": ["web"]})).await.json().as_array().is_some_and(|t| t.len() == 2)
            && get(c.addr, "/v1.41/tasks").await.json().as_array().is_some_and(|t| t.len() == 3)
    })
    .await;
    let tasks = tasks_of(json!({"service": [&id]})).await.json();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["ServiceID"] == id && t["DesiredState"] == "running"), "{tasks:?}");
    let mut slots: Vec<u64> = tasks.iter().filter_map(|t| t["Slot"].as_u64()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2]);

    let task_id = tasks[0]["ID"].as_str().unwrap();
    let inspected = get(c.addr, &format!("/v1.41/tasks/{}", &task_id[..8])).await.json();
    assert_eq!(inspected["ID"], task_id);
    let by_id = tasks_of(json!({"id": [&task_id[..8]]})).await.json();
    assert_eq!(by_id.as_array().map(Vec::len), Some(1));
    let by_name = tasks_of(json!({"name": ["web."]})).await.json();
    assert_eq!(by_name.as_array().map(Vec::len), Some(2));
    let current = tasks_of(json!({"_up-to-date": ["true"], "service": ["web"]})).await.json();
    assert_eq!(current.as_array().map(Vec::len), Some(2), "{current}");
    // `label` matches the task's service's labels (`docker stack ps`).
    let labelled = tasks_of(json!({"label": ["tier=test"]})).await.json();
    assert_eq!(labelled.as_array().map(Vec::len), Some(3), "{labelled}");
    assert_eq!(tasks_of(json!({"label": ["tier=prod"]})).await.json(), json!([]));
    let none = tasks_of(json!({"desired-state": ["shutdown"], "service": ["web"]})).await.json();
    assert_eq!(none, json!([]));
    assert!(get(c.addr, "/v1.41/tasks").await.json().as_array().is_some_and(|t| t.len() >= 3));

    wait_until("web's tasks are placed", || async {
        tasks_of(json!({"service": ["web"]})).await.json().as_array().unwrap().iter().all(|t| t["NodeID"].is_string())
    })
    .await;
    let node_id = get(c.addr, "/v1.41/nodes/fake-01").await.json()["ID"].as_str().unwrap().to_string();
    let on_node = tasks_of(json!({"node": ["fake-01"]})).await.json();
    assert!(on_node.as_array().unwrap().iter().all(|t| t["NodeID"] == node_id.as_str()), "{on_node}");
    assert_eq!(tasks_of(json!({"node": [&node_id]})).await.json(), on_node);

    for (filter, status) in [
        (json!({"service": ["nope"]}), StatusCode::NOT_FOUND),
        (json!({"node": ["nope"]}), StatusCode::NOT_FOUND),
        (json!({"desired-state": ["dancing"]}), StatusCode::BAD_REQUEST),
        (json!({"colour": ["red"]}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(tasks_of(filter.clone()).await.status, status, "{filter}");
    }
    // A new image: until the rolling update replaces them, the tasks run an older spec.
    let mut changed = spec("web", 2);
    changed["TaskTemplate"]["ContainerSpec"]["Image"] = json!("busybox:1.36");
    let updated = post(c.addr, &format!("/v1.41/services/{id}/update?version=1"), changed).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let current = tasks_of(json!({"_up-to-date": ["true"], "service": ["web"]})).await.json();
    let images: Vec<&Value> =
        current.as_array().unwrap().iter().map(|t| &t["Spec"]["ContainerSpec"]["Image"]).collect();
    assert!(images.iter().all(|i| *i == "busybox:1.36"), "{current}");
    let other = tasks_of(json!({"_up-to-date": ["true"], "service": ["other"]})).await.json();
    assert_eq!(other.as_array().map(Vec::len), Some(1), "{other}");

    let missing = get(c.addr, "/v1.41/tasks/nope").await;
    assert_eq!((missing.status, missing.message()), (StatusCode::NOT_FOUND, "task nope not found".to_string()));
}

/// A task's create finds its name taken: a previous primary's create of the
/// same task came first, out of this manager's sight. The container is
/// adopted and started; the task is neither rejected nor made twice.
#[tokio::test]
async fn a_task_whose_container_was_made_out_of_sight_adopts_it() {
    a_task_adopts_a_container_made_out_of_sight(Duration::ZERO).await;
}

/// As above, with that other create still running: the container is not
/// listed yet when the name is found taken (dockerd holds a name from the
/// start of a create). The task waits for it.
#[tokio::test]
async fn a_task_waits_for_a_container_whose_create_is_still_running_elsewhere() {
    a_task_adopts_a_container_made_out_of_sight(Duration::from_millis(1500)).await;
}

async fn a_task_adopts_a_container_made_out_of_sight(unlisted_for: Duration) {
    let c = Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], &[]).await;
    let engine = c.engine("fake-01");
    engine.conflict_after_creating(unlisted_for);
    create(&c, spec("web", 1)).await;
    let path = format!("/v1.41/tasks?filters={}", filters(json!({"service": ["web"]})));
    wait_until("the task runs", || async {
        get(c.addr, &path).await.json().as_array().is_some_and(|t| t.iter().any(|t| t["Status"]["State"] == "running"))
    })
    .await;
    let tasks = get(c.addr, &path).await.json();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "no task was rejected: {tasks:#?}");
    let containers = engine.containers();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].state, "running");
    assert_eq!(tasks[0]["Status"]["ContainerStatus"]["ContainerID"], containers[0].id.as_str());
}

/// A previous primary's create of a task lands on another engine after the
/// task was placed again: that second container is removed, the recorded
/// one keeps running.
#[tokio::test]
async fn a_second_container_of_a_task_is_removed() {
    let c = cluster().await;
    create(&c, spec("web", 1)).await;
    let path = format!("/v1.41/tasks?filters={}", filters(json!({"service": ["web"]})));
    let running = || async {
        let tasks = get(c.addr, &path).await.json();
        let task = tasks.as_array().and_then(|t| t.iter().find(|t| t["Status"]["State"] == "running")).cloned();
        task.and_then(|t| t["Status"]["ContainerStatus"]["ContainerID"].as_str().map(str::to_string))
    };
    wait_until("the task runs", || async { running().await.is_some() }).await;
    let recorded = running().await.unwrap();
    let (holder, other) = match c.engine("fake-01").containers().iter().any(|x| x.id == recorded) {
        true => (c.engine("fake-01"), c.engine("fake-02")),
        false => (c.engine("fake-02"), c.engine("fake-01")),
    };
    let original = holder.containers().into_iter().find(|x| x.id == recorded).unwrap();
    let copy = other.add_copy(&original);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    other.emit_event(json!({
        "Type": "container", "Action": "create", "status": "create", "id": copy,
        "Actor": {"ID": copy, "Attributes": {"name": original.name}},
        "scope": "local", "time": now / 1_000_000_000, "timeNano": now,
    }));
    wait_until("the second container is removed", || async { other.containers().iter().all(|x| x.id != copy) }).await;
    assert_eq!(running().await, Some(recorded.clone()));
    assert!(holder.containers().iter().any(|x| x.id == recorded && x.state == "running"));
}

#[tokio::test]
async fn service_logs_merge_every_task_container() {
    let c = cluster().await;
    create(&c, spec("web", 2)).await;
    wait_until("both tasks have a container", || async {
        let path = format!("/v1.41/tasks?filters={}", filters(json!({"service": ["web"]})));
        let tasks = get(c.addr, &path).await.json();
        tasks.as_array().is_some_and(|t| {
            t.len() == 2 && t.iter().all(|t| t["Status"]["ContainerStatus"]["ContainerID"].is_string())
        })
    })
    .await;
    let logs = get(c.addr, "/v1.41/services/web/logs?stdout=1&stderr=1").await;
    assert_eq!(logs.status, StatusCode::OK, "{}", logs.text());
    let text = logs.text();
    assert_eq!(text.matches("logs of web.").count(), 2, "{text}");
    let refused = get(c.addr, "/v1.41/services/web/logs").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "no stream chosen");
    let missing = get(c.addr, "/v1.41/services/nope/logs?stdout=1").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ping_and_info_describe_an_active_swarm_manager() {
    let c = cluster().await;
    let ping = get(c.addr, "/_ping").await;
    assert_eq!(ping.headers["swarm"], "active/manager");
    let info = get(c.addr, "/v1.41/info").await.json();
    let swarm = &info["Swarm"];
    assert_eq!((swarm["LocalNodeState"].as_str(), swarm["ControlAvailable"].as_bool()), (Some("active"), Some(true)));
    assert_eq!((swarm["Nodes"].as_u64(), swarm["Managers"].as_u64()), (Some(2), Some(1)));
    assert_eq!(swarm["NodeID"].as_str().map(str::len), Some(25));
    assert_eq!(swarm["NodeAddr"], "127.0.0.1");
    let cluster = &swarm["Cluster"];
    assert_eq!(cluster["ID"].as_str().map(str::len), Some(25));
    assert_eq!(cluster["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"], 5);
    for key in ["Raft", "Dispatcher", "CAConfig"] {
        assert!(cluster["Spec"][key].is_object(), "{key}: {cluster}");
    }
}
