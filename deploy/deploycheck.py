"""Checks for the deployment files (docker-compose.yaml, .env.example, Dockerfiles), without Docker.

Docker Compose interpolates ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` (and the ``-``, ``?``,
``+`` forms without the colon) in every string value, with ``$$`` for a literal ``$``. This module
does the same from a ``.env`` file, so the rendered file can be validated against the Compose
Specification schema, and it holds the house rules the stack must keep (health checks, ordered
start-up, pinned images, no secret literals). It also holds the least-privilege rules: Pod Security
``restricted`` for a pod, NetworkPolicy egress, IAM evaluation of the S3 policies, and the secrets
check that the compose job ``secrets-check`` runs (``python deploycheck.py check-secrets .env.example``)
before anything else starts. Each rule returns a list of problems, one line each: an empty list means
the rule holds. Standard library only, so it runs anywhere the tests run and in a bare Python image.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Environment keys whose value is a credential. Keys naming where a secret lives (``*_FILE``,
# ``*_PATH``) hold a path, not the secret.
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL|_AUTH$", re.IGNORECASE)
_SECRET_LOCATION = re.compile(r"(_FILE|_PATH)$", re.IGNORECASE)
# A required reference and nothing else: `${VAR:?message}` or `${VAR?message}`.
_REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^{}]*\}$")
# `scheme://user:password@host` with the password in group "password".
_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:(?P<password>[^\s@]+)@", re.IGNORECASE)
# `password=...`, `secret: ...`, `token = ...` inside a longer string (scripts, ini content, DSNs).
_INLINE_SECRET = re.compile(
    r"(?:(?:password|passwd|secret|token)[\"']?(?:\s*=|:)|--requirepass\s)\s*[\"']?(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
MOVING_TAGS = frozenset({"latest", "stable", "main", "master", "edge", "nightly"})


class InterpolationError(ValueError):
    """A required variable is unset (``${VAR:?message}``) or a reference is malformed."""


@dataclass(frozen=True)
class VariableUse:
    """One ``${...}`` reference in a Compose file."""

    name: str
    operator: str  # "", ":-", "-", ":?", "?", ":+", "+"
    word: str

    @property
    def has_default(self) -> bool:
        return self.operator in (":-", "-", ":+", "+")

    @property
    def required(self) -> bool:
        return self.operator in (":?", "?")


# --------------------------------------------------------------------------------- .env and ${...}


def parse_env_file(text: str) -> dict[str, str]:
    """Parse a Compose ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise ValueError(f"line {number}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if end < 0:
                raise ValueError(f"line {number}: unterminated quote in {raw!r}")
            value = value[1:end]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[key] = value
    return values


def _references(text: str) -> Iterator[tuple[int, int, VariableUse]]:
    """Yield (start, end, use) for each top-level reference; ``$$`` is skipped (a literal ``$``)."""
    i = 0
    while i < len(text):
        if text[i] != "$":
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            i += 2
            continue
        if nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise InterpolationError(f"unterminated reference in {text!r}")
            body = text[i + 2 : j - 1]
            match = _NAME.match(body)
            if not match:
                raise InterpolationError(f"invalid reference ${{{body}}} in {text!r}")
            rest = body[match.end() :]
            operator = next((op for op in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(op)), "")
            if rest and not operator:
                raise InterpolationError(f"invalid reference ${{{body}}} in {text!r}")
            yield i, j, VariableUse(match.group(), operator, rest[len(operator) :])
            i = j
            continue
        match = _NAME.match(text, i + 1)
        if not match:
            # Compose rejects a lone `$` ("invalid interpolation format"): write `$$` for a literal.
            raise InterpolationError(f"lone '$' at offset {i} in {text!r}: write '$$' for a literal '$'")
        yield i, match.end(), VariableUse(match.group(), "", "")
        i = match.end()


def variables_in(text: str) -> list[VariableUse]:
    """Every reference in ``text``, including those nested in defaults and messages."""
    found: list[VariableUse] = []
    for _, _, use in _references(text):
        found.append(use)
        found.extend(variables_in(use.word))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve references the way Docker Compose does; ``$$`` becomes ``$``."""
    out: list[str] = []
    last = 0
    for start, end, use in _references(text):
        out.append(text[last:start].replace("$$", "$"))
        value = env.get(use.name)
        if use.operator in (":?", "?"):
            if value is None or (use.operator == ":?" and value == ""):
                raise InterpolationError(f"required variable {use.name} is missing: {use.word}")
            out.append(value)
        elif use.operator in (":-", "-"):
            unset = value is None or (use.operator == ":-" and value == "")
            out.append(interpolate(use.word, env) if unset else str(value))
        elif use.operator in (":+", "+"):
            is_set = value is not None and (use.operator == "+" or value != "")
            out.append(interpolate(use.word, env) if is_set else "")
        else:
            out.append(value or "")
        last = end
    out.append(text[last:].replace("$$", "$"))
    return "".join(out)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not mapping keys) of a loaded YAML document."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def strings_in(node: Any) -> Iterator[str]:
    """Every string value in a YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)


