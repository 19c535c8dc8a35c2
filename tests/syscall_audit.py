"""Where a process tree's sockets went, read from an strace log, and what of it is a leak.

``strace -f`` records every ``connect``, ``bind``, ``sendto``, ``sendmsg`` and
``sendmmsg`` with its socket address, every ``execve``, ``clone`` and ``fork`` (to tell
the box's Python from its tor) and every ``openat`` (to see the resolver's files). The
rules of :meth:`Audit.violations` are what "no DNS, no clearnet" means:

* an ``AF_INET``/``AF_INET6`` address must be loopback (127.0.0.1, ::1 or
  ::ffff:127.0.0.1): a connect, a datagram or a listener anywhere else is a
  clearnet leak (a listener on 0.0.0.0 would be reachable from the network);
* nothing may use port 53 on any address, loopback included: a DNS query to a
  local stub resolver (127.0.0.53) is still a DNS query;
* ``AF_UNIX`` is local, except the name service sockets (nscd,
  systemd-resolved), which glibc tries first when it looks up a host name;
* ``AF_NETLINK`` talks to the kernel only (glibc's ``getaddrinfo`` asks it for
  the configured addresses; tor lists interfaces with it) and is allowed;
  ``AF_UNSPEC`` only disconnects a socket; any other family is a violation;
* opening ``/etc/resolv.conf`` means glibc set up its DNS resolver, which it
  does only to look a name up (a numeric address such as ``127.0.0.1`` never
  needs it): a violation even if no packet followed. ``/etc/hosts``,
  ``/etc/nsswitch.conf``, ``/etc/host.conf`` and ``/etc/gai.conf`` are read by
  the same look-ups; they are reported in :attr:`Audit.name_service_files`,
  and the caller decides (the box's test requires none).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NETWORK_CALLS = ("connect", "bind", "sendto", "sendmsg", "sendmmsg")
TRACED = (*NETWORK_CALLS, "openat", "execve", "clone", "clone3", "fork", "vfork")

RESOLVER_FILE = "/etc/resolv.conf"
NAME_SERVICE_FILES = ("/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf")
NAME_SERVICE_SOCKETS = (
    "/var/run/nscd/socket",
    "/run/nscd/socket",
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/systemd/resolve/io.systemd.Resolve.Monitor",
)
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
DNS_PORT = 53

_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*)$")
_SOCKADDR = re.compile(r"\{sa_family=(?P<family>AF_\w+)(?P<fields>(?:[^{}]|\{[^{}]*\})*)\}")
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
_INET = re.compile(r'inet_addr\("([^"]*)"\)')
_INET6 = re.compile(r'inet_pton\(AF_INET6, "([^"]*)"')
_UNIX = re.compile(r'sun_path=(@?"[^"]*")')
_OPENED = re.compile(r'^(?:AT_FDCWD|\d+), "([^"]*)"')
_EXECUTED = re.compile(r'^"([^"]*)"')
_CLONED = re.compile(
    r"^(?P<pid>\d+)\s+(?:(?:clone3?|v?fork)\(|<\.\.\. (?:clone3?|v?fork) resumed>).*"
    r"= (?P<child>\d+)$"
)


def require_strace() -> str:
    """strace's path; missing, the test fails (never skips): Debian package ``strace``."""
    path = shutil.which("strace")
    if path is None:
        pytest.fail(
            "strace is not installed (Debian package strace); the no-DNS/no-clearnet "
            "proof needs it",
            pytrace=False,
        )
    return path


def strace_command(output: Path) -> list[str]:
    """A wrapper that traces a command and all its children into ``output``."""
    return [
        require_strace(),
        "-f",  # follow children: the box's tor is one
        "-qq",
        "--seccomp-bpf",  # stop only at the traced calls: the box runs at nearly full speed
        "-s",
        "256",
        "-e",
        f"trace={','.join(TRACED)}",
        "-e",
        "signal=none",
        "-o",
        str(output),
    ]


