//! The binary's log output: text or JSON lines on stderr, at a level from klog's verbosity.
//!
//! - Verbosity (`--v`, `logging.verbosity`) maps klog's levels onto tracing's: 0–3 info (with
//!   warnings and errors), 4–5 debug (adds every sync, unchanged ones too), 6 and more trace.
//!   `PROXIER_LOG` (an `EnvFilter` directive such as `info,proxier=debug`) overrides it.
//! - `--logging-format=json` (`logging.format: json`) writes one JSON object per line with
//!   component-base's keys: `ts` (seconds since the epoch), `caller`, `msg`, `v` (the klog
//!   level of an info line), `err` (an error's whole cause chain), then the event's fields; plus
//!   `level`. Text is tracing's line format, coloured only on a terminal without `NO_COLOR`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use proxier::config::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// klog verbosity → the tracing level directive.
pub fn level(verbosity: u32) -> &'static str {
    match verbosity {
        0..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    }
}

/// Whether text output is coloured: on a terminal, unless `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global logger.
pub fn init(verbosity: u32, format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("PROXIER_LOG").unwrap_or_else(|_| EnvFilter::new(level(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// Logs one sync: at info when it changed or failed something, else at debug (a resync
/// that found nothing to do is not news).
pub fn log_sync(kind: proxier::runtime::SyncKind, outcome: &proxier::runtime::SyncOutcome) {
    let elapsed_us = outcome.elapsed.as_micros() as u64;
    if outcome.operations > 0 || outcome.failed > 0 {
        tracing::info!(
            ?kind,
            operations = outcome.operations,
            failed = outcome.failed,
            elapsed_us,
            "synced"
        );
    } else {
        tracing::debug!(
            ?kind,
            operations = outcome.operations,
            failed = outcome.failed,
            elapsed_us,
            "synced"
        );
    }
}

/// Logs the error that ends the process, with its whole cause chain, each cause once.
pub fn fatal(error: &anyhow::Error) {
    tracing::error!(target: "proxier", err = %format!("{error:#}"), "proxier stopped on an error");
}

/// The JSON line format (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct JsonLines;

/// An event's fields as JSON values, the message apart.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(text)) => self.message = text,
            ("error", value) => self.rest.push(("err".to_owned(), value)),
            (name, value) => self.rest.push((name.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, serde_json::Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let number =
            serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into);
        self.insert(field, number);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = proxier::Report::new(value).to_string();
        self.insert(field, serde_json::Value::String(chain));
    }
}

fn json(value: &impl serde::Serialize) -> Result<String, fmt::Error> {
    serde_json::to_string(value).map_err(|_| fmt::Error)
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => meta.target().to_owned(),
        };
        let (level, v) = match *meta.level() {
            Level::ERROR => ("error", None),
            Level::WARN => ("warning", Some(0)),
            Level::INFO => ("info", Some(0)),
            Level::DEBUG => ("debug", Some(4)),
            Level::TRACE => ("trace", Some(6)),
        };
        write!(
            writer,
            "{{\"ts\":{ts:.6},\"caller\":{},\"level\":\"{level}\",\"msg\":{}",
            json(&caller)?,
            json(&fields.message)?
        )?;
        if let Some(v) = v {
            write!(writer, ",\"v\":{v}")?;
        }
        for (name, value) in &fields.rest {
            write!(writer, ",{}:{}", json(name)?, json(value)?)?;
        }
        writeln!(writer, "}}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use proxier::runtime::{SyncKind, SyncOutcome};

    use super::*;

    /// Where a test subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn at_info_a_sync_is_logged_only_when_it_changed_or_failed_something() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log_sync(SyncKind::Full, &SyncOutcome::default());
            let changed = SyncOutcome {
                operations: 3,
                ..SyncOutcome::default()
            };
            log_sync(SyncKind::Incremental, &changed);
            let failed = SyncOutcome {
                failed: 1,
                ..SyncOutcome::default()
            };
            log_sync(SyncKind::Full, &failed);
        });
        let text = sink.text();
        assert_eq!(text.matches("synced").count(), 2, "{text}");
        assert!(text.contains("Incremental operations=3"), "{text}");
        assert!(text.contains("Full operations=0 failed=1"), "{text}");
    }

    #[test]
    fn a_json_line_has_component_base_keys_and_the_fields() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(error = %"refused", count = 3u64, ratio = 0.5, "said \"no\"");
            tracing::error!("stopped");
        });
        let text = sink.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let warning = &lines[0];
        assert_eq!(warning["level"], "warning");
        assert_eq!(warning["msg"], "said \"no\"");
        assert_eq!(warning["v"], 0);
        assert_eq!(warning["err"], "refused");
        assert_eq!(warning["count"], 3);
        assert_eq!(warning["ratio"], 0.5);
        assert!(warning["ts"].as_f64().unwrap() > 1.6e9);
        assert!(warning["caller"].as_str().unwrap().contains("logging.rs"));
        assert_eq!(lines[1]["level"], "error");
        assert!(lines[1].get("v").is_none(), "an error line has no v");
    }

    #[test]
    fn klog_levels_map_onto_tracing_levels() {
        let levels: Vec<&str> = [0, 2, 3, 4, 5, 6, 9].into_iter().map(level).collect();
        assert_eq!(
            levels,
            ["info", "info", "info", "debug", "debug", "trace", "trace"]
        );
    }

    #[test]
    fn no_color_turns_colour_off_on_a_terminal() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
