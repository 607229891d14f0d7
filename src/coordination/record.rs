//! What the coordination keys hold, under `[coordination] prefix` (pure):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `<prefix>/acting` | the acting controller's name, bound to its lease | the campaign: create-if-absent |
//! | `<prefix>/state` | the state file's JSON: designated masters, epoch, last failover | the acting controller, compare-and-swap on its revision |
//! | `<prefix>/view` | [`SharedView`]: what the endpoint reports, and the events' input | the acting controller, when it changes |
//!
//! The `state` key's revision (etcd's `mod_revision`) is the **fencing token**: every
//! decision has a larger one than the decision it replaced, however many controllers tried.

use serde::{Deserialize, Serialize};

use crate::{
    events::Snapshot,
    sentinel::Discovery,
    state::{State, Trigger},
    topology::Topology,
};

pub const ACTING: &str = "acting";
pub const STATE: &str = "state";
pub const VIEW: &str = "view";

/// The `state` key as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedState {
    /// Its `mod_revision`: the fencing token of the masters it names.
    pub revision: u64,
    pub state: State,
}

/// The acting controller's round, for controllers that do not poll: the endpoint's view, and
/// the snapshot that events (hooks, `+switch-master`) are derived from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedView {
    /// Which deployment layout the instance numbers in `snapshot` refer to: a controller
    /// with another config ignores the view (and says so) rather than misname instances.
    pub layout: String,
    pub discovery: Discovery,
    pub snapshot: Snapshot,
    /// Why each shard's master last moved (the events' trigger), per shard.
    pub triggers: Vec<Option<Trigger>>,
    /// The fencing token of the masters this view reports.
    pub fencing_token: Option<u64>,
    /// The controller that wrote it.
    pub by: String,
}

impl SharedView {
    /// The view of one round. Offsets and silences are left out (zero): they change every
    /// round, and a view is written to etcd only when something a client acts on changed.
    pub fn new(
        topology: &Topology,
        discovery: &Discovery,
        snapshot: &Snapshot,
        triggers: &[Option<Trigger>],
        fencing_token: Option<u64>,
        by: &str,
    ) -> SharedView {
        let mut discovery = discovery.clone();
        for shard in &mut discovery.shards {
            for node in shard.master.iter_mut().chain(shard.replicas.iter_mut()) {
                node.offset = 0;
                node.silent_ms = 0;
            }
        }
        SharedView {
            layout: layout(topology),
            discovery,
            snapshot: snapshot.clone(),
            triggers: triggers.to_vec(),
            fencing_token,
            by: by.to_string(),
        }
    }
}

/// A short description of the rooms, shards and instance addresses, in order: two controllers
/// agree on instance numbers exactly when their layouts are equal.
pub fn layout(topology: &Topology) -> String {
    let mut out = topology.rooms.join(",");
    for (s, shard) in topology.shards.iter().enumerate() {
        out.push_str(&format!(";{}=", shard.name));
        let members: Vec<String> = topology.shard_members(s).map(|id| topology.addr(id).to_string()).collect();
        out.push_str(&members.join(","));
    }
    out
}

/// Reads a `state` value; the error says what is wrong with it.
pub fn parse_state(value: &[u8], revision: u64, topology: &Topology) -> Result<SharedState, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    match State::from_json(text, topology) {
        // The stored record has no token: it is the revision of the write that stored it.
        Ok(Some(state)) => Ok(SharedState { revision, state: State { fencing_token: Some(revision), ..state } }),
        Ok(None) => Err("empty".into()),
        Err(crate::state::JsonError::Parse(e)) => Err(format!("not roomguard state: {e}")),
        Err(crate::state::JsonError::Mismatch(problem)) => Err(problem),
    }
}

pub fn parse_view(value: &[u8], topology: &Topology) -> Result<SharedView, String> {
    let view: SharedView = serde_json::from_slice(value).map_err(|e| format!("not a roomguard view: {e}"))?;
    if view.layout != layout(topology) {
        return Err(format!(
            "written by {} for another deployment layout ({}); this controller's is {}",
            view.by,
            view.layout,
            layout(topology)
        ));
    }
    Ok(view)
}

/// Which of two records is newer: the larger revision (etcd's order), never the epoch that
/// different controllers may have counted differently while etcd was unreachable.
pub fn newer(candidate: &SharedState, current: Option<&SharedState>) -> bool {
    current.is_none_or(|c| candidate.revision > c.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::fixtures::seed as topology;

    #[test]
    fn a_state_round_trips_and_a_foreign_one_is_refused() {
        let t = topology();
        let mut state = State::new(vec![Some(2), None]);
        state.room_failures = vec![None, None];
        state.epoch = 4;
        state.fencing_token = Some(17);
        let json = state.to_json(&t);
        let shared = parse_state(json.as_bytes(), 18, &t).unwrap();
        assert_eq!((shared.revision, shared.state.clone()), (18, State { fencing_token: Some(18), ..state }));
        let other = json.replace("192.168.99.12:6401", "10.0.0.1:6401");
        assert!(parse_state(other.as_bytes(), 19, &t).unwrap_err().contains("not one of its instances"));
        assert!(parse_state(b"{", 19, &t).unwrap_err().starts_with("not roomguard state"));
        assert!(newer(&shared, None));
        let older = SharedState { revision: 12, state: shared.state.clone() };
        assert!(!newer(&older, Some(&shared)) && newer(&shared, Some(&older)));
    }

    #[test]
    fn a_view_from_another_layout_is_refused() {
        let t = topology();
        let view = SharedView {
            layout: layout(&t),
            discovery: Discovery::default(),
            snapshot: Snapshot::default(),
            triggers: vec![None, None],
            fencing_token: Some(3),
            by: "c1".into(),
        };
        let bytes = serde_json::to_vec(&view).unwrap();
        assert_eq!(parse_view(&bytes, &t).unwrap(), view);
        assert!(layout(&t).starts_with("1,2;shard-6401=192.168.99.11:6401,"), "{}", layout(&t));
        let foreign = SharedView { layout: "1,2;s1=10.0.0.1:1".into(), ..view };
        let e = parse_view(&serde_json::to_vec(&foreign).unwrap(), &t).unwrap_err();
        assert!(e.contains("written by c1 for another deployment layout"), "{e}");
    }
}
