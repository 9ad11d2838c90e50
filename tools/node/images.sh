#!/usr/bin/env bash
# Assembles the three images that the node tests run on a real kubelet+containerd node. The test
# machines have no Docker engine and no registry, and base images cannot be pulled there, so the
# images are assembled from local files with umoci and exported with skopeo:
#   pause     the sandbox image, compiled from Kubernetes' own build/pause/linux/pause.c
#   app       busybox for test pods (they use imagePullPolicy: Never and a command)
#   operator  the given operator binary on a from-scratch equivalent of the Dockerfile's base,
#             distroless cc-debian12:nonroot
#
# The operator image must be the image a user builds from the repository's Dockerfile, as far as
# this machine allows. Its runtime contract (user, entrypoint, cmd, exposed ports, labels, env,
# working directory, where the binary lives) is therefore not written in this script: it is parsed
# from the Dockerfile's runtime (last) stage, so editing the Dockerfile changes the test image.
# tests/image_contract/ parses the Dockerfile on its own and checks that the image matches.
#
# Usage: tools/node/images.sh OUT_DIR OPERATOR_BINARY [TAG]
#   OUT_DIR          receives oci/ (an OCI image layout with the tags pause, app and operator) and
#                    pause.tar, app.tar, operator.tar (docker-archive, for
#                    `ctr -n k8s.io images import`); earlier outputs there are replaced
#   OPERATOR_BINARY  the acs-identity-operator binary; never modified (a stripped copy goes in)
#   TAG              the operator image's tag (default: dev)
# Environment:
#   DOCKERFILE       the Dockerfile to follow (default: the repository's); the contract test
#                    passes a changed copy to prove that the image follows it
#   GOMODCACHE       the Go module cache that holds k8s.io/kubernetes (default: `go env GOMODCACHE`)
# On success prints one `name=reference` line per image on stdout; all else goes to stderr.
# Needs the Debian packages umoci, skopeo, busybox-static, gcc and binutils; it installs nothing.
set -euo pipefail
# Modes in the layers come from the files written here: a caller's strict umask must not make
# /usr/local/bin unreadable to the image's non-root user.
umask 022

log() { printf '[images] %s\n' "$*" >&2; }
die() {
  printf '[images] error: %s\n' "$*" >&2
  exit 1
}

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  printf 'usage: %s OUT_DIR OPERATOR_BINARY [TAG]\n' "$0" >&2
  exit 2
fi
out_arg=$1
binary=$2
tag=${3:-dev}

PAUSE_REF=localhost/acs-pause:node
APP_REF=localhost/acs-app:node
OPERATOR_REF=localhost/acs-identity-operator:$tag

# What the runtime stage's base, gcr.io/distroless/cc-debian12:nonroot, puts in the image config
# (distroless static/static.bzl: the nonroot variant's env, user and workdir). The base cannot be
# pulled here, so these are restated; the Dockerfile's own instructions are applied on top.
BASE_IMAGE_PATTERN='gcr.io/distroless/cc-debian12:nonroot'
BASE_ENV=(
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
)
BASE_USER=65532
BASE_WORKDIR=/home/nonroot

# A fixed creation time (the epoch) and fixed file times in the layers: the same inputs give the
# same digests, so a re-run produces identical images and an import of an unchanged one is a no-op.
CREATED=1970-01-01T00:00:00Z

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dockerfile=${DOCKERFILE:-$repo/Dockerfile}

# The caller installs packages; name the one that is missing instead of failing later.
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install the Debian package $2"
}
need umoci umoci
need skopeo skopeo
need gcc gcc
need strip binutils
need ldd libc-bin
need tar tar
need awk mawk
# /bin/busybox from the `busybox` package is dynamically linked and would not run in an image
# without a libc; only busybox-static's works there.
[ -x /bin/busybox ] || die "/bin/busybox not found: install the Debian package busybox-static"
if ldd /bin/busybox >/dev/null 2>&1; then
  die "/bin/busybox is dynamically linked: install the Debian package busybox-static"
