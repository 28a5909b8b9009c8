//! `user_data`: a VM's first-boot script, and what became of it (the same vocabulary on
//! both hops).

use serde::{Deserialize, Serialize};

/// Most bytes of a script (the create request stays under the 64 KiB body limit).
pub const MAX_USER_DATA_BYTES: usize = 32 * 1024;

/// Where a VM's first-boot script is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum UserDataState {
    /// Not started: it runs once the VM runs and its requested modules have settled.
    Pending,
    /// Running (its output goes to the console).
    Running,
    /// It exited with code 0.
    Succeeded,
    /// It exited with another code, a signal ended it, it could not start, or the VM
    /// stopped while it ran (see `reason`). It does not run again.
    Failed,
}

/// What became of a VM's first-boot script.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct UserDataStatus {
    /// Where it is.
    pub state: UserDataState,
    /// Its exit code, once it exited.
    pub exit_code: Option<i32>,
    /// Milliseconds it ran (so far, while Running).
    pub duration_ms: Option<u64>,
    /// Why it failed, when no exit code says it.
    pub reason: Option<String>,
}

impl UserDataStatus {
    /// Not started.
    pub fn pending() -> Self {
        UserDataStatus {
            state: UserDataState::Pending,
            exit_code: None,
            duration_ms: None,
            reason: None,
        }
    }

    /// This status moved forward by what a node observed: `Pending` -> `Running` ->
    /// `Succeeded`/`Failed`, never back (a rebooted guest's agent reports a script it has
    /// not started; the VM's script has run all the same). `None` when nothing changes.
    pub fn advanced_by(&self, observed: &UserDataStatus) -> Option<UserDataStatus> {
        use UserDataState::*;
        let moves = matches!(
            (self.state, observed.state),
            (Pending, Running | Succeeded | Failed) | (Running, Succeeded | Failed)
        ) || (self.state == Running && observed.state == Running && self != observed);
        moves.then(|| observed.clone())
    }
}

/// Body of the node API's `POST /v1/vms/{id}/user-data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunUserData {
    /// The script (run with `sh -c` in the tenant context).
    pub script: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: UserDataState) -> UserDataStatus {
        UserDataStatus {
            state,
            ..UserDataStatus::pending()
        }
    }

    #[test]
    fn the_state_only_moves_forward() {
        use UserDataState::*;
        let p = status(Pending);
        assert_eq!(p.advanced_by(&status(Running)), Some(status(Running)));
        assert_eq!(p.advanced_by(&status(Succeeded)), Some(status(Succeeded)));
        assert_eq!(p.advanced_by(&status(Pending)), None);
        let r = status(Running);
        assert_eq!(r.advanced_by(&status(Pending)), None, "a rebooted agent");
        assert_eq!(r.advanced_by(&status(Failed)), Some(status(Failed)));
        let mut longer = status(Running);
        longer.duration_ms = Some(5);
        assert_eq!(r.advanced_by(&longer), Some(longer.clone()));
        for done in [Succeeded, Failed] {
            for any in [Pending, Running, Succeeded, Failed] {
                assert_eq!(status(done).advanced_by(&status(any)), None);
            }
        }
    }
}
