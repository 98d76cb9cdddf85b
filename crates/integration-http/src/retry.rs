//! When and how long to wait before trying a request again.

use std::time::{Duration, Instant, SystemTime};

use integration_core::definition::RetryPolicy;
use reqwest::{Method, StatusCode};

/// A retry policy in the units the request loop uses.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_total: Duration,
    /// For calls that change state at the provider whatever their method
    /// (a token request spends a code or a refresh token): retried only when
    /// the provider cannot have acted on them.
    only_unprocessed: bool,
}

impl Retry {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let seconds = |value: f64| Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX);
        Self {
            max_attempts: policy.max_attempts.max(1),
            initial_backoff: seconds(policy.initial_backoff_seconds),
            max_backoff: seconds(policy.max_backoff_seconds),
            max_total: seconds(policy.max_total_seconds),
            only_unprocessed: false,
        }
    }

    /// The same budget, for calls retried only when they were not
    /// processed: a connection that never opened, or 429 or 503 with a
    /// `Retry-After`.
    pub(crate) fn only_unprocessed(self) -> Self {
        Self {
            only_unprocessed: true,
            ..self
        }
    }

    /// The wait before retrying after a response with `status`, or `None`
    /// to return it; `retry_after` gives its `Retry-After` value, looked up
    /// only when the status makes it count.
    pub(crate) fn after_response<'r>(
        &self,
        status: StatusCode,
        retry_after: impl FnOnce() -> Option<&'r [u8]>,
        method: &Method,
        attempt: u32,
        started: Instant,
    ) -> Option<Duration> {
        if self.only_unprocessed {
            let unprocessed = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
            let wait = unprocessed.then(retry_after).flatten().and_then(wait_of)?;
            return (attempt < self.max_attempts)
                .then_some(wait)
                .and_then(|wait| self.within_budget(wait, started));
        }
        let retryable = match status {
            // Not processed: safe to send again whatever the method.
            StatusCode::TOO_MANY_REQUESTS => true,
            StatusCode::SERVICE_UNAVAILABLE => is_idempotent(method),
            status if status.is_server_error() => is_idempotent(method),
            _ => false,
        };
        if !retryable || attempt >= self.max_attempts {
            return None;
        }
        let honours_retry_after = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
        let wait = match honours_retry_after.then(|| retry_after().and_then(wait_of)).flatten() {
            Some(wait) => wait,
            None => self.backoff(attempt),
        };
        self.within_budget(wait, started)
    }

    /// The wait before retrying after an attempt that got no response, or
    /// `None` to fail.
    pub(crate) fn after_failure(
        &self,
        failure: FailureKind,
        method: &Method,
        attempt: u32,
        started: Instant,
    ) -> Option<Duration> {
        // A connection that never opened sent nothing; anything else may
        // have reached the server.
        let retryable = match failure {
            FailureKind::Connect => true,
            FailureKind::Timeout | FailureKind::Exchange => is_idempotent(method) && !self.only_unprocessed,
            FailureKind::Invalid => false,
        };
        if !retryable || attempt >= self.max_attempts {
            return None;
        }
        self.within_budget(self.backoff(attempt), started)
    }

    /// Exponential backoff with jitter: between half and all of
    /// `initial * 2^(attempt - 1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
        let capped = exponential.min(self.max_backoff);
        capped.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The time after the first attempt within which a retry may start.
    pub(crate) fn budget(&self) -> Duration {
        if self.max_attempts > 1 {
            self.max_total
        } else {
            Duration::ZERO
        }
    }

    fn within_budget(&self, wait: Duration, started: Instant) -> Option<Duration> {
        (started.elapsed() + wait <= self.max_total).then_some(wait)
    }
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How an attempt that got no response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The connection never opened: nothing was sent.
    Connect,
    /// No response in time.
    Timeout,
    /// The request could not be built.
    Invalid,
    /// The connection failed during the exchange.
    Exchange,
}

/// The wait a `Retry-After` value asks for: seconds or an HTTP date.
fn wait_of(retry_after: &[u8]) -> Option<Duration> {
    let value = std::str::from_utf8(retry_after).ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let retry = Retry::new(&RetryPolicy {
            max_attempts: 10,
            initial_backoff_seconds: 0.1,
            max_backoff_seconds: 0.5,
            max_total_seconds: 60.0,
        });
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 500), (9, 500)] {
            for _ in 0..50 {
                let wait = retry.backoff(attempt).as_millis();
                assert!((full / 2..=full).contains(&wait), "attempt {attempt}: {wait} ms");
            }
        }
    }

    #[test]
    fn calls_that_change_state_are_retried_only_when_unprocessed() {
        let retry = Retry::new(&RetryPolicy::default()).only_unprocessed();
        let started = Instant::now();
        let after = |status: StatusCode, retry_after: Option<&'static [u8]>| {
            retry.after_response(status, || retry_after, &Method::POST, 1, started)
        };
        assert_eq!(
            after(StatusCode::SERVICE_UNAVAILABLE, Some(b"1")),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            after(StatusCode::TOO_MANY_REQUESTS, Some(b"2")),
            Some(Duration::from_secs(2))
        );
        // Without Retry-After the provider may have acted on it.
        assert_eq!(after(StatusCode::SERVICE_UNAVAILABLE, None), None);
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::BAD_REQUEST,
        ] {
            assert_eq!(after(status, Some(b"1")), None, "{status}");
        }
        // Even a GET is not retried after a timeout or a broken exchange.
        for failure in [FailureKind::Timeout, FailureKind::Exchange, FailureKind::Invalid] {
            assert_eq!(
                retry.after_failure(failure, &Method::GET, 1, started),
                None,
                "{failure:?}"
            );
        }
        assert!(
            retry
                .after_failure(FailureKind::Connect, &Method::POST, 1, started)
                .is_some()
        );
        // The integration's attempts still bound it.
        let once = Retry::new(&RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .only_unprocessed();
        assert_eq!(
            once.after_response(
                StatusCode::SERVICE_UNAVAILABLE,
                || Some(b"1"),
                &Method::POST,
                1,
                started
            ),
            None
        );
    }

    #[test]
    fn only_idempotent_methods_are_idempotent() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }
}
