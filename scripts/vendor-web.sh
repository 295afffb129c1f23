#!/usr/bin/env bash
# vendor-web.sh refreshes the third-party browser libraries the playground
# page (internal/web) embeds: it fetches each pinned release with
# `npm pack`, copies its prebuilt browser file and its licence into
# internal/web/static/vendor/, and writes VERSIONS there. Nothing is built:
# the page needs no Node step to run or test; only this refresh needs npm.
# To move to a new release, change its version below, run this script,
# then run the playground's browser tests (go test -run Playground ./internal/server/).
set -euo pipefail

# package@version  file in the package  name under vendor/
libs=(
	"marked@18.2.1 lib/marked.umd.js marked.js"
	"dompurify@3.5.0 dist/purify.min.js purify.js"
	"@highlightjs/cdn-assets@11.12.0 highlight.min.js highlight.js"
	"@highlightjs/cdn-assets@11.12.0 styles/a11y-light.min.css highlight.css"
)

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/internal/web/static/vendor
command -v npm >/dev/null 2>&1 || { echo "vendor-web: npm is needed to fetch the packages" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$dest"
: >"$tmp/VERSIONS"
for entry in "${libs[@]}"; do
	read -r spec file name <<<"$entry"
	dir=$tmp/$(echo "$spec" | tr '/@' '__')
	if [ ! -d "$dir" ]; then
		mkdir -p "$dir"
		tgz=$(cd "$dir" && npm pack --silent "$spec")
		tar -xzf "$dir/$tgz" -C "$dir"
		pkg=${spec%@*}
		lic=$(ls "$dir/package" | grep -i -m1 '^licen[cs]e' || true)
		[ -n "$lic" ] || { echo "vendor-web: $spec has no licence file" >&2; exit 1; }
		cp "$dir/package/$lic" "$dest/LICENSE-${name%.*}.txt"
		echo "$spec $(sha256sum "$dir/$tgz" | cut -d' ' -f1)" >>"$tmp/VERSIONS"
	fi
	cp "$dir/package/$file" "$dest/$name"
	echo "vendor-web: $spec $file -> vendor/$name"
done
{
	echo "# Written by scripts/vendor-web.sh: package@version, sha256 of the npm tarball."
	cat "$tmp/VERSIONS"
} >"$dest/VERSIONS"
