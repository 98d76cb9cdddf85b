//! Connect sessions: a product's backend asks for one (with an API key),
//! and its end user connects one account through the gateway's public
//! connect page with the session's token, never seeing an API key.
//!
//! A session allows creating or reconnecting exactly one account, once,
//! until it expires. Only the SHA-256 of its token is stored.

pub mod admin;
pub mod callback;
mod destinations;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integrations::auth::oauth2::{CALLBACK_PATH, RedirectUri};
use integrations::crypto::random_bytes;
use integrations::storage::ConnectSession;
use integrations::time::OffsetDateTime;
use integrations::{AccountId, EndUser, Error, ErrorKind, Integrations, Result};
use sha2::Digest as _;
use url::Url;

/// How long a session lasts unless told.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// The longest a session may last: a link sent by email may wait a week.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The shortest a session may last.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// The most integrations a session offers, and the most allowed origins.
pub const MAX_CHOICES: usize = 20;
/// What every session token starts with, so that a leaked one is
/// recognised (by secret scanners, say).
pub const TOKEN_PREFIX: &str = "ics_";
/// The most credential checks and server probes one session makes: enough
/// for a few typos, too few to try passwords at the gateway's expense.
pub const MAX_ATTEMPTS: u32 = 10;
/// The largest body the public session routes read: a private key and a
/// few parameters fit.
pub const MAX_BODY: usize = 64 * 1024;
/// The path of the connect page of sessions.
pub const PAGE_PATH: &str = "/connect/session";

/// What a session is for, as the product's backend asks for it.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    /// The integrations the end user may choose from; at least one.
    pub integrations: Vec<String>,
    /// The account to create or reconnect; a new id when `None`.
    pub account: Option<String>,
    /// Kept on the account.
    pub end_user: Option<EndUser>,
    /// Parameter values the product sets for a new account, which the end
    /// user neither sees nor changes (a self-hosted server's URL, say); not
    /// secret ones.
    pub parameters: BTreeMap<String, String>,
    /// The origins the outcome may be posted to.
    pub allowed_origins: Vec<String>,
    /// Where a full-page flow returns.
    pub return_url: Option<String>,
    /// How long it lasts: [`DEFAULT_TTL`] unless told.
    pub ttl: Option<Duration>,
}

/// A session just made: its token is shown this once.
pub struct CreatedSession {
    /// The session token; only its hash is stored.
    pub token: String,
    /// The connect page of the session, its token in the fragment (which
    /// browsers never send to a server, nor put in a `Referer`).
    pub connect_url: String,
    /// The stored record.
    pub session: ConnectSession,
}

impl std::fmt::Debug for CreatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSession")
            .field("account", &self.session.account)
            .finish_non_exhaustive()
    }
}

/// The gateway's public base URL (`https://gateway.example.com`), from its
/// OAuth 2.0 redirect URI.
pub fn public_base(redirect_uri: &RedirectUri) -> String {
    redirect_uri
        .as_str()
        .strip_suffix(CALLBACK_PATH)
        .unwrap_or(redirect_uri.as_str())
        .to_owned()
}

/// The origin (`scheme://host[:port]`) of the gateway's public URL.
pub fn public_origin(redirect_uri: &RedirectUri) -> String {
    redirect_uri.url().origin().ascii_serialization()
}

