//! The `.modinfo` section: NUL-separated `key=value` strings written by `MODULE_*()`
//! macros and by modpost (`name`, `vermagic`, `depends`, `srcversion`, ...).

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// Most `key=value` entries accepted in one `.modinfo` (real modules have at most a few
/// thousand aliases).
pub const MAX_MODINFO_ENTRIES: usize = 100_000;

/// One raw `key=value` entry of `.modinfo`, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModInfoField {
    /// The text before the first `=`.
    pub key: String,
    /// The text after the first `=` (may be empty).
    pub value: String,
}

/// A module parameter, from `parm=NAME:DESCRIPTION` and `parmtype=NAME:TYPE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleParameter {
    /// The parameter's name.
    pub name: String,
    /// Its type (`int`, `charp`, `bool`, `array of int`, ...), if declared.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Its description, if any.
    pub description: Option<String>,
}

/// The decoded `.modinfo` of one module.
///
/// Single-valued keys keep their first occurrence; every entry, including repeated and
/// unknown keys, is also kept in `fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModInfo {
    /// `name=`: the module name modpost recorded (the authoritative name is the one in
    /// `struct module`, see [`crate::KernelModule::name`]).
    pub name: Option<String>,
    /// `vermagic=`: kernel release followed by build flags, e.g.
    /// `6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions `.
    pub vermagic: Option<String>,
    /// `depends=`: the modules this one needs, as written (usually with `_`).
    pub depends: Vec<String>,
    /// `license=` values (normally exactly one).
    pub licenses: Vec<String>,
    /// `srcversion=`: checksum of the module's source files.
    pub srcversion: Option<String>,
    /// `intree=Y`: built as part of the kernel tree.
    pub intree: bool,
    /// `retpoline=Y`: built with retpoline mitigations.
    pub retpoline: bool,
    /// `description=`.
    pub description: Option<String>,
    /// `author=` values.
    pub authors: Vec<String>,
    /// `alias=` values (device and name aliases).
    pub aliases: Vec<String>,
    /// Parameters, in order of first mention.
    pub parameters: Vec<ModuleParameter>,
    /// Every entry, in file order.
    pub fields: Vec<ModInfoField>,
}

impl ModInfo {
    /// Decodes the bytes of a `.modinfo` section.
    ///
    /// Entries are separated by one or more NULs and the section must end with a NUL. An
    /// entry without `=` is an error. Invalid UTF-8 is replaced by U+FFFD (so it can never
    /// equal an expected name or release).
    pub fn parse(section: &[u8]) -> Result<Self, ParseError> {
        if section.is_empty() {
            return Err(ParseError::ModInfo("section is empty".into()));
        }
        if section.last() != Some(&0) {
            return Err(ParseError::ModInfo("section is not NUL-terminated".into()));
        }
        let mut info = ModInfo::empty();
        for raw in section.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            if info.fields.len() >= MAX_MODINFO_ENTRIES {
                return Err(ParseError::ModInfo(format!(
                    "more than {MAX_MODINFO_ENTRIES} entries"
                )));
            }
            let text = String::from_utf8_lossy(raw);
            let (key, value) = text.split_once('=').ok_or_else(|| {
                ParseError::ModInfo(format!("entry {:?} has no '='", truncate(&text, 64)))
            })?;
            info.add(key, value);
        }
        Ok(info)
    }

    fn empty() -> Self {
        ModInfo {
            name: None,
            vermagic: None,
            depends: Vec::new(),
            licenses: Vec::new(),
            srcversion: None,
            intree: false,
            retpoline: false,
            description: None,
            authors: Vec::new(),
            aliases: Vec::new(),
            parameters: Vec::new(),
            fields: Vec::new(),
        }
    }

    fn add(&mut self, key: &str, value: &str) {
        let first = |slot: &mut Option<String>| {
            if slot.is_none() {
                *slot = Some(value.to_string());
            }
        };
        match key {
            "name" => first(&mut self.name),
            "vermagic" => first(&mut self.vermagic),
            "srcversion" => first(&mut self.srcversion),
            "description" => first(&mut self.description),
            "depends" => self.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string),
            ),
            "license" => self.licenses.push(value.to_string()),
            "author" => self.authors.push(value.to_string()),
            "alias" => self.aliases.push(value.to_string()),
            "intree" => self.intree = value == "Y",
            "retpoline" => self.retpoline = value == "Y",
            "parm" | "parmtype" => {
                let (name, text) = value.split_once(':').unwrap_or((value, ""));
                let param = self.parameter(name);
                let slot = if key == "parm" {
                    &mut param.description
                } else {
                    &mut param.kind
                };
                if slot.is_none() {
                    *slot = Some(text.to_string());
                }
            }
            _ => {}
        }
        self.fields.push(ModInfoField {
            key: key.to_string(),
            value: value.to_string(),
        });
    }

    fn parameter(&mut self, name: &str) -> &mut ModuleParameter {
        let index = match self.parameters.iter().position(|p| p.name == name) {
            Some(index) => index,
            None => {
                self.parameters.push(ModuleParameter {
                    name: name.to_string(),
                    kind: None,
                    description: None,
                });
                self.parameters.len() - 1
            }
        };
        &mut self.parameters[index]
    }

    /// The kernel release this module was built for: the first word of `vermagic`.
    pub fn vermagic_release(&self) -> Option<&str> {
        self.vermagic.as_deref()?.split_whitespace().next()
    }

    /// Every value of `key`, in file order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.key == key)
            .map(|f| f.value.as_str())
    }
}

/// At most `max` characters of `text`, for error messages.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_parameters_and_padding() {
        let raw = b"license=GPL\0\0\0parm=debug:Enable debugging\0parmtype=debug:int\0\
                    depends=udp_tunnel,ip6_udp_tunnel\0vermagic=6.1.0-56-cloud-amd64 SMP mod_unload \0\
                    intree=Y\0name=wireguard\0alias=net-pf-16-proto-16-family-wireguard\0\
                    parmtype=flags:uint\0note=a=b\0";
        let info = ModInfo::parse(raw).unwrap();
        assert_eq!(info.name.as_deref(), Some("wireguard"));
        assert_eq!(info.licenses, ["GPL"]);
        assert_eq!(info.depends, ["udp_tunnel", "ip6_udp_tunnel"]);
        assert_eq!(info.vermagic_release(), Some("6.1.0-56-cloud-amd64"));
        assert!(info.intree);
        assert!(!info.retpoline);
        assert_eq!(info.parameters.len(), 2);
        assert_eq!(info.parameters[0].name, "debug");
        assert_eq!(info.parameters[0].kind.as_deref(), Some("int"));
        assert_eq!(
            info.parameters[0].description.as_deref(),
            Some("Enable debugging")
        );
        assert_eq!(info.parameters[1].description, None);
        assert_eq!(info.values("note").collect::<Vec<_>>(), ["a=b"]);
        assert_eq!(info.fields.len(), 10);
    }

    #[test]
    fn empty_depends_is_no_dependencies() {
        let info = ModInfo::parse(b"depends=\0name=tcp_bbr\0").unwrap();
        assert!(info.depends.is_empty());
    }

    #[test]
    fn rejects_unterminated_empty_and_keyless() {
        assert!(ModInfo::parse(b"").is_err());
        assert!(ModInfo::parse(b"license=GPL").is_err());
        assert!(ModInfo::parse(b"license\0").is_err());
    }

    #[test]
    fn invalid_utf8_never_matches() {
        let info = ModInfo::parse(b"vermagic=6.1\xff SMP\0").unwrap();
        assert_ne!(info.vermagic_release(), Some("6.1"));
    }
}
