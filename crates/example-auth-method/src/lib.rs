#![doc = include_str!("../README.md")]

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use integrations::definition::{Integration, is_header_name};
use integrations::method::{
    AccountContext, AuthDefinition, Authenticator, Credential, CredentialField, HeaderName, HeaderValue, MethodTable,
    Outgoing, Problems,
};
use integrations::secrecy::{ExposeSecret, SecretBox};
use integrations::{Error, ErrorKind, Result, async_trait};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// HMAC-SHA256 request signing, as payment and exchange APIs use it: every
/// request carries the account's key id, the time, and a signature made
/// with the account's secret over the time, the method, the path with its
/// query, and the body. The account's credentials are `key_id` and `secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacSigned {
    /// The header of the key id.
    #[serde(default = "default_key_id_header")]
    pub key_id_header: String,
    /// The header of the time, in Unix seconds.
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// The header of the signature, in lower-case hex.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
}

fn default_key_id_header() -> String {
    "X-Key-Id".to_owned()
}

fn default_timestamp_header() -> String {
    "X-Timestamp".to_owned()
}

fn default_signature_header() -> String {
    "X-Signature".to_owned()
}

impl HmacSigned {
    fn headers(&self) -> [(&'static str, &str); 3] {
        [
            ("auth.key_id_header", &self.key_id_header),
            ("auth.timestamp_header", &self.timestamp_header),
            ("auth.signature_header", &self.signature_header),
        ]
    }
}

impl AuthDefinition for HmacSigned {
    fn check_definition(&self, _: &Integration, problems: &mut Problems) {
        let headers = self.headers();
        for (i, (field, name)) in headers.iter().enumerate() {
            if !is_header_name(name) {
                problems.at(*field, format!("`{name}` is not a valid header name"));
            } else if let Some((first, _)) = headers[..i].iter().find(|(_, other)| other.eq_ignore_ascii_case(name)) {
                problems.at(*field, format!("`{name}` is already the header of {first}"));
            }
        }
    }

    fn credential_fields(&self) -> Vec<CredentialField> {
        vec![
            CredentialField::required("key_id", "the API key's id").shown(),
            CredentialField::required("secret", "the API key's signing secret"),
        ]
    }

    fn authenticator(&self, context: &AccountContext<'_>) -> Result<Arc<dyn Authenticator>> {
        let credential = |name| {
            context
                .account
                .credentials()
                .get(name)
                .map(ExposeSecret::expose_secret)
                .ok_or_else(|| context.error(ErrorKind::InvalidInput, format!("the account has no `{name}`")))
        };
        let header = |name: &str| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| context.error(ErrorKind::InvalidInput, format!("`{name}` is not a valid header name")))
        };
        let key_id = HeaderValue::from_str(credential("key_id")?).map_err(|_| {
            context.error(
                ErrorKind::InvalidInput,
                "credential `key_id` is not a valid header value",
            )
        })?;
        Ok(Arc::new(HmacAuthenticator {
            credential: Arc::new(Credential::header(header(&self.key_id_header)?, key_id)),
            secret: SecretBox::new(Box::from(credential("secret")?.as_bytes())),
            timestamp_header: header(&self.timestamp_header)?,
            signature_header: header(&self.signature_header)?,
        }))
    }
}

impl MethodTable for HmacSigned {
    const TYPE: &'static str = "hmac";
}

/// Signs one account's requests.
pub struct HmacAuthenticator {
    /// The key id, sent as it is.
    credential: Arc<Credential>,
    secret: SecretBox<[u8]>,
    timestamp_header: HeaderName,
    signature_header: HeaderName,
}

impl fmt::Debug for HmacAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacAuthenticator")
            .field("credential", &self.credential)
            .field("signature_header", &self.signature_header)
            .finish_non_exhaustive()
    }
}

/// The signature of a request made at `timestamp`: HMAC-SHA256 with
/// `secret` over `"{timestamp}\n{METHOD}\n{path?query}\n"` and the body, in
/// lower-case hex.
pub fn signature(secret: &[u8], timestamp: u64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}\n{method}\n{path_and_query}\n").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[async_trait]
impl Authenticator for HmacAuthenticator {
    async fn credential(&self) -> Result<Arc<Credential>> {
        Ok(Arc::clone(&self.credential))
    }

    // A refused signature cannot be made better: the 401 goes back to the
    // caller (the default `rejected`).

    fn signs_requests(&self) -> bool {
        true
    }

    fn sign(&self, request: &Outgoing<'_>) -> Result<Vec<(HeaderName, HeaderValue)>> {
        if request.streamed {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an hmac-signed request needs its whole body to sign: send it as bytes, not as a stream",
            ));
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let path_and_query = match request.url.query() {
            Some(query) => format!("{}?{query}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let signature = signature(
            self.secret.expose_secret(),
            timestamp,
            request.method.as_str(),
            &path_and_query,
            request.body.unwrap_or_default(),
        );
        let value = |text: String| HeaderValue::from_str(&text).unwrap_or_else(|_| unreachable!("digits and hex"));
        Ok(vec![
            (self.timestamp_header.clone(), value(timestamp.to_string())),
            (self.signature_header.clone(), value(signature)),
        ])
    }
}
