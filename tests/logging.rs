//! The real `swarm` binary's log lines when stderr is a file or a pipe, as
//! log shippers and operators' watchers read them. Needs no root, no engines.

use std::process::Command;
use std::time::{Duration, Instant};

use swarm_testkit::manager::SwarmProcess;
use swarm_testkit::process::free_port;

/// A manager on a free port whose one engine address refuses connections,
/// so that it logs lines with fields (listening, and a failed validation);
/// `flags` come after the command.
fn manager(flags: &[&str]) -> SwarmProcess {
    let listen = format!("127.0.0.1:{}", free_port());
    let engine = format!("nodes://127.0.0.1:{}", free_port());
    let mut args = vec!["manage", "-H", &listen];
    args.extend(flags);
    args.push(&engine);
    SwarmProcess::start(&args)
}

/// Waits until the log holds every one of `wanted`; returns its text.
fn wait_for(swarm: &SwarmProcess, wanted: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let text = swarm.log();
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
    let swarm = manager(&[]);
    let text = wait_for(&swarm, &[LISTENING, VALIDATION_FAILED]);
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
    let swarm = manager(&["--log-format", "json"]);
    let text = wait_for(&swarm, &[LISTENING, VALIDATION_FAILED]);
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

/// Runs `swarm` to its end with stderr to a pipe; returns whether it
/// succeeded and what it wrote.
fn run_to_end(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_swarm")).args(args).output().expect("run swarm");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_fatal_error_is_logged_in_the_chosen_form() {
    let (ok, line) = run_to_end(&["manage", "--log-level", "loud", "nodes://127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        line.starts_with("time=\"")
            && line.ends_with(
                " level=fatal msg=\"not a valid logrus Level: \\\"loud\\\" (use debug, info, warn, error, fatal or panic)\"\n"
            ),
        "{line:?}"
    );
    let (ok, line) = run_to_end(&["--log-format", "json", "manage", "nodes://127.0.0.1:1", "-l", "loud"]);
    assert!(!ok);
    let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(object["level"], "fatal");
    assert!(object["msg"].as_str().is_some_and(|m| m.starts_with("not a valid logrus Level: \"loud\"")), "{line}");
}
