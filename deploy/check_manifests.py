#!/usr/bin/env python3
"""Project rules for the rendered Kubernetes overlays and the image/compose files.

Schema validity is kubernetes-validate's job; this checks what a schema cannot:
the hardening, probes, shutdown timing, single-writer and shared-secret rules that
deploy/README.md promises. Called by deploy/check.sh:

    check_manifests.py DEPLOY_DIR RENDERED.yaml...

Prints one line per problem and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

import yaml

NAMESPACE = "jct"
UID = 10001
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Defaults of the binaries when the variable is not set.
DEFAULT_GRACE = {"intake": 20, "worker": 30}
EXPECTED_IMAGES = {
    "intake": "ghcr.io/example/jct-intake",
    "worker": "ghcr.io/example/jct-worker",
}

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def labels_of(obj):
    return (obj.get("metadata") or {}).get("labels") or {}


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def container_env(container, configmaps, secrets_referenced):
    """The container's environment as far as it is static (ConfigMaps and literals)."""
    env = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref is not None:
            env.update(configmaps.get(ref, {}))
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "valueFrom" in var:
            env[var["name"]] = None  # from a Secret or the downward API
            ref = (var["valueFrom"].get("secretKeyRef") or {}).get("name")
            if ref:
                secrets_referenced.add(ref)
    return env


