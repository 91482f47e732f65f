//! The filesystem: a passthrough over a backing directory that keeps file
//! data in memory until the file is fsynced, plus the power cut.
//!
//! Model
//! -----
//! Every inode the kernel knows is held as an `O_PATH` descriptor of the
//! backing file (like libfuse's `passthrough_ll`), so renames, hard links and
//! unlinked-but-open files need no path bookkeeping. Metadata operations
//! (create, mkdir, rename, unlink, link, symlink, chmod, chown, utimes) go
//! straight to the backing directory. File *data* does not: `write`,
//! `truncate`/`setattr(size)`, `fallocate` and `O_TRUNC` change an in-memory
//! "page cache" of the inode (`Dirty`), made of whole 4 KiB pages plus the
//! logical size and the lowest size the file was truncated to since its last
//! sync (`floor`). Reads and getattr see that state over the backing file.
//! Only `fsync`/`fdatasync` on the file (FUSE `FSYNC`) writes it back; close
//! (FUSE `FLUSH`/`RELEASE`) does not.
//!
//! The power cut discards every inode's dirty state (or, with a seed, writes
//! back a random subset of the dirty pages and pending truncations first, to
//! model partial writeback), then answers `EIO` to every later request.

use std::collections::btree_map::BTreeMap;
use std::collections::hash_map::{Entry, HashMap};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// Granularity of buffered data, like the kernel page cache.
pub const PAGE: u64 = 4096;

/// How long the kernel may cache attributes and directory entries. Every
/// change goes through this process, so caching is safe; kept short so that
/// after a cut the kernel asks again (and gets EIO) soon.
const TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// After a write-back on fsync, also fdatasync the backing file (and
    /// fsync the backing directory on fsyncdir). Off by default: the backing
    /// directory plays the disk, and the test reads it without a real crash.
    pub sync_backing: bool,
    /// Seed for `--keep-random`: on a cut, write back a random subset of the
    /// dirty pages instead of none.
    pub keep_random: Option<u64>,
}

/// Unsynced state of one regular file.
struct Dirty {
    /// Logical size the application sees.
    size: u64,
    /// Lowest size since the last sync: backing bytes at or past it are no
    /// longer part of the file (a truncate cut them off), so they read as
    /// zeros unless a dirty page covers them. Always `<= size`.
    floor: u64,
    /// Page index -> full page of logical content. Bytes past `size` are 0.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// mtime to report while dirty (backing mtime only moves on write-back).
    mtime: Option<SystemTime>,
}

struct Inode {
    /// `O_PATH` descriptor of the backing file or directory.
    fd: OwnedFd,
    /// The kernel's lookup count.
    nlookup: u64,
    /// Read-write descriptor used to load pages and write them back.
    rw: Option<File>,
    dirty: Option<Dirty>,
}

struct Handle {
    file: File,
    /// Opened with O_SYNC/O_DSYNC: every write is written back at once.
    sync: bool,
}

struct DirHandle {
    ino: u64,
    entries: Vec<(u64, FileType, OsString)>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CutStats {
    pub files: u64,
    pub pages_dropped: u64,
    pub bytes_dropped: u64,
    pub pages_kept: u64,
    pub truncates_dropped: u64,
    pub truncates_kept: u64,
    pub already_cut: bool,
}

pub struct State {
    /// The power is off: every request fails with EIO.
    dead: bool,
    /// The disk fails every fsync/fdatasync from now on, with EIO, and the
    /// data it was to make durable is dropped (as Linux marks the pages
    /// clean after a writeback error): what a dying disk does.
    fsync_fails: bool,
    opts: Options,
    root_dev: u64,
    root_bino: u64,
    inodes: HashMap<u64, Inode>,
    /// Inode numbers for files on another device than the backing root.
    foreign: HashMap<(u64, u64), u64>,
    next_foreign: u64,
    handles: HashMap<u64, Handle>,
    dirs: HashMap<u64, DirHandle>,
    next_fh: u64,
}

/// The FUSE filesystem; cheap to clone (shares the state with the control
/// thread that triggers the cut).
#[derive(Clone)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

// ---------------------------------------------------------------- helpers

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn errno(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code > 0 => Errno::from_i32(code),
        _ => Errno::EIO,
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| err(libc::EINVAL))
}

fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

const EMPTY: &CStr = c"";

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe {
        libc::fstatat(
            fd,
            EMPTY.as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn open_path_at(dirfd: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the file an `O_PATH` descriptor refers to, with real access.
fn reopen(fd: RawFd, flags: libc::c_int) -> io::Result<File> {
    let p = proc_path(fd);
    let fd = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind_of(mode: libc::mode_t) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn to_attr(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: systime(st.st_atime, st.st_atime_nsec),
        mtime: systime(st.st_mtime, st.st_mtime_nsec),
        ctime: systime(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// pread until `buf` is full or EOF; returns the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// splitmix64: a tiny deterministic PRNG for `--keep-random`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

// ------------------------------------------------------------ dirty data

impl Dirty {
    fn new(backing_size: u64) -> Dirty {
        Dirty {
            size: backing_size,
            floor: backing_size,
            pages: BTreeMap::new(),
            mtime: None,
        }
    }

    /// The page at `idx`, loaded from the backing file on first touch.
    fn page(&mut self, f: &File, idx: u64) -> io::Result<&mut Box<[u8]>> {
        let floor = self.floor;
        match self.pages.entry(idx) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(v) => {
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                let start = idx * PAGE;
                if start < floor {
                    let len = (floor - start).min(PAGE) as usize;
                    read_full_at(f, &mut page[..len], start)?;
                }
                Ok(v.insert(page))
            }
        }
    }

    fn write(&mut self, f: &File, off: u64, data: &[u8]) -> io::Result<()> {
        let end = off + data.len() as u64;
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE;
            let in_page = (pos - idx * PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - pos) as usize);
            let src = (pos - off) as usize;
            let page = self.page(f, idx)?;
            page[in_page..in_page + n].copy_from_slice(&data[src..src + n]);
            pos += n as u64;
        }
        self.size = self.size.max(end);
        self.mtime = Some(SystemTime::now());
        Ok(())
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE);
            self.pages.split_off(&first_gone);
            if size % PAGE != 0 {
                if let Some(p) = self.pages.get_mut(&(size / PAGE)) {
                    p[(size % PAGE) as usize..].fill(0);
                }
            }
            self.floor = self.floor.min(size);
        }
        self.size = size;
        self.mtime = Some(SystemTime::now());
    }

    /// Zero `[off, off+len)` within the current size (hole punch).
    fn zero(&mut self, f: &File, off: u64, len: u64) -> io::Result<()> {
        let end = (off + len).min(self.size);
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE;
            let in_page = (pos - idx * PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - pos) as usize);
            let page = self.page(f, idx)?;
            page[in_page..in_page + n].fill(0);
            pos += n as u64;
        }
        self.mtime = Some(SystemTime::now());
        Ok(())
    }

    /// Read `[off, off+len)` of the logical content; `f` is any readable
    /// descriptor of the backing file.
    fn read(&self, f: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
        if off >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = (off + len).min(self.size);
        let mut buf = vec![0u8; (end - off) as usize];
        let base_end = end.min(self.floor);
        if off < base_end {
            read_full_at(f, &mut buf[..(base_end - off) as usize], off)?;
        }
        for (&idx, page) in self.pages.range(off / PAGE..=(end - 1) / PAGE) {
            let ps = idx * PAGE;
            let s = ps.max(off);
            let e = (ps + PAGE).min(end);
            buf[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&page[(s - ps) as usize..(e - ps) as usize]);
        }
        Ok(buf)
    }

    /// Write everything back to `f`.
    fn write_back(&self, f: &File) -> io::Result<()> {
        let cur = f.metadata()?.len();
        if self.floor < cur {
            f.set_len(self.floor)?;
        }
        for (&idx, page) in &self.pages {
            let ps = idx * PAGE;
            if ps >= self.size {
                continue;
            }
            let n = (self.size - ps).min(PAGE) as usize;
            f.write_all_at(&page[..n], ps)?;
        }
        if f.metadata()?.len() != self.size {
            f.set_len(self.size)?;
        }
        Ok(())
    }
}

