//! The API of one manager in front of fake engines: every route class and
//! every error mapping, over HTTP only. No root, no dockerd: runs in seconds.

mod fast;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use fast::client::{self, get, post};
use fast::engine::FakeEngine;
use fast::manager::{self, Cluster, ManagerProcess};

/// Two empty engines, `fake-01` and `fake-02`.
async fn two_engines() -> Vec<FakeEngine> {
    vec![FakeEngine::start("fake-01", &["zone=a"]).await, FakeEngine::start("fake-02", &["zone=b"]).await]
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .flat_map(|c| c["Names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn filters(value: Value) -> String {
    url::form_urlencoded::byte_serialize(value.to_string().as_bytes()).collect()
}

#[tokio::test]
async fn ping_version_and_info_describe_the_cluster() {
    let engines = two_engines().await;
    engines[0].add_container("web", "nginx", "running", json!([]));
    engines[1].add_container("db", "postgres", "exited", json!([]));
    let c = Cluster::start(engines, &[]).await;

    let ping = get(c.addr, "/_ping").await;
    assert_eq!((ping.status, ping.text().as_str()), (StatusCode::OK, "OK"));
    assert_eq!(ping.headers["api-version"], "1.41");
    let head = client::send(c.addr, Method::HEAD, "/_ping", "").await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));

    let version = get(c.addr, "/v1.41/version").await.json();
    assert_eq!(version["ApiVersion"], "1.41");
    assert_eq!(version["MinAPIVersion"], "1.12");
    assert!(version["Version"].as_str().unwrap().starts_with("swarm/"), "{version}");

    let info = get(c.addr, "/info").await;
    let body = info.json();
    assert_eq!((body["Containers"].as_i64(), body["ContainersRunning"].as_i64()), (Some(2), Some(1)));
    assert_eq!(body["ContainersStopped"], 1);
    assert_eq!(body["NCPU"], 4);
    // The default overcommit (5 %) applies to the totals.
    assert_eq!(body["MemTotal"], (4_294_967_296.0 * 1.05) as i64);
    let status = info.system_status();
    let value = |key: &str| status.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(value("Role").as_deref(), Some("primary"));
    assert_eq!(value("Nodes").as_deref(), Some("2"));
    assert_eq!(value("Strategy").as_deref(), Some("spread"));
    for engine in &c.engines {
        let at = status.iter().position(|(k, _)| *k == format!(" {}", engine.name)).expect("a node section");
        assert_eq!(status[at].1, engine.addr());
        let node = &status[at + 1..at + 10];
        assert_eq!(node[0], ("  └ ID".to_string(), engine.swarm_id()));
        assert_eq!(node[1].1, "Healthy");
        let containers = if engine.name == "fake-01" {
            "1 (1 Running, 0 Paused, 0 Stopped)"
        } else {
            "1 (0 Running, 0 Paused, 1 Stopped)"
        };
        assert_eq!(node[2].1, containers);
        assert!(node[5].1.contains("zone="), "labels: {:?}", node[5]);
        assert_eq!(node[8], ("  └ ServerVersion".to_string(), "20.10.24".to_string()));
    }
}

#[tokio::test]
async fn events_carry_the_node_they_come_from() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let mut stream =
        client::open(c.addr, Method::GET, "/events?filters=%7B%22type%22%3A%5B%22image%22%5D%7D", "".into()).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let event = |id: &str| json!({"Type": "image", "Action": "pull", "Actor": {"ID": id, "Attributes": {}}, "time": 1, "timeNano": 1});
    // A container event first: the filter must hold it back.
    c.engine("fake-02")
        .emit_event(json!({"Type": "container", "Action": "start", "Actor": {"ID": "x", "Attributes": {}}}));
    c.engine("fake-02").emit_event(event("alpine:3"));
    let line = client::read_line_until(stream.body_mut(), |_| true).await;
    assert_eq!(line["Actor"]["ID"], "alpine:3");
    assert_eq!(line["node"]["Name"], "fake-02");
    assert_eq!(line["node"]["Addr"], c.engine("fake-02").addr());
    assert_eq!(line["node"]["Ip"], "127.0.0.1");
    assert_eq!(line["Actor"]["Attributes"]["node.name"], "fake-02");
}

#[tokio::test]
async fn system_df_merges_every_engine() {
    let engines = two_engines().await;
    engines[0].add_container("web", "nginx", "running", json!([]));
    engines[1].add_volume("data");
    engines[0].add_image("sha256:aaa", &["busybox:latest"]);
    engines[1].add_image("sha256:aaa", &["busybox:latest"]);
    let c = Cluster::start(engines, &[]).await;
    let df = get(c.addr, "/v1.41/system/df").await.json();
    assert_eq!(df["LayersSize"], 200);
    assert_eq!(df["Images"].as_array().unwrap().len(), 1, "one image ID once: {df}");
    assert_eq!(df["Containers"][0]["Names"][0], "/fake-01/web");
    assert_eq!(df["Volumes"][0]["Name"], "fake-02/data");
    assert_eq!(c.engine("fake-01").requests_to(Method::GET, "/system/df")[0].uri, "/v1.41/system/df");
}

#[tokio::test]
async fn auth_and_image_search_go_to_one_engine() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let auth = post(c.addr, "/v1.41/auth", json!({"username": "u", "password": "p"})).await;
    assert_eq!((auth.status, auth.json()["Status"].as_str()), (StatusCode::OK, Some("Login Succeeded")));
    let search = get(c.addr, "/v1.41/images/search?term=busybox&limit=5").await;
    assert_eq!(search.json()[0]["name"], "busybox");
    let auths: Vec<_> = c.engines.iter().flat_map(|e| e.requests_to(Method::POST, "/auth")).collect();
    assert_eq!(auths.len(), 1, "one engine answers");
    assert_eq!(auths[0].json()["username"], "u");
    let searches: Vec<_> = c.engines.iter().flat_map(|e| e.requests_to(Method::GET, "/images/search")).collect();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].uri, "/v1.41/images/search?term=busybox&limit=5");
}

