//! Log lines in the original's formats (logrus's text formatter, or its
//! JSON formatter with `--log-format json`).
//!
//! With the text format, logrus writes a short form when stderr is a
//! terminal and a `key=value` form (what log shippers and operators'
//! watchers parse) when it is a file or a pipe:
//!
//! ```text
//! INFO[0006] Listening for HTTP                            addr="127.0.0.1:4000" proto=tcp
//! time="2026-12-02T04:06:18Z" level=info msg="Listening for HTTP" addr="127.0.0.1:4000" proto=tcp
//! {"addr":"127.0.0.1:4000","level":"info","msg":"Listening for HTTP","proto":"tcp","time":"2026-12-02T04:06:18Z"}
//! ```
//!
//! Times are in UTC (logrus uses the local zone, which is UTC on most
//! servers and containers; a zone cached at start would go stale at a
//! daylight saving change).

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Width logrus pads the message to in the terminal form.
const MESSAGE_WIDTH: usize = 44;

/// `--log-format`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// logrus's text formatter: short on a terminal, `key=value` otherwise.
    Text,
    /// logrus's JSON formatter: one object per line.
    Json,
}

/// Why the logger could not be installed.
#[derive(Debug, Error)]
pub enum LoggingError {
    #[error("not a valid logrus Level: {0:?} (use debug, info, warn, error, fatal or panic)")]
    UnknownLevel(String),
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// The shape of every line, chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `INFO[0006] message   key=value`, coloured, for a person at a terminal.
    Terminal,
    /// `time="…" level=info msg="…" key=value`, for files and pipes.
    KeyValue,
    /// `{"level":"info","msg":"…","time":"…",…}`.
    Json,
}

/// Writes log lines to stderr in the layout chosen at start.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    /// Fixed at start: whether stderr is a terminal does not change later.
    layout: Layout,
    /// The origin of the terminal form's `[SSSS]` seconds.
    started: Instant,
}

impl Logger {
    /// The logger for `format`, looking at whether stderr is a terminal.
    pub fn detect(format: LogFormat) -> Logger {
        let layout = match format {
            LogFormat::Json => Layout::Json,
            LogFormat::Text if std::io::stderr().is_terminal() => Layout::Terminal,
            LogFormat::Text => Layout::KeyValue,
        };
        Logger { layout, started: Instant::now() }
    }

    /// Installs this logger as the global one, writing lines at `level`
    /// (`debug`, `info`, `warn`, `error`, `fatal`, `panic`) and above.
    pub fn install(self, level: &str) -> Result<(), LoggingError> {
        let filter = match level {
            "debug" => "debug",
            "info" => "info",
            "warn" | "warning" => "warn",
            "error" | "fatal" | "panic" => "error",
            other => return Err(LoggingError::UnknownLevel(other.to_string())),
        };
        let filter = tracing_subscriber::EnvFilter::new(format!(
            "warn,swarm={filter},swarm_proxy={filter},swarm_discovery={filter},swarm_scheduler={filter}"
        ));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .event_format(self)
            .try_init()
            .map_err(|e| LoggingError::Install(e.to_string()))
    }

    /// Writes the line of a fatal error (which ends the process), as logrus's
    /// `Fatal` does; works whether or not the logger was installed.
    pub fn fatal(&self, message: &str) {
        let record = Record { severity: Severity::Fatal, message: message.to_string(), fields: Vec::new() };
        let line = record.render(self.layout, &self.stamp());
        // Nowhere is left to report a failing stderr.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn stamp(&self) -> Stamp {
        Stamp { since_start: self.started.elapsed(), wall: OffsetDateTime::now_utc() }
    }
}

impl<S, N> FormatEvent<S, N> for Logger
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut record =
            Record { severity: Severity::from(*event.metadata().level()), message: String::new(), fields: Vec::new() };
        event.record(&mut record);
        writer.write_str(&record.render(self.layout, &self.stamp()))
    }
}

/// logrus's levels (tracing has no fatal; [`Logger::fatal`] writes those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl From<Level> for Severity {
    fn from(level: Level) -> Severity {
        match level {
            Level::TRACE => Severity::Trace,
            Level::DEBUG => Severity::Debug,
            Level::INFO => Severity::Info,
            Level::WARN => Severity::Warning,
            Level::ERROR => Severity::Error,
        }
    }
}

