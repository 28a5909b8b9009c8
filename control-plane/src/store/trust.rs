//! The trust store: operator certificates an admin trusts to sign modules, by name,
//! besides the guest kernel's own keys (which every node reads from the kernel image).
//! Module policies name them in `signers`; a certificate a policy names cannot be
//! removed. Every change is audited in the same transaction.

use super::keys::{decode, encode};
use super::transact;
use super::txn::{append_event, get_record};
use super::{Datastore, Table, Txn};
use crate::error::{Error, Result};
use crate::model::{now, ModulePolicy, TrustEntry, KERNEL_SIGNER};
use sha2::{Digest, Sha256};

/// The most certificates the trust store holds.
pub const MAX_TRUSTED: usize = 64;

/// A certificate name: like a module's, `[a-z0-9_-]`, 1 to 63 characters, and not the
/// kernel's own signer name.
pub fn check_trust_name(name: &str) -> Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !fine {
        return Err(Error::invalid("name", "1 to 63 of a-z 0-9 - _"));
    }
    if name == KERNEL_SIGNER {
        return Err(Error::invalid(
            "name",
            "`kernel` names the guest kernel's own keys",
        ));
    }
    Ok(())
}

/// The entry for `pem` under `name`: exactly one certificate with a key vetting can
/// verify with.
fn entry_of(name: &str, pem: &str) -> Result<TrustEntry> {
    let bad = |detail: String| Error::invalid("certificate_pem", detail);
    if pem.len() > 64 * 1024 {
        return Err(bad("more than 64 KiB".into()));
    }
    let store =
        modvisor_modules::TrustStore::from_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let certs = store.certificates();
    let [cert] = certs.as_slice() else {
        return Err(bad(format!(
            "{} certificates; give exactly one",
            certs.len()
        )));
    };
    if !cert.key.starts_with("rsa-") {
        return Err(bad(format!("its key cannot verify modules: {}", cert.key)));
    }
    let der = der_of(pem).map_err(bad)?;
    Ok(TrustEntry {
        name: name.to_string(),
        subject: cert.subject.clone(),
        issuer: cert.issuer.clone(),
        serial: cert.serial.clone(),
        sha256: hex::encode(Sha256::digest(&der)),
        key: cert.key.clone(),
        certificate_pem: pem.trim().to_string() + "\n",
        added_at: now(),
    })
}

/// The DER of the one certificate in `pem`.
fn der_of(pem: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("not base64: {e}"))
}

/// The policies that name `signer`. Read outside the transaction that removes it: a
/// policy written meanwhile to name it rewrites its entry ([`touch_signers`]), so that
/// transaction conflicts and runs again, reading the policies again.
fn policies_naming(kv: &dyn super::KvStore, signer: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (key, value) in kv.scan(Table::Policies, b"", None, usize::MAX)? {
        let policy: ModulePolicy = decode(&value)?;
        if policy.signers.iter().any(|s| s == signer) {
            names.push(String::from_utf8_lossy(&key).into_owned());
        }
    }
    Ok(names)
}

/// Checks, inside the transaction writing `policy`, that each operator signer it names
/// is trusted, and rewrites each one's entry as it is: a concurrent removal of one then
/// conflicts (see [`policies_naming`]).
pub(super) fn touch_signers(txn: &dyn Txn, policy: &ModulePolicy) -> Result<()> {
    if policy.signers.is_empty() {
        return Err(Error::invalid(
            "signers",
            "no signer: name `kernel` or a trusted certificate",
        ));
    }
    for (i, signer) in policy.signers.iter().enumerate() {
        if signer == KERNEL_SIGNER {
            continue;
        }
        let Some(entry) = txn.get(Table::Trust, signer.as_bytes())? else {
            return Err(Error::invalid(
                format!("signers[{i}]"),
                format!("no trusted certificate {signer} (`kernel` or a name in /v1/admin/trust)"),
            ));
        };
        txn.insert(Table::Trust, signer.as_bytes(), &entry)?;
    }
    Ok(())
}

impl Datastore {
    /// Adds or replaces the certificate `name` (admin; audited); true when it replaced
    /// one. Replacing keeps the name, so the policies that name it now accept the new
    /// certificate.
    pub fn put_trusted(&self, actor: &str, name: &str, pem: &str) -> Result<(TrustEntry, bool)> {
        check_trust_name(name)?;
        let entry = entry_of(name, pem)?;
        transact(&*self.kv, |txn| {
            let replacing = txn.get(Table::Trust, name.as_bytes())?.is_some();
            // The count is read outside the transaction: two admins adding at once may
            // pass the bound by one each, which the next add sees.
            if !replacing && self.kv.scan(Table::Trust, b"", None, usize::MAX)?.len() >= MAX_TRUSTED
            {
                return Err(Error::Conflict(format!(
                    "the trust store holds {MAX_TRUSTED} certificates already"
                )));
            }
            txn.insert(Table::Trust, name.as_bytes(), &encode(&entry)?)?;
            let action = if replacing {
                "trust.replace"
            } else {
                "trust.add"
            };
            append_event(txn, actor, None, action, &format!("trust/{name}"))?;
            Ok((entry.clone(), replacing))
        })
    }

    /// Every trusted certificate, by name.
    pub fn list_trusted(&self) -> Result<Vec<TrustEntry>> {
        self.kv
            .scan(Table::Trust, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The certificate `name`.
    pub fn get_trusted(&self, name: &str) -> Result<TrustEntry> {
        self.kv
            .get(Table::Trust, name.as_bytes())?
            .map(|v| decode(&v))
            .transpose()?
            .ok_or_else(|| Error::not_found("trusted certificate", name))
    }

    /// Removes the certificate `name` (admin; audited); refused while a module policy
    /// names it.
    pub fn remove_trusted(&self, actor: &str, name: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            if get_record::<TrustEntry>(txn, Table::Trust, name.as_bytes())?.is_none() {
                return Err(Error::not_found("trusted certificate", name));
            }
            let users = policies_naming(&*self.kv, name)?;
            if !users.is_empty() {
                return Err(Error::Conflict(format!(
                    "the policies of {} name {name} as a signer; change them first",
                    users.join(", ")
                )));
            }
            txn.remove(Table::Trust, name.as_bytes())?;
            append_event(txn, actor, None, "trust.remove", &format!("trust/{name}"))
        })
    }
}
