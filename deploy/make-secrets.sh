#!/bin/sh
# Make the secrets deploy/compose.yaml reads: the coordinator's master secret, one API key per
# agent, a development CA with a server certificate for nginx, and Grafana's admin password.
# Usage: deploy/make-secrets.sh [DIR] [EXTRA_TLS_NAME]   (DIR defaults to deploy/secrets)
# Existing files are kept, so running it again never changes a key agents already use.
# For production, use a certificate from your CA for the name agents dial instead of dev-ca.
set -eu
dir=${1:-$(dirname "$0")/secrets}
extra=${2:-}
agents="agent-l1 agent-l2 agent-l3"
umask 077
mkdir -p "$dir/tls"

if [ ! -s "$dir/master_secret" ]; then
    openssl rand -hex 32 > "$dir/master_secret"
fi
secret=$(cat "$dir/master_secret")
for id in $agents; do
    # The agent API key: "iosw_" + hex(HMAC-SHA256(masterSecret, agentID)), as `ioswarm keygen`.
    if [ ! -s "$dir/$id.key" ]; then
        mac=$(printf '%s' "$id" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
        printf 'iosw_%s\n' "$mac" > "$dir/$id.key"
    fi
done
if [ ! -s "$dir/grafana_admin_password" ]; then
    openssl rand -hex 16 > "$dir/grafana_admin_password"
fi

if [ ! -s "$dir/tls/ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/CN=ioswarm dev CA" -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.pem" 2>/dev/null
fi
if [ ! -s "$dir/tls/server.pem" ]; then
    san="DNS:nginx,DNS:localhost,IP:127.0.0.1"
    if [ -n "$extra" ]; then
        san="$san,DNS:$extra"
    fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=nginx" \
        -keyout "$dir/tls/server.key" -out "$dir/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" \
        > "$dir/tls/server.ext"
    openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
        -CAcreateserial -days 825 -extfile "$dir/tls/server.ext" -out "$dir/tls/server.pem" 2>/dev/null
    rm -f "$dir/tls/server.csr" "$dir/tls/server.ext"
fi
# The containers run as other users (ioswarm uid 10001, nginx, grafana): let them read.
chmod 0644 "$dir"/*.key "$dir/master_secret" "$dir/grafana_admin_password" \
    "$dir/tls/ca.pem" "$dir/tls/server.pem" "$dir/tls/server.key"
chmod 0755 "$dir" "$dir/tls"
echo "secrets in $dir; agents trust $dir/tls/ca.pem"
