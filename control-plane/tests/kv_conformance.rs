//! What every store backend must do, run against each: sled in a temporary directory and
//! (with the cargo feature `etcd`) a real etcd member started by the test. Point reads and
//! writes, ordered and paged prefix scans, transactions that are atomic, see their own
//! writes and serialise under contention, parts of a group that fail alone, rising ids; and, through the typed store above
//! the trait, a quota race and address allocation under concurrency that stay exact, and
//! module blobs larger than etcd's request limit, stored in chunks and verified on read;
//! and `store copy` from sled into an empty store of each kind.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "etcd")]
mod etcd_member;

use modvisor_control_plane::error::Error;
use modvisor_control_plane::model::{CreateTenant, Quota, VmSpec};
use modvisor_control_plane::store::copy::copy;
use modvisor_control_plane::store::{
    Datastore, KvStore, PartOutcome, SledKv, Table, Txn, VmFilter,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

fn put(kv: &dyn KvStore, table: Table, key: &[u8], value: &[u8]) {
    kv.transact(&|t: &dyn Txn| t.insert(table, key, value))
        .unwrap();
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

fn point_reads_and_writes(kv: &dyn KvStore) {
    put(kv, Table::Tenants, b"a", b"1");
    put(kv, Table::Nodes, b"a", b"2");
    assert_eq!(
        kv.get(Table::Tenants, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        kv.get(Table::Nodes, b"a").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(kv.get(Table::Vms, b"a").unwrap(), None);
    kv.transact(&|t: &dyn Txn| t.remove(Table::Tenants, b"a"))
        .unwrap();
    assert_eq!(kv.get(Table::Tenants, b"a").unwrap(), None);
    assert_eq!(
        kv.get(Table::Nodes, b"a").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    // Any bytes are a key or a value.
    let odd = [0u8, 0xff, 0xfe, b'/', 0];
    put(kv, Table::Blobs, &odd, &odd);
    assert_eq!(
        kv.get(Table::Blobs, &odd).unwrap().as_deref(),
        Some(&odd[..])
    );
}

fn scans_are_ordered_paged_and_bounded(kv: &dyn KvStore) {
    for k in [
        &b"t1\0c"[..],
        b"t1\0a",
        b"t1\0e",
        b"t1\0b",
        b"t1\0d",
        b"t2\0a",
        b"t1x",
        b"t1",
    ] {
        put(kv, Table::Vms, k, k);
    }
    put(kv, Table::VmNames, b"t1\0z", b"other table");
    let first = kv.scan(Table::Vms, b"t1\0", None, 2).unwrap();
    assert_eq!(keys(&first), [&b"t1\0a"[..], b"t1\0b"]);
    assert_eq!(first[0].1, b"t1\0a");
    let next = kv.scan(Table::Vms, b"t1\0", Some(b"b"), 2).unwrap();
    assert_eq!(keys(&next), [&b"t1\0c"[..], b"t1\0d"]);
    let rest = kv.scan(Table::Vms, b"t1\0", Some(b"d"), 10).unwrap();
    assert_eq!(keys(&rest), [&b"t1\0e"[..]]);
    assert!(kv
        .scan(Table::Vms, b"t1\0", Some(b"e"), 10)
        .unwrap()
        .is_empty());
    assert!(kv.scan(Table::Vms, b"t3\0", None, 10).unwrap().is_empty());
    assert!(kv.scan(Table::Vms, b"t1\0", None, 0).unwrap().is_empty());
    let all = kv.scan(Table::Vms, b"", None, 100).unwrap();
    assert_eq!(
        keys(&all),
        [
            &b"t1"[..],
            b"t1\0a",
            b"t1\0b",
            b"t1\0c",
            b"t1\0d",
            b"t1\0e",
            b"t1x",
            b"t2\0a"
        ]
    );
}

fn a_failed_transaction_writes_nothing(kv: &dyn KvStore) {
    let r = kv.transact(&|t: &dyn Txn| {
        t.insert(Table::Policies, b"p", b"x")?;
        t.remove(Table::Nodes, b"a")?;
        Err(Error::Conflict("changed its mind".into()))
    });
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(kv.get(Table::Policies, b"p").unwrap(), None);
    assert!(kv.get(Table::Nodes, b"a").unwrap().is_some());
}

fn a_transaction_sees_its_own_writes(kv: &dyn KvStore) {
    kv.transact(&|t: &dyn Txn| {
        assert_eq!(t.get(Table::Tokens, b"j")?, None);
        t.insert(Table::Tokens, b"j", b"1")?;
        assert_eq!(t.get(Table::Tokens, b"j")?.as_deref(), Some(&b"1"[..]));
        t.remove(Table::Tokens, b"j")?;
        assert_eq!(t.get(Table::Tokens, b"j")?, None);
        t.insert(Table::Tokens, b"j", b"2")
    })
    .unwrap();
    assert_eq!(
        kv.get(Table::Tokens, b"j").unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

/// A transaction that reads 300 keys ahead (on etcd, in several Txns of gets at one
/// snapshot) sees each as written, and an absent one as absent.
fn many_keys_read_ahead_are_all_read(kv: &dyn KvStore) {
    let keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| format!("ahead-{i:03}").into_bytes())
        .collect();
    kv.transact(&|t: &dyn Txn| {
        for k in &keys {
            t.insert(Table::Modules, k, k)?;
        }
        Ok(())
    })
    .unwrap();
    kv.transact(&|t: &dyn Txn| {
        let mut wanted: Vec<(Table, &[u8])> = keys
            .iter()
            .map(|k| (Table::Modules, k.as_slice()))
            .collect();
        wanted.push((Table::Modules, b"ahead-absent"));
        t.prefetch(&wanted)?;
        for k in &keys {
            assert_eq!(t.get(Table::Modules, k)?.as_deref(), Some(k.as_slice()));
        }
        assert_eq!(t.get(Table::Modules, b"ahead-absent")?, None);
        Ok(())
    })
    .unwrap();
}

/// Parts of one group ([`KvStore::transact_parts`]): each sees the writes of those before
/// it; one that fails writes nothing and fails alone; and where parts commit together,
/// one past what a transaction holds is left for the next (the first always runs).
fn parts_commit_together_and_fail_alone(kv: &dyn KvStore) {
    let first = |t: &dyn Txn| t.insert(Table::Policies, b"g1", b"1");
    let failing = |t: &dyn Txn| {
        assert_eq!(t.get(Table::Policies, b"g1")?.as_deref(), Some(&b"1"[..]));
        t.insert(Table::Policies, b"g2", b"x")?;
        Err(Error::Conflict("changed its mind".into()))
    };
    let third = |t: &dyn Txn| {
        assert_eq!(t.get(Table::Policies, b"g2")?, None);
        t.insert(Table::Policies, b"g3", b"3")
    };
    let outcomes = kv.transact_parts(&[(Table::Policies, b"g1")], &[&first, &failing, &third]);
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                PartOutcome::Done(Ok(())),
                PartOutcome::Done(Err(Error::Conflict(_))),
                PartOutcome::Done(Ok(()))
            ]
        ),
        "{outcomes:?}"
    );
    assert!(kv.get(Table::Policies, b"g1").unwrap().is_some());
    assert_eq!(kv.get(Table::Policies, b"g2").unwrap(), None);
    assert!(kv.get(Table::Policies, b"g3").unwrap().is_some());

    let big = |t: &dyn Txn| {
        for i in 0..200 {
            t.insert(Table::Policies, format!("big-{i:03}").as_bytes(), b"b")?;
        }
        Ok(())
    };
    let after = |t: &dyn Txn| t.insert(Table::Policies, b"after-big", b"a");
    let outcomes = kv.transact_parts(&[], &[&big, &after]);
    assert!(
        matches!(outcomes[0], PartOutcome::Done(Ok(()))),
        "{outcomes:?}"
    );
    assert_eq!(
        kv.scan(Table::Policies, b"big-", None, 1000).unwrap().len(),
        200
    );
    if kv.commits_in_groups() {
        assert!(matches!(outcomes[1], PartOutcome::Left), "{outcomes:?}");
        assert_eq!(kv.get(Table::Policies, b"after-big").unwrap(), None);
    } else {
        assert!(
            matches!(outcomes[1], PartOutcome::Done(Ok(()))),
            "{outcomes:?}"
        );
    }
}

/// Threads that each add one to a counter, many times: no increment is lost, and the ids
/// the transactions took are distinct and rise in the order they committed.
fn contended_transactions_serialise(kv: Arc<dyn KvStore>) {
    const THREADS: usize = 6;
    const EACH: usize = 15;
    let before = kv.next_id_peek().unwrap();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (kv, taken) = (kv.clone(), taken.clone());
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let id = Mutex::new(0);
                    kv.transact(&|t: &dyn Txn| {
                        let n = match t.get(Table::Meta, b"counter")? {
                            Some(v) => u64::from_be_bytes(v.as_slice().try_into().unwrap()),
                            None => 0,
                        };
                        let got = t.next_id()?;
                        t.insert(Table::Meta, b"counter", &(n + 1).to_be_bytes())?;
                        t.insert(Table::Events, &got.to_be_bytes(), &(n + 1).to_be_bytes())?;
                        *id.lock().unwrap() = got;
                        Ok(())
                    })
                    .unwrap();
                    taken.lock().unwrap().push(id.into_inner().unwrap());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let total = (THREADS * EACH) as u64;
    let counter = kv.get(Table::Meta, b"counter").unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(counter.try_into().unwrap()), total);
    let ids: BTreeSet<u64> = taken.lock().unwrap().iter().copied().collect();
    assert_eq!(ids.len() as u64, total, "ids were given twice");
    assert!(ids.iter().all(|i| *i >= before));
    assert!(kv.next_id_peek().unwrap() > *ids.iter().last().unwrap());
    // In id order, the counter each transaction wrote rises one by one: ids follow commits.
    let events = kv.scan(Table::Events, b"", None, 10_000).unwrap();
    let written: Vec<u64> = events
        .iter()
        .map(|(_, v)| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(written, (1..=total).collect::<Vec<_>>());
}

/// Through the typed store: 12 creates race for 5 slots of a quota (exactly 5 win, each
/// with its own address), and the tenant's usage and audit trail agree.
fn quota_and_addresses_stay_exact(kv: Arc<dyn KvStore>) {
    let store = Datastore::new(kv);
    store
        .create_tenant(
            "test",
            &CreateTenant {
                name: "racer".into(),
                quota: Some(Quota {
                    max_vms: 5,
                    ..Quota::default()
                }),
            },
        )
        .unwrap();
    let outcomes: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let spec = VmSpec {
                    name: format!("vm-{i}"),
                    kernel_mode: Default::default(),
                    vcpus: 1,
                    memory_mib: 256,
                    modules: vec![],
                    power_state: Default::default(),
                    user_data: None,
                    network: None,
                };
                store.create_vm("racer", "racer", &spec)
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 5, "{outcomes:?}");
    for o in &outcomes {
        if let Err(e) = o {
            assert!(matches!(e, Error::QuotaExceeded { .. }), "{e:?}");
        }
    }
    let vms = store.visible_vms(VmFilter::Tenant("racer")).unwrap();
    assert_eq!(vms.len(), 5);
    let ips: BTreeSet<String> = vms
        .iter()
        .map(|v| v.status.network.as_ref().expect("an address").ip.clone())
        .collect();
    assert_eq!(ips.len(), 5, "addresses given twice: {ips:?}");
    let (events, _) = store
        .list_events(VmFilter::Tenant("racer"), None, 1000, Some("vms"))
        .unwrap();
    let created = events.iter().filter(|e| e.action == "vm.create").count();
    assert_eq!(created, 5, "{events:?}");
}

/// Module blobs through the typed store: one larger than etcd's request limit comes back
/// whole, a small one too, the same bytes published twice are stored once, and a chunk
/// changed behind the store's back is an error, not a module.
fn blobs_are_chunked_and_verified(kv: Arc<dyn KvStore>) {
    let store = Datastore::new(kv.clone());
    // 4.2 MB like Debian's xfs.ko, of bytes that do not repeat in any chunk.
    let big: Vec<u8> = (0..4_200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let small = b"\x7fELF a small module".to_vec();
    let mut shas = Vec::new();
    for (name, bytes) in [("big", &big), ("small", &small), ("again", &big)] {
        let v = store
            .publish_module("test", name, "6.1.0-test", bytes, Default::default(), None)
            .unwrap();
        assert_eq!(v.size, bytes.len() as u64);
        assert_eq!(store.blob(&v.sha256).unwrap().as_deref(), Some(&bytes[..]));
        shas.push(v.sha256);
    }
    assert_eq!(shas[0], shas[2]);
    let chunks = kv.scan(Table::BlobChunks, b"", None, 1000).unwrap();
    assert_eq!(
        chunks.len(),
        4_200_000usize.div_ceil(256 * 1024) + 1,
        "stored once"
    );
    assert!(chunks.iter().all(|(_, c)| c.len() <= 256 * 1024));
    assert_eq!(store.blob(&"0".repeat(64)).unwrap(), None);
    // A chunk changed in the store: the blob no longer hashes to its name.
    let (key, _) = chunks
        .iter()
        .find(|(k, _)| k.starts_with(shas[0].as_bytes()))
        .unwrap()
        .clone();
    put(kv.as_ref(), Table::BlobChunks, &key, b"tampered");
    let err = store.blob(&shas[0]).unwrap_err();
    assert!(
        matches!(err, Error::Storage(ref m) if m.contains("do not hash")),
        "{err:?}"
    );
}

/// `store copy`: everything of one store into an empty other, a blob kept whole (as
/// stores before chunks did) as chunks; the copy serves the same VMs, trail, blobs and
/// next id; a destination with data is refused.
fn copies_everything(from: Arc<dyn KvStore>, to: Arc<dyn KvStore>) {
    let source = Datastore::new(from.clone());
    source
        .create_tenant(
            "test",
            &CreateTenant {
                name: "mover".into(),
                quota: None,
            },
        )
        .unwrap();
    for i in 0..70 {
        let spec = VmSpec {
            name: format!("m-{i}"),
            kernel_mode: Default::default(),
            vcpus: 1,
            memory_mib: 128,
            modules: vec![],
            power_state: Default::default(),
            user_data: None,
            network: Some("none".into()),
        };
        if i >= 10 {
            // The default quota is 10 VMs; the refusals are audited too.
            assert!(source.create_vm("mover", "mover", &spec).is_err());
        } else {
            source.create_vm("mover", "mover", &spec).unwrap();
        }
    }
    let module = source
        .publish_module(
            "test",
            "m",
            "6.1.0-test",
            b"\x7fELF m",
            Default::default(),
            None,
        )
        .unwrap();
    let whole: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let whole_sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&whole))
    };
    put(from.as_ref(), Table::Blobs, whole_sha.as_bytes(), &whole);

    let report = copy(from.as_ref(), to.as_ref()).unwrap();
    assert_eq!(report["vms"], 10);
    assert_eq!(report["blobs"], 1);
    let copied = Datastore::new(to.clone());
    let ids = |s: &Datastore| {
        let mut v: Vec<String> = s
            .visible_vms(VmFilter::Tenant("mover"))
            .unwrap()
            .into_iter()
            .map(|v| v.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&copied), ids(&source));
    let trail = |s: &Datastore| s.list_events(VmFilter::All, None, 10_000, None).unwrap().0;
    assert_eq!(trail(&copied).len(), trail(&source).len());
    assert_eq!(copied.blob(&whole_sha).unwrap(), Some(whole));
    assert_eq!(
        copied.blob(&module.sha256).unwrap().as_deref(),
        Some(&b"\x7fELF m"[..])
    );
    assert!(to
        .get(Table::Blobs, whole_sha.as_bytes())
        .unwrap()
        .is_none());
    // Ids taken after the copy follow the copied ones.
    assert!(to.next_id_peek().unwrap() >= from.next_id_peek().unwrap());
    let again = copy(from.as_ref(), to.as_ref()).unwrap_err();
    assert!(
        matches!(again, Error::Conflict(ref m) if m.contains("already holds data")),
        "{again:?}"
    );
}

