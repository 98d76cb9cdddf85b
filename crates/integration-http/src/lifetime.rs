//! When to renew a token.

use std::time::Duration;

use integration_core::time::{self, OffsetDateTime};

/// How long before expiry a token is renewed when the definition's
/// `refresh_margin_seconds` does not say.
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(60);

/// When to renew a token that expires at `expires_at`, obtained now:
/// `margin` before it expires, but no earlier than halfway through its
/// remaining lifetime, so a short-lived token is not renewed on every use.
/// `None` when the token does not expire.
pub fn renew_at(expires_at: Option<OffsetDateTime>, margin: Duration) -> Option<OffsetDateTime> {
    let expires_at = expires_at?;
    let lifetime = (expires_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let margin = time::Duration::try_from(margin).unwrap_or(lifetime);
    Some(expires_at - margin.min(lifetime / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_before_expiry_but_not_before_half_the_lifetime() {
        let now = OffsetDateTime::now_utc();
        let long = renew_at(Some(now + Duration::from_secs(3600)), Duration::from_secs(60)).expect("renew");
        assert!((long - (now + Duration::from_secs(3540))).abs() < time::Duration::seconds(2));
        let short = renew_at(Some(now + Duration::from_secs(20)), Duration::from_secs(60)).expect("renew");
        assert!((short - (now + Duration::from_secs(10))).abs() < time::Duration::seconds(2));
        assert!(renew_at(None, Duration::from_secs(60)).is_none());
    }
}
