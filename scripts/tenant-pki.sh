#!/usr/bin/env bash
# Tenant PKI for the boot server (openssl): a tenant CA and a boot server certificate
# issued by it, EC P-256, PEM.
# Usage: scripts/tenant-pki.sh DIR SERVER_NAME
#   DIR/ca.pem, DIR/ca.key       the tenant CA (goes into the configuration page)
#   DIR/server.pem, DIR/server.key  the boot server's certificate (SAN = SERVER_NAME) and key
set -euo pipefail
dir=$1
name=$2
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 3650 -subj "/CN=tvp tenant CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=$name" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$name" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 825 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
