#!/usr/bin/env bash
# Regenerates pkg/generated/openapi/zz_generated.openapi.go, the OpenAPI
# definitions (GetOpenAPIDefinitions) served by the API server on /openapi/v2
# and /openapi/v3 and used by server-side apply's type converter.
#
# Usage (from anywhere; paths are resolved against the repo root):
#   bash hack/update-openapi.sh
#
# The generator is k8s.io/kube-openapi/cmd/openapi-gen at the version pinned in
# go.mod (kept there by hack/tools/tools.go), so the output is reproducible.

set -o errexit
set -o nounset
set -o pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

MODULE="github.com/svcplane/svcplane"
OUTPUT_DIR="pkg/generated/openapi"
OUTPUT_PKG="${MODULE}/${OUTPUT_DIR}"
OUTPUT_FILE="zz_generated.openapi.go"
BOILERPLATE="hack/boilerplate.go.txt"
# Known upstream API-rule violations (k8s.io/api naming quirks etc.) are
# written here instead of failing the run; review the diff on regeneration.
REPORT_FILE="hack/openapi-api-rule-violations.list"

# Every package whose types we serve, plus every package those types reference.
# A referenced package missing here leaves a dangling Ref(...) in the output;
# pkg/generated/openapi's TestAllReferencesResolve catches that.
INPUT_PKGS=(
  "${MODULE}/pkg/apis/svcplane/v1"
  k8s.io/api/core/v1
  k8s.io/api/apps/v1
  k8s.io/api/discovery/v1
  k8s.io/api/autoscaling/v1
  k8s.io/apimachinery/pkg/apis/meta/v1
  k8s.io/apimachinery/pkg/runtime
  k8s.io/apimachinery/pkg/util/intstr
  k8s.io/apimachinery/pkg/api/resource
  k8s.io/apimachinery/pkg/version
)

# Our own API packages get a zz_generated.model_name.go (OpenAPIModelName methods, from their
# +k8s:openapi-model-package tag) so their definitions are named like upstream's
# (io.svcplane.v1.LoadBalancerIPPool), not after the Go import path. Everything
# else is read-only: k8s.io/* ship their own model-name files.
MODEL_NAME_FILE="zz_generated.model_name.go"
READONLY_PKGS=()
for pkg in "${INPUT_PKGS[@]}"; do
  case "${pkg}" in
    "${MODULE}"/*) ;;
    *) READONLY_PKGS+=(--readonly-pkg "${pkg}") ;;
  esac
done

# Keep the run independent of the caller's environment.
export GO111MODULE=on
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export LC_ALL=C

TMP_DIR="$(mktemp -d)"
trap 'rm -rf "${TMP_DIR}"' EXIT

# Build the tool into a directory of its own: the binary's name ("openapi-gen")
# ends up in the generated header, so it must not depend on how it is run.
go build -o "${TMP_DIR}/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen

# Remove the previous output so that a type dropped upstream cannot linger.
rm -f "${OUTPUT_DIR}/${OUTPUT_FILE}"

"${TMP_DIR}/openapi-gen" \
  --output-dir "${OUTPUT_DIR}" \
  --output-pkg "${OUTPUT_PKG}" \
  --output-file "${OUTPUT_FILE}" \
  --go-header-file "${BOILERPLATE}" \
  --report-filename "${REPORT_FILE}" \
  --output-model-name-file "${MODEL_NAME_FILE}" \
  "${READONLY_PKGS[@]}" \
  "${INPUT_PKGS[@]}"

gofmt -l -w "${OUTPUT_DIR}/${OUTPUT_FILE}" >/dev/null

echo "generated ${OUTPUT_DIR}/${OUTPUT_FILE} ($(wc -l <"${OUTPUT_DIR}/${OUTPUT_FILE}") lines); API rule violations: $(wc -l <"${REPORT_FILE}") (see ${REPORT_FILE})"