/// Retention: events older than a cutoff leave the trail and their tenant's; newer stay.
fn old_events_are_pruned(kv: Arc<dyn KvStore>) {
    let store = Datastore::new(kv);
    let outcome = modvisor_control_plane::model::Outcome::Success;
    for i in 0..130 {
        let tenant = (i % 2 == 0).then_some("pruned");
        store
            .record_outcome(
                "test",
                tenant,
                "test.old",
                &format!("x/{i}"),
                outcome,
                "old",
            )
            .unwrap();
    }
    let count = |f: VmFilter| store.list_events(f, None, 10_000, None).unwrap().0.len();
    let (all, tenant) = (count(VmFilter::All), count(VmFilter::Tenant("pruned")));
    assert!(all >= 130 && tenant == 65, "{all} {tenant}");
    // A cutoff before them all removes nothing.
    assert_eq!(
        store
            .prune_events_before("2000-01-01T00:00:00Z", usize::MAX)
            .unwrap(),
        0
    );
    // A cutoff after them all removes them, a batch at a time.
    let mut removed = 0;
    loop {
        let n = store
            .prune_events_before("9999-01-01T00:00:00Z", usize::MAX)
            .unwrap();
        if n == 0 {
            break;
        }
        removed += n;
    }
    assert_eq!(removed, all);
    assert_eq!(count(VmFilter::All), 0);
    assert_eq!(count(VmFilter::Tenant("pruned")), 0);
}

