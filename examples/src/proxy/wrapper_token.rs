//! The token clients must present to the proxy (not an account credential).

use auth_core::Secret;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Environment variable holding the wrapper token; also the `env_key` of the provider block
/// written into `config.toml`, so `ROTATION_PROXY_TOKEN=… codex exec …` authenticates.
pub const TOKEN_ENV: &str = "ROTATION_PROXY_TOKEN";

/// The wrapper token. Compared in constant time (over SHA-256 digests, so neither content
/// nor length leaks through timing); never printed by `Debug`.
#[derive(Clone)]
pub struct WrapperToken {
    secret: Secret,
    digest: [u8; 32],
}

impl std::fmt::Debug for WrapperToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrapperToken(<redacted>)")
    }
}

/// Why a wrapper token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WrapperTokenError {
    /// The value is empty or contains characters an HTTP header cannot carry.
    #[error("the wrapper token in {source_name} must be 16 to 512 visible ASCII characters")]
    Invalid {
        /// Where the value came from (e.g. the environment variable's name).
        source_name: String,
    },
    /// The OS random source failed.
    #[error("could not generate a wrapper token: the OS random source failed ({0})")]
    Random(String),
}

impl WrapperToken {
    /// Wraps a given token (16..=512 visible ASCII characters).
    pub fn new(value: Secret, source_name: &str) -> Result<Self, WrapperTokenError> {
        let v = value.expose();
        if !(16..=512).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WrapperTokenError::Invalid {
                source_name: source_name.to_owned(),
            });
        }
        let digest = Sha256::digest(v.as_bytes()).into();
        Ok(Self {
            secret: value,
            digest,
        })
    }

    /// A fresh random token (`rp-` + 43 URL-safe characters, 256 bits).
    pub fn generate() -> Result<Self, WrapperTokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| WrapperTokenError::Random(e.to_string()))?;
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::from("rp-");
        // 32 bytes = 256 bits; 43 six-bit symbols carry 258 bits, the last two from zero padding.
        let mut acc: u32 = 0;
        let mut bits = 0;
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 6 {
                bits -= 6;
                s.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
            }
        }
        if bits > 0 {
            s.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
        }
        Self::new(Secret::new(s), "generated token")
    }

    /// `ROTATION_PROXY_TOKEN` when set (and valid), else a generated token; the flag says
    /// whether it was generated (then the caller must show it to the user once).
    pub fn from_env_or_generate() -> Result<(Self, bool), WrapperTokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(v) if !v.is_empty() => Ok((Self::new(Secret::new(v), TOKEN_ENV)?, false)),
            _ => Ok((Self::generate()?, true)),
        }
    }

    /// The token itself, to hand to a client.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Whether `headers` carry this token as `Authorization: Bearer …` or `x-api-key: …`.
    pub fn verify(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let mut ok = subtle::Choice::from(0);
        for candidate in [bearer, api_key].into_iter().flatten() {
            let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
            ok |= digest.ct_eq(&self.digest);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accepts_bearer_or_api_key_and_rejects_others() {
        let t = WrapperToken::new(Secret::new("0123456789abcdef-token".into()), "test").unwrap();
        let mut h = HeaderMap::new();
        assert!(!t.verify(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer 0123456789abcdef-token"),
        );
        assert!(t.verify(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("bearer 0123456789abcdef-tokeN"),
        );
        assert!(!t.verify(&h));
        h.insert(
            "x-api-key",
            HeaderValue::from_static("0123456789abcdef-token"),
        );
        assert!(t.verify(&h));
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_redacted() {
        let a = WrapperToken::generate().unwrap();
        let b = WrapperToken::generate().unwrap();
        assert_eq!(a.secret().expose().len(), 46);
        assert_ne!(a.secret().expose(), b.secret().expose());
        assert!(!format!("{a:?}").contains(a.secret().expose()));
    }

    #[test]
    fn rejects_short_or_unprintable_tokens() {
        assert!(WrapperToken::new(Secret::new("short".into()), "X").is_err());
        assert!(WrapperToken::new(Secret::new("has space in the middle!".into()), "X").is_err());
    }
}
