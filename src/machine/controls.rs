//! What operators switch on queues: pause (no leases) and drain (no new
//! jobs), kept in one small record (`C`), and the admission of new jobs
//! against draining queues and the policies' depth limits.

use super::*;
use crate::command::{QueueAction, QueueScope};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Controls {
    pub(super) paused: BTreeSet<String>,
    pub(super) draining: BTreeSet<String>,
    pub(super) paused_tenants: BTreeSet<String>,
    pub(super) draining_tenants: BTreeSet<String>,
}

impl Machine {
    /// Applies a [`Command::Control`]; answers the queues it changed.
    pub(super) fn control(&mut self, scope: &QueueScope, action: QueueAction) -> Outcome {
        let names: Vec<String> = match scope {
            QueueScope::Tenant(t) => {
                let c = &mut self.controls;
                let did = match action {
                    QueueAction::Pause => c.paused_tenants.insert(t.clone()),
                    QueueAction::Drain => c.draining_tenants.insert(t.clone()),
                    QueueAction::Resume => {
                        c.paused_tenants.remove(t) | c.draining_tenants.remove(t)
                    }
                };
                if did {
                    self.put(CONTROLS_KEY.to_vec(), encode(&self.controls));
                }
                return Outcome::Controlled(if did { vec![t.clone()] } else { Vec::new() });
            }
            QueueScope::Queue(q) => vec![q.clone()],
            // Only queues every node knows the same way: ones holding job
            // records, or a state. An empty index entry may survive a purge
            // on one node and not a restart on another.
            QueueScope::All => self
                .queues
                .iter()
                .filter(|(_, qi)| qi.counts != QueueCounts::default())
                .map(|(name, _)| name)
                .chain(self.controls.paused.iter())
                .chain(self.controls.draining.iter())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let c = &mut self.controls;
        let mut changed = Vec::new();
        for q in names {
            let did = match action {
                QueueAction::Pause => c.paused.insert(q.clone()),
                QueueAction::Drain => c.draining.insert(q.clone()),
                QueueAction::Resume => c.paused.remove(&q) | c.draining.remove(&q),
            };
            if did {
                changed.push(q);
            }
        }
        if !changed.is_empty() {
            self.put(CONTROLS_KEY.to_vec(), encode(&self.controls));
        }
        Outcome::Controlled(changed)
    }

    /// Whether a batch of new jobs may join their queues: none draining,
    /// none past a depth limit, its priority's shed fraction or its
    /// queue's `shed_when`, the cluster under `limits.max_pending`. All or
    /// nothing, like the batch.
    pub(super) fn admit(&self, now: u64, jobs: &[NewJob]) -> Result<(), Refusal> {
        let pending: u64 = self.queues.values().map(|qi| qi.counts.pending()).sum();
        let mut added: HashMap<&str, u64> = HashMap::new();
        for (index, (pending, job)) in (pending..).zip(jobs).enumerate() {
            // An idempotent retry of a job that exists is answered with its
            // id by the enqueue, whatever the queue's state now.
            if !job.idempotency_key.is_empty()
                && self
                    .get(&idempotency_key(
                        &job.tenant,
                        &job.queue,
                        &job.idempotency_key,
                    ))
                    .ok()
                    .flatten()
                    .is_some()
            {
                continue;
            }
            if self.controls.draining.contains(&job.queue) {
                return Err(Refusal::Draining {
                    queue: job.queue.clone(),
                });
            }
            if self.controls.draining_tenants.contains(&job.tenant) {
                return Err(Refusal::TenantDraining {
                    tenant: job.tenant.clone(),
                });
            }
            self.admit_budget(job)?;
            self.admit_dependencies(index, jobs)?;
            let waiting = self
                .queues
                .get(&job.queue)
                .map_or(0, |qi| qi.counts.ready_total() + qi.counts.scheduled);
            let extra = added.entry(&job.queue).or_default();
            let admitted = crate::policies::Admitted {
                queue: &job.queue,
                job_type: &job.job_type,
                priority: job.priority,
            };
            self.policies
                .admit(admitted, waiting + *extra, pending, |when| {
                    self.queue_health(now, &job.queue, when)
                })
                .map_err(|s| Refusal::Shed {
                    queue: s.queue,
                    priority: s.priority,
                    depth: s.depth,
                    limit: s.limit,
                    what: s.what.to_string(),
                })?;
            *extra += 1;
        }
        Ok(())
    }
}
