#!/bin/sh
# Makes a cluster CA and one certificate per node for config/cluster-tls/
# (loopback addresses; for real hosts put each node's DNS name and IP in
# its subjectAltName). Needs openssl. Writes ./certs/; keep ca-key.pem
# offline once the node certificates are made.
set -eu
cd "$(dirname "$0")"
mkdir -p certs
cd certs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=drover cluster CA" -keyout ca-key.pem -out ca.pem
for n in 1 2 3; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=drover node $n" -keyout node$n-key.pem -out node$n.csr
  # serverAuth for clients and peers calling it; clientAuth for its own
  # calls to peers (mutual TLS).
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > node$n.ext
  openssl x509 -req -in node$n.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days 825 -extfile node$n.ext -out node$n.pem
  rm node$n.csr node$n.ext
done
echo "made $(pwd)/ca.pem and node1..3 certificates"
