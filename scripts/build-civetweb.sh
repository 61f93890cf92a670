#!/usr/bin/env bash
# Builds CivetWeb from Debian's own source package for the OpenSSL 3 API and installs a static
# library, its headers and a CMake package (find_package(civetweb-openssl3)) plus a pkg-config file
# (civetweb-openssl3.pc) into $PORTCULLIS_CIVETWEB_PREFIX (default /opt/portcullis/civetweb).
#
# Why not Debian's libcivetweb1: it is built for the OpenSSL 1.1 API and loads libssl at run time;
# against bookworm's OpenSSL 3 its TLS set-up fails (SSL_get_peer_certificate is gone) and the first
# HTTPS connection crashes the process. The same source compiled with OPENSSL_API_3_0 and NO_SSL_DL,
# linked to libssl, serves TLS 1.2/1.3 correctly.
#
# Idempotent: a stamp in the prefix records the source version and the build recipe; a second run
# with both unchanged does nothing and needs no network. The source is kept in
# $PORTCULLIS_CIVETWEB_SRC_CACHE (default /var/cache/portcullis/civetweb-src) and reused while the
# local apt index names the same version. Needs root (apt), dpkg-dev (apt-get source), libssl-dev.
set -euo pipefail

prefix=${PORTCULLIS_CIVETWEB_PREFIX:-/opt/portcullis/civetweb}
cache=${PORTCULLIS_CIVETWEB_SRC_CACHE:-/var/cache/portcullis/civetweb-src}
src_list=/etc/apt/sources.list.d/portcullis-src.sources
# The flags were checked against civetweb 1.15 (bookworm); another upstream version needs a look.
expected_upstream=1.15

say() { echo "build-civetweb: $*"; }
die() {
  echo "build-civetweb: error: $*" >&2
  exit 1
}

# Everything that decides the build output; a change here triggers a rebuild.
# SOCKET_TIMEOUT_QUANTUM (ms): how often blocked threads look at the stop flag; the default
# 2000 makes mg_stop() take up to 2 s, 200 lets the daemon stop promptly on SIGTERM.
defines=(-DOPENSSL_API_3_0 -DNO_SSL_DL -DUSE_IPV6 -DNO_CGI -DNDEBUG -DSOCKET_TIMEOUT_QUANTUM=200)
cflags=(-O2 -g -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wno-deprecated-declarations)
recipe="defines=${defines[*]} cflags=${cflags[*]} layout=3"

if [[ $EUID -ne 0 ]]; then
  die "run as root (it calls apt-get and writes $prefix)"
fi

# 1. A deb-src entry for the suite of the installed system (bookworm main), in a file of our own.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n "$codename" ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
if [[ ! -f "$src_list" ]]; then
  say "adding deb-src for $codename main in $src_list"
  cat >"$src_list" <<EOF
# Added by Portcullis scripts/build-civetweb.sh: Debian's source packages, so that
# 'apt-get source civetweb' can fetch the source of the packaged civetweb.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

# The newest civetweb source version the local apt index knows (no network).
indexed_version() {
  apt-cache showsrc civetweb 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -n1
}
# Refreshes only our deb-src list, leaving the other lists alone.
update_src_index() {
  say "apt-get update (source index of $src_list only)"
  apt-get update -q -o Dir::Etc::SourceList="$src_list" -o Dir::Etc::SourceParts=- \
    -o APT::Get::List-Cleanup=0 >/dev/null ||
    die "apt-get update failed for $src_list: check that deb.debian.org is reachable and that the file is valid"
}

version=$(indexed_version || true)
if [[ -z "$version" ]]; then
  update_src_index
  version=$(indexed_version || true)
fi
[[ -n "$version" ]] || die "apt knows no source package 'civetweb' for $codename: check $src_list and 'apt-cache showsrc civetweb'"
[[ "$version" == "$expected_upstream"+* || "$version" == "$expected_upstream"-* ]] ||
  say "warning: civetweb source version $version, the flags were checked against $expected_upstream"

stamp="$prefix/share/civetweb-openssl3/build-stamp"
want_stamp="version=$version $recipe"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" && -f "$prefix/lib/libcivetweb-openssl3.a" ]]; then
  say "civetweb $version (OpenSSL 3) already installed in $prefix"
  exit 0
fi

