//! Long-term identities of the processes: an X25519 key pair per host (`post keygen`), and the
//! public keys an operator tells each process to trust (`--trust FILE`).
//!
//! Files are one line of text each: `NAME.key` holds `post-key-v1 <private hex> <public hex>` and
//! is written with mode 0600 (a key file that others can read is refused, as ssh does);
//! `NAME.pub` holds `post-pub-v1 <public hex>` and is what the other hosts are given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const KEY_TAG: &str = "post-key-v1";
const PUB_TAG: &str = "post-pub-v1";

/// A peer's long-term public key (X25519, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The first 8 bytes in hex: enough to tell keys apart in a log line.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0[..8])
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim()).context("a public key is not hex")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("a public key must be 32 bytes"))?;
        Ok(Self(key))
    }

    /// Reads a `.pub` file (or the public half of a `.key` file).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(PUB_TAG), Some(public), None) => Self::from_hex(public),
            (Some(KEY_TAG), Some(_), Some(public)) => Self::from_hex(public),
            _ => bail!(
                "{} is not a post public key (expected a line `{PUB_TAG} <hex>`, as `post keygen` writes)",
                path.display()
            ),
        }
        .with_context(|| format!("in {}", path.display()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// This process's own key pair.
#[derive(Clone)]
pub struct Identity {
    pub private: [u8; 32],
    pub public: PublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

impl Identity {
    /// A fresh key pair from the OS's randomness.
    pub fn generate() -> Result<Self> {
        let pair = snow::Builder::new(super::noise::params())
            .generate_keypair()
            .map_err(|e| anyhow::anyhow!("cannot generate a key pair: {e}"))?;
        let private: [u8; 32] = pair.private.try_into().expect("X25519 keys are 32 bytes");
        let public: [u8; 32] = pair.public.try_into().expect("X25519 keys are 32 bytes");
        Ok(Self {
            private,
            public: PublicKey(public),
        })
    }

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub`; refuses to overwrite either.
    pub fn save(&self, prefix: &Path) -> Result<(PathBuf, PathBuf)> {
        let key_path = with_suffix(prefix, "key");
        let pub_path = with_suffix(prefix, "pub");
        for path in [&key_path, &pub_path] {
            if path.exists() {
                bail!(
                    "{} exists already: remove it first or choose another --out",
                    path.display()
                )
            }
        }
        let key_line = format!(
            "{KEY_TAG} {} {}\n",
            hex::encode(self.private),
            self.public.to_hex()
        );
        write_private(&key_path, key_line.as_bytes())?;
        std::fs::write(&pub_path, format!("{PUB_TAG} {}\n", self.public.to_hex()))
            .with_context(|| format!("cannot write {}", pub_path.display()))?;
        Ok((key_path, pub_path))
    }

    /// Reads a `.key` file; refuses one that other users can read.
    pub fn load(path: &Path) -> Result<Self> {
        check_private_mode(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key {}", path.display()))?;
        let mut words = text.split_whitespace();
        let (Some(KEY_TAG), Some(private), Some(public), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bail!(
                "{} is not a post private key (expected `{KEY_TAG} <private hex> <public hex>`, as `post keygen` writes)",
                path.display()
            )
        };
        let private: [u8; 32] = hex::decode(private)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| {
                format!("{}: the private key is not 32 bytes of hex", path.display())
            })?;
        let public =
            PublicKey::from_hex(public).with_context(|| format!("in {}", path.display()))?;
        if super::noise::public_of(&private)? != public {
            bail!(
                "{}: the public key does not belong to the private key",
                path.display()
            )
        }
        Ok(Self { private, public })
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read the key {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} can be read by other users (mode {:o}): `chmod 600 {}` first",
            path.display(),
            mode & 0o777,
            path.display()
        )
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_: &Path) -> Result<()> {
    Ok(())
}

/// The keys a process accepts from its peers: `Any` (a public server's clients) or a list.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
}

impl Trust {
    /// Reads every `--trust FILE`.
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p))
            .collect::<Result<_>>()?;
        Ok(Self { keys })
    }

    pub fn of(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// No key listed: anyone (with a key of their own) is accepted.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// Whether `key` may connect: listed, or nothing listed.
    pub fn admits(&self, key: &PublicKey) -> bool {
        self.is_open() || self.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("post-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let id = Identity::generate().unwrap();
        let (key, public) = id.save(&dir.join("a")).unwrap();
        assert!(id.save(&dir.join("a")).is_err(), "no overwrite");
        let back = Identity::load(&key).unwrap();
        assert_eq!(back.private, id.private);
        assert_eq!(PublicKey::load(&public).unwrap(), id.public);
        assert_eq!(PublicKey::load(&key).unwrap(), id.public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Identity::load(&key).unwrap_err().to_string();
            assert!(err.contains("other users"), "{err}");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A key file whose halves do not belong together is refused.
        let other = Identity::generate().unwrap();
        let forged = dir.join("forged.key");
        write_private(
            &forged,
            format!(
                "{KEY_TAG} {} {}\n",
                hex::encode(id.private),
                other.public.to_hex()
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(Identity::load(&forged).is_err());
        assert!(PublicKey::load(&dir.join("missing.pub")).is_err());
        std::fs::write(dir.join("junk.pub"), "hello").unwrap();
        assert!(PublicKey::load(&dir.join("junk.pub")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
