//! Layotto's MOSN `config.json` (a JSON file with top-level `servers`):
//! the translation to the native tree, then validation. Other JSON is
//! `config_json`'s.
#![no_main]

use layotto::config::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Cheap filter: the loader translates a tree only when it has
    // `servers`; spend the runs on those.
    if data.windows(9).any(|w| w == b"\"servers\"") {
        layotto_fuzz::validate_config(data, Format::Json);
    }
});
