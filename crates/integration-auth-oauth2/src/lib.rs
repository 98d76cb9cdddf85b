#![doc = include_str!("../README.md")]

mod authenticator;
mod authorization;
mod client;
mod definition;
mod lookup;
mod redirect;
mod revoke;
mod store;
mod token_endpoint;

pub use authenticator::OAuth2Authenticator;
pub use authorization::{
    AuthorizationStart, Callback, MAX_CALLBACK_PARAMETERS, STATE_LIFETIME, VerifiedCallback, verify_callback,
};
pub use client::OAuth2Client;
pub use definition::{
    ClientAuthentication, ConnectionLookup, GrantType, OAuth2, RevokeAuthentication, RevokePlacement, RevokeRequest,
    RevokeVerb, RevokedToken, Scope, client,
};
pub use integration_core::method::Revocation;
pub use redirect::{CALLBACK_PATH, Realm, RedirectUri};
pub use store::{ACCESS_TOKEN, ACCESS_TOKEN_EXPIRES_AT, REFRESH_LEASE, REFRESH_TOKEN};
pub use token_endpoint::TokenSet;
