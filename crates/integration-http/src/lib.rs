#![doc = include_str!("../README.md")]

mod account;
mod client;
mod headers;
mod hosts;
mod lifetime;
pub mod metrics;
mod relay;
mod request;
mod retry;
mod tls;
pub mod token;

pub use account::AccountClient;
pub use client::HttpClient;
pub use hosts::{check_destination, check_scheme};
pub use integration_core::method::{Authenticator, Credential};
pub use lifetime::{DEFAULT_RENEWAL_MARGIN, renew_at};
pub use relay::{ForwardBody, RawHeaders, RawResponse, fuzzing};
pub use request::RequestBuilder;
pub use tls::{CA_BUNDLE_VARIABLE, read_ca_bundle};

/// Re-exported so that callers name the same types.
pub use reqwest::{self, Method, Response, StatusCode, header};
