//! The node's own disk and memory, watched. Free space on the data dir's
//! filesystem is judged against `storage.min_free_bytes`, the process's RSS
//! against `limits.memory_high_watermark`; crossing either raises an alarm
//! (with hysteresis, so it does not flap) that this node reports to its
//! leader in its raft traffic. While an alarm stands the leader refuses new
//! work (enqueues, schedule fires) and lets everything that drains the
//! cluster through: completions, failures, cancels, purges, reads.
//!
//! Why the leader, and why soft state: refusing is admission control, not a
//! change of state, so it stays out of the log and the machine (as a full
//! disk must not need a write to be noticed). Every voter holds the same
//! state, so one voter out of memory means all of them soon: memory refuses
//! on any voter. A voter short of disk is a local matter until it is most
//! of them: disk refuses when the leader is short, or a majority is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proto::v1 as pb;

/// How often the node reads its free space and RSS: a statvfs and a read
/// of /proc, tens of microseconds. Often, because a burst of large jobs
/// writes tens of MB a second, and each sample's delay is disk written
/// past the mark.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A peer's reading older than this is not judged: a node that went
/// silent cannot grow, and a leader must not refuse forever on its word.
const PEER_READING_TTL: Duration = Duration::from_secs(10);
/// An alarm clears only this far back inside its mark (a tenth of the
/// distance), so it does not flap around it.
const CLEAR_DIVISOR: u64 = 10;
/// Opening the database rewrites sled's snapshot file and may zero a log
/// segment or two; a start with less free space than that plus the
/// snapshot's size would fail part way, so it does not begin.
pub const OPEN_HEADROOM: u64 = 8 << 20;

/// Why a node refuses new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alarm {
    /// Free space on the data dir's filesystem is under `storage.min_free_bytes`.
    DiskFull,
    /// The node's RSS is over `limits.memory_high_watermark`.
    MemoryHigh,
}

impl Alarm {
    /// The refusal's stable code (the admin API's error `code`).
    pub fn code(self) -> &'static str {
        match self {
            Alarm::DiskFull => "disk_full",
            Alarm::MemoryHigh => "memory_high",
        }
    }

    /// The alarm a refusal's `code` names; None for any other code.
    pub fn from_code(code: &str) -> Option<Alarm> {
        [Alarm::DiskFull, Alarm::MemoryHigh]
            .into_iter()
            .find(|a| a.code() == code)
    }
}

/// One node's disk and memory, as it last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// Free bytes on the data dir's filesystem; `u64::MAX` if it could not be
    /// read.
    pub free_bytes: u64,
    /// `storage.min_free_bytes` as this node resolved it (0: not judged).
    pub min_free_bytes: u64,
    /// The process's resident memory in bytes; 0 if it could not be read.
    pub rss_bytes: u64,
    /// `limits.memory_high_watermark` in bytes (0: not judged).
    pub watermark_bytes: u64,
    /// The disk alarm stands.
    pub disk_full: bool,
    /// The memory alarm stands.
    pub memory_high: bool,
}

impl Reading {
    /// The alarms that stand, disk first.
    pub fn alarms(&self) -> Vec<Alarm> {
        let mut out = Vec::new();
        if self.disk_full {
            out.push(Alarm::DiskFull);
        }
        if self.memory_high {
            out.push(Alarm::MemoryHigh);
        }
        out
    }

    fn any(&self) -> bool {
        self.disk_full || self.memory_high
    }

    /// The next reading, from fresh figures: each alarm rises at its mark
    /// and falls a tenth of the way back inside it.
    pub fn next(&self, free_bytes: u64, rss_bytes: u64) -> Reading {
        let disk_full = self.min_free_bytes > 0 && {
            let clear_at = self.min_free_bytes + self.min_free_bytes / CLEAR_DIVISOR;
            free_bytes
                < if self.disk_full {
                    clear_at
                } else {
                    self.min_free_bytes
                }
        };
        let memory_high = self.watermark_bytes > 0 && {
            let clear_at = self.watermark_bytes - self.watermark_bytes / CLEAR_DIVISOR;
            rss_bytes
                >= if self.memory_high {
                    clear_at
                } else {
                    self.watermark_bytes
                }
        };
        Reading {
            free_bytes,
            rss_bytes,
            disk_full,
            memory_high,
            ..*self
        }
    }
}

impl From<&Reading> for pb::NodeResources {
    fn from(r: &Reading) -> pb::NodeResources {
        pb::NodeResources {
            free_bytes: r.free_bytes,
            min_free_bytes: r.min_free_bytes,
            rss_bytes: r.rss_bytes,
            watermark_bytes: r.watermark_bytes,
            disk_full: r.disk_full,
            memory_high: r.memory_high,
        }
    }
}

