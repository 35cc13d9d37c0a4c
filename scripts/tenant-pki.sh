#!/usr/bin/env bash
# Tenant PKI for the network boot (openssl):
#   DIR/ca.pem, DIR/ca.key            the tenant CA, EC P-256 (goes into the configuration page)
#   DIR/server.pem, DIR/server.key    the boot server's certificate (SAN = SERVER_NAME), P-256
#   DIR/workload.pem, DIR/workload.key  the workload signing key (Ed25519, PKCS#8) and its
#                                     certificate (extendedKeyUsage = codeSigning)
# Sign a workload with: tvp-boot-server sign-workload --elf E --key DIR/workload.key
#   --cert DIR/workload.pem --out E.signed
# Usage: scripts/tenant-pki.sh DIR SERVER_NAME
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
openssl genpkey -algorithm ed25519 -out workload.key
openssl req -new -key workload.key -out workload.csr -subj "/CN=tvp tenant workload signing" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' > workload.ext
openssl x509 -req -in workload.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out workload.pem \
    -days 825 -extfile workload.ext 2>/dev/null
rm -f server.csr server.ext workload.csr workload.ext ca.srl
