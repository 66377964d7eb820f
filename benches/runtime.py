#!/usr/bin/env python3
"""Benchmark (issue #4): from a webhook to all agents converged, and an idle agent's cost.

A 3-node loopback cluster: one real etcd member, one `rampart controller --fence sim` and one
`rampart agent --drivers sim` per node of the reference cluster (alpha, beta, witness), the
manifests in a local git repository. Each round commits a manifest change (a floating IP on
the `files` VM added, then removed again), signs and POSTs the webhook, and times until every
node's agent has taken the new assignment and its host matches (per `rampart status -o json`).
Then the agents sit idle for a while and their RSS and CPU are sampled from /proc.

    cargo build --release --features etcd-tls
    python3 benches/runtime.py [--rounds 20] [--idle 10]

Needs Debian's etcd-server. Everything runs on 127.0.0.1; every process started here is
killed by its PID at the end, also on failure. Targets: median under 500 ms; an idle agent
under 20 MB RSS and under 1% of a core. Figures go in BENCHMARKS.md.
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIP = """apiVersion: rampart.dev/v1alpha1
kind: VirtualIP
metadata:
  name: bench-ip
spec:
  address: 198.51.100.77/24
  interface: br0
  follows:
    virtualMachine: files
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.procs = []  # (name, Popen)

    def spawn(self, name, args, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((name, p))
        return p

    def stop(self):
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for _, p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def status(self, url):
        out = subprocess.run([self.binary, "status", "--store", url, "-o", "json"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   check=True, capture_output=True)


def converged(st, want_vip):
    """Every node holds its newest assignment and the host matches it."""
    if not st or not st.get("leader"):
        return False
    for node in st["nodes"].values():
        if node["lease"] != "alive":
            return False
        if node["assigned_generation"] is None or node["assigned_generation"] != node["held_generation"]:
            return False
    for vm in st["vms"].values():
        if not vm["state"].startswith("running"):
            return False
    holders = st["vips"].get("bench-ip")
    files_on = st["vms"].get("files", {}).get("running_on", [])
    if want_vip:
        return holders is not None and holders == files_on
    return holders is None


def wait(pred, deadline_s, what):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.005)
    sys.exit(f"timed out waiting for {what}")


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return rss_kb, ticks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle sampling")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rampart"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --features etcd-tls` first")
    if shutil.which("etcd") is None:
        sys.exit("etcd not found: install Debian's etcd-server")
    probe = subprocess.run([args.binary, "status", "--store", "etcd://127.0.0.1:1/x"], capture_output=True, text=True)
    if "without etcd support" in probe.stderr:
        sys.exit("this rampart was built without etcd: `cargo build --release --features etcd-tls`")

    tmp = tempfile.mkdtemp(prefix="rampart-bench-runtime-")
    c = Cluster(args.binary, tmp)
    try:
        client, peer = free_port(), free_port()
        c.spawn("etcd", ["etcd", "--name", "bench", "--data-dir", os.path.join(tmp, "etcd"),
                         "--listen-client-urls", f"http://127.0.0.1:{client}",
                         "--advertise-client-urls", f"http://127.0.0.1:{client}",
                         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
                         "--heartbeat-interval", "25", "--election-timeout", "250", "--log-level", "error"])
        url = f"etcd://127.0.0.1:{client}/rampart/bench"

        def etcd_up():
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.2):
                    return True
            except OSError:
                return False
        wait(etcd_up, 10, "etcd")

        repo = os.path.join(tmp, "repo")
        shutil.copytree(os.path.join(ROOT, "manifests"), os.path.join(repo, "manifests"))
        cluster_yaml = os.path.join(repo, "manifests", "cluster.yaml")
        text = open(cluster_yaml).read()
        for a, b in [("leaseTTL: 10s", "leaseTTL: 2s"), ("renewInterval: 2s", "renewInterval: 500ms"),
                     ("fenceTimeout: 60s", "fenceTimeout: 30s")]:
            if a not in text:
                sys.exit(f"manifests/cluster.yaml no longer has `{a}`; update the benchmark")
            text = text.replace(a, b)
        open(cluster_yaml, "w").write(text)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "base")

        secret = os.urandom(16).hex().encode()  # throwaway, never on a command line
        secret_file = os.path.join(tmp, "webhook-secret")
        with open(secret_file, "wb") as f:
            f.write(secret)
        os.chmod(secret_file, 0o600)
        api = free_port()
        c.spawn("controller", [args.binary, "controller", "--store", url, "--source", repo, "--branch", "main",
                               "--path", "manifests", "--state-dir", os.path.join(tmp, "state"), "--fence", "sim",
                               "--id", "bench", "--poll", "1h", "--listen", f"127.0.0.1:{api}",
                               "--webhook-secret-file", secret_file])
        agents = {}
        for node in ["alpha", "beta", "witness"]:
            agents[node] = c.spawn(f"agent-{node}", [args.binary, "agent", "--node", node, "--store", url,
                                                     "--drivers", "sim"])
        wait(lambda: converged(c.status(url), False), 60, "the cluster to converge")

        vip_file = os.path.join(repo, "manifests", "vips", "bench-ip.yaml")
        times = []
        for i in range(args.rounds):
            add = i % 2 == 0
            if add:
                open(vip_file, "w").write(VIP)
                git(repo, "add", "-A")
            else:
                git(repo, "rm", "-q", vip_file)
            git(repo, "commit", "-q", "-m", f"round {i}")
            body = b'{"ref":"refs/heads/main"}'
            sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", api, timeout=5)
            conn.request("POST", "/hooks/git", body, {"X-Hub-Signature-256": sig, "Content-Type": "application/json"})
            code = conn.getresponse().status
            conn.close()
            if code != 202:
                sys.exit(f"webhook answered {code}")
            wait(lambda: converged(c.status(url), add), 30, f"round {i} to converge")
            times.append(time.monotonic() - t0)

        time.sleep(2)
        hz = os.sysconf("SC_CLK_TCK")
        start = {n: proc_sample(p.pid) for n, p in agents.items()}
        time.sleep(args.idle)
        end = {n: proc_sample(p.pid) for n, p in agents.items()}
        ms = [t * 1000 for t in times]
        print(f"webhook -> all agents converged, {len(ms)} rounds: median {statistics.median(ms):.0f} ms, "
              f"min {min(ms):.0f} ms, max {max(ms):.0f} ms")
        for n in agents:
            rss = end[n][0] / 1024
            cpu = (end[n][1] - start[n][1]) / hz / args.idle * 100
            print(f"agent {n} idle over {args.idle:.0f} s: RSS {rss:.1f} MiB, CPU {cpu:.2f}% of a core")
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