# 2. The source, from the cache when it holds this version.
if [[ ! -f "$cache/civetweb_${version}.dsc" || ! -d "$cache/src" ]]; then
  say "fetching source package civetweb $version into $cache"
  rm -rf "$cache"
  mkdir -p "$cache"
  # apt drops privileges to _apt for downloads; let it write there.
  chown _apt "$cache" 2>/dev/null || true
  if ! (cd "$cache" && apt-get source -q "civetweb=$version" >"$cache/apt-get-source.log" 2>&1); then
    cat "$cache/apt-get-source.log" >&2
    die "apt-get source civetweb=$version failed: check that deb.debian.org is reachable, that dpkg-dev is installed, and $src_list"
  fi
  unpacked=$(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'civetweb-*' | head -n1)
  [[ -n "$unpacked" && -f "$unpacked/src/civetweb.c" ]] ||
    die "apt-get source did not unpack civetweb into $cache (see $cache/apt-get-source.log)"
  mv "$unpacked" "$cache/src"
else
  say "using cached source $cache (civetweb $version)"
fi
src="$cache/src"

# 3. Build: the C library and the C++ wrapper, into one static archive.
build=$(mktemp -d /tmp/civetweb-build.XXXXXX)
trap 'rm -rf "$build"' EXIT
say "compiling civetweb.c and CivetServer.cpp (${defines[*]})"
gcc -std=gnu11 "${cflags[@]}" "${defines[@]}" -I"$src/include" -c "$src/src/civetweb.c" \
  -o "$build/civetweb.o"
g++ -std=c++17 "${cflags[@]}" "${defines[@]}" -I"$src/include" -c "$src/src/CivetServer.cpp" \
  -o "$build/CivetServer.o"
ar rcs "$build/libcivetweb-openssl3.a" "$build/civetweb.o" "$build/CivetServer.o"

# A link check: TLS must be compiled in and libssl resolved at link time.
cat >"$build/check.c" <<'EOF'
#include <civetweb.h>
int main(void) { return mg_check_feature(2) ? 0 : 1; }
EOF
gcc "$build/check.c" -I"$src/include" "$build/libcivetweb-openssl3.a" -lssl -lcrypto -lpthread \
  -ldl -o "$build/check" || die "link check failed: is libssl-dev installed?"
"$build/check" || die "the built library reports no TLS support (mg_check_feature(2) == 0)"

# 4. Install (into a staging dir, then swap, so a half-written prefix is never left behind).
say "installing into $prefix"
stage="$prefix.new"
rm -rf "$stage"
mkdir -p "$stage/include" "$stage/lib/pkgconfig" "$stage/lib/cmake/civetweb-openssl3" \
  "$stage/share/civetweb-openssl3"
install -m 0644 "$src/include/civetweb.h" "$src/include/CivetServer.h" "$stage/include/"
install -m 0644 "$build/libcivetweb-openssl3.a" "$stage/lib/"
install -m 0644 "$src/LICENSE.md" "$stage/share/civetweb-openssl3/LICENSE.md"

cat >"$stage/lib/pkgconfig/civetweb-openssl3.pc" <<EOF
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: civetweb-openssl3
Description: CivetWeb $version built for the OpenSSL 3 API (static, linked to libssl)
Version: ${version%%+*}
Requires.private: libssl libcrypto
Cflags: -I\${includedir}
Libs: \${libdir}/libcivetweb-openssl3.a -lssl -lcrypto -lpthread -ldl
EOF

cat >"$stage/lib/cmake/civetweb-openssl3/civetweb-openssl3-config.cmake" <<'EOF'
# CivetWeb built for the OpenSSL 3 API by Portcullis' scripts/build-civetweb.sh.
# Target: civetweb-openssl3::civetweb (static; C API in <civetweb.h>, C++ in <CivetServer.h>).
include(CMakeFindDependencyMacro)
find_dependency(OpenSSL 3)
find_dependency(Threads)
get_filename_component(_civetweb_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET civetweb-openssl3::civetweb)
  add_library(civetweb-openssl3::civetweb STATIC IMPORTED)
  set_target_properties(civetweb-openssl3::civetweb PROPERTIES
    IMPORTED_LOCATION "${_civetweb_prefix}/lib/libcivetweb-openssl3.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_civetweb_prefix}/include"
    INTERFACE_LINK_LIBRARIES "OpenSSL::SSL;OpenSSL::Crypto;Threads::Threads;${CMAKE_DL_LIBS}")
endif()
unset(_civetweb_prefix)
EOF

cat >"$stage/lib/cmake/civetweb-openssl3/civetweb-openssl3-config-version.cmake" <<EOF
set(PACKAGE_VERSION "${version%%+*}")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

echo "$want_stamp" >"$stage/share/civetweb-openssl3/build-stamp"
rm -rf "$prefix.old"
[[ -d "$prefix" ]] && mv "$prefix" "$prefix.old"
mv "$stage" "$prefix"
rm -rf "$prefix.old"
say "installed civetweb $version (OpenSSL 3, static) in $prefix"
