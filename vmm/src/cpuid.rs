//! CPUID for each vCPU: what `KVM_GET_SUPPORTED_CPUID` offers, filtered. The vendor stays
//! the host's (guests pick errata by it), the brand string becomes ours, the topology
//! leaves describe `count` single-threaded cores with APIC ids 0..count, the hypervisor bit
//! is set, and the `compat` profile hides what an instruction-emulating host cannot run.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Which CPU features the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum CpuProfile {
    /// Everything KVM supports on this host.
    #[default]
    Host,
    /// Hides cx16, xsave/xsaves, the AVX family, rdrand/rdseed, fsgsbase and PKU: features
    /// a host that emulates guest kernel code (nested KVM without VT-x) cannot execute.
    Compat,
}

impl std::str::FromStr for CpuProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Self::Host),
            "compat" => Ok(Self::Compat),
            other => Err(format!(
                "unknown CPU profile {other:?} (expected host or compat)"
            )),
        }
    }
}

/// The brand string the guest sees (leaves 0x8000_0002..=0x8000_0004).
pub const BRAND: &str = "modvisor virtual CPU";

// Leaf 1 ECX.
const ECX_FMA: u32 = 1 << 12;
const ECX_CX16: u32 = 1 << 13;
const ECX_MOVBE: u32 = 1 << 22;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_F16C: u32 = 1 << 29;
const ECX_RDRAND: u32 = 1 << 30;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const EDX_HTT: u32 = 1 << 28;
// Leaf 7.0 EBX: fsgsbase, avx2, the avx512 family, rdseed.
const L7_EBX_COMPAT_MASK: u32 = (1 << 0)
    | (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 18)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
// Leaf 7.0 ECX: avx512vbmi, pku, ospke, vaes, vpclmulqdq, avx512 vnni/bitalg/vpopcntdq.
const L7_ECX_COMPAT_MASK: u32 =
    (1 << 1) | (1 << 3) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
// Leaf 7.0 EDX: avx512 4vnniw/4fmaps, avx512 vp2intersect, amx, avx512 fp16.
const L7_EDX_COMPAT_MASK: u32 = (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24);

/// Bits needed to hold APIC ids 0..count.
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Filters `supported` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `index` of `count`.
pub fn filter(supported: &CpuId, index: u32, count: u32, profile: CpuProfile) -> CpuId {
    let mut cpuid = supported.clone();
    let count = count.max(1);
    for e in cpuid.as_mut_slice() {
        filter_entry(e, index, count, profile);
    }
    cpuid
}

fn filter_entry(e: &mut kvm_cpuid_entry2, index: u32, count: u32, profile: CpuProfile) {
    let apic_id = index & 0xff;
    match e.function {
        0x1 => {
            e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
            e.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
            if profile == CpuProfile::Compat {
                e.ecx &= !(ECX_FMA
                    | ECX_CX16
                    | ECX_MOVBE
                    | ECX_XSAVE
                    | ECX_OSXSAVE
                    | ECX_AVX
                    | ECX_F16C
                    | ECX_RDRAND);
            }
        }
        0x4 => {
            // Cores per package - 1 in EAX[31:26]; each cache shared by one thread.
            e.eax = (e.eax & 0x0000_3fff) | ((count - 1) << 26);
        }
        0x7 if e.index == 0 && profile == CpuProfile::Compat => {
            e.ebx &= !L7_EBX_COMPAT_MASK;
            e.ecx &= !L7_ECX_COMPAT_MASK;
            e.edx &= !L7_EDX_COMPAT_MASK;
        }
        0xd if profile == CpuProfile::Compat => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        0xb | 0x1f => {
            // Level 0: SMT (one thread per core); level 1: cores; beyond: invalid.
            let (shift, logical, level_type) = match e.index {
                0 => (0, 1, 1),
                1 => (id_bits(count), count, 2),
                _ => (0, 0, 0),
            };
            e.eax = shift;
            e.ebx = logical;
            e.ecx = (level_type << 8) | (e.index & 0xff);
            e.edx = index;
        }
        0x8000_0002..=0x8000_0004 => {
            let mut brand = [0u8; 48];
            let n = BRAND.len().min(47);
            brand[..n].copy_from_slice(&BRAND.as_bytes()[..n]);
            let base = ((e.function - 0x8000_0002) * 16) as usize;
            let word = |i: usize| {
                let o = base + i * 4;
                u32::from_le_bytes([brand[o], brand[o + 1], brand[o + 2], brand[o + 3]])
            };
            e.eax = word(0);
            e.ebx = word(1);
            e.ecx = word(2);
            e.edx = word(3);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0x1, 0),
            entry(0x4, 0),
            entry(0x7, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xd, 1),
            entry(0x8000_0002, 0),
            entry(0x8000_0003, 0),
            entry(0x8000_0004, 0),
        ])
        .unwrap()
    }

    #[test]
    fn apic_ids_and_topology_per_vcpu() {
        let c = filter(&sample(), 2, 4, CpuProfile::Host);
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&c, 4, 0).eax >> 26, 3);
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 2));
        // Host profile keeps features.
        assert_ne!(l1.ecx & ECX_CX16, 0);
        assert_eq!(find(&c, 0xd, 1).eax, u32::MAX);
    }

    #[test]
    fn brand_string_is_ours() {
        let c = filter(&sample(), 0, 1, CpuProfile::Host);
        let mut bytes = Vec::new();
        for f in 0x8000_0002..=0x8000_0004 {
            let e = find(&c, f, 0);
            for r in [e.eax, e.ebx, e.ecx, e.edx] {
                bytes.extend_from_slice(&r.to_le_bytes());
            }
        }
        assert!(bytes.starts_with(BRAND.as_bytes()));
        assert_eq!(bytes[BRAND.len()], 0);
        assert_eq!(find(&c, 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn compat_hides_what_an_emulator_cannot_run() {
        let c = filter(&sample(), 0, 1, CpuProfile::Compat);
        let l1 = find(&c, 1, 0);
        for bit in [ECX_CX16, ECX_XSAVE, ECX_OSXSAVE, ECX_AVX, ECX_FMA, ECX_F16C] {
            assert_eq!(l1.ecx & bit, 0);
        }
        assert_eq!(find(&c, 7, 0).ebx & (1 << 5), 0, "avx2");
        assert_eq!(find(&c, 7, 0).ebx & (1 << 16), 0, "avx512f");
        assert_eq!(find(&c, 0xd, 1).eax, 0, "xsaves");
    }

    #[test]
    fn profiles_parse() {
        assert_eq!("compat".parse::<CpuProfile>(), Ok(CpuProfile::Compat));
        assert!("fast".parse::<CpuProfile>().is_err());
    }

    #[test]
    fn real_kvm_cpuid_filters() {
        let kvm = crate::open_kvm().unwrap();
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let c = filter(&supported, 1, 2, CpuProfile::Compat);
        assert_eq!(find(&c, 1, 0).ebx >> 24, 1);
        let l1 = find(&c, 1, 0);
        assert_eq!(
            l1.ecx & (ECX_CX16 | ECX_XSAVE | ECX_AVX),
            0,
            "{:#x}",
            l1.ecx
        );
    }
}