@dataclass(frozen=True)
class Endpoint:
    """One socket address a traced call used."""

    pid: int
    program: str
    call: str
    family: str
    address: str = ""
    port: int | None = None
    line: str = ""

    def __str__(self) -> str:
        where = f"{self.address}:{self.port}" if self.port is not None else self.address
        return f"{self.program}[{self.pid}] {self.call} {self.family} {where}".rstrip()


@dataclass
class Audit:
    """What an strace log says the traced processes did on the network."""

    endpoints: list[Endpoint] = field(default_factory=list)
    opened: list[tuple[int, str, str]] = field(default_factory=list)
    """(pid, program, path) of every file opened (successfully or not)."""
    programs: dict[int, str] = field(default_factory=dict)

    @property
    def name_service_files(self) -> list[tuple[str, str]]:
        return [(prog, path) for _, prog, path in self.opened if path in NAME_SERVICE_FILES]

    def violations(self) -> list[str]:
        found = [f"{e}: {why}" for e in self.endpoints if (why := _leak(e))]
        found += [
            f"{prog}[{pid}] opened {path}: the DNS resolver was set up for a name look-up"
            for pid, prog, path in self.opened
            if path == RESOLVER_FILE
        ]
        return found

    def of(self, program: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.program == program]


def _leak(endpoint: Endpoint) -> str:
    family = endpoint.family
    if endpoint.port == DNS_PORT:
        return "port 53: a DNS query"
    if family in ("AF_INET", "AF_INET6"):
        try:
            address = ipaddress.ip_address(endpoint.address)
        except ValueError:
            return "unreadable address"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address in LOOPBACK:
            return ""
        return "listening beyond loopback" if endpoint.call == "bind" else "not loopback: clearnet"
    if family == "AF_UNIX":
        if endpoint.address in NAME_SERVICE_SOCKETS:
            return "a name service look-up (nscd/systemd-resolved)"
        return ""
    if family in ("AF_NETLINK", "AF_UNSPEC"):
        return ""
    return "unexpected address family"


def read_trace(path: Path) -> Audit:
    """Parse an ``strace -f -o`` log written with :func:`strace_command`."""
    audit = Audit()
    lines = path.read_text(errors="replace").splitlines()
    for line in lines:  # first pass: which pid runs which program
        match = _LINE.match(line)
        if match and match["call"] == "execve" and not re.search(r"= -1 \w+", line):
            executed = _EXECUTED.match(match["args"])
            if executed:
                audit.programs[int(match["pid"])] = Path(executed[1]).name
    inherited = _parents(lines)
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue  # "<... resumed>" tails, exits, strace's own notes
        pid, call, args = int(match["pid"]), match["call"], match["args"]
        program = _program_of(pid, audit.programs, inherited)
        if call == "openat":
            opened = _OPENED.match(args)
            if opened:
                audit.opened.append((pid, program, opened[1]))
        elif call in NETWORK_CALLS:
            for sockaddr in _SOCKADDR.finditer(args):
                audit.endpoints.append(_endpoint(pid, program, call, sockaddr, line))
    return audit


def _endpoint(pid: int, program: str, call: str, sockaddr: re.Match[str], line: str) -> Endpoint:
    family, fields = sockaddr["family"], sockaddr["fields"]
    port_match = _PORT.search(fields)
    port = int(port_match[1]) if port_match else None
    address = ""
    for pattern in (_INET, _INET6, _UNIX):
        found = pattern.search(fields)
        if found:
            address = found[1].replace('"', "")
            break
    return Endpoint(pid, program, call, family, address, port, line)


def _parents(lines: list[str]) -> dict[int, int]:
    """child pid (or thread id) -> parent pid, from the results of clone and fork."""
    parents: dict[int, int] = {}
    for line in lines:
        match = _CLONED.match(line)
        if match:
            parents[int(match["child"])] = int(match["pid"])
    return parents


def _program_of(pid: int, programs: dict[int, str], parents: dict[int, int]) -> str:
    seen = set()
    while pid not in programs and pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
    return programs.get(pid, "?")
