#![doc = include_str!("../README.md")]

mod account;
mod auth;
mod client;
mod hosts;
mod request;
mod retry;

pub use account::AccountClient;
pub use auth::{Authenticator, Credential};
pub use client::HttpClient;
pub use request::RequestBuilder;

/// Re-exported so that callers name the same types.
pub use reqwest::{self, Method, Response, StatusCode, header};
