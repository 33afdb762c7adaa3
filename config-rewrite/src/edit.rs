//! The pure core: edit and restore configuration text. No I/O.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::error::{EditError, line_col};
use crate::provider::{FieldValue, Op, Rewrite, Target};
use crate::record::{FORMAT, KeyEdit, RevertRecord, dotted};

const BOM: char = '\u{feff}';

/// The result of [`apply_to_str`]: the new text and the record that undoes it.
/// `Debug` shows sizes and key names, never the text (it may hold tokens).
#[derive(Clone)]
pub struct Applied {
    text: String,
    record: RevertRecord,
    changed: bool,
}

impl Applied {
    /// The edited configuration text.
    ///
    /// ```
    /// # use config_rewrite::{Rewrite, Target};
    /// let r = Rewrite::new().set_string(Target::TopLevel, "model", "o3");
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some("[tui]\n"), &r)?;
    /// assert_eq!(applied.text(), "model = \"o3\"\n[tui]\n");
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The record that undoes this edit.
    ///
    /// ```
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some(""), &config_rewrite::Rewrite::new())?;
    /// assert!(applied.record().is_noop());
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn record(&self) -> &RevertRecord {
        &self.record
    }

    /// Whether the text differs from the input (or the file has to be created).
    ///
    /// ```
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some("a = 1\n"), &config_rewrite::Rewrite::new())?;
    /// assert!(!applied.changed());
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The text and the record.
    ///
    /// ```
    /// let (text, record) = config_rewrite::apply_to_str("c.toml".as_ref(), Some(""), &config_rewrite::Rewrite::new())?.into_parts();
    /// assert_eq!(text, "");
    /// # let _ = record;
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn into_parts(self) -> (String, RevertRecord) {
        (self.text, self.record)
    }
}

/// How a restore went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreOutcome {
    /// Nobody touched the file since the apply: it is back byte for byte (or removed again if
    /// the apply created it).
    Exact,
    /// The file already was in its original state; nothing to do.
    AlreadyRestored,
    /// The file was edited after the apply. Only our own keys that still held our values were
    /// undone; everything else, including keys the user changed, was kept.
    Merged {
        /// Keys put back to their previous state (dotted paths).
        undone: Vec<String>,
        /// Keys we had changed but that someone changed again, so they were left alone.
        kept: Vec<String>,
    },
    /// The file had been deleted after the apply; its original content was written back so
    /// nothing is lost.
    Recreated,
}

/// The result of [`restore_str`]. `Debug` shows the outcome and size, never the text.
#[derive(Clone)]
pub struct Restored {
    text: Option<String>,
    outcome: RestoreOutcome,
}

impl Restored {
    /// The restored text, or `None` when the file should not exist.
    ///
    /// ```
    /// # use config_rewrite::{Rewrite, Target};
    /// let r = Rewrite::new().set_string(Target::TopLevel, "model", "o3");
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), None, &r)?;
    /// let restored = config_rewrite::restore_str(Some(applied.text()), applied.record())?;
    /// assert_eq!(restored.text(), None);
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// What happened.
    ///
    /// ```
    /// # use config_rewrite::{Rewrite, Target, RestoreOutcome};
    /// let r = Rewrite::new().set_string(Target::TopLevel, "model", "o3");
    /// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some("# mine\n"), &r)?;
    /// let restored = config_rewrite::restore_str(Some(applied.text()), applied.record())?;
    /// assert_eq!(restored.outcome(), &RestoreOutcome::Exact);
    /// # Ok::<(), config_rewrite::EditError>(())
    /// ```
    pub fn outcome(&self) -> &RestoreOutcome {
        &self.outcome
    }

    pub(crate) fn into_parts(self) -> (Option<String>, RestoreOutcome) {
        (self.text, self.outcome)
    }
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("text_len", &self.text.len())
            .field("changed", &self.changed)
            .field("record", &self.record)
            .finish()
    }
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("text_len", &self.text.as_ref().map(String::len))
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// How the source text was laid out, so printing reproduces it.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    bom: bool,
    crlf: bool,
    /// toml_edit always ends the last line; the user's file may not.
    no_final_newline: bool,
}

