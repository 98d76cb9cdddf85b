//! Redirect URIs: the deployment's public base URL plus the callback path.

use std::fmt;
use std::str::FromStr;

use integration_core::{Error, ErrorKind, Result};
use url::Url;

/// The path of the OAuth 2.0 callback on every deployment.
pub const CALLBACK_PATH: &str = "/internal/sessions/v1/auth/callback";

/// The spec's realms, whose redirect URIs are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Realm {
    /// `https://us.api.prod.airkit.com`.
    Us,
    /// `https://eu.api.prod.airkit.com`.
    Eu,
    /// `https://ap.api.prod.airkit.com`.
    Ap,
}

impl Realm {
    /// The realm's public base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Us => "https://us.api.prod.airkit.com",
            Self::Eu => "https://eu.api.prod.airkit.com",
            Self::Ap => "https://ap.api.prod.airkit.com",
        }
    }
}

impl FromStr for Realm {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "us" => Ok(Self::Us),
            "eu" => Ok(Self::Eu),
            "ap" => Ok(Self::Ap),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("unknown realm `{name}`: use us, eu or ap"),
            )),
        }
    }
}

/// The redirect URI OAuth 2.0 providers send the user back to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedirectUri(Url);

impl RedirectUri {
    /// `public_base_url` plus [`CALLBACK_PATH`]. The base must be http(s)
    /// without query or fragment; a path on it is kept (for a gateway
    /// behind a path prefix).
    pub fn from_public_base_url(public_base_url: &str) -> Result<Self> {
        let invalid = |message: String| Error::new(ErrorKind::InvalidInput, message);
        let base = Url::parse(public_base_url).map_err(|e| invalid(format!("invalid public base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(
                "the public base URL must be http(s), without query or fragment".to_owned(),
            ));
        }
        let mut url = base.clone();
        url.set_path(&format!("{}{CALLBACK_PATH}", base.path().trim_end_matches('/')));
        Ok(Self(url))
    }

    /// The redirect URI of one of the spec's realms.
    pub fn realm(realm: Realm) -> Self {
        Self::from_public_base_url(realm.base_url()).unwrap_or_else(|_| unreachable!("realm URLs are valid"))
    }

    /// The URI as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URI.
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedirectUri({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_the_spec_urls() {
        assert_eq!(
            RedirectUri::realm(Realm::Us).as_str(),
            "https://us.api.prod.airkit.com/internal/sessions/v1/auth/callback"
        );
        assert_eq!(
            RedirectUri::realm(Realm::Eu).as_str(),
            "https://eu.api.prod.airkit.com/internal/sessions/v1/auth/callback"
        );
        assert_eq!(
            RedirectUri::realm(Realm::Ap).as_str(),
            "https://ap.api.prod.airkit.com/internal/sessions/v1/auth/callback"
        );
    }

    #[test]
    fn a_base_path_is_kept() {
        assert_eq!(
            RedirectUri::from_public_base_url("https://gw.example/integrations/")
                .expect("valid")
                .as_str(),
            "https://gw.example/integrations/internal/sessions/v1/auth/callback"
        );
        assert!(RedirectUri::from_public_base_url("ftp://x").is_err());
        assert!(RedirectUri::from_public_base_url("https://x/?a=1").is_err());
    }
}