fi
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA_BUNDLE" ] || die "$CA_BUNDLE not found: install the Debian package ca-certificates"

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  die "operator binary '$binary' is not an executable file"
fi
[ -f "$dockerfile" ] || die "Dockerfile '$dockerfile' not found"
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not a valid image tag"

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "unsupported machine architecture $(uname -m)" ;;
esac

# ---------------------------------------------------------------------------------------------
# The Dockerfile's runtime stage. One awk program turns it into `KEY<TAB>value` records:
#   FROM image | USER u | ENTRYPOINT arg (one per element) | CMD arg (one per element)
#   EXPOSE port/proto | LABEL k=v | ENV k=v | WORKDIR /abs | STOPSIGNAL s | COPY /binary/dest
# Anything in that stage that this script cannot reproduce without Docker (RUN, ADD, a second
# COPY, variables, the shell form of ENTRYPOINT/CMD, ...) is an error, never silently skipped,
# so the test image cannot quietly differ from the built one.
# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2016 # the program is awk, not shell: its $ are awk's
PARSE_DOCKERFILE='
function fail(msg) {
  printf "%s:%d: %s\n", FILENAME, cur_line, msg > "/dev/stderr"
  failed = 1
  exit 1
}
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
# Splits s into words like the Dockerfile word rules: whitespace separates, quotes group and are
# removed; outside quotes a backslash escapes any character, inside double quotes only " $ \.
function words(s,   i, c, q, tok, have, n, len) {
  split("", W); n = 0; tok = ""; have = 0; q = ""; len = length(s)
  for (i = 1; i <= len; i++) {
    c = substr(s, i, 1)
    if (q == "\047") { if (c == q) q = ""; else tok = tok c; continue }
    if (q == "\"") {
      if (c == q) { q = ""; continue }
      if (c == "\\" && i < len && index("\"$\\", substr(s, i + 1, 1))) { i++; c = substr(s, i, 1) }
      tok = tok c; continue
    }
    if (c == " " || c == "\t") { if (have) { W[++n] = tok; tok = ""; have = 0 }; continue }
    if (c == "\"" || c == "\047") { q = c; have = 1; continue }
    if (c == "\\" && i < len) { i++; c = substr(s, i, 1) }
    tok = tok c; have = 1
  }
  if (q != "") fail("unterminated quote in: " s)
  if (have) W[++n] = tok
  return n
}
# Parses a JSON array of strings (the exec form) into J[1..n]; returns n.
function json_array(s, what,   i, c, n, len, str, e, state) {
  split("", J); n = 0; s = trim(s); len = length(s)
  if (substr(s, 1, 1) != "[" || substr(s, len, 1) != "]")
    fail(what " must use the JSON (exec) form: the image has no shell to run the shell form")
  state = "first"
  for (i = 2; i < len; i++) {
    c = substr(s, i, 1)
    if (c == " " || c == "\t") continue
    if (c == "," && state == "after") { state = "value"; continue }
    if (c != "\"" || state == "after") fail(what ": not a JSON array of strings: " s)
    str = ""
    for (i++; i < len; i++) {
      c = substr(s, i, 1)
      if (c == "\"") break
      if (c == "\\") {
        i++; e = substr(s, i, 1)
        if (e == "n" || e == "t" || e == "r" || e == "b" || e == "f" || e == "u")
          fail(what ": escape \\" e " is not supported here")
        c = e
      }
      str = str c
    }
    if (i >= len) fail(what ": unterminated string in " s)
    J[++n] = str; state = "after"
  }
  if (state == "value") fail(what ": trailing comma in " s)
  return n
}
function no_vars(what, s) { if (index(s, "$")) fail(what ": variables are not supported here: " s) }
function abs_path(p) { return substr(p, 1, 1) == "/" ? p : (workdir == "/" ? "" : workdir) "/" p }
function set_pair(kind, k, v,   i) {
  if (k == "") fail(kind ": empty key")
  for (i = 1; i <= npairs[kind]; i++) if (pk[kind, i] == k) { pv[kind, i] = v; return }
  npairs[kind]++; pk[kind, npairs[kind]] = k; pv[kind, npairs[kind]] = v
}
function pairs(kind, args,   n, i, eq) {
  no_vars(kind, args)
  n = words(args)
  if (n == 0) fail(kind " needs arguments")
  for (i = 1; i <= n; i++) {
    eq = index(W[i], "=")
    # The legacy `KIND key value` form (deprecated by Docker) lands here too.
    if (eq == 0) fail(kind ": expected key=value, got " W[i])
    set_pair(kind, substr(W[i], 1, eq - 1), substr(W[i], eq + 1))
  }
}
function apply(kw, args,   n, i, p, src, dest, flags) {
  cur_line = ln_of[kw_i]
  if (kw == "USER") {
    no_vars(kw, args)
    if (words(args) != 1) fail("USER takes one word: " args)
    user = W[1]
  } else if (kw == "ENTRYPOINT") {
    n = json_array(args, kw); nentry = n
    for (i = 1; i <= n; i++) entry[i] = J[i]
  } else if (kw == "CMD") {
    n = json_array(args, kw); ncmd = n
    for (i = 1; i <= n; i++) cmd[i] = J[i]
  } else if (kw == "EXPOSE") {
    no_vars(kw, args)
    n = words(args)
    for (i = 1; i <= n; i++) {
      p = tolower(W[i])
      if (p !~ /\//) p = p "/tcp"
      if (p !~ /^[0-9]+(-[0-9]+)?\/(tcp|udp|sctp)$/) fail("EXPOSE: not a port: " W[i])
      if (!(p in exposed)) { exposed[p] = 1; ports[++nports] = p }
    }
  } else if (kw == "LABEL" || kw == "ENV") {
    pairs(kw, args)
  } else if (kw == "WORKDIR") {
    no_vars(kw, args)
    if (words(args) != 1) fail("WORKDIR takes one path: " args)
    workdir = abs_path(W[1])
  } else if (kw == "STOPSIGNAL") {
    no_vars(kw, args)
    if (words(args) != 1) fail("STOPSIGNAL takes one signal: " args)
    stopsignal = W[1]
  } else if (kw == "COPY") {
    if (copy_dest != "") fail("a second COPY in the runtime stage: only the binary is reproduced")
    no_vars(kw, args)
    if (substr(trim(args), 1, 1) == "[") fail("COPY: the JSON form is not supported here")
    n = words(args); flags = 0
    for (i = 1; i <= n && substr(W[i], 1, 2) == "--"; i++) {
      if (W[i] !~ /^--from=/ && W[i] != "--link")
        fail("COPY " W[i] ": only --from and --link are reproduced (the binary is root-owned 0755)")
      flags++
    }
    if (n - flags != 2) fail("COPY: expected one source and one destination: " args)
    src = W[n - 1]; dest = W[n]
    if (dest ~ /\/$/) { p = src; sub(/.*\//, "", p); dest = dest p }
    copy_dest = abs_path(dest)
  } else {
    fail(kw " in the runtime stage cannot be reproduced without Docker: teach tools/node/images.sh and tests/image_contract/")
  }
}
BEGIN { workdir = base_workdir }
{
  sub(/\r$/, "")
  line = $0
  if (!continued) {
    if (line ~ /^[ \t]*#/) {
      # Parser directives: only the default escape character is understood.
      if (!seen && tolower(line) ~ /^#[ \t]*escape[ \t]*=/) {
        e = line; sub(/^[^=]*=[ \t]*/, "", e); e = trim(e)
        if (e != "\\") { cur_line = NR; fail("only the default escape character \\ is supported") }
      }
      next
    }
    if (line ~ /^[ \t]*$/) next
    start = NR; buf = ""
  } else if (line ~ /^[ \t]*#/ || line ~ /^[ \t]*$/) {
    # Inside a continuation, comment and empty lines are dropped, as Docker does.
    next
  }
  if (line ~ /\\[ \t]*$/) { sub(/\\[ \t]*$/, "", line); buf = buf line; continued = 1; next }
  buf = trim(buf line); continued = 0; seen = 1
  kw = toupper(buf); sub(/[ \t].*$/, "", kw)
  args = trim(substr(buf, length(kw) + 1))
  if (kw == "FROM") {
    # Each FROM starts a stage; only the last one is kept.
    nfrom++; ninstr = 0; cur_line = NR
    n = words(args)
    for (i = 1; i <= n && substr(W[i], 1, 2) == "--"; i++) ;
    if (i > n) fail("FROM without an image")
    from = W[i]; from_line = start
    next
  }
  if (!nfrom) { if (kw == "ARG") next; cur_line = start; fail(kw " before the first FROM") }
  ninstr++; kw_of[ninstr] = kw; args_of[ninstr] = args; ln_of[ninstr] = start
}
END {
  if (failed) exit 1
  if (continued) { cur_line = NR; fail("the last line ends with a line continuation") }
  if (!nfrom) { cur_line = NR; fail("no FROM") }
  for (kw_i = 1; kw_i <= ninstr; kw_i++) apply(kw_of[kw_i], args_of[kw_i])
  cur_line = from_line
  if (copy_dest == "") fail("the runtime stage copies no binary")
  if (copy_dest ~ /(^|\/)\.\.?(\/|$)/) fail("COPY destination must be a plain path: " copy_dest)
  print "FROM\t" from
  print "COPY\t" copy_dest
  if (user != "") print "USER\t" user
  for (i = 1; i <= nentry; i++) print "ENTRYPOINT\t" entry[i]
  for (i = 1; i <= ncmd; i++) print "CMD\t" cmd[i]
  for (i = 1; i <= nports; i++) print "EXPOSE\t" ports[i]
  for (i = 1; i <= npairs["LABEL"]; i++) print "LABEL\t" pk["LABEL", i] "=" pv["LABEL", i]
  for (i = 1; i <= npairs["ENV"]; i++) print "ENV\t" pk["ENV", i] "=" pv["ENV", i]
  print "WORKDIR\t" workdir
  if (stopsignal != "") print "STOPSIGNAL\t" stopsignal
}
'
parsed=$(awk -v base_workdir="$BASE_WORKDIR" "$PARSE_DOCKERFILE" "$dockerfile") ||
  die "cannot follow the runtime stage of $dockerfile (see above)"

from="" dest="" user=$BASE_USER workdir="" stopsignal=""
entrypoint=() cmd=() ports=() labels=() env=("${BASE_ENV[@]}")
# The Dockerfile's ENV replaces a base variable of the same name, else adds one.
set_env() {
  local i
  for i in "${!env[@]}"; do
    if [ "${env[i]%%=*}" = "${1%%=*}" ]; then
      env[i]=$1
      return
    fi
  done
  env+=("$1")
}
while IFS=$'\t' read -r key value; do
  case $key in
    FROM) from=$value ;;
    COPY) dest=$value ;;
    USER) user=$value ;;
    ENTRYPOINT) entrypoint+=("$value") ;;
    CMD) cmd+=("$value") ;;
    EXPOSE) ports+=("$value") ;;
    LABEL) labels+=("$value") ;;
    ENV) set_env "$value" ;;
    WORKDIR) workdir=$value ;;
    STOPSIGNAL) stopsignal=$value ;;
    *) die "internal: unexpected record '$key' from the Dockerfile parser" ;;
  esac
