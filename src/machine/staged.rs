//! The staged write set: writes of the entries applied since the last
//! commit, read before the tree so later entries of a range see earlier
//! ones.

use super::*;

impl Machine {
    pub(super) fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, MachineError> {
        if let Some(v) = self.staged.get(k) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    pub(super) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.staged.insert(k, Some(v));
    }

    /// Stages a job's record; returns its length.
    pub(super) fn put_job(&mut self, job: &Job, payload: &Payload) -> usize {
        let record = encode(&(job, payload));
        let len = record.len();
        self.put(key(JOB, job.id).to_vec(), record);
        len
    }

    pub(super) fn delete(&mut self, k: Vec<u8>) {
        self.staged.insert(k, None);
    }

    /// The bytes of a payload the job's record names.
    pub(super) fn payload_bytes(
        &self,
        id: JobId,
        payload: Payload,
    ) -> Result<bytes::Bytes, MachineError> {
        payload.bytes(id, |k| {
            if let Some(v) = self.get(k)? {
                return Ok(Some(v.into()));
            }
            self.get(&key(SPILLED, id))?
                .map(|m| read_spilled(self.files.as_ref(), id, &m))
                .transpose()
        })
    }

    pub(super) fn load(&self, id: JobId) -> Result<Option<(Job, Payload)>, MachineError> {
        let k = key(JOB, id);
        match self.staged.get(&k[..]) {
            Some(Some(v)) => decode(&k, v).map(Some),
            Some(None) => Ok(None),
            None => match self.tree.get(k)? {
                Some(v) => decode(&k, &v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Loads a job the indexes say exists; its absence means the tree and the
    /// indexes disagree, which only damage on disk can cause.
    pub(super) fn must_load(&self, id: JobId) -> Result<(Job, Payload), MachineError> {
        self.load(id)?.ok_or_else(|| MachineError::Corrupt {
            key: describe_key(&key(JOB, id)),
            reason: "indexed job has no record".into(),
        })
    }
}
