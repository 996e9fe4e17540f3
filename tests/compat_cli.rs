//! The `swarm` command line as users' scripts written for the original type
//! it: Go's flag grammar, negative durations, the original's messages.
//! Needs no root and no engines; nothing is contacted (the discovery is a
//! `nodes://` list or a store on a port nobody listens on).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use swarm_testkit::manager::{swarm_exit, SwarmProcess};
use swarm_testkit::process::free_port;

/// Asserts that `swarm args` exits with 1 after logging exactly `message`
/// as its one fatal line (stderr is a pipe: logrus's key=value form).
fn assert_fatal(args: &[&str], message: &str) {
    let (code, stderr) = swarm_exit(args);
    assert_eq!(code, Some(1), "swarm {args:?}: exit status; stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "swarm {args:?}: one line:\n{stderr}");
    assert!(
        stderr.starts_with("time=\"") && stderr.ends_with(&format!(" level=fatal msg=\"{message}\"\n")),
        "swarm {args:?}: expected the fatal message {message:?}, got:\n{stderr}"
    );
}

/// A discovery store nobody answers at.
fn dead_etcd() -> String {
    format!("etcd://127.0.0.1:{}", free_port())
}

/// A static list whose engine refuses connections.
fn dead_nodes() -> String {
    format!("nodes://127.0.0.1:{}", free_port())
}

/// The body of `GET path` on the manager at `addr`.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the manager");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

#[test]
fn go_style_flags_before_and_after_the_command_start_a_manager() {
    let listen = format!("127.0.0.1:{}", free_port());
    let nodes = dead_nodes();
    let mut swarm = SwarmProcess::start(&[
        "-l",
        "debug",
        "-experimental",
        "manage",
        "-H",
        &listen,
        "--heartbeat=1s",
        "-cluster-opt",
        "swarm.createretry=1",
        "--engine-refresh-min-interval",
        "30s",
        "-engine-refresh-max-interval",
        "40s",
        "-strategy=binpack",
        "-filter",
        "health",
        "-engine-failure-retry=2",
        "-addr",
        "127.0.0.1:4000",
        "-debug",
        &nodes,
    ]);
    swarm.wait_for_log("Listening for HTTP", Duration::from_secs(20));
    let info = get(&listen, "/info");
    assert!(info.starts_with("HTTP/1.1 200"), "{info}");
    assert!(info.contains("binpack"), "-strategy=binpack took effect: {info}");
    assert!(!info.contains("whitelist"), "-filter health replaced the default filters: {info}");
    swarm.signal("TERM");
}

#[test]
fn a_single_dash_long_flag_is_never_read_as_short_ones() {
    let nodes = dead_nodes();
    // `-cluster-opt` is not `-c luster-opt` (--cluster-driver).
    assert_fatal(
        &["manage", "-cluster-opt", "swarm.createretry=-1", &nodes],
        "swarm.createretry can not be negative, -1 is invalid",
    );
    assert_fatal(
        &["manage", "-cluster-opt=swarm.overcommit=-2", &nodes],
        "swarm.overcommit should be larger than -1, -2.000000 is invalid",
    );
    // `-experimental` is not `-e ...`, also after the command.
    assert_fatal(&["manage", "-experimental", "--engine-failure-retry", "0", &nodes], "invalid failure retry count");
    // A one-letter flag keeps its short meaning.
    let (code, stderr) = swarm_exit(&["manage", "-c", "mesos", &nodes]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unsupported cluster driver"), "{stderr}");
}

#[test]
fn negative_and_zero_durations_reach_validation() {
    let etcd = dead_etcd();
    let nodes = dead_nodes();
    for timeout in [&["--timeout", "-10s"][..], &["--timeout=-10s"], &["-timeout", "0s"], &["--timeout", "0"]] {
        let mut args = vec!["list"];
        args.extend(timeout);
        args.push(&etcd);
        assert_fatal(&args, "--timeout should be a positive number");
    }
    // A positive one is accepted (the static list is printed without contacting anything).
    let (code, _) = swarm_exit(&["list", "-timeout", "1s", &nodes]);
    assert_eq!(code, Some(0));

    let advertise = "--advertise=127.0.0.1:2376";
    assert_fatal(
        &["join", "--heartbeat=1s", "--ttl=10s", "--delay=-30s", advertise, &etcd],
        "--delay should not be a negative number",
    );
    assert_fatal(
        &["join", "--heartbeat=-10s", "--ttl=10s", "--delay=1s", advertise, &etcd],
        "--heartbeat should be at least one second",
    );
    assert_fatal(
        &["join", "--heartbeat=1s", "--ttl=-10s", "--delay=1s", advertise, &etcd],
        "--ttl must be strictly superior to the heartbeat value",
    );
    assert_fatal(
        &["join", "-heartbeat", "2s", "-ttl", "1s", "-advertise", "127.0.0.1:2376", &etcd],
        "--ttl must be strictly superior to the heartbeat value",
    );

    for min in ["-10s", "0s"] {
        assert_fatal(
            &["manage", "--engine-refresh-min-interval", min, &nodes],
            "min refresh interval should be a positive number",
        );
    }
    for (min, max) in [("30s", "0s"), ("30s", "-30s"), ("30s", "20s")] {
        assert_fatal(
            &["manage", "--engine-refresh-min-interval", min, "-engine-refresh-max-interval", max, &nodes],
            "max refresh interval cannot be less than min refresh interval",
        );
    }
    assert_fatal(&["manage", "--heartbeat=-10s", &nodes], "--heartbeat should be at least one second");
    assert_fatal(
        &["manage", "--replication", "--replication-ttl", "-1s", "--advertise", "127.0.0.1:4000", &etcd],
        "--replication-ttl should be a positive number",
    );
    assert_fatal(
        &["manage", "-replication", "-replication-ttl=0s", "-advertise=127.0.0.1:4000", &etcd],
        "--replication-ttl should be a positive number",
    );
}

#[test]
fn the_originals_messages() {
    let etcd = dead_etcd();
    let nodes = dead_nodes();
    assert_fatal(&["join", &etcd], "missing mandatory --advertise flag");
    assert_fatal(&["join", "--advertise=", &etcd], "missing mandatory --advertise flag");
    assert_fatal(&["join", "-advertise", "", &etcd], "missing mandatory --advertise flag");
    for bad in ["127.0.0.1", "127.0.0.1ac:sh25", "127.0.0.1:0", "127.0.0.1:65536"] {
        assert_fatal(
            &["join", "--advertise", bad, &etcd],
            "--advertise should be of the form ip:port or hostname:port",
        );
    }
    assert_fatal(&["manage", "--engine-failure-retry", "0", &nodes], "invalid failure retry count");
    assert_fatal(&["manage", "--engine-failure-retry=-1", &nodes], "invalid failure retry count");
    assert_fatal(
        &["manage", "--replication", "--advertise", "nope", &etcd],
        "--advertise should be of the form ip:port or hostname:port",
    );
    assert_fatal(
        &["manage", "--replication", "--advertise=", &etcd],
        "--advertise address must be provided when using --leader-election",
    );
}

#[test]
fn create_says_the_token_service_is_gone() {
    for command in ["create", "c"] {
        let (code, stderr) = swarm_exit(&[command]);
        assert_eq!(code, Some(1), "swarm {command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "swarm {command}: one line:\n{stderr}");
        assert!(stderr.contains(" level=fatal msg=\"swarm create is gone: "), "{stderr}");
        assert!(stderr.contains("token"), "{stderr}");
        for alternative in ["consul://", "etcd://", "zk://", "file://", "nodes://", "static list"] {
            assert!(stderr.contains(alternative), "swarm {command} names {alternative}: {stderr}");
        }
    }
}
