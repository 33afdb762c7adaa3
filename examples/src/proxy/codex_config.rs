//! Pointing a Codex home's `config.toml` at the proxy, and back, with `config-rewrite`.

use std::path::{Path, PathBuf};

use config_rewrite::{ProviderSpec, RestoreReport, RevertFile, Rewrite, Target};

use super::TOKEN_ENV;

/// The provider id written into `config.toml`.
pub const PROVIDER_ID: &str = "rotation-proxy";

/// A live rewrite of `CODEX_HOME/config.toml`; undo it with [`CodexRoute::restore`]. The revert
/// record sits beside the file, so a crashed run is undone by the next [`CodexRoute::apply`].
#[derive(Debug)]
pub struct CodexRoute {
    config: PathBuf,
    revert: RevertFile,
}

impl CodexRoute {
    /// Restores a stale rewrite left by a crashed run (returned as the second value), then
    /// sets `model_provider = "rotation-proxy"` and `[model_providers.rotation-proxy]` with
    /// `base_url`, `env_key = "ROTATION_PROXY_TOKEN"` and `wire_api = "responses"`.
    ///
    /// Blocking file I/O: from async code call it through `spawn_blocking`.
    pub fn apply(
        codex_home: &Path,
        base_url: &str,
    ) -> Result<(Self, Option<RestoreReport>), config_rewrite::Error> {
        let config = codex_home.join("config.toml");
        let revert = RevertFile::beside(&config);
        let stale = revert.restore()?;
        let rewrite = Rewrite::route_to(
            ProviderSpec::new(PROVIDER_ID, base_url)
                .name("Rotation proxy (loopback)")
                .env_key(TOKEN_ENV),
            Target::TopLevel,
        );
        revert.apply(&config, &rewrite)?;
        Ok((Self { config, revert }, stale))
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Puts the file back (byte for byte when nobody edited it meanwhile).
    pub fn restore(self) -> Result<Option<RestoreReport>, config_rewrite::Error> {
        self.revert.restore()
    }
}
