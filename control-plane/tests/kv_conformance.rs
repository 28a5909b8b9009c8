//! What every store backend must do, run against each: sled in a temporary directory and
//! (with the cargo feature `etcd`) a real etcd member started by the test. Point reads and
//! writes, ordered and paged prefix scans, transactions that are atomic, see their own
//! writes and serialise under contention, rising ids; and, through the typed store above
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
use modvisor_control_plane::store::{Datastore, KvStore, SledKv, Table, Txn, VmFilter};
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

fn tenant(name: &str) -> CreateTenant {
    CreateTenant {
        name: name.into(),
        quota: None,
    }
}

#[test]
fn sled_always_leads_and_fenced_writes_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = Datastore::new(Arc::new(SledKv::open(&dir.path().join("db")).unwrap()));
    let term = Arc::new(store.campaign("only").unwrap());
    assert!(!term.is_over());
    let leader = store.fenced(term);
    leader.create_tenant("system", &tenant("fenced")).unwrap();
    assert!(store.get_tenant("fenced").unwrap().is_some());
}

/// Two replicas on one etcd: one leads at a time; a leader whose key is gone (its lease
/// expired while it was paused, or an operator deleted it) writes nothing more as leader;
/// the other then leads with a greater fencing token.
#[cfg(feature = "etcd")]
#[test]
fn etcd_leadership_is_exclusive_and_fenced() {
    use modvisor_control_plane::store::EtcdKv;
    use std::time::{Duration, Instant};
    let member = etcd_member::EtcdMember::start();
    let endpoints = vec![format!("http://{}", member.client)];
    let a = Datastore::new(Arc::new(EtcdKv::connect(&endpoints, "/ha").unwrap()));
    let b = Datastore::new(Arc::new(EtcdKv::connect(&endpoints, "/ha").unwrap()));
    let term_a = Arc::new(a.campaign("a").unwrap());
    assert!(term_a.revision > 0);
    let (won, wins) = std::sync::mpsc::channel();
    let candidate = b.clone();
    std::thread::spawn(move || won.send(candidate.campaign("b").map(Arc::new)));
    // A keeps its lease alive: B does not win while A lives, well past the lease's TTL.
    assert!(
        wins.recv_timeout(modvisor_control_plane::store::LEASE_TTL + Duration::from_secs(2))
            .is_err(),
        "B won while A led"
    );
    let leader_a = a.fenced(term_a.clone());
    leader_a.create_tenant("a", &tenant("before")).unwrap();
    // A loses its key, as when its lease expires while it is stopped.
    let client = endpoints.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut c = etcd_client::Client::connect(client, None).await.unwrap();
            c.delete("/ha/leader", None).await.unwrap();
        });
    let term_b = wins.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(term_b.revision > term_a.revision);
    let refused = leader_a.create_tenant("a", &tenant("after"));
    assert!(matches!(refused, Err(Error::Deposed(_))), "{refused:?}");
    assert!(a.get_tenant("after").unwrap().is_none());
    // A's keeper notices too, within the lease's TTL.
    let deadline = Instant::now() + modvisor_control_plane::store::LEASE_TTL * 2;
    while !term_a.is_over() {
        assert!(Instant::now() < deadline, "A's term never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.fenced(term_b)
        .create_tenant("b", &tenant("by-b"))
        .unwrap();
    assert!(a.get_tenant("by-b").unwrap().is_some());
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_unreachable_is_a_storage_error_in_bounded_time() {
    use modvisor_control_plane::store::EtcdKv;
    let started = std::time::Instant::now();
    // Nothing listens on port 9 (discard) of loopback.
    let r = EtcdKv::connect(&["http://127.0.0.1:9".to_string()], "/x");
    assert!(matches!(r, Err(Error::Storage(_))), "{:?}", r.err());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for `user`, as PEM
/// files in `dir`: (ca, server cert, server key, client cert, client key).
#[cfg(feature = "etcd")]
fn tls_files(dir: &std::path::Path, user: &str) -> [std::path::PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test etcd CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let leaf = |cn: &str, san: Option<SanType>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = san.into_iter().collect();
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server, server_key) = leaf(
        "etcd",
        Some(SanType::IpAddress("127.0.0.1".parse().unwrap())),
    );
    let (client, client_key) = leaf(user, None);
    let files = [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ]
    .map(|n| dir.join(n));
    for (f, pem) in files
        .iter()
        .zip([ca_cert.pem(), server, server_key, client, client_key])
    {
        std::fs::write(f, pem).unwrap();
    }
    files
}

/// etcd over TLS, taking only clients with a certificate of its CA, with authentication
/// on: the store connects with the CA, its certificate and a user whose password is in a
/// private file; without its certificate, or with a wrong password, or a password file
/// others may read, it is refused with a clear error.
#[cfg(feature = "etcd")]
#[test]
fn etcd_with_tls_and_a_user_takes_only_what_it_should() {
    use modvisor_control_plane::store::{EtcdAccess, EtcdKv};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client, client_key] = tls_files(dir.path(), "modvisor");
    let member = etcd_member::EtcdMember::start_tls(&ca, &cert, &key);
    let endpoints = vec![format!("http://{}", member.client)];
    // Users and authentication, set up as an operator would (etcdctl user add ...).
    let url = format!("https://{}", member.client);
    let (tls_ca, tls_cert, tls_key) = (
        std::fs::read_to_string(&ca).unwrap(),
        std::fs::read_to_string(&client).unwrap(),
        std::fs::read_to_string(&client_key).unwrap(),
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(tls_ca))
                .identity(etcd_client::Identity::from_pem(tls_cert, tls_key));
            let options = etcd_client::ConnectOptions::new().with_tls(tls);
            let mut c = etcd_client::Client::connect([url], Some(options))
                .await
                .unwrap();
            c.user_add("root", "root-secret", None).await.unwrap();
            c.user_grant_role("root", "root").await.unwrap();
            c.user_add("modvisor", "s3cret", None).await.unwrap();
            c.role_add("modvisor").await.unwrap();
            c.role_grant_permission(
                "modvisor",
                etcd_client::Permission::read_write("/tls").with_prefix(),
            )
            .await
            .unwrap();
            c.user_grant_role("modvisor", "modvisor").await.unwrap();
            c.auth_enable().await.unwrap();
        });
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let access = EtcdAccess {
        ca: Some(ca.clone()),
        identity: Some((client.clone(), client_key.clone())),
        user: Some(("modvisor".into(), password.clone())),
    };
    let kv = EtcdKv::connect_with(&endpoints, "/tls", &access).unwrap();
    put(&kv, Table::Tenants, b"a", b"1");
    assert_eq!(kv.get(Table::Tenants, b"a").unwrap(), Some(b"1".to_vec()));
    let refused = |access: &EtcdAccess| {
        let started = std::time::Instant::now();
        let r = EtcdKv::connect_with(&endpoints, "/tls", access);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        match r {
            Err(Error::Storage(m)) => m,
            other => panic!("{:?}", other.err()),
        }
    };
    // Outside its prefix the user may do nothing: another root is refused.
    match EtcdKv::connect_with(&endpoints, "/other", &access) {
        Err(Error::Storage(m)) => assert!(m.contains("permission denied"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    let no_certificate = EtcdAccess {
        identity: None,
        ..access.clone()
    };
    refused(&no_certificate);
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let m = refused(&EtcdAccess {
        user: Some(("modvisor".into(), wrong)),
        ..access.clone()
    });
    assert!(m.contains("authentication failed"), "{m}");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = refused(&access);
    assert!(m.contains("chmod 600"), "{m}");
}