/// Checks `request` against the definitions and the store, and stores a new
/// session for it.
pub async fn create_session(
    integrations: &Integrations,
    redirect_uri: &RedirectUri,
    request: SessionRequest,
) -> Result<CreatedSession> {
    let invalid = |message: String| Error::new(ErrorKind::InvalidInput, message);
    let ttl = request.ttl.unwrap_or(DEFAULT_TTL);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(invalid(format!(
            "`ttl` must be from {} s to {} s (7 days)",
            MIN_TTL.as_secs(),
            MAX_TTL.as_secs()
        )));
    }
    let allowed_origins = request
        .allowed_origins
        .iter()
        .map(|origin| parse_origin(origin))
        .collect::<Result<BTreeSet<_>>>()?;
    if allowed_origins.len() > MAX_CHOICES {
        return Err(invalid(format!(
            "`allowed_origins` holds at most {MAX_CHOICES} origins"
        )));
    }
    let return_url = match &request.return_url {
        None => None,
        Some(url) => {
            let parsed = Url::parse(url)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                .ok_or_else(|| invalid("`return_url` must be an absolute http or https URL".to_owned()))?;
            if !allowed_origins.contains(&parsed.origin().ascii_serialization()) {
                return Err(invalid(format!(
                    "`return_url` must be on one of `allowed_origins`; add `{}`",
                    parsed.origin().ascii_serialization()
                )));
            }
            Some(parsed.to_string())
        }
    };
    let mut seen = BTreeSet::new();
    let mut keys = request.integrations.clone();
    keys.retain(|key| seen.insert(key.clone()));
    if keys.len() > MAX_CHOICES {
        return Err(invalid(format!("a session offers at most {MAX_CHOICES} integrations")));
    }
    for key in &keys {
        integrations.integration(key)?;
    }
    let account = match &request.account {
        Some(id) => AccountId::new(id.as_str())?,
        None => AccountId::new(format!("acct-{}", hex(&random_bytes::<8>())))?,
    };
    let reconnect = match integrations.store().storage().account(&account).await? {
        Some(existing) => {
            if keys.is_empty() {
                keys.push(existing.integration.clone());
            } else if keys != [existing.integration.clone()] {
                return Err(invalid(format!(
                    "account `{account}` exists with integration `{}`: a session reconnects it with that integration only",
                    existing.integration
                )));
            }
            true
        }
        None => false,
    };
    if keys.is_empty() {
        return Err(invalid(
            "`integration` is required: the integration to connect".to_owned(),
        ));
    }
    if reconnect && !request.parameters.is_empty() {
        return Err(invalid(
            "`parameters`: a reconnect keeps the account's parameters; give none".to_owned(),
        ));
    }
    for name in request.parameters.keys() {
        for key in &keys {
            let integration = integrations.integration(key)?;
            match integration.parameters.iter().find(|parameter| parameter.name == *name) {
                None => {
                    return Err(invalid(format!(
                        "`parameters.{name}`: integration `{key}` has no such parameter"
                    )));
                }
                Some(parameter) if parameter.secret => {
                    return Err(invalid(format!(
                        "`parameters.{name}` is secret: sessions are stored unsealed, so the end user gives it"
                    )));
                }
                Some(_) => {}
            }
        }
    }
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let now = OffsetDateTime::now_utc();
    let session = ConnectSession {
        token_hash: token_hash(&token),
        account,
        integrations: keys,
        reconnect,
        end_user: request.end_user,
        allowed_origins: allowed_origins.into_iter().collect(),
        return_url,
        created_at: now,
        expires_at: now + ttl,
        completed_at: None,
        created_pending: false,
        pending_created_at: None,
        parameters: request.parameters,
        attempts: 0,
    };
    let storage = integrations.store().storage();
    // Best effort: expired sessions are refused anyway. Kept a while past
    // their expiry, for the callback of an authorization started in time.
    let long_expired = now - integrations::auth::oauth2::STATE_LIFETIME;
    if let Err(error) = storage.delete_expired_connect_sessions(long_expired).await {
        tracing::warn!(%error, "cannot delete expired connect sessions");
    }
    storage.insert_connect_session(&session).await?;
    Ok(CreatedSession {
        connect_url: format!("{}{PAGE_PATH}#{token}", public_base(redirect_uri)),
        token,
        session,
    })
}

/// A time as RFC 3339, as the API shows times.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    use integrations::time::format_description::well_known::Rfc3339;
    at.format(&Rfc3339).unwrap_or_default()
}

/// Lowercase hex SHA-256 of a session token: the key it is stored under.
pub fn token_hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, the
/// port left out when it is the scheme's default.
fn parse_origin(origin: &str) -> Result<String> {
    let invalid = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "`allowed_origins`: `{}` is not an origin such as `https://app.example.com` (scheme, host and port only)",
                origin.chars().take(100).collect::<String>()
            ),
        )
    };
    let url = Url::parse(origin).map_err(|_| invalid())?;
    let bare = url.path() == "/" && !origin.ends_with('/') && url.query().is_none() && url.fragment().is_none();
    let user_info = !url.username().is_empty() || url.password().is_some();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare || user_info {
        return Err(invalid());
    }
    Ok(url.origin().ascii_serialization())
}

/// Why a session token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No session has this token.
    Unknown,
    /// Past its `expires_at`.
    Expired,
    /// An account was connected with it already.
    Used,
    /// Too many credential checks or probes were made with it.
    Exhausted,
}

impl Refusal {
    /// What the end user is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => "This connect link is not valid. Ask for a new one.",
            Self::Expired => "This connect link has expired. Ask for a new one.",
            Self::Used => "This connect link was used already. Ask for a new one to connect again.",
            Self::Exhausted => "This connect link was tried too many times. Ask for a new one.",
        }
    }

    /// The machine-readable kind, in API errors.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Unknown => "session_unknown",
            Self::Expired => "session_expired",
            Self::Used => "session_used",
            Self::Exhausted => "session_exhausted",
        }
    }
}