impl Layout {
    fn render(self, doc: &DocumentMut) -> String {
        let printed = doc.to_string();
        let mut out = String::with_capacity(printed.len() + printed.len() / 32 + 3);
        if self.bom {
            out.push(BOM);
        }
        if self.crlf {
            // toml_edit prints line breaks as LF but keeps CRLF inside multi-line strings.
            let mut prev = '\0';
            for c in printed.chars() {
                if c == '\n' && prev != '\r' {
                    out.push('\r');
                }
                out.push(c);
                prev = c;
            }
        } else {
            out.push_str(&printed);
        }
        if self.no_final_newline && out.ends_with('\n') {
            out.pop();
            if out.ends_with('\r') {
                out.pop();
            }
        }
        out
    }
}

/// Parses `text` (without its byte-order mark) and notes its layout.
fn parse_doc(text: &str) -> Result<(DocumentMut, Layout), EditError> {
    let (body, bom) = match text.strip_prefix(BOM) {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let crlf = body
        .find('\n')
        .is_some_and(|i| i > 0 && body.as_bytes()[i - 1] == b'\r');
    let doc = body.parse::<DocumentMut>().map_err(|e| {
        let (line, column) = line_col(body, e.span().map_or(0, |s| s.start));
        EditError::InvalidToml {
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    let layout = Layout {
        bom,
        crlf,
        no_final_newline: !body.is_empty() && !body.ends_with('\n'),
    };
    Ok((doc, layout))
}

/// Parses `text`, refusing anything that would not print back byte for byte.
fn parse(text: &str) -> Result<(DocumentMut, Layout), EditError> {
    let (doc, layout) = parse_doc(text)?;
    let printed = layout.render(&doc);
    if printed != text {
        let at = printed
            .bytes()
            .zip(text.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.len().min(text.len()));
        let (line, column) = line_col(text, at);
        return Err(EditError::NotRoundTrippable { line, column });
    }
    Ok((doc, layout))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies `rewrite` to configuration text. `original` is `None` when the file does not exist
/// (the result is then a new file). `config` is only recorded in the revert record.
///
/// Every byte outside the edited keys is kept: comments, blank lines, key order, quoting,
/// CRLF line endings, a byte-order mark, a missing final newline. Keys set at the top level
/// always land before the first table header, whatever the file looks like.
/// Applying the same rewrite to its own output changes nothing.
///
/// # Errors
/// [`EditError::InvalidToml`] (with line and column) for text that is not TOML,
/// [`EditError::NotATable`] when e.g. `profiles` is not a table,
/// [`EditError::InvalidInput`] for an empty key, a reserved provider id, an unusable URL or
/// variable name, or any text to be written that holds a control, bidi or line-separator
/// character (checked before the text is parsed),
/// [`EditError::NotRoundTrippable`] for text that would not print back unchanged.
///
/// ```
/// use config_rewrite::{ProviderSpec, Rewrite, Target};
/// let original = "# my settings\n[[skills.config]]\npath = \"a\"\nenabled = true\n";
/// let rewrite = Rewrite::route_to(ProviderSpec::new("proxy", "http://127.0.0.1:9/v1"), Target::TopLevel);
/// let applied = config_rewrite::apply_to_str("config.toml".as_ref(), Some(original), &rewrite)?;
/// // Top-level, not swallowed by the array of tables:
/// let doc: toml_edit::DocumentMut = applied.text().parse().unwrap();
/// assert_eq!(doc["model_provider"].as_str(), Some("proxy"));
/// // And back:
/// let restored = config_rewrite::restore_str(Some(applied.text()), applied.record())?;
/// assert_eq!(restored.text(), Some(original));
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
pub fn apply_to_str(
    config: &Path,
    original: Option<&str>,
    rewrite: &Rewrite,
) -> Result<Applied, EditError> {
    rewrite.validate()?;
    let (mut doc, layout) = match original {
        Some(text) => parse(text)?,
        None => (DocumentMut::new(), Layout::default()),
    };
    let mut edits = Vec::new();
    let mut created = Vec::new();
    for op in &rewrite.ops {
        apply_op(doc.as_table_mut(), op, &mut edits, &mut created)?;
    }
    let changed = original.is_none() || !edits.is_empty();
    let text = match original {
        Some(text) if !changed => text.to_owned(),
        _ => layout.render(&doc),
    };
    if changed {
        check_applied(&text, rewrite)?;
    }
    Ok(Applied {
        record: RevertRecord {
            format: FORMAT,
            config: config.to_path_buf(),
            original: original.map(str::to_owned),
            applied_sha256: sha256_hex(&text),
            edits,
            created_tables: created,
        },
        text,
        changed,
    })
}

/// Re-reads the output and checks every edit landed where it belongs (guards against a
/// top-level key swallowed by a table).
fn check_applied(text: &str, rewrite: &Rewrite) -> Result<(), EditError> {
    let internal = |what: String| EditError::Internal { what };
    let (mut doc, _) =
        parse_doc(text).map_err(|e| internal(format!("output does not parse back: {e}")))?;
    let root = doc.as_table_mut();
    for op in &rewrite.ops {
        match op {
            Op::SetString { target, key, value } => {
                let path = target.table_path();
                let found = lookup(root, &path, key)
                    .and_then(Item::as_str)
                    .map(str::to_owned);
                if found.as_deref() != Some(value.as_str()) {
                    return Err(internal(format!("`{}` not set", label(&path, key))));
                }
            }
            Op::RemoveKey { target, key } => {
                let path = target.table_path();
                if lookup(root, &path, key).is_some() {
                    return Err(internal(format!("`{}` not removed", label(&path, key))));
                }
            }
            Op::UpsertProvider(spec) => {
                let path = provider_path(spec.id());
                for (field, value) in spec.fields() {
                    let ok = lookup(root, &path, field)
                        .is_some_and(|item| canon_item(item) == canon_field(&value));
                    if !ok {
                        return Err(internal(format!("`{}` not set", label(&path, field))));
                    }
                }
            }
            Op::RemoveProvider(id) => {
                if lookup(root, &["model_providers".to_owned()], id).is_some() {
                    return Err(internal(format!("provider `{id}` not removed")));
                }
            }
        }
    }
    Ok(())
}

fn label(path: &[String], key: &str) -> String {
    let mut full = path.to_vec();
    full.push(key.to_owned());
    dotted(&full)
}

fn provider_path(id: &str) -> Vec<String> {
    vec!["model_providers".to_owned(), id.to_owned()]
}

fn lookup<'a>(root: &'a Table, path: &[String], key: &str) -> Option<&'a Item> {
    let mut cur: &dyn TableLike = root;
    for seg in path {
        cur = cur.get(seg)?.as_table_like()?;
    }
    cur.get(key).filter(|item| !item.is_none())
}

fn apply_op(
    root: &mut Table,
    op: &Op,
    edits: &mut Vec<KeyEdit>,
    created: &mut Vec<Vec<String>>,
) -> Result<(), EditError> {
    match op {
        Op::SetString { target, key, value } => {
            let path = target.table_path();
            let table = navigate_or_create(root, &path, created)?;
            if let Some(existing) = table.get(key)
                && !existing.is_none()
                && !existing.is_value()
            {
                return Err(EditError::InvalidInput {
                    field: label(&path, key),
                    reason: format!(
                        "it holds a {}; only plain values are replaced by a string",
                        kind(existing)
                    ),
                });
            }
            set_value(table, &path, key, Value::from(value.as_str()), edits)
        }
        Op::RemoveKey { target, key } => {
            let path = target.table_path();
            if let Some(table) = navigate(root, &path, false, created)? {
                remove_item(table, &path, key, edits);
            }
            Ok(())
        }
        Op::UpsertProvider(spec) => {
            let path = provider_path(spec.id());
            let table = navigate_or_create(root, &path, created)?;
            for (field, value) in spec.fields() {
                set_value(table, &path, field, field_to_value(&value), edits)?;
            }
            Ok(())
        }
        Op::RemoveProvider(id) => {
            let path = vec!["model_providers".to_owned()];
            if let Some(table) = navigate(root, &path, false, created)? {
                remove_item(table, &path, id, edits);
            }
            Ok(())
        }
    }
}

fn field_to_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Str(s) => Value::from(s.as_str()),
        FieldValue::Bool(b) => Value::from(*b),
        // ok: validate() refused values above i64::MAX; saturate defensively anyway.
        FieldValue::Int(n) => Value::from(i64::try_from(*n).unwrap_or(i64::MAX)),
        FieldValue::Map(map) => {
            let mut t = InlineTable::new();
            for (k, v) in map {
                t.insert(k, Value::from(v.as_str()));
            }
            Value::InlineTable(t)
        }
    }
}

fn kind(item: &Item) -> &'static str {
    match item {
        Item::None => "missing value",
        Item::Table(_) => "table",
        Item::ArrayOfTables(_) => "array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "date-time",
            Value::Array(_) => "array",
            Value::InlineTable(_) => "inline table",
        },
    }
}