def check_container(where, c, init):
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem must be true")
    if sc.get("privileged"):
        problem(where, "must not be privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problem(where, "capabilities.drop must contain ALL")
    if caps.get("add"):
        problem(where, f"adds capabilities {caps['add']}")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (res.get(kind) or {}):
                problem(where, f"resources.{kind}.{resource} missing")
    image = c.get("image", "")
    if not re.search(r":[\w][\w.-]*$", image.split("/")[-1]) or image.endswith(":latest"):
        problem(where, f"image {image!r} needs an explicit, non-latest tag")
    if not init:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "grpc" not in (c.get(probe) or {}):
                problem(where, f"{probe} must be a native gRPC probe")


# Where each component reads its bearer tokens: always a file from a Secret.
TOKEN_FILE_VARIABLE = {"intake": "JCT_AUTH_TOKENS_FILE", "worker": "JCT_WORKER_TOKEN_FILE"}


def check_token_file(where, component, env, container, pod, secrets):
    """Authentication on, from a Secret the overlay generates; never JCT_INSECURE."""
    if component == "intake" and str(env.get("JCT_INSECURE", "false")).lower() == "true":
        problem(where, "JCT_INSECURE=true: mount a tokens file instead (JCT_AUTH_TOKENS_FILE)")
    variable = TOKEN_FILE_VARIABLE.get(component)
    if variable is None:
        return
    check_secret_file(where, variable, env, container, pod, secrets)


def check_secret_file(where, variable, env, container, pod, secrets):
    """`variable` names a file on a read-only volume of a Secret the overlay generates."""
    path = env.get(variable)
    if not path:
        problem(where, f"{variable} must name a file mounted from a Secret")
        return
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            secret = (volumes.get(mount["name"], {}).get("secret") or {}).get("secretName")
            if secret is None:
                problem(where, f"{variable} {path} is not on a Secret volume")
            elif secret not in secrets:
                problem(where, f"{variable} comes from Secret {secret!r} that the overlay does not generate")
            if mount.get("readOnly") is not True:
                problem(where, f"the {variable} mount must be readOnly")
            return
    problem(where, f"{variable} {path} is not on any mounted volume")


# What the command executor's sandbox binds read-only into every task
# (worker-service/src/executor/bwrap.rs SYSTEM_DIRS): a worker secret there is
# readable by every task program that shares the worker's uid.
SANDBOX_VISIBLE_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def check_worker_secrets_hidden(where, component, env):
    """The worker's token and TLS key live outside what the sandbox shows."""
    if component != "worker":
        return
    for variable in ("JCT_WORKER_TOKEN_FILE",) + TLS_FILES["worker"]:
        path = str(env.get(variable) or "")
        if any(path == d or path.startswith(d + "/") for d in SANDBOX_VISIBLE_DIRS):
            problem(where, f"{variable} {path} is under a directory the task sandbox shows; "
                           "mount it under /run/secrets")


TLS_FILES = {
    "intake": ("JCT_TLS_CERT_FILE", "JCT_TLS_KEY_FILE", "JCT_TLS_CLIENT_CA_FILE"),
    "worker": ("JCT_TLS_CA_FILE", "JCT_TLS_CERT_FILE", "JCT_TLS_KEY_FILE"),
}


def check_tls(where, component, env, container, pod, certificates):
    """TLS files come from a cert-manager Secret; a TLS intake is probed on its
    plaintext health listener (kubelet gRPC probes cannot speak TLS)."""
    names = [v for v in TLS_FILES.get(component, ()) if env.get(v)]
    if not names:
        return
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for variable in names:
        path = env[variable]
        mount = next((m for m in container.get("volumeMounts") or []
                      if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        secret = ((volumes.get(mount["name"], {}) if mount else {}).get("secret") or {}).get("secretName")
        if secret is None or secret not in certificates:
            problem(where, f"{variable} {path} must come from a Secret a Certificate in the overlay writes")
        elif mount.get("readOnly") is not True:
            problem(where, f"the {variable} mount must be readOnly")
    if component == "worker" and not str(env.get("JCT_INTAKE_URL", "")).startswith("https://"):
        problem(where, "TLS files need JCT_INTAKE_URL=https://...")
    if component == "intake" and env.get("JCT_TLS_CERT_FILE"):
        health = str(env.get("JCT_HEALTH_ADDR") or "")
        port = health.rsplit(":", 1)[-1] if health else None
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (container.get(probe) or {}).get("grpc") or {}
            if str(grpc.get("port")) != port:
                problem(where, f"{probe} must use the plaintext health port of JCT_HEALTH_ADDR under TLS")


def check_overlay(path, objects):
    name = path.stem
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Namespace":
            if obj["metadata"]["name"] != NAMESPACE:
                problem(where, f"namespace must be {NAMESPACE}")
        elif obj["metadata"].get("namespace") != NAMESPACE:
            problem(where, f"metadata.namespace must be {NAMESPACE}")
        if labels_of(obj).get("app.kubernetes.io/part-of") != "jct":
            problem(where, "label app.kubernetes.io/part-of=jct missing")

    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in by_kind.get("ConfigMap", [])}
    secrets = {o["metadata"]["name"] for o in by_kind.get("Secret", [])}
    certificates = {o["spec"].get("secretName"): o for o in by_kind.get("Certificate", [])}
    for cert in by_kind.get("Certificate", []):
        cwhere = f"{name}: Certificate/{cert['metadata']['name']}"
        if not (cert["spec"].get("issuerRef") or {}).get("name"):
            problem(cwhere, "needs an issuerRef")
        if (cert["spec"].get("privateKey") or {}).get("rotationPolicy") != "Always":
            problem(cwhere, "privateKey.rotationPolicy must be Always (a new key at each renewal)")
    accounts = {o["metadata"]["name"]: o for o in by_kind.get("ServiceAccount", [])}
    pvcs = {o["metadata"]["name"]: o for o in by_kind.get("PersistentVolumeClaim", [])}
    policies = by_kind.get("NetworkPolicy", [])
    pdbs = by_kind.get("PodDisruptionBudget", [])
    components_seen = set()

    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        template = obj["spec"]["template"]
        tlabels = labels_of(template)
        component = tlabels.get("app.kubernetes.io/component")
        components_seen.add(component)
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"):
            if key not in tlabels:
                problem(where, f"pod template label {key} missing")
        pod = template["spec"]

        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            problem(where, "pod runAsNonRoot must be true")
        if psc.get("runAsUser") != UID:
            problem(where, f"pod runAsUser must be {UID}")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(where, "pod seccompProfile must be RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problem(where, "automountServiceAccountToken must be false")
        account = accounts.get(pod.get("serviceAccountName"))
        if account is None:
            problem(where, f"ServiceAccount {pod.get('serviceAccountName')!r} not in the overlay")
        elif account.get("automountServiceAccountToken") is not False:
            problem(where, "its ServiceAccount must set automountServiceAccountToken: false")

        secrets_referenced = set()
        grace_needed = 0
        for init in (True, False):
            for c in pod.get("initContainers" if init else "containers") or []:
                cwhere = f"{where} container {c['name']}"
                check_container(cwhere, c, init)
                env = container_env(c, configmaps, secrets_referenced)
                expected = EXPECTED_IMAGES.get(component)
                if expected and not c.get("image", "").startswith(expected + ":"):
                    problem(cwhere, f"image should be {expected}:<tag>")
                if init:
                    continue
                grace = env.get("JCT_SHUTDOWN_GRACE_SECONDS") or DEFAULT_GRACE.get(component, 0)
                sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
                grace_needed = max(grace_needed, int(grace) + int(sleep))
                if component == "intake" and not sleep:
                    problem(cwhere, "the intake needs a preStop sleep so no request is cut")
                check_token_file(cwhere, component, env, c, pod, secrets)
                check_tls(cwhere, component, env, c, pod, certificates)
                check_worker_secrets_hidden(cwhere, component, env)
                if component == "worker" and env.get("JCT_NETWORK_ISOLATION") != "off":
                    problem(cwhere, "JCT_NETWORK_ISOLATION must be off: the pod has no CAP_SYS_ADMIN")
                if component == "intake":
                    url = env.get("DATABASE_URL", "")
                    replicas = obj["spec"].get("replicas", 1)
                    if url is not None and replicas > 1:
                        problem(where, "more than one replica needs DATABASE_URL from a Secret (PostgreSQL)")
                    migrate_on_start = env.get("JCT_MIGRATE_ON_START", "true") != "false"
                    if replicas > 1 and migrate_on_start:
                        problem(where, "several replicas must not all migrate on start: set JCT_MIGRATE_ON_START=false")
                    # each replica signs ListTasks page tokens; a token one
                    # replica issued must verify on the next, so they share a key
                    if replicas > 1:
                        check_secret_file(where, "JCT_PAGE_TOKEN_KEY_FILE", env, c, pod, secrets)
                    if not migrate_on_start and not any(
                        "migrate" in (i.get("args") or []) for i in pod.get("initContainers") or []
                    ):
                        problem(where, "JCT_MIGRATE_ON_START=false needs an `intake-service migrate` init container")
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= grace_needed:
            problem(where, f"terminationGracePeriodSeconds {tgps} must exceed drain grace + preStop ({grace_needed})")
        for ref in secrets_referenced - secrets:
            problem(where, f"references Secret {ref!r} that the overlay does not generate")

        # Never two writers on a ReadWriteOnce volume.
        for volume in pod.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is None:
                continue
            pvc = pvcs.get(claim)
            if pvc is None:
                problem(where, f"PersistentVolumeClaim {claim!r} not in the overlay")
                continue
            modes = set(pvc["spec"].get("accessModes") or [])
            if obj["kind"] == "Deployment" and modes <= {"ReadWriteOnce", "ReadWriteOncePod"}:
                if obj["spec"].get("replicas", 1) != 1:
                    problem(where, f"{claim} is {sorted(modes)}: exactly one replica allowed")
                if (obj["spec"].get("strategy") or {}).get("type") != "Recreate":
                    problem(where, f"{claim} is {sorted(modes)}: strategy must be Recreate")

        if not any(selects(p["spec"].get("podSelector"), tlabels) for p in policies):
            problem(where, "no NetworkPolicy selects these pods")
        if obj["kind"] == "Deployment" and obj["spec"].get("replicas", 1) > 1 and component == "intake":
            if not any(selects(p["spec"].get("selector"), tlabels) for p in pdbs):
                problem(where, "several intake replicas need a PodDisruptionBudget")

    for component in ("intake", "worker"):
        if component not in components_seen:
            problem(name, f"no {component} workload")
    if not any(o["metadata"]["name"] == "jct-intake" for o in by_kind.get("Service", [])):
        problem(name, "Service jct-intake missing (workers connect to http://jct-intake:50051)")


def check_images_and_compose(deploy_dir):
    dockerfile = deploy_dir / "docker" / "Dockerfile"
    stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text()))
    for stage in ("intake", "worker"):
        if stage not in stages:
            problem(str(dockerfile), f"build target {stage!r} missing")
    ignore = deploy_dir / "docker" / "Dockerfile.dockerignore"
    patterns = set(ignore.read_text().split()) if ignore.exists() else set()
    for needed in ("target/", ".git", "**/*.db", "traces/"):
        if needed not in patterns:
            problem(str(ignore), f"should exclude {needed}")

    compose = yaml.safe_load((deploy_dir / "compose.yaml").read_text())
    services = compose.get("services") or {}
    for service, target in (("intake", "intake"), ("worker", "worker")):
        svc = services.get(service)
        if svc is None:
            problem("compose.yaml", f"service {service} missing")
            continue
        build = svc.get("build") or {}
        if build.get("target") not in stages:
            problem("compose.yaml", f"{service}: build target {build.get('target')!r} is not a Dockerfile stage")
        if (deploy_dir / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() != dockerfile.resolve():
            problem("compose.yaml", f"{service}: build does not use deploy/docker/Dockerfile")
        if not str(svc.get("image", "")).startswith(EXPECTED_IMAGES[target] + ":"):
            problem("compose.yaml", f"{service}: image should be {EXPECTED_IMAGES[target]}:<tag>")
    if "postgres" not in ((services.get("postgres") or {}).get("profiles") or []):
        problem("compose.yaml", "postgres service must be behind the `postgres` profile")


def main():
    deploy_dir = Path(sys.argv[1])
    for rendered in sys.argv[2:]:
        path = Path(rendered)
        objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
        check_overlay(path, objects)
    check_images_and_compose(deploy_dir)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
