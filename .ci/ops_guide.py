#!/usr/bin/env python3
"""Runs every ```sh block of docs/operations.md, in order, against a live
3-node cluster this script starts on loopback, so a renamed flag, a changed
output or a procedure that no longer works fails CI.

Each block runs in bash with errexit and pipefail (a `grep` that matches
nothing is not a failure: the guide's greps show what there is; `grep -q`
keeps its status). A comment
line right before a block's fence steers it:

    <!-- ops: setup=NAME -->   first bring the cluster to the state NAME
                               (a function below: dead jobs, a stuck
                               lease, an open breaker, ...)
    <!-- ops: node=N -->       run "on node N": CONFIG, DATA_DIR, NODE_ADDR
                               are that node's, and the `systemctl` and
                               `journalctl` on PATH act on it
    <!-- ops: each-node -->    run once on each of nodes 1, 2 and 3
    <!-- ops: skip=REASON -->  not run (printed with the reason)
    <!-- ops: expect="A|B" -->  its output must hold A and B (so a changed
                               output fails too, not only a failing command)

`systemctl start|stop|restart|reload|status drover` and
`drover-worker@QUEUE-N` are shims over this script's processes; `sudo -u
USER` and `chown` are shims too (everything runs as one user here).

Usage: .ci/ops_guide.py [path/to/drover]   (default target/debug/drover)
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "operations.md")
BLOCK_TIMEOUT = 240

SYSTEMCTL = r"""#!/usr/bin/env bash
# systemctl for the ops guide's test cluster: `drover` is node $OPS_NODE,
# `drover-worker@QUEUE-N` a worker process on QUEUE.
set -u
dir="$OPS_DIR/n$OPS_NODE"
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
worker() {
    local action=$1 id=${2#drover-worker@}
    id=${id%.service}
    local queue=${id%-*} pid="$OPS_DIR/workers/$id.pid"
    mkdir -p "$OPS_DIR/workers"
    case "$action" in
    start) alive "$pid" || { DROVER_TOKEN=$OPS_WORKER_TOKEN nohup drover worker --queue "$queue" --id "$id" \
                --exec 'cat >/dev/null' >>"$OPS_DIR/workers/$id.log" 2>&1 & echo $! >"$pid"; } ;;
    stop) if alive "$pid"; then kill "$(cat "$pid")"; fi; rm -f "$pid" ;;
    status|is-active) alive "$pid" && echo active || { echo inactive; return 3; } ;;
    *) echo "systemctl shim: $action $2 is not simulated" >&2; return 1 ;;
    esac
}
start() {
    alive "$dir/pid" && return 0
    : >"$dir/out"
    nohup drover serve --config "$dir/drover.toml" >"$dir/out" 2>>"$dir/log" &
    echo $! >"$dir/pid"
    for _ in $(seq 1 300); do
        grep -q ' ready ' "$dir/out" && return 0
        alive "$dir/pid" || { echo "node $OPS_NODE exited: $(tail -n 5 "$dir/log")" >&2; return 1; }
        sleep 0.1
    done
    echo "node $OPS_NODE did not start in 30 s" >&2; return 1
}
stop() {
    alive "$dir/pid" || return 0
    kill -TERM "$(cat "$dir/pid")"
    for _ in $(seq 1 300); do alive "$dir/pid" || return 0; sleep 0.1; done
    kill -KILL "$(cat "$dir/pid")"
}
node() {
    case "$1" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    reload) alive "$dir/pid" && kill -HUP "$(cat "$dir/pid")" ;;
    status|is-active) alive "$dir/pid" && echo active || { echo inactive; return 3; } ;;
    *) echo "systemctl shim: $1 is not simulated" >&2; return 1 ;;
    esac
}
action=$1; shift
[ $# -gt 0 ] || set -- drover
for unit in "$@"; do
    case "$unit" in
    --*) continue ;;  # --quiet and the like: the answer is the exit code
    drover-worker@*) worker "$action" "$unit" || exit $? ;;
    drover|drover.service) node "$action" || exit $? ;;
    *) echo "systemctl shim: unit $unit is not simulated" >&2; exit 1 ;;
    esac