/// Walks to the table at `path`, creating missing tables when `create` is set (and noting
/// them in `created`). Works through standard, dotted-key and inline tables.
fn navigate<'a>(
    root: &'a mut Table,
    path: &[String],
    create: bool,
    created: &mut Vec<Vec<String>>,
) -> Result<Option<&'a mut dyn TableLike>, EditError> {
    let mut cur: &mut dyn TableLike = root;
    for (i, seg) in path.iter().enumerate() {
        let exists = cur.get(seg).is_some_and(|item| !item.is_none());
        if !exists {
            if !create {
                return Ok(None);
            }
            let mut table = Table::new();
            // Implicit: an intermediate table (`[model_providers]`) prints no header of its own.
            table.set_implicit(true);
            cur.insert(seg, Item::Table(table));
            created.push(path[..=i].to_vec());
        }
        let Some(item) = cur.get_mut(seg) else {
            return Err(EditError::Internal {
                what: format!("table `{}` vanished", dotted(&path[..=i])),
            });
        };
        let found = kind(item);
        match item.as_table_like_mut() {
            Some(next) => cur = next,
            None => {
                return Err(EditError::NotATable {
                    key_path: dotted(&path[..=i]),
                    found,
                });
            }
        }
    }
    Ok(Some(cur))
}

