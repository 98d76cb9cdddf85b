//! Webhooks: events sent to the operator's endpoints, signed as the
//! [Standard Webhooks](https://www.standardwebhooks.com/) specification
//! says, so that any of its libraries verifies them.

pub mod signature;

pub use signature::{SignatureError, WebhookSecret, sign, signature_header, verify};
