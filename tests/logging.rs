//! The real `swarm` binary's log lines when stderr is a file, as log
//! shippers and operators' watchers read them. Needs no root, no engines.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

/// A `swarm` process with stdout and stderr to `log`, killed when dropped.
struct Swarm {
    child: Child,
}

impl Swarm {
    fn start(args: &[&str], log: &Path) -> Swarm {
        let file = File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("cannot start swarm");
        Swarm { child }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manager on a free port whose one engine address refuses connections,
/// so that it logs lines with fields (listening, and a failed validation).
fn manager(global_before: &[&str], global_after: &[&str], log: &Path) -> Swarm {
    let listen = format!("127.0.0.1:{}", free_port());
    let engine = format!("nodes://127.0.0.1:{}", free_port());
    let mut args: Vec<&str> = global_before.to_vec();
    args.extend(["manage", "-H", &listen]);
    args.extend(global_after);
    args.push(&engine);
    Swarm::start(&args, log)
}

/// Waits until the log holds every one of `wanted`; returns its text.
fn wait_for(log: &Path, wanted: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "waited for {wanted:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LISTENING: &str = "Listening for HTTP";
const VALIDATION_FAILED: &str = "Failed to validate pending node";

#[test]
fn to_a_file_lines_are_logrus_key_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("manager.log");
    let _swarm = manager(&[], &[], &log);
    let text = wait_for(&log, &[LISTENING, VALIDATION_FAILED]);
    let line_form = regex::Regex::new(
        r#"^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)" level=(debug|info|warning|error) msg=("([^"\\]|\\.)*"|[\w./@^+-]+)( [\w.]+=("([^"\\]|\\.)*"|[\w./@^+-]*))*$"#,
    )
    .expect("a valid pattern");
    for line in text.lines() {
        assert!(line_form.is_match(line), "not in logrus's key=value form: {line:?}\n{text}");
    }
    assert!(!text.contains("INFO[") && !text.contains('\x1b'), "no terminal form in a file:\n{text}");
    let listening = text.lines().find(|l| l.contains(LISTENING)).unwrap_or_default();
    assert!(
        listening.contains(r#" level=info msg="Listening for HTTP" addr="127.0.0.1:"#)
            && listening.ends_with(" proto=tcp"),
        "fields sorted and quoted as logrus does: {listening}"
    );
    let failed = text.lines().find(|l| l.contains(VALIDATION_FAILED)).unwrap_or_default();
    assert!(failed.contains(" level=error msg=\"Failed to validate pending node: "), "{failed}");
}

#[test]
fn json_lines_parse_and_the_flag_goes_after_the_command_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("manager.log");
    let _swarm = manager(&[], &["--log-format", "json"], &log);
    let text = wait_for(&log, &[LISTENING, VALIDATION_FAILED]);
    for line in text.lines() {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}\n{text}"));
        for key in ["level", "msg", "time"] {
            assert!(object.get(key).is_some_and(|v| v.is_string()), "{key} in {line}");
        }
        let keys: Vec<&String> = object.keys().collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "keys sorted as logrus's JSON: {line}");
    }
    let listening: serde_json::Value =
        text.lines().find(|l| l.contains(LISTENING)).and_then(|l| serde_json::from_str(l).ok()).expect("a line");
    assert_eq!(listening["level"], "info");
    assert_eq!(listening["msg"], LISTENING);
    assert_eq!(listening["proto"], "tcp");
    assert!(listening["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{listening}");
}

#[test]
fn a_fatal_error_is_logged_in_the_chosen_form() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text_log = dir.path().join("text.log");
    let mut text = Swarm::start(&["manage", "--log-level", "loud", "nodes://127.0.0.1:1"], &text_log);
    assert!(!text.child.wait().expect("swarm ends").success());
    let line = std::fs::read_to_string(&text_log).expect("log");
    assert!(
        line.starts_with("time=\"")
            && line.ends_with(" level=fatal msg=\"not a valid logrus Level: \\\"loud\\\" (use debug, info, warn, error, fatal or panic)\"\n"),
        "{line:?}"
    );

    let json_log = dir.path().join("json.log");
    let mut json = Swarm::start(&["--log-format", "json", "manage", "nodes://127.0.0.1:1", "-l", "loud"], &json_log);
    assert!(!json.child.wait().expect("swarm ends").success());
    let line = std::fs::read_to_string(&json_log).expect("log");
    let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(object["level"], "fatal");
    assert!(object["msg"].as_str().is_some_and(|m| m.starts_with("not a valid logrus Level: \"loud\"")), "{line}");
}
