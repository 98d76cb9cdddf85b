//! Private keys as users paste them: OpenSSH, PKCS#8 or PEM, perhaps
//! encrypted, perhaps with their line breaks lost on the way.

use integration_core::{Error, ErrorKind, Result};
use russh::keys::{self, PrivateKey};

/// Decodes `text` with `passphrase`, after [`repair`]ing its line breaks.
pub(crate) fn decode(text: &str, passphrase: Option<&str>) -> Result<PrivateKey> {
    let repaired = repair(text)?;
    let passphrase = passphrase.filter(|passphrase| !passphrase.is_empty());
    keys::decode_secret_key(&repaired, passphrase).map_err(|error| {
        let message = match error {
            keys::Error::KeyIsEncrypted => "credential `private_key` is encrypted: give its `passphrase`".to_owned(),
            keys::Error::UnsupportedKeyType { key_type_string, .. } => {
                format!("credential `private_key` is of an unsupported type ({key_type_string})")
            }
            _ if passphrase.is_some() => {
                "credential `passphrase` does not decrypt credential `private_key` (or the key is damaged)".to_owned()
            }
            // The cause names a format problem, never key material.
            other => format!("credential `private_key` cannot be read as an OpenSSH, PKCS#8 or PEM key: {other}"),
        };
        Error::new(ErrorKind::InvalidInput, message)
    })
}

/// Puts back the line breaks of a PEM-armoured key that lost them: pasted
/// into a one-line field, its breaks turned to spaces or to literal `\n`.
/// A key with its breaks is returned as it is.
pub(crate) fn repair(text: &str) -> Result<String> {
    let text = text
        .trim()
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\r\n", "\n");
    let Some((label, rest)) = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
    else {
        if text.starts_with("PuTTY-User-Key-File-") {
            return Ok(text);
        }
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "credential `private_key` does not start with a `-----BEGIN … PRIVATE KEY-----` line",
        ));
    };
    let end = format!("-----END {label}-----");
    let Some((body, _)) = rest.split_once(&end) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("credential `private_key` has no `{end}` line: it was cut short"),
        ));
    };
    let mut lines = vec![format!("-----BEGIN {label}-----")];
    let mut words = body.split_whitespace().peekable();
    // PEM encryption headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: AES-128-CBC,…`).
    let mut headers = false;
    while let Some(name) = words.next_if(|word| word.ends_with(':')) {
        let value = words.next().unwrap_or_default();
        lines.push(format!("{name} {value}"));
        headers = true;
    }
    if headers {
        lines.push(String::new());
    }
    let base64: String = words.collect();
    for chunk in base64.as_bytes().chunks(64) {
        lines.push(String::from_utf8_lossy(chunk).into_owned());
    }
    lines.push(end);
    lines.push(String::new());
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway key made for these tests: `ssh-keygen -t ed25519 -N ''`.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACD+s7T1rsifp0hoiICPmgPbNdHub12O2zSYqRGzIkcZVAAAAJgUynhCFMp4
QgAAAAtzc2gtZWQyNTUxOQAAACD+s7T1rsifp0hoiICPmgPbNdHub12O2zSYqRGzIkcZVA
AAAEADhFTYVjKn83TUIYwr/Vb4K8KBMXnjCacm+3u8ae/VMP6ztPWuyJ+nSGiIgI+aA9s1
0e5vXY7bNJipEbMiRxlUAAAAEWludGVncmF0aW9ucy10ZXN0AQIDBA==
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn a_key_with_its_line_breaks_decodes() {
        decode(KEY, None).unwrap();
    }

    #[test]
    fn a_key_pasted_on_one_line_is_repaired() {
        let public = decode(KEY, None).unwrap().public_key().clone();
        for damaged in [
            KEY.replace('\n', " "),
            KEY.replace('\n', ""),
            KEY.replace('\n', "\\n"),
            KEY.replace('\n', "\r\n"),
            format!("  {}  ", KEY.replace('\n', " ")),
        ] {
            let key = decode(&damaged, None).unwrap_or_else(|error| panic!("{damaged:?}: {error}"));
            assert_eq!(key.public_key(), &public);
        }
    }

    #[test]
    fn pem_encryption_headers_survive_the_repair() {
        let one_line = "-----BEGIN RSA PRIVATE KEY----- Proc-Type: 4,ENCRYPTED DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF QUJD REVG -----END RSA PRIVATE KEY-----";
        assert_eq!(
            repair(one_line).unwrap(),
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nQUJDREVG\n\
             -----END RSA PRIVATE KEY-----\n"
        );
    }

    #[test]
    fn broken_keys_get_errors_that_name_the_field_and_not_the_key() {
        for (text, why) in [
            ("not a key", "does not start with"),
            (&KEY[..200], "was cut short"),
            (&KEY.replace("b3Bl", "AAAA"), "cannot be read"),
        ] {
            let error = decode(text, None).unwrap_err().to_string();
            assert!(error.contains("`private_key`") && error.contains(why), "{error}");
            assert!(!error.contains("b3BlbnNz") && !error.contains("QyNTUxOQ"), "{error}");
        }
    }
}
