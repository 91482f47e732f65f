//! Membership: conf changes proposed and applied, and what a node does
//! when it learns it was removed.

use super::*;

impl Driver {
    /// Proposes a conf change, carrying a new member's address in its
    /// context so every node learns where to reach it.
    pub(super) fn propose_member(&mut self, change: MemberChange, reply: Reply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(Error::NoLeader {
                retry_after_ms: self.tick_interval.as_millis() as u64 * 5,
            }));
            return;
        }
        let mut cc = ConfChange::default();
        match &change {
            MemberChange::AddLearner { id, addr } => {
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.node_id = *id;
                cc.context = addr.clone().into_bytes().into();
            }
            MemberChange::Promote { id } => {
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *id;
            }
            MemberChange::Remove { id } => {
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
        }
        if self.raw.raft.has_pending_conf() {
            // raft would turn the change into an empty entry.
            let _ = reply.send(Err(Error::MembershipBusy));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                tracing::info!(
                    event = "membership_change_proposed",
                    ?change,
                    index,
                    "proposed a membership change"
                );
                self.pending.insert(index, term, vec![Some(reply)], true);
            }
            _ => {
                let _ = reply.send(Err(Error::MembershipBusy));
            }
        }
    }

    /// Applies a conf change: raft's membership, and the address book that
    /// the transport and the router use. One that raft refuses (it would
    /// remove the last voter, say) is refused the same way on every node,
    /// so it is logged and skipped.
    pub(super) fn apply_conf_change(
        &mut self,
        entry: &Entry,
    ) -> Result<Result<(), String>, DriverError> {
        use protobuf::Message as _;
        let corrupt = |e: protobuf::ProtobufError| StoreError::Corrupt {
            key: format!("raft/e/{}", entry.index),
            reason: e.to_string(),
        };
        let result = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(corrupt)?;
            self.raw.apply_conf_change(&cc)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(corrupt)?;
            let result = self.raw.apply_conf_change(&cc);
            if result.is_ok() {
                let id = cc.node_id;
                match cc.get_change_type() {
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                        if !cc.context.is_empty() =>
                    {
                        let addr = String::from_utf8_lossy(&cc.context).into_owned();
                        self.addrs.insert(id, addr.clone());
                        if id != self.node_id {
                            self.transport.add_peer(id, &addr);
                        }
                    }
                    ConfChangeType::RemoveNode => {
                        self.addrs.remove(&id);
                        self.transport.remove_peer(id);
                        // This node's own removal is acted on by
                        // `check_removed`, once it stands.
                        self.removed_members.insert(id, entry.index);
                    }
                    _ => {}
                }
                if matches!(
                    cc.get_change_type(),
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                ) {
                    self.removed_members.remove(&id);
                }
                self.raw.mut_store().set_addresses(&self.addrs)?;
                self.raw.mut_store().set_removed(&self.removed_members)?;
            }
            result
        };
        match result {
            Ok(cs) => {
                tracing::info!(event = "membership_changed", index = entry.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                self.raw.mut_store().set_conf_state(cs)?;
                Ok(Ok(()))
            }
            Err(e) => {
                tracing::error!(event = "membership_change_refused", index = entry.index, error = %e, "raft refused a membership change; skipped on every node");
                Ok(Err(format!("raft refused the membership change: {e}")))
            }
        }
    }

    /// Acts on this node's own removal once it has stood for
    /// [`REMOVAL_GRACE`]: a node rebuilt under its old id replays the
    /// change that removed it on the way to the one that added it back.
    pub(super) fn check_removed(&mut self) {
        if self.removed.is_some() {
            return;
        }
        match self.removed_members.get(&self.node_id).copied() {
            None => self.removal_seen = None,
            Some(at) => {
                let since = *self
                    .removal_seen
                    .get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= REMOVAL_GRACE {
                    self.mark_removed(format!("the configuration change at index {at} removed it"));
                }
            }
        }
    }

    /// This node is out of the cluster: it stops campaigning, says so once,
    /// and reports it in its status (the node then stops, unless told to
    /// wait).
    pub(super) fn mark_removed(&mut self, reason: String) {
        if self.removed.is_some() {
            return;
        }
        tracing::error!(
            event = "removed_from_cluster",
            node_id = self.node_id,
            reason = %reason,
            "this node was removed from the cluster: it no longer campaigns. To bring it back, empty its data dir, start it with join = true and run `drover cluster add`"
        );
        self.removed_tx.send_replace(Some(reason.clone()));
        self.removed = Some(reason);
    }
}
