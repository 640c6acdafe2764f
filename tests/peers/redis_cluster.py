"""A private three-master Redis Cluster for the tests: three cluster-enabled redis-server
processes on free ports of 127.0.0.1, each with its data dir under a test's tmp path, the 16,384
slots split evenly between them (CLUSTER ADDSLOTSRANGE), introduced to each other (CLUSTER
MEET), and ready once every node reports `cluster_state:ok` and knows all three. Every node's
`default` user has the same random password (as a cluster of one operator has), so nothing
reaches it unauthenticated and the URL's password is carried to every node. With `tls` every
node speaks TLS only, to clients and on the cluster bus (the certificates of
tests.peers.redis_server); `acl` adds the same ACL users to every node."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from tests.peers.redis_server import Pki, pki
from tests.peers.smtp import free_port

SLOTS = 16_384
START_TIMEOUT_S = 20


@dataclass
class ClusterNode:
    port: int
    bus_port: int  # the cluster bus (node to node)
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


@dataclass
class RedisCluster:
    nodes: list[ClusterNode]
    password: str
    pki: Pki | None  # None: plaintext

    def url(self, scheme: str = "redis+cluster", user: str = "", password: str | None = None) -> str:
        """`redis+cluster://:password@127.0.0.1:<first node>` (another scheme names the same node;
        the `default` user's password unless a user is given); over TLS `rediss+cluster://` with
        the CA in the query."""
        secret = self.password if password is None and not user else password or ""
        base = f"{quote(user, safe='')}:{quote(secret, safe='')}@127.0.0.1:{self.nodes[0].port}"
        if self.pki is None:
            return f"{scheme}://{base}"
        return f"{scheme.replace('redis+', 'rediss+', 1)}://{base}?ssl_ca_certs={quote(str(self.pki.ca))}"

    def node_client(self, node: ClusterNode) -> redis.Redis:
        """A plain client of one master, as its `default` user: to count what it holds."""
        if self.pki is None:
            return redis.Redis(host="127.0.0.1", port=node.port, password=self.password)
        return redis.Redis(host="127.0.0.1", port=node.port, password=self.password, ssl=True, ssl_ca_certs=str(self.pki.ca))


def _node(folder: Path, binary: str, password: str, files: Pki | None, acl: Sequence[str]) -> ClusterNode:
    folder.mkdir(parents=True, exist_ok=True)
    port, bus_port = free_port(), free_port()
    log, users, conf = folder / "redis.log", folder / "users.acl", folder / "redis.conf"
    users.write_text("\n".join([f"user default on >{password} ~* &* +@all", *acl]) + "\n")
    listen = [f"port {port}"]
    if files is not None:
        listen = [
            "port 0", f"tls-port {port}", "tls-cluster yes", f"tls-cert-file {files.cert}", f"tls-key-file {files.key}",
            f"tls-ca-cert-file {files.ca}", "tls-auth-clients no",
            # the cluster bus always asks the connecting node for a client certificate
            f"tls-client-cert-file {files.client_cert}", f"tls-client-key-file {files.client_key}",
        ]  # fmt: skip
    conf.write_text("\n".join([
        *listen, "bind 127.0.0.1", f"dir {folder}", f"logfile {log}", 'save ""', "appendonly no", f"aclfile {users}",
        # the cluster bus on a port of its own (by default the port + 10,000, which a free port may not allow)
        "cluster-enabled yes", f"cluster-port {bus_port}", f"cluster-config-file {folder / 'nodes.conf'}", "cluster-node-timeout 5000",
        f"masterauth {password}",
    ]) + "\n")  # fmt: skip
    process = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ClusterNode(port, bus_port, process, log)


def _stop(node: ClusterNode) -> None:
    node.process.terminate()
    try:
        node.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait()


def _wait(check: object, what: str, nodes: list[ClusterNode]) -> None:
    assert callable(check)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        if time.monotonic() > deadline or any(n.process.poll() is not None for n in nodes):
            logs = "\n".join(f"--- node {n.port}:\n{n.log_text()[-1500:]}" for n in nodes)
            raise RuntimeError(f"the Redis Cluster did not come up ({what}):\n{logs}")
        time.sleep(0.05)


@contextmanager
def redis_cluster(folder: Path, masters: int = 3, *, tls: bool = False, acl: Sequence[str] = ()) -> Iterator[RedisCluster]:
    """A Redis Cluster of `masters` masters (no replicas) until the block ends; TLS only with
    `tls`; `acl`: lines of every node's ACL file (`user NAME RULES...`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (these tests start a cluster of their own)")
    password = secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    files = pki(folder) if tls else None
    with ExitStack() as stack:
        nodes: list[ClusterNode] = []
        for index in range(masters):
            node = _node(folder / f"node-{index}", binary, password, files, acl)
            stack.callback(_stop, node)
            nodes.append(node)
        cluster = RedisCluster(nodes, password, files)
        clients = [stack.enter_context(cluster.node_client(node)) for node in nodes]
        _wait(lambda: all(c.ping() for c in clients), "every node answers", nodes)
        share = SLOTS // masters
        for index, client in enumerate(clients):
            last = SLOTS - 1 if index == masters - 1 else (index + 1) * share - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", index * share, last)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)

        def ready() -> bool:
            infos = [client.execute_command("CLUSTER INFO") for client in clients]  # parsed into a dict
            return all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == masters for i in infos)

        _wait(ready, "cluster_state:ok on every node", nodes)
        yield cluster
