//! What every store does with persistent keys (get, put, compare-and-swap,
//! delete, versioned listing), written once; re-exported by [`super`] so
//! [`contract_tests!`](crate::contract_tests) runs these items like the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Conflict, Kind, KvError, Versioned};

use crate::{connect, keys, start_and_connect, Backend};

/// A value that is not UTF-8 (and holds a NUL byte).
const BINARY: &[u8] = &[0xff, 0x00, 0xfe, 0x80, b'\n'];

fn conflict(key: &str, expected: Option<u64>) -> Conflict {
    Conflict { key: key.into(), expected }
}

fn versioned(value: &[u8], version: u64) -> Option<Versioned> {
    Some(Versioned { value: value.to_vec(), version })
}

/// A missing key reads as `None` and deletes as `false`; conditional
/// operations on it conflict and write nothing; an empty key is refused.
pub async fn missing_keys_read_as_none_and_conflict<S: Backend>() {
    let (_server, store) = start_and_connect::<S>().await;
    const KEY: &str = "svc/missing";
    assert_eq!(store.get(KEY).await.unwrap(), None);
    assert_eq!(store.get("never/was/a/dir").await.unwrap(), None);
    assert!(!store.delete(KEY).await.unwrap(), "deleting a missing key");
    assert_eq!(store.delete_if(KEY, 1).await.unwrap(), Err(conflict(KEY, Some(1))));
    assert_eq!(store.put_if(KEY, b"x", Some(1)).await.unwrap(), Err(conflict(KEY, Some(1))));
    // 0 is never a version, even of a missing key (Consul and etcd would
    // take it for "absent").
    assert_eq!(store.put_if(KEY, b"x", Some(0)).await.unwrap(), Err(conflict(KEY, Some(0))));
    assert_eq!(store.get(KEY).await.unwrap(), None, "a conflict writes nothing");
    assert!(store.list_versioned("svc").await.unwrap().is_empty());

    for key in ["", "/", "//"] {
        assert!(matches!(store.get(key).await, Err(KvError::InvalidKey { .. })), "get {key:?}");
        assert!(matches!(store.put(key, b"x").await, Err(KvError::InvalidKey { .. })), "put {key:?}");
        assert!(matches!(store.delete(key).await, Err(KvError::InvalidKey { .. })), "delete {key:?}");
    }
}

/// `put` then `get` gives back the same bytes (JSON, binary, empty) and the
/// version `put` returned; every put that changes the value makes a greater
/// version, and one that does not a greater one too except on Consul, which
/// skips it (the version stays); slashes at a key's ends do not matter;
/// nested keys work.
pub async fn put_and_get_round_trip_bytes_and_versions_grow<S: Backend>() {
    let (_server, store) = start_and_connect::<S>().await;
    const KEY: &str = "svc/web";
    let mut last = 0;
    let mut previous: Option<&[u8]> = None;
    for value in [br#"{"Name":"web","Replicas":3}"#.as_slice(), BINARY, b"", b"", BINARY] {
        let version = store.put(KEY, value).await.unwrap();
        if previous == Some(value) && S::KIND == Kind::Consul {
            assert_eq!(version, last, "Consul keeps the version of an unchanged value");
        } else {
            assert!(version > last, "version {version} after {last}");
        }
        assert_eq!(store.get(KEY).await.unwrap(), versioned(value, version));
        (last, previous) = (version, Some(value));
    }
    assert_eq!(store.get(&format!("/{KEY}/")).await.unwrap(), versioned(BINARY, last), "same key");

    const DEEP: &str = "svc/nested/deeper/still/key";
    let deep = store.put(DEEP, b"deep").await.unwrap();
    assert_eq!(store.get(DEEP).await.unwrap(), versioned(b"deep", deep));
    assert_eq!(store.get(KEY).await.unwrap(), versioned(BINARY, last), "other keys unchanged");
    // A key that looks like an engine registration's.
    let engine = store.put("svc/at/10.0.0.1:2375", b"10.0.0.1:2375").await.unwrap();
    assert_eq!(store.get("svc/at/10.0.0.1:2375").await.unwrap(), versioned(b"10.0.0.1:2375", engine));

    assert!(store.delete(DEEP).await.unwrap());
    assert_eq!(store.get(DEEP).await.unwrap(), None);
    assert!(!store.delete(DEEP).await.unwrap(), "deleted already");
    assert_eq!(store.get(KEY).await.unwrap(), versioned(BINARY, last), "only that key is deleted");
}

