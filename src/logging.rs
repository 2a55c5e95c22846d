//! Logging: `tracing` events with the Python suite's levels (TRACE 5, DEBUG 10, INFO 20, APP 21,
//! RUN 22, WARNING 30, ERROR 40) and line format
//! `[YYYY-mm-dd HH:MM:SS.mmm] LEVEL (logger) > message`, to stdout and to `log.txt`.
//!
//! RUN and APP are INFO events carrying a `taps_level` field; use [`run_info!`](crate::run_info)
//! in the harness and [`app_info!`](crate::app_info) in apps.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Logs at the RUN level (benchmark harness).
#[macro_export]
macro_rules! run_info {
    ($($arg:tt)+) => { ::tracing::info!(target: "taps.run", taps_level = "RUN", $($arg)+) };
}

/// Logs at the APP level (inside applications); the logger is the app's module.
#[macro_export]
macro_rules! app_info {
    ($($arg:tt)+) => { ::tracing::info!(taps_level = "APP", $($arg)+) };
}

/// Level names and numbers accepted by `logging.level` / `logging.file_level`.
pub(crate) const LEVELS: &[(&str, u32)] =
    &[("TRACE", 5), ("DEBUG", 10), ("INFO", 20), ("APP", 21), ("RUN", 22), ("WARNING", 30), ("ERROR", 40)];

/// Parses a level name (any case; Python's WARN, CRITICAL, FATAL and NOTSET accepted) or number.
pub(crate) fn parse_level(s: &str) -> Result<u32, String> {
    let u = s.trim().to_ascii_uppercase();
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    let u = match u.as_str() {
        "WARN" => "WARNING",
        "CRITICAL" | "FATAL" => "ERROR",
        "NOTSET" => return Ok(0),
        other => other,
    };
    LEVELS.iter().find(|(n, _)| *n == u).map(|(_, v)| *v).ok_or_else(|| {
        format!(
            "unknown log level {:?}; valid levels: {} (or a number)",
            s,
            LEVELS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )
    })
}

/// A configured log level: a name or a number, as the Python suite's `logging.level` takes it
/// (`level = "INFO"` or `level = 20`); written back the way it was given.
#[derive(Clone, Debug, PartialEq)]
pub enum LogLevel {
    /// A level name, upper case (TRACE, DEBUG, INFO, APP, RUN, WARNING, ERROR, ...).
    Name(String),
    /// A number (TRACE 5, DEBUG 10, INFO 20, APP 21, RUN 22, WARNING 30, ERROR 40).
    Number(u32),
}

impl LogLevel {
    /// The numeric level.
    pub fn value(&self) -> u32 {
        match self {
            LogLevel::Name(n) => parse_level(n).unwrap_or(20),
            LogLevel::Number(n) => *n,
        }
    }
}

impl crate::options::OptValue for LogLevel {
    fn type_name() -> String {
        "level name (TRACE|DEBUG|INFO|APP|RUN|WARNING|ERROR) or number".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(i) => u32::try_from(*i)
                .map(LogLevel::Number)
                .map_err(|_| format!("expected a level name or a number >= 0, got {}", i)),
            toml::Value::String(s) => Self::from_cli(s),
            _ => Err(format!("expected a level name or number, got {}", crate::options::describe(v))),
        }
    }
    fn to_toml(&self) -> toml::Value {
        match self {
            LogLevel::Name(n) => toml::Value::String(n.clone()),
            LogLevel::Number(n) => toml::Value::Integer(*n as i64),
        }
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let n = parse_level(t)?;
        Ok(if t.parse::<u32>().is_ok() { LogLevel::Number(n) } else { LogLevel::Name(t.to_ascii_uppercase()) })
    }
}

fn level_name(n: u32) -> &'static str {
    match n {
        0..=5 => "TRACE",
        6..=10 => "DEBUG",
        11..=20 => "INFO",
        21 => "APP",
        22 => "RUN",
        23..=30 => "WARNING",
        _ => "ERROR",
    }
}

struct Sink {
    level: u32,
    out: Box<dyn Write + Send>,
}

struct TapsLayer {
    sinks: Mutex<Vec<Sink>>,
    /// The last line's time to the second, as printed, and that second: every line of a second
    /// shares it (an app that logs per task formats the date once a second, not per line).
    stamp: Mutex<(i64, String)>,
    /// The lowest level any sink takes: events below it are never built (their arguments are
    /// not even formatted), so TRACE lines cost nothing unless TRACE is on.
    min_level: AtomicU32,
}

