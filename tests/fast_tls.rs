//! TLS on every link (`--tls`, `--tlsverify`): a manager in front of fake
//! engines that serve TLS, clients with and without valid certificates, and
//! the flag validation. No root, no dockerd.

mod fast;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use swarm_leadership::{Election, ElectionConfig, Role};
use swarm_testkit::manager::swarm_exit;
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use fast::certs::{CertFiles, TestCa};
use fast::client::{self, tls_get, Reply, TlsSession};
use fast::engine::FakeEngine;
use fast::lock_store::MemoryLockStore;
use fast::manager::{self, wait_until, Cluster, ManagerProcess};

/// What Go's HTTPS server answers plain HTTP with, byte for byte.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The election lock's TTL: long enough never to expire during a test.
const TTL: Duration = Duration::from_secs(10);

/// The value of `└ key` for the node at `addr` in an `/info` answer.
fn node_status(info: &Reply, addr: &str, key: &str) -> Option<String> {
    let status = info.system_status();
    let node = status.iter().position(|(_, v)| v == addr)?;
    status[node + 1..]
        .iter()
        .take_while(|(k, _)| k.starts_with("  └"))
        .find(|(k, _)| k == &format!("  └ {key}"))
        .map(|(_, v)| v.clone())
}

fn flags(files: &[String]) -> Vec<&str> {
    files.iter().map(String::as_str).collect()
}

/// Two engines serving TLS with certificates of `ca`, verifying clients against it.
async fn tls_engines(ca: &TestCa) -> Vec<FakeEngine> {
    vec![
        FakeEngine::start_tls("tls-01", &[], ca.issue("engine-01").verifying()).await,
        FakeEngine::start_tls("tls-02", &[], ca.issue("engine-02").verifying()).await,
    ]
}

/// A client that trusts `ca` but presents no certificate.
fn anonymous_client(ca: &CertFiles) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&ca.ca).expect("read the CA") {
        roots.add(certificate.expect("a CA certificate")).expect("a usable CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn verified_tls_from_clients_through_the_manager_to_the_engines() {
    let ca = TestCa::new("swarm");
    let engines = tls_engines(&ca).await;
    let web = engines[0].add_container("web", "nginx", "running", json!([]));
    let manager_flags = ca.issue("manager").verify_flags();
    let c = Cluster::start(engines, &flags(&manager_flags)).await;
    let client_files = ca.issue("client");
    let good = client_files.verifying().client_config();

    let ping = tls_get(c.addr, "/_ping", good.clone()).await.expect("ping over TLS");
    assert_eq!((ping.status, ping.text().as_str()), (StatusCode::OK, "OK"));
    let info = tls_get(c.addr, "/info", good.clone()).await.expect("info over TLS");
    for engine in &c.engines {
        assert_eq!(node_status(&info, &engine.addr(), "Status").as_deref(), Some("Healthy"), "{info:?}");
        assert_eq!(node_status(&info, &engine.addr(), "Error").as_deref(), Some("(none)"));
    }
    let list = tls_get(c.addr, "/containers/json", good.clone()).await.expect("list over TLS").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["Id"], web.as_str());
    // An inspect is relayed to the engine, over TLS.
    let inspect = tls_get(c.addr, "/containers/web/json", good.clone()).await.expect("inspect over TLS");
    assert_eq!((inspect.status, inspect.json()["Id"].as_str()), (StatusCode::OK, Some(web.as_str())));
    let relayed = c.engine("tls-01").requests_to(http::Method::GET, &format!("/containers/{web}/json"));
    assert!(!relayed.is_empty(), "the inspect went to the engine");

    // A hijacked attach is relayed over TLS on both sides, half-close included.
    let (status, output) =
        client::tls_hijack(c.addr, "/containers/web/attach?stream=1&stdin=1&stdout=1", good.clone(), b"hello over TLS")
            .await
            .expect("attach over TLS");
    assert_eq!(
        (status, String::from_utf8_lossy(&output).as_ref()),
        (StatusCode::SWITCHING_PROTOCOLS, "echo:hello over TLS")
    );

    let refused = tls_get(c.addr, "/_ping", anonymous_client(&client_files)).await;
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    let other_ca = TestCa::new("other");
    let intruder = other_ca.issue("intruder");
    let intruder = intruder.load(Some(client_files.ca.clone()));
    let refused = tls_get(c.addr, "/_ping", intruder.client_config()).await;
    assert!(refused.is_err(), "a client certified by another CA is refused: {refused:?}");
    let again = tls_get(c.addr, "/_ping", good).await.expect("a good client after the refusals");
    assert_eq!(again.status, StatusCode::OK);

    let plain = client::raw_exchange(c.addr, b"GET /_ping HTTP/1.1\r\nHost: swarm\r\n\r\n").await;
    assert_eq!(String::from_utf8_lossy(&plain), String::from_utf8_lossy(PLAIN_HTTP_ANSWER));
    let not_http = client::raw_exchange(c.addr, b"hello, is TLS there?\r\n").await;
    // Anything else fails the handshake: at most a TLS alert, never an HTTP answer.
    assert!(!not_http.starts_with(b"HTTP/"), "anything else gets no HTTP answer: {not_http:?}");
}

