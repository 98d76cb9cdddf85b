#![doc = include_str!("../README.md")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use integration_core::definition::Format;
use integration_core::method::{AccountContext, AuthMethod, Credential, MethodTable, Services, TableMethod};
use integration_core::secrecy::SecretString;
use integration_core::{
    AccountId, AccountStore, Cipher, ConnectedAccount, Definitions, EncryptionKey, ErrorKind, NewAccount, Secrets,
};
use integration_http::{AccountClient, HttpClient};
use integration_storage_memory::MemoryStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The placeholder a case's definitions use for the local token server's
/// base URL, `http://127.0.0.1:PORT`.
pub const SERVER: &str = "$SERVER";

/// What the suite needs to know of one method.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// One `[[integration]]` in TOML that uses the method, its URLs on
    /// [`SERVER`].
    pub definition: String,
    /// A valid account's parameter values.
    pub parameters: Vec<(&'static str, &'static str)>,
    /// A valid account's credentials.
    pub credentials: Vec<(&'static str, &'static str)>,
    /// Definitions that must be refused, each with a part of the message
    /// expected.
    pub bad_definitions: Vec<(String, &'static str)>,
    /// Whether a new credential can help after a 401: true for a method
    /// that obtains tokens.
    pub renews_after_401: bool,
}

/// Registers `T` and checks its name and schema.
#[doc(hidden)]
pub fn type_name_and_schema<T: MethodTable>() {
    integration_core::method::register::<T>();
    let name = T::TYPE;
    assert!(
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "`{name}`: a type name is lower-case ASCII letters, digits and `_`, starting with a letter"
    );
    assert!(integration_core::method::registered().contains(&name));
    let schema = TableMethod::<T>::default().table_schema();
    assert!(schema.is_object(), "the table's schema is an object: {schema}");
    assert!(
        !schema.to_string().contains("\"$ref\""),
        "the table's schema must be inlined: {schema}"
    );
}

/// A local server that answers every request with a new token.
struct TokenServer {
    base: String,
    served: Arc<AtomicUsize>,
}

impl TokenServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the token server");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0; 4096];
                    // The head, then as much body as it announces.
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!(
                        r#"{{"access_token":"tok-s3cret-{n}","token":"tok-s3cret-{n}","refresh_token":"ref-s3cret-{n}","token_type":"Bearer","expires_in":3600}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { base, served }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs
        .iter()
        .map(|(name, value)| (*name, SecretString::from((*value).to_owned())))
        .collect()
}

/// The case's definitions on `server`, an empty store and the account.
struct Fixture {
    definitions: Definitions,
    store: AccountStore,
    services: Services,
}

impl Fixture {
    fn new<T: MethodTable>(case: &Case, server: &TokenServer) -> Self {
        integration_core::method::register::<T>();
        let text = case.definition.replace(SERVER, &server.base);
        let definitions = Definitions::from_str(&text, Format::Toml).unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(definitions.len(), 1, "a case defines one integration");
        let store = AccountStore::new(Arc::new(MemoryStorage::new()), Cipher::new(&EncryptionKey::generate()));
        let mut services = Services::new();
        services.insert(HttpClient::new().expect("HTTP client"));
        Self {
            definitions,
            store,
            services,
        }
    }

    async fn create(
        &self,
        parameters: &[(&str, &str)],
        credentials: &[(&str, &str)],
    ) -> integration_core::Result<ConnectedAccount> {
        let integration = self.definitions.iter().next().expect("one integration");
        self.store
            .create(
                integration,
                NewAccount {
                    id: AccountId::new("conformance").expect("id"),
                    parameters: secrets(parameters),
                    credentials: secrets(credentials),
                },
            )
            .await
    }

    fn context<'a>(&'a self, account: &'a ConnectedAccount) -> AccountContext<'a> {
        AccountContext {
            account,
            integration: self.definitions.iter().next().expect("one integration"),
            store: &self.store,
            services: &self.services,
        }
    }
}

/// What a credential carries, for comparing two.
fn carried(credential: &Credential) -> String {
    match (credential.expose_token(), credential.ready_header()) {
        (Some(token), _) => token.to_owned(),
        (None, Some((_, value))) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        (None, None) => String::new(),
    }
}

#[doc(hidden)]
pub async fn debug_never_shows_a_secret<T: MethodTable>(case: Case) {
    let server = TokenServer::start().await;
    let fixture = Fixture::new::<T>(&case, &server);
    let account = fixture
        .create(&case.parameters, &case.credentials)
        .await
        .unwrap_or_else(|error| panic!("the case's account is valid: {error}"));
    let integration = fixture.definitions.iter().next().expect("one integration");
    let mut shown = format!("{:?} {:?} {account:?}", fixture.definitions, integration.auth);
    let mut secrets: Vec<String> = case
        .credentials
        .iter()
        .filter(|(name, _)| {
            integration
                .auth
                .credential_fields()
                .iter()
                .any(|field| field.name == *name && field.secret)
        })
        .map(|(_, value)| (*value).to_owned())
        .collect();
    secrets.extend(
        case.parameters
            .iter()
            .filter(|(name, _)| integration.parameter(name).is_some_and(|p| p.secret))
            .map(|(_, value)| (*value).to_owned()),
    );
    if integration.auth.makes_http_requests() {
        let authenticator = integration
            .auth
            .authenticator(&fixture.context(&account))
            .unwrap_or_else(|error| panic!("authenticator: {error}"));
        let credential = authenticator
            .credential()
            .await
            .unwrap_or_else(|error| panic!("credential: {error}"));
        secrets.push(carried(&credential));
        let client = AccountClient::new(
            &account,
            integration,
            HttpClient::new().expect("HTTP client"),
            Arc::clone(&authenticator),
        )
        .unwrap_or_else(|error| panic!("account client: {error}"));
        shown.push_str(&format!(" {authenticator:?} {credential:?} {client:?}"));
    }
    for secret in secrets.iter().filter(|secret| secret.len() >= 4) {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret shows in Debug output: {shown}"
        );
    }
    assert!(!shown.contains("s3cret"), "a secret shows in Debug output: {shown}");
}

