//! The gateway's webhook signatures, checked against the test receiver's
//! implementation of the Standard Webhooks scheme, made with other crates
//! (RustCrypto's `hmac` and `sha2`, where the gateway uses `ring`).

use integration_webhook_test_receiver::signature as independent;
use integrations_gateway::webhooks::{WebhookSecret, sign, signature_header, verify};

#[test]
fn signatures_agree_with_an_independent_implementation() {
    for (n, body) in [
        &b""[..],
        b"{}",
        br#"{"type":"account.created","data":{"account":"a1"}}"#,
        &[0xff, 0, 10],
    ]
    .iter()
    .enumerate()
    {
        let secret = WebhookSecret::generate();
        let id = format!("evt_{n}");
        let timestamp = 1_800_000_000 + i64::try_from(n).expect("small");
        assert_eq!(
            sign(&secret, &id, timestamp, body),
            independent(secret.expose(), &id, timestamp, body)
        );
    }
    // And the published vector, through the independent implementation too.
    assert_eq!(
        independent(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn a_header_signed_here_verifies_there_and_the_other_way() {
    let secret = WebhookSecret::generate();
    let header = signature_header(std::slice::from_ref(&secret), "evt_1", 1_800_000_000, b"{}");
    assert_eq!(header, independent(secret.expose(), "evt_1", 1_800_000_000, b"{}"));
    let theirs = independent(secret.expose(), "evt_2", 1_800_000_000, b"[]");
    verify(&[secret], "evt_2", "1800000000", &theirs, b"[]", 1_800_000_010, 300).expect("verifies");
}