fn navigate_or_create<'a>(
    root: &'a mut Table,
    path: &[String],
    created: &mut Vec<Vec<String>>,
) -> Result<&'a mut dyn TableLike, EditError> {
    navigate(root, path, true, created)?.ok_or_else(|| EditError::Internal {
        what: format!("table `{}` not created", dotted(path)),
    })
}

fn set_value(
    table: &mut dyn TableLike,
    path: &[String],
    key: &str,
    new: Value,
    edits: &mut Vec<KeyEdit>,
) -> Result<(), EditError> {
    let after = snapshot(&Item::Value(new.clone()));
    let before = match table.get_mut(key) {
        Some(item) if !item.is_none() => {
            if canon_item(item) == canon_value(&new) {
                return Ok(());
            }
            let before = snapshot(item);
            match item.as_value_mut() {
                Some(value) => {
                    // Keep the user's spacing and trailing comment around the value.
                    let decor = value.decor().clone();
                    *value = new;
                    *value.decor_mut() = decor;
                }
                None => *item = Item::Value(new),
            }
            Some(before)
        }
        _ => {
            table.insert(key, Item::Value(new));
            None
        }
    };
    edits.push(KeyEdit {
        table: path.to_vec(),
        key: key.to_owned(),
        before,
        after: Some(after),
    });
    Ok(())
}

fn remove_item(table: &mut dyn TableLike, path: &[String], key: &str, edits: &mut Vec<KeyEdit>) {
    if let Some(item) = table.remove(key)
        && !item.is_none()
    {
        edits.push(KeyEdit {
            table: path.to_vec(),
            key: key.to_owned(),
            before: Some(snapshot(&item)),
            after: None,
        });
    }
}

/// A one-key TOML document `v = …` holding `item` with its formatting.
fn snapshot(item: &Item) -> String {
    let mut holder = Table::new();
    holder.insert("v", item.clone());
    DocumentMut::from(holder).to_string()
}

fn unsnapshot(text: &str) -> Result<Item, EditError> {
    let bad = |reason: String| EditError::InvalidRecord { reason };
    let mut doc = text
        .parse::<DocumentMut>()
        .map_err(|e| bad(format!("a stored value is not TOML: {}", e.message())))?;
    doc.as_table_mut()
        .remove("v")
        .ok_or_else(|| bad("a stored value is empty".to_owned()))
}

/// A value with formatting stripped, for "does it still hold our value?".
#[derive(Debug, PartialEq)]
enum Canon {
    Str(String),
    Int(i64),
    Float(u64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Canon>),
    Table(BTreeMap<String, Canon>),
    Missing,
}

fn canon_item(item: &Item) -> Canon {
    match item {
        Item::None => Canon::Missing,
        Item::Value(v) => canon_value(v),
        Item::Table(t) => canon_table(t),
        Item::ArrayOfTables(a) => Canon::Array(a.iter().map(|t| canon_table(t)).collect()),
    }
}

fn canon_table(t: &dyn TableLike) -> Canon {
    Canon::Table(
        t.iter()
            .filter(|(_, v)| !v.is_none())
            .map(|(k, v)| (k.to_owned(), canon_item(v)))
            .collect(),
    )
}

