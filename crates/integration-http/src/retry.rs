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
}

impl Retry {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let seconds = |value: f64| Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX);
        Self {
            max_attempts: policy.max_attempts.max(1),
            initial_backoff: seconds(policy.initial_backoff_seconds),
            max_backoff: seconds(policy.max_backoff_seconds),
            max_total: seconds(policy.max_total_seconds),
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
            FailureKind::Timeout | FailureKind::Exchange => is_idempotent(method),
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
    fn only_idempotent_methods_are_idempotent() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }
}
