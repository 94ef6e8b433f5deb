#!/usr/bin/env bash
# Builds kubectl from the k8s.io/kubectl module (the same minor as our libraries) and installs it
# as /usr/local/bin/kubectl (or $KUBECTL_OUT). Used by .ci/run on machines without a packaged kubectl.
set -euo pipefail
version=${KUBECTL_MODULE_VERSION:-v0.37.2}
out=${KUBECTL_OUT:-/usr/local/bin/kubectl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init svcplane.local/kubectl >/dev/null 2>&1
cat > main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() { os.Exit(cli.Run(cmd.NewDefaultKubectlCommand())) }
GO
go get "k8s.io/kubectl@$version" "k8s.io/component-base@$version" >/dev/null
go mod tidy >/dev/null
go build -ldflags "-X k8s.io/component-base/version.gitVersion=${version/v0./v1.}" -o "$out" .
"$out" version --client