done <<<"$parsed"

# Only this base is modelled; another one (alpine, a different distroless flavour) would have
# other files and config, and pretending otherwise would make the test image a different image.
case $from in
  "$BASE_IMAGE_PATTERN" | "$BASE_IMAGE_PATTERN"@sha256:*) ;;
  *) die "the runtime stage is FROM $from; this script reproduces only $BASE_IMAGE_PATTERN" ;;
esac

# ---------------------------------------------------------------------------------------------
# Kubernetes' pause.c, from the newest k8s.io/kubernetes module in the Go module cache (the
# control-plane builds put it there; nothing is downloaded here).
# ---------------------------------------------------------------------------------------------
modcache=${GOMODCACHE:-}
if [ -z "$modcache" ] && command -v go >/dev/null 2>&1; then
  modcache=$(go env GOMODCACHE)
fi
modcache=${modcache:-${GOPATH:-$HOME/go}/pkg/mod}
pause_glob="$modcache/k8s.io/kubernetes@v1.*/build/pause/linux/pause.c"
pause_c=$(compgen -G "$pause_glob" | sort -V | tail -n 1) || true
if [ -z "$pause_c" ] || [ ! -f "$pause_c" ]; then
  die "Kubernetes' pause.c is missing: no $pause_glob (the module k8s.io/kubernetes arrives in the Go module cache with tools/build-bins.sh)"
