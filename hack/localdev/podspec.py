"""The pod runner's pure part: a pod spec plus already-fetched objects -> env values and host paths.

`podrunner.PodRunner` does the I/O (reads Secrets, ConfigMaps, claims and PersistentVolumes,
requests tokens, makes directories, writes files); the functions here decide what it means, as the
kubelet would, and take the pod and container as the Kubernetes client's model objects
(`V1Pod`, `V1Container`, ...). No cluster is needed to test them (tests/unit/test_podspec.py).

Env (`resolve_env`): literal values, `secretKeyRef`, `configMapKeyRef`, `envFrom` (Secret and
ConfigMap, with `prefix`), downward-API `fieldRef`s (pod name, namespace, uid, node name, service
account, pod and host IP); `env` wins over `envFrom`. A missing non-optional key or object raises
`ContainerConfigError` (the kubelet reports `CreateContainerConfigError` and retries).

Volumes (`volume_paths`): hostPath -> `<cluster>/nodes/<node>/<path>`, PVC -> the bound
PersistentVolume's directory, emptyDir and projected/secret/configMap -> `<pod dir>/volumes/<name>`;
`projected_files` lists the files a projected/secret/configMap volume holds.

Processes and status: `container_argv` (the `unshare --mount` command line with the bind mounts),
`container_status` and `conditions` (the status entries a kubelet reports).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POD_IP = "127.0.0.1"

# Secret/ConfigMap name -> its data (Secret values decoded), or None when the object does not exist
ObjectData = Mapping[str, Mapping[str, str] | None]


class ContainerConfigError(RuntimeError):
    """A container's env references a missing Secret/ConfigMap key (the kubelet keeps retrying)."""


@dataclass(frozen=True)
class EnvRefs:
    """The Secrets and ConfigMaps a container's env names, to fetch before `resolve_env`."""

    secrets: frozenset[str] = frozenset()
    config_maps: frozenset[str] = frozenset()
    # of those, the ones `envFrom` names (a failure to read them is not a missing key)
    from_secrets: frozenset[str] = frozenset()
    from_config_maps: frozenset[str] = frozenset()


def env_refs(container: Any) -> EnvRefs:
    secrets: set[str] = set()
    config_maps: set[str] = set()
    from_secrets: set[str] = set()
    from_config_maps: set[str] = set()
    for source in container.env_from or []:
        if source.secret_ref:
            from_secrets.add(source.secret_ref.name)
        if source.config_map_ref:
            from_config_maps.add(source.config_map_ref.name)
    for var in container.env or []:
        if var.value is None and var.value_from is not None:
            if var.value_from.secret_key_ref:
                secrets.add(var.value_from.secret_key_ref.name)
            elif var.value_from.config_map_key_ref:
                config_maps.add(var.value_from.config_map_key_ref.name)
    return EnvRefs(
        frozenset(secrets | from_secrets),
        frozenset(config_maps | from_config_maps),
        frozenset(from_secrets),
        frozenset(from_config_maps),
    )


def field_values(pod: Any) -> dict[str, str]:
    """The downward-API fields the pod runner knows (pods share the host network)."""
    return {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name or "default",
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }


def resolve_env(
    pod: Any,
    container: Any,
    *,
    secrets: ObjectData,
    config_maps: ObjectData,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment: `base`, then `envFrom`, then `env`, as the kubelet orders them."""
    env = dict(base or {})
    fields = field_values(pod)
    for source in container.env_from or []:
        for ref, objects, kind in (
            (source.secret_ref, secrets, "secret"),
            (source.config_map_ref, config_maps, "configmap"),
        ):
            if not ref:
                continue
            data = objects.get(ref.name)
            if data is None:
                if not ref.optional:
                    raise ContainerConfigError(f"{kind} {ref.name} not found")
                continue
            for key, value in data.items():
                env[(source.prefix or "") + key] = value
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = var.value
        elif var.value_from is None:
            env[var.name] = ""
        elif var.value_from.secret_key_ref or var.value_from.config_map_key_ref:
            secret_ref = var.value_from.secret_key_ref
            ref = secret_ref or var.value_from.config_map_key_ref
            data = (secrets if secret_ref else config_maps).get(ref.name)
            if data is not None and ref.key in data:
                env[var.name] = data[ref.key]
            elif not ref.optional:
                kind = "secret" if secret_ref else "configmap"
                raise ContainerConfigError(f"{kind} {ref.name}/{ref.key} not found")
        elif var.value_from.field_ref:
            env[var.name] = fields.get(var.value_from.field_ref.field_path, "")
    return env


# -- volumes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumePath:
    """Where a pod volume lives on this host.

    `kind`: hostPath, persistentVolumeClaim (the directory exists already), emptyDir, or projected
    (also secret/configMap volumes: fill it with `projected_files`).
    """

    name: str
    path: Path
    kind: str

    @property
    def projected(self) -> bool:
        return self.kind == "projected"

    @property
    def create(self) -> bool:
        """Whether the pod runner makes the directory (a claim's volume is provisioned already)."""
        return self.kind != "persistentVolumeClaim"


def claim_names(pod: Any) -> list[str]:
    """The PersistentVolumeClaims the pod's volumes name, to resolve before `volume_paths`."""
    return [v.persistent_volume_claim.claim_name for v in pod.spec.volumes or [] if v.persistent_volume_claim]


def pv_host_path(pv: Any) -> Path:
    """The directory of a hostPath or local PersistentVolume."""
    return Path(pv.spec.host_path.path if pv.spec.host_path else pv.spec.local.path)


def volume_paths(
    pod: Any, *, cluster_dir: Path, pod_dir: Path, claims: Mapping[str, Path]
) -> list[VolumePath]:
    """Each pod volume's host directory (`claims`: claim name -> its bound volume's directory).

    Volume kinds the pod runner does not emulate are left out (containers mounting them get
    nothing mounted there).
    """
    out: list[VolumePath] = []
    for volume in pod.spec.volumes or []:
        if volume.host_path:
            host = volume.host_path.path.lstrip("/")
            out.append(VolumePath(volume.name, cluster_dir / "nodes" / pod.spec.node_name / host, "hostPath"))
        elif volume.persistent_volume_claim:
            claim = volume.persistent_volume_claim.claim_name
            out.append(VolumePath(volume.name, claims[claim], "persistentVolumeClaim"))
        elif volume.empty_dir is not None:
            out.append(VolumePath(volume.name, pod_dir / "volumes" / volume.name, "emptyDir"))
        elif volume.projected or volume.secret or volume.config_map:
            out.append(VolumePath(volume.name, pod_dir / "volumes" / volume.name, "projected"))
    return out


@dataclass(frozen=True)
class TokenRequest:
    """A service-account token a projected volume holds at `path`."""

    path: str
    audience: str | None
    expiration_seconds: int


@dataclass(frozen=True)
class ProjectedRefs:
    """What to fetch to fill a projected/secret/configMap volume."""

    secrets: list[str] = field(default_factory=list)
    config_maps: list[str] = field(default_factory=list)
    tokens: list[TokenRequest] = field(default_factory=list)


def _sources(volume: Any) -> list[Any]:
    return list(volume.projected.sources or []) if volume.projected else [volume]


def _secret_name(ref: Any) -> str:
    return str(getattr(ref, "secret_name", None) or ref.name)


def projected_refs(volume: Any) -> ProjectedRefs:
    refs = ProjectedRefs()
    for source in _sources(volume):
        if getattr(source, "service_account_token", None):
            spec = source.service_account_token
            refs.tokens.append(TokenRequest(spec.path, spec.audience, spec.expiration_seconds or 3607))
        if getattr(source, "config_map", None):
            refs.config_maps.append(source.config_map.name)
        if getattr(source, "secret", None):
            refs.secrets.append(_secret_name(source.secret))
    return refs


def projected_files(
    pod: Any,
    volume: Any,
    *,
    secrets: Mapping[str, Mapping[str, bytes]],
    config_maps: Mapping[str, Mapping[str, bytes]],
    tokens: Mapping[str, str],
) -> dict[str, bytes]:
    """Relative path -> content of the files of a projected/secret/configMap volume, in source order.

    `tokens` maps a token's path (`TokenRequest.path`) to the token the TokenRequest API issued.
    """
    files: dict[str, bytes] = {}

    def add_items(data: Mapping[str, bytes], items: Any) -> None:
        if items:
            for item in items:
                if item.key in data:
                    files[item.path] = data[item.key]
        else:
            files.update(data)

    for source in _sources(volume):
        if getattr(source, "service_account_token", None):
            path = source.service_account_token.path
            files[path] = tokens[path].encode()
        if getattr(source, "config_map", None):
            add_items(config_maps[source.config_map.name], source.config_map.items)
        if getattr(source, "secret", None):
            add_items(secrets[_secret_name(source.secret)], source.secret.items)
        if getattr(source, "downward_api", None):
            for item in source.downward_api.items or []:
                if item.field_ref and item.field_ref.field_path == "metadata.namespace":
                    files[item.path] = pod.metadata.namespace.encode()
                elif item.field_ref and item.field_ref.field_path == "metadata.name":
                    files[item.path] = pod.metadata.name.encode()
    return files


# -- processes and status ----------------------------------------------------------------------------


def container_argv(
    container: Any,
    mounts: list[tuple[Path, str]],
    termination_file: Path,
    stash: Path,
    entrypoints: Mapping[str, list[str]],
    keep: Iterable[str],
    is_dir: Callable[[Path], bool] = Path.is_dir,
) -> list[str]:
    """The command line that runs a container as a local process in a private mount namespace.

    `mounts` are (host source, container path); `entrypoints` map an image-name fragment to the
    command of a container that gives none; `keep` are host paths (the interpreter, the project)
    that stay visible even under a mounted target. `stash` is where the host root is viewed.
    """
    command = list(container.command or [])
    if not command:
        for fragment, entrypoint in entrypoints.items():
            if fragment in (container.image or ""):
                command = list(entrypoint)
                break
    argv = command + list(container.args or [])
    if not argv:
        raise RuntimeError(
            f"container {container.name}: no command and no known entrypoint for {container.image}"
        )
    termination_path = container.termination_message_path or "/dev/termination-log"
    binds = sorted([*mounts, (termination_file, termination_path)], key=lambda m: len(Path(m[1]).parts))
    # Sources are read through a private view of the host root taken before any mount, so a
    # mount at /tmp cannot hide a source (or this repo, when it lives under /tmp).
    script = ["set -e", f"mkdir -p {stash}", f"mount --rbind / {stash}"]
    for source, target in binds:
        quoted = shlex.quote(target)
        if is_dir(source):
            script.append(f"[ -e {quoted} ] || mkdir -p {quoted}")
        else:
            script.append(
                f"[ -e {quoted} ] || {{ mkdir -p {shlex.quote(str(Path(target).parent))}; touch {quoted}; }}"
            )
        script.append(f"mount --bind {shlex.quote(f'{stash}{source}')} {quoted}")
    # the "image": this interpreter and the project stay visible even under a mounted target
    for kept in sorted(set(keep)):
        if any(kept == t or kept.startswith(t.rstrip("/") + "/") for _, t in binds):
            quoted = shlex.quote(kept)
            script.append(f"mkdir -p {quoted} && mount --bind {shlex.quote(f'{stash}{kept}')} {quoted}")
    if container.working_dir:
        script.append(f"cd {shlex.quote(container.working_dir)}")
    script.append('exec "$@"')
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "\n".join(script),
        "sh",
        *argv,
    ]


def container_status(container: Any, state: dict[str, Any], ready: bool = False) -> dict[str, Any]:
    return {
        "name": container.name,
        "image": container.image,
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def conditions(now: str, *, ready: bool) -> list[dict[str, Any]]:
    value = "True" if ready else "False"
    return [
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": value, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]