#[doc(hidden)]
pub fn bad_definitions_are_refused<T: MethodTable>(case: Case) {
    integration_core::method::register::<T>();
    assert!(
        !case.bad_definitions.is_empty(),
        "a case lists definitions its method refuses"
    );
    for (text, expected) in &case.bad_definitions {
        let text = text.replace(SERVER, "https://server.example");
        let errors = Definitions::from_str(&text, Format::Toml)
            .err()
            .unwrap_or_else(|| panic!("must be refused: {text}"));
        let found = errors
            .errors()
            .iter()
            .any(|error| error.path.starts_with("integration[0]") && error.message.contains(expected));
        assert!(
            found,
            "expected `{expected}` at a path of integration[0], got:\n{errors}"
        );
        assert!(
            !errors.to_string().contains("s3cret"),
            "an error quotes a secret: {errors}"
        );
    }
}

#[doc(hidden)]
pub async fn credentials_are_checked<T: MethodTable>(case: Case) {
    let server = TokenServer::start().await;
    let fixture = Fixture::new::<T>(&case, &server);
    let integration = fixture.definitions.iter().next().expect("one integration");
    for field in integration
        .auth
        .credential_fields()
        .iter()
        .filter(|field| field.required)
    {
        let without: Vec<(&str, &str)> = case
            .credentials
            .iter()
            .copied()
            .filter(|(name, _)| *name != field.name)
            .collect();
        let error = fixture
            .create(&case.parameters, &without)
            .await
            .err()
            .unwrap_or_else(|| panic!("an account without `{}` must be refused", field.name));
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let message = error.to_string();
        assert!(
            message.contains(&format!("missing credential `{}`", field.name)),
            "{message}"
        );
    }
    let mut unknown = case.credentials.clone();
    unknown.push(("not_a_credential", "s3cret-value"));
    let error = fixture
        .create(&case.parameters, &unknown)
        .await
        .err()
        .unwrap_or_else(|| panic!("an unknown credential must be refused"));
    let message = error.to_string();
    assert!(message.contains("unknown credential `not_a_credential`"), "{message}");
    assert!(!message.contains("s3cret"), "an error quotes a secret: {message}");
}

#[doc(hidden)]
pub async fn after_a_401<T: MethodTable>(case: Case) {
    let server = TokenServer::start().await;
    let fixture = Fixture::new::<T>(&case, &server);
    let integration = fixture.definitions.iter().next().expect("one integration");
    if !integration.auth.makes_http_requests() {
        let account = fixture
            .create(&case.parameters, &case.credentials)
            .await
            .expect("account");
        assert!(
            integration.auth.authenticator(&fixture.context(&account)).is_err(),
            "a method that makes no HTTP requests refuses to build an authenticator"
        );
        return;
    }
    let account = fixture
        .create(&case.parameters, &case.credentials)
        .await
        .expect("account");
    let authenticator = integration
        .auth
        .authenticator(&fixture.context(&account))
        .unwrap_or_else(|error| panic!("authenticator: {error}"));
    let first = authenticator.credential().await.expect("credential");
    let again = authenticator.credential().await.expect("credential");
    assert_eq!(carried(&first), carried(&again), "a valid credential is reused");
    let calls = server.served();
    let renew = authenticator.rejected(&first).await.expect("rejected");
    assert_eq!(renew, case.renews_after_401, "whether a 401 can be helped");
    let next = authenticator.credential().await.expect("credential");
    if case.renews_after_401 {
        assert_ne!(carried(&first), carried(&next), "a new credential after a 401");
        assert_eq!(server.served(), calls + 1, "exactly one token call after a 401");
        let again = authenticator.credential().await.expect("credential");
        assert_eq!(carried(&next), carried(&again), "the new credential is reused");
        assert_eq!(server.served(), calls + 1, "no further token call");
    } else {
        assert_eq!(
            carried(&first),
            carried(&next),
            "a credential that cannot be renewed is kept"
        );
        assert_eq!(server.served(), calls, "no token call");
    }
}

/// A runtime for the suite's tests.
#[doc(hidden)]
pub fn __runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The conformance tests of method `$table` (a [`MethodTable`]) with the
/// [`Case`] `$case`.
#[macro_export]
macro_rules! method_conformance {
    ($table:ty, $case:expr $(,)?) => {
        mod method_conformance {
            use super::*;

            #[test]
            fn type_name_and_schema() {
                $crate::type_name_and_schema::<$table>();
            }

            #[test]
            fn debug_never_shows_a_secret() {
                $crate::__runtime().block_on($crate::debug_never_shows_a_secret::<$table>($case));
            }

            #[test]
            fn bad_definitions_are_refused() {
                $crate::bad_definitions_are_refused::<$table>($case);
            }

            #[test]
            fn missing_and_unknown_credentials_are_refused() {
                $crate::__runtime().block_on($crate::credentials_are_checked::<$table>($case));
            }

            #[test]
            fn after_a_401() {
                $crate::__runtime().block_on($crate::after_a_401::<$table>($case));
            }
        }
    };
}