fi
k8s_version=${pause_c#"$modcache/k8s.io/kubernetes@"}
k8s_version=${k8s_version%%/*}

# ---------------------------------------------------------------------------------------------
# Staging: everything is built in a fresh directory inside OUT_DIR, then moved over the previous
# outputs, so a re-run replaces them and a failed run leaves the old ones whole.
# ---------------------------------------------------------------------------------------------
mkdir -p "$out_arg"
out=$(cd "$out_arg" && pwd)
# skopeo's oci: and docker-archive: references are split at colons.
[[ $out != *:* ]] || die "OUT_DIR must not contain ':' ($out)"
stage=$(mktemp -d "$out/.images.XXXXXX")
trap 'rm -rf "$stage"' EXIT
oci=$stage/oci
umoci init --layout "$oci"

# Layers are written by GNU tar and added verbatim rather than with `umoci insert`: ownership and
# modes are then explicit whoever runs the script (root everywhere, 65532 for the paths given
# after the tarball, as distroless does for /home/nonroot), and sorted names with a fixed mtime
# keep the digests reproducible.
make_layer() { # ROOTFS TARBALL [PATH_OWNED_BY_65532...]
  local rootfs=$1 tarball=$2 p
  shift 2
  local common=(--format=gnu --sort=name --mtime=@0 --numeric-owner)
  local excludes=() entries=()
  for p in "$@"; do excludes+=(--exclude="$p"); done
  for p in "$rootfs"/*; do entries+=("${p##*/}"); done
  tar -C "$rootfs" -cf "$tarball" "${common[@]}" --owner=0 --group=0 "${excludes[@]}" -- "${entries[@]}"
  for p in "$@"; do
    tar -C "$rootfs" -rf "$tarball" "${common[@]}" --owner=65532 --group=65532 --no-recursion -- "$p"
  done
}

