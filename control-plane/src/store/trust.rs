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
    Ok(TrustEntry {
        name: name.to_string(),
        subject: cert.subject.clone(),
        issuer: cert.issuer.clone(),
        serial: cert.serial.clone(),
        sha256: cert.sha256.clone(),
        key: cert.key.clone(),
        certificate_pem: pem.trim().to_string() + "\n",
        added_at: now(),
        used_by: Vec::new(),
    })
}

/// Checks, inside the transaction that replaces module `module`'s policy `old` with
/// `new`, that each operator signer `new` names is trusted, and notes in each trusted
/// certificate's entry which policies name it (what a removal checks, in its own
/// transaction).
pub(super) fn note_signers(
    txn: &dyn Txn,
    module: &str,
    old: &ModulePolicy,
    new: &ModulePolicy,
) -> Result<()> {
    if new.signers.is_empty() {
        return Err(Error::invalid(
            "signers",
            "no signer: name `kernel` or a trusted certificate",
        ));
    }
    let operator = |p: &ModulePolicy| -> std::collections::BTreeSet<String> {
        p.signers
            .iter()
            .filter(|s| *s != KERNEL_SIGNER)
            .cloned()
            .collect()
    };
    let (before, after) = (operator(old), operator(new));
    for (i, signer) in new.signers.iter().enumerate() {
        if signer != KERNEL_SIGNER && txn.get(Table::Trust, signer.as_bytes())?.is_none() {
            return Err(Error::invalid(
                format!("signers[{i}]"),
                format!("no trusted certificate {signer} (`kernel` or a name in /v1/admin/trust)"),
            ));
        }
    }
    for signer in before.symmetric_difference(&after) {
        let Some(mut entry) = get_record::<TrustEntry>(txn, Table::Trust, signer.as_bytes())?
        else {
            // Named by the old policy only, and gone: nothing to note.
            continue;
        };
        entry.used_by.retain(|m| m != module);
        if after.contains(signer) {
            entry.used_by.push(module.to_string());
            entry.used_by.sort();
        }
        txn.insert(Table::Trust, signer.as_bytes(), &encode(&entry)?)?;
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
        // Counted before the transaction (a transaction reads keys, not ranges): two admins
        // adding at once may pass the bound by one each, which the next add sees.
        let held = self.kv.scan(Table::Trust, b"", None, usize::MAX)?.len();
        transact(&*self.kv, |txn| {
            let mut entry = entry.clone();
            let old = get_record::<TrustEntry>(txn, Table::Trust, name.as_bytes())?;
            let replacing = old.is_some();
            if !replacing && held >= MAX_TRUSTED {
                return Err(Error::Conflict(format!(
                    "the trust store holds {MAX_TRUSTED} certificates already"
                )));
            }
            // The policies that name it still do.
            entry.used_by = old.map(|o| o.used_by).unwrap_or_default();
            txn.insert(Table::Trust, name.as_bytes(), &encode(&entry)?)?;
            let action = if replacing {
                "trust.replace"
            } else {
                "trust.add"
            };
            append_event(txn, actor, None, action, &format!("trust/{name}"))?;
            Ok((entry, replacing))
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
            let Some(entry) = get_record::<TrustEntry>(txn, Table::Trust, name.as_bytes())? else {
                return Err(Error::not_found("trusted certificate", name));
            };
            if !entry.used_by.is_empty() {
                return Err(Error::Conflict(format!(
                    "the policies of {} name {name} as a signer; change them first",
                    entry.used_by.join(", ")
                )));
            }
            txn.remove(Table::Trust, name.as_bytes())?;
            append_event(txn, actor, None, "trust.remove", &format!("trust/{name}"))
        })
    }
}