def variables_used(compose: Mapping[str, Any]) -> list[VariableUse]:
    """Every variable reference in the (un-interpolated) Compose data."""
    return [use for text in strings_in(compose) for use in variables_in(text)]


# ------------------------------------------------------------------------------------- Compose rules


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose.get("services") or {}
    return found


def is_one_shot(service: Mapping[str, Any]) -> bool:
    """A job that runs to completion: it says so with ``restart: "no"``."""
    return service.get("restart") == "no"


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def missing_healthchecks(compose: Mapping[str, Any]) -> list[str]:
    """Every long-running service has a health check and a restart policy."""
    problems = []
    for name, service in services(compose).items():
        if is_one_shot(service):
            continue
        check = service.get("healthcheck") or {}
        if not check.get("test") or check.get("disable"):
            problems.append(f"{name}: long-running service without a healthcheck")
        if service.get("restart") not in ("always", "unless-stopped", "on-failure"):
            problems.append(f'{name}: long-running service without a restart policy (or restart: "no")')
    return problems


def unordered_dependencies(compose: Mapping[str, Any]) -> list[str]:
    """``depends_on`` names a condition that matches what the dependency is."""
    problems = []
    all_services = services(compose)
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on is a list (no condition): {depends}")
            continue
        for target, spec in depends.items():
            condition = (spec or {}).get("condition")
            dependency = all_services.get(target)
            if dependency is None:
                problems.append(f"{name}: depends on unknown service {target}")
                continue
            expected = "service_completed_successfully" if is_one_shot(dependency) else "service_healthy"
            if condition != expected:
                problems.append(f"{name}: depends_on {target} needs condition {expected}, has {condition}")
            if dependency.get("profiles") and not service.get("profiles"):
                problems.append(f"{name}: depends on {target}, which only starts with a profile")
    return problems


def image_problem(image: str) -> str | None:
    """None when the reference is pinned: a digest, or a tag that does not move."""
    if not image:
        return "no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: untagged (means latest)"
    tag = last.rsplit(":", 1)[1]
    if tag.lower() in MOVING_TAGS or "$" in tag:
        return f"{image}: tag {tag!r} is not a pinned version"
    return None


def unpinned_images(compose: Mapping[str, Any]) -> list[str]:
    """Every service names an image with a fixed version (built services too: their local tag)."""
    problems = []
    for name, service in services(compose).items():
        problem = image_problem(str(service.get("image") or ""))
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def _literal_password(value: str) -> bool:
    """A credential that is written out: anything but a ``${...}`` or ``$$VAR`` runtime reference."""
    return not value.startswith("$")


def _mask_references(text: str) -> str:
    """``text`` with each ``${...}`` replaced by ``${}`` (names and messages are not values)."""
    out, last = [], 0
    for start, end, _ in _references(text):
        out.append(text[last:start] + "${}")
        last = end
    return "".join(out) + text[last:]