#[tokio::test]
async fn engines_certified_by_another_ca_are_never_healthy() {
    let engine_ca = TestCa::new("engines");
    let engines = tls_engines(&engine_ca).await;
    let swarm_ca = TestCa::new("swarm");
    let manager_files = swarm_ca.issue("manager");
    let discovery = manager::discovery(&engines.iter().collect::<Vec<_>>());
    let mut manager_flags = manager_files.verify_flags();
    manager_flags.extend(["--engine-refresh-min-interval=1s".into(), "--engine-refresh-max-interval=1s".into()]);
    manager_flags.push(discovery);
    let manager = ManagerProcess::start(manager::bind(), &flags(&manager_flags), None, None).await;
    let good = manager_files.verifying().client_config();

    let addr = engines[0].addr();
    wait_until("the engine's TLS error shows in info", || {
        let (good, addr) = (good.clone(), addr.clone());
        async move {
            let Ok(info) = tls_get(manager.addr, "/info", good).await else { return false };
            node_status(&info, &addr, "Error").is_some_and(|error| error.contains("certificate"))
        }
    })
    .await;
    let info = tls_get(manager.addr, "/info", good).await.expect("info over TLS");
    assert_ne!(node_status(&info, &addr, "Status").as_deref(), Some("Healthy"), "{info:?}");
    for engine in &engines {
        assert!(engine.requests().is_empty(), "no request reaches an engine the manager cannot trust");
    }
}

#[tokio::test]
async fn tls_without_verification_accepts_any_engine_certificate() {
    let engine_ca = TestCa::new("engines");
    // An engine run with --tls alone: it asks for no client certificate.
    let engine_tls = engine_ca.issue("engine").accepting_anyone();
    let engines = vec![FakeEngine::start_tls("tls-only", &[], engine_tls).await];
    let swarm_ca = TestCa::new("swarm");
    let manager_files = swarm_ca.issue("manager");
    let manager_flags = vec![
        "--tls".to_string(),
        format!("--tlscert={}", manager_files.cert.display()),
        format!("--tlskey={}", manager_files.key.display()),
    ];
    let c = Cluster::start(engines, &flags(&manager_flags)).await;
    let client = swarm_ca.issue("client").verifying().client_config();

    let ping = tls_get(c.addr, "/_ping", client.clone()).await.expect("ping over TLS");
    assert_eq!(ping.status, StatusCode::OK);
    let info = tls_get(c.addr, "/info", client).await.expect("info over TLS");
    assert_eq!(node_status(&info, &c.engines[0].addr(), "Status").as_deref(), Some("Healthy"), "{info:?}");
}

fn assert_fatal(args: &[&str], message: &str) {
    let (code, stderr) = swarm_exit(args);
    assert_eq!(code, Some(1), "swarm {args:?}: exit status; stderr:\n{stderr}");
    assert!(
        stderr.ends_with(&format!(" level=fatal msg=\"{message}\"\n")),
        "swarm {args:?}: expected the fatal message {message:?}, got:\n{stderr}"
    );
}

