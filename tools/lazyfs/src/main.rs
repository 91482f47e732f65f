//! lazyfs: a power-loss test filesystem in the spirit of LazyFS.
//!
//! Mounts a FUSE passthrough of `--backing` on `--mount` that keeps written
//! file data in memory until the file is fsynced, and on a "power cut"
//! throws the unsynced data away and fails every later request with EIO.
//! See README.md.

mod fs;

use std::ffi::{CString, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use crate::fs::{LazyFs, Options};

const USAGE: &str = "\
usage: lazyfs --backing DIR --mount DIR [options]

Mounts DIR (--mount) as a FUSE passthrough of the backing directory in which
file data written is kept in memory until fsync/fdatasync of that file.

options:
  --control FIFO      also accept commands on this FIFO (created if missing),
                      one per line: `cut` (power cut), `sync` (write back all
                      unsynced data, like sync(1))
  --keep-random SEED  on a cut, write back a random subset (seeded) of the
                      unsynced pages and truncations instead of none
  --sync-backing      also fdatasync the backing file on each fsync (and the
                      backing dir on fsyncdir); off by default
  --allow-other       let users other than the mounting one use the mount
  -h, --help          this text

signals:
  SIGUSR1             power cut: discard unsynced data, then EIO for all
  SIGUSR2             the disk fails: every later fsync/fdatasync returns EIO
                      and drops the data it was to sync (also `fail-fsync`
                      on the control FIFO)
  SIGTERM, SIGINT     unmount (lazily if busy), write back unsynced data
                      unless there was a cut, and exit 0

stdout: `lazyfs ready` once mounted; `lazyfs cut: ...` once a cut is done.";

struct Args {
    backing: PathBuf,
    mount: PathBuf,
    control: Option<PathBuf>,
    opts: Options,
    allow_other: bool,
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("lazyfs: {msg}");
    exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args_os().skip(1);
    let (mut backing, mut mount, mut control) = (None, None, None);
    let mut opts = Options::default();
    let mut allow_other = false;
    let value = |it: &mut dyn Iterator<Item = OsString>, flag: &str| -> OsString {
        it.next()
            .unwrap_or_else(|| die(format!("{flag} needs a value\n{USAGE}")))
    };
    while let Some(a) = it.next() {
        match a.to_str().unwrap_or("") {
            "--backing" => backing = Some(PathBuf::from(value(&mut it, "--backing"))),
            "--mount" => mount = Some(PathBuf::from(value(&mut it, "--mount"))),
            "--control" => control = Some(PathBuf::from(value(&mut it, "--control"))),
            "--keep-random" => {
                let v = value(&mut it, "--keep-random");
                let seed = v.to_str().and_then(|s| s.parse::<u64>().ok());
                opts.keep_random = Some(
                    seed.unwrap_or_else(|| die("--keep-random needs an unsigned integer seed")),
                );
            }
            "--sync-backing" => opts.sync_backing = true,
            "--allow-other" => allow_other = true,
            "-h" | "--help" => {
                say(USAGE);
                exit(0)
            }
            _ => die(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    let backing = backing.unwrap_or_else(|| die(format!("--backing is required\n{USAGE}")));
    let mount = mount.unwrap_or_else(|| die(format!("--mount is required\n{USAGE}")));
    Args {
        backing,
        mount,
        control,
        opts,
        allow_other,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn do_cut(fs: &LazyFs) {
    let s = fs.lock().cut();
    if s.already_cut {
        say("lazyfs cut: already cut");
    } else {
        say(&format!(
            "lazyfs cut: power is off; {} files had unsynced data: dropped {} pages ({} bytes) \
             and {} truncations, kept {} pages and {} truncations",
            s.files,
            s.pages_dropped,
            s.bytes_dropped,
            s.truncates_dropped,
            s.pages_kept,
            s.truncates_kept
        ));
    }
}

fn do_fail_fsync(fs: &LazyFs) {
    fs.lock().fail_fsync();
    say("lazyfs fail-fsync: every fsync fails with EIO from now on");
}

fn do_sync(fs: &LazyFs) {
    match fs.lock().sync_all() {
        Ok(n) => say(&format!("lazyfs sync: wrote back {n} files")),
        Err(e) => say(&format!("lazyfs sync: failed: {e}")),
    }
}

/// Read commands from the control FIFO forever.
fn control_loop(path: PathBuf, fs: LazyFs) {
    loop {
        // Blocks until a writer opens the FIFO; EOF when it closes.
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("lazyfs: control {}: {e}", path.display());
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            match line.trim() {
                "" => {}
                "cut" => do_cut(&fs),
                "sync" => do_sync(&fs),
                "fail-fsync" => do_fail_fsync(&fs),
                other => eprintln!("lazyfs: unknown control command {other:?}"),
            }
        }
    }
}

fn make_fifo(path: &Path) {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => die(format!(
            "--control {} exists and is not a FIFO",
            path.display()
        )),
        Err(_) => {
            let c = CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| die("bad path"));
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                die(format!(
                    "mkfifo {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
}

fn unmount(mount: &Path) {
    let Ok(c) = CString::new(mount.as_os_str().as_bytes()) else {
        return;
    };
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        // Busy (a process still has files open there): detach it.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn main() {
    let args = parse_args();
    // The kernel already applied the caller's umask to create/mkdir modes.
    unsafe { libc::umask(0) };
    // Every inode the kernel knows holds an O_PATH descriptor.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }

    let backing = std::fs::canonicalize(&args.backing)
        .unwrap_or_else(|e| die(format!("--backing {}: {e}", args.backing.display())));
    if !backing.is_dir() {
        die(format!(
            "--backing {} is not a directory",
            backing.display()
        ));
    }
    let mount = std::fs::canonicalize(&args.mount)
        .unwrap_or_else(|e| die(format!("--mount {}: {e}", args.mount.display())));
    if mount.starts_with(&backing) || backing.starts_with(&mount) {
        die("--backing and --mount must not contain each other");
    }
    if let Some(c) = &args.control {
        make_fifo(c);
    }

    let fs = LazyFs::new(&backing, args.opts.clone())
        .unwrap_or_else(|e| die(format!("open {}: {e}", backing.display())));

    // Block the signals we handle in every thread (threads inherit the
    // mask); the main thread takes them with sigtimedwait.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(format!("lazyfs:{}", backing.display())),
        MountOption::Subtype("lazyfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if args.allow_other {
        cfg.acl = SessionACL::All;
    }
    let session = fuser::Session::new(fs.clone(), &mount, &cfg)
        .unwrap_or_else(|e| die(format!("mount {}: {e}", mount.display())));
    let bg = session
        .spawn()
        .unwrap_or_else(|e| die(format!("spawn: {e}")));

    if let Some(c) = args.control.clone() {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("lazyfs-control".into())
            .spawn(move || control_loop(c, fs))
            .unwrap_or_else(|e| die(format!("spawn: {e}")));
    }

    say("lazyfs ready");

    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    loop {
        if bg.guard.is_finished() {
            // Unmounted from outside (fusermount3 -u / umount).
            break;
        }
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
        match sig {
            libc::SIGUSR1 => do_cut(&fs),
            libc::SIGUSR2 => do_fail_fsync(&fs),
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => {
                unmount(&mount);
                break;
            }
            _ => {}
        }
    }
    // Give the session thread a moment to see the unmount, then leave; exiting
    // closes /dev/fuse, which ends a lazily detached mount too.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !bg.guard.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A clean unmount writes back, like a real filesystem's; after a cut
    // there is nothing left to write (and the power is off anyway).
    let mut st = fs.lock();
    if st.is_dead() {
        say("lazyfs exit: after a cut, nothing written back");
    } else {
        match st.sync_all() {
            Ok(n) => say(&format!("lazyfs exit: clean unmount, wrote back {n} files")),
            Err(e) => {
                say(&format!("lazyfs exit: write-back failed: {e}"));
                exit(1);
            }
        }
    }
    exit(0);
}