fn the_suite(kv: Arc<dyn KvStore>) {
    point_reads_and_writes(kv.as_ref());
    scans_are_ordered_paged_and_bounded(kv.as_ref());
    a_failed_transaction_writes_nothing(kv.as_ref());
    a_transaction_sees_its_own_writes(kv.as_ref());
    parts_commit_together_and_fail_alone(kv.as_ref());
    many_keys_read_ahead_are_all_read(kv.as_ref());
    contended_transactions_serialise(kv.clone());
}

#[test]
fn sled_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    the_suite(Arc::new(SledKv::open(&dir.path().join("db")).unwrap()));
    let other = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(SledKv::open(&other.path().join("db")).unwrap());
    quota_and_addresses_stay_exact(kv.clone());
    blobs_are_chunked_and_verified(kv);
    let pruned = tempfile::tempdir().unwrap();
    old_events_are_pruned(Arc::new(SledKv::open(&pruned.path().join("db")).unwrap()));
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copies_everything(
        Arc::new(SledKv::open(&from.path().join("db")).unwrap()),
        Arc::new(SledKv::open(&to.path().join("db")).unwrap()),
    );
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_keeps_the_store_contract() {
    use modvisor_control_plane::store::EtcdKv;
    let member = etcd_member::EtcdMember::start();
    let endpoints = vec![format!("http://{}", member.client)];
    the_suite(Arc::new(EtcdKv::connect(&endpoints, "/suite").unwrap()));
    // Another root is another store on the same cluster.
    let again = Arc::new(EtcdKv::connect(&endpoints, "/typed").unwrap());
    assert_eq!(again.get(Table::Tenants, b"a").unwrap(), None);
    quota_and_addresses_stay_exact(again.clone());
    blobs_are_chunked_and_verified(again);
    old_events_are_pruned(Arc::new(EtcdKv::connect(&endpoints, "/pruned").unwrap()));
    // sled into etcd, as `modvisor store copy` moves an `up` installation.
    let from = tempfile::tempdir().unwrap();
    copies_everything(
        Arc::new(SledKv::open(&from.path().join("db")).unwrap()),
        Arc::new(EtcdKv::connect(&endpoints, "/copied").unwrap()),
    );
}
