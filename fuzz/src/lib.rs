//! What the fuzz targets share: the config check `layotto validate` runs,
//! and the bound on error messages.

use layotto::config::{self, Format};

/// The longest error message a check may answer. Client input is quoted
/// with at most `QUOTE_LIMIT` characters (up to 4 bytes each) and a
/// message quotes at most a few values, so a longer message means some
/// input was echoed whole (an 8 MB store name once made an 8 MB error).
pub const MAX_ERROR_BYTES: usize = 1024;

/// Parses and validates config text as `layotto validate -c FILE` does,
/// with an empty environment so a run does not depend on the shell's
/// `LAYOTTO__*` variables.
pub fn validate_config(data: &[u8], format: Format) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = config::load_str(text, format, "fuzz", Some(Default::default())) {
        // Every problem says something, and the report renders.
        assert!(!error.problems.is_empty(), "an error without problems");
        assert!(error.problems.iter().all(|p| !p.message.is_empty()), "{error}");
        let _ = error.to_string();
    }
}
