#!/bin/sh
# Prints the Debian packages that own the shared libraries the given binaries
# load, so the runtime stage installs exactly those (the build stage's -dev
# packages pull in compilers and headers the image must not carry).
# Libraries under /opt (a LibTorch unpacked from a zip) are copied instead.
set -eu
owners=""
missing=0
for lib in $(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
  case "$lib" in /opt/*) continue ;; esac
  real=$(readlink -f "$lib")
  owner=""
  # dpkg knows each file by the path its package installed it under, which a
  # merged-/usr system may reach through /lib or through a symlink.
  for path in "$lib" "$real" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"; do
    owner=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
    [ -n "$owner" ] && break
  done
  if [ -z "$owner" ]; then
    echo "runtime_packages: no package owns $lib" >&2
    missing=1
  fi
  owners="$owners $owner"
done
# NVIDIA's packages (CUDA runtime, NCCL) at the build's versions: their
# repository carries builds for several CUDA versions under one name.
for package in $(printf '%s\n' $owners | sort -u); do
  case "$package" in
    cuda-* | libnccl* | libcu* | libnv*) echo "$package=$(dpkg-query -W -f='${Version}' "$package")" ;;
    *) echo "$package" ;;
  esac
done
exit $missing
