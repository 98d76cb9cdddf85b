//! When and how long to wait before trying a request again.

use std::time::{Duration, Instant, SystemTime};

use integration_core::definition::{RateLimit, ResetUnit, RetryPolicy};
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
    /// How the provider signals rate limits beyond 429.
    rate_limit: Option<RateLimit>,
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
            rate_limit: None,
        }
    }

    /// The same, honouring the provider's rate-limit hints.
    pub(crate) fn with_rate_limit(self, rate_limit: Option<&RateLimit>) -> Self {
        // Looked up by lowercase name, as responses keep them.
        let rate_limit = rate_limit.cloned().map(|mut hint| {
            if let Some(when) = &mut hint.when {
                when.name.make_ascii_lowercase();
            }
            if let Some(header) = &mut hint.reset_header {
                header.make_ascii_lowercase();
            }
            hint
        });
        Self { rate_limit, ..self }
    }

    /// Whether a response with `status` says "rate limited", and the wait
    /// its headers ask for when they say.
    fn rate_limited<'r>(
        &self,
        status: StatusCode,
        header: &impl Fn(&str) -> Option<&'r [u8]>,
    ) -> (bool, Option<Duration>) {
        let hinted = self.rate_limit.as_ref().filter(|hint| {
            hint.statuses.contains(&status.as_u16())
                && hint.when.as_ref().is_none_or(|when| {
                    header(&when.name)
                        .and_then(|value| std::str::from_utf8(value).ok())
                        .is_some_and(|value| value.trim().eq_ignore_ascii_case(when.value.trim()))
                })
        });
        let limited = status == StatusCode::TOO_MANY_REQUESTS || hinted.is_some();
        if !limited {
            return (false, None);
        }
        let reset = self
            .rate_limit
            .as_ref()
            .and_then(|hint| Some((hint.reset_header.as_deref()?, hint.reset_unit)))
            .and_then(|(name, unit)| reset_wait(header(name)?, unit));
        (true, reset.or_else(|| header("retry-after").and_then(wait_of)))
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
    /// to return it; `header` looks up its headers by lowercase name, only
    /// when the status makes them count.
    pub(crate) fn after_response<'r>(
        &self,
        status: StatusCode,
        header: impl Fn(&str) -> Option<&'r [u8]>,
        method: &Method,
        attempt: u32,
        started: Instant,
    ) -> Option<Duration> {
        // Most responses: nothing to look at.
        if !(status.is_client_error() || status.is_server_error()) {
            return None;
        }
        let (rate_limited, limited_wait) = self.rate_limited(status, &header);
        if self.only_unprocessed {
            let wait = if rate_limited {
                limited_wait?
            } else if status == StatusCode::SERVICE_UNAVAILABLE {
                header("retry-after").and_then(wait_of)?
            } else {
                return None;
            };
            return (attempt < self.max_attempts)
                .then_some(wait)
                .and_then(|wait| self.within_budget(wait, started));
        }
        let retryable = match status {
            // Not processed: safe to send again whatever the method.
            _ if rate_limited => true,
            StatusCode::SERVICE_UNAVAILABLE => is_idempotent(method),
            status if status.is_server_error() => is_idempotent(method),
            _ => false,
        };
        if !retryable || attempt >= self.max_attempts {
            return None;
        }
        let asked = if rate_limited {
            limited_wait
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            header("retry-after").and_then(wait_of)
        } else {
            None
        };
        self.within_budget(asked.unwrap_or_else(|| self.backoff(attempt)), started)
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

/// The wait a rate-limit reset header's `value` asks for, read as `unit`.
fn reset_wait(value: &[u8], unit: ResetUnit) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let until = |at: SystemTime| at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    match unit {
        ResetUnit::Seconds => text
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        ResetUnit::EpochSeconds => Some(until(
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(text.parse().ok()?))?,
        )),
        ResetUnit::EpochMilliseconds => Some(until(
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(text.parse().ok()?))?,
        )),
        ResetUnit::HttpDate => httpdate::parse_http_date(text).ok().map(until),
    }
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
            retry.after_response(status, |_| retry_after, &Method::POST, 1, started)
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
                |_| Some(b"1".as_slice()),
                &Method::POST,
                1,
                started
            ),
            None
        );
    }

    #[test]
    fn rate_limit_hints_say_which_responses_wait_and_how_long() {
        use integration_core::definition::HeaderMatch;

        let github = Retry::new(&RetryPolicy {
            max_total_seconds: 120.0,
            ..RetryPolicy::default()
        })
        .with_rate_limit(Some(&RateLimit {
            statuses: vec![403],
            when: Some(HeaderMatch {
                name: "X-RateLimit-Remaining".to_owned(),
                value: "0".to_owned(),
            }),
            reset_header: Some("X-RateLimit-Reset".to_owned()),
            reset_unit: ResetUnit::EpochSeconds,
        }));
        let started = Instant::now();
        let in_a_minute = (SystemTime::now() + Duration::from_secs(60))
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            .to_string();
        let headers = |remaining: &'static str| {
            let reset = in_a_minute.clone();
            move |name: &str| -> Option<Vec<u8>> {
                match name {
                    "x-ratelimit-remaining" => Some(remaining.as_bytes().to_vec()),
                    "x-ratelimit-reset" => Some(reset.as_bytes().to_vec()),
                    _ => None,
                }
            }
        };
        let after = |status: StatusCode, remaining: &'static str, method: &Method| {
            let lookup = headers(remaining);
            let values: Vec<(&str, Option<Vec<u8>>)> = ["x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"]
                .into_iter()
                .map(|name| (name, lookup(name)))
                .collect();
            github.after_response(
                status,
                |name| values.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref()),
                method,
                1,
                started,
            )
        };
        // A 403 with no request left waits for the reset, even for a POST:
        // the provider did nothing.
        let wait = after(StatusCode::FORBIDDEN, "0", &Method::POST).expect("rate limited");
        assert!(
            (Duration::from_secs(55)..=Duration::from_secs(61)).contains(&wait),
            "{wait:?}"
        );
        // A 403 with requests left is a refusal.
        assert_eq!(after(StatusCode::FORBIDDEN, "12", &Method::GET), None);
        // A 429 waits for the reset too.
        assert!(after(StatusCode::TOO_MANY_REQUESTS, "0", &Method::GET).is_some());
        // A reset past the retry budget returns the response.
        let short = github.clone();
        let short = Retry {
            max_total: Duration::from_secs(10),
            ..short
        };
        let lookup = headers("0");
        let reset = lookup("x-ratelimit-reset");
        let remaining = lookup("x-ratelimit-remaining");
        assert_eq!(
            short.after_response(
                StatusCode::FORBIDDEN,
                |name| match name {
                    "x-ratelimit-reset" => reset.as_deref(),
                    "x-ratelimit-remaining" => remaining.as_deref(),
                    _ => None,
                },
                &Method::GET,
                1,
                started
            ),
            None
        );
        let in_two_hours = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
        for (value, unit, least) in [
            ("30", ResetUnit::Seconds, 29),
            (in_two_hours.as_str(), ResetUnit::HttpDate, 3600),
        ] {
            assert!(
                reset_wait(value.as_bytes(), unit).is_some_and(|wait| wait >= Duration::from_secs(least)),
                "{value}"
            );
        }
        let millis = (SystemTime::now() + Duration::from_secs(5))
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis()
            .to_string();
        assert!(
            reset_wait(millis.as_bytes(), ResetUnit::EpochMilliseconds)
                .is_some_and(|wait| wait <= Duration::from_secs(5))
        );
        assert_eq!(reset_wait(b"soon", ResetUnit::EpochSeconds), None);
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
