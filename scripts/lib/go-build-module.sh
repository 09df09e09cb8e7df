# Build a program from a pinned Go module into a cache directory; sourced by the install-* scripts.
#
#   go_build_module MODULE VERSION PACKAGE TARGET [go build flags...]
#   dir=$(go_module_dir MODULE VERSION); go_build_in DIR PACKAGE TARGET [go build flags...]
#
# `go install MODULE/PACKAGE@VERSION` is refused for modules whose go.mod has replace directives
# (dapr, compose, buildx all have them), so the module is downloaded and PACKAGE (a path inside it,
# e.g. ./cmd/daprd) is built from inside the module's directory with its own go.mod. TARGET is
# written atomically (built as TARGET.tmp, then renamed). Prints the build time on stderr.

go_module_dir() {
  command -v go >/dev/null || { echo "Go is required to build $1 (https://go.dev/doc/install)" >&2; return 1; }
  go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

go_build_in() {
  local dir=$1 package=$2 target=$3
  shift 3
  local start=$SECONDS
  mkdir -p "$(dirname "$target")"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath "$@" -o "$target.tmp" "$package")
  mv "$target.tmp" "$target"
  echo "built $(basename "$target") in $((SECONDS - start))s: $target" >&2
}

go_build_module() {
  local module=$1 version=$2 package=$3 target=$4
  shift 4
  echo "building $module@$version ($package) from the Go module proxy" >&2
  go_build_in "$(go_module_dir "$module" "$version")" "$package" "$target" "$@"
}
