//! Defaults the Codex CLI uses for ChatGPT sign-in and token refresh (from
//! `openai/codex` `codex-rs/login`; check them against your CLI version).

/// The OAuth issuer.
pub const ISSUER: &str = "https://auth.openai.com";

/// The token endpoint (authorization-code exchange and refresh).
pub const TOKEN_URL: &str = "https://auth.openai.com/oauth/token";

/// The public OAuth client id of the Codex CLI.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";

/// Where the CLI's local callback server listens.
pub const REDIRECT_URI: &str = "http://localhost:1455/auth/callback";

/// The scopes the CLI requests.
pub const SCOPES: &str =
    "openid profile email offline_access api.connectors.read api.connectors.invoke";

/// The `originator` query value the CLI sends when signing in.
pub const ORIGINATOR: &str = "codex_cli_rs";
