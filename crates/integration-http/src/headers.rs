//! The headers of one attempt, as both transports send them.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers of one attempt: the request parameters the request does not
/// set itself, the request's own headers, and the credential's.
pub(crate) struct AttemptHeaders<'a> {
    pub(crate) parameters: &'a [(HeaderName, HeaderValue)],
    pub(crate) own: &'a HeaderMap,
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    /// Headers of a method that signs each request, made last.
    pub(crate) signature: Vec<(HeaderName, HeaderValue)>,
}

impl AttemptHeaders<'_> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let credential = self.credential.as_ref().map(|(name, value)| (name, value));
        let parameters = self.parameters.iter().filter(move |(name, _)| {
            !self.own.contains_key(name) && credential.is_none_or(|(credential, _)| credential != name)
        });
        parameters
            .map(|(name, value)| (name, value))
            .chain(self.own.iter())
            .chain(credential)
            .chain(self.signature.iter().map(|(name, value)| (name, value)))
    }

    /// The first value of `name`, as [`iter`](Self::iter) gives it: the
    /// request's own, else the credential's, else a request parameter's.
    pub(crate) fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        if let Some(value) = self.own.get(name) {
            return Some(value);
        }
        if let Some((_, value)) = self.signature.iter().find(|(signed, _)| signed == name) {
            return Some(value);
        }
        match &self.credential {
            Some((credential, value)) if credential == name => Some(value),
            _ => self
                .parameters
                .iter()
                .find(|(parameter, _)| parameter == name)
                .map(|(_, value)| value),
        }
    }

    pub(crate) fn to_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.parameters.len() + self.own.len() + 1 + self.signature.len());
        for (name, value) in self.iter() {
            headers.append(name.clone(), value.clone());
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_header_is_looked_up_as_it_is_sent() {
        let x_a = HeaderName::from_static("x-a");
        let x_b = HeaderName::from_static("x-b");
        let parameters = [
            (x_a.clone(), HeaderValue::from_static("parameter-a")),
            (x_b.clone(), HeaderValue::from_static("parameter-b")),
            (
                reqwest::header::AUTHORIZATION,
                HeaderValue::from_static("parameter-auth"),
            ),
        ];
        let mut own = HeaderMap::new();
        own.append(x_a.clone(), HeaderValue::from_static("own-a"));
        own.append(x_a.clone(), HeaderValue::from_static("own-a2"));
        let headers = AttemptHeaders {
            parameters: &parameters,
            own: &own,
            credential: Some((reqwest::header::AUTHORIZATION, HeaderValue::from_static("credential"))),
            signature: vec![(
                HeaderName::from_static("x-signature"),
                HeaderValue::from_static("signed"),
            )],
        };
        for name in [
            x_a,
            x_b,
            reqwest::header::AUTHORIZATION,
            HeaderName::from_static("x-signature"),
            HeaderName::from_static("x-none"),
        ] {
            let first_sent = headers
                .iter()
                .find(|(candidate, _)| **candidate == name)
                .map(|(_, value)| value);
            assert_eq!(headers.get(&name), first_sent, "{name}");
        }
    }
}
