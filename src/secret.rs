//! A password or token that never prints: a leaf module, so that `config` and the modules
//! whose settings it reads (`sentinel`) do not import each other.
//!
//! A secret can also come from a file (`password_file`, `admin_token_file`), so that it need
//! not live in the config file or the environment. A relative path is looked up first in
//! systemd's credentials directory (`$CREDENTIALS_DIRECTORY`, set for a unit with
//! `LoadCredential=`: the service reads its private copy), then beside the config file (where
//! root's `roomguard status` or `failover` finds the original). The file is read when the
//! config is loaded: at start, by `check-config`, and by SIGHUP, which refuses a changed
//! password (a restart applies it) as it refuses any other.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// A password that never prints.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The secret of a config key that may be given inline (`key`) or from a file (`key_file`),
/// never both. `table` names where the keys are, for messages (`[redis]`,
/// `[redis.room."2"]`); `base` is the config file's directory.
pub fn inline_or_file(
    table: &str,
    key: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
    base: &Path,
) -> Result<Option<Secret>, String> {
    let Some(file) = file else { return Ok(inline) };
    if inline.is_some() {
        return Err(format!("{table}: `{key}` and `{key}_file` are both set: keep one"));
    }
    let path = locate(file, base, std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from).as_deref());
    let culprit = || format!("{table}: `{key}_file` = \"{}\"", file.display());
    let text = std::fs::read(&path).map_err(|e| format!("{}: cannot read {}: {e}", culprit(), path.display()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{}: {} is not UTF-8 text", culprit(), path.display()))?;
    // One trailing line end (an editor's or `echo`'s) is not part of the secret.
    let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if secret.is_empty() {
        return Err(format!("{}: {} is empty", culprit(), path.display()));
    }
    if secret.contains('\n') {
        return Err(format!("{}: {} holds more than one line", culprit(), path.display()));
    }
    Ok(Some(Secret::new(secret)))
}

/// Where a secret file is: an absolute path as is; a relative one in the credentials
/// directory when it is there, else beside the config file.
fn locate(file: &Path, base: &Path, credentials: Option<&Path>) -> PathBuf {
    if file.is_absolute() {
        return file.to_path_buf();
    }
    match credentials.map(|dir| dir.join(file)) {
        Some(credential) if credential.exists() => credential,
        _ => base.join(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::write(base.join("redis"), "s3cret\n").unwrap();
        let read = |file: &str| inline_or_file("[redis]", "password", None, Some(Path::new(file)), base);
        assert_eq!(read("redis").unwrap().unwrap().expose(), "s3cret");
        let absolute = base.join("redis").display().to_string();
        assert_eq!(read(&absolute).unwrap().unwrap().expose(), "s3cret");
        std::fs::write(base.join("crlf"), "pw\r\n").unwrap();
        assert_eq!(read("crlf").unwrap().unwrap().expose(), "pw");

        let err = read("missing").unwrap_err();
        assert!(err.starts_with("[redis]: `password_file` = \"missing\": cannot read "), "{err}");
        assert!(err.contains(&base.join("missing").display().to_string()), "{err}");
        std::fs::write(base.join("empty"), "\n").unwrap();
        assert!(read("empty").unwrap_err().ends_with("is empty"));
        std::fs::write(base.join("two"), "a\nb\n").unwrap();
        assert!(read("two").unwrap_err().ends_with("holds more than one line"));
        let both = inline_or_file("[sentinel]", "password", Some(Secret::new("x")), Some(Path::new("redis")), base);
        assert_eq!(both.unwrap_err(), "[sentinel]: `password` and `password_file` are both set: keep one");
        assert_eq!(inline_or_file("[redis]", "password", None, None, base).unwrap(), None);

        // A relative path: the credentials directory first, when the file is there.
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join("redis"), "from-systemd").unwrap();
        assert_eq!(locate(Path::new("redis"), base, Some(credentials.path())), credentials.path().join("redis"));
        assert_eq!(locate(Path::new("other"), base, Some(credentials.path())), base.join("other"));
        assert_eq!(locate(Path::new("redis"), base, None), base.join("redis"));
        assert_eq!(locate(&base.join("redis"), Path::new("/elsewhere"), Some(credentials.path())), base.join("redis"));
    }
}
