//! Per-tenant rate limits, from each tenant's quota: a token bucket of API requests, a
//! bound on its requests in flight, and a token bucket of module requests per VM. Over a
//! limit, a request gets 429 with `Retry-After` and changes nothing.
//!
//! The buckets live in this process: with several replicas each enforces its own share.

use crate::error::Error;
use crate::model::Quota;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most VMs whose module-request buckets are remembered; full buckets are forgotten first.
const MAX_VM_BUCKETS: usize = 100_000;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate_per_sec: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate_per_sec).min(f64::from(burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate_per_sec))
        }
    }

    fn is_full(&self, rate_per_sec: f64, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate_per_sec >= f64::from(burst)
    }
}

/// Whole seconds to wait, at least one (what `Retry-After` carries).
fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The limits of every tenant and VM this process has seen.
#[derive(Default)]
pub struct RateLimits {
    api: Mutex<HashMap<String, Bucket>>,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    modules: Mutex<HashMap<String, Bucket>>,
    streams: Arc<Mutex<HashMap<String, u32>>>,
}

/// A request in flight (or a live stream), counted against its holder until dropped.
#[derive(Debug)]
pub struct InFlight {
    tenant: String,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        match self.counts.lock() {
            Ok(mut counts) => {
                if let Some(n) = counts.get_mut(&self.tenant) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.remove(&self.tenant);
                    }
                }
            }
            Err(_) => tracing::error!("the in-flight table is poisoned"),
        }
    }
}

/// Most live streams (`/v1/stream`) one caller (a tenant, or an admin's subject) holds.
pub const MAX_STREAMS: u32 = 8;

fn poisoned(what: &str) -> Error {
    Error::Misconfigured(format!("the {what} table is poisoned"))
}

impl RateLimits {
    /// Admits one API request of `tenant` under `quota`, or refuses it with 429. The
    /// request counts as in flight until the returned guard is dropped.
    pub fn admit_api(&self, tenant: &str, quota: &Quota) -> Result<InFlight, Error> {
        let now = Instant::now();
        {
            let mut counts = self.in_flight.lock().map_err(|_| poisoned("in-flight"))?;
            let n = counts.entry(tenant.to_string()).or_insert(0);
            if *n >= quota.max_concurrent_requests {
                return Err(Error::RateLimited {
                    tenant: tenant.to_string(),
                    limit: "max_concurrent_requests",
                    retry_after_secs: 1,
                });
            }
            let mut buckets = self.api.lock().map_err(|_| poisoned("rate"))?;
            let bucket = buckets
                .entry(tenant.to_string())
                .or_insert_with(|| Bucket::full(quota.api_burst, now));
            if let Err(wait) =
                bucket.take(f64::from(quota.api_requests_per_sec), quota.api_burst, now)
            {
                return Err(Error::RateLimited {
                    tenant: tenant.to_string(),
                    limit: "api_requests_per_sec",
                    retry_after_secs: retry_after(wait),
                });
            }
            *n += 1;
        }
        Ok(InFlight {
            tenant: tenant.to_string(),
            counts: self.in_flight.clone(),
        })
    }

    /// Admits one live stream of `holder`, up to [`MAX_STREAMS`] at once (a stream is not
    /// a request in flight: it would hold a slot for its whole life).
    pub fn admit_stream(&self, holder: &str) -> Result<InFlight, Error> {
        let mut counts = self.streams.lock().map_err(|_| poisoned("stream"))?;
        let n = counts.entry(holder.to_string()).or_insert(0);
        if *n >= MAX_STREAMS {
            return Err(Error::RateLimited {
                tenant: holder.to_string(),
                limit: "max_streams",
                retry_after_secs: 5,
            });
        }
        *n += 1;
        Ok(InFlight {
            tenant: holder.to_string(),
            counts: self.streams.clone(),
        })
    }

    /// Admits one module request (load or unload) of VM `vm` under its tenant's `quota`.
    pub fn admit_module_request(&self, tenant: &str, vm: &str, quota: &Quota) -> Result<(), Error> {
        let now = Instant::now();
        let per_min = quota.module_requests_per_vm_per_min;
        let rate = f64::from(per_min) / 60.0;
        let mut buckets = self.modules.lock().map_err(|_| poisoned("module rate"))?;
        if buckets.len() >= MAX_VM_BUCKETS && !buckets.contains_key(vm) {
            // A full bucket is what a forgotten one would be again: forget those.
            buckets.retain(|_, b| !b.is_full(rate, per_min, now));
        }
        let bucket = buckets
            .entry(vm.to_string())
            .or_insert_with(|| Bucket::full(per_min, now));
        bucket
            .take(rate, per_min, now)
            .map_err(|wait| Error::RateLimited {
                tenant: tenant.to_string(),
                limit: "module_requests_per_vm_per_min",
                retry_after_secs: retry_after(wait),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u32, burst: u32, concurrent: u32) -> Quota {
        Quota {
            api_requests_per_sec: rate,
            api_burst: burst,
            max_concurrent_requests: concurrent,
            ..Quota::default()
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        for _ in 0..3 {
            b.take(2.0, 3, t0).unwrap();
        }
        let wait = b.take(2.0, 3, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert_eq!(retry_after(wait), 1);
        b.take(2.0, 3, t0 + Duration::from_millis(500)).unwrap();
        assert!(b.take(2.0, 3, t0 + Duration::from_millis(500)).is_err());
        // Idle time never fills past the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            b.take(2.0, 3, later).unwrap();
        }
        assert!(b.take(2.0, 3, later).is_err());
    }

    #[test]
    fn tenants_have_their_own_buckets_and_in_flight_counts() {
        let limits = RateLimits::default();
        let q = quota(1, 2, 10);
        let _a1 = limits.admit_api("a", &q).unwrap();
        let _a2 = limits.admit_api("a", &q).unwrap();
        let refused = limits.admit_api("a", &q).unwrap_err();
        assert!(matches!(
            refused,
            Error::RateLimited {
                limit: "api_requests_per_sec",
                ..
            }
        ));
        limits.admit_api("b", &q).unwrap();

        let tight = quota(1000, 1000, 2);
        let c1 = limits.admit_api("c", &tight).unwrap();
        let _c2 = limits.admit_api("c", &tight).unwrap();
        assert!(matches!(
            limits.admit_api("c", &tight),
            Err(Error::RateLimited {
                limit: "max_concurrent_requests",
                ..
            })
        ));
        drop(c1);
        limits.admit_api("c", &tight).unwrap();
    }

    #[test]
    fn module_requests_are_limited_per_vm() {
        let limits = RateLimits::default();
        let q = Quota {
            module_requests_per_vm_per_min: 2,
            ..Quota::default()
        };
        limits.admit_module_request("a", "vm1", &q).unwrap();
        limits.admit_module_request("a", "vm1", &q).unwrap();
        assert!(limits.admit_module_request("a", "vm1", &q).is_err());
        limits.admit_module_request("a", "vm2", &q).unwrap();
    }
}