impl Inode {
    fn rw(&mut self) -> io::Result<&File> {
        if self.rw.is_none() {
            self.rw = Some(reopen(self.fd.as_raw_fd(), libc::O_RDWR)?);
        }
        Ok(self.rw.as_ref().unwrap())
    }

    /// The dirty state and the read-write descriptor, creating both.
    fn dirty(&mut self) -> io::Result<(&mut Dirty, &File)> {
        if self.rw.is_none() {
            self.rw = Some(reopen(self.fd.as_raw_fd(), libc::O_RDWR)?);
        }
        if self.dirty.is_none() {
            let st = fstat(self.fd.as_raw_fd())?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(err(libc::EINVAL));
            }
            self.dirty = Some(Dirty::new(st.st_size as u64));
        }
        Ok((self.dirty.as_mut().unwrap(), self.rw.as_ref().unwrap()))
    }

    fn flush(&mut self, sync_backing: bool) -> io::Result<()> {
        let Some(d) = self.dirty.take() else {
            return Ok(());
        };
        let res = (|| {
            let f = self.rw()?;
            d.write_back(f)?;
            if sync_backing {
                f.sync_data()?;
            }
            Ok(())
        })();
        if res.is_err() {
            // Keep the data so that a retry can write it back.
            self.dirty = Some(d);
        }
        res
    }
}

// ------------------------------------------------------------------ state

impl State {
    fn ino_for(&mut self, dev: u64, bino: u64) -> u64 {
        if dev == self.root_dev {
            // A bijection on backing inode numbers that puts the root at 1.
            if bino == self.root_bino {
                1
            } else if bino == 1 {
                self.root_bino
            } else {
                bino
            }
        } else {
            let next = &mut self.next_foreign;
            *self.foreign.entry((dev, bino)).or_insert_with(|| {
                *next += 1;
                *next
            })
        }
    }