#[tokio::test]
async fn prune_goes_to_every_engine_and_merges_the_answers() {
    let c = Cluster::start(two_engines().await, &[]).await;
    for kind in ["containers", "images", "networks", "volumes"] {
        let pruned = post(c.addr, &format!("/v1.41/{kind}/prune?filters=%7B%7D"), json!(null)).await;
        assert_eq!(pruned.status, StatusCode::OK, "{kind}: {pruned:?}");
        let body = pruned.json();
        let key = format!("{}{}Deleted", kind[..1].to_uppercase(), &kind[1..]);
        let mut deleted: Vec<String> =
            body[&key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        deleted.sort();
        assert_eq!(deleted, ["fake-01-pruned", "fake-02-pruned"], "{kind}: {body}");
        assert_eq!(body["SpaceReclaimed"], 20);
        for engine in &c.engines {
            let sent = engine.requests_to(Method::POST, &format!("/{kind}/prune"));
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].uri, format!("/v1.41/{kind}/prune?filters=%7B%7D"));
        }
    }
}

#[tokio::test]
async fn containers_list_shows_node_names_engine_ips_and_honours_filters() {
    let engines = two_engines().await;
    let published = json!([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]);
    engines[0].add_container("web", "nginx", "running", published);
    engines[0].add_container("old", "nginx", "exited", json!([]));
    engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;

    let running = get(c.addr, "/v1.41/containers/json").await.json();
    assert_eq!(names(&running), ["/fake-01/web", "/fake-02/db"]);
    let web = running.as_array().unwrap().iter().find(|e| e["Names"][0] == "/fake-01/web").unwrap();
    assert_eq!(web["Ports"][0]["IP"], "127.0.0.1", "0.0.0.0 becomes the engine's IP");
    assert_eq!(web["Ports"][0]["PublicPort"], 8080);

    let all = get(c.addr, "/containers/json?all=1").await.json();
    assert_eq!(names(&all), ["/fake-01/old", "/fake-01/web", "/fake-02/db"]);
    let on_node = |node: &str| format!("/containers/json?all=1&filters={}", filters(json!({"node": [node]})));
    assert_eq!(names(&get(c.addr, &on_node("fake-02")).await.json()), ["/fake-02/db"]);
    assert_eq!(names(&get(c.addr, &on_node("fake-01")).await.json()), ["/fake-01/old", "/fake-01/web"]);
    let by_name = format!("/containers/json?all=1&filters={}", filters(json!({"name": ["fake-01/old"]})));
    assert_eq!(names(&get(c.addr, &by_name).await.json()), ["/fake-01/old"]);
    let exited = format!("/containers/json?filters={}", filters(json!({"status": {"exited": true}})));
    assert_eq!(names(&get(c.addr, &exited).await.json()), ["/fake-01/old"]);
    let limited = get(c.addr, "/containers/json?limit=1").await.json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn create_schedules_labels_and_refuses_a_taken_name() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let created =
        post(c.addr, "/v1.41/containers/create?name=web", json!({"Image": "nginx", "Labels": {"a": "b"}})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let id = created.json()["Id"].as_str().unwrap().to_string();

    let creates: Vec<_> = c.engines.iter().flat_map(|e| e.requests_to(Method::POST, "/containers/create")).collect();
    assert_eq!(creates.len(), 1, "created on one engine");
    assert_eq!(creates[0].uri, "/v1.41/containers/create?name=web");
    let sent = creates[0].json();
    assert_eq!(sent["Image"], "nginx");
    assert_eq!(sent["Labels"]["a"], "b");
    let swarm_id = sent["Labels"]["com.docker.swarm.id"].as_str().expect("swarm id label");
    assert!(swarm_id.len() == 64 && swarm_id.chars().all(|c| c.is_ascii_hexdigit()), "{swarm_id}");

    // In the cache as soon as the client has the ID.
    let owner = c.engines.iter().find(|e| e.container("web").is_some()).expect("an engine has it");
    let all = get(c.addr, "/containers/json?all=1").await.json();
    assert_eq!(names(&all), [format!("/{}/web", owner.name)]);
    assert_eq!(all[0]["Id"], id);
    let by_swarm_id = get(c.addr, &format!("/containers/{swarm_id}/json")).await;
    assert_eq!(by_swarm_id.json()["Id"], id, "the swarm ID resolves too");

    let taken = post(c.addr, "/v1.41/containers/create?name=web", json!({"Image": "nginx"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(
        taken.message(),
        format!(
            "Conflict. The container name \"/web\" is already in use by container \"{id}\". \
             You have to remove (or rename) that container to be able to reuse that name."
        )
    );
    let creates = c.engines.iter().map(|e| e.requests_to(Method::POST, "/containers/create").len()).sum::<usize>();
    assert_eq!(creates, 1, "a taken name never reaches an engine");
}

#[tokio::test]
async fn create_honours_node_constraints() {
    let c = Cluster::start(two_engines().await, &[]).await;
    for (name, node) in [("one", "fake-02"), ("two", "fake-01"), ("three", "fake-02")] {
        let env = json!({"Image": "nginx", "Env": [format!("constraint:node=={node}")]});
        let created = post(c.addr, &format!("/containers/create?name={name}"), env).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        assert!(c.engine(node).container(name).is_some(), "{name} is on {node}");
    }
    let by_label =
        post(c.addr, "/containers/create?name=four", json!({"Image": "nginx", "Env": ["constraint:zone==b"]})).await;
    assert_eq!(by_label.status, StatusCode::CREATED);
    assert!(c.engine("fake-02").container("four").is_some(), "engine labels constrain too");

    let nowhere =
        post(c.addr, "/containers/create", json!({"Image": "nginx", "Env": ["constraint:node==fake-09"]})).await;
    assert_eq!(nowhere.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(nowhere.message().starts_with("Unable to find a node that satisfies"), "{}", nowhere.message());
}

#[tokio::test]
async fn inspect_appends_the_node() {
    let engines = two_engines().await;
    let id = engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let inspect = get(c.addr, "/v1.41/containers/db/json?size=1").await;
    assert_eq!(inspect.status, StatusCode::OK);
    let body = inspect.json();
    assert_eq!(body["Id"], id);
    assert_eq!(body["Node"]["Name"], "fake-02");
    assert_eq!(body["Node"]["IP"], "127.0.0.1");
    assert_eq!(body["Node"]["Addr"], c.engine("fake-02").addr());
    assert_eq!(body["Node"]["ID"], c.engine("fake-02").swarm_id());
    assert_eq!(body["Node"]["Cpus"], 2);
    assert_eq!(body["Node"]["Labels"]["zone"], "b");
    let sent = c.engine("fake-02").requests();
    assert!(sent.iter().any(|r| r.uri == format!("/v1.41/containers/{id}/json?size=1")), "name resolved to the ID");
}

#[tokio::test]
async fn container_routes_go_to_the_owning_engine_with_the_full_id() {
    let engines = two_engines().await;
    let id = engines[1].add_container("db", "postgres", "exited", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let db = c.engine("fake-02");

    for reference in ["db", "/db", "fake-02/db", &id[..12], id.as_str()] {
        let started =
            client::send(c.addr, Method::POST, &format!("/v1.41/containers/{reference}/start?detachKeys=x"), "").await;
        assert_eq!(started.status, StatusCode::NO_CONTENT, "{reference}: {started:?}");
    }
    let starts = db.requests_to(Method::POST, &format!("/containers/{id}/start"));
    assert_eq!(starts.len(), 5);
    assert!(starts.iter().all(|r| r.uri == format!("/v1.41/containers/{id}/start?detachKeys=x")), "{starts:?}");
    assert!(c.engine("fake-01").requests().iter().all(|r| !r.uri.contains("/start")));
    // The cache was refreshed before the answer.
    assert_eq!(names(&get(c.addr, "/containers/json").await.json()), ["/fake-02/db"]);

    let stopped = client::send(c.addr, Method::POST, "/containers/db/stop?t=5", "").await;
    assert_eq!(stopped.status, StatusCode::NO_CONTENT);
    assert_eq!(
        db.requests_to(Method::POST, &format!("/containers/{id}/stop"))[0].uri,
        format!("/containers/{id}/stop?t=5")
    );
    assert!(get(c.addr, "/containers/json").await.json().as_array().unwrap().is_empty());

    let logs = get(c.addr, "/v1.24/containers/db/logs?stdout=1&tail=10").await;
    assert_eq!((logs.status, logs.text().as_str()), (StatusCode::OK, "logs of db\n"));
    assert_eq!(
        db.requests_to(Method::GET, &format!("/containers/{id}/logs"))[0].uri,
        format!("/v1.24/containers/{id}/logs?stdout=1&tail=10")
    );
}

#[tokio::test]
async fn remove_and_rename() {
    let engines = two_engines().await;
    let web = engines[0].add_container("web", "nginx", "exited", json!([]));
    engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;

    let renamed = client::send(c.addr, Method::POST, "/v1.41/containers/web/rename?name=front", "").await;
    assert_eq!(renamed.status, StatusCode::NO_CONTENT, "{renamed:?}");
    let sent = c.engine("fake-01").requests_to(Method::POST, &format!("/containers/{web}/rename"));
    assert_eq!(sent[0].uri, format!("/v1.41/containers/{web}/rename?name=front"));
    assert_eq!(names(&get(c.addr, "/containers/json?all=1").await.json()), ["/fake-01/front", "/fake-02/db"]);

    let taken = client::send(c.addr, Method::POST, "/containers/front/rename?name=db", "").await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "a name taken on another node: {taken:?}");
    assert!(taken.message().contains("\"/db\" is already in use"), "{}", taken.message());

    let removed = client::delete(c.addr, "/v1.41/containers/front?force=1&v=1").await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let sent = c.engine("fake-01").requests_to(Method::DELETE, &format!("/containers/{web}"));
    assert_eq!(sent[0].uri, format!("/v1.41/containers/{web}?force=1&v=1"));
    assert_eq!(get(c.addr, "/containers/front/json").await.status, StatusCode::NOT_FOUND);
    assert_eq!(names(&get(c.addr, "/containers/json?all=1").await.json()), ["/fake-02/db"]);
}

#[tokio::test]
async fn exec_is_created_and_started_on_the_owning_engine() {
    let engines = two_engines().await;
    let id = engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let created = post(c.addr, "/v1.41/containers/db/exec", json!({"Cmd": ["ls"], "AttachStdout": true})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let exec = created.json()["Id"].as_str().unwrap().to_string();
    let sent = c.engine("fake-02").requests_to(Method::POST, &format!("/containers/{id}/exec"));
    assert_eq!(sent[0].json()["Cmd"][0], "ls");

    let started = post(c.addr, &format!("/v1.41/exec/{exec}/start"), json!({"Detach": false})).await;
    assert_eq!((started.status, started.text().as_str()), (StatusCode::OK, "exec output\n"));
    let inspected = get(c.addr, &format!("/exec/{exec}/json")).await;
    assert_eq!(inspected.json()["ContainerID"], id);
    let fake_01 = c.engine("fake-01").requests();
    assert!(fake_01.iter().all(|r| !r.uri.contains("/exec")), "{fake_01:?}");
    assert_eq!(
        c.engine("fake-02").requests_to(Method::POST, &format!("/exec/{exec}/start"))[0].json()["Detach"],
        false
    );
}

#[tokio::test]
async fn commit_and_build() {
    let engines = two_engines().await;
    let id = engines[0].add_container("web", "nginx", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let committed = post(c.addr, "/v1.41/commit?container=web&repo=snapshot&tag=1", json!({})).await;
    assert_eq!(committed.status, StatusCode::CREATED, "{committed:?}");
    let sent = c.engine("fake-01").requests_to(Method::POST, "/commit");
    assert_eq!(sent[0].uri, format!("/v1.41/commit?repo=snapshot&tag=1&container={id}"));
    assert!(c.engine("fake-01").has_image_tag("snapshot:1"));

    let args = filters(json!({"constraint:node": "=fake-02"}));
    let build = client::send(c.addr, Method::POST, &format!("/v1.41/build?t=app&buildargs={args}"), "tar bytes").await;
    assert_eq!((build.status, build.text().as_str()), (StatusCode::OK, "{\"stream\":\"Successfully built\"}\n"));
    let sent = c.engine("fake-02").requests_to(Method::POST, "/build");
    assert_eq!(sent.len(), 1, "built where the build arg constrains it");
    assert_eq!(sent[0].uri, format!("/v1.41/build?t=app&buildargs={args}"));
    assert_eq!(&sent[0].body[..], b"tar bytes");
    assert!(c.engine("fake-01").requests_to(Method::POST, "/build").is_empty());
}

#[tokio::test]
async fn images_list_pull_load_save_inspect_tag_and_remove() {
    let engines = two_engines().await;
    engines[0].add_image("sha256:bbb", &["busybox:latest"]);
    engines[1].add_image("sha256:bbb", &["busybox:1"]);
    engines[1].add_image("sha256:rrr", &["redis:7"]);
    let c = Cluster::start(engines, &[]).await;

    let list = get(c.addr, "/v1.41/images/json").await.json();
    let busybox = list.as_array().unwrap().iter().find(|i| i["Id"] == "sha256:bbb").expect("busybox");
    assert_eq!(busybox["RepoTags"], json!(["busybox:latest", "busybox:1"]), "one entry per ID, tags merged");
    assert_eq!(list.as_array().unwrap().len(), 2);

    let pull = client::send(c.addr, Method::POST, "/v1.41/images/create?fromImage=alpine&tag=3", "").await;
    assert_eq!(pull.status, StatusCode::OK);
    let progress: Vec<Value> = pull.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for node in ["fake-01", "fake-02"] {
        let done = progress.iter().any(|p| p["id"] == node && p["status"] == "Pulling alpine:3... : downloaded");
        assert!(done, "{node} in {progress:?}");
    }
    for engine in &c.engines {
        assert_eq!(
            engine.requests_to(Method::POST, "/images/create")[0].uri,
            "/v1.41/images/create?fromImage=alpine&tag=3"
        );
        assert!(engine.has_image_tag("alpine:3"));
    }

    let load = client::send(c.addr, Method::POST, "/v1.41/images/load?quiet=1", "archive").await;
    assert_eq!(load.json()["stream"], "Loaded image");
    for engine in &c.engines {
        assert_eq!(&engine.requests_to(Method::POST, "/images/load")[0].body[..], b"archive");
    }

    let save = get(c.addr, "/v1.41/images/get?names=busybox").await;
    assert_eq!((save.status, save.text().as_str()), (StatusCode::OK, "image archive"));

    let redis = get(c.addr, "/v1.41/images/redis:7/json").await;
    assert_eq!(
        (redis.status, redis.json()["Id"].as_str()),
        (StatusCode::OK, Some("sha256:rrr")),
        "from the engine that has it"
    );
    let missing = get(c.addr, "/images/nope/json").await;
    assert_eq!((missing.status, missing.message()), (StatusCode::NOT_FOUND, "No such image: nope".to_string()));

    let tagged = client::send(c.addr, Method::POST, "/v1.41/images/sha256:bbb/tag?repo=mine&tag=2", "").await;
    assert_eq!(tagged.status, StatusCode::CREATED);
    assert!(c.engines.iter().all(|e| e.has_image_tag("mine:2")), "tagged on every engine with the image");

    let removed = client::delete(c.addr, "/v1.41/images/redis:7").await;
    assert_eq!(removed.status, StatusCode::OK, "{removed:?}");
    assert_eq!(removed.json(), json!([{"Untagged": "redis:7"}, {"Deleted": "sha256:rrr"}]));
    assert!(!c.engine("fake-02").has_image_tag("redis:7"));
    let gone = client::delete(c.addr, "/images/redis:7").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn networks_list_create_inspect_connect_and_remove() {
    let engines = two_engines().await;
    engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let db = c.engine("fake-02").container("db").unwrap().id;

    let list = get(c.addr, "/v1.41/networks").await.json();
    let mut listed: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, ["fake-01/bridge", "fake-02/bridge"]);

    let created = post(c.addr, "/v1.41/networks/create", json!({"Name": "appnet", "CheckDuplicate": true})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    for engine in &c.engines {
        let sent = engine.requests_to(Method::POST, "/networks/create");
        assert_eq!(sent[0].json()["Driver"], "bridge", "a bridge on every engine");
        assert_eq!(sent[0].uri, "/v1.41/networks/create");
    }
    let list = get(c.addr, "/networks").await.json();
    assert_eq!(list.as_array().unwrap().iter().filter(|n| n["Name"] == "appnet").count(), 1, "listed once: {list}");
    let again = post(c.addr, "/networks/create", json!({"Name": "appnet"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let inspected = get(c.addr, "/v1.41/networks/appnet").await;
    assert_eq!((inspected.status, inspected.json()["Name"].as_str()), (StatusCode::OK, Some("appnet")));
    let bridge = get(c.addr, "/networks/fake-02/bridge").await;
    assert_eq!(bridge.json()["Id"].as_str(), c.engine("fake-02").network_id("bridge").as_deref());

    let connected = post(c.addr, "/v1.41/networks/appnet/connect", json!({"Container": "db"})).await;
    assert_eq!(connected.status, StatusCode::OK, "{connected:?}");
    let sent = c.engine("fake-02").requests_to(Method::POST, "/networks/appnet/connect");
    assert_eq!(sent[0].json()["Container"], db, "the container's node, by full ID");
    assert!(c.engine("fake-01").requests_to(Method::POST, "/networks/appnet/connect").is_empty());

    let ids: Vec<String> = c.engines.iter().map(|e| e.network_id("appnet").unwrap()).collect();
    let removed = client::delete(c.addr, "/v1.41/networks/appnet").await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{removed:?}");
    for (engine, id) in c.engines.iter().zip(ids) {
        assert_eq!(engine.requests_to(Method::DELETE, &format!("/networks/{id}")).len(), 1);
        assert!(engine.network_id("appnet").is_none());
    }
    assert_eq!(get(c.addr, "/networks/appnet").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn volumes_list_create_inspect_and_remove() {
    let engines = two_engines().await;
    engines[0].add_volume("data");
    let c = Cluster::start(engines, &[]).await;

    let list = get(c.addr, "/v1.41/volumes").await.json();
    assert_eq!(list["Volumes"][0]["Name"], "fake-01/data");

    let shared = post(c.addr, "/v1.41/volumes/create", json!({"Name": "shared"})).await;
    assert_eq!(shared.status, StatusCode::CREATED, "{shared:?}");
    assert!(c.engines.iter().all(|e| e.has_volume("shared")), "a named volume on every engine");
    let solo = post(c.addr, "/volumes/create", json!({"Name": "fake-02/solo"})).await;
    assert_eq!(solo.status, StatusCode::CREATED);
    assert_eq!(c.engine("fake-02").requests_to(Method::POST, "/volumes/create").last().unwrap().json()["Name"], "solo");
    assert!(!c.engine("fake-01").has_volume("solo"));

    let inspected = get(c.addr, "/v1.41/volumes/fake-02/solo").await;
    assert_eq!((inspected.status, inspected.json()["Name"].as_str()), (StatusCode::OK, Some("solo")));
    assert_eq!(c.engine("fake-02").requests_to(Method::GET, "/volumes/solo")[0].uri, "/v1.41/volumes/solo");
    assert_eq!(get(c.addr, "/volumes/data").await.json()["Name"], "data");

    let removed = client::delete(c.addr, "/v1.41/volumes/shared").await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert!(c.engines.iter().all(|e| !e.has_volume("shared")), "removed from every engine that had it");
    let missing = get(c.addr, "/volumes/shared").await;
    assert_eq!((missing.status, missing.message()), (StatusCode::NOT_FOUND, "get shared: no such volume".to_string()));
}

#[tokio::test]
async fn malformed_json_bodies_are_a_400() {
    let c = Cluster::start(two_engines().await, &[]).await;
    for path in ["/containers/create", "/networks/create", "/volumes/create"] {
        let reply = client::send(c.addr, Method::POST, &format!("/v1.41{path}"), "{nope").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert!(reply.message().starts_with("invalid JSON in request body"), "{path}: {}", reply.message());
    }
    let array = client::send(c.addr, Method::POST, "/containers/create", "[1]").await;
    assert_eq!(array.status, StatusCode::BAD_REQUEST);
    let engines_saw = c.engines.iter().map(|e| e.requests_to(Method::POST, "/containers/create").len()).sum::<usize>();
    assert_eq!(engines_saw, 0);
}

#[tokio::test]
async fn bad_filters_are_a_400() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let cases = [
        ("/containers/json?filters=%7Bnope".to_string(), "invalid filter"),
        (format!("/containers/json?filters={}", filters(json!({"colour": ["red"]}))), "invalid filter 'colour'"),
        (
            format!("/containers/json?filters={}", filters(json!({"status": ["zombie"]}))),
            "invalid filter 'status=zombie'",
        ),
        (format!("/containers/json?filters={}", filters(json!({"name": ["("]}))), "invalid filter 'name=('"),
        (format!("/events?filters={}", filters(json!({"colour": ["red"]}))), "invalid filter 'colour'"),
        ("/events?since=yesterday".to_string(), "invalid timestamp"),
        ("/networks?filters=%5B1%5D".to_string(), "invalid filter"),
    ];
    for (path, expected) in cases {
        let reply = get(c.addr, &path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert!(reply.message().starts_with(expected), "{path}: {}", reply.message());
    }
}

#[tokio::test]
async fn unknown_containers_and_routes_are_a_404() {
    let engines = two_engines().await;
    engines[0].add_container("web", "nginx", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let cases = [
        (Method::GET, "/v1.41/containers/nope/json", "No such container: nope"),
        (Method::POST, "/containers/nope/start", "No such container: nope"),
        (Method::DELETE, "/containers/nope", "No such container: nope"),
        (Method::POST, "/commit?container=nope", "No such container: nope"),
        (Method::POST, "/exec/0123456789/start", "No such exec instance: 0123456789"),
        (Method::GET, "/networks/nope", "network nope not found"),
        (Method::GET, "/v1.41/plugins/nope/json", "page not found"),
        (Method::POST, "/containers/json", "page not found"),
        (Method::GET, "/containers//json", "page not found"),
    ];
    for (method, path, expected) in cases {
        let reply = client::send(c.addr, method.clone(), path, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}: {reply:?}");
        assert_eq!(reply.message(), expected, "{method} {path}");
    }
}

#[tokio::test]
async fn engine_errors_are_relayed_as_they_are() {
    let engines = two_engines().await;
    let id = engines[0].add_container("web", "nginx", "running", json!([]));
    let refusal = json!({"message": "driver failed programming external connectivity"});
    engines[0].force(
        Method::POST,
        &format!("/containers/{id}/start"),
        StatusCode::INTERNAL_SERVER_ERROR,
        refusal.clone(),
    );
    let running = json!({"message": "You cannot remove a running container"});
    engines[0].force(Method::DELETE, &format!("/containers/{id}"), StatusCode::CONFLICT, running.clone());
    engines[0].force(Method::POST, &format!("/containers/{id}/pause"), StatusCode::NOT_MODIFIED, json!(null));
    let c = Cluster::start(engines, &[]).await;

    let start = client::send(c.addr, Method::POST, "/containers/web/start", "").await;
    assert_eq!((start.status, start.json()), (StatusCode::INTERNAL_SERVER_ERROR, refusal));
    let remove = client::delete(c.addr, "/containers/web").await;
    assert_eq!((remove.status, remove.json()), (StatusCode::CONFLICT, running));
    let pause = client::send(c.addr, Method::POST, "/containers/web/pause", "").await;
    assert_eq!(pause.status, StatusCode::NOT_MODIFIED);
    assert_eq!(names(&get(c.addr, "/containers/json").await.json()), ["/fake-01/web"], "still there");
}

#[tokio::test]
async fn an_engine_refusing_connections_is_a_500_naming_it() {
    let engines = two_engines().await;
    engines[1].add_container("db", "postgres", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    let down = c.engine("fake-02");
    down.stop().await;
    let reply = client::send(c.addr, Method::POST, "/containers/db/stop", "").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    let prefix = format!("fake-02 ({}): ", down.addr());
    assert!(reply.message().starts_with(&prefix), "{}", reply.message());
}

#[tokio::test]
async fn no_healthy_node_is_a_500() {
    // A port nothing listens on: the engine stays pending.
    let nowhere = manager::bind().local_addr().unwrap();
    let manager = ManagerProcess::start(manager::bind(), &[&format!("nodes://{nowhere}")], None, None).await;
    let info = get(manager.addr, "/info").await;
    assert!(
        info.system_status().iter().any(|(k, v)| k == "  └ Status" && v == "Pending"),
        "{:?}",
        info.system_status()
    );
    for (method, path) in
        [(Method::POST, "/containers/create"), (Method::GET, "/images/json"), (Method::GET, "/volumes")]
    {
        let body = if method == Method::POST { "{\"Image\":\"nginx\"}" } else { "" };
        let reply = client::send(manager.addr, method.clone(), path, body).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {reply:?}");
        assert_eq!(reply.message(), "No healthy node available in the cluster", "{method} {path}");
    }
}

#[tokio::test]
async fn create_on_a_nodes_network_is_pinned_there() {
    let engines = two_engines().await;
    engines[1].add_network("testn", "bridge");
    let c = Cluster::start(engines, &[]).await;
    let body = json!({"Image": "nginx", "HostConfig": {"NetworkMode": "fake-02/testn"},
        "NetworkingConfig": {"EndpointsConfig": {"fake-02/testn": {"Aliases": ["web"]}}}});
    let created = post(c.addr, "/v1.41/containers/create?name=web", body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let sent = c.engine("fake-02").requests_to(Method::POST, "/containers/create");
    let sent = sent.first().expect("created on fake-02").json();
    assert_eq!(sent["HostConfig"]["NetworkMode"], "testn", "the engine gets the network's own name");
    assert_eq!(sent["NetworkingConfig"]["EndpointsConfig"]["testn"]["Aliases"], json!(["web"]));
    assert_eq!(sent["Labels"]["com.docker.swarm.constraints"], r#"["node==fake-02"]"#, "kept for rescheduling");
    assert_eq!(sent["Env"], json!([]), "the pin is not passed on as an environment variable");
}

#[tokio::test]
async fn ps_is_task_filters_on_the_swarm_task_label() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let task = json!({"Image": "nginx", "Labels": {"com.docker.swarm.task": ""}});
    assert_eq!(post(c.addr, "/containers/create?name=task", task).await.status, StatusCode::CREATED);
    assert_eq!(
        post(c.addr, "/containers/create?name=plain", json!({"Image": "nginx"})).await.status,
        StatusCode::CREATED
    );
    let listed = |values: Value| format!("/containers/json?all=1&filters={}", filters(json!({"is-task": values})));
    let bare = |list: Value| names(&list).iter().map(|n| n.rsplit('/').next().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(bare(get(c.addr, &listed(json!(["true"]))).await.json()), ["task"]);
    assert_eq!(bare(get(c.addr, &listed(json!(["false"]))).await.json()), ["plain"]);
    assert_eq!(bare(get(c.addr, &listed(json!(["false", "true"]))).await.json()), ["task"], "true wins, as in dockerd");
    let bad = get(c.addr, &listed(json!(["maybe"]))).await;
    assert_eq!((bad.status, bad.message()), (StatusCode::BAD_REQUEST, "Invalid filter 'is-task=[maybe]'".to_string()));
}

#[tokio::test]
async fn create_errors_the_cli_must_not_answer_with_a_pull() {
    let engines = two_engines().await;
    let plugin = json!({"message": "create x: error looking up volume plugin nope: plugin \"nope\" not found"});
    let image = json!({"message": "No such image: ghost:latest"});
    for engine in &engines {
        engine.force(Method::POST, "/containers/create", StatusCode::NOT_FOUND, plugin.clone());
    }
    let c = Cluster::start(engines, &[]).await;

    let hex = "0123456789abcdef".repeat(4);
    let refused = post(c.addr, "/v1.41/containers/create", json!({"Image": hex})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.message(),
        format!("invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings")
    );
    let sent = c.engines.iter().map(|e| e.requests_to(Method::POST, "/containers/create").len()).sum::<usize>();
    assert_eq!(sent, 0, "refused before scheduling");

    let driver = post(c.addr, "/v1.41/containers/create", json!({"Image": "nginx"})).await;
    assert_eq!((driver.status, driver.json()), (StatusCode::BAD_REQUEST, plugin), "not a 404: the CLI would pull");

    let without_image = FakeEngine::start("fake-03", &[]).await;
    without_image.force(Method::POST, "/containers/create", StatusCode::NOT_FOUND, image.clone());
    let c = Cluster::start(vec![without_image], &[]).await;
    let missing = post(c.addr, "/v1.41/containers/create", json!({"Image": "ghost"})).await;
    assert_eq!((missing.status, missing.json()), (StatusCode::NOT_FOUND, image), "a missing image stays a 404");
}

#[tokio::test]
async fn save_goes_to_an_engine_holding_every_image() {
    let engines = two_engines().await;
    engines[0].add_image("sha256:bbb", &["busybox:latest"]);
    engines[1].add_image("sha256:bbb", &["busybox:1"]);
    engines[1].add_image("sha256:rrr", &["redis:7"]);
    let c = Cluster::start(engines, &[]).await;
    let both = get(c.addr, "/v1.41/images/get?names=busybox&names=redis%3A7").await;
    assert_eq!((both.status, both.text().as_str()), (StatusCode::OK, "image archive"));
    assert_eq!(c.engine("fake-02").requests_to(Method::GET, "/images/get").len(), 1);
    assert!(c.engine("fake-01").requests_to(Method::GET, "/images/get").is_empty());
    let none = get(c.addr, "/v1.41/images/get?names=busybox%3Alatest&names=redis%3A7").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.message(), "Unable to find a healthy engine containing all images: [busybox:latest redis:7]");
}

#[tokio::test]
async fn images_and_volumes_filter_by_node_on_the_manager() {
    let engines = two_engines().await;
    engines[0].add_image("sha256:bbb", &["busybox:latest"]);
    engines[1].add_image("sha256:bbb", &["busybox:latest", "mine:1"]);
    engines[0].add_volume("data");
    engines[0].add_volume("logs");
    engines[1].add_volume("data");
    let c = Cluster::start(engines, &[]).await;

    let images = get(c.addr, &format!("/v1.41/images/json?filters={}", filters(json!({"node": ["fake-01"]})))).await;
    assert_eq!(images.json()[0]["RepoTags"], json!(["busybox:latest"]), "only fake-01's tags: {images:?}");
    assert!(c.engine("fake-02").requests_to(Method::GET, "/images/json").iter().all(|r| !r.uri.contains("filters")));
    let dangling = filters(json!({"node": ["02$"], "dangling": ["false"]}));
    get(c.addr, &format!("/images/json?filters={dangling}")).await;
    let forwarded = c.engine("fake-02").requests_to(Method::GET, "/images/json").pop().expect("asked fake-02");
    assert_eq!(forwarded.uri, format!("/images/json?filters={}", filters(json!({"dangling": {"false": true}}))));

    let volumes = |f: Value| {
        let path = format!("/v1.41/volumes?filters={}", filters(f));
        async move {
            let list = get(c.addr, &path).await.json();
            let mut names: Vec<String> =
                list["Volumes"].as_array().unwrap().iter().map(|v| v["Name"].as_str().unwrap().to_string()).collect();
            names.sort();
            names
        }
    };
    assert_eq!(volumes(json!({"node": ["fake-02"]})).await, ["fake-02/data"]);
    assert_eq!(volumes(json!({"name": ["at"]})).await, ["fake-01/data", "fake-02/data"], "substring of the name");
    assert_eq!(volumes(json!({"name": ["01/"]})).await, ["fake-01/data", "fake-01/logs"], "as listed, node included");
}

#[tokio::test]
async fn volume_creates_follow_placement_rules() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let labelled = json!({"Name": "by-label", "Labels": {"com.docker.swarm.constraints": "[\"zone==b\"]"}});
    assert_eq!(post(c.addr, "/volumes/create", labelled).await.status, StatusCode::CREATED);
    assert!(c.engine("fake-02").has_volume("by-label") && !c.engine("fake-01").has_volume("by-label"));

    let opt = json!({"Name": "by-opt", "DriverOpts": {"constraint:node": "=fake-01", "size": "1g"}});
    assert_eq!(post(c.addr, "/volumes/create", opt).await.status, StatusCode::CREATED);
    let sent =
        c.engine("fake-01").requests_to(Method::POST, "/volumes/create").pop().expect("created on fake-01").json();
    assert_eq!(sent["DriverOpts"], json!({"size": "1g"}), "the driver never sees the rule");
    assert_eq!(sent["Labels"]["com.docker.swarm.constraints"], r#"["node==fake-01"]"#);
    assert!(!c.engine("fake-02").has_volume("by-opt"));

    let white = json!({"Name": "white", "Labels": {"com.docker.swarm.whitelists": "[\"node==fake-02\"]"}});
    assert_eq!(post(c.addr, "/volumes/create", white).await.status, StatusCode::CREATED);
    assert!(c.engine("fake-02").has_volume("white") && !c.engine("fake-01").has_volume("white"));

    let nowhere = json!({"Name": "nowhere", "Labels": {"com.docker.swarm.constraints": "[\"node==fake-09\"]"}});
    let reply = post(c.addr, "/volumes/create", nowhere).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.message().starts_with("Unable to find a node that satisfies"), "{}", reply.message());

    let bad = json!({"Name": "bad", "Labels": {"com.docker.swarm.affinities": "container==x"}});
    let reply = post(c.addr, "/volumes/create", bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.message(),
        "label com.docker.swarm.affinities must hold a JSON array of strings, got 'container==x'"
    );
    let created = c.engines.iter().flat_map(|e| e.requests_to(Method::POST, "/volumes/create")).count();
    assert_eq!(created, 3, "neither refused create reached an engine");
}

#[tokio::test]
async fn placement_labels_that_are_not_json_arrays_are_a_400() {
    let c = Cluster::start(two_engines().await, &[]).await;
    let body = json!({"Image": "nginx", "Labels": {"com.docker.swarm.constraints": "node==fake-01"}});
    let reply = post(c.addr, "/containers/create", body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.message(),
        "label com.docker.swarm.constraints must hold a JSON array of strings, got 'node==fake-01'"
    );
}

#[tokio::test]
async fn an_unhealthy_engine_s_containers_leave_ps_and_answer_at_once() {
    let engines = two_engines().await;
    engines[0].add_container("web", "nginx", "running", json!([]));
    let db = engines[1].add_container("db", "postgres", "running", json!([]));
    let quick = ["--engine-refresh-min-interval", "100ms", "--engine-refresh-max-interval", "100ms"];
    let c = Cluster::start(engines, &[&quick[..], &["--engine-failure-retry", "2"]].concat()).await;
    let down = c.engine("fake-02");
    down.stop().await;
    manager::wait_until("fake-02 is Unhealthy", || async {
        get(c.addr, "/info").await.system_status().iter().any(|(k, v)| k == "  └ Status" && v == "Unhealthy")
    })
    .await;

    assert_eq!(names(&get(c.addr, "/containers/json").await.json()), ["/fake-01/web"]);
    let all = get(c.addr, "/containers/json?all=1").await.json();
    let db_entry = all.as_array().unwrap().iter().find(|e| e["Names"][0] == "/fake-02/db").expect("listed with all");
    assert_eq!(db_entry["Status"], "Host Down");

    for (method, path, named) in [
        (Method::GET, "/v1.41/containers/db/json".to_string(), "db".to_string()),
        (Method::POST, "/containers/db/stop".to_string(), "db".to_string()),
        (Method::GET, format!("/containers/{}/logs?stdout=1", &db[..12]), db[..12].to_string()),
        (Method::POST, "/containers/fake-02/db/exec".to_string(), "fake-02/db".to_string()),
        (Method::DELETE, "/containers/db?force=1".to_string(), "db".to_string()),
    ] {
        let reply = client::send(c.addr, method.clone(), &path, "{\"Cmd\":[\"true\"]}").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {reply:?}");
        assert_eq!(reply.message(), format!("Container {named} running on unhealthy node fake-02"), "{method} {path}");
    }
    assert_eq!(names(&get(c.addr, "/containers/json?all=1").await.json()), ["/fake-01/web", "/fake-02/db"]);
}

#[tokio::test]
async fn only_refreshes_spaced_by_the_refresh_interval_count_toward_the_failure_retry() {
    let c = Cluster::start(
        two_engines().await,
        &["--engine-refresh-min-interval", "1s", "--engine-refresh-max-interval", "1s", "--engine-failure-retry", "3"],
    )
    .await;
    // An engine half up: its events stream opens and ends at once, each
    // time waking a refresh, and every refresh fails.
    let flaky = c.engine("fake-02");
    flaky.force(Method::GET, "/info", StatusCode::INTERNAL_SERVER_ERROR, json!({"message": "starting"}));
    flaky.force(Method::GET, "/events", StatusCode::OK, json!(null));
    flaky.end_event_streams();
    let status = || async {
        let info = get(c.addr, "/info").await.system_status();
        let at = info.iter().position(|(k, _)| k == " fake-02").expect("a node section");
        info[at + 2].1.clone()
    };
    // Counted failures come at 0 s, 2 s and 5 s (the interval, times one
    // more than the failures so far); the early ones in between do not count.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(status().await, "Healthy");
    manager::wait_until("fake-02 is Unhealthy", || async { status().await == "Unhealthy" }).await;
}

#[tokio::test]
async fn containers_the_engine_fails_to_inspect_stay_listed() {
    let engines = two_engines().await;
    let web = engines[0].add_container("web", "nginx", "running", json!([]));
    let quick = ["--engine-refresh-min-interval", "100ms", "--engine-refresh-max-interval", "100ms"];
    let c = Cluster::start(engines, &quick).await;
    // A restarting engine: it lists the containers (in a new state, and a
    // new one), but fails to inspect them.
    let engine = c.engine("fake-01");
    let fresh = engine.add_container("fresh", "nginx", "created", json!([]));
    for id in [&web, &fresh] {
        let busy = json!({"message": "daemon is restoring"});
        engine.force(Method::GET, &format!("/containers/{id}/json"), StatusCode::INTERNAL_SERVER_ERROR, busy);
    }
    engine.set_state("web", "exited");
    let asked = || engine.requests_to(Method::GET, &format!("/containers/{web}/json")).len();
    let before = asked();
    manager::wait_until("two failed inspects", || async { asked() >= before + 2 }).await;

    assert_eq!(names(&get(c.addr, "/containers/json?all=1").await.json()), ["/fake-01/fresh", "/fake-01/web"]);
    let reply = client::send(c.addr, Method::DELETE, "/containers/web?force=1", "").await;
    assert_ne!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
}

#[tokio::test]
async fn a_full_id_the_cache_does_not_hold_yet_is_looked_for_on_the_engines() {
    let engines = two_engines().await;
    engines[0].add_container("known", "nginx", "running", json!([]));
    let c = Cluster::start(engines, &[]).await;
    // Made on the engine behind the manager's back, no event: as a create
    // through a primary that died before this manager saw it.
    let engine = c.engine("fake-02");
    let late = engine.add_container("late", "nginx", "running", json!([]));

    let reply = client::delete(c.addr, &format!("/containers/{late}?force=1")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(engine.container("late").is_none(), "removed on its engine");

    // A miss by name or by an ID nobody has still answers 404, and a name
    // costs no engine call.
    let lists = || engine.requests_to(Method::GET, "/containers/json").len();
    let before = lists();
    let reply = client::delete(c.addr, "/containers/nobody?force=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert_eq!(lists(), before, "a name is not looked for on the engines");
    let unknown = "ab".repeat(32);
    let reply = client::delete(c.addr, &format!("/containers/{unknown}?force=1")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
}

#[tokio::test]
async fn a_create_whose_answer_the_engine_lost_is_found_by_its_swarm_id() {
    let c = Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], &[]).await;
    let engine = c.engine("fake-01");
    // The engine makes the container, then the connection breaks.
    engine.lose_answers_to(Method::POST, "/containers/create");
    let reply = client::send(c.addr, Method::POST, "/containers/create?name=lost", r#"{"Image":"busybox"}"#).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let made = engine.container("lost").expect("made on the engine");
    assert_eq!(reply.json()["Id"], made.id.as_str());
}

/// The same, with the container listed only after the manager looked for
/// it: the client hears that the create failed, and the container is
/// removed once it shows up, so nothing the client does not know exists.
#[tokio::test]
async fn a_create_whose_answer_the_engine_lost_and_that_lands_late_is_undone() {
    let c = Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], &[]).await;
    let engine = c.engine("fake-01");
    engine.lose_answers_to(Method::POST, "/containers/create");
    engine.list_new_containers_after(Duration::from_millis(1500));
    let reply = client::send(c.addr, Method::POST, "/containers/create?name=late", r#"{"Image":"busybox"}"#).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(engine.container("late").is_some(), "made on the engine, not listed yet");
    manager::wait_until("the container is removed", || async { engine.container("late").is_none() }).await;
}
