//! The definition loader, on any text in each of its formats: an error, never a panic.
#![no_main]

use integration_core::Definitions;
use integration_core::definition::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for format in [Format::Toml, Format::Yaml, Format::Json] {
        integrations::register_methods();
        if let Err(errors) = Definitions::from_str(text, format) {
            // Every error names where it is and what is wrong.
            assert!(!errors.to_string().is_empty());
        }
    }
});