impl TapsLayer {
    /// Whether an event at `level` may reach a sink (INFO may be RUN or APP, which rank higher).
    fn wants(&self, level: &Level) -> bool {
        let highest = if *level == Level::INFO { 22 } else { event_level(level, None) };
        highest >= self.min_level.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    /// The level a `taps_level` field names (RUN, APP).
    taps_level: Option<u32>,
    extra: String,
}

/// The level of a `taps_level` marker.
fn marker_level(marker: &str) -> Option<u32> {
    match marker {
        "RUN" => Some(22),
        "APP" => Some(21),
        _ => None,
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "taps_level" => self.taps_level = marker_level(value),
            name => {
                let _ = write!(self.extra, " {}={}", name, value);
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{:?}", value);
            }
            "taps_level" => self.taps_level = marker_level(format!("{:?}", value).trim_matches('"')),
            name => {
                let _ = write!(self.extra, " {}={:?}", name, value);
            }
        }
    }
}

fn event_level(level: &Level, marker: Option<u32>) -> u32 {
    marker.unwrap_or(match *level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    })
}

impl<S: Subscriber> Layer<S> for TapsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        let lvl = event_level(meta.level(), f.taps_level);
        let mut sinks = self.sinks.lock().unwrap();
        if !sinks.iter().any(|s| lvl >= s.level) {
            return;
        }
        let mut line = String::with_capacity(64 + f.message.len() + f.extra.len());
        line.push('[');
        write_stamp(&mut self.stamp.lock().unwrap(), chrono::Local::now(), &mut line);
        let _ = write!(line, "] {:<5} (", level_name(lvl));
        for (i, part) in meta.target().split("::").enumerate() {
            if i > 0 {
                line.push('.');
            }
            line.push_str(part);
        }
        let _ = writeln!(line, ") > {}{}", f.message, f.extra);
        for s in sinks.iter_mut() {
            if lvl >= s.level {
                let _ = s.out.write_all(line.as_bytes());
            }
        }
    }
}

/// Appends `now` as `YYYY-mm-dd HH:MM:SS.mmm`, the part up to the second from `cache` (the last
/// second written and its text) when it is the same second.
fn write_stamp(cache: &mut (i64, String), now: chrono::DateTime<chrono::Local>, line: &mut String) {
    if cache.0 != now.timestamp() || cache.1.is_empty() {
        *cache = (now.timestamp(), now.format("%Y-%m-%d %H:%M:%S").to_string());
    }
    let _ = write!(line, "{}.{:03}", cache.1, now.timestamp_subsec_millis().min(999));
}

static LAYER: OnceLock<&'static TapsLayer> = OnceLock::new();

fn layer() -> &'static TapsLayer {
    LAYER.get_or_init(|| {
        let l: &'static TapsLayer = Box::leak(Box::new(TapsLayer {
            sinks: Mutex::new(Vec::new()),
            stamp: Mutex::new((0, String::new())),
            min_level: AtomicU32::new(u32::MAX),
        }));
        let _ = tracing_subscriber::registry().with(Forward(l)).try_init();
        l
    })
}

struct Forward(&'static TapsLayer);

impl<S: Subscriber> Layer<S> for Forward {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Sinks change at run time: ask per event (a cheap atomic load), never cache a verdict.
        Interest::sometimes()
    }
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.0.wants(metadata.level())
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx)
    }
}

fn set_sinks(sinks: Vec<Sink>) {
    let l = layer();
    let min = sinks.iter().map(|s| s.level).min().unwrap_or(u32::MAX);
    *l.sinks.lock().unwrap() = sinks;
    l.min_level.store(min, Ordering::Relaxed);
}

/// Sends log lines at or above `level` to stdout, and at or above `file_level` to `file`.
/// Replaces any earlier setup (so tests and repeated runs in one process work).
pub fn init(level: u32, file: Option<(&Path, u32)>) -> std::io::Result<()> {
    let mut sinks = vec![Sink { level, out: Box::new(std::io::stdout()) }];
    if let Some((path, file_level)) = file {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = File::options().create(true).append(true).open(path)?;
        sinks.push(Sink { level: file_level, out: Box::new(LineWriter::new(f)) });
    }
    set_sinks(sinks);
    Ok(())
}

/// Flushes and closes the log file (stdout stays).
pub fn close() {
    let l = layer();
    let mut sinks = l.sinks.lock().unwrap();
    for s in sinks.iter_mut() {
        let _ = s.out.flush();
    }
    sinks.truncate(1);
    let min = sinks.iter().map(|s| s.level).min().unwrap_or(u32::MAX);
    l.min_level.store(min, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_stamp_reads_as_the_full_format_would() {
        let mut cache = (0, String::new());
        let start = chrono::Local::now();
        // The same second, the next millisecond, seconds and a day later: each as chrono writes it.
        for ms in [0, 1, 999, 1_000, 1_001, 61_500, 86_400_000] {
            let t = start + chrono::Duration::milliseconds(ms);
            let mut line = String::new();
            write_stamp(&mut cache, t, &mut line);
            assert_eq!(line, t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(), "{} ms on", ms);
        }
    }
}
