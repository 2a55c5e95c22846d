//! A progress bar on stderr (tasks done / submitted, rate), only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::Counters;

/// A running progress display.
pub(crate) struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the bar if stderr is a terminal; otherwise does nothing.
    pub fn start(counters: Arc<Counters>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Progress { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("taps-progress".into())
            .spawn(move || {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} tasks {pos}/{len} [{elapsed_precise}] {per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                while !s.load(Ordering::Relaxed) {
                    bar.set_length(counters.submitted.load(Ordering::Relaxed));
                    bar.set_position(counters.finished.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
            .ok();
        Progress { stop, handle }
    }

    /// Stops and clears the bar.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
