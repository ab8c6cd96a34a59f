#!/usr/bin/env bash
# Certificate steps for docs/mosquitto/mosquitto.conf (OpenSSL, EC P-256). Run once for the CA
# and the broker, then once per device: ./make-certs.sh device collar-000
# Keep device-ca.key offline; a device's key never leaves the device it was made for.
set -euo pipefail
umask 077
cmd=${1:-}; name=${2:-}
case "$cmd" in
  ca)
    openssl ecparam -name prime256v1 -genkey -noout -out device-ca.key
    openssl req -x509 -new -key device-ca.key -sha256 -days 3650 \
      -subj "/CN=edgeloop device CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out device-ca.crt ;;
  server)  # name = the broker's DNS name, e.g. mqtt.example.com
    openssl ecparam -name prime256v1 -genkey -noout -out server.key
    openssl req -new -key server.key -subj "/CN=$name" -out server.csr
    openssl x509 -req -in server.csr -CA device-ca.crt -CAkey device-ca.key -CAcreateserial \
      -days 825 -sha256 -out server.crt -extfile <(printf \
      'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE' "$name")
    rm server.csr ;;
  device)  # name = the device id: 1-64 of [A-Za-z0-9_.-] (shared.topics.check_id)
    [[ "$name" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "bad device id: $name" >&2; exit 2; }
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA device-ca.crt -CAkey device-ca.key -CAcreateserial \
      -days 825 -sha256 -out "$name.crt" -extfile <(printf \
      'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE')
    rm "$name.csr" ;;
  *) echo "usage: $0 ca | server <dns-name> | device <device-id>" >&2; exit 2 ;;
esac