impl From<&pb::NodeResources> for Reading {
    fn from(r: &pb::NodeResources) -> Reading {
        Reading {
            free_bytes: r.free_bytes,
            min_free_bytes: r.min_free_bytes,
            rss_bytes: r.rss_bytes,
            watermark_bytes: r.watermark_bytes,
            disk_full: r.disk_full,
            memory_high: r.memory_high,
        }
    }
}

/// Why the leader refuses new work: the alarm, and the nodes that raised it
/// with their readings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", describe(*.alarm, .nodes))]
pub struct Refusal {
    /// The alarm that refuses.
    pub alarm: Alarm,
    /// The voters that raised it, by id, with their readings.
    pub nodes: Vec<(u64, Reading)>,
}

fn describe(alarm: Alarm, nodes: &[(u64, Reading)]) -> String {
    let who: Vec<String> = nodes
        .iter()
        .map(|(id, r)| match alarm {
            Alarm::DiskFull => format!(
                "node {id} has {} free on its data dir's filesystem, under storage.min_free_bytes ({})",
                size(r.free_bytes),
                size(r.min_free_bytes)
            ),
            Alarm::MemoryHigh => format!(
                "node {id} uses {} of memory, over limits.memory_high_watermark ({})",
                size(r.rss_bytes),
                size(r.watermark_bytes)
            ),
        })
        .collect();
    let fix = match alarm {
        Alarm::DiskFull => "free space on that disk or grow it (docs/operations.md, \"A disk fills\")",
        Alarm::MemoryHigh => "let workers drain the backlog, or give the nodes more memory (docs/operations.md, \"Memory runs high\")",
    };
    format!(
        "{} ({}): new jobs are refused until it clears by itself; completions, cancels and reads go on. Retry later, or {fix}",
        who.join("; "),
        alarm.code()
    )
}

fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// Whether the leader `me` refuses new work, given each member's reading
/// and the voters: memory on any voter; disk on the leader, or on a
/// majority of voters.
pub fn judge(me: u64, readings: &BTreeMap<u64, Reading>, voters: &[u64]) -> Option<Refusal> {
    let raised = |alarm: Alarm| -> Vec<(u64, Reading)> {
        voters
            .iter()
            .filter_map(|id| readings.get(id).map(|r| (*id, *r)))
            .filter(|(_, r)| r.alarms().contains(&alarm))
            .collect()
    };
    let memory = raised(Alarm::MemoryHigh);
    if !memory.is_empty() {
        return Some(Refusal {
            alarm: Alarm::MemoryHigh,
            nodes: memory,
        });
    }
    let disk = raised(Alarm::DiskFull);
    let leader_short = disk.iter().any(|(id, _)| *id == me);
    if leader_short || disk.len() > voters.len() / 2 {
        return Some(Refusal {
            alarm: Alarm::DiskFull,
            nodes: disk,
        });
    }
    None
}

/// This node's readings and the ones its peers reported: shared by the
/// sampler (writes its own), the peer service (writes the peers'), the
/// raft transport (sends its own) and the driver (judges).
pub struct Pressure {
    node_id: u64,
    data_dir: PathBuf,
    local: Mutex<Reading>,
    /// Bumped at every local sample, so the transport sends a reading once.
    version: AtomicU64,
    peers: RwLock<BTreeMap<u64, (Reading, Instant)>>,
    /// Some node (this one or a peer) has an alarm up: the fast path of
    /// [`Pressure::refusal`] is one load of this.
    any: AtomicBool,
}

