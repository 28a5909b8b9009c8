//! Building an out-of-tree module against a guest kernel's headers ([`crate::headers`]),
//! reproducibly: the sources are copied to a directory named after their own hash (so
//! the same sources build at the same path whatever directory they came from), the
//! compiler maps that path away, the environment is fixed (`LC_ALL=C`, no timestamps),
//! and the debug sections are stripped as the kernel's `INSTALL_MOD_STRIP=1` does. The
//! same sources and headers give the same bytes.
//!
//! It runs the kernel's own build (`make -C <kdir> M=<dir> modules`, which needs the
//! host's `make`, Debian's `gcc-12` and `objcopy`); it neither signs nor vets.

use crate::headers::KernelHeaders;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Sources larger than this (all files together) are refused.
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// A build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The source directory is not one this builder takes.
    #[error("{path}: {detail}")]
    Source {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tool the build needs is missing from this host.
    #[error("{tool} is missing: install it (apt-get install {package})")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// The kernel's build failed.
    #[error("make failed ({status}):\n{output}")]
    Make {
        /// How make ended.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// The build made no module.
    #[error("the build made no .ko in {0}")]
    NoModule(PathBuf),
    /// Stripping a module failed.
    #[error("objcopy --strip-debug {path}: {detail}")]
    Strip {
        /// The module.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { path, source }
}

/// One module a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltModule {
    /// File name, e.g. `khttpd.ko`.
    pub file_name: String,
    /// Where it was copied to.
    pub path: PathBuf,
    /// sha256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// Whether a file of the source tree is a build product (left out of the copy).
fn is_build_product(name: &str) -> bool {
    let products = [
        ".o", ".ko", ".mod", ".mod.c", ".cmd", ".symvers", ".order", ".a",
    ];
    name.starts_with('.') || products.iter().any(|s| name.ends_with(s))
}

/// The source files of `dir` (relative path to bytes), build products left out, in
/// order; subdirectories are walked, symbolic links refused.
fn read_sources(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, BuildError> {
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).map_err(io(&here))? {
            let entry = entry.map_err(io(&here))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if is_build_product(&name) {
                continue;
            }
            if kind.is_symlink() {
                return Err(BuildError::Source {
                    path: entry.path(),
                    detail: "symbolic links are not taken; copy the file in".into(),
                });
            }
            if kind.is_dir() {
                stack.push(rel.join(&name));
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
                total += bytes.len() as u64;
                if total > MAX_SOURCE_BYTES {
                    return Err(BuildError::Source {
                        path: dir.to_path_buf(),
                        detail: format!("more than {MAX_SOURCE_BYTES} bytes of sources"),
                    });
                }
                out.insert(rel.join(&name), bytes);
            }
        }
    }
    let has = |f: &str| out.contains_key(Path::new(f));
    if !has("Kbuild") && !has("Makefile") {
        return Err(BuildError::Source {
            path: dir.to_path_buf(),
            detail: "no Kbuild or Makefile here (the kernel's build reads `obj-m` from one)".into(),
        });
    }
    Ok(out)
}

/// The hash naming a source tree: of each relative path and its bytes, in order.
fn tree_hash(sources: &BTreeMap<PathBuf, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (path, bytes) in sources {
        let p = path.to_string_lossy();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

fn have(tool: &'static str, package: &'static str) -> Result<(), BuildError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(BuildError::MissingTool { tool, package })
    }
}

/// Builds the module(s) of `src` against `headers` in `<work>/<tree hash>`, strips them
/// and copies them to `out_dir`.
pub fn build(
    src: &Path,
    headers: &KernelHeaders,
    work: &Path,
    out_dir: &Path,
) -> Result<Vec<BuiltModule>, BuildError> {
    have("make", "make")?;
    have("gcc-12", "gcc-12")?;
    have("objcopy", "binutils")?;
    let sources = read_sources(src)?;
    let dir = work.join(format!(
        "{}-{}",
        headers.release,
        &tree_hash(&sources)[..16]
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    for (rel, bytes) in &sources {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    let dir_s = dir.to_string_lossy().into_owned();
    let out = Command::new("make")
        .arg("-C")
        .arg(&headers.kdir)
        .arg(format!("M={dir_s}"))
        .arg(format!("KCFLAGS=-ffile-prefix-map={dir_s}=."))
        .arg("modules")
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", "0")
        .env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
        .env("KBUILD_BUILD_USER", "modvisor")
        .env("KBUILD_BUILD_HOST", "modvisor")
        .output()
        .map_err(io(Path::new("make")))?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        return Err(BuildError::Make {
            status: out.status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let mut built = Vec::new();
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let mut kos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    kos.sort();
    for ko in kos {
        let strip = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&ko)
            .output()
            .map_err(io(Path::new("objcopy")))?;
        if !strip.status.success() {
            return Err(BuildError::Strip {
                path: ko,
                detail: String::from_utf8_lossy(&strip.stderr).trim().to_string(),
            });
        }
        let bytes = std::fs::read(&ko).map_err(io(&ko))?;
        let file_name = ko
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = out_dir.join(&file_name);
        std::fs::write(&path, &bytes).map_err(io(&path))?;
        built.push(BuiltModule {
            file_name,
            path,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
    }
    if built.is_empty() {
        return Err(BuildError::NoModule(dir));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sources_leave_build_products_out_and_name_the_tree_by_content() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("Kbuild"), "obj-m := x.o\n").unwrap();
        std::fs::write(a.path().join("x.c"), "int x;\n").unwrap();
        for product in ["x.o", "x.ko", ".x.o.cmd", "Module.symvers", "modules.order"] {
            std::fs::write(a.path().join(product), "junk").unwrap();
        }
        let sources = read_sources(a.path()).unwrap();
        let names: Vec<_> = sources.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["Kbuild", "x.c"]);

        // The same sources elsewhere: the same name; one byte changed: another.
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("Kbuild"), "obj-m := x.o\n").unwrap();
        std::fs::write(b.path().join("x.c"), "int x;\n").unwrap();
        assert_eq!(
            tree_hash(&read_sources(b.path()).unwrap()),
            tree_hash(&sources)
        );
        std::fs::write(b.path().join("x.c"), "int y;\n").unwrap();
        assert_ne!(
            tree_hash(&read_sources(b.path()).unwrap()),
            tree_hash(&sources)
        );
    }

    #[test]
    fn a_directory_without_kbuild_or_makefile_is_refused() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("x.c"), "int x;\n").unwrap();
        match read_sources(a.path()) {
            Err(BuildError::Source { detail, .. }) => assert!(detail.contains("Kbuild")),
            other => panic!("{other:?}"),
        }
    }
}
