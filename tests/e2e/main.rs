//! End-to-end tests of the control plane: a real `modvisor up` process per test, real
//! HTTP on loopback, a real sled store and real EdDSA tokens.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod agents;
mod auth;
mod cli;
mod cluster;
mod console;
mod dataplane;
mod doctor;
#[cfg(feature = "etcd")]
#[path = "../../control-plane/tests/etcd_member/mod.rs"]
mod etcd_member;
#[cfg(feature = "etcd")]
mod etcd_store;
mod fixtures;
#[cfg(feature = "etcd")]
mod ha;
mod host;
mod hostile;
mod identity;
mod ipam;
mod jail;
mod kvm_driver;
mod metrics;
mod modules;
mod networks;
mod operator_modules;
mod persistence;
#[path = "../probes/build.rs"]
mod probe;
mod quota;
mod ratelimit;
mod readme;
mod readopt;
mod stream;
mod support;
mod tenancy;
mod up_stop;
mod user_data;
mod vms;