impl Pressure {
    /// `min_free_bytes` and `watermark_bytes` as resolved from the config
    /// (0 turns a check off).
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        min_free_bytes: u64,
        watermark_bytes: u64,
    ) -> Arc<Pressure> {
        Arc::new(Pressure {
            node_id,
            data_dir,
            local: Mutex::new(Reading {
                min_free_bytes,
                watermark_bytes,
                ..Default::default()
            }),
            version: AtomicU64::new(0),
            peers: RwLock::default(),
            any: AtomicBool::new(false),
        })
    }

    /// Whether some node's alarm may be standing (cheap: one load).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// This node's reading as last sampled.
    pub fn local(&self) -> Reading {
        *self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local reading and its version (see [`Pressure::sample`]).
    pub fn local_versioned(&self) -> (u64, Reading) {
        (self.version.load(Ordering::Acquire), self.local())
    }

    /// Reads free space and RSS now and updates this node's alarms; logs
    /// and counts a change. Returns the new reading.
    pub fn sample(&self) -> Reading {
        let free = free_space(&self.data_dir).unwrap_or(u64::MAX);
        let rss = rss_bytes().unwrap_or(0);
        let (before, after) = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let before = *local;
            *local = before.next(free, rss);
            (before, *local)
        };
        self.version.fetch_add(1, Ordering::AcqRel);
        log_changes(self.node_id, &before, &after);
        self.refresh_any();
        after
    }

    /// What peer `id` reported.
    pub fn note_peer(&self, id: u64, reading: Reading) {
        let before = {
            let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
            peers.insert(id, (reading, Instant::now())).map(|(r, _)| r)
        };
        if before.map(|r| r.alarms()) != Some(reading.alarms()) {
            for alarm in reading.alarms() {
                tracing::warn!(event = "peer_alarm", peer = id, alarm = alarm.code(), "a peer reports an alarm: new work is refused while it stands (see drover cluster members)");
            }
            if !reading.any() && before.is_some_and(|r| r.any()) {
                tracing::info!(
                    event = "peer_alarm_cleared",
                    peer = id,
                    "a peer's alarm cleared"
                );
            }
        }
        self.refresh_any();
    }

    /// Every member's reading this node knows: its own, and its peers'
    /// fresh ones.
    pub fn readings(&self) -> BTreeMap<u64, Reading> {
        let now = Instant::now();
        let mut out: BTreeMap<u64, Reading> = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) < PEER_READING_TTL)
            .map(|(id, (r, _))| (*id, *r))
            .collect();
        out.insert(self.node_id, self.local());
        out
    }

    /// The alarms standing on member `id`, as this node knows them.
    pub fn alarms_of(&self, id: u64) -> Vec<Alarm> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.readings()
            .get(&id)
            .map(Reading::alarms)
            .unwrap_or_default()
    }

    /// Why a leader with these voters refuses new work now, if it does.
    pub fn refusal(&self, voters: &[u64]) -> Option<Refusal> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let found = judge(self.node_id, &self.readings(), voters);
        if found.is_none() {
            // Stale peer alarms age out here.
            self.refresh_any();
        }
        found
    }

    fn refresh_any(&self) {
        let any = self.readings().values().any(Reading::any);
        self.any.store(any, Ordering::Release);
    }
}

fn log_changes(node: u64, before: &Reading, after: &Reading) {
    if after.disk_full && !before.disk_full {
        tracing::warn!(event = "disk_full", node, free_bytes = after.free_bytes, min_free_bytes = after.min_free_bytes, "free space is under storage.min_free_bytes: the cluster refuses new jobs until it returns; completions and purges go on");
    } else if before.disk_full && !after.disk_full {
        tracing::info!(
            event = "disk_full_cleared",
            node,
            free_bytes = after.free_bytes,
            "free space is back over storage.min_free_bytes"
        );
    }
    if after.memory_high && !before.memory_high {
        tracing::warn!(event = "memory_high", node, rss_bytes = after.rss_bytes, watermark_bytes = after.watermark_bytes, "memory use is over limits.memory_high_watermark: the cluster refuses new jobs until workers drain it");
    } else if before.memory_high && !after.memory_high {
        tracing::info!(
            event = "memory_high_cleared",
            node,
            rss_bytes = after.rss_bytes,
            "memory use is back under limits.memory_high_watermark"
        );
    }
}