# IMAGE ROOTFS [PATH_OWNED_BY_65532...] -- a one-layer image tagged IMAGE in the layout.
new_image() {
  local name=$1 rootfs=$2
  shift 2
  make_layer "$rootfs" "$stage/$name-layer.tar" "$@"
  umoci new --image "$oci:$name"
  umoci raw add-layer --image "$oci:$name" --history.created "$CREATED" \
    --history.created_by "tools/node/images.sh: $name root filesystem" "$stage/$name-layer.tar"
  rm -f "$stage/$name-layer.tar"
}

# NAME [umoci config flags...]
configure() {
  local name=$1
  shift
  umoci config --image "$oci:$name" --architecture "$arch" --os linux --created "$CREATED" \
    --history.created "$CREATED" --history.created_by "tools/node/images.sh: $name config" "$@"
}

# Files every image's /etc holds: the users root and nonroot (65532, distroless' numbering).
write_users() { # ROOTFS SHELL
  mkdir -p "$1/etc"
  cat >"$1/etc/passwd" <<PASSWD
root:x:0:0:root:/root:$2
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:$2
PASSWD
  cat >"$1/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
GROUP
  chmod 0644 "$1/etc/passwd" "$1/etc/group"
  mkdir -p "$1/tmp" "$1/home/nonroot"
  chmod 1777 "$1/tmp"
  chmod 0755 "$1/home/nonroot"
}

# ---------------------------------------------------------------------------------------------
# pause: static, stripped, the flags of Kubernetes' build/pause/Makefile; the user of its
# Dockerfile (65535).
# ---------------------------------------------------------------------------------------------
rootfs=$stage/pause-rootfs
mkdir -p "$rootfs"
gcc -Os -Wall -Werror -static -DVERSION="$k8s_version-acs" -o "$rootfs/pause" "$pause_c"
strip "$rootfs/pause"
chmod 0755 "$rootfs/pause"
new_image pause "$rootfs"
configure pause --config.user 65535:65535 --config.entrypoint /pause
log "pause: from $pause_c ($(wc -c <"$rootfs/pause") bytes)"