/// `put_if` and `delete_if` act only on the expected version (or absence),
/// and a conflict changes nothing; a key deleted and created again does not
/// get an old version back.
pub async fn put_if_and_delete_if_compare_versions<S: Backend>() {
    let (_server, store) = start_and_connect::<S>().await;
    const KEY: &str = "cas/a";
    let v1 = store.put_if(KEY, b"one", None).await.unwrap().expect("created: it was absent");
    assert_eq!(store.put_if(KEY, b"two", None).await.unwrap(), Err(conflict(KEY, None)), "it exists");
    assert_eq!(store.get(KEY).await.unwrap(), versioned(b"one", v1), "unchanged");

    let v2 = store.put_if(KEY, b"two", Some(v1)).await.unwrap().expect("at the expected version");
    assert!(v2 > v1);
    assert_eq!(store.put_if(KEY, b"stale", Some(v1)).await.unwrap(), Err(conflict(KEY, Some(v1))));
    assert_eq!(store.get(KEY).await.unwrap(), versioned(b"two", v2), "unchanged by a stale write");

    // A plain put moves the version on too.
    let v3 = store.put(KEY, b"three").await.unwrap();
    assert_eq!(store.put_if(KEY, b"stale", Some(v2)).await.unwrap(), Err(conflict(KEY, Some(v2))));
    assert_eq!(store.delete_if(KEY, v2).await.unwrap(), Err(conflict(KEY, Some(v2))), "stale delete");
    assert_eq!(store.get(KEY).await.unwrap(), versioned(b"three", v3), "unchanged by a stale delete");

    assert_eq!(store.delete_if(KEY, v3).await.unwrap(), Ok(()));
    assert_eq!(store.get(KEY).await.unwrap(), None);
    assert_eq!(store.delete_if(KEY, v3).await.unwrap(), Err(conflict(KEY, Some(v3))), "deleted already");

    // Created again: the old versions are stale for good.
    let v4 = store.put_if(KEY, b"again", None).await.unwrap().expect("absent again");
    assert!(v4 > v3, "version {v4} after {v3}");
    for old in [v1, v2, v3] {
        assert_eq!(store.put_if(KEY, b"stale", Some(old)).await.unwrap(), Err(conflict(KEY, Some(old))));
        assert_eq!(store.delete_if(KEY, old).await.unwrap(), Err(conflict(KEY, Some(old))));
    }
    assert_eq!(store.get(KEY).await.unwrap(), versioned(b"again", v4));
    // Slashes at the ends name the same key for the conditions too.
    let v5 = store.put_if(&format!("/{KEY}/"), b"five", Some(v4)).await.unwrap().expect("same key");
    assert_eq!(store.delete_if(&format!("/{KEY}"), v5).await.unwrap(), Ok(()));
    assert_eq!(store.get(KEY).await.unwrap(), None);
}

/// Two clients racing with the same condition: exactly one wins each
/// round, for a create, an update and a delete.
pub async fn racing_conditional_writers_get_one_win<S: Backend>() {
    let server = S::start();
    let (a, b) = (connect(&server).await, connect(&server).await);
    const KEY: &str = "race/doc";
    for round in 0..5 {
        let (ca, cb) = tokio::join!(a.put_if(KEY, b"a", None), b.put_if(KEY, b"b", None));
        let (winner, created) = one_winner(round, "create", ca.unwrap(), cb.unwrap());
        assert_eq!(a.get(KEY).await.unwrap(), versioned(winner, created));

        let (ua, ub) = tokio::join!(a.put_if(KEY, b"a2", Some(created)), b.put_if(KEY, b"b2", Some(created)));
        let (winner, updated) = one_winner(round, "update", ua.unwrap(), ub.unwrap());
        assert_eq!(b.get(KEY).await.unwrap().map(|v| v.value), Some([winner, b"2"].concat()));
        assert!(updated > created);

        let (da, db) = tokio::join!(a.delete_if(KEY, updated), b.delete_if(KEY, updated));
        one_winner(round, "delete", da.unwrap().map(|()| 0), db.unwrap().map(|()| 0));
        assert_eq!(a.get(KEY).await.unwrap(), None);
    }
}