def secret_literals(compose: Mapping[str, Any]) -> list[str]:
    """No credential is written in the file; each comes from the environment (``.env``).

    Run this on the data as written (before interpolation): a secret-named environment key must be
    exactly ``${VAR:?message}`` (a default would be a default password), and passwords inside URLs
    or ``password=...`` strings must be references too.
    """
    problems = []
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            secret = SECRET_KEY.search(key) and not _SECRET_LOCATION.search(key)
            if secret and not _REQUIRED_REFERENCE.match(value.strip()):
                problems.append(f"{name}: {key} is not a required ${{VAR:?...}} reference: {value!r}")
    texts = list(strings_in(compose))
    for service in services(compose).values():  # argv lists: `--requirepass`, `x` are two items
        texts.extend(" ".join(map(str, value)) for value in service.values() if isinstance(value, list))
    for text in map(_mask_references, texts):
        for match in _URL_CREDENTIALS.finditer(text):
            if _literal_password(match.group("password")):
                problems.append(f"password written in a URL: {match.group(0)!r}")
        for match in _INLINE_SECRET.finditer(text):
            if _literal_password(match.group("value")):
                problems.append(f"secret written in a string: {match.group(0)!r}")
    return problems


def mount_targets(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Container path -> {source, read_only} for short and long volume syntax."""
    found: dict[str, dict[str, Any]] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) == 1:
                found[parts[0]] = {"source": None, "read_only": False}
            else:
                found[parts[1]] = {"source": parts[0], "read_only": len(parts) > 2 and "ro" in parts[2]}
        else:
            target = str(volume.get("target"))
            found[target] = {"source": volume.get("source"), "read_only": bool(volume.get("read_only"))}
    return found


def missing_mounts(compose: Mapping[str, Any], service_names: list[str], required: Mapping[str, str]) -> list[str]:
    """Each named service mounts each ``source -> target`` of ``required``."""
    problems = []
    for name in service_names:
        mounts = mount_targets(services(compose).get(name, {}))
        for source, target in required.items():
            mount = mounts.get(target)
            if mount is None or str(mount["source"]).rstrip("/") != source.rstrip("/"):
                problems.append(f"{name}: does not mount {source} at {target}")
    return problems


# -------------------------------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile (line continuations joined, comments and heredocs skipped)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def base_images(instructions: list[Instruction]) -> list[str]:
    """The image of every ``FROM`` (flags and ``AS name`` dropped); stage names are not images."""
    stages: set[str] = set()
    images = []
    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        words = [word for word in shlex.split(instruction.args) if not word.startswith("--")]
        if words[0].lower() not in stages:
            images.append(words[0])
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
    return images


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """Final values of ``ENV key=value`` (and the legacy ``ENV key value``) instructions."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def last_instruction(instructions: list[Instruction], keyword: str) -> str | None:
    found = [i.args for i in instructions if i.keyword == keyword.upper()]
    return found[-1] if found else None


# ---------------------------------------------------------------------------- Kubernetes Pod Security

# Pod Security Standards, profile `restricted` (which includes `baseline`), as of Kubernetes 1.33:
# https://kubernetes.io/docs/concepts/security/pod-security-standards/
_RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (f"{kind} {container.get('name')}", container)
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for container in spec.get(kind) or []
    ]


