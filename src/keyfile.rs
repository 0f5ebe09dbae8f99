//! The local API key file that makes zero-config use work: `streamctl serve` without any
//! configured key creates a key and stores it here (mode 0600), and the `streamctl` client
//! commands read it when no key is given. One function decides the path for both sides.
//!
//! Path: `$STREAMGATE_KEY_FILE`, else `$XDG_CONFIG_HOME/streamgate/api-key`, else
//! `$HOME/.config/streamgate/api-key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Name of the key the file holds, as streams record their owner.
pub const KEY_NAME: &str = "local";

/// Where the key file lives, or `None` when no home directory can be found.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STREAMGATE_KEY_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("streamgate").join("api-key"))
}

/// Reads the key from `path`, if the file exists and holds one.
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let key = text.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// A new random key: 64 hex digits (two v4 UUIDs' worth of OS randomness).
pub fn generate() -> String {
    format!(
        "sg_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Returns the key stored at `path`, creating it first if needed; `true` when created.
pub fn load_or_create(path: &Path) -> Result<(String, bool), Error> {
    if let Some(key) = read(path) {
        return Ok((key, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let key = generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    writeln!(file, "{key}").map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-key");
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created && key.len() == 67);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