done
"""

JOURNALCTL = r"""#!/usr/bin/env bash
# journalctl for the ops guide's test cluster: node $OPS_NODE's log.
log="$OPS_DIR/n$OPS_NODE/log"
if [[ " $* " == *" -p err "* ]]; then grep -E ' (ERROR|WARN) ' "$log" | tail -n 50; else tail -n 50 "$log"; fi
exit 0
"""

SUDO = r"""#!/usr/bin/env bash
# sudo -u USER CMD...: everything runs as one user here.
[ "${1:-}" = "-u" ] && shift 2
exec "$@"
"""

CHOWN = "#!/bin/sh\n# chown: everything runs as one user here.\nexit 0\n"


def entry(printed):
    """The [[tokens]] table `drover token new` printed."""
    m = re.search(r"\[\[tokens\]\]\n(?:\w+ = .*\n)+", printed)
    return m.group(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, drover):
        self.dir = tempfile.mkdtemp(prefix="drover-ops-")
        self.drover = drover
        self.workers = []
        self.ports = {n: (free_port(), free_port()) for n in (1, 2, 3, 4)}
        bin_dir = os.path.join(self.dir, "bin")
        os.makedirs(bin_dir)
        for name, text in [
            ("systemctl", SYSTEMCTL),
            ("journalctl", JOURNALCTL),
            ("sudo", SUDO),
            ("chown", CHOWN),
        ]:
            path = os.path.join(bin_dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        os.symlink(drover, os.path.join(bin_dir, "drover"))
        self.work = os.path.join(self.dir, "work")
        os.makedirs(self.work)
        os.makedirs(os.path.join(self.dir, "backups"))
        token = self.run(["drover", "token", "new", "--name", "ops", "--role", "admin"])
        self.token = re.search(r"drv_[0-9a-f]+", token).group(0)
        self.admin_entry = entry(token)
        worker = self.run(["drover", "token", "new", "--name", "workers", "--role", "worker"])
        self.worker_token = re.search(r"drv_[0-9a-f]+", worker).group(0)
        self.admin_entry += "\n" + entry(worker)
        peer = self.run(["drover", "token", "new", "--name", "peers", "--role", "peer"])
        self.peer_token = re.search(r"drv_[0-9a-f]+", peer).group(0)
        self.peer_entry = entry(peer)
        for n in (1, 2, 3, 4):
            self.write_config(n)

    def grpc(self, n):
        return f"127.0.0.1:{self.ports[n][0]}"

    def env(self, node=1):
        env = dict(os.environ)
        env.update(
            PATH=os.path.join(self.dir, "bin") + ":" + env["PATH"],
            OPS_DIR=self.dir,
            OPS_NODE=str(node),
            DROVER_SERVER=",".join(f"http://{self.grpc(n)}" for n in (1, 2, 3)),
            DROVER_TOKEN=self.token,
            OPS_WORKER_TOKEN=getattr(self, "worker_token", ""),
            DROVER_HTTP=f"http://127.0.0.1:{self.ports[1][1]}",
            CONFIG=os.path.join(self.dir, f"n{node}", "drover.toml"),
            DATA_DIR=os.path.join(self.dir, f"n{node}", "data"),
            NODE_ADDR=self.grpc(node),
            BACKUP_DIR=os.path.join(self.dir, "backups"),
        )
        return env

    def write_config(self, n):
        d = os.path.join(self.dir, f"n{n}")
        os.makedirs(d, exist_ok=True)
        peers = "".join(
            f'[[peers]]\nid = {p}\naddr = "{self.grpc(p)}"\n' for p in (1, 2, 3)
        )
        text = f"""node_id = {n}
cluster_id = "ops-guide"
data_dir = "{d}/data"
grpc_addr = "{self.grpc(n)}"
http_addr = "127.0.0.1:{self.ports[n][1]}"
peer_token = "{self.peer_token}"
{"join = true" if n == 4 else ""}

{peers}
{self.admin_entry}
{self.peer_entry}
[log]
level = "info,raft=warn"
format = "text"

[backup]
dir = "{self.dir}/backups"

[retry.fragile]
max_retries = 0