/// The winner (`a` or `b`) of a race and what it got; panics unless
/// exactly one of them won.
fn one_winner<T: std::fmt::Debug>(
    round: usize,
    what: &str,
    a: Result<T, Conflict>,
    b: Result<T, Conflict>,
) -> (&'static [u8], T) {
    match (a, b) {
        (Ok(got), Err(_)) => (b"a", got),
        (Err(_), Ok(got)) => (b"b", got),
        other => panic!("round {round}, {what}: exactly one must win, got {other:?}"),
    }
}

/// A directory lists the keys put directly below it, with their values and
/// versions, in `list_versioned` and `list` alike; keys further down only
/// in their own directory (ZooKeeper also lists the parent znode it
/// created, with an empty value). A pending `wait_dir` sees a put.
pub async fn listing_shows_put_keys_with_versions<S: Backend>() {
    let (_server, store) = start_and_connect::<S>().await;
    let a = store.put("svc/a", b"{\"a\":1}").await.unwrap();
    let b = store.put("svc/b", BINARY).await.unwrap();
    let deep = store.put("svc/sub/x", b"x").await.unwrap();
    let mut expected = vec![("svc/a".to_string(), versioned(b"{\"a\":1}", a)), ("svc/b".into(), versioned(BINARY, b))];
    if S::KIND == Kind::Zk {
        // The znode `put` created as the parent of `svc/sub/x`.
        let sub = store.get("svc/sub").await.unwrap().expect("ZooKeeper created the parent");
        assert_eq!(sub.value, b"", "a created parent is empty");
        expected.push(("svc/sub".into(), Some(sub)));
    } else {
        assert_eq!(store.get("svc/sub").await.unwrap(), None, "no directories in etcd or Consul");
    }
    let listed: Vec<(String, Option<Versioned>)> =
        store.list_versioned("svc").await.unwrap().into_iter().map(|(k, v)| (k, Some(v))).collect();
    assert_eq!(listed, expected);
    let plain = store.list("/svc/").await.unwrap();
    assert_eq!(keys(&plain), expected.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
    assert_eq!(plain[1].value, BINARY);
    assert_eq!(
        store.list_versioned("svc/sub").await.unwrap(),
        vec![("svc/sub/x".into(), Versioned { value: b"x".to_vec(), version: deep })]
    );
    assert!(store.list_versioned("elsewhere").await.unwrap().is_empty());

    // A put shows up in a pending wait_dir, a delete in the next listing.
    let store = Arc::new(store);
    let known = store.list("svc").await.unwrap();
    let waiter = {
        let (store, known) = (store.clone(), known.clone());
        tokio::spawn(async move { store.wait_dir("svc", Some(&known), Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch is in place
    let put = Instant::now();
    store.put("svc/c", b"c").await.unwrap();
    let seen = waiter.await.unwrap().unwrap();
    eprintln!("{}: wait_dir saw a put after {:?}", S::NAME, put.elapsed());
    assert!(keys(&seen).contains(&"svc/c"), "{seen:?}");
    assert!(store.delete("svc/a").await.unwrap());
    let after: Vec<String> = store.list_versioned("svc").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert!(!after.contains(&"svc/a".to_string()) && after.contains(&"svc/c".to_string()), "{after:?}");
}

/// A value of [`Backend::MAX_VALUE`] bytes is stored whole, and three of
/// them list in one go; 200 KiB more, or 2 MiB, is [`KvError::TooLarge`],
/// writes nothing and leaves the client working.
pub async fn big_values_fit_and_too_large_ones_are_refused_clearly<S: Backend>() {
    let (_server, store) = start_and_connect::<S>().await;
    let big: Vec<u8> = (0..S::MAX_VALUE).map(|i| (i % 251) as u8).collect();
    let mut versions = Vec::new();
    for name in ["a", "b", "c"] {
        let start = Instant::now();
        versions.push(store.put(&format!("big/{name}"), &big).await.unwrap());
        eprintln!("{}: put of {} bytes took {:?}", S::NAME, big.len(), start.elapsed());
    }
    assert_eq!(store.get("big/a").await.unwrap(), versioned(&big, versions[0]));
    let listed = store.list_versioned("big").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().zip(&versions).all(|((_, v), version)| v.value == big && v.version == *version));

    for size in [S::MAX_VALUE + 200 * 1024, 2 << 20] {
        let huge = vec![b'x'; size];
        for (what, result) in [
            ("put", store.put("big/huge", &huge).await),
            ("put_if", store.put_if("big/huge", &huge, None).await.map(|r| r.unwrap_or_default())),
            (
                "put_if at a version",
                store.put_if("big/a", &huge, Some(versions[0])).await.map(|r| r.unwrap_or_default()),
            ),
        ] {
            match result {
                Err(KvError::TooLarge { store: name, key, size, reason }) => {
                    eprintln!("{}: {what} of {size} bytes: {reason}", S::NAME);
                    assert_eq!((name, size), (S::NAME, huge.len()), "{what}");
                    assert!(key.starts_with("big/"), "{what}: {key}");
                }
                other => panic!("{what} of {size} bytes: expected TooLarge, got {other:?}"),
            }
        }
    }
    assert_eq!(store.get("big/huge").await.unwrap(), None, "nothing written");
    assert_eq!(store.get("big/a").await.unwrap(), versioned(&big, versions[0]), "unchanged");
    let after = store.put("big/after", b"small").await.expect("the client still works");
    assert_eq!(store.get("big/after").await.unwrap(), versioned(b"small", after));
}

/// Persistent keys (binary, empty, nested) come back from a restart of a
/// store that keeps its data (etcd, ZooKeeper) with the same versions, and
/// those versions still work as conditions; while the store is down, the
/// calls fail as [`KvError::Unreachable`].
pub async fn persistent_keys_survive_a_restart<S: Backend>() {
    let (mut server, store) = start_and_connect::<S>().await;
    let mut written = Vec::new();
    for (key, value) in [("keep/a", b"{\"a\":1}".as_slice()), ("keep/b", BINARY), ("keep/c", b""), ("keep/d/e", b"e")] {
        written.push((key, store.put(key, value).await.unwrap(), value));
    }

    server.stop();
    let start = Instant::now();
    let err = store.get("keep/a").await.unwrap_err();
    eprintln!("{} down: get -> {err} after {:?}", S::NAME, start.elapsed());
    assert!(matches!(&err, KvError::Unreachable { store, .. } if *store == S::NAME), "{err:?}");
    let err = store.put("keep/a", b"lost").await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());

    server.restart();
    let back = Instant::now();
    let first = loop {
        match store.get("keep/a").await {
            Ok(got) => break got,
            Err(e) if back.elapsed() < Duration::from_secs(20) => {
                eprintln!("{} back: get -> {e}", S::NAME);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store does not answer after its restart: {e}"),
        }
    };
    eprintln!("{} back: read after {:?}", S::NAME, back.elapsed());
    assert_eq!(first, versioned(written[0].2, written[0].1));
    for (key, version, value) in &written {
        assert_eq!(store.get(key).await.unwrap(), versioned(value, *version), "{key}");
    }
    let (key, version, _) = written[1];
    let newer = store.put_if(key, b"after", Some(version)).await.unwrap().expect("the old version is current");
    assert!(newer > version);
    assert_eq!(store.delete_if(written[0].0, written[0].1).await.unwrap(), Ok(()));
}