impl Severity {
    /// logrus's name of the level (`level=warning`).
    fn name(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// The terminal form's four upper-case letters (`WARN`, `ERRO`).
    fn short(self) -> String {
        self.name()[..4].to_ascii_uppercase()
    }

    /// The ANSI colour logrus gives the level on a terminal.
    fn colour(self) -> u8 {
        match self {
            Severity::Debug => 37,
            Severity::Warning => 33,
            Severity::Error | Severity::Fatal => 31,
            Severity::Trace | Severity::Info => 36,
        }
    }
}

/// A field's value, keeping numbers and booleans apart for JSON.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    /// Written unquoted in JSON; the digits as formatted.
    Number(String),
    Bool(bool),
}

impl Value {
    /// The value as logrus's `fmt.Sprint` shows it.
    fn as_text(&self) -> String {
        match self {
            Value::Text(text) | Value::Number(text) => text.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// When a line is written, in the two forms the layouts show.
struct Stamp {
    since_start: Duration,
    wall: OffsetDateTime,
}

impl Stamp {
    /// RFC 3339 to the second, as Go's `time.RFC3339`.
    fn rfc3339(&self) -> String {
        let whole_seconds = self.wall.replace_nanosecond(0).unwrap_or(self.wall);
        whole_seconds.format(&Rfc3339).unwrap_or_default()
    }
}

/// One line's content: what the event said, before layout.
#[derive(Debug)]
struct Record {
    severity: Severity,
    message: String,
    /// In the order the event gave them; sorted when rendered.
    fields: Vec<(String, Value)>,
}

impl Record {
    fn field(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = value.as_text();
        } else if !name.starts_with("log.") {
            // `log.*` fields are where the `log` crate bridge puts the origin of
            // a dependency's record; logrus lines have no such fields.
            self.fields.push((name.to_string(), value));
        }
    }

    /// The fields as logrus writes them: sorted by key, and renamed to
    /// `fields.<key>` where they would clash with `time`, `level` or `msg`.
    fn sorted_fields(&self) -> Vec<(String, &Value)> {
        let mut fields: Vec<(String, &Value)> = self
            .fields
            .iter()
            .map(|(key, value)| match key.as_str() {
                "time" | "level" | "msg" => (format!("fields.{key}"), value),
                _ => (key.clone(), value),
            })
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields
    }

    /// The whole line, newline included.
    fn render(&self, layout: Layout, stamp: &Stamp) -> String {
        let mut line = match layout {
            Layout::Terminal => self.terminal(stamp),
            Layout::KeyValue => self.key_value(stamp),
            Layout::Json => self.json(stamp),
        };
        line.push('\n');
        line
    }

    fn terminal(&self, stamp: &Stamp) -> String {
        let colour = self.severity.colour();
        let mut line = format!("\x1b[{colour}m{}\x1b[0m[{:04}] ", self.severity.short(), stamp.since_start.as_secs());
        let fields = self.sorted_fields();
        if fields.is_empty() {
            // logrus pads here too; the trailing blanks are left out.
            line.push_str(&self.message);
            return line;
        }
        let _ = write!(line, "{:<width$} ", self.message, width = MESSAGE_WIDTH);
        for (key, value) in fields {
            let _ = write!(line, " \x1b[{colour}m{key}\x1b[0m={}", logfmt_value(&value.as_text()));
        }
        line
    }

    fn key_value(&self, stamp: &Stamp) -> String {
        let mut pairs = vec![
            ("time".to_string(), logfmt_value(&stamp.rfc3339())),
            ("level".to_string(), self.severity.name().to_string()),
        ];
        if !self.message.is_empty() {
            pairs.push(("msg".to_string(), logfmt_value(&self.message)));
        }
        pairs.extend(self.sorted_fields().into_iter().map(|(key, value)| (key, logfmt_value(&value.as_text()))));
        pairs.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(" ")
    }

    fn json(&self, stamp: &Stamp) -> String {
        let mut members: Vec<(String, String)> = self
            .sorted_fields()
            .into_iter()
            .map(|(key, value)| {
                let json = match value {
                    Value::Text(text) => json_string(text),
                    Value::Number(digits) => digits.clone(),
                    Value::Bool(b) => b.to_string(),
                };
                (key, json)
            })
            .collect();
        members.push(("level".to_string(), json_string(self.severity.name())));
        members.push(("msg".to_string(), json_string(&self.message)));
        members.push(("time".to_string(), json_string(&stamp.rfc3339())));
        // Go's encoding/json writes a map's keys sorted.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let body: Vec<String> = members.iter().map(|(key, value)| format!("{}:{value}", json_string(key))).collect();
        format!("{{{}}}", body.join(","))
    }
}

impl Visit for Record {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, Value::Number(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, Value::Number(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, Value::Text(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, Value::Text(format!("{value:?}")));
    }
}

/// A value in logrus's text form: bare when it only holds letters, digits
/// and `-._/@^+`, otherwise quoted as Go's `%q` does.
fn logfmt_value(text: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || "-._/@^+".contains(c);
    if text.chars().all(bare) {
        text.to_string()
    } else {
        go_quote(text)
    }
}

/// `text` in double quotes with Go's escapes (`strconv.Quote`).
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\x07' => quoted.push_str("\\a"),
            '\x08' => quoted.push_str("\\b"),
            '\x0c' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\x0b' => quoted.push_str("\\v"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    // Serializing a string cannot fail; the fallback keeps the line valid JSON anyway.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T04:06:18.750Z, 6.9 s after start.
    fn stamp() -> Stamp {
        let wall = OffsetDateTime::from_unix_timestamp_nanos(1_796_184_378_750_000_000).expect("a valid time");
        Stamp { since_start: Duration::from_millis(6_900), wall }
    }

    fn record(severity: Severity, message: &str, fields: &[(&str, Value)]) -> Record {
        Record {
            severity,
            message: message.to_string(),
            fields: fields.iter().map(|(key, value)| (key.to_string(), value.clone())).collect(),
        }
    }

    fn text(value: &str) -> Value {
        Value::Text(value.to_string())
    }

    #[test]
    fn the_file_form_is_logrus_key_value() {
        let line = record(Severity::Info, "Leader Election: Cluster leadership acquired", &[]);
        assert_eq!(
            line.render(Layout::KeyValue, &stamp()),
            "time=\"2026-12-02T04:06:18Z\" level=info msg=\"Leader Election: Cluster leadership acquired\"\n"
        );
    }

    #[test]
    fn the_file_form_sorts_and_quotes_fields() {
        let line = record(
            Severity::Warning,
            "HTTP error: no such container",
            &[
                ("uri", text("/containers/x y/json")),
                ("status", Value::Number("404".into())),
                ("method", text("GET")),
                ("Addr", text("10.0.0.1:2375")),
                ("empty", text("")),
                ("path", text("a-b_c.d/e@f^g+h")),
            ],
        );
        assert_eq!(
            line.render(Layout::KeyValue, &stamp()),
            "time=\"2026-12-02T04:06:18Z\" level=warning msg=\"HTTP error: no such container\" \
             Addr=\"10.0.0.1:2375\" empty= method=GET path=a-b_c.d/e@f^g+h status=404 uri=\"/containers/x y/json\"\n"
        );
    }

    #[test]
    fn a_single_word_message_is_bare_and_an_empty_one_is_left_out() {
        assert_eq!(
            record(Severity::Debug, "ready", &[]).render(Layout::KeyValue, &stamp()),
            "time=\"2026-12-02T04:06:18Z\" level=debug msg=ready\n"
        );
        assert_eq!(
            record(Severity::Error, "", &[("a", text("1"))]).render(Layout::KeyValue, &stamp()),
            "time=\"2026-12-02T04:06:18Z\" level=error a=1\n"
        );
    }

    #[test]
    fn level_names_are_logrus_names() {
        let names: Vec<&str> =
            [Severity::Trace, Severity::Debug, Severity::Info, Severity::Warning, Severity::Error, Severity::Fatal]
                .iter()
                .map(|s| s.name())
                .collect();
        assert_eq!(names, ["trace", "debug", "info", "warning", "error", "fatal"]);
        assert_eq!(Severity::Warning.short(), "WARN");
        assert_eq!(Severity::Error.short(), "ERRO");
        assert_eq!(Severity::Fatal.short(), "FATA");
        assert_eq!(Severity::from(Level::WARN), Severity::Warning);
    }

    #[test]
    fn quoting_escapes_as_go_does() {
        assert_eq!(logfmt_value("plain-1.2"), "plain-1.2");
        assert_eq!(logfmt_value("say \"hi\"\n\ttab\\"), "\"say \\\"hi\\\"\\n\\ttab\\\\\"");
        assert_eq!(logfmt_value("bell\x07nul\x00"), "\"bell\\anul\\x00\"");
        assert_eq!(logfmt_value("é"), "\"é\"");
    }

    #[test]
    fn the_terminal_form_is_short_and_coloured() {
        assert_eq!(
            record(Severity::Info, "Leader Election: Cluster leadership acquired", &[])
                .render(Layout::Terminal, &stamp()),
            "\x1b[36mINFO\x1b[0m[0006] Leader Election: Cluster leadership acquired\n"
        );
        let line =
            record(Severity::Error, "Flagging engine as unhealthy", &[("name", text("n1")), ("id", text("A:B"))])
                .render(Layout::Terminal, &stamp());
        assert_eq!(
            line,
            format!(
                "\x1b[31mERRO\x1b[0m[0006] {:<44}  \x1b[31mid\x1b[0m=\"A:B\" \x1b[31mname\x1b[0m=n1\n",
                "Flagging engine as unhealthy"
            )
        );
    }

    #[test]
    fn a_long_message_still_has_two_blanks_before_its_fields() {
        let message = "x".repeat(50);
        let line = record(Severity::Debug, &message, &[("k", text("v"))]).render(Layout::Terminal, &stamp());
        assert_eq!(line, format!("\x1b[37mDEBU\x1b[0m[0006] {message}  \x1b[37mk\x1b[0m=v\n"));
    }

    #[test]
    fn json_is_one_object_with_sorted_keys() {
        let line = record(
            Severity::Warning,
            "HTTP error: \"quoted\"",
            &[("status", Value::Number("500".into())), ("uri", text("/x")), ("hijacked", Value::Bool(false))],
        )
        .render(Layout::Json, &stamp());
        assert_eq!(
            line,
            "{\"hijacked\":false,\"level\":\"warning\",\"msg\":\"HTTP error: \\\"quoted\\\"\",\"status\":500,\
             \"time\":\"2026-12-02T04:06:18Z\",\"uri\":\"/x\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["msg"], "HTTP error: \"quoted\"");
    }

    #[test]
    fn fields_named_like_the_line_s_own_keys_are_prefixed() {
        let line = record(Severity::Info, "m", &[("msg", text("x")), ("time", text("t")), ("level", text("l"))]);
        assert_eq!(
            line.render(Layout::KeyValue, &stamp()),
            "time=\"2026-12-02T04:06:18Z\" level=info msg=m fields.level=l fields.msg=x fields.time=t\n"
        );
        let json: serde_json::Value = serde_json::from_str(&line.render(Layout::Json, &stamp())).expect("valid JSON");
        assert_eq!(json["msg"], "m");
        assert_eq!(json["fields.msg"], "x");
    }

    #[test]
    fn events_are_recorded_with_their_fields() {
        let written = capture::lines(|| {
            tracing::info!(addr = %"127.0.0.1:4000", proto = "tcp", count = 3u64, "Listening for HTTP");
        });
        assert!(written.starts_with("time=\""), "{written}");
        assert!(
            written.ends_with(" level=info msg=\"Listening for HTTP\" addr=\"127.0.0.1:4000\" count=3 proto=tcp\n"),
            "{written}"
        );
    }
}

/// Lines written in tests, for checking their wording.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::{Layout, Logger};

    /// The lines `emit` writes, in the file form, whatever the global logger.
    pub(crate) fn lines(emit: impl FnOnce()) -> String {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let logger = Logger { layout: Layout::KeyValue, started: Instant::now() };
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || SharedBuffer(sink.clone())).event_format(logger).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = written.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A writer into a buffer the test reads afterwards.
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
