//! The serializable revert record returned by an apply.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Current on-disk format of [`RevertRecord`].
pub(crate) const FORMAT: u32 = 1;

/// Everything needed to undo one apply, even from another process after a crash.
///
/// It holds the file's bytes from before the apply (so an untouched file comes back byte for
/// byte), a SHA-256 of what was written (to tell whether anyone edited the file since), and
/// one entry per key that was changed with its previous and new value (to undo only our own
/// keys when someone did). Serialize it with serde (e.g. `serde_json`) or let
/// [`RevertFile`](crate::RevertFile) keep it beside the configuration.
///
/// The record contains a copy of the original configuration, so store it like the
/// configuration itself (`RevertFile` writes it with mode 0600). `Debug` shows key names only.
///
/// ```
/// use config_rewrite::{ProviderSpec, Rewrite, Target};
/// let rewrite = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:1/v1"), Target::TopLevel);
/// let applied = config_rewrite::apply_to_str("config.toml".as_ref(), Some("model = \"o3\"\n"), &rewrite)?;
/// let record = applied.record();
/// assert_eq!(record.edited_keys(), ["model_providers.p.name", "model_providers.p.base_url",
///     "model_providers.p.wire_api", "model_provider"]);
/// assert!(!record.created_file());
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRecord {
    pub(crate) format: u32,
    pub(crate) config: PathBuf,
    /// `None` when the file did not exist before the apply.
    pub(crate) original: Option<String>,
    pub(crate) applied_sha256: String,
    pub(crate) edits: Vec<KeyEdit>,
    /// Table paths the apply created, to remove again when they end up empty.
    pub(crate) created_tables: Vec<Vec<String>>,
}

/// One changed key: where it is and its value before and after, each stored as a one-key
/// TOML document `v = …` (keeps comments and formatting of the old value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyEdit {
    pub(crate) table: Vec<String>,
    pub(crate) key: String,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

impl KeyEdit {
    pub(crate) fn label(&self) -> String {
        let mut path = self.table.clone();
        path.push(self.key.clone());
        dotted(&path)
    }
}

/// `a.b."c d"`: a key path as TOML would spell it.
pub(crate) fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|seg| {
            toml_edit::Key::new(seg.as_str())
                .display_repr()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join(".")
}

impl RevertRecord {
    /// The configuration file this record undoes.
    ///
    /// ```
    /// # use config_rewrite::{ProviderSpec, Rewrite, Target};
    /// # let rewrite = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:1/v1"), Target::TopLevel);
    /// let applied = config_rewrite::apply_to_str("/tmp/x/config.toml".as_ref(), None, &rewrite)?;
    /// assert_eq!(applied.record().config(), std::path::Path::new("/tmp/x/config.toml"));
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Whether the apply created the file (restore then removes it).
    ///
    /// ```
    /// # use config_rewrite::{ProviderSpec, Rewrite, Target};
    /// # let rewrite = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:1/v1"), Target::TopLevel);
    /// let applied = config_rewrite::apply_to_str("config.toml".as_ref(), None, &rewrite)?;
    /// assert!(applied.record().created_file());
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn created_file(&self) -> bool {
        self.original.is_none()
    }

    /// Whether the apply changed nothing (everything already had the requested values).
    ///
    /// ```
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some("a = 1\n"), &config_rewrite::Rewrite::new())?;
    /// assert!(applied.record().is_noop());
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn is_noop(&self) -> bool {
        self.edits.is_empty() && self.created_tables.is_empty() && self.original.is_some()
    }

    /// The dotted paths of the keys the apply changed, in the order it changed them.
    ///
    /// ```
    /// # use config_rewrite::{Rewrite, Target};
    /// let r = Rewrite::new().set_string(Target::profile("work"), "model_provider", "p");
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some(""), &r)?;
    /// assert_eq!(applied.record().edited_keys(), ["profiles.work.model_provider"]);
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn edited_keys(&self) -> Vec<String> {
        self.edits.iter().map(KeyEdit::label).collect()
    }
}

impl fmt::Debug for RevertRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The original text may hold tokens (e.g. MCP server env): never print it.
        f.debug_struct("RevertRecord")
            .field("config", &self.config)
            .field("original_len", &self.original.as_ref().map(String::len))
            .field("edited_keys", &self.edited_keys())
            .field("created_tables", &self.created_tables)
            .finish_non_exhaustive()
    }
}
