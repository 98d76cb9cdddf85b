//! The gateway front's request-head parser, on any bytes a client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    integrations_gateway::server::fuzz_request_head(bytes);
});