# ---------------------------------------------------------------------------------------------
# app: busybox-static with the applets test pods use; root by default, 65532 available.
# ---------------------------------------------------------------------------------------------
rootfs=$stage/app-rootfs
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
applets=$(/bin/busybox --list)
required=(sh cat cut sleep date echo ls head tail grep wc env printf tr test '[')
optional=(awk sed id mkdir rm cp mv touch true false seq expr basename dirname stat find xargs
  kill ps uname hostname base64 sha256sum wget nc nslookup timeout sort uniq tee)
for a in "${required[@]}" "${optional[@]}"; do
  if grep -qxF -- "$a" <<<"$applets"; then
    ln -s busybox "$rootfs/bin/$a"
  elif [[ " ${required[*]} " == *" $a "* ]]; then
    die "/bin/busybox has no '$a' applet"
  fi
done
write_users "$rootfs" /bin/sh
new_image app "$rootfs" home/nonroot
configure app --config.entrypoint /bin/sh --config.env PATH=/bin

# ---------------------------------------------------------------------------------------------
# operator: the binary where the Dockerfile puts it, the shared libraries it loads (what
# distroless cc provides: glibc, libgcc_s), the CA roots, and distroless' users and directories.
# ---------------------------------------------------------------------------------------------
rootfs=$stage/operator-rootfs
mkdir -p "$rootfs${dest%/*}"
# A debug build is large; its debug sections are dropped from the copy (a release build is
# already without them). Symbols stay, for backtraces.
strip --strip-debug -o "$rootfs$dest" "$binary"
chmod 0755 "$rootfs$dest"
ldd_out=$(ldd "$binary" 2>&1) || ldd_out="" # a static binary: "not a dynamic executable"
if grep -q 'not found' <<<"$ldd_out"; then
  die "the operator binary needs libraries this machine lacks: $ldd_out"
fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
while IFS= read -r lib; do
  [ -n "$lib" ] || continue
  mkdir -p "$rootfs${lib%/*}"
  cp -L "$lib" "$rootfs$lib"
done <<<"$libs"
mkdir -p "$rootfs/etc/ssl/certs"
cp -L "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/ssl/certs/ca-certificates.crt"
write_users "$rootfs" /sbin/nologin
# Name lookups as in distroless: /etc/hosts first (the kubelet writes it), then DNS.
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' 'networks: files' \
  >"$rootfs/etc/nsswitch.conf"
new_image operator "$rootfs" home/nonroot

config_args=(--config.user "$user" --config.workingdir "$workdir")
for v in "${entrypoint[@]}"; do config_args+=(--config.entrypoint "$v"); done
for v in "${cmd[@]}"; do config_args+=(--config.cmd "$v"); done
for v in "${ports[@]}"; do config_args+=(--config.exposedports "$v"); done
for v in "${labels[@]}"; do config_args+=(--config.label "$v"); done
for v in "${env[@]}"; do config_args+=(--config.env "$v"); done
if [ -n "$stopsignal" ]; then config_args+=(--config.stopsignal "$stopsignal"); fi
configure operator "${config_args[@]}"
log "operator: $dest $(du -h "$rootfs$dest" | cut -f1) (input $(du -h "$binary" | cut -f1)), $(wc -l <<<"$libs") libraries; config from $dockerfile"

# ---------------------------------------------------------------------------------------------
# docker-archive tarballs for `ctr -n k8s.io images import`, then the swap into OUT_DIR.
# ---------------------------------------------------------------------------------------------
export_archive() { # NAME REF
  skopeo copy --quiet --insecure-policy "oci:$oci:$1" "docker-archive:$stage/$1.tar:$2" >&2
}
export_archive pause "$PAUSE_REF"
export_archive app "$APP_REF"
export_archive operator "$OPERATOR_REF"

rm -rf "$out/oci"
mv "$oci" "$out/oci"
for name in pause app operator; do
  mv -f "$stage/$name.tar" "$out/$name.tar"
done
log "wrote $out/oci and $out/{pause,app,operator}.tar"

printf 'pause=%s\napp=%s\noperator=%s\n' "$PAUSE_REF" "$APP_REF" "$OPERATOR_REF"
