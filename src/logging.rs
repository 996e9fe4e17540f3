//! Log lines in the original's (logrus) style: `INFO[0003] message   key=value`.

use std::fmt;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Width logrus pads the message to when fields follow it.
const MESSAGE_WIDTH: usize = 44;

/// Formats events as `LEVL[SSSS] message  key=value ...`, where SSSS counts
/// seconds since the process started.
pub struct LogrusFormat {
    /// When the process started; the origin of the `[SSSS]` stamp.
    started: Instant,
}

impl LogrusFormat {
    pub fn new() -> Self {
        LogrusFormat { started: Instant::now() }
    }
}

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name().to_string(), quote(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_string(), quote(&text)));
        }
    }
}

/// Quotes a field value when it holds spaces, as logrus does.
fn quote(value: &str) -> String {
    if value.is_empty() || value.contains([' ', '=', '"']) {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

impl<S, N> FormatEvent<S, N> for LogrusFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERRO",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBU",
            Level::TRACE => "TRAC",
        };
        let mut collect = Collect::default();
        event.record(&mut collect);
        let secs = self.started.elapsed().as_secs();
        write!(writer, "{level}[{secs:04}] ")?;
        if collect.fields.is_empty() {
            writeln!(writer, "{}", collect.message)
        } else {
            write!(writer, "{:<width$}", collect.message, width = MESSAGE_WIDTH)?;
            for (key, value) in &collect.fields {
                write!(writer, " {key}={value}")?;
            }
            writeln!(writer)
        }
    }
}

/// Installs the global logger at `level` (`debug`, `info`, `warn`, `error`, `fatal`, `panic`).
pub fn init(level: &str) -> Result<(), String> {
    let filter = match level {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        other => {
            return Err(format!("not a valid logrus Level: {other:?} (use debug, info, warn, error, fatal or panic)"))
        }
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,swarm={filter},swarm_proxy={filter},swarm_discovery={filter},swarm_scheduler={filter}"
    ));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LogrusFormat::new())
        .try_init()
        .map_err(|e| e.to_string())
}
