//! What to write: [`ProviderSpec`] (a `[model_providers.<id>]` table), [`Target`] and [`Rewrite`].

use std::collections::BTreeMap;
use std::fmt;

use crate::input;

/// Provider ids the Codex CLI reserves for its built-in providers. Since Codex CLI 0.1xx a
/// `[model_providers.<id>]` table with one of these ids is a configuration error
/// ("Built-in providers cannot be overridden"), so [`ProviderSpec`] refuses them.
pub const RESERVED_PROVIDER_IDS: &[&str] = &["openai", "ollama", "lmstudio", "amazon-bedrock"];

/// Wire protocol a provider speaks (`wire_api`).
///
/// Current Codex CLIs accept only `"responses"`; `"chat"` is rejected with a configuration
/// error, so it is not offered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WireApi {
    /// The Responses API (`POST {base_url}/responses`).
    #[default]
    Responses,
}

impl WireApi {
    /// The value written to `wire_api`.
    ///
    /// ```
    /// assert_eq!(config_rewrite::WireApi::Responses.as_str(), "responses");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            WireApi::Responses => "responses",
        }
    }
}

/// Where `model_provider` (or another key) is set: the top level of the file or a
/// `[profiles.<name>]` table. Codex CLI 0.169 no longer reads `[profiles.<name>]` tables (it
/// layers `<name>.config.toml` for `--profile <name>`, see the crate docs on profiles); for it,
/// edit that layer file with `TopLevel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Target {
    /// The top level, before the first table header.
    #[default]
    TopLevel,
    /// The legacy `[profiles.<name>]` table (created when missing, removed again on
    /// restore), read by Codex CLIs before 0.169.
    Profile(String),
}

impl Target {
    /// A profile target.
    ///
    /// ```
    /// use config_rewrite::Target;
    /// assert_eq!(Target::profile("work"), Target::Profile("work".into()));
    /// ```
    pub fn profile(name: impl Into<String>) -> Self {
        Target::Profile(name.into())
    }

    fn validate(&self) -> Result<(), crate::EditError> {
        match self {
            Target::TopLevel => Ok(()),
            Target::Profile(name) => input::non_empty("profile name", name),
        }
    }

    pub(crate) fn table_path(&self) -> Vec<String> {
        match self {
            Target::TopLevel => Vec::new(),
            Target::Profile(name) => vec!["profiles".to_owned(), name.clone()],
        }
    }
}

/// The fields of a `[model_providers.<id>]` table, as read by the Codex CLI
/// (`ModelProviderInfo` in openai/codex). Only fields that are set are written; fields already
/// in the user's table that this spec does not set are left alone.
///
/// Secrets do not belong in `config.toml`: there is deliberately no setter for
/// `experimental_bearer_token`. Point `env_key` at an environment variable instead.
/// `Debug` shows header and query-parameter names but not their values.
///
/// ```
/// use config_rewrite::ProviderSpec;
/// let spec = ProviderSpec::new("rotation-proxy", "http://127.0.0.1:8080/v1")
///     .name("Rotation proxy")
///     .env_key("ROTATION_PROXY_TOKEN")
///     .stream_idle_timeout_ms(600_000);
/// assert_eq!(spec.id(), "rotation-proxy");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    id: String,
    name: Option<String>,
    base_url: Option<String>,
    env_key: Option<String>,
    env_key_instructions: Option<String>,
    wire_api: Option<WireApi>,
    requires_openai_auth: Option<bool>,
    supports_websockets: Option<bool>,
    supports_standalone_web_search: Option<bool>,
    model_catalog_url: Option<String>,
    query_params: Option<BTreeMap<String, String>>,
    http_headers: Option<BTreeMap<String, String>>,
    env_http_headers: Option<BTreeMap<String, String>>,
    request_max_retries: Option<u64>,
    stream_max_retries: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    websocket_connect_timeout_ms: Option<u64>,
}

/// A field value in the order and shape it is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Map(BTreeMap<String, String>),
}

