#!/bin/sh
# make-secrets.sh [REPLICAS] [NAMESPACE] > secrets.yaml; kubectl apply -f secrets.yaml
#
# Writes the two Secrets the StatefulSet mounts, as YAML on stdout:
#  - snapcoord-tls: ca.pem and, per pod snapcoord-<i> (i < REPLICAS, default 3),
#    <pod>.pem and <pod>-key.pem, made with `snapcoord certs init|issue` and
#    naming the pod's stable names (<pod>.snapcoord-peers[.NS.svc[.cluster.local]]),
#    the clients' Service (snapcoord[.NS.svc[.cluster.local]]) and localhost;
#  - snapcoord-api-key: api-key, the admin key (24 random bytes, hex).
# The CA (and its key, which no pod gets) and the key stay in $SNAPCOORD_TLS_DIR
# (default ./snapcoord-k8s-tls): keep that directory safe, and run the script
# again with a larger REPLICAS before scaling up (what exists is kept).
# $SNAPCOORD is how to run the CLI (default `snapcoord`; e.g.
# "docker run --rm --user $(id -u):$(id -g) -v $PWD:/w -w /w snapcoord" or
# "npx tsx src/cli/main.ts").
set -eu
REPLICAS=${1:-3}
NS=${2:-default}
SNAPCOORD=${SNAPCOORD:-snapcoord}
DIR=${SNAPCOORD_TLS_DIR:-./snapcoord-k8s-tls}

case "$REPLICAS" in '' | *[!0-9]*) echo "make-secrets.sh: REPLICAS must be a number, not '$REPLICAS'" >&2; exit 2 ;; esac

[ -f "$DIR/ca.pem" ] || $SNAPCOORD certs init --dir "$DIR" >&2
i=0
while [ "$i" -lt "$REPLICAS" ]; do
  pod=snapcoord-$i
  if [ ! -f "$DIR/$pod.pem" ]; then
    $SNAPCOORD certs issue "$pod" --dir "$DIR" \
      --dns "$pod.snapcoord-peers" --dns "$pod.snapcoord-peers.$NS.svc" --dns "$pod.snapcoord-peers.$NS.svc.cluster.local" \
      --dns snapcoord --dns "snapcoord.$NS.svc" --dns "snapcoord.$NS.svc.cluster.local" \
      --dns localhost --ip 127.0.0.1 >&2
  fi
  i=$((i + 1))
done
if [ ! -f "$DIR/api-key" ]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/api-key")
fi

b64() { base64 < "$1" | tr -d '\n'; }

echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata:"
echo "  name: snapcoord-tls"
echo "  namespace: $NS"
echo "type: Opaque"
echo "data:"
echo "  ca.pem: $(b64 "$DIR/ca.pem")"
i=0
while [ "$i" -lt "$REPLICAS" ]; do
  pod=snapcoord-$i
  echo "  $pod.pem: $(b64 "$DIR/$pod.pem")"
  echo "  $pod-key.pem: $(b64 "$DIR/$pod-key.pem")"
  i=$((i + 1))
done
echo "---"
echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata:"
echo "  name: snapcoord-api-key"
echo "  namespace: $NS"
echo "type: Opaque"
echo "data:"
echo "  api-key: $(b64 "$DIR/api-key")"
