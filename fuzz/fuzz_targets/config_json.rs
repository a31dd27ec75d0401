//! A config file in Json: parse, translate and validate, as
//! `layotto validate -c FILE.json` does.
#![no_main]

use layotto::config::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layotto_fuzz::validate_config(data, Format::Json));