impl ProviderSpec {
    /// A provider `id` served at `base_url` (e.g. `http://127.0.0.1:8080/v1`), with
    /// `name = id` and `wire_api = "responses"` until changed.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("proxy", "http://127.0.0.1:1/v1");
    /// assert_eq!(spec.base_url_value(), Some("http://127.0.0.1:1/v1"));
    /// ```
    pub fn new(id: impl Into<String>, base_url: impl Into<String>) -> Self {
        let id = id.into();
        ProviderSpec {
            name: Some(id.clone()),
            id,
            base_url: Some(base_url.into()),
            env_key: None,
            env_key_instructions: None,
            wire_api: Some(WireApi::Responses),
            requires_openai_auth: None,
            supports_websockets: None,
            supports_standalone_web_search: None,
            model_catalog_url: None,
            query_params: None,
            http_headers: None,
            env_http_headers: None,
            request_max_retries: None,
            stream_max_retries: None,
            stream_idle_timeout_ms: None,
            websocket_connect_timeout_ms: None,
        }
    }

    /// The provider id (the `<id>` in `[model_providers.<id>]`).
    ///
    /// ```
    /// assert_eq!(config_rewrite::ProviderSpec::new("my proxy", "http://127.0.0.1:1/v1").id(), "my proxy");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `base_url` to be written, if any.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1");
    /// assert_eq!(spec.base_url_value(), Some("http://127.0.0.1:1/v1"));
    /// ```
    pub fn base_url_value(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// `name`: the display name Codex shows.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").name("Proxy");
    /// # let _ = spec;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `base_url`: the OpenAI-compatible API root (Codex appends `/responses`). `Debug` output
    /// hides any user info and query string in it.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").base_url("http://127.0.0.1:2/v1");
    /// assert_eq!(spec.base_url_value(), Some("http://127.0.0.1:2/v1"));
    /// ```
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// `env_key`: the environment variable whose value Codex sends as `Authorization: Bearer …`.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").env_key("ROTATION_PROXY_TOKEN");
    /// # let _ = spec;
    /// ```
    pub fn env_key(mut self, var: impl Into<String>) -> Self {
        self.env_key = Some(var.into());
        self
    }

    /// `env_key_instructions`: shown by Codex when the `env_key` variable is missing.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1")
    ///     .env_key_instructions("start the proxy first");
    /// # let _ = spec;
    /// ```
    pub fn env_key_instructions(mut self, text: impl Into<String>) -> Self {
        self.env_key_instructions = Some(text.into());
        self
    }

    /// `wire_api` (default `"responses"`); `None` leaves the field unwritten.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").wire_api(None);
    /// # let _ = spec;
    /// ```
    pub fn wire_api(mut self, wire_api: Option<WireApi>) -> Self {
        self.wire_api = wire_api;
        self
    }

    /// `requires_openai_auth`: whether Codex asks for an OpenAI login / API key for this provider.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").requires_openai_auth(false);
    /// # let _ = spec;
    /// ```
    pub fn requires_openai_auth(mut self, yes: bool) -> Self {
        self.requires_openai_auth = Some(yes);
        self
    }

    /// `supports_websockets`: whether the provider offers the Responses WebSocket transport.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").supports_websockets(false);
    /// # let _ = spec;
    /// ```
    pub fn supports_websockets(mut self, yes: bool) -> Self {
        self.supports_websockets = Some(yes);
        self
    }

    /// `supports_standalone_web_search`: a boolean provider flag read by Codex 0.169 (whether
    /// the provider serves Codex's standalone web-search requests).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1")
    ///     .supports_standalone_web_search(false);
    /// # let _ = spec;
    /// ```
    pub fn supports_standalone_web_search(mut self, yes: bool) -> Self {
        self.supports_standalone_web_search = Some(yes);
        self
    }

    /// `model_catalog_url`: a string provider field read by Codex 0.169 (where the provider
    /// lists its models).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1")
    ///     .model_catalog_url("http://127.0.0.1:1/v1/models");
    /// # let _ = spec;
    /// ```
    pub fn model_catalog_url(mut self, url: impl Into<String>) -> Self {
        self.model_catalog_url = Some(url.into());
        self
    }

    /// Adds one entry to `query_params` (appended to every request URL).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").query_param("api-version", "1");
    /// # let _ = spec;
    /// ```
    pub fn query_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query_params
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), value.into());
        self
    }

    /// Adds one entry to `http_headers` (a static header sent with every request).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").http_header("X-Client", "demo");
    /// assert!(!format!("{spec:?}").contains("demo"));
    /// ```
    pub fn http_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.http_headers
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), value.into());
        self
    }

    /// Adds one entry to `env_http_headers` (header name → environment variable holding its value).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1")
    ///     .env_http_header("X-Account", "PROXY_ACCOUNT");
    /// # let _ = spec;
    /// ```
    pub fn env_http_header(mut self, name: impl Into<String>, var: impl Into<String>) -> Self {
        self.env_http_headers
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), var.into());
        self
    }

    /// `request_max_retries` (Codex caps it at 100).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").request_max_retries(2);
    /// # let _ = spec;
    /// ```
    pub fn request_max_retries(mut self, n: u64) -> Self {
        self.request_max_retries = Some(n);
        self
    }

    /// `stream_max_retries` (Codex caps it at 100).
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").stream_max_retries(3);
    /// # let _ = spec;
    /// ```
    pub fn stream_max_retries(mut self, n: u64) -> Self {
        self.stream_max_retries = Some(n);
        self
    }

    /// `stream_idle_timeout_ms`: idle time before a streaming response counts as lost.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").stream_idle_timeout_ms(300_000);
    /// # let _ = spec;
    /// ```
    pub fn stream_idle_timeout_ms(mut self, ms: u64) -> Self {
        self.stream_idle_timeout_ms = Some(ms);
        self
    }

    /// `websocket_connect_timeout_ms`.
    ///
    /// ```
    /// let spec = config_rewrite::ProviderSpec::new("p", "http://127.0.0.1:1/v1").websocket_connect_timeout_ms(15_000);
    /// # let _ = spec;
    /// ```
    pub fn websocket_connect_timeout_ms(mut self, ms: u64) -> Self {
        self.websocket_connect_timeout_ms = Some(ms);
        self
    }

    /// Checks every field before anything is edited (see `input.rs` for the rules): the id,
    /// every string (no control, bidi or line-separator characters), URLs, variable names
    /// and numbers.
    pub(crate) fn validate(&self) -> Result<(), crate::EditError> {
        validate_provider_id(&self.id)?;
        for (field, text) in [
            ("name", &self.name),
            ("env_key_instructions", &self.env_key_instructions),
        ] {
            if let Some(text) = text {
                input::plain_text(field, text)?;
            }
        }
        for (field, url) in [
            ("base_url", &self.base_url),
            ("model_catalog_url", &self.model_catalog_url),
        ] {
            if let Some(url) = url {
                input::http_url(field, url)?;
            }
        }
        if let Some(var) = &self.env_key {
            input::env_var_name("env_key", var)?;
        }
        for (field, map) in [
            ("query_params", &self.query_params),
            ("http_headers", &self.http_headers),
        ] {
            for (name, value) in map.iter().flatten() {
                input::non_empty(&format!("{field} name"), name)?;
                input::plain_text(&format!("{field} value"), value)?;
            }
        }
        for (name, var) in self.env_http_headers.iter().flatten() {
            input::non_empty("env_http_headers name", name)?;
            input::env_var_name("env_http_headers variable", var)?;
        }
        for (field, value) in self.fields() {
            if let FieldValue::Int(n) = value
                && i64::try_from(n).is_err()
            {
                return Err(crate::EditError::InvalidInput {
                    field: field.to_owned(),
                    reason: "larger than the largest TOML integer (2^63 - 1)".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The fields to write, in the order a new table lists them.
    pub(crate) fn fields(&self) -> Vec<(&'static str, FieldValue)> {
        let mut out = Vec::new();
        let s = |v: &Option<String>| v.clone().map(FieldValue::Str);
        let m = |v: &Option<BTreeMap<String, String>>| v.clone().map(FieldValue::Map);
        let candidates = [
            ("name", s(&self.name)),
            ("base_url", s(&self.base_url)),
            ("env_key", s(&self.env_key)),
            ("env_key_instructions", s(&self.env_key_instructions)),
            (
                "wire_api",
                self.wire_api
                    .map(|w| FieldValue::Str(w.as_str().to_owned())),
            ),
            (
                "requires_openai_auth",
                self.requires_openai_auth.map(FieldValue::Bool),
            ),
            (
                "supports_websockets",
                self.supports_websockets.map(FieldValue::Bool),
            ),
            (
                "supports_standalone_web_search",
                self.supports_standalone_web_search.map(FieldValue::Bool),
            ),
            ("model_catalog_url", s(&self.model_catalog_url)),
            ("query_params", m(&self.query_params)),
            ("http_headers", m(&self.http_headers)),
            ("env_http_headers", m(&self.env_http_headers)),
            (
                "request_max_retries",
                self.request_max_retries.map(FieldValue::Int),
            ),
            (
                "stream_max_retries",
                self.stream_max_retries.map(FieldValue::Int),
            ),
            (
                "stream_idle_timeout_ms",
                self.stream_idle_timeout_ms.map(FieldValue::Int),
            ),
            (
                "websocket_connect_timeout_ms",
                self.websocket_connect_timeout_ms.map(FieldValue::Int),
            ),
        ];
        for (key, value) in candidates {
            if let Some(value) = value {
                out.push((key, value));
            }
        }
        out
    }
}

pub(crate) fn validate_provider_id(id: &str) -> Result<(), crate::EditError> {
    input::non_empty("provider id", id)?;
    if RESERVED_PROVIDER_IDS.contains(&id) {
        return Err(crate::EditError::InvalidInput {
            field: "provider id".to_owned(),
            reason: "it names a built-in Codex provider, which Codex does not allow to be \
                     redefined; pick another id"
                .to_owned(),
        });
    }
    Ok(())
}

impl fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header and query values may carry credentials: show names only.
        let names = |m: &Option<BTreeMap<String, String>>| {
            m.as_ref().map(|m| m.keys().cloned().collect::<Vec<_>>())
        };
        f.debug_struct("ProviderSpec")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_deref().map(redact_url))
            .field("env_key", &self.env_key)
            .field("wire_api", &self.wire_api)
            .field("requires_openai_auth", &self.requires_openai_auth)
            .field("supports_websockets", &self.supports_websockets)
            .field(
                "supports_standalone_web_search",
                &self.supports_standalone_web_search,
            )
            .field(
                "model_catalog_url",
                &self.model_catalog_url.as_deref().map(redact_url),
            )
            .field("query_param_names", &names(&self.query_params))
            .field("http_header_names", &names(&self.http_headers))
            .field("env_http_headers", &self.env_http_headers)
            .field("request_max_retries", &self.request_max_retries)
            .field("stream_max_retries", &self.stream_max_retries)
            .field("stream_idle_timeout_ms", &self.stream_idle_timeout_ms)
            .field(
                "websocket_connect_timeout_ms",
                &self.websocket_connect_timeout_ms,
            )
            .finish_non_exhaustive()
    }
}

/// Hides user info (`user:pass@`), query and fragment of a URL for `Debug` output.
fn redact_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => format!("{scheme}{rest}"),
    }
}

