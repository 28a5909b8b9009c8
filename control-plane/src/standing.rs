//! The token-verification cache of a replica: what authentication asks on every request
//! (is this token revoked? does its tenant exist, with which quota?) answered from memory
//! where the store's reads are remote (etcd), instead of a round trip per request.
//!
//! It is kept current by a watch of the revocations and the tenants: each change the
//! watch names is read again, and after a watch that missed changes (and at the start)
//! everything is read again; until then, and after a failed read, the store answers. A
//! revocation made on this replica counts at once ([`StandingCache::note_revoked`]);
//! one made on another replica counts once the watch delivers it (milliseconds). A tenant
//! the cache does not know is read from the store, so a tenant just created elsewhere is
//! never refused.

use crate::error::Result;
use crate::model::Tenant;
use crate::store::{Change, Datastore, Table};
use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

/// The cache (or, on a store with local reads, just the store).
pub struct StandingCache {
    store: Datastore,
    /// `None` while it is not in step with the store.
    known: Option<Arc<RwLock<Option<Known>>>>,
}

#[derive(Default)]
struct Known {
    revoked: HashSet<String>,
    tenants: HashMap<String, Tenant>,
}

/// How long after a failed read the cache tries to get in step again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl StandingCache {
    /// A cache of `store`'s revocations and tenants when its reads are remote (watching
    /// them from a thread of its own); otherwise every question goes to the store.
    pub fn start(store: Datastore) -> Result<Self> {
        if !store.reads_are_remote() {
            return Ok(StandingCache { store, known: None });
        }
        let known = Arc::new(RwLock::new(None));
        let (tell, changes) = mpsc::channel::<Change>();
        let told = tell.clone();
        store.watch_tables(
            &[Table::Revocations, Table::Tenants],
            Arc::new(move |change| {
                if told.send(change).is_err() {
                    tracing::error!("the token-verification cache stopped; the store answers");
                }
            }),
        )?;
        // In step first after the watch started: no change falls in between.
        tell.send(Change::Missed)
            .map_err(|_| crate::error::Error::Storage("the cache's channel closed".into()))?;
        let (kept, reader) = (known.clone(), store.clone());
        std::thread::Builder::new()
            .name("token-cache".into())
            .spawn(move || keep(&reader, &kept, &changes, &tell))
            .map_err(|e| crate::error::Error::Storage(format!("token cache thread: {e}")))?;
        Ok(StandingCache {
            store,
            known: Some(known),
        })
    }

    /// Whether token `jti` was revoked and, for a tenant's token, the tenant (`None`: it
    /// does not exist); see [`Datastore::token_standing`].
    pub fn token_standing(
        &self,
        jti: &str,
        tenant: Option<&str>,
    ) -> Result<(bool, Option<Tenant>)> {
        let answered = self.known.as_ref().and_then(|known| {
            let guard = known.read().ok()?;
            let k = guard.as_ref()?;
            let revoked = k.revoked.contains(jti);
            match tenant {
                None => Some((revoked, None)),
                // A tenant it does not know may be new: the store says.
                Some(t) => k.tenants.get(t).map(|rec| (revoked, Some(rec.clone()))),
            }
        });
        match answered {
            Some(answer) => Ok(answer),
            None => self.store.token_standing(jti, tenant),
        }
    }

    /// Whether it answers from memory now (a store with local reads: never).
    pub fn in_step(&self) -> bool {
        self.known
            .as_ref()
            .is_some_and(|k| k.read().is_ok_and(|guard| guard.is_some()))
    }

    /// A revocation this replica just committed: it counts here at once.
    pub fn note_revoked(&self, jti: &str) {
        self.update(|k| {
            k.revoked.insert(jti.to_string());
        });
    }

    /// A tenant this replica just wrote (created, its quota changed).
    pub fn note_tenant(&self, tenant: &Tenant) {
        self.update(|k| {
            k.tenants.insert(tenant.name.clone(), tenant.clone());
        });
    }

    fn update(&self, f: impl FnOnce(&mut Known)) {
        if let Some(known) = &self.known {
            edit(known, f);
        }
    }
}

/// Applies the watch's changes in order, for as long as the watch sends them.
fn keep(
    store: &Datastore,
    known: &RwLock<Option<Known>>,
    changes: &mpsc::Receiver<Change>,
    again: &mpsc::Sender<Change>,
) {
    for change in changes {
        let applied = apply(store, known, &change);
        if let Err(e) = applied {
            tracing::warn!(error = %e, "the token-verification cache is out of step; the store answers until it reads everything again");
            set(known, None);
            std::thread::sleep(RETRY_AFTER);
            if again.send(Change::Missed).is_err() {
                return;
            }
        }
    }
}

fn apply(store: &Datastore, known: &RwLock<Option<Known>>, change: &Change) -> Result<()> {
    match change {
        Change::Missed => {
            set(known, None);
            let fresh = Known {
                revoked: store.revoked_tokens()?.into_iter().collect(),
                tenants: store
                    .list_tenants()?
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect(),
            };
            set(known, Some(fresh));
        }
        Change::Key(Table::Revocations, jti) => {
            let jti = String::from_utf8_lossy(jti).into_owned();
            let revoked = store.is_revoked(&jti)?;
            edit(known, |k| {
                if revoked {
                    k.revoked.insert(jti);
                } else {
                    k.revoked.remove(&jti);
                }
            });
        }
        Change::Key(Table::Tenants, name) => {
            let name = String::from_utf8_lossy(name).into_owned();
            let record = store.get_tenant(&name)?;
            edit(known, |k| {
                match record {
                    Some(t) => k.tenants.insert(name, t),
                    None => k.tenants.remove(&name),
                };
            });
        }
        Change::Key(other, _) => {
            tracing::debug!(table = ?other, "a change the token cache does not watch");
        }
    }
    Ok(())
}

fn set(known: &RwLock<Option<Known>>, value: Option<Known>) {
    match known.write() {
        Ok(mut guard) => *guard = value,
        Err(_) => tracing::error!("the token-verification cache is poisoned"),
    }
}

/// Changes what is known, while the cache is in step.
fn edit(known: &RwLock<Option<Known>>, f: impl FnOnce(&mut Known)) {
    match known.write() {
        Ok(mut guard) => {
            if let Some(k) = guard.as_mut() {
                f(k);
            }
        }
        Err(_) => tracing::error!("the token-verification cache is poisoned"),
    }
}
