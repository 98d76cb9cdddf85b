//! The relay's response-head parser and chunked-body decoder, on any bytes
//! an upstream sends, the body fed in pieces of every size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, bytes) = input;
    integration_http::fuzzing::response_head(bytes);
    integration_http::fuzzing::chunked_body(bytes, usize::from(step));
});
