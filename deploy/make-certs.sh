#!/usr/bin/env bash
# Make a private CA and TLS certificates for keyauth and the aggregation server.
# Usage: deploy/make-certs.sh [OUT_DIR] [SERVER_NAMES...]
#   OUT_DIR       defaults to deploy/certs
#   SERVER_NAMES  DNS names the certificates are valid for
#                 (default: keyauth fl-server localhost)
# Clients trust ca.pem (SSL_CERT_FILE=ca.pem for hefl-client, hefl-admin and the
# server's calls to keyauth); never ship ca.key.
set -euo pipefail
out=${1:-"$(dirname "$0")/certs"}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(keyauth fl-server localhost)
mkdir -p "$out"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -subj "/CN=hefl private CA" \
    -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null

for name in "${names[@]}"; do
    san="DNS:$name"
    [ "$name" = localhost ] && san="DNS:localhost,IP:127.0.0.1"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
        -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
    openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
        -CAcreateserial -days 397 -out "$out/$name.pem" \
        -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
    rm -f "$out/$name.csr"
    echo "wrote $out/$name.pem and $out/$name.key"
done
chmod 0644 "$out"/*.pem
echo "clients trust $out/ca.pem"