def pod_security_restricted_violations(pod: Mapping[str, Any]) -> list[str]:  # noqa: C901, PLR0912, PLR0915 -- one checklist, read top to bottom
    """What keeps a pod (the API's camelCase JSON) out of Pod Security ``restricted``; empty = admitted.

    Checked on every container, init and ephemeral ones included, as the admission controller does:
    the pod-level ``securityContext`` satisfies ``runAsNonRoot`` and ``seccompProfile`` only where no
    container overrides it with a forbidden value.
    """
    spec: Mapping[str, Any] = pod.get("spec") or {}
    pod_ctx: Mapping[str, Any] = spec.get("securityContext") or {}
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"pod: {key} is true")
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("pod: windowsOptions.hostProcess is true")
    for volume in spec.get("volumes") or []:
        kinds = [key for key in volume if key != "name"]
        for kind in kinds:
            if kind not in _RESTRICTED_VOLUME_TYPES:
                problems.append(f"volume {volume.get('name')}: type {kind} is not allowed (hostPath and the like)")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl.get('name')} is not in the safe set")
    problems += _selinux_apparmor("pod", pod_ctx)
    pod_non_root = pod_ctx.get("runAsNonRoot") is True
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_ALLOWED:
        problems.append(f"pod: seccompProfile {pod_seccomp} (needs RuntimeDefault or Localhost)")
    if pod_ctx.get("runAsUser") == 0:
        problems.append("pod: runAsUser is 0")
    containers = _containers(spec)
    if not containers:
        problems.append("pod: no containers")
    for where, container in containers:
        ctx: Mapping[str, Any] = container.get("securityContext") or {}
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: windowsOptions.hostProcess is true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        non_root = ctx.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            problems.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if ctx.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (ctx.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in _SECCOMP_ALLOWED:
            problems.append(f"{where}: seccompProfile {seccomp} (needs RuntimeDefault or Localhost)")
        elif seccomp is None and pod_seccomp not in _SECCOMP_ALLOWED:
            problems.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        capabilities: Mapping[str, Any] = ctx.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities must drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{where}: capabilities add {sorted(added)} (only NET_BIND_SERVICE is allowed)")
        if ctx.get("procMount") not in (None, "Default"):
            problems.append(f"{where}: procMount {ctx.get('procMount')}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f"{where}: hostPort is set")
        problems += _selinux_apparmor(where, ctx)
    return problems


def _selinux_apparmor(where: str, ctx: Mapping[str, Any]) -> list[str]:
    problems = []
    selinux: Mapping[str, Any] = ctx.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES:
        problems.append(f"{where}: seLinuxOptions.type {selinux.get('type')}")
    if selinux.get("user") or selinux.get("role"):
        problems.append(f"{where}: seLinuxOptions user/role are set")
    if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where}: appArmorProfile Unconfined")
    return problems


# ------------------------------------------------------------------------------ Kubernetes NetworkPolicy


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy.get("spec") or {}
    declared = spec.get("policyTypes")
    if declared:
        return set(declared)
    return {"Ingress", "Egress"} if "egress" in spec else {"Ingress"}


def egress_rules(policies: Sequence[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]) -> list[Any] | None:
    """The egress rules that apply to a pod; None when no policy restricts its egress (all allowed).

    Policies are additive: the pod may send what any selecting policy allows.
    """
    rules: list[Any] = []
    restricted = False
    for policy in policies:
        if policy.get("kind") != "NetworkPolicy" or policy["metadata"].get("namespace") != namespace:
            continue
        spec = policy.get("spec") or {}
        if "Egress" in _policy_types(policy) and selects(spec.get("podSelector") or {}, labels):
            restricted = True
            rules.extend(spec.get("egress") or [])
    return rules if restricted else None


def _port(entry: Mapping[str, Any]) -> tuple[str, int | str]:
    return (str(entry.get("protocol", "TCP")), entry.get("port", "*"))


def egress_problems(  # noqa: C901 -- one rule per branch, read top to bottom
    policies: Sequence[Mapping[str, Any]],
    namespace: str,
    labels: Mapping[str, str],
    allowed: Mapping[str, set[tuple[str, int]]],
) -> list[str]:
    """The pod's egress is exactly ``allowed`` (name -> {(protocol, port)}): each reachable, nothing more."""
    rules = egress_rules(policies, namespace, labels)
    if rules is None:
        return [f"no NetworkPolicy in {namespace} restricts the egress of pods labelled {dict(labels)}"]
    problems = []
    reachable: set[tuple[str, int | str]] = set()
    for index, rule in enumerate(rules):
        peers = rule.get("to") or []
        if not peers:
            problems.append(f"egress rule {index}: no `to`, so it reaches every destination")
        for peer in peers:
            cidr = str((peer.get("ipBlock") or {}).get("cidr", ""))
            if cidr.endswith("/0"):
                problems.append(f"egress rule {index}: ipBlock {cidr} is the whole internet")
            if "namespaceSelector" in peer and not peer["namespaceSelector"] and "podSelector" not in peer:
                problems.append(f"egress rule {index}: an empty namespaceSelector reaches every pod of the cluster")
        ports = rule.get("ports") or []
        if not ports:
            problems.append(f"egress rule {index}: no `ports`, so it reaches every port")
        for entry in ports:
            if entry.get("endPort") is not None:
                problems.append(f"egress rule {index}: port range {entry.get('port')}-{entry['endPort']}")
            reachable.add(_port(entry))
    wanted = {port for ports in allowed.values() for port in ports}
    for protocol, port in sorted(reachable - wanted, key=str):
        problems.append(f"egress to {protocol}/{port} is none of {', '.join(allowed)}")
    for name, ports in allowed.items():
        if not ports <= reachable:
            problems.append(f"no egress to {name} ({', '.join(f'{p}/{n}' for p, n in sorted(ports))})")
    return problems


# ----------------------------------------------------------------------------- S3 (IAM) policies


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _statement_matches(statement: Mapping[str, Any], action: str, resource: str) -> bool:
    import fnmatch

    actions = _as_list(statement.get("Action"))
    resources = _as_list(statement.get("Resource"))
    return any(fnmatch.fnmatchcase(action, pattern) for pattern in actions) and any(
        fnmatch.fnmatchcase(resource, pattern) for pattern in resources
    )


def s3_policy_allows(policy: Mapping[str, Any], action: str, resource: str) -> bool:
    """IAM evaluation for one identity policy: an explicit Deny wins, else any Allow, else denied.

    ``resource`` is an ARN (``arn:aws:s3:::bucket/key``); ``*`` and ``?`` in the policy match as in
    IAM. Conditions are not supported: a statement with one is an error, not silently ignored.
    """
    statements = policy.get("Statement") or []
    if isinstance(statements, Mapping):
        statements = [statements]
    allowed = False
    for statement in statements:
        if any(key in statement for key in ("Condition", "NotAction", "NotResource")):
            raise ValueError(f"statement {statement.get('Sid')!r}: Condition/NotAction/NotResource not supported")
        if _statement_matches(statement, action, resource):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


# ------------------------------------------------------------------------- secrets before start-up

PLACEHOLDER_PREFIX = "change-me"
MIN_SECRET_LENGTH = 16
# Airflow signs JWTs with HS512: a key shorter than the hash is weak (see .env.example).
MIN_LENGTH = {"AIRFLOW_JWT_SECRET": 64}
FERNET_KEYS = frozenset({"AIRFLOW_FERNET_KEY"})
# Credentials go into URLs and ini files (see .env.example): no '@', ':', '/', '%', '#'.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._-]+")


def is_credential(key: str) -> bool:
    """A variable that names a user or holds a secret (a ``*_FILE`` / ``*_PATH`` holds a location)."""
    if _SECRET_LOCATION.search(key):
        return False
    return bool(SECRET_KEY.search(key)) or key.endswith(("_USER", "_USERNAME"))


def _fernet_problem(value: str) -> str | None:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "is not url-safe base64"
    return None if len(value) == 44 and len(raw) == 32 else "is not a Fernet key (32 bytes, url-safe base64)"


def placeholder_secrets(env: Mapping[str, str], example: Mapping[str, str]) -> list[str]:
    """Why ``env`` must not start the stack: a credential of ``.env.example`` still at its placeholder,
    missing, too short, with characters that break a URL, or shared with another credential."""
    problems = []
    seen: dict[str, str] = {}
    for key in sorted(k for k in example if is_credential(k)):
        value = env.get(key)
        if not value:
            problems.append(f"{key}: not set")
            continue
        if value == example[key] or value.lower().startswith(PLACEHOLDER_PREFIX):
            problems.append(f"{key}: still the placeholder of .env.example")
            continue
        is_user = key.endswith(("_USER", "_USERNAME"))
        if key in FERNET_KEYS:
            problem = _fernet_problem(value)
            if problem:
                problems.append(f"{key}: {problem}")
        elif not _SAFE_VALUE.fullmatch(value):
            problems.append(f"{key}: use letters, digits, '.', '_' and '-' only")
        minimum = 3 if is_user else MIN_LENGTH.get(key, MIN_SECRET_LENGTH)
        if len(value) < minimum:
            problems.append(f"{key}: {len(value)} characters, needs at least {minimum}")
        if not is_user:
            if value in seen:
                problems.append(f"{key}: same value as {seen[value]}; give every credential its own")
            seen.setdefault(value, key)
    return problems


def _main(argv: list[str]) -> int:
    """``deploycheck.py check-secrets ENV_EXAMPLE``: the compose stack's first one-shot job."""
    import os
    import sys

    if len(argv) != 2 or argv[0] != "check-secrets":
        print("usage: deploycheck.py check-secrets PATH/TO/.env.example", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        example = parse_env_file(handle.read())
    problems = placeholder_secrets(os.environ, example)
    for problem in problems:
        print(f"refusing to start: {problem} (set it in .env; see .env.example)", file=sys.stderr)
    if not problems:
        print(f"secrets check: {sum(map(is_credential, example))} credentials set, none a placeholder")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
