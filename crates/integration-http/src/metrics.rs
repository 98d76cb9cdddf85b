//! The metrics the auth methods record through the `metrics` facade: free
//! when no recorder is installed (the gateway installs a Prometheus one).
//! Labels never carry an account id.

/// Token endpoint calls, by `integration` and `outcome` (`success`,
/// `invalid_grant`, `refused`, `error`).
pub const TOKEN_REQUESTS: &str = "integrations_token_requests_total";
/// OAuth 2.0 refreshes, by `integration` and `outcome` (`success`,
/// `failure`, `needs_reauth`).
pub const REFRESHES: &str = "integrations_refreshes_total";

/// Counts a token endpoint call of `integration`.
pub fn token_request(integration: &str, outcome: &'static str) {
    metrics::counter!(TOKEN_REQUESTS, "integration" => integration.to_owned(), "outcome" => outcome).increment(1);
}

/// Counts a refresh of `integration`.
pub fn refresh(integration: &str, outcome: &'static str) {
    metrics::counter!(REFRESHES, "integration" => integration.to_owned(), "outcome" => outcome).increment(1);
}