#[test]
fn the_originals_tls_flag_messages() {
    let ca = TestCa::new("flags");
    let files = ca.issue("manager");
    let (cert, key, ca_file) =
        (files.cert.display().to_string(), files.key.display().to_string(), files.ca.display().to_string());
    let nodes = "nodes://127.0.0.1:1";
    let manage = |extra: &[&str]| -> Vec<String> {
        ["manage", "-H", "tcp://127.0.0.1:0"].iter().chain(extra).chain(&[nodes]).map(|s| s.to_string()).collect()
    };
    let fatal = |extra: &[&str], message: &str| {
        let args = manage(extra);
        assert_fatal(&args.iter().map(String::as_str).collect::<Vec<_>>(), message);
    };
    fatal(&["--tls"], "--tlscert and --tlskey must be provided when using --tls");
    fatal(&["--tlsverify", "--tlscert", &cert], "--tlscert and --tlskey must be provided when using --tls");
    fatal(
        &["--tlsverify", "--tlscert", &cert, "--tlskey", &key],
        "--tlscacert must be provided when using --tlsverify",
    );
    fatal(&["--tlscert", &cert], "--tlscert, --tlskey and --tlscacert require the use of either --tls or --tlsverify");
    fatal(
        &["--tlscacert", &ca_file],
        "--tlscert, --tlskey and --tlscacert require the use of either --tls or --tlsverify",
    );
    let missing = "/nonexistent/cert.pem";
    let (code, stderr) = swarm_exit(
        &manage(&["--tls", "--tlscert", missing, "--tlskey", &key]).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("Couldn't load X509 key pair ({missing}, {key}): ")), "{stderr}");
    assert!(stderr.contains(". Key encrypted?"), "{stderr}");
    // A key that is not the certificate's.
    let other = ca.issue("other");
    let (code, stderr) = swarm_exit(
        &manage(&["--tls", "--tlscert", &cert, "--tlskey", &other.key.display().to_string()])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Couldn't load X509 key pair ("), "{stderr}");
    let (code, stderr) = swarm_exit(
        &manage(&["--tlsverify", "--tlscacert", missing, "--tlscert", &cert, "--tlskey", &key])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Couldn't read CA certificate: "), "{stderr}");
}

#[tokio::test]
async fn a_replica_relays_to_the_primary_over_verified_tls() {
    let ca = TestCa::new("swarm");
    let store = MemoryLockStore::default();
    let mut members = Vec::new();
    for name in ["a", "b"] {
        let engine =
            FakeEngine::start_tls(&format!("engine-{name}"), &[], ca.issue(&format!("engine-{name}")).verifying())
                .await;
        engine.add_container(&format!("from-{name}"), "nginx", "running", json!([]));
        let listener = manager::bind();
        let addr = listener.local_addr().expect("address").to_string();
        let config = ElectionConfig { key: "tls/docker/swarm/leader".into(), advertise: addr.clone(), ttl: TTL };
        let (election, leadership) = Election::new(Arc::new(store.clone()), config, |_| {});
        let (stop, stopped) = watch::channel(false);
        let mut manager_flags = ca.issue(&format!("manager-{name}")).verify_flags();
        manager_flags.push(manager::discovery(&[&engine]));
        let manager = ManagerProcess::start(
            listener,
            &flags(&manager_flags),
            Some(leadership.clone()),
            Some(Box::pin(election.run(stopped))),
        )
        .await;
        engine.wait_for_request(http::Method::GET, "/events").await;
        // The first one is primary before the second one starts.
        wait_until("an election result", || async { leadership.role() != Role::Replica { primary: None } }).await;
        members.push((manager, addr, leadership, engine, stop));
    }
    let (primary, replica) = (&members[0], &members[1]);
    assert_eq!(primary.2.role(), Role::Primary);
    wait_until("b is a replica of a", || async {
        replica.2.role() == Role::Replica { primary: Some(primary.1.clone()) }
    })
    .await;
    let client = ca.issue("client").verifying().client_config();

    let list = tls_get(replica.0.addr, "/containers/json?all=1", client.clone()).await.expect("list over TLS").json();
    let names: Vec<&str> = list.as_array().expect("a list").iter().filter_map(|c| c["Names"][0].as_str()).collect();
    assert_eq!(names, ["/engine-a/from-a"], "answered by the primary, reached over TLS");
    let inspect = tls_get(replica.0.addr, "/containers/from-a/json", client).await.expect("inspect over TLS");
    assert_eq!((inspect.status, inspect.json()["Node"]["Name"].as_str()), (StatusCode::OK, Some("engine-a")));
}

/// Replaces the manager's certificate files in `live` with `files`, the CA
/// file holding `cas` (a bundle). Each file is written aside and renamed
/// into place, as certificate tools do.
fn install(live: &std::path::Path, files: &CertFiles, cas: &[&std::path::Path]) {
    let bundle: String = cas.iter().map(|ca| std::fs::read_to_string(ca).expect("read a CA")).collect();
    for (name, content) in [
        ("ca.pem", bundle),
        ("cert.pem", std::fs::read_to_string(&files.cert).expect("read a certificate")),
        ("key.pem", std::fs::read_to_string(&files.key).expect("read a key")),
    ] {
        let aside = live.join(format!(".{name}.new"));
        std::fs::write(&aside, content).expect("write a certificate file");
        std::fs::rename(&aside, live.join(name)).expect("put a certificate file in place");
    }
}

#[tokio::test]
async fn certificates_rotate_without_a_restart_and_a_broken_set_is_refused() {
    let old_ca = TestCa::new("old");
    let new_ca = TestCa::new("new");
    let engines = vec![FakeEngine::start_tls("rotating", &[], old_ca.issue("engine").accepting_anyone()).await];
    let web = engines[0].add_container("web", "nginx", "running", json!([]));
    let live = tempfile::tempdir().expect("a directory for the live certificates");
    install(live.path(), &old_ca.issue("manager"), &[&old_ca.ca_file()]);
    let live_flags = vec![
        "--tlsverify".to_string(),
        format!("--tlscacert={}", live.path().join("ca.pem").display()),
        format!("--tlscert={}", live.path().join("cert.pem").display()),
        format!("--tlskey={}", live.path().join("key.pem").display()),
    ];
    let c = Cluster::start(engines, &flags(&live_flags)).await;
    let old_client = old_ca.issue("client").verifying().client_config();
    let new_client = new_ca.issue("client").verifying().client_config();
    let mut kept_alive = TlsSession::open(c.addr, old_client.clone()).await.expect("a connection before the rotation");
    assert_eq!(kept_alive.get("/_ping").await.status, StatusCode::OK);
    assert!(tls_get(c.addr, "/_ping", new_client.clone()).await.is_err(), "the new CA is not trusted yet");

    // The new pair comes from a new CA; the CA bundle keeps the old CA so
    // that the engines' certificates still verify.
    install(live.path(), &new_ca.issue("manager"), &[&new_ca.ca_file(), &old_ca.ca_file()]);
    wait_until("new connections get the new certificate", || async {
        tls_get(c.addr, "/_ping", new_client.clone()).await.is_ok()
    })
    .await;
    let refused = tls_get(c.addr, "/_ping", anonymous_client(&old_ca.issue("old-only"))).await;
    assert!(refused.is_err(), "a client that trusts only the old CA no longer verifies the manager: {refused:?}");
    let inspect = tls_get(c.addr, "/containers/web/json", new_client.clone()).await.expect("inspect after rotation");
    assert_eq!(inspect.json()["Id"], web.as_str());
    // The connection made before the rotation goes on with its certificate.
    assert_eq!(kept_alive.get("/containers/web/json").await.json()["Id"], web.as_str());

    // A key that does not match its certificate is refused; the set in use stays.
    let mismatched = CertFiles { key: old_ca.issue("stranger").key, ..new_ca.issue("manager-2") };
    install(live.path(), &mismatched, &[&new_ca.ca_file()]);
    tokio::time::sleep(swarm::cert_reload::POLL_INTERVAL + Duration::from_millis(500)).await;
    let ping = tls_get(c.addr, "/_ping", new_client).await.expect("the previous set is still served");
    assert_eq!(ping.status, StatusCode::OK);
}
