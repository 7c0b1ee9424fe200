//! Signed bundles: a minisign signature (Ed25519) of a bundle's manifest,
//! which lists the id (BLAKE3) of every blob and every record and edge, so
//! one signature covers the whole bundle. Key and signature files are
//! minisign's formats (the `minisign` crate): `minisign -V` (the minisign
//! 0.11 tool) checks a signature made here. A password-less secret key made
//! by that tool failed this crate's checksum check when tried, so keys are
//! best made with `geohost registry keygen`.
//!
//! A registry trusts the public keys given with `import --trust` and those
//! in its `trusted-keys/` directory (`*.pub`).

use anyhow::{bail, Context, Result};
use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Environment variable holding the password of an encrypted secret key.
pub const PASSWORD_ENV: &str = "GEOHOST_KEY_PASSWORD";

/// minisign's key id: 16 upper-case hex digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// Write a new key pair to `PREFIX.key` (secret; encrypted when
/// [`PASSWORD_ENV`] is set) and `PREFIX.pub`. Refuses to overwrite either.
/// Returns both paths and the key id.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let (sk_path, pk_path) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            bail!("{} exists; not overwriting a key (choose another name or remove it)", p.display());
        }
    }
    let pair = match std::env::var(PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => KeyPair::generate_encrypted_keypair(Some(password)),
        _ => KeyPair::generate_unencrypted_keypair(),
    }
    .context("generating a key pair")?;
    let id = key_id(pair.pk.keynum());
    let sk_box = pair.sk.to_box(Some(&format!("geohost secret key {id}"))).context("encoding the secret key")?;
    let pk_box = pair.pk.to_box().context("encoding the public key")?;
    write_new(&sk_path, sk_box.into_string().as_bytes(), 0o600)?;
    write_new(&pk_path, pk_box.into_string().as_bytes(), 0o644)?;
    Ok((sk_path, pk_path, id))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// A secret key from a minisign `.key` file (the password of an encrypted
/// one comes from [`PASSWORD_ENV`]).
pub fn load_secret(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read secret key {}", path.display()))?;
    let sk_box = SecretKeyBox::from_string(&text).with_context(|| format!("{} is not a minisign secret key", path.display()))?;
    match std::env::var(PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => sk_box.into_secret_key(Some(password)),
        _ => sk_box.into_unencrypted_secret_key(),
    }
    .with_context(|| format!("cannot use secret key {} (a password-protected key needs its password in {PASSWORD_ENV})", path.display()))
}

/// A public key: a minisign `.pub` file, or its base64 line.
pub fn load_public(spec: &str) -> Result<PublicKey> {
    let path = Path::new(spec);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read public key {}", path.display()))?;
        return PublicKeyBox::from_string(&text)
            .and_then(|b| b.into_public_key())
            .or_else(|_| PublicKey::from_base64(text.trim()))
            .map_err(|e| anyhow::anyhow!("{} is not a minisign public key: {e}", path.display()));
    }
    PublicKey::from_base64(spec.trim()).map_err(|e| anyhow::anyhow!("`{spec}` is neither a public key file nor a minisign public key: {e}"))
}

/// The keys in `REGISTRY/trusted-keys/*.pub`.
pub fn trusted_keys(registry_dir: &Path) -> Result<Vec<PublicKey>> {
    let dir = registry_dir.join("trusted-keys");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "pub")).collect();
    paths.sort();
    paths.iter().map(|p| load_public(&p.display().to_string())).collect()
}

/// Sign `manifest` (the bundle's manifest.json bytes).
pub fn sign(sk: &SecretKey, manifest: &[u8]) -> Result<String> {
    let trusted = format!("geohost bundle manifest {}", crate::artifact_id(manifest));
    let sig =
        minisign::sign(None, sk, Cursor::new(manifest), Some(&trusted), Some("signature of a geohost bundle manifest")).context("signing the manifest")?;
    Ok(sig.into_string())
}

/// The key id of the bundle's signature if `keys` holds its key and it
/// verifies over `manifest`; an error saying which otherwise.
pub fn verify(keys: &[PublicKey], signature: &str, manifest: &[u8]) -> Result<String> {
    let sig = SignatureBox::from_string(signature).map_err(|e| anyhow::anyhow!("its manifest.minisig is not a minisign signature: {e}"))?;
    let signer = key_id(sig.keynum());
    let Some(pk) = keys.iter().find(|k| k.keynum() == sig.keynum()) else {
        bail!("it is signed by key {signer}, which is not a trusted key");
    };
    minisign::verify(pk, &sig, Cursor::new(manifest), true, false, false)
        .map_err(|e| anyhow::anyhow!("its signature by key {signer} does not verify ({e}): the manifest was changed after signing"))?;
    Ok(signer)
}

/// The key id a signature claims (unverified).
pub fn claimed_signer(signature: &str) -> Option<String> {
    SignatureBox::from_string(signature).ok().map(|s| key_id(s.keynum()))
}
