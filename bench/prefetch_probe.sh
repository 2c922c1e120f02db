#!/bin/bash
# Does a `docker pull` of the cache image by digest spare BuildKit's own pull of --cache-from?
# (issue 24, goal 3: could the suite pull the verified `latest` in the background while the
# bento is built?)  bash bench/prefetch_probe.sh
#
# Debian's registry binary on a free port; an image with a 60 MB random layer and its inline
# cache, pushed. Then, twice each, from a cold engine (this probe's images removed, the build
# cache emptied as bench/layers.py does): A builds a changed last layer with --cache-from the
# pushed image's digest; B first `docker pull`s that digest, then builds the same. Prints
# each one's pull and build seconds and its CACHED steps. Output: text only, no result file.
set -euo pipefail
D=/usr/bin/docker
export DOCKER_BUILDKIT=1
W=/tmp/thin-exp/w$$; mkdir -p $W/data $W/ctx
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > $W/config.yml <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
YML
setsid /usr/bin/docker-registry serve $W/config.yml > $W/reg.log 2>&1 &
REGPID=$!
trap 'kill $REGPID; rm -rf $W' EXIT
sleep 1
NONCE=$RANDOM$RANDOM
R=127.0.0.1:$PORT/thinexp
mkctx() { # $1 = model content
  cat > $W/ctx/Dockerfile <<DF
FROM python:3.11-slim
RUN head -c 60000000 /dev/urandom > /big-$NONCE
COPY model /model
DF
  echo "$1" > $W/ctx/model
}
prune() { $D builder prune -af --filter "description=$NONCE" >/dev/null 2>&1 || true; $D builder prune -f --filter type=regular >/dev/null 2>&1 || true; }
mkctx v1
$D build -q --build-arg BUILDKIT_INLINE_CACHE=1 -t $R:v1 $W/ctx >/dev/null
$D push -q $R:v1 >/dev/null
DIGEST=$($D image inspect --format '{{index .RepoDigests 0}}' $R:v1)
echo "digest ref: $DIGEST"
for variant in A B A B; do
  $D rmi -f $R:v1 $R:v2 $DIGEST >/dev/null 2>&1 || true
  $D builder prune -af >/dev/null
  mkctx "v2-$variant-$RANDOM"
  t0=$(date +%s.%N)
  if [ $variant = B ]; then $D pull -q $DIGEST >/dev/null; fi
  t1=$(date +%s.%N)
  $D build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from $DIGEST -t $R:v2 $W/ctx > $W/build-$variant.log 2>&1
  t2=$(date +%s.%N)
  echo "$variant: pull $(echo "$t1-$t0"|bc) build $(echo "$t2-$t1"|bc) total $(echo "$t2-$t0"|bc); CACHED: $(grep -c CACHED $W/build-$variant.log); importing: $(grep -c 'importing cache manifest' $W/build-$variant.log); $(grep -E 'RUN head' $W/build-$variant.log | head -2 | tr '\n' ' ')"
done
$D rmi -f $R:v1 $R:v2 $DIGEST >/dev/null 2>&1 || true