/// One edit of a [`Rewrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    SetString {
        target: Target,
        key: String,
        value: String,
    },
    RemoveKey {
        target: Target,
        key: String,
    },
    UpsertProvider(Box<ProviderSpec>),
    RemoveProvider(String),
}

/// A list of edits to make to `config.toml`, applied in order by [`apply`](crate::apply) or
/// [`apply_to_str`](crate::apply_to_str). Building one does no I/O and cannot fail; the edits
/// are checked when applied.
///
/// ```
/// use config_rewrite::{ProviderSpec, Rewrite, Target};
///
/// // What a rotation proxy does on start:
/// let rewrite = Rewrite::route_to(
///     ProviderSpec::new("rotation-proxy", "http://127.0.0.1:8080/v1").env_key("ROTATION_PROXY_TOKEN"),
///     Target::TopLevel,
/// );
/// let out = config_rewrite::apply_to_str("config.toml".as_ref(), Some("model = \"gpt-5\"\n"), &rewrite)?;
/// assert!(out.text().starts_with("model = \"gpt-5\"\nmodel_provider = \"rotation-proxy\"\n"));
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub(crate) ops: Vec<Op>,
}

impl Rewrite {
    /// An empty rewrite (changes nothing).
    ///
    /// ```
    /// assert!(config_rewrite::Rewrite::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Rewrite::default()
    }

    /// The usual pair: upsert `[model_providers.<id>]` from `spec` and set
    /// `model_provider = "<id>"` at `target`.
    ///
    /// ```
    /// use config_rewrite::{ProviderSpec, Rewrite, Target};
    /// let r = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:1/v1"), Target::profile("work"));
    /// assert!(!r.is_empty());
    /// ```
    pub fn route_to(spec: ProviderSpec, target: Target) -> Self {
        let id = spec.id().to_owned();
        Rewrite::new()
            .upsert_provider(spec)
            .set_string(target, "model_provider", id)
    }

    /// Sets a string key (e.g. `model_provider`, `model`) in `target`.
    ///
    /// ```
    /// use config_rewrite::{Rewrite, Target};
    /// let r = Rewrite::new().set_string(Target::TopLevel, "model", "gpt-5");
    /// # let _ = r;
    /// ```
    pub fn set_string(
        mut self,
        target: Target,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::SetString {
            target,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Removes a key from `target` (restore puts it back).
    ///
    /// ```
    /// use config_rewrite::{Rewrite, Target};
    /// let r = Rewrite::new().remove_key(Target::TopLevel, "model_provider");
    /// # let _ = r;
    /// ```
    pub fn remove_key(mut self, target: Target, key: impl Into<String>) -> Self {
        self.ops.push(Op::RemoveKey {
            target,
            key: key.into(),
        });
        self
    }

    /// Creates `[model_providers.<id>]` or updates the fields `spec` sets in an existing one.
    ///
    /// ```
    /// use config_rewrite::{ProviderSpec, Rewrite};
    /// let r = Rewrite::new().upsert_provider(ProviderSpec::new("p", "http://127.0.0.1:1/v1"));
    /// # let _ = r;
    /// ```
    pub fn upsert_provider(mut self, spec: ProviderSpec) -> Self {
        self.ops.push(Op::UpsertProvider(Box::new(spec)));
        self
    }

    /// Removes the whole `[model_providers.<id>]` table (restore puts it back).
    ///
    /// ```
    /// let r = config_rewrite::Rewrite::new().remove_provider("old-proxy");
    /// # let _ = r;
    /// ```
    pub fn remove_provider(mut self, id: impl Into<String>) -> Self {
        self.ops.push(Op::RemoveProvider(id.into()));
        self
    }

    /// Whether there are no edits.
    ///
    /// ```
    /// assert!(config_rewrite::Rewrite::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks every text and number the edits would write before the file is read (the
    /// rules are in `input.rs`); what depends on the file (e.g. a key that holds a table) is
    /// checked while editing.
    pub(crate) fn validate(&self) -> Result<(), crate::EditError> {
        for op in &self.ops {
            match op {
                Op::SetString { target, key, value } => {
                    target.validate()?;
                    input::non_empty("key", key)?;
                    let label = crate::record::dotted(&{
                        let mut path = target.table_path();
                        path.push(key.clone());
                        path
                    });
                    input::plain_text(&format!("value of `{label}`"), value)?;
                }
                Op::RemoveKey { target, key } => {
                    target.validate()?;
                    input::non_empty("key", key)?;
                }
                Op::UpsertProvider(spec) => spec.validate()?,
                Op::RemoveProvider(id) => input::non_empty("provider id", id)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let spec = ProviderSpec::new("p", "https://user:s3cret@proxy.example/v1?key=k3y#frag")
            .http_header("Authorization", "Bearer t0ken")
            .query_param("api-key", "qk3y");
        let debug = format!("{spec:?}");
        for secret in ["s3cret", "k3y", "t0ken", "qk3y", "user"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("https://***@proxy.example/v1"), "{debug}");
        assert!(debug.contains("Authorization"), "{debug}");
    }

    #[test]
    fn redact_url_keeps_plain_urls() {
        assert_eq!(
            redact_url("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080/v1"
        );
        assert_eq!(redact_url("127.0.0.1/x?y"), "127.0.0.1/x");
        assert_eq!(redact_url("http://a/b@c"), "http://a/b@c");
    }
}
