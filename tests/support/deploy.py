"""Helpers of the deployment tests: read docker-compose.yml (YAML plus Compose's variable
interpolation), the Dockerfiles (dockerfile-parse) and their .dockerignore files (docker-py's
matcher), and turn a compose
service's command into the same command on this machine (free loopback ports, temporary
directories for the volumes).

There is no Docker engine here, so nothing is built or run by Docker; the tests check the
files statically and start every service as the process its container would run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from plumbline.core import yamlfile
from support.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
TEAMS_FILE = REPO / "docker-compose.teams.yml"
S3_FILE = REPO / "docker-compose.s3.yml"
SERVE_DOCKERFILE = REPO / "serve" / "Dockerfile"
PIPELINE_DOCKERFILE = REPO / "Dockerfile"
K8S = REPO / "k8s"

# What the compose file publishes, as issue 6 asks.
PUBLISHED_PORTS = {
    "api": 8000,
    "mlflow": 5000,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}

# --- docker-compose.yml -----------------------------------------------------------------------

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` with ``env`` (default:
    nothing set, i.e. what a fresh checkout without .env gets); ``$$`` is a literal ``$``."""
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        got = env.get(name)
        if (op in (":-", ":?") and not got) or (op in ("-", "?") and got is None):
            if op.endswith("?"):
                raise ValueError(f"${{{name}}} is required: {arg}")
            return arg
        return got or ""

    parts = value.split("$$")
    return "$".join(_VAR.sub(one, part) for part in parts)


def _interpolate_tree(node: Any, env: dict[str, str] | None) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(n, env) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


@cache
def compose_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yamlfile.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def merged(base: Any, extra: Any) -> Any:
    """Compose's merge of ``-f base -f extra`` for what these files use: mappings merge key
    by key (depends_on, environment, volumes), anything else is replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    return extra


def compose(
    env: tuple[tuple[str, str], ...] = (), teams: bool = False, s3: bool = False
) -> dict[str, Any]:
    """The compose model after interpolation (YAML merge keys are resolved by the loader);
    with ``teams`` (and ``s3``), docker-compose.teams.yml (and docker-compose.s3.yml) added as
    ``-f`` adds them."""
    raw = compose_raw()
    if teams:
        raw = merged(raw, compose_raw(TEAMS_FILE))
    if s3:
        raw = merged(raw, compose_raw(S3_FILE))
    model: dict[str, Any] = _interpolate_tree(raw, dict(env))
    return model


def service(name: str, teams: bool = False, s3: bool = False) -> dict[str, Any]:
    services = compose(teams=teams, s3=s3)["services"]
    assert name in services, f"the compose files have no service {name!r}"
    return dict(services[name])


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {k: None if v is None else str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume, or a path relative to the compose file
    target: str
    bind: bool
    read_only: bool


def mounts(svc: dict[str, Any]) -> list[Mount]:
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            src, target = str(entry.get("source", "")), str(entry["target"])
            bind = entry.get("type") == "bind"
            ro = bool(entry.get("read_only"))
        else:
            bits = str(entry).split(":")
            src, target = bits[0], bits[1]
            ro = len(bits) > 2 and "ro" in bits[2].split(",")
            bind = src.startswith((".", "/", "~"))
        out.append(Mount(src, target, bind, ro))
    return out


@dataclass(frozen=True)
class Port:
    host_ip: str
    published: int
    target: int


def ports(svc: dict[str, Any]) -> list[Port]:
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append(
                Port(str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"]))
            )
            continue
        text = str(entry).split("/")[0]
        head, _, target = text.rpartition(":")
        ip, _, published = head.rpartition(":")
        out.append(Port(ip, int(published or target), int(target)))
    return out


def healthcheck_url(svc: dict[str, Any]) -> str | None:
    """The URL a healthcheck command requests, if it requests one."""
    test = (svc.get("healthcheck") or {}).get("test") or []
    text = " ".join(test) if isinstance(test, list) else str(test)
    found = re.search(r"https?://[^\s'\"]+", text)
    return found.group(0) if found else None


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return [str(v) for v in value] if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                if sep:
                    out[key] = value
        return out


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARG defaults declared before the first FROM
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            return self.args.get(m.group(1) or m.group(2), "")

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, text)

    def ignore_file(self) -> Path:
        """BuildKit reads <Dockerfile>.dockerignore first, else the context's .dockerignore."""
        own = self.path.with_name(self.path.name + ".dockerignore")
        return own if own.is_file() else REPO / ".dockerignore"


