//! PKCE (RFC 7636, S256), `state` generation and the authorize-URL builder for the
//! OAuth authorization-code flow the Codex CLI uses.
//!
//! ```
//! use auth_core::pkce::{AuthorizeRequest, PkceCodes, generate_state};
//!
//! let pkce = PkceCodes::generate()?;
//! let state = generate_state()?;
//! let url = AuthorizeRequest::codex_defaults().url(&pkce, &state);
//! assert!(url.starts_with("https://auth.openai.com/oauth/authorize?response_type=code&"));
//! assert!(url.contains("code_challenge_method=S256"));
//! assert!(!url.contains(pkce.verifier.expose())); // the verifier never leaves the process
//! # Ok::<(), auth_core::pkce::RandomError>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::secret::Secret;

/// The operating system's random source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed ({code})")]
pub struct RandomError {
    code: String,
}

impl RandomError {
    fn from_getrandom(err: getrandom::Error) -> Self {
        Self {
            code: err.to_string(),
        }
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(RandomError::from_getrandom)?;
    Ok(bytes)
}

/// A PKCE verifier and its S256 challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PkceCodes {
    /// The code verifier: 64 random bytes, base64url (86 characters). Sent only in
    /// the token exchange.
    pub verifier: Secret,
    /// `BASE64URL(SHA-256(verifier))`, sent in the authorize URL.
    pub challenge: String,
}

impl PkceCodes {
    /// Generates a fresh verifier (64 random bytes, as the Codex CLI) and its challenge.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = random_bytes::<64>()?;
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        bytes.zeroize();
        Ok(Self::from_verifier(Secret::new(verifier)))
    }

    /// The codes for a given verifier (e.g. to check RFC 7636's test vector).
    ///
    /// ```
    /// use auth_core::pkce::PkceCodes;
    /// let codes = PkceCodes::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
    /// assert_eq!(codes.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    /// ```
    pub fn from_verifier(verifier: Secret) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

/// A fresh `state` value: 32 random bytes, base64url (43 characters).
pub fn generate_state() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// The parameters of an authorize URL. [`AuthorizeRequest::codex_defaults`] matches
/// the Codex CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizeRequest {
    /// Issuer base URL; the URL is `{issuer}/oauth/authorize`.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// Where the browser is sent back to.
    pub redirect_uri: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// The `originator` value (`None` to omit).
    pub originator: Option<String>,
    /// Restrict sign-in to these ChatGPT workspaces (`allowed_workspace_id`).
    pub allowed_workspace_ids: Vec<String>,
}

impl AuthorizeRequest {
    /// Issuer, client id, redirect URI, scopes and originator as the Codex CLI uses
    /// them (see [`crate::codex`]).
    pub fn codex_defaults() -> Self {
        Self {
            issuer: crate::codex::ISSUER.to_owned(),
            client_id: crate::codex::CLIENT_ID.to_owned(),
            redirect_uri: crate::codex::REDIRECT_URI.to_owned(),
            scopes: crate::codex::SCOPES.to_owned(),
            originator: Some(crate::codex::ORIGINATOR.to_owned()),
            allowed_workspace_ids: Vec::new(),
        }
    }

    /// The same request with another redirect URI (e.g. a fallback port).
    pub fn with_redirect_uri(mut self, redirect_uri: impl Into<String>) -> Self {
        self.redirect_uri = redirect_uri.into();
        self
    }

    /// The same request with another issuer.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The authorize URL: `response_type=code`, client id, redirect URI, scopes, S256
    /// challenge, `id_token_add_organizations=true`, `codex_cli_simplified_flow=true`,
    /// `state`, and `originator` / `allowed_workspace_id` when set, in the CLI's order.
    pub fn url(&self, pkce: &PkceCodes, state: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.scopes)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("id_token_add_organizations", "true")
            .append_pair("codex_cli_simplified_flow", "true")
            .append_pair("state", state);
        if let Some(originator) = &self.originator {
            query.append_pair("originator", originator);
        }
        if !self.allowed_workspace_ids.is_empty() {
            query.append_pair(
                "allowed_workspace_id",
                &self.allowed_workspace_ids.join(","),
            );
        }
        // form_urlencoded writes spaces as '+'; the CLI percent-encodes them.
        let query = query.finish().replace('+', "%20");
        format!(
            "{}/oauth/authorize?{query}",
            self.issuer.trim_end_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_expected_shape() {
        let a = PkceCodes::generate().unwrap();
        let b = PkceCodes::generate().unwrap();
        assert_eq!(a.verifier.len(), 86);
        assert_eq!(a.challenge.len(), 43);
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(PkceCodes::from_verifier(a.verifier.clone()), a);
        let s = generate_state().unwrap();
        assert_eq!(s.len(), 43);
        assert_ne!(s, generate_state().unwrap());
    }

    /// The message a user reads when the OS random source fails (insta snapshot).
    #[test]
    fn random_error_messages() {
        let text: Vec<String> = [
            getrandom::Error::UNSUPPORTED,
            getrandom::Error::UNEXPECTED,
            getrandom::Error::new_custom(7),
        ]
        .into_iter()
        .map(|e| RandomError::from_getrandom(e).to_string())
        .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn url_matches_cli_layout() {
        let pkce = PkceCodes::from_verifier("v".into());
        let mut req = AuthorizeRequest::codex_defaults();
        req.allowed_workspace_ids = vec!["ws1".into(), "ws2".into()];
        let url = req.url(&pkce, "st");
        assert_eq!(
            url,
            format!(
                "https://auth.openai.com/oauth/authorize?response_type=code&client_id=app_EMoamEEZ73f0CkXaXp7hrann&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback&scope=openid%20profile%20email%20offline_access%20api.connectors.read%20api.connectors.invoke&code_challenge={}&code_challenge_method=S256&id_token_add_organizations=true&codex_cli_simplified_flow=true&state=st&originator=codex_cli_rs&allowed_workspace_id=ws1%2Cws2",
                pkce.challenge
            )
        );
    }
}
