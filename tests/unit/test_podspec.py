"""The pod runner's pure part (hack/localdev/podspec.py): env and volumes from a pod spec, no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from localdev import podspec
from localdev.podspec import ContainerConfigError


def make_pod(
    containers: list[k.V1Container] | None = None, volumes: list[k.V1Volume] | None = None
) -> k.V1Pod:
    return k.V1Pod(
        metadata=k.V1ObjectMeta(name="fetch-abc", namespace="team-a", uid="uid-1"),
        spec=k.V1PodSpec(
            containers=containers or [k.V1Container(name="main")],
            node_name="md-node-a",
            service_account_name="fetcher",
            volumes=volumes,
        ),
    )


def var_from(name: str, **source: Any) -> k.V1EnvVar:
    return k.V1EnvVar(name=name, value_from=k.V1EnvVarSource(**source))


# -- env -------------------------------------------------------------------------------------------


def test_literal_field_ref_and_empty_values() -> None:
    container = k.V1Container(
        name="main",
        env=[
            k.V1EnvVar(name="LITERAL", value="x"),
            k.V1EnvVar(name="EMPTY"),
            var_from("POD", field_ref=k.V1ObjectFieldSelector(field_path="metadata.name")),
            var_from("NS", field_ref=k.V1ObjectFieldSelector(field_path="metadata.namespace")),
            var_from("UID", field_ref=k.V1ObjectFieldSelector(field_path="metadata.uid")),
            var_from("NODE", field_ref=k.V1ObjectFieldSelector(field_path="spec.nodeName")),
            var_from("SA", field_ref=k.V1ObjectFieldSelector(field_path="spec.serviceAccountName")),
            var_from("IP", field_ref=k.V1ObjectFieldSelector(field_path="status.podIP")),
            var_from("UNKNOWN", field_ref=k.V1ObjectFieldSelector(field_path="metadata.labels['x']")),
        ],
    )
    env = podspec.resolve_env(
        make_pod([container]), container, secrets={}, config_maps={}, base={"HOME": "/tmp"}
    )
    assert env == {
        "HOME": "/tmp",
        "LITERAL": "x",
        "EMPTY": "",
        "POD": "fetch-abc",
        "NS": "team-a",
        "UID": "uid-1",
        "NODE": "md-node-a",
        "SA": "fetcher",
        "IP": "127.0.0.1",
        "UNKNOWN": "",
    }


def test_secret_and_config_map_key_refs() -> None:
    container = k.V1Container(
        name="main",
        env=[
            var_from("TOKEN", secret_key_ref=k.V1SecretKeySelector(name="hf", key="token")),
            var_from("MODE", config_map_key_ref=k.V1ConfigMapKeySelector(name="cfg", key="mode")),
            var_from("OPT", secret_key_ref=k.V1SecretKeySelector(name="gone", key="k", optional=True)),
        ],
    )
    refs = podspec.env_refs(container)
    assert refs.secrets == {"hf", "gone"} and refs.config_maps == {"cfg"}
    assert not refs.from_secrets and not refs.from_config_maps
    env = podspec.resolve_env(
        make_pod([container]),
        container,
        secrets={"hf": {"token": "hf_x"}, "gone": None},
        config_maps={"cfg": {"mode": "fast"}},
    )
    assert env == {"TOKEN": "hf_x", "MODE": "fast"}  # an optional missing key is left unset


@pytest.mark.parametrize(
    ("secrets", "config_maps", "message"),
    [
        ({"hf": None}, {"cfg": {"mode": "m"}}, "secret hf/token not found"),
        ({"hf": {"other": "v"}}, {"cfg": {"mode": "m"}}, "secret hf/token not found"),
        ({"hf": {"token": "t"}}, {"cfg": {}}, "configmap cfg/mode not found"),
    ],
)
def test_missing_required_key_is_a_container_config_error(
    secrets: podspec.ObjectData, config_maps: podspec.ObjectData, message: str
) -> None:
    container = k.V1Container(
        name="main",
        env=[
            var_from("TOKEN", secret_key_ref=k.V1SecretKeySelector(name="hf", key="token")),
            var_from("MODE", config_map_key_ref=k.V1ConfigMapKeySelector(name="cfg", key="mode")),
        ],
    )
    with pytest.raises(ContainerConfigError, match=message):
        podspec.resolve_env(make_pod([container]), container, secrets=secrets, config_maps=config_maps)


def test_env_from_with_prefix_and_env_wins() -> None:
    container = k.V1Container(
        name="main",
        env_from=[
            k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name="s"), prefix="S_"),
            k.V1EnvFromSource(config_map_ref=k.V1ConfigMapEnvSource(name="c")),
            k.V1EnvFromSource(config_map_ref=k.V1ConfigMapEnvSource(name="maybe", optional=True)),
        ],
        env=[k.V1EnvVar(name="A", value="from-env")],
    )
    refs = podspec.env_refs(container)
    assert refs.from_secrets == {"s"} and refs.from_config_maps == {"c", "maybe"}
    env = podspec.resolve_env(
        make_pod([container]),
        container,
        secrets={"s": {"KEY": "secret"}},
        config_maps={"c": {"A": "from-configmap", "B": "b"}, "maybe": None},
        base={"A": "base", "HOME": "/tmp"},
    )
    assert env == {"S_KEY": "secret", "A": "from-env", "B": "b", "HOME": "/tmp"}
    with pytest.raises(ContainerConfigError, match="configmap c not found"):
        podspec.resolve_env(make_pod([container]), container, secrets={"s": {}}, config_maps={"c": None})


# -- volumes ---------------------------------------------------------------------------------------


def test_volume_paths_per_kind(tmp_path: Path) -> None:
    pod = make_pod(
        volumes=[
            k.V1Volume(name="root", host_path=k.V1HostPathVolumeSource(path="/var/lib/modeldepot")),
            k.V1Volume(
                name="data", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(claim_name="c")
            ),
            k.V1Volume(name="scratch", empty_dir=k.V1EmptyDirVolumeSource()),
            k.V1Volume(name="token", projected=k.V1ProjectedVolumeSource(sources=[])),
            k.V1Volume(name="cfg", config_map=k.V1ConfigMapVolumeSource(name="cfg")),
            k.V1Volume(name="csi", csi=k.V1CSIVolumeSource(driver="x")),  # not emulated
        ]
    )
    assert podspec.claim_names(pod) == ["c"]
    cluster, pod_dir, pv = tmp_path / "cluster", tmp_path / "pod", tmp_path / "volumes" / "pvc-1"
    paths = podspec.volume_paths(pod, cluster_dir=cluster, pod_dir=pod_dir, claims={"c": pv})
    assert [(v.name, v.path, v.kind, v.create, v.projected) for v in paths] == [
        ("root", cluster / "nodes/md-node-a/var/lib/modeldepot", "hostPath", True, False),
        ("data", pv, "persistentVolumeClaim", False, False),
        ("scratch", pod_dir / "volumes/scratch", "emptyDir", True, False),
        ("token", pod_dir / "volumes/token", "projected", True, True),
        ("cfg", pod_dir / "volumes/cfg", "projected", True, True),
    ]


def test_pv_host_path_of_host_path_and_local_volumes() -> None:
    host = k.V1PersistentVolume(spec=k.V1PersistentVolumeSpec(host_path=k.V1HostPathVolumeSource(path="/a")))
    local = k.V1PersistentVolume(spec=k.V1PersistentVolumeSpec(local=k.V1LocalVolumeSource(path="/b")))
    assert podspec.pv_host_path(host) == Path("/a") and podspec.pv_host_path(local) == Path("/b")


def test_projected_service_account_volume() -> None:
    volume = k.V1Volume(
        name="kube-api-access",
        projected=k.V1ProjectedVolumeSource(
            sources=[
                k.V1VolumeProjection(
                    service_account_token=k.V1ServiceAccountTokenProjection(path="token", audience="api")
                ),
                k.V1VolumeProjection(
                    config_map=k.V1ConfigMapProjection(
                        name="kube-root-ca.crt", items=[k.V1KeyToPath(key="ca.crt", path="ca.crt")]
                    )
                ),
                k.V1VolumeProjection(
                    downward_api=k.V1DownwardAPIProjection(
                        items=[
                            k.V1DownwardAPIVolumeFile(
                                path="namespace",
                                field_ref=k.V1ObjectFieldSelector(field_path="metadata.namespace"),
                            ),
                            k.V1DownwardAPIVolumeFile(
                                path="name", field_ref=k.V1ObjectFieldSelector(field_path="metadata.name")
                            ),
                        ]
                    )
                ),
                k.V1VolumeProjection(secret=k.V1SecretProjection(name="extra")),
            ]
        ),
    )
    refs = podspec.projected_refs(volume)
    assert refs.tokens == [podspec.TokenRequest("token", "api", 3607)]
    assert refs.config_maps == ["kube-root-ca.crt"] and refs.secrets == ["extra"]
    files = podspec.projected_files(
        make_pod(),
        volume,
        secrets={"extra": {"a": b"1", "b": b"2"}},
        config_maps={"kube-root-ca.crt": {"ca.crt": b"PEM", "other": b"x"}},
        tokens={"token": "jwt"},
    )
    assert files == {
        "token": b"jwt",
        "ca.crt": b"PEM",
        "namespace": b"team-a",
        "name": b"fetch-abc",
        "a": b"1",
        "b": b"2",
    }


def test_secret_volume_items_select_keys() -> None:
    volume = k.V1Volume(
        name="s",
        secret=k.V1SecretVolumeSource(
            secret_name="hf",
            items=[k.V1KeyToPath(key="token", path="t"), k.V1KeyToPath(key="absent", path="x")],
        ),
    )
    refs = podspec.projected_refs(volume)
    assert refs.secrets == ["hf"] and not refs.tokens and not refs.config_maps
    files = podspec.projected_files(
        make_pod(), volume, secrets={"hf": {"token": b"v", "other": b"o"}}, config_maps={}, tokens={}
    )
    assert files == {"t": b"v"}


# -- processes and status ----------------------------------------------------------------------------


def test_container_argv_binds_mounts_and_uses_the_image_entrypoint(tmp_path: Path) -> None:
    container = k.V1Container(
        name="main", image="ghcr.io/x/modeldepot:1", args=["fetch"], working_dir="/work"
    )
    data = tmp_path / "data"
    argv = podspec.container_argv(
        container,
        [(data, "/data")],
        tmp_path / "term",
        Path("/run/stash"),
        {"modeldepot": ["/venv/bin/modeldepot"]},
        keep=["/data/venv", "/usr"],
        is_dir=lambda p: p == data,
    )
    assert argv[:7] == ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    assert argv[8:] == ["sh", "/venv/bin/modeldepot", "fetch"]
    script = argv[7].splitlines()
    assert script[:3] == ["set -e", "mkdir -p /run/stash", "mount --rbind / /run/stash"]
    assert "[ -e /data ] || mkdir -p /data" in script
    assert f"mount --bind /run/stash{data} /data" in script
    assert "[ -e /dev/termination-log ] || { mkdir -p /dev; touch /dev/termination-log; }" in script
    assert "mkdir -p /data/venv && mount --bind /run/stash/data/venv /data/venv" in script  # kept visible
    assert not any("/usr" in line for line in script)
    assert script[-2:] == ["cd /work", 'exec "$@"']
    with pytest.raises(RuntimeError, match="no command"):
        podspec.container_argv(
            k.V1Container(name="x", image="busybox"), [], tmp_path / "t", Path("/s"), {}, []
        )


def test_status_entries() -> None:
    container = k.V1Container(name="main", image="busybox")
    running = podspec.container_status(container, {"running": {"startedAt": "t"}}, ready=True)
    assert running["started"] and running["ready"] and running["restartCount"] == 0
    assert not podspec.container_status(container, {"terminated": {"exitCode": 0}})["started"]
    assert {c["type"]: c["status"] for c in podspec.conditions("t", ready=False)} == {
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
        "PodScheduled": "True",
    }
