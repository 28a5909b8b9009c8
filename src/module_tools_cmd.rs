//! `modvisor module build | sign | keygen`: an operator's own modules, on this machine
//! (no control plane involved): built against the guest kernel's headers, signed with
//! the operator's key in the kernel's format, and the key pair itself.

use anyhow::{bail, Context, Result};
use modvisor_modules::{KernelModule, OperatorKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// `modvisor module build SRC_DIR --kernel-release R`.
pub fn build(src: &Path, kernel_release: Option<&str>, out: &Path, json: bool) -> Result<()> {
    let cache = modvisor_guest::kernel::cache_dir();
    let release = match kernel_release {
        Some(r) => r.to_string(),
        None => modvisor_guest::kernel::current_cloud_package()?
            .trim_start_matches("linux-image-")
            .to_string(),
    };
    let headers = modvisor_guest::headers::fetch(&cache, &release, |m| eprintln!("{m}"))
        .with_context(|| format!("fetching the headers of {release}"))?;
    // The kernel of the same release, as a pair: what the module will be loaded into.
    let kernel = modvisor_guest::kernel::fetch_release(&cache, &release, |m| eprintln!("{m}"))
        .with_context(|| format!("fetching the kernel of {release}"))?;
    eprintln!(
        "building {} against linux-headers-{release} ({})",
        src.display(),
        headers.version
    );
    let built = modvisor_guest::module_build::build(src, &headers, &cache.join("build"), out)?;
    let mut rows = Vec::new();
    for m in &built {
        let bytes = std::fs::read(&m.path)?;
        let parsed = KernelModule::parse(&bytes).with_context(|| {
            format!("{} is not a module the vetting can read", m.path.display())
        })?;
        let vermagic = parsed.modinfo().vermagic_release().unwrap_or_default();
        if vermagic != kernel.release {
            bail!(
                "{}: vermagic {vermagic:?} is not the kernel's release {}",
                m.file_name,
                kernel.release
            );
        }
        rows.push(serde_json::json!({
            "file": m.path,
            "module": parsed.name(),
            "sha256": m.sha256,
            "kernel_release": release,
            "headers_version": headers.version,
        }));
        if !json {
            println!("{}  {}", m.sha256, m.path.display());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// `modvisor module sign KO --key K --cert C [--out F]`.
pub fn sign(ko: &Path, key: &Path, cert: &Path, out: Option<&Path>) -> Result<()> {
    let key_pem = std::fs::read_to_string(key).with_context(|| key.display().to_string())?;
    let cert_pem = std::fs::read_to_string(cert).with_context(|| cert.display().to_string())?;
    let signer = OperatorKey::from_pem(&key_pem, &cert_pem)?;
    let bytes = std::fs::read(ko).with_context(|| ko.display().to_string())?;
    let signed = signer
        .sign_module(&bytes)
        .with_context(|| ko.display().to_string())?;
    let out = out.unwrap_or(ko);
    std::fs::write(out, &signed).with_context(|| out.display().to_string())?;
    let parsed = KernelModule::parse(&signed)?;
    println!(
        "{}  {}  signed by {}",
        parsed.sha256(),
        out.display(),
        signer.subject()
    );
    Ok(())
}

/// `modvisor module keygen --name N --key K --cert C`.
pub fn keygen(name: &str, key: &Path, cert: &Path, bits: usize, days: u64) -> Result<()> {
    for path in [key, cert] {
        if path.exists() {
            bail!(
                "{} exists; keygen never overwrites a key (move it away first)",
                path.display()
            );
        }
    }
    let pair = OperatorKey::generate(name, bits, Duration::from_secs(days * 24 * 3600))?;
    write_new(key, pair.key_pem()?.as_bytes(), 0o600)?;
    write_new(cert, pair.cert_pem()?.as_bytes(), 0o644)?;
    println!(
        "{} (private, 0600) and {} for {}: give the certificate to the admin (`modvisor trust add`)",
        key.display(),
        cert.display(),
        pair.subject()
    );
    Ok(())
}

/// Writes a new file with `mode` from its creation on (never a moment more open).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(bytes)
        .with_context(|| path.display().to_string())?;
    Ok(())
}
