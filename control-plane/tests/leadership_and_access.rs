//! Leadership and access, on each backend: sled always leads and its fenced writes pass;
//! on a real etcd member started by the test, leadership is exclusive and fenced, an
//! unreachable etcd is a storage error within a bound, and a store behind TLS and an etcd
//! user takes only what it should; a replica's token cache follows what another writes.
//! (The store contract itself: `kv_conformance.rs`.)

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "etcd")]
mod etcd_member;

use modvisor_control_plane::model::CreateTenant;
use modvisor_control_plane::store::{Datastore, SledKv};
#[cfg(feature = "etcd")]
use modvisor_control_plane::{
    error::Error,
    store::{KvStore, Table, Txn},
};
use std::sync::Arc;

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
/// Two replicas on one etcd, the second with its token-verification cache: it gets in
/// step, hears a revocation and a quota made on the first through its watch, counts its
/// own revocation at once, and knows a tenant made after it loaded (the store says).
#[cfg(feature = "etcd")]
#[test]
fn a_replicas_token_cache_follows_what_another_replica_writes() {
    use modvisor_control_plane::model::Quota;
    use modvisor_control_plane::standing::StandingCache;
    use modvisor_control_plane::store::EtcdKv;
    use std::time::{Duration, Instant};
    let member = etcd_member::EtcdMember::start();
    let endpoints = vec![format!("http://{}", member.client)];
    let replica = || Datastore::new(Arc::new(EtcdKv::connect(&endpoints, "/standing").unwrap()));
    let (a, b) = (replica(), replica());
    a.create_tenant("test", &tenant("t")).unwrap();
    let cache = StandingCache::start(b).unwrap();
    let within = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    within("in step", &|| cache.in_step());
    assert!(!cache.token_standing("j1", Some("t")).unwrap().0);
    a.revoke_token("test", None, "j1", |_| true).unwrap();
    within("the revocation heard", &|| {
        cache.token_standing("j1", Some("t")).unwrap().0
    });
    let quota = Quota {
        max_vms: 3,
        ..Quota::default()
    };
    a.set_quota("test", "t", quota).unwrap();
    within("the quota heard", &|| {
        cache
            .token_standing("j2", Some("t"))
            .unwrap()
            .1
            .unwrap()
            .quota
            .max_vms
            == 3
    });
    cache.note_revoked("j3");
    assert!(cache.token_standing("j3", None).unwrap().0);
    a.create_tenant("test", &tenant("new")).unwrap();
    let (revoked, new) = cache.token_standing("j4", Some("new")).unwrap();
    assert!(!revoked && new.is_some());
    assert!(cache
        .token_standing("j4", Some("absent"))
        .unwrap()
        .1
        .is_none());
    assert!(cache.in_step());
}

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
    kv.transact(&|t: &dyn Txn| t.insert(Table::Tenants, b"a", b"1"))
        .unwrap();
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
