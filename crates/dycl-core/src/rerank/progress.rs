//! Progress reporting and cancellation for long re-ranking calls.
//!
//! Workers only bump an atomic counter; the thread that started the call
//! polls it every [`REPORT_INTERVAL`] and hands it to a [`ProgressSink`].
//! So the sink always runs on the caller's thread (the Python bindings rely
//! on that to re-enter the interpreter and to see Ctrl-C), never on a rayon
//! worker, and costs nothing when absent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{DyclError, Result};

/// How often a running stage reports.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Receives `(stage, done, total)` of a long computation.
///
/// Called on the thread that started the computation: once when a stage
/// starts (`done = 0`), then at most every [`REPORT_INTERVAL`], and once
/// when it ends (`done = total`). Returning `false` cancels the computation,
/// which then returns the error of [`cancelled`].
pub trait ProgressSink {
    fn report(&mut self, stage: &str, done: usize, total: usize) -> bool;
}

/// The error a cancelled computation returns.
pub fn cancelled() -> DyclError {
    DyclError::invalid("progress", "computation cancelled by the progress callback")
}

/// Shared by the workers of one stage: a counter and a cancellation flag.
#[derive(Default)]
pub struct Tracker {
    done: AtomicUsize,
    cancelled: AtomicBool,
}

impl Tracker {
    /// Count `n` more units of work as done.
    pub fn advance(&self, n: usize) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the caller asked to stop; workers check this between chunks.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Runs stages of a computation, reporting to an optional sink.
pub struct Progress<'a> {
    sink: Option<&'a mut dyn ProgressSink>,
}

impl<'a> Progress<'a> {
    pub fn new(sink: Option<&'a mut dyn ProgressSink>) -> Self {
        Progress { sink }
    }

    /// No reporting, no cancellation.
    pub fn silent() -> Self {
        Progress { sink: None }
    }

    /// Run `work` as part of `stage`, which has `total` units of which `base`
    /// were done by earlier calls; `work` advances the tracker it is given.
    pub fn run<R: Send>(
        &mut self,
        stage: &str,
        base: usize,
        total: usize,
        work: impl FnOnce(&Tracker) -> R + Send,
    ) -> Result<R> {
        let tracker = Tracker::default();
        let Some(sink) = self.sink.as_deref_mut() else {
            return Ok(work(&tracker));
        };
        if !sink.report(stage, base.min(total), total) {
            return Err(cancelled());
        }
        let caller = std::thread::current();
        let tracker_ref = &tracker;
        let out = std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                let out = work(tracker_ref);
                caller.unpark();
                out
            });
            let mut go_on = true;
            while !handle.is_finished() {
                std::thread::park_timeout(REPORT_INTERVAL);
                if go_on && !handle.is_finished() {
                    let done = (base + tracker.done.load(Ordering::Relaxed)).min(total);
                    go_on = sink.report(stage, done, total);
                    if !go_on {
                        tracker.cancelled.store(true, Ordering::Relaxed);
                    }
                }
            }
            match handle.join() {
                Ok(out) => out,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        });
        if tracker.cancelled() {
            return Err(cancelled());
        }
        let done = (base + tracker.done.load(Ordering::Relaxed)).min(total);
        if !sink.report(stage, done, total) {
            return Err(cancelled());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        calls: Vec<(String, usize, usize)>,
        stop_after: usize,
    }

    impl ProgressSink for Recorder {
        fn report(&mut self, stage: &str, done: usize, total: usize) -> bool {
            self.calls.push((stage.to_string(), done, total));
            self.calls.len() < self.stop_after
        }
    }

    #[test]
    fn reports_start_and_end_on_the_calling_thread() {
        let mut rec = Recorder {
            calls: vec![],
            stop_after: usize::MAX,
        };
        let mut progress = Progress::new(Some(&mut rec));
        let value = progress.run("stage", 2, 10, |t| {
            t.advance(8);
            42
        });
        assert_eq!(value.unwrap(), 42);
        assert_eq!(rec.calls.first().unwrap(), &("stage".to_string(), 2, 10));
        assert_eq!(rec.calls.last().unwrap(), &("stage".to_string(), 10, 10));
    }

    #[test]
    fn sink_returning_false_cancels() {
        let mut rec = Recorder {
            calls: vec![],
            stop_after: 2,
        };
        let mut progress = Progress::new(Some(&mut rec));
        let out = progress.run("slow", 0, 100, |t| {
            while !t.cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(out.unwrap_err(), cancelled());
    }

    #[test]
    fn worker_panic_propagates() {
        let mut rec = Recorder {
            calls: vec![],
            stop_after: usize::MAX,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut progress = Progress::new(Some(&mut rec));
            progress.run("boom", 0, 1, |_| -> usize { panic!("worker failed") })
        }));
        assert!(result.is_err());
    }
}
