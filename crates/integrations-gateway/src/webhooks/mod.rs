//! Webhooks: events sent to the operator's endpoints, signed as the
//! [Standard Webhooks](https://www.standardwebhooks.com/) specification
//! says, so that any of its libraries verifies them.

pub mod delivery;
pub mod endpoints;
pub mod routes;
pub mod signature;

pub use delivery::{
    DEFAULT_SCHEDULE, Deliverer, DeliverySettings, WebhookWorkers, parse_duration, parse_schedule, spawn,
};
pub use endpoints::{DEFAULT_ROTATION_OVERLAP, Webhooks, check_url};
pub use signature::{SignatureError, WebhookSecret, sign, signature_header, verify};