fn canon_value(v: &Value) -> Canon {
    match v {
        Value::String(s) => Canon::Str(s.value().clone()),
        Value::Integer(i) => Canon::Int(*i.value()),
        Value::Float(f) => Canon::Float(f.value().to_bits()),
        Value::Boolean(b) => Canon::Bool(*b.value()),
        Value::Datetime(d) => Canon::Datetime(d.value().to_string()),
        Value::Array(a) => Canon::Array(a.iter().map(canon_value).collect()),
        Value::InlineTable(t) => canon_table(t),
    }
}

fn canon_field(value: &FieldValue) -> Canon {
    canon_value(&field_to_value(value))
}

/// Undoes the apply recorded in `record` on the current text (`None`: the file is missing).
///
/// - Unchanged since the apply → the original text (byte for byte), or `None` if the apply
///   created the file.
/// - Edited since → only keys that still hold the values we wrote are put back; keys the
///   user changed are kept and listed in [`RestoreOutcome::Merged`]. Tables the apply created
///   are removed once empty.
/// - Missing → the original text (nothing is lost).
///
/// Restoring twice is harmless: the second time reports [`RestoreOutcome::AlreadyRestored`].
///
/// # Errors
/// [`EditError::InvalidToml`] when the user's edits left the file invalid (nothing is changed),
/// [`EditError::InvalidRecord`] for a record from an unknown format version.
///
/// ```
/// use config_rewrite::{ProviderSpec, Rewrite, RestoreOutcome, Target};
/// let rewrite = Rewrite::route_to(ProviderSpec::new("proxy", "http://127.0.0.1:9/v1"), Target::TopLevel);
/// let applied = config_rewrite::apply_to_str("c.toml".as_ref(), Some("model = \"o3\"\n"), &rewrite)?;
/// // Meanwhile the user switched models:
/// let edited = applied.text().replace("\"o3\"", "\"gpt-5\"");
/// let restored = config_rewrite::restore_str(Some(&edited), applied.record())?;
/// assert_eq!(restored.text(), Some("model = \"gpt-5\"\n"));
/// assert!(matches!(restored.outcome(), RestoreOutcome::Merged { .. }));
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
pub fn restore_str(current: Option<&str>, record: &RevertRecord) -> Result<Restored, EditError> {
    if record.format != FORMAT {
        return Err(EditError::InvalidRecord {
            reason: format!(
                "format version {} is not supported (expected {FORMAT})",
                record.format
            ),
        });
    }
    let Some(current) = current else {
        return Ok(match &record.original {
            None => Restored {
                text: None,
                outcome: RestoreOutcome::AlreadyRestored,
            },
            Some(original) => Restored {
                text: Some(original.clone()),
                outcome: RestoreOutcome::Recreated,
            },
        });
    };
    if sha256_hex(current) == record.applied_sha256 {
        return Ok(Restored {
            text: record.original.clone(),
            outcome: RestoreOutcome::Exact,
        });
    }
    if record.original.as_deref() == Some(current) {
        return Ok(Restored {
            text: Some(current.to_owned()),
            outcome: RestoreOutcome::AlreadyRestored,
        });
    }
    merge_restore(current, record)
}

fn merge_restore(current: &str, record: &RevertRecord) -> Result<Restored, EditError> {
    let (mut doc, layout) = parse(current)?;
    let root = doc.as_table_mut();
    let mut undone = Vec::new();
    let mut kept = Vec::new();
    let mut scratch = Vec::new();
    for edit in record.edits.iter().rev() {
        let label = edit.label();
        let after = edit.after.as_deref().map(unsnapshot).transpose()?;
        let before = edit.before.as_deref().map(unsnapshot).transpose()?;
        // Putting back a removed key may need its (auto-removed, empty) parent again.
        let Some(table) = navigate(root, &edit.table, after.is_none(), &mut scratch)
            .ok()
            .flatten()
        else {
            kept.push(label);
            continue;
        };
        let current_item = table.get(&edit.key).filter(|item| !item.is_none());
        let ours = match (&after, current_item) {
            (Some(after), Some(cur)) => canon_item(cur) == canon_item(after),
            (None, None) => true,
            _ => false,
        };
        if !ours {
            kept.push(label);
            continue;
        }
        match before {
            Some(before) => put_back(table, &edit.key, before),
            None => {
                table.remove(&edit.key);
            }
        }
        undone.push(label);
    }
    let mut created = record.created_tables.clone();
    created.sort_by_key(|path| std::cmp::Reverse(path.len()));
    for path in created {
        let Some((last, parent)) = path.split_last() else {
            continue;
        };
        if let Ok(Some(parent)) = navigate(root, parent, false, &mut scratch)
            && parent
                .get(last)
                .and_then(Item::as_table_like)
                .is_some_and(|t| t.is_empty())
        {
            parent.remove(last);
        }
    }
    let text = layout.render(&doc);
    let text = if record.original.is_none() && text.trim_start_matches(BOM).trim().is_empty() {
        None
    } else {
        Some(text)
    };
    undone.reverse();
    kept.reverse();
    Ok(Restored {
        text,
        outcome: RestoreOutcome::Merged { undone, kept },
    })
}