def parse_dockerfile(path: Path) -> Dockerfile:
    """Stages and instructions as dockerfile-parse reads them (line continuations, comments
    and parser directives handled the way Docker's own parser does)."""
    from dockerfile_parse import DockerfileParser

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in DockerfileParser(str(path), cache_content=True).structure:
        keyword, rest = item["instruction"], item["value"].strip()
        if keyword == "COMMENT":
            continue
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.lstrip()
        if keyword == "FROM":
            bits = rest.split()
            name = bits[2] if len(bits) >= 3 and bits[1].upper() == "AS" else None
            stages.append(Stage(base=bits[0], name=name, instructions=[]))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, flags))
    return Dockerfile(path=path, args=args, stages=stages)


def copy_sources(dockerfile: Dockerfile) -> list[tuple[str, str]]:
    """(source, destination) of every COPY/ADD from the build context (not --from a stage)."""
    out: list[tuple[str, str]] = []
    for stage in dockerfile.stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD") or "from" in ins.flags:
                continue
            parts = ins.exec_form() or shlex.split(ins.args)
            *sources, dest = parts
            out.extend((src, dest) for src in sources)
    return out


# --- .dockerignore ----------------------------------------------------------------------------


def ignored(rel: str, ignore_file: Path) -> bool:
    """Whether Docker leaves ``rel`` out of the build context, by docker-py's implementation of
    the .dockerignore rules (the last matching pattern decides; ``!`` keeps)."""
    from docker.utils.build import PatternMatcher

    patterns = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return bool(PatternMatcher(patterns).matches(rel.strip("/")))


# --- what the serving image installs (`pip install ".[serve,...]"`) -----------------------------


def serve_image_extras() -> tuple[str, ...]:
    """The extras serve/Dockerfile installs by default (``pip install ... ".[${SERVE_EXTRAS}]"``
    with the build argument's default)."""
    text = (REPO / "serve" / "Dockerfile").read_text()
    assert re.search(r'pip install [^\n]*"\.\[\$\{SERVE_EXTRAS\}\]"', text), "install line"
    (extras,) = re.findall(r"^ARG SERVE_EXTRAS=([a-z,]+)$", text, re.MULTILINE)
    return tuple(extras.split(","))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(dist: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Distributions that ``pip install "<dist>[<extras>]"`` brings (as installed here)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(dist, extras)]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        seen.add(name)
        try:
            requires = _own_requirements() if name == "plumbline" else metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in envs):
                continue
            todo.append((_norm(req.name), tuple(sorted(req.extras))))
    return seen


def _own_requirements() -> list[str]:
    """plumbline's requirements from pyproject.toml (installed metadata may be older)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = list(project.get("dependencies", []))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for requirement in reqs:
            spec, _, marker = (part.strip() for part in requirement.partition(";"))
            condition = f"({marker}) and extra == '{extra}'" if marker else f"extra == '{extra}'"
            out.append(f"{spec}; {condition}")
    return out


def slim_venv(directory: Path, extras: tuple[str, ...]) -> Path:
    """A virtualenv whose site-packages holds only what ``pip install ".[<extras>]"`` installs
    (links to this environment's copies; plumbline itself from src/). Returns its python.

    No download: it stands in for the image's venv, so that a process started with it fails
    on any import of a package that the image does not have.
    """
    import sys
    import sysconfig

    python = directory / "bin" / "python"
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(directory)],
            check=True,
            capture_output=True,
        )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    here = Path(sysconfig.get_path("purelib"))
    wanted = dependency_closure("plumbline", extras) - {"plumbline"}
    for dist in metadata.distributions():
        if _norm(dist.metadata["Name"]) not in wanted:
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or top.startswith("__editable__"):
                continue
            source, link = here / top, site / top
            if source.exists() and not link.exists():
                link.symlink_to(source, target_is_directory=source.is_dir())
    (site / "plumbline-src.pth").write_text(f"{REPO / 'src'}\n")
    return python
