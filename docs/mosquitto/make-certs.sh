#!/usr/bin/env bash
# Certificate steps for docs/mosquitto/mosquitto.conf (OpenSSL, EC P-256). Run once for the CA
# and the broker, then once per device: ./make-certs.sh device collar-000
# Keep device-ca.key offline; a device's key never leaves the device it was made for.
# The certificate's CN is the MQTT username (use_identity_as_username) and client id
# (use_username_as_clientid): a device certificate named like the cloud would read every uplink
# and forge acks, so the cloud's names are reserved: `device` refuses them, `cloud` issues them.
set -euo pipefail
umask 077
cmd=${1:-}; name=${2:-}
acl=${EDGELOOP_ACL:-$(dirname "$0")/acl}  # its `user` lines are the cloud's (and other privileged) names
reserved() {  # the cloud's namespace (edgeloop-cloud, aggregator ids edgeloop-<instance>) and ACL users
  local lower=${1,,}
  [[ "$lower" == edgeloop* ]] && return 0
  [[ -r "$acl" ]] && awk '$1 == "user" {print $2}' "$acl" | grep -qixF -- "$1" && return 0
  return 1
}
client_cert() {  # $1 = CN: a client certificate signed by the device CA
  openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA device-ca.crt -CAkey device-ca.key -CAcreateserial \
    -days 825 -sha256 -out "$1.crt" -extfile <(printf \
    'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE')
  rm "$1.csr"
}
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
    [[ "$name" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "bad device id: '$name': use 1-64 of A-Z a-z 0-9 _ . -" >&2; exit 2; }
    if reserved "$name"; then
      echo "refused: '$name' is reserved for the cloud (names starting with edgeloop, and the ACL's users);" \
           "a device certificate with it would read every uplink and forge acks. Pick another device id," \
           "or issue the cloud's identity with: $0 cloud [edgeloop-<name>]" >&2
      exit 2
    fi
    client_cert "$name" ;;
  cloud)  # name = the cloud's MQTT username (default edgeloop-cloud, the ACL's `user` line)
    name=${name:-edgeloop-cloud}
    [[ "$name" =~ ^edgeloop-[A-Za-z0-9_.-]{1,55}$ ]] || {
      echo "bad cloud name: '$name': the cloud's identity is edgeloop-<name> (the ACL's user, e.g. edgeloop-cloud)" >&2; exit 2; }
    client_cert "$name" ;;
  *) echo "usage: $0 ca | server <dns-name> | device <device-id> | cloud [edgeloop-cloud]" >&2; exit 2 ;;
esac
