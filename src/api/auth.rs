//! The API token (`DAPR_API_TOKEN` or `server.api_token`): when set, every
//! call on every API surface (Layotto gRPC, Dapr gRPC, Dapr HTTP) must
//! carry it in `dapr-api-token`, except the health endpoints. Compared in
//! constant time and never logged.

/// The header (or gRPC metadata key) that carries the token.
pub const TOKEN_HEADER: &str = "dapr-api-token";

/// The configured token.
#[derive(Clone)]
pub struct ApiToken(std::sync::Arc<[u8]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    pub fn new(token: &str) -> ApiToken {
        ApiToken(token.as_bytes().into())
    }

    /// Whether `given` is the token. Takes the same time wherever the
    /// first difference is.
    pub fn accepts(&self, given: Option<&[u8]>) -> bool {
        let Some(given) = given else {
            return false;
        };
        if given.len() != self.0.len() {
            return false;
        }
        self.0.iter().zip(given).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = ApiToken::new("s3cret");
        assert!(token.accepts(Some(b"s3cret")));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret"] {
            assert!(!token.accepts(Some(wrong)));
        }
        assert!(!token.accepts(None));
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
    }
}
