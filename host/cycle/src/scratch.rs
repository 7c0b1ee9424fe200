//! Scratch directories for files the host writes and then reads back.
//!
//! A reference run's outputs are written and then registered, a
//! submission is copied and then scored, a compile cache is filled and
//! then executed from. Under a shared temporary directory, a name another
//! local user can predict (a process id, a public contract's id) lets that
//! user create the directory first and put or swap a file between the
//! write and the read: a forged reference, compiled code planted where the
//! host loads it. So every scratch directory gets a random name, is
//! created exclusively (never an existing directory or link), can be read
//! by this user alone, and is removed when dropped, errors included.

use anyhow::{Context, Result};
pub use tempfile::TempDir;

/// A new private directory `geohost-PURPOSE-RANDOM` under the system's
/// temporary directory (`TMPDIR`), removed when the value is dropped.
pub fn private(purpose: &str) -> Result<TempDir> {
    let prefix = format!("geohost-{purpose}-");
    let mut builder = tempfile::Builder::new();
    // Created exclusively (an existing name is retried with another), the
    // name's random part long enough not to be guessed.
    builder.prefix(&prefix).rand_bytes(12);
    // tempfile leaves the mode to the umask (0755 with the usual 022).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    builder
        .tempdir()
        .with_context(|| format!("cannot create a scratch directory under {} (set TMPDIR to a writable directory)", std::env::temp_dir().display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_directories_are_new_private_and_removed() {
        let (a, b) = (super::private("test").unwrap(), super::private("test").unwrap());
        assert_ne!(a.path(), b.path(), "two scratch directories share a name");
        for dir in [&a, &b] {
            let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("geohost-test-") && name.len() > "geohost-test-".len() + 5, "{name}");
            assert!(!name.contains(&std::process::id().to_string()), "the process id is predictable: {name}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o700, "{name} can be read or written by others");
            }
        }
        let path = a.path().to_path_buf();
        std::fs::write(path.join("file"), b"x").unwrap();
        drop(a);
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}
