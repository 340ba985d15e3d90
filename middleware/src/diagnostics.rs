//! How the layer reports trouble in its log: an error with its whole cause chain, and at
//! most one line per window for trouble that repeats on every request.

use std::error::Error;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An error and its causes, `a: b: c`, as one log field. Subscribers print only the
/// `Display` of a `%` field, and many drop the sources of a `dyn Error` one; the cause
/// is usually in the sources (reqwest says "error sending request", its source says
/// "connection refused").
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Lets one log line through per window and counts the others, so that trouble
/// every request meets (the database down) is seen without flooding the log.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    window: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    /// When the last line was let through; `None` before the first.
    last: Option<Instant>,
    /// Lines suppressed since then.
    suppressed: u64,
}

impl LogThrottle {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// `Some(suppressed)` when a line may be written at `now`, with how many were
    /// suppressed since the last one; `None` when this one is suppressed (and counted).
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        // Only refusals come here, never the hot path: a mutex costs nothing that matters.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.window);
        if open {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }

    /// Makes the last line look `by` older, for tests that cross a window without
    /// waiting for it.
    #[cfg(test)]
    pub(crate) fn rewind(&self, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state.last = state.last.map(|last| last.checked_sub(by).unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn an_error_chain_shows_every_cause() {
        let error = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(ErrorChain(&error).to_string(), "outer: middle: inner");
        let alone = std::io::Error::other("alone");
        assert_eq!(ErrorChain(&alone).to_string(), "alone");
    }

    #[test]
    fn one_line_per_window_and_the_next_says_how_many_were_suppressed() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0), "the first line passes");
        for second in 1..=9 {
            assert_eq!(throttle.admit(start + Duration::from_secs(second)), None);
        }
        assert_eq!(
            throttle.admit(start + Duration::from_secs(10)),
            Some(9),
            "the window is over: the next line says nine were suppressed"
        );
        assert_eq!(throttle.admit(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit(start + Duration::from_secs(25)), Some(1));
        // A clock that seems to go back (another thread's `now`) suppresses, never panics.
        assert_eq!(throttle.admit(start), None);
    }
}
