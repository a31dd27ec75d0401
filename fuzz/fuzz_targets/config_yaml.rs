//! A config file in Yaml: parse, translate and validate, as
//! `layotto validate -c FILE.yaml` does.
#![no_main]

use layotto::config::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layotto_fuzz::validate_config(data, Format::Yaml));
