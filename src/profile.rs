//! The CLI's config file: named profiles of where the API is and which token to use, so
//! that `modvisor --profile admin vm list` needs no environment. The file is
//! `$MODVISOR_CONFIG`, else `$XDG_CONFIG_HOME/modvisor/config.toml`, else
//! `~/.config/modvisor/config.toml`:
//!
//! ```toml
//! current_profile = "a"
//!
//! [profiles.a]
//! api = "http://127.0.0.1:7070"
//! token_file = "/srv/modvisor/.modvisor/tokens/tenant-a.jwt"
//!
//! [profiles.admin]
//! token_file = "tokens/admin.jwt"   # relative: to the config file's directory
//! ```
//!
//! Flags and environment variables win over the profile.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the API is and which token to use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Base URL of the control plane.
    pub api: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The profile used when none is named.
    current_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The config file's path, if a home or an override says where it is.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODVISOR_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("modvisor").join("config.toml"))
}

/// The profile named `name` (or the file's `current_profile`), with relative token paths
/// made relative to the file's directory. No file and no name: no profile. A name the
/// file lacks, or a file that does not parse, is an error.
pub fn resolve(name: Option<&str>) -> Result<Option<Profile>> {
    let Some(path) = config_path() else {
        return match name {
            Some(n) => bail!("profile {n}: no config file (set HOME or MODVISOR_CONFIG)"),
            None => Ok(None),
        };
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_none() => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: ConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    pick(file, name, &path)
}

fn pick(mut file: ConfigFile, name: Option<&str>, path: &Path) -> Result<Option<Profile>> {
    let Some(name) = name.map(str::to_string).or(file.current_profile.clone()) else {
        return Ok(None);
    };
    let Some(mut profile) = file.profiles.remove(&name) else {
        let known: Vec<&String> = file.profiles.keys().collect();
        bail!("{}: no profile {name} (it has {known:?})", path.display());
    };
    if let (Some(t), Some(dir)) = (&profile.token_file, path.parent()) {
        if t.is_relative() {
            profile.token_file = Some(dir.join(t));
        }
    }
    Ok(Some(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConfigFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_named_or_current_profile_with_relative_token_paths_under_the_file() {
        let text = r#"
            current_profile = "a"
            [profiles.a]
            api = "http://127.0.0.1:1"
            token_file = "tokens/a.jwt"
            [profiles.admin]
            token_file = "/abs/admin.jwt"
        "#;
        let path = Path::new("/home/u/.config/modvisor/config.toml");
        let a = pick(parse(text), None, path).unwrap().unwrap();
        assert_eq!(a.api.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            a.token_file.unwrap(),
            PathBuf::from("/home/u/.config/modvisor/tokens/a.jwt")
        );
        let admin = pick(parse(text), Some("admin"), path).unwrap().unwrap();
        assert_eq!(admin.api, None);
        assert_eq!(admin.token_file.unwrap(), PathBuf::from("/abs/admin.jwt"));
        let e = pick(parse(text), Some("b"), path).unwrap_err().to_string();
        assert!(e.contains("no profile b"), "{e}");
        assert!(pick(parse(""), None, path).unwrap().is_none());
        assert!(toml::from_str::<ConfigFile>("[profiles.a]\nurl = 1").is_err());
    }
}