/// The open session of `token`, or why it is refused.
pub async fn open_session(
    integrations: &Integrations,
    token: &str,
) -> Result<std::result::Result<ConnectSession, Refusal>> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 100 {
        return Ok(Err(Refusal::Unknown));
    }
    let Some(session) = integrations
        .store()
        .storage()
        .connect_session(&token_hash(token))
        .await?
    else {
        return Ok(Err(Refusal::Unknown));
    };
    Ok(check_open(session))
}

/// `session`, if it is neither used nor expired.
pub fn check_open(session: ConnectSession) -> std::result::Result<ConnectSession, Refusal> {
    if session.completed_at.is_some() {
        Err(Refusal::Used)
    } else if OffsetDateTime::now_utc() >= session.expires_at {
        Err(Refusal::Expired)
    } else if session.attempts >= MAX_ATTEMPTS {
        Err(Refusal::Exhausted)
    } else {
        Ok(session)
    }
}

/// Marks `session` completed, if no one else did first: `None` when it was
/// completed meanwhile, or is gone. A change to something else (an attempt
/// counted) is read again and the claim retried. Undo with [`reopen`] when
/// what it was claimed for fails.
pub async fn claim(integrations: &Integrations, session: &ConnectSession) -> Result<Option<ConnectSession>> {
    change(integrations, session, |session| {
        if session.completed_at.is_some() {
            return false;
        }
        session.completed_at = Some(OffsetDateTime::now_utc());
        true
    })
    .await
}

/// Counts one credential check or probe against `session`, before it is
/// made: the refusal once the session is used, expired or out of attempts.
pub async fn count_attempt(
    integrations: &Integrations,
    session: &ConnectSession,
) -> Result<std::result::Result<ConnectSession, Refusal>> {
    let counted = change(integrations, session, |session| {
        if check_open(session.clone()).is_err() {
            return false;
        }
        session.attempts += 1;
        true
    })
    .await?;
    if let Some(counted) = counted {
        return Ok(Ok(counted));
    }
    let current = integrations
        .store()
        .storage()
        .connect_session(&session.token_hash)
        .await?;
    Ok(Err(current.map_or(Refusal::Unknown, |current| {
        check_open(current).err().unwrap_or(Refusal::Exhausted)
    })))
}

/// Applies `edit` to the stored `session` by compare-and-swap, reading it
/// again when it changed meanwhile; `None` when `edit` declines (returns
/// false) or the session is gone.
pub async fn change(
    integrations: &Integrations,
    session: &ConnectSession,
    edit: impl Fn(&mut ConnectSession) -> bool,
) -> Result<Option<ConnectSession>> {
    let storage = integrations.store().storage();
    let mut current = session.clone();
    for _ in 0..10 {
        let mut next = current.clone();
        if !edit(&mut next) {
            return Ok(None);
        }
        if storage.update_connect_session(&current, &next).await? {
            return Ok(Some(next));
        }
        match storage.connect_session(&session.token_hash).await? {
            Some(stored) => current = stored,
            None => return Ok(None),
        }
    }
    Err(Error::new(
        ErrorKind::Conflict,
        "the connect session kept changing: try again",
    ))
}

/// Opens a claimed session again, after what it was claimed for failed.
pub async fn reopen(integrations: &Integrations, claimed: &ConnectSession) {
    let reopened = change(integrations, claimed, |session| {
        session.completed_at = None;
        true
    })
    .await;
    if let Err(error) = reopened {
        tracing::warn!(%error, account = %claimed.account, "cannot reopen a connect session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_alone() {
        assert_eq!(
            parse_origin("https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("https://app.example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(parse_origin("http://127.0.0.1:3000").unwrap(), "http://127.0.0.1:3000");
        for bad in [
            "*",
            "null",
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "javascript:alert(1)",
            "ftp://files.example.com",
            "https://user@app.example.com",
            "https://:secret@app.example.com",
        ] {
            let error = parse_origin(bad).unwrap_err().to_string();
            assert!(error.contains("allowed_origins"), "{bad}: {error}");
        }
    }

    #[test]
    fn tokens_hash_to_hex() {
        assert_eq!(token_hash("ics_x").len(), 64);
        assert_ne!(token_hash("ics_x"), token_hash("ics_y"));
    }
}
