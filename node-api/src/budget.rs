//! How long each node call may take, shared by both sides: the node stops waiting at its
//! budget and answers; the control plane waits the same budget plus [`MARGIN`], so it
//! never gives up (and retries) while the node is still working within its budget.

use std::time::Duration;

/// What the control plane adds to a node's budget for the network and the reply.
pub const MARGIN: Duration = Duration::from_secs(20);
/// How long a node waits for a VM to settle (boot or stop) before answering an ensure.
pub const ENSURE: Duration = Duration::from_secs(200);
/// How long a node may take to remove a VM (stop its guest, tear down its jail).
pub const DELETE: Duration = Duration::from_secs(60);
/// How long a node waits for its guest to unload a module.
pub const UNLOAD: Duration = Duration::from_secs(60);
/// How long a node may take to vet and load one module of a request.
pub const LOAD_PER_MODULE: Duration = Duration::from_secs(120);
/// How long a node may take for a load request, whatever the closure.
pub const LOAD_MAX: Duration = Duration::from_secs(590);
/// What a node may take for an exec beyond the command's own timeout (starting it,
/// killing it, carrying up to 2 MiB of output over the guest channel).
pub const EXEC_SLACK: Duration = Duration::from_secs(15);

/// The budgets both sides use. The defaults are the constants above; tests scale them
/// down (a slow simulated node, milliseconds instead of minutes) rather than wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// See [`MARGIN`].
    pub margin: Duration,
    /// See [`ENSURE`].
    pub ensure: Duration,
    /// See [`DELETE`].
    pub delete: Duration,
    /// See [`UNLOAD`].
    pub unload: Duration,
    /// See [`LOAD_PER_MODULE`].
    pub load_per_module: Duration,
    /// See [`LOAD_MAX`].
    pub load_max: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            margin: MARGIN,
            ensure: ENSURE,
            delete: DELETE,
            unload: UNLOAD,
            load_per_module: LOAD_PER_MODULE,
            load_max: LOAD_MAX,
        }
    }
}

impl Budgets {
    /// The node's budget for a load whose closure holds `modules` modules.
    pub fn load(&self, modules: usize) -> Duration {
        let n = u32::try_from(modules.max(1)).unwrap_or(u32::MAX);
        self.load_per_module.saturating_mul(n).min(self.load_max)
    }

    /// How long the caller waits for a node call whose node-side budget is `budget`.
    pub fn caller_timeout(&self, budget: Duration) -> Duration {
        budget.saturating_add(self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_budget_grows_with_its_closure_up_to_the_cap() {
        let b = Budgets::default();
        assert_eq!(b.load(0), LOAD_PER_MODULE);
        assert_eq!(b.load(2), LOAD_PER_MODULE * 2);
        assert_eq!(b.load(100), LOAD_MAX);
        assert!(b.caller_timeout(b.load(9)) > b.load(9));
    }
}
