#!/usr/bin/env python3
"""lazyfs self-test driver; run it through selftest.sh (which builds the
binary, bounds the time and cleans up mounts even if this is killed).

usage: selftest.py LAZYFS_BINARY WORKDIR
"""
import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time

BIN, WORK = sys.argv[1], sys.argv[2]
BACK = os.path.join(WORK, "backing")
MNT = os.path.join(WORK, "mnt")
CTL = os.path.join(WORK, "control.fifo")
PAGE = 4096

failures = []
passed = 0


def check(cond, what):
    global passed
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if cond:
        passed += 1
    else:
        failures.append(what)


def mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


class LazyFs:
    def __init__(self, *extra):
        self.lines = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen(
            [BIN, "--backing", BACK, "--mount", MNT, *extra],
            stdout=subprocess.PIPE, text=True)
        with open(os.path.join(WORK, "pids"), "a") as f:
            f.write(f"{self.proc.pid}\n")
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_line("lazyfs ready", 20)

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_line(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"lazyfs never printed {prefix!r}; got {self.lines}")
                self.cv.wait(min(left, 0.2))

    def cut_fifo(self):
        deadline = time.monotonic() + 10
        while True:  # ENXIO until the control thread has the FIFO open
            try:
                fd = os.open(CTL, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        os.write(fd, b"cut\n")
        os.close(fd)
        return self.wait_line("lazyfs cut", 10)

    def cut_signal(self):
        self.proc.send_signal(signal.SIGUSR1)
        return self.wait_line("lazyfs cut", 10)

    def unmount(self):
        """Unmount from outside, as the drover test will, then expect exit."""
        for cmd in (["fusermount3", "-u", MNT], ["umount", MNT], ["umount", "-l", MNT]):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            except FileNotFoundError:
                continue
            if r.returncode == 0:
                print(f"     unmounted with: {' '.join(cmd)}", flush=True)
                break
            print(f"     {' '.join(cmd)} failed: {r.stderr.strip()}", flush=True)
        return self.proc.wait(timeout=10)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def rbytes(seed, n):
    return random.Random(seed).randbytes(n)


def write_file(path, data, sync, flags=0):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def m(*p):
    return os.path.join(MNT, *p)


def b(*p):
    return os.path.join(BACK, *p)


def phase1():
    print("== phase 1: buffered data, read-your-writes, cut via --control FIFO", flush=True)
    fs = LazyFs("--control", CTL)
    A1, A2 = rbytes(1, 10000), rbytes(2, 5000)
    B = rbytes(3, 20000)
    C = rbytes(4, 10000)
    D = rbytes(5, 8192)
    E, F, G = rbytes(6, 3000), rbytes(7, 7000), rbytes(8, 5000)

    # A: synced, then more written without fsync (fd stays open across the cut).
    fa = os.open(m("A"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fa, A1)
    os.fsync(fa)
    os.write(fa, A2)
    # B: never synced.
    write_file(m("B"), B, sync=False)
    # C: synced, then truncated without fsync.
    write_file(m("C"), C, sync=True)
    os.truncate(m("C"), 100)
    # D: synced, then overwritten in the middle without fsync.
    write_file(m("D"), D, sync=True)
    fd = os.open(m("D"), os.O_WRONLY)
    os.pwrite(fd, b"x" * 100, 100)
    os.close(fd)
    # E: the snapshot pattern: write tmp, fsync, rename, fsync dir.
    write_file(m("E.tmp"), E, sync=True)
    os.rename(m("E.tmp"), m("E"))
    dfd = os.open(MNT, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    # F: in a subdirectory, made durable with fdatasync.
    os.mkdir(m("sub"))
    fd = os.open(m("sub", "F"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, F)
    os.fdatasync(fd)
    os.close(fd)
    # G: O_DSYNC writes are durable without fsync.
    write_file(m("G"), G, sync=False, flags=os.O_DSYNC)
    # H: synced then unlinked (metadata goes straight through).
    write_file(m("H"), b"h" * 100, sync=True)
    os.unlink(m("H"))
    # I: a hole: 10 bytes at 100000, unsynced.
    fd = os.open(m("I"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"0123456789", 100000)
    os.close(fd)

    # Read-your-writes through the mount.
    check(read_file(m("A")) == A1 + A2, "A reads synced + unsynced data")
    check(os.stat(m("A")).st_size == 15000, "A getattr size includes unsynced writes")
    check(read_file(m("B")) == B, "B reads unsynced data")
    check(read_file(m("C")) == C[:100], "C reads as truncated")
    check(read_file(m("D")) == D[:100] + b"x" * 100 + D[200:], "D reads the overwrite")
    check(read_file(m("E")) == E, "E reads after rename")
    check(read_file(m("sub", "F")) == F, "sub/F reads")
    check(read_file(m("I")) == bytes(100000) + b"0123456789", "I reads a hole as zeros")
    check(sorted(os.listdir(MNT)) == ["A", "B", "C", "D", "E", "G", "I", "sub"], "readdir")
    # ...while the backing dir has only what was synced.
    check(os.stat(b("A")).st_size == 10000, "backing A has only synced size before the cut")
    check(os.stat(b("B")).st_size == 0, "backing B is empty before the cut")
    check(read_file(b("G")) == G, "backing G has O_DSYNC data")

    # Randomised check of the page logic against a model, and of write-back.
    rng = random.Random(42)
    model = bytearray()
    synced = bytes()
    fd = os.open(m("R"), os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(3000):
        op = rng.random()
        if op < 0.5:
            off = rng.randrange(0, 150000)
            data = rng.randbytes(rng.randrange(1, 12000))
            os.pwrite(fd, data, off)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + len(data)] = data
        elif op < 0.6:
            size = rng.randrange(0, 160000)
            os.ftruncate(fd, size)
            if size < len(model):
                del model[size:]
            else:
                model.extend(bytes(size - len(model)))
        elif op < 0.95:
            off = rng.randrange(0, 170000)
            n = rng.randrange(0, 20000)
            got = os.pread(fd, n, off)
            if got != bytes(model[off:off + n]):
                check(False, f"R op {i}: pread({n}, {off}) differs from the model")
                break
        else:
            os.fsync(fd)
            synced = bytes(model)
            if read_file(b("R")) != synced:
                check(False, f"R op {i}: backing differs from the model after fsync")
                break
    else:
        check(os.fstat(fd).st_size == len(model), "R size matches the model")
        check(read_file(m("R")) == bytes(model), "R 3000 random pwrite/ftruncate/pread match a model")
    os.close(fd)

    line = fs.cut_fifo()
    print("     " + line, flush=True)

    # The machine is off: everything fails with EIO.
    def eio(fn, what):
        try:
            fn()
            check(False, f"{what} fails with EIO after the cut (it succeeded)")
        except OSError as e:
            check(e.errno == errno.EIO, f"{what} fails with EIO after the cut (got {e})")

    eio(lambda: os.write(fa, b"late"), "write on an open fd")
    eio(lambda: os.fsync(fa), "fsync")
    eio(lambda: os.open(m("new"), os.O_WRONLY | os.O_CREAT), "create")
    eio(lambda: os.listdir(MNT), "readdir")
    try:
        os.close(fa)
    except OSError:
        pass

    rc = fs.unmount()
    check(rc == 0, f"lazyfs exits 0 after an external unmount (rc={rc})")
    check(not mounted(MNT), "mount is gone")

    # What survived the power cut.
    check(read_file(b("A")) == A1, "after cut: A has exactly the synced data")
    check(os.path.exists(b("B")) and os.stat(b("B")).st_size == 0,
          "after cut: B exists (metadata is not buffered) but its unsynced data is absent")
    check(read_file(b("C")) == C, "after cut: C's unsynced truncate is undone")
    check(read_file(b("D")) == D, "after cut: D's unsynced overwrite is absent")
    check(read_file(b("E")) == E and not os.path.exists(b("E.tmp")), "after cut: renamed E is there")
    check(read_file(b("sub", "F")) == F, "after cut: fdatasynced sub/F is there")
    check(read_file(b("G")) == G, "after cut: O_DSYNC G is there")
    check(not os.path.exists(b("H")), "after cut: unlinked H is gone")
    check(os.stat(b("I")).st_size == 0, "after cut: I's unsynced hole write is absent")
    check(read_file(b("R")) == synced, f"after cut: R equals the model at its last fsync ({len(synced)} bytes)")


def phase2():
    print("== phase 2: remount, --keep-random, cut via SIGUSR1, SIGTERM exit", flush=True)
    fs = LazyFs("--keep-random", "7")
    A1 = rbytes(1, 10000)
    check(read_file(m("A")) == A1, "remount sees the surviving data")
    npages = 64
    pages = [bytes([i + 1]) * PAGE for i in range(npages)]
    fd = os.open(m("K"), os.O_WRONLY | os.O_CREAT, 0o644)
    for i, p in enumerate(pages):
        os.pwrite(fd, p, i * PAGE)
    os.close(fd)
    os.truncate(m("A"), 0)
    line = fs.cut_signal()
    print("     " + line, flush=True)
    try:
        os.stat(m("K"))
        check(False, "stat fails after SIGUSR1 cut")
    except OSError as e:
        check(e.errno == errno.EIO, f"stat fails with EIO after SIGUSR1 cut ({e})")
    rc = fs.stop()
    check(rc == 0, f"lazyfs exits 0 on SIGTERM (rc={rc})")
    check(not mounted(MNT), "SIGTERM unmounted it")
    k = read_file(b("K"))
    chunks = [k[i:i + PAGE] for i in range(0, len(k), PAGE)]
    kept = sum(1 for i, c in enumerate(chunks) if c == pages[i])
    check(all(c == pages[i] or c == bytes(len(c)) for i, c in enumerate(chunks)),
          "K: every page is either fully written back or absent (zeros)")
    check(0 < kept < npages, f"K: a random subset of pages survived ({kept}/{npages})")
    a = read_file(b("A"))
    check(a in (A1, b""), f"A: the unsynced truncate is all-or-nothing ({len(a)} bytes)")


def phase3():
    print("== phase 3: rough speed (single-threaded python, 4 KiB pwrite + fdatasync)", flush=True)
    fs = LazyFs()
    res = {}
    for label, path in (("lazyfs", m("bench")), ("backing", b("bench.direct"))):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        buf = os.urandom(PAGE)
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 3 and n < 20000:
            os.pwrite(fd, buf, (n % 256) * PAGE)
            os.fdatasync(fd)
            n += 1
        res[label] = n / (time.monotonic() - t0)
        # Unsynced streaming writes: 64 MiB in 1 MiB writes.
        big = os.urandom(1 << 20)
        t0 = time.monotonic()
        for i in range(64):
            os.pwrite(fd, big, i << 20)
        res[label + "_mbs"] = 64 / (time.monotonic() - t0)
        os.fsync(fd)
        os.close(fd)
        os.unlink(path)
    print(f"     write+fdatasync/s: lazyfs {res['lazyfs']:.0f}, backing dir directly {res['backing']:.0f}")
    print(f"     1 MiB unsynced pwrite: lazyfs {res['lazyfs_mbs']:.0f} MiB/s, backing {res['backing_mbs']:.0f} MiB/s")
    # A clean unmount (no cut) writes unsynced data back, like a real fs.
    write_file(m("W"), b"w" * 10000, sync=False)
    check(os.stat(b("W")).st_size == 0, "W is not in the backing dir before unmount")
    rc = fs.stop()
    check(rc == 0, "lazyfs exits 0 on SIGTERM")
    check(read_file(b("W")) == b"w" * 10000, "clean unmount without a cut wrote W back")


def main():
    os.makedirs(BACK)
    os.makedirs(MNT)
    phase1()
    phase2()
    phase3()
    print()
    print(f"{passed} passed, {len(failures)} failed")
    if failures:
        print(f"lazyfs selftest FAILED: {failures}")
        sys.exit(1)
    print("lazyfs selftest passed")


if __name__ == "__main__":
    main()