/// Samples this node's disk and memory every [`SAMPLE_EVERY`] until
/// `stopping`.
pub async fn watch(pressure: Arc<Pressure>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        // A statvfs and a read of /proc/self/statm: microseconds, cheaper
        // than handing them to the blocking pool.
        pressure.sample();
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`,
/// and the filesystem's size; None if it cannot be read.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct it is given and reads a
    // NUL-terminated path; both outlive the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    Some((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    space(dir).map(|(free, _)| free)
}

/// The process's resident set, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    rss_at("/proc/self/statm")
}

/// The resident set of process `pid` (a node the bench or a test started).
pub fn rss_of(pid: u32) -> Option<u64> {
    rss_at(&format!("/proc/{pid}/statm"))
}

fn rss_at(statm: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(statm).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// The memory this process may use: its cgroup's limit when it has one
/// (v2 `memory.max`, or v1 `memory.limit_in_bytes`, the tightest on its
/// path), else the machine's physical memory.
pub fn memory_limit() -> Option<u64> {
    // sysconf, not /proc/meminfo: our unit's ProcSubset=pid hides the latter.
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = u64::try_from(pages)
        .ok()
        .zip(u64::try_from(page).ok())
        .map(|(n, p)| n.saturating_mul(p))
        .filter(|b| *b > 0);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_limit(&c, Path::new("/sys/fs/cgroup")));
    match (physical, cgroup) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (p, c) => p.or(c),
    }
}

/// The tightest memory limit on this process's cgroup path, from the
/// contents of `/proc/self/cgroup` and the cgroup mount `root`.
fn cgroup_limit(proc_cgroup: &str, root: &Path) -> Option<u64> {
    let read = |path: PathBuf| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        // "max" (v2) and the v1 "no limit" value (near u64::MAX) read as none.
        text.trim().parse::<u64>().ok().filter(|v| *v < (1 << 62))
    };
    let mut tightest: Option<u64> = None;
    let mut consider = |dir: PathBuf, file: &str| {
        // A container sees its own cgroup as the mount's root, so the
        // path from /proc may not exist below it: walk up from it.
        let mut d = Some(dir.as_path());
        while let Some(here) = d {
            if !here.starts_with(root) {
                break;
            }
            if let Some(v) = read(here.join(file)) {
                tightest = Some(tightest.map_or(v, |t| t.min(v)));
            }
            d = here.parent();
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            consider(root.join(rel), "memory.max");
        } else if controllers.split(',').any(|c| c == "memory") {
            consider(root.join("memory").join(rel), "memory.limit_in_bytes");
        }
    }
    tightest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(min_free: u64, watermark: u64) -> Reading {
        Reading {
            min_free_bytes: min_free,
            watermark_bytes: watermark,
            ..Default::default()
        }
    }

    #[test]
    fn alarms_rise_at_the_mark_and_clear_a_tenth_inside_it() {
        let r = reading(1000, 10_000);
        let r = r.next(1001, 9_999);
        assert!(!r.disk_full && !r.memory_high);
        let r = r.next(999, 10_000);
        assert!(r.disk_full && r.memory_high);
        // Just back over the mark: still up.
        let r = r.next(1050, 9_500);
        assert!(r.disk_full && r.memory_high);
        let r = r.next(1100, 8_999);
        assert!(!r.disk_full && !r.memory_high);
        // Off: never raised.
        let off = reading(0, 0).next(0, u64::MAX);
        assert!(!off.disk_full && !off.memory_high);
    }

    fn with(alarms: &[(u64, bool, bool)]) -> BTreeMap<u64, Reading> {
        alarms
            .iter()
            .map(|(id, disk, mem)| {
                (
                    *id,
                    Reading {
                        disk_full: *disk,
                        memory_high: *mem,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn memory_refuses_on_any_voter_disk_on_the_leader_or_a_majority() {
        let voters = [1, 2, 3];
        assert_eq!(judge(1, &with(&[(1, false, false)]), &voters), None);
        let r = judge(1, &with(&[(3, false, true)]), &voters).unwrap();
        assert_eq!((r.alarm, r.nodes[0].0), (Alarm::MemoryHigh, 3));
        // One follower short of disk: the others go on.
        assert_eq!(judge(1, &with(&[(3, true, false)]), &voters), None);
        let r = judge(1, &with(&[(1, true, false)]), &voters).unwrap();
        assert_eq!(r.alarm, Alarm::DiskFull);
        let r = judge(1, &with(&[(2, true, false), (3, true, false)]), &voters).unwrap();
        assert_eq!(r.nodes.len(), 2);
        // A node that is no longer a voter is not judged.
        assert_eq!(judge(1, &with(&[(4, true, true)]), &voters), None);
        let msg = judge(1, &with(&[(3, false, true)]), &voters)
            .unwrap()
            .to_string();
        assert!(
            msg.contains("node 3") && msg.contains("memory_high"),
            "{msg}"
        );
    }

    #[test]
    fn a_peer_reading_counts_until_it_is_stale() {
        let p = Pressure::new(1, PathBuf::from("/"), 0, 0);
        assert_eq!(p.refusal(&[1, 2, 3]), None);
        p.note_peer(
            2,
            Reading {
                memory_high: true,
                ..Default::default()
            },
        );
        assert_eq!(p.alarms_of(2), vec![Alarm::MemoryHigh]);
        assert!(p.refusal(&[1, 2, 3]).is_some());
        assert_eq!(p.refusal(&[1, 3]), None, "not a voter");
        p.note_peer(2, Reading::default());
        assert_eq!(p.refusal(&[1, 2, 3]), None);
    }

    #[test]
    fn cgroup_limits_are_read_from_v1_and_v2_paths() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("a/b");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.path().join("a/memory.max"), "1073741824\n").unwrap();
        assert_eq!(cgroup_limit("0::/a/b\n", root.path()), Some(1 << 30));
        let v1 = root.path().join("memory/x");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit("4:memory:/x\n", root.path()), None);
        std::fs::write(v1.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(
            cgroup_limit("4:cpu,memory:/x\n0::/a/b\n", root.path()),
            Some(1 << 29)
        );
        assert!(memory_limit().is_some_and(|m| m > 0));
        assert!(rss_bytes().is_some_and(|r| r > 0));
    }
}
