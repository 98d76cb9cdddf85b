//! The sealed-envelope decoder, on any bytes a store hands back: an error,
//! never a panic, and never a value that was not sealed with the key.
#![no_main]

use std::sync::LazyLock;

use integration_core::EncryptionKey;
use integration_core::crypto::{Cipher, SealedSecret};
use libfuzzer_sys::fuzz_target;

static CIPHER: LazyLock<Cipher> =
    LazyLock::new(|| Cipher::new(&EncryptionKey::parse(&"11".repeat(32)).expect("a fixed test key")));

fuzz_target!(|bytes: &[u8]| {
    let sealed = SealedSecret::from_bytes(bytes.to_vec());
    let opened = CIPHER.open_in_context("account", "credential:token", b"context", &sealed);
    assert!(opened.is_err(), "bytes not sealed with the key never open");
});