    fn d_ino(&self, bino: u64) -> u64 {
        if bino == self.root_bino {
            1
        } else if bino == 1 {
            self.root_bino
        } else {
            bino
        }
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(eio())
        } else {
            Ok(())
        }
    }

    fn inode(&mut self, ino: INodeNo) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino.0).ok_or_else(|| err(libc::ESTALE))
    }

    fn fd(&mut self, ino: INodeNo) -> io::Result<RawFd> {
        Ok(self.inode(ino)?.fd.as_raw_fd())
    }

    fn attr(&mut self, ino: u64) -> io::Result<FileAttr> {
        let n = self.inodes.get(&ino).ok_or_else(|| err(libc::ESTALE))?;
        let st = fstat(n.fd.as_raw_fd())?;
        let mut a = to_attr(ino, &st);
        if let Some(d) = &n.dirty {
            a.size = d.size;
            a.blocks = a.blocks.max(d.size.div_ceil(512));
            if let Some(m) = d.mtime {
                a.mtime = a.mtime.max(m);
                a.ctime = a.ctime.max(m);
            }
        }
        Ok(a)
    }

    /// Record one kernel lookup of the backing file `fd` refers to.
    fn remember(&mut self, fd: OwnedFd) -> io::Result<u64> {
        let st = fstat(fd.as_raw_fd())?;
        let ino = self.ino_for(st.st_dev, st.st_ino);
        match self.inodes.entry(ino) {
            Entry::Occupied(e) => e.into_mut().nlookup += 1,
            Entry::Vacant(v) => {
                v.insert(Inode {
                    fd,
                    nlookup: 1,
                    rw: None,
                    dirty: None,
                });
            }
        }
        Ok(ino)
    }

    fn lookup(&mut self, parent: INodeNo, name: &OsStr) -> io::Result<FileAttr> {
        let pfd = self.fd(parent)?;
        let fd = open_path_at(pfd, &cstr(name)?)?;
        let ino = self.remember(fd)?;
        self.attr(ino)
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == 1 {
            return;
        }
        let Some(node) = self.inodes.get_mut(&ino) else {
            return;
        };
        node.nlookup = node.nlookup.saturating_sub(n);
        if node.nlookup > 0 {
            return;
        }
        // An inode with unsynced data stays (the page cache outlives the
        // dentry cache) unless its file is gone, since a later lookup must
        // see the data again.
        let gone = fstat(node.fd.as_raw_fd())
            .map(|st| st.st_nlink == 0)
            .unwrap_or(true);
        if node.dirty.is_none() || gone || self.dead {
            self.inodes.remove(&ino);
        }
    }

    fn chown_new(&self, dirfd: RawFd, name: &CStr, req: &Request) {
        // Files are created by this (root) process: give them to the caller.
        let (uid, gid) = (req.uid(), req.gid());
        if unsafe { libc::geteuid() } == 0 && (uid != 0 || gid != 0) {
            unsafe { libc::fchownat(dirfd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
        }
    }

    fn new_fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    /// Backing open flags for an application's open flags, and whether the
    /// handle is synchronous. Data never reaches the backing file through
    /// these descriptors, so O_APPEND/O_TRUNC/O_SYNC/O_DIRECT are dropped
    /// (and emulated) and write access always means read-write.
    fn backing_flags(flags: i32) -> (i32, bool, bool) {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let mut b = if write { libc::O_RDWR } else { libc::O_RDONLY };
        b |= flags & libc::O_NOATIME;
        let sync = write && flags & libc::O_DSYNC != 0;
        let trunc = write && flags & libc::O_TRUNC != 0;
        (b, sync, trunc)
    }

    /// From now on every fsync fails (see `fsync_fails`).
    pub fn fail_fsync(&mut self) {
        self.fsync_fails = true;
    }

    /// The power cut.
    pub fn cut(&mut self) -> CutStats {
        let mut stats = CutStats::default();
        if self.dead {
            stats.already_cut = true;
            return stats;
        }
        let mut rng = self.opts.keep_random.map(Rng);
        for node in self.inodes.values_mut() {
            let Some(d) = node.dirty.take() else { continue };
            stats.files += 1;
            // A truncation below the backing size is pending.
            let cur = fstat(node.fd.as_raw_fd())
                .map(|s| s.st_size as u64)
                .unwrap_or(0);
            let truncated = d.floor < cur;
            let Some(rng) = rng.as_mut() else {
                stats.pages_dropped += d.pages.len() as u64;
                stats.bytes_dropped += d.pages.len() as u64 * PAGE;
                stats.truncates_dropped += truncated as u64;
                continue;
            };
            // Partial writeback: any subset of pages (and the truncation)
            // may have reached the disk before the power went.
            let Ok(f) = node.rw() else { continue };
            if truncated {
                if rng.coin() && f.set_len(d.floor).is_ok() {
                    stats.truncates_kept += 1;
                } else {
                    stats.truncates_dropped += 1;
                }
            }
            for (&idx, page) in &d.pages {
                let ps = idx * PAGE;
                if ps < d.size && rng.coin() {
                    let n = (d.size - ps).min(PAGE) as usize;
                    if f.write_all_at(&page[..n], ps).is_ok() {
                        stats.pages_kept += 1;
                        continue;
                    }
                }
                stats.pages_dropped += 1;
                stats.bytes_dropped += PAGE;
            }
        }
        self.dead = true;
        // Drop inodes the kernel has forgotten (kept only for their data).
        self.inodes.retain(|&ino, n| ino == 1 || n.nlookup > 0);
        stats
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Write back every dirty file (`sync` command, clean unmount).
    pub fn sync_all(&mut self) -> io::Result<u64> {
        self.alive()?;
        let sync = self.opts.sync_backing;
        let mut files = 0;
        for node in self.inodes.values_mut() {
            if node.dirty.is_some() {
                node.flush(sync)?;
                files += 1;
            }
        }
        Ok(files)
    }
}

impl LazyFs {
    pub fn new(backing: &Path, opts: Options) -> io::Result<LazyFs> {
        let c = cstr(backing.as_os_str())?;
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd())?;
        let mut inodes = HashMap::new();
        inodes.insert(
            1,
            Inode {
                fd,
                nlookup: 1,
                rw: None,
                dirty: None,
            },
        );
        Ok(LazyFs {
            state: Arc::new(Mutex::new(State {
                dead: false,
                fsync_fails: false,
                opts,
                root_dev: st.st_dev,
                root_bino: st.st_ino,
                inodes,
                foreign: HashMap::new(),
                next_foreign: 1 << 56,
                handles: HashMap::new(),
                dirs: HashMap::new(),
                next_fh: 0,
            })),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ------------------------------------------------------------- FUSE ops

fn reply_entry(reply: ReplyEntry, r: io::Result<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn time_spec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                }
            }
        },
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.lock();
        let r = st.alive().and_then(|_| st.lookup(parent, name));
        reply_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut st = self.lock();
        match st.alive().and_then(|_| st.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let node = st.inode(ino)?;
            let fd = node.fd.as_raw_fd();
            if let Some(mode) = mode {
                let p = proc_path(fd);
                cvt(unsafe { libc::chmod(p.as_ptr(), (mode & 0o7777) as libc::mode_t) })?;
            }
            if uid.is_some() || gid.is_some() {
                let u = uid.unwrap_or(u32::MAX);
                let g = gid.unwrap_or(u32::MAX);
                cvt(unsafe {
                    libc::fchownat(
                        fd,
                        EMPTY.as_ptr(),
                        u,
                        g,
                        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            if let Some(size) = size {
                let s = fstat(fd)?;
                match s.st_mode & libc::S_IFMT {
                    libc::S_IFREG => {}
                    libc::S_IFDIR => return Err(err(libc::EISDIR)),
                    _ => return Err(err(libc::EINVAL)),
                }
                let (d, _) = node.dirty()?;
                d.truncate(size);
            }
            if atime.is_some() || mtime.is_some() {
                let times = [time_spec(atime), time_spec(mtime)];
                let p = proc_path(fd);
                cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
                if mtime.is_some() {
                    if let Some(d) = node.dirty.as_mut() {
                        d.mtime = None;
                    }
                }
            }
            st.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let fd = st.fd(ino)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
            let n =
                unsafe { libc::readlinkat(fd, EMPTY.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(name)?;
            cvt(unsafe {
                libc::mknodat(pfd, c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t)
            })?;
            st.chown_new(pfd, &c, req);
            st.lookup(parent, name)
        })();
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(name)?;
            cvt(unsafe { libc::mkdirat(pfd, c.as_ptr(), mode as libc::mode_t) })?;
            st.chown_new(pfd, &c, req);
            st.lookup(parent, name)
        })();
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(name)?;
            cvt(unsafe { libc::unlinkat(pfd, c.as_ptr(), 0) }).map(drop)
        })();
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(name)?;
            cvt(unsafe { libc::unlinkat(pfd, c.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
        })();
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(link_name)?;
            let t = cstr(target.as_os_str())?;
            cvt(unsafe { libc::symlinkat(t.as_ptr(), pfd, c.as_ptr()) })?;
            st.chown_new(pfd, &c, req);
            st.lookup(parent, link_name)
        })();
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let npfd = st.fd(newparent)?;
            let (a, b) = (cstr(name)?, cstr(newname)?);
            cvt(unsafe { libc::renameat2(pfd, a.as_ptr(), npfd, b.as_ptr(), flags.bits()) })
                .map(drop)
        })();
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let fd = st.fd(ino)?;
            let npfd = st.fd(newparent)?;
            let c = cstr(newname)?;
            let p = proc_path(fd);
            cvt(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    npfd,
                    c.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })?;
            st.lookup(newparent, newname)
        })();
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let (bflags, sync, trunc) = State::backing_flags(flags.0);
            let node = st.inode(ino)?;
            let file = reopen(node.fd.as_raw_fd(), bflags)?;
            if trunc {
                node.dirty()?.0.truncate(0);
            }
            let fh = st.new_fh();
            st.handles.insert(fh, Handle { file, sync });
            Ok(fh)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let pfd = st.fd(parent)?;
            let c = cstr(name)?;
            let (bflags, sync, trunc) = State::backing_flags(flags);
            let bflags = bflags
                | libc::O_CREAT
                | (flags & libc::O_EXCL)
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC;
            let fd = cvt(unsafe { libc::openat(pfd, c.as_ptr(), bflags, mode as libc::c_uint) })?;
            let file = unsafe { File::from_raw_fd(fd) };
            st.chown_new(pfd, &c, req);
            let ino = st.remember(open_path_at(pfd, &c)?)?;
            if trunc {
                st.inode(INodeNo(ino))?.dirty()?.0.truncate(0);
            }
            let fh = st.new_fh();
            st.handles.insert(fh, Handle { file, sync });
            Ok((st.attr(ino)?, fh))
        })();
        match r {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.lock();
        let r = (|| {
            st.alive()?;
            let h = st.handles.get(&fh.0).ok_or_else(|| err(libc::EBADF))?;
            let node = st.inodes.get(&ino.0).ok_or_else(|| err(libc::ESTALE))?;
            match &node.dirty {
                Some(d) => d.read(&h.file, offset, size as u64),
                None => {
                    let mut buf = vec![0u8; size as usize];
                    let n = read_full_at(&h.file, &mut buf, offset)?;
                    buf.truncate(n);
                    Ok(buf)
                }
            }
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let sync = st.handles.get(&fh.0).ok_or_else(|| err(libc::EBADF))?.sync;
            let sync_backing = st.opts.sync_backing;
            let node = st.inode(ino)?;
            let (d, f) = node.dirty()?;
            d.write(f, offset, data)?;
            if sync {
                node.flush(sync_backing)?;
            }
            Ok(data.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not make data durable.
        let st = self.lock();
        reply_empty(reply, st.alive());
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            if st.fsync_fails {
                st.inode(ino)?.dirty = None;
                return Err(eio());
            }
            let sync_backing = st.opts.sync_backing;
            st.inode(ino)?.flush(sync_backing)
        })();
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            st.inode(ino)?;
            let fh = st.new_fh();
            st.dirs.insert(
                fh,
                DirHandle {
                    ino: ino.0,
                    entries: Vec::new(),
                },
            );
            Ok(fh)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            if offset == 0 {
                let fd = st.fd(ino)?;
                let dir = std::fs::read_dir(format!("/proc/self/fd/{fd}"))?;
                let mut entries = vec![
                    (ino.0, FileType::Directory, OsString::from(".")),
                    (ino.0, FileType::Directory, OsString::from("..")),
                ];
                for e in dir {
                    let e = e?;
                    let kind = match e.file_type() {
                        Ok(t) => FileType::from_std(t).unwrap_or(FileType::RegularFile),
                        Err(_) => FileType::RegularFile,
                    };
                    entries.push((st.d_ino(e.ino()), kind, e.file_name()));
                }
                let h = st.dirs.get_mut(&fh.0).ok_or_else(|| err(libc::EBADF))?;
                h.entries = entries;
            }
            let h = st.dirs.get(&fh.0).ok_or_else(|| err(libc::EBADF))?;
            debug_assert_eq!(h.ino, ino.0);
            for (i, (eino, kind, name)) in h.entries.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*eino), (i + 1) as u64, *kind, name) {
                    break;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            // Directory entries already went to the backing directory.
            if st.opts.sync_backing {
                let fd = st.fd(ino)?;
                reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?.sync_all()?;
            }
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let fd = st.fd(ino).or_else(|_| st.fd(INodeNo(1)))?;
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            cvt(unsafe { libc::fstatvfs(fd, &mut s) })?;
            Ok(s)
        })();
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let fd = st.fd(ino)?;
            let p = proc_path(fd);
            cvt(unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), mask.bits(), 0) }).map(drop)
        })();
        reply_empty(reply, r);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            st.alive()?;
            let node = st.inode(ino)?;
            let (d, f) = node.dirty()?;
            let end = offset.checked_add(length).ok_or_else(|| err(libc::EFBIG))?;
            const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
            const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            match mode {
                // Reserve space (no space accounting here) and maybe grow.
                0 => {
                    if end > d.size {
                        d.truncate(end);
                    }
                }
                KEEP => {}
                PUNCH => d.zero(f, offset, length)?,
                m if m == libc::FALLOC_FL_ZERO_RANGE || m == libc::FALLOC_FL_ZERO_RANGE | KEEP => {
                    d.zero(f, offset, length)?;
                    if m & KEEP == 0 && end > d.size {
                        d.truncate(end);
                    }
                }
                _ => return Err(err(libc::EOPNOTSUPP)),
            }
            Ok(())
        })();
        reply_empty(reply, r);
    }
}