[queues.payments.breaker]
threshold = 2
"""
        with open(os.path.join(d, "drover.toml"), "w") as f:
            f.write(text)

    def run(self, args, node=1, check=True, timeout=60):
        p = subprocess.run(
            args,
            env=self.env(node) if hasattr(self, "token") else self.bare_env(),
            cwd=getattr(self, "work", None),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p.stdout

    def bare_env(self):
        env = dict(os.environ)
        env["PATH"] = os.path.join(self.dir, "bin") + ":" + env["PATH"]
        return env

    def start(self):
        for n in (1, 2, 3):
            self.run(["systemctl", "start", "drover"], node=n)
        self.run(["drover", "cluster", "wait", "--caught-up", "--timeout", "60s"])

    def worker(self, queue, wid, script, *more):
        log = open(os.path.join(self.dir, f"worker-{wid}.log"), "w")
        env = self.env()
        env["DROVER_TOKEN"] = self.worker_token
        p = subprocess.Popen(
            ["drover", "worker", "--queue", queue, "--id", wid, "--exec", script, *more],
            env=env,
            cwd=self.work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(p)
        return p

    def wait(self, what, check, limit=60):
        deadline = time.time() + limit
        last = None
        while time.time() < deadline:
            try:
                last = check()
                if last:
                    return last
            except RuntimeError as e:
                last = e
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}; last saw {last}")

    def jobs(self, *args):
        return self.run(["drover", "jobs", "list", *args])

    def stop_workers(self):
        for w in self.workers:
            w.kill()
            w.wait()
        self.workers = []
        # And those a block started through the systemctl shim.
        workers = os.path.join(self.dir, "workers")
        for name in os.listdir(workers) if os.path.isdir(workers) else []:
            if name.endswith(".pid"):
                with open(os.path.join(workers, name)) as f:
                    try:
                        os.kill(int(f.read().strip()), 15)
                    except (ValueError, ProcessLookupError):
                        pass
                os.remove(os.path.join(workers, name))

    def stop(self):
        self.stop_workers()
        for n in (1, 2, 3, 4):
            self.run(["systemctl", "stop", "drover"], node=n, check=False)

    def tail_logs(self):
        logs = [(f"node {n}'s log", os.path.join(self.dir, f"n{n}", "log")) for n in (1, 2, 3, 4)]
        logs += [(name, os.path.join(self.dir, name)) for name in sorted(os.listdir(self.dir)) if name.startswith("worker-")]
        for what, log in logs:
            if os.path.exists(log):
                with open(log) as f:
                    lines = f.readlines()[-15:]
                print(f"--- {what} (last lines)")
                print("".join(lines))


# The states blocks ask for. Each leaves the cluster so, and returns once
# the state holds.

def setup_stalled(c):
    """Ready jobs on a queue no worker serves, and a paused queue."""
    c.run(["drover", "enqueue", "--queue", "emails", "--count", "3"])
    c.run(["drover", "enqueue", "--queue", "reports", "--count", "2"])
    c.run(["drover", "queues", "pause", "reports", "--reason", "ops guide"])


def setup_dead(c):
    """Jobs of a type with no retries, failed by a worker: dead letters."""
    c.run(["drover", "enqueue", "--queue", "emails", "--type", "fragile", "--payload", "x", "--count", "2"])
    w = c.worker("emails", "w-failing", "echo error_class=smtp_timeout >&2; exit 3")
    c.wait("two dead jobs", lambda: c.jobs("--state", "dead", "--queue", "emails").count("fragile") >= 2)
    w.kill()
    w.wait()


def setup_stuck(c):
    """A lease held by a worker that hangs."""
    c.worker("emails", "w-hung", "sleep 600")
    c.run(["drover", "enqueue", "--queue", "emails", "--payload", "hangs"])
    c.wait("a leased job", lambda: "w-hung" in c.jobs("--state", "leased", "--queue", "emails"))


def setup_breaker(c):
    """An open breaker: payments failing with one error class."""
    w = c.worker("payments", "w-payments", "echo error_class=gateway_down >&2; exit 1")
    c.run(["drover", "enqueue", "--queue", "payments", "--tenant", "acme", "--count", "3"])
    c.wait("an open breaker", lambda: "open" in c.run(["drover", "breakers", "list"]))
    w.kill()
    w.wait()


def setup_held_run(c):
    """A run held over its attempts budget."""
    c.run(["drover", "budgets", "set", "acme", "--attempts", "1", "--reason", "ops guide"])
    c.run(["drover", "enqueue", "--queue", "nightly", "--tenant", "acme", "--run", "nightly-42", "--count", "2"])
    w = c.worker("nightly", "w-nightly", "echo done")
    c.wait("a held run", lambda: "held" in c.run(["drover", "runs", "list", "--tenant", "acme"]))
    w.kill()
    w.wait()


def setup_canary(c):
    """Workers of v1 and v2 on emails, and a canary of v2."""
    c.worker("emails", "w-v1", "cat >/dev/null", "--worker-version", "v1")
    c.worker("emails", "w-v2", "cat >/dev/null", "--worker-version", "v2")
    c.wait("both versions connected", lambda: "v2" in c.run(["drover", "versions", "list"]) and "v1" in c.run(["drover", "versions", "list"]))
    c.run(["drover", "canary", "set", "emails", "--version", "v2", "--percent", "10", "--reason", "ops guide"])
    c.run(["drover", "enqueue", "--queue", "emails", "--count", "20"])


def setup_tenant(c):
    """A tenant with jobs to erase."""
    c.run(["drover", "enqueue", "--queue", "imports", "--tenant", "acme", "--run", "import-7", "--count", "5"])


SETUPS = {
    "stalled": setup_stalled,
    "dead": setup_dead,
    "stuck": setup_stuck,
    "breaker": setup_breaker,
    "held_run": setup_held_run,
    "canary": setup_canary,
    "tenant": setup_tenant,
}

PRELUDE = """set -eu -o pipefail
# A grep that shows what there is and matches nothing shows that there is
# nothing: only its errors fail. `grep -q` is a test and keeps its status.
grep() {
    case " $* " in
    *" -q "*) command grep "$@" ;;
    *) command grep "$@" || [ $? -eq 1 ] ;;
    esac
}
"""


def blocks(text):
    """(line, heading, marker dict, code) of each ```sh block."""
    lines = text.split("\n")
    heading = ""
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("# ").strip()
        if line.strip() == "```sh":
            marker = {}
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = re.match(r"<!--\s*ops:\s*(.*?)\s*-->", lines[j].strip()) if j >= 0 else None
            if m:
                for part in re.findall(r'(\S+?)=("[^"]*"|\S+)|(\S+)', m.group(1)):
                    if part[2]:
                        marker[part[2]] = True
                    else:
                        marker[part[0]] = part[1].strip('"')
            end = i + 1
            while lines[end].strip() != "```":
                end += 1
            out.append((i + 1, heading, marker, "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return out


def main():
    drover = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "drover"))
    with open(GUIDE) as f:
        guide = f.read()
    found = blocks(guide)
    known = {"setup", "node", "each-node", "skip", "expect"}
    for line, _, marker, _ in found:
        unknown = set(marker) - known
        if unknown or (marker.get("setup") and any(s not in SETUPS for s in marker["setup"].split(","))):
            sys.exit(f"docs/operations.md:{line}: unknown ops marker {marker}")
    c = Cluster(drover)
    ran = skipped = 0
    current = "the cluster's start"
    try:
        c.start()
        for line, heading, marker, code in found:
            current = f"docs/operations.md:{line}"
            where = f"docs/operations.md:{line} ({heading})"
            if "skip" in marker:
                print(f"-- skip {where}: {marker['skip']}")
                skipped += 1
                continue
            for name in marker.get("setup", "").split(","):
                if name:
                    # Each state starts from no test workers: one left by
                    # an earlier setup would take the jobs this one needs.
                    c.stop_workers()
                    SETUPS[name](c)
            nodes = [1, 2, 3] if marker.get("each-node") else [int(marker.get("node", 1))]
            for n in nodes:
                started = time.time()
                p = subprocess.run(
                    ["bash", "-c", PRELUDE + code],
                    env=c.env(n),
                    cwd=c.work,
                    capture_output=True,
                    text=True,
                    timeout=BLOCK_TIMEOUT,
                )
                took = time.time() - started
                missing = [e for e in marker.get("expect", "").split("|") if e and e not in p.stdout]
                if missing and p.returncode == 0:
                    print(f"FAILED {where} on node {n}: its output lacks {missing}\n{code}")
                    print(f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
                    sys.exit(1)
                if p.returncode != 0:
                    print(f"FAILED {where} on node {n} (exit {p.returncode}, {took:.1f} s)\n{code}")
                    print(f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
                    c.tail_logs()
                    sys.exit(1)
                print(f"-- ran {where} on node {n} ({took:.1f} s, {len(p.stdout.splitlines())} lines of output)")
            ran += 1
    except Exception as e:
        print(f"FAILED at {current}: {e}")
        c.tail_logs()
        raise
    finally:
        if os.environ.get("OPS_KEEP"):
            print(f"OPS_KEEP: the cluster is left running in {c.dir}")
        else:
            c.stop()
    print(f"operations guide: {ran} blocks ran, {skipped} skipped with a reason")
    shutil.rmtree(c.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
