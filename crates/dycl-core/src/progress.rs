//! Progress reporting and cancellation for long calls (re-ranking, geodesic
//! matrices, metrics).
//!
//! Workers only bump an atomic counter; the thread that started the call
//! polls it every [`REPORT_INTERVAL`] and hands it to a [`ProgressSink`].
//! So the sink always runs on the caller's thread (the Python bindings rely
//! on that to re-enter the interpreter and to see Ctrl-C), never on a rayon
//! worker, and costs nothing when absent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
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
    DyclError::Cancelled
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

    /// Units of a stage done so far, counting the `base` done by earlier calls.
    fn done_of(&self, base: usize, total: usize) -> usize {
        (base + self.done.load(Ordering::Relaxed)).min(total)
    }
}

/// Held by a stage's worker; dropped when the work returns or panics, it
/// marks the stage finished and only then unparks the caller.
///
/// The order matters: the caller waits on `finished`, not on the thread's
/// `is_finished`, which turns true only after the worker's closure has
/// returned. Unparking first let the caller wake, see an unfinished thread
/// and sleep a whole [`REPORT_INTERVAL`] more; a panicking worker did not
/// unpark at all.
struct EndOfStage<'a> {
    finished: &'a AtomicBool,
    caller: Thread,
}

impl Drop for EndOfStage<'_> {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::Release);
        self.caller.unpark();
    }
}

/// On the caller's thread: report every [`REPORT_INTERVAL`] until the
/// worker signals the end of the stage. After the sink refuses once, only
/// wait: the workers see the cancellation flag and stop early.
fn report_until_finished(
    sink: &mut dyn ProgressSink,
    stage: &str,
    base: usize,
    total: usize,
    tracker: &Tracker,
    finished: &AtomicBool,
) {
    let mut go_on = true;
    // A wake-up without the flag (spurious, or a token left from before)
    // only costs one more look at the flag.
    while !finished.load(Ordering::Acquire) {
        std::thread::park_timeout(REPORT_INTERVAL);
        if go_on && !finished.load(Ordering::Acquire) {
            go_on = sink.report(stage, tracker.done_of(base, total), total);
            if !go_on {
                tracker.cancelled.store(true, Ordering::Relaxed);
            }
        }
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
        let finished = AtomicBool::new(false);
        let (tracker_ref, finished_ref) = (&tracker, &finished);
        let out = std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                let _signal = EndOfStage {
                    finished: finished_ref,
                    caller,
                };
                work(tracker_ref)
            });
            report_until_finished(sink, stage, base, total, &tracker, &finished);
            match handle.join() {
                Ok(out) => out,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        });
        if tracker.cancelled() {
            return Err(cancelled());
        }
        if !sink.report(stage, tracker.done_of(base, total), total) {
            return Err(cancelled());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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

    /// Well under one poll: a caller that slept until its next poll would
    /// take the whole 100 ms.
    const PROMPT: Duration = Duration::from_millis(50);

    /// The caller wakes when the stage ends, not at its next poll. Before
    /// the fix the worker unparked the caller before its thread had
    /// finished, and a caller that woke in that gap slept a whole poll; how
    /// often it did depends on scheduling (about half the stages here), so
    /// many stages are timed and the first slow one fails.
    #[test]
    fn trivial_stages_return_well_before_the_next_poll() {
        let mut rec = Recorder {
            calls: vec![],
            stop_after: usize::MAX,
        };
        let mut progress = Progress::new(Some(&mut rec));
        for i in 0..200 {
            let start = Instant::now();
            let value = progress.run("trivial", 0, 1, |t| {
                t.advance(1);
                i
            });
            let took = start.elapsed();
            assert_eq!(value.unwrap(), i);
            assert!(took < PROMPT, "trivial stage {i} took {took:?}");
        }
    }

    /// A panicking worker ends its stage too: before the fix it never
    /// unparked the caller, which always slept a whole poll first. The
    /// worker unwinds with `resume_unwind`, which skips the panic hook, so
    /// the time measured is not that of printing a backtrace.
    #[test]
    fn worker_panic_propagates_without_waiting_for_the_next_poll() {
        let mut rec = Recorder {
            calls: vec![],
            stop_after: usize::MAX,
        };
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut progress = Progress::new(Some(&mut rec));
            progress.run("boom", 0, 1, |_| -> usize {
                std::panic::resume_unwind(Box::new("worker failed"))
            })
        }));
        let took = start.elapsed();
        assert!(result.is_err());
        assert!(took < PROMPT, "the panicking stage took {took:?}");
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
