//! Reading a manifest: TOML text or file to [`Manifest`] (checked), back to TOML, and TOML errors
//! shown at the line they are about.

use super::Manifest;
use crate::error::{LeptonError, Result};
use std::path::Path;

/// A TOML error as `line N (`the line`): message`. The parser places an unknown key at its
/// table's header; the line shown is the key's own (the first `key =` after that point).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let start = span.start.min(text.len());
    let mut line = text[..start].matches('\n').count() + 1;
    let message = e.message();
    if let Some(key) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        let assigns = |l: &str| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.strip_prefix(&format!("\"{key}\"")).is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        if let Some(k) = text.lines().enumerate().skip(line - 1).find(|(_, l)| assigns(l)).map(|(k, _)| k) {
            line = k + 1;
        }
    }
    let source = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("line {line} (`{source}`): {message}")
}

impl Manifest {
    /// Parses manifest TOML; `path` names its origin in errors (a `.toml` file or a model).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| LeptonError::ManifestSyntax { path: path.to_path_buf(), message: toml_error(text, &e) })?;
        m.check(path)?;
        Ok(m)
    }

    /// Reads a manifest from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LeptonError::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::DIGITS;
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = Manifest::from_toml(&DIGITS.replace("std =", "sdt ="), Path::new("m.toml")).unwrap_err().to_string();
        assert!(err.contains("sdt") && err.contains("line"), "{err}");
        let err =
            Manifest::from_toml(&DIGITS.replace("[0.5]\nstd", "[0.5, 0.1]\nstd"), Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("input.mean"), "{err}");
        let err = Manifest::from_toml(&DIGITS.replace("std = [0.5]", "std = [0.0]"), Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("input.std"), "{err}");
        let err = Manifest::from_toml(
            "task = \"detect\"\nlabels=[\"a\"]\n[input]\nlayout=\"nchw\"\nsize=[8,8]\ncolor=\"rgb\"",
            Path::new("d.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`detect`"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_own_line() {
        let text =
            "task = \"classify\"\nlabels = [\"a\"]\n[input]\nlayout = \"nchw\"\nsize = [8, 8]\ncolour = \"rgb\"\n";
        let e = Manifest::from_toml(text, Path::new("m.toml")).unwrap_err().to_string();
        assert!(e.contains("line 6 (`colour = \"rgb\"`)") && e.contains("unknown field `colour`"), "{e}");
    }
}
