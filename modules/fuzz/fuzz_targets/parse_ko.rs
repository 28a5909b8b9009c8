//! Fuzzes the module parser and everything that runs on a parsed module: any input must
//! give a module or an error, never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modvisor_modules::{inspect, KernelModule, ModInfo, TrustStore, VettingPolicy};

fuzz_target!(|data: &[u8]| {
    let _ = ModInfo::parse(data);
    if let Ok(module) = KernelModule::parse(data) {
        let _ = module.dependencies();
        if let Some(sig) = module.signature() {
            let _ = sig.verify(&TrustStore::new());
        }
    }
    let policy = VettingPolicy::inspection(Some("6.1.0-56-cloud-amd64"));
    let report = inspect("fuzz.ko", data, &policy, &TrustStore::new(), None, None);
    let _ = report.to_string();
});
