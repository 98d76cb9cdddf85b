//! The account's private key: read from PEM once, then used to sign.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::Algorithm;

/// A private key ready to sign JWTs with its algorithm.
pub(crate) enum SigningKey {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rs256(_) => "SigningKey::Rs256(..)",
            Self::Es256(_) => "SigningKey::Es256(..)",
        })
    }
}

impl SigningKey {
    /// Reads `pem` for `algorithm`. The error names the credential and what
    /// to do, and never quotes the key.
    pub(crate) fn from_pem(pem: &str, algorithm: Algorithm) -> Result<Self, String> {
        if pem.contains("ENCRYPTED") {
            return Err(
                "credential `private_key` is encrypted with a passphrase, which is not supported: \
                 decrypt it first (`openssl pkcs8 -topk8 -nocrypt -in key.pem -out plain.pem`)"
                    .to_owned(),
            );
        }
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            "credential `private_key` is not a PEM private key (`-----BEGIN PRIVATE KEY-----`)".to_owned()
        })?;
        let wrong_kind = |expected: &str| {
            format!(
                "credential `private_key` is not {expected}, which {} signs with",
                algorithm.name()
            )
        };
        match (algorithm, &der) {
            (Algorithm::Rs256, PrivateKeyDer::Pkcs1(key)) => RsaKeyPair::from_der(key.secret_pkcs1_der())
                .map(Self::Rs256)
                .map_err(|_| wrong_kind("a usable RSA key (2048 bits or more)")),
            (Algorithm::Rs256, PrivateKeyDer::Pkcs8(key)) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der())
                .map(Self::Rs256)
                .map_err(|_| wrong_kind("a usable RSA key (2048 bits or more)")),
            (Algorithm::Es256, PrivateKeyDer::Pkcs8(key)) => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                key.secret_pkcs8_der(),
                &SystemRandom::new(),
            )
            .map(Self::Es256)
            .map_err(|_| wrong_kind("a P-256 EC key")),
            (Algorithm::Es256, PrivateKeyDer::Sec1(_)) => Err("credential `private_key` is a SEC1 EC key \
                 (`-----BEGIN EC PRIVATE KEY-----`); ES256 takes it as PKCS#8: \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem -out pkcs8.pem`"
                .to_owned()),
            (Algorithm::Rs256, _) => Err(wrong_kind("an RSA key")),
            (Algorithm::Es256, _) => Err(wrong_kind("a P-256 EC key")),
        }
    }

    /// The signature of `message`: RSASSA-PKCS1-v1_5 with SHA-256, or
    /// ECDSA P-256 with SHA-256 as the 64 bytes `r || s` (RFC 7518 3.4).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Self::Rs256(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| "the RSA signature failed".to_owned())?;
                Ok(signature)
            }
            Self::Es256(key) => key
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| "the ECDSA signature failed".to_owned()),
        }
    }
}
