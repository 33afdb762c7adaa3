//! The authorization-code exchange at the token endpoint.

use serde::Deserialize;

use crate::auth_json::TokenData;
use crate::events::LoginEvent;
use crate::jwt;
use crate::oauth_error::OAuthError;
use crate::secret::Secret;

use super::diag::Diagnostics;
use super::{LoginError, LoginSuccess};

/// Largest token-endpoint response body read (success or error).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What the exchange needs besides the code.
pub(crate) struct Exchange<'a> {
    pub(crate) client: &'a reqwest::Client,
    pub(crate) issuer: &'a str,
    pub(crate) token_url: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) verifier: &'a Secret,
}

#[derive(Deserialize)]
struct WireTokens {
    id_token: String,
    access_token: String,
    refresh_token: String,
}

fn transport(err: &reqwest::Error, diag: &Diagnostics) -> LoginError {
    let event = LoginEvent::transport_error(err);
    let message = match &event {
        LoginEvent::TransportError { message } => message.clone(),
        _ => "transport error".to_owned(),
    };
    diag.login(event);
    LoginError::Transport { message }
}

async fn read_bounded(
    mut response: reqwest::Response,
    diag: &Diagnostics,
) -> Result<Vec<u8>, LoginError> {
    let mut body = Vec::new();
    // Bounded: each chunk grows `body`, which is capped.
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(LoginError::InvalidTokenResponse {
                        detail: format!("body larger than {MAX_RESPONSE_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) => return Err(transport(&err, diag)),
        }
    }
}

impl Exchange<'_> {
    /// `POST` the form `grant_type=authorization_code, code, redirect_uri, client_id,
    /// code_verifier` (as the Codex CLI does) and parse the tokens.
    pub(crate) async fn run(
        &self,
        code: &str,
        diag: &Diagnostics,
    ) -> Result<LoginSuccess, LoginError> {
        diag.login(LoginEvent::token_exchange_started(
            self.issuer,
            self.redirect_uri,
        ));
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", self.redirect_uri)
            .append_pair("client_id", self.client_id)
            .append_pair("code_verifier", self.verifier.expose())
            .finish();
        let response = self
            .client
            .post(self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|err| transport(&err, diag))?;
        let status = response.status().as_u16();
        let body = read_bounded(response, diag).await?;
        if !(200..300).contains(&status) {
            let error = OAuthError::from_body(&body);
            diag.login(LoginEvent::TokenEndpointError {
                status,
                error_code: error.code().map(str::to_owned),
            });
            return Err(LoginError::TokenEndpoint { status, error });
        }
        let wire: WireTokens =
            serde_json::from_slice(&body).map_err(|err| LoginError::InvalidTokenResponse {
                detail: if err.is_data() {
                    // serde's data messages may quote a value; keep only which field.
                    match err.to_string().split_once("missing field `") {
                        Some((_, rest)) => format!(
                            "missing field `{}`",
                            rest.split('`').next().unwrap_or_default()
                        ),
                        None => {
                            "not the expected JSON object (unexpected type or shape)".to_owned()
                        }
                    }
                } else {
                    "not JSON".to_owned()
                },
            })?;
        let id_token = Secret::new(wire.id_token);
        let claims = jwt::parse_id_token(id_token.expose()).map_err(|err| {
            LoginError::InvalidTokenResponse {
                detail: format!("the id_token is not a usable JWT ({err})"),
            }
        })?;
        let tokens = TokenData::new(
            id_token,
            Secret::new(wire.access_token),
            Secret::new(wire.refresh_token),
            claims.chatgpt_account_id.clone(),
        )
        .map_err(|err| LoginError::InvalidTokenResponse {
            detail: format!("the id_token is not a usable JWT ({err})"),
        })?;
        diag.login(LoginEvent::TokenExchangeSucceeded { status });
        Ok(LoginSuccess { tokens, claims })
    }
}