fn put_back(table: &mut dyn TableLike, key: &str, before: Item) {
    match (table.get_mut(key), before) {
        (Some(Item::Value(cur)), Item::Value(before)) => *cur = before,
        (_, mut before) => {
            if let Item::Table(t) = &mut before {
                t.set_position(None);
            }
            table.insert(key, before);
        }
    }
}

/// Reads a string key from `target` (e.g. which `model_provider` is active).
/// Returns `None` when the key or the profile is absent.
///
/// # Errors
/// [`EditError::InvalidToml`] for invalid text; [`EditError::InvalidInput`] when the key holds
/// something other than a string; [`EditError::NotATable`] when the profile is not a table.
///
/// ```
/// use config_rewrite::Target;
/// let text = "model_provider = \"a\"\n[profiles.work]\nmodel_provider = \"b\"\n";
/// assert_eq!(config_rewrite::read_string(text, &Target::TopLevel, "model_provider")?.as_deref(), Some("a"));
/// assert_eq!(config_rewrite::read_string(text, &Target::profile("work"), "model_provider")?.as_deref(), Some("b"));
/// assert_eq!(config_rewrite::read_string(text, &Target::profile("home"), "model_provider")?, None);
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
pub fn read_string(text: &str, target: &Target, key: &str) -> Result<Option<String>, EditError> {
    let (doc, _) = parse_doc(text)?;
    let path = target.table_path();
    let mut cur: &dyn TableLike = doc.as_table();
    for (i, seg) in path.iter().enumerate() {
        match cur.get(seg) {
            None => return Ok(None),
            Some(item) => match item.as_table_like() {
                Some(t) => cur = t,
                None => {
                    return Err(EditError::NotATable {
                        key_path: dotted(&path[..=i]),
                        found: kind(item),
                    });
                }
            },
        }
    }
    match cur.get(key).filter(|item| !item.is_none()) {
        None => Ok(None),
        Some(item) => match item.as_str() {
            Some(s) => Ok(Some(s.to_owned())),
            None => Err(EditError::InvalidInput {
                field: label(&path, key),
                reason: format!("it holds a {}, not a string", kind(item)),
            }),
        },
    }
}

/// What in a `config.toml` makes Codex CLI 0.169 refuse `--profile NAME`: a legacy top-level
/// `profile = "NAME"` selector (refused by 0.169 with or without `--profile`) or a legacy
/// `[profiles.NAME]` table (ignored without `--profile NAME`, refused with it). Codex 0.169
/// reads a profile from the layer file `NAME.config.toml` instead (see
/// [`profile_config_path`](crate::profile_config_path)); a tool that routes one profile there
/// can use this to tell the user what still has to move. Returns the offending key paths,
/// empty when there are none.
///
/// # Errors
/// [`EditError::InvalidToml`] (with line and column) for invalid text.
///
/// ```
/// let text = "profile = \"work\"\n[profiles.work]\nmodel = \"o3\"\n[profiles.home]\n";
/// assert_eq!(config_rewrite::legacy_profile_items(text, "work")?, ["profile", "profiles.work"]);
/// assert_eq!(config_rewrite::legacy_profile_items(text, "home")?, ["profile", "profiles.home"]);
/// assert!(config_rewrite::legacy_profile_items("model = \"o3\"\n", "work")?.is_empty());
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
pub fn legacy_profile_items(text: &str, name: &str) -> Result<Vec<String>, EditError> {
    let (doc, _) = parse_doc(text)?;
    let mut found = Vec::new();
    if doc.get("profile").is_some_and(|item| !item.is_none()) {
        found.push("profile".to_owned());
    }
    if doc
        .get("profiles")
        .and_then(Item::as_table_like)
        .and_then(|profiles| profiles.get(name))
        .is_some_and(|item| !item.is_none())
    {
        found.push(dotted(&["profiles".to_owned(), name.to_owned()]));
    }
    Ok(found)
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
