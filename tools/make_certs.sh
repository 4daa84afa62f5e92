#!/usr/bin/env bash
# Makes the credentials of a troupe cluster whose links are mutual TLS (security.tls:
# required; docs/security.md): a cluster CA and one certificate and key per process,
# signed by that CA, with the openssl command-line tool.
#
#   tools/make_certs.sh DIR NAME...     e.g. tools/make_certs.sh certs head n0 n1 client
#
# writes DIR/ca.pem (every process trusts it), DIR/ca.key (the CA's key: keep it off the
# cluster's hosts) and DIR/NAME.pem + DIR/NAME.key for each NAME (the certificate's
# common name). A CA already in DIR is reused, so a node added later gets a certificate
# of the same cluster. Keys are EC P-256, unencrypted, mode 0600. The certificate's
# common name is NAME; with TROUPE_CERT_HOSTS its subjectAltName lists NAME and those hosts.
# HTTPS clients of the head's HTTP port (server.tls) check that the host they call is the
# common name or, when there is one, in the subjectAltName (the CAF links check no host
# names). Without TROUPE_CERT_HOSTS there is none: the CAF links of CAF 0.17.6 fail about one
# connection in ten with certificates that carry one (connection_timeout; test_link_security).
# Environment: TROUPE_CERT_DAYS (validity in days, default 365); TROUPE_CERT_HOSTS (more
# host names or IP addresses, comma-separated, e.g. head.example.com,10.0.0.5).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: tools/make_certs.sh DIR NAME... (e.g. certs head n0 client)" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "make_certs.sh: the openssl command is missing (apt-get install openssl)" >&2; exit 1; }
dir="$1"
shift
days="${TROUPE_CERT_DAYS:-365}"
case "$days" in ''|*[!0-9]*) echo "make_certs.sh: TROUPE_CERT_DAYS must be a number of days, got '$days'" >&2; exit 2 ;; esac
hosts="${TROUPE_CERT_HOSTS:-}"
case "$hosts" in *[!A-Za-z0-9.:,_-]*) echo "make_certs.sh: TROUPE_CERT_HOSTS must be host names or IP addresses separated by commas, got '$hosts'" >&2; exit 2 ;; esac
for name in "$@"; do
  case "$name" in
    ca|''|*[!A-Za-z0-9._-]*)
      echo "make_certs.sh: bad name '$name' (letters, digits, '.', '_' and '-'; not 'ca')" >&2
      exit 2 ;;
  esac
done
umask 077
mkdir -p "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
  openssl req -x509 -new "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" \
    -subj "/CN=troupe cluster CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "$dir/ca.pem: new cluster CA"
fi
ext="$(mktemp)"
trap 'rm -f "$ext" "$ext".* "$dir"/*.csr' EXIT
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyAgreement" \
  "extendedKeyUsage=serverAuth,clientAuth" >"$ext"
# subjectAltName entries of NAME: DNS:NAME and the hosts of TROUPE_CERT_HOSTS.
alt_names() {
  local out="DNS:$1" h
  IFS=',' read -ra extra <<<"$hosts"
  for h in "${extra[@]}"; do
    [ -n "$h" ] || continue
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then out+=",IP:$h"; else out+=",DNS:$h"; fi
  done
  printf '%s' "$out"
}
for name in "$@"; do
  cp "$ext" "$ext.$name"
  [ -z "$hosts" ] || printf '%s\n' "subjectAltName=$(alt_names "$name")" >>"$ext.$name"
  openssl req -new "${ec[@]}" -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -days "$days" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext.$name" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext.$name"
  echo "$dir/$name.pem, $dir/$name.key: $name"
done
