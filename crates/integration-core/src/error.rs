//! The error type at the core's public boundary.

use std::borrow::Cow;
use std::fmt;

/// What kind of failure an [`Error`] is, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A value given by the caller is not acceptable: an account id, a
    /// parameter value, a credential.
    InvalidInput,
    /// The account, integration or pending authorization does not exist.
    NotFound,
    /// An account or pending authorization with that id exists already.
    AlreadyExists,
    /// A stored record could not be decrypted or parsed.
    Unreadable,
    /// The encryption key is missing, malformed or cannot be stored.
    Key,
    /// The storage backend failed.
    Storage,
    /// A request was refused before anything was sent: a host the
    /// integration does not name, plain http to a remote host, a header that
    /// would replace the credential.
    Refused,
    /// A call took longer than its time limit.
    Timeout,
    /// The connection failed or broke.
    Transport,
    /// A provider refused a token request or answered one off the format.
    Provider,
    /// Configuration the process needs is missing, e.g. an environment
    /// variable a definition names.
    Config,
    /// The target's state does not allow the operation: an account that
    /// must be connected again, a directory that is not empty, a path that
    /// exists already on a server.
    Conflict,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid input",
            Self::NotFound => "not found",
            Self::AlreadyExists => "already exists",
            Self::Unreadable => "unreadable record",
            Self::Key => "encryption key",
            Self::Storage => "storage",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::Provider => "provider",
            Self::Config => "configuration",
            Self::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error: its kind, a message, context pairs (account, integration,
/// field...) and the cause. It never holds a secret.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    context: Vec<(&'static str, String)>,
    temporary: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            context: Vec::new(),
            temporary: false,
            source: None,
        }
    }

    /// Adds a context pair, e.g. `("account", id)`.
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Sets the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marks the error as one that retrying may cure.
    #[must_use]
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The value of context `key`, if set.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    /// Whether retrying may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (key, value)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{key} `{value}`")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &self.kind).field("message", &self.message);
        if !self.context.is_empty() {
            debug.field("context", &self.context);
        }
        if self.temporary {
            debug.field("temporary", &true);
        }
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as _)
    }
}
