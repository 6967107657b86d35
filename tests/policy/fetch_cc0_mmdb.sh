#!/usr/bin/env bash
# Prints the path of a real, freely licensed IP-to-country database in MaxMind DB format, taken
# from the npm package @ip-location-db/geo-whois-asn-country-mmdb, downloading it (`npm pack`,
# the ordinary npm client: no other network is needed) only when it is not cached yet.
#
#     db=$(tests/policy/fetch_cc0_mmdb.sh)        # stdout: the path and nothing else
#
# Cache: ${MERIDIAN_CACHE_DIR:-/var/cache/meridian-test}/geo/geo-whois-asn-country.mmdb, with
# geo-whois-asn-country.version (the package version) beside it. Delete both to fetch again.
# Version: MERIDIAN_CC0_MMDB_VERSION (default the pinned one below, so that the countries the
# tests expect stay put; "latest" takes the newest). Exit status 0 with the path on stdout, 1
# when it cannot be had (progress and reasons on stderr).
#
# npm: when `npm` is missing it is installed with apt-get (Debian packages nodejs and npm; on
# a machine whose nodejs comes from NodeSource, npm is inside nodejs). That needs root.
#
# Licence: package.json says CC0-1.0; its README credits the WHOIS/ASN source data to the NRO
# under CC BY 4.0 (attribution: nro.net). The file is test data here and is not committed.
#
# The tarball (version 2.3.2026061719) holds package/{package.json,README.md,NRO_LICENSE,
# geo-whois-asn-country-ipv4.mmdb, geo-whois-asn-country-ipv6.mmdb, geo-whois-asn-country.mmdb};
# we keep the last, which covers both families (~7.8 MB).
#
# Its layout, as read with the PyPI maxminddb package (whole database iterated: 1,010,885
# networks, 494,271 of them IPv4, 251 distinct codes, every record the same shape):
#   * metadata: database_type "country ipvAll", ip_version 6, record_size 24,
#     node_count 1306595, languages [], description {}, binary format 2.0;
#   * IPv4 is in the IPv6 tree at ::/96 (::a.b.c.d), as in MaxMind's databases, but there is NO
#     ::ffff:0:0/96 (IPv4-mapped) and no 2002::/16 alias: ::ffff:8.8.8.8 finds nothing, so a
#     reader must turn an IPv4-mapped address into IPv4 before the lookup;
#   * every record is a map with exactly one key:
#         {"country_code": "US"}          (UTF-8 string, ISO 3166-1 alpha-2, upper case)
#     no continent, no subdivision, no coordinates, no names; addresses with no data (127.0.0.1,
#     ::1, private ranges) have no record at all. Continent-level geolocation (and geoproximity)
#     need a country -> continent table on the reader's side.
#   * Rust (maxminddb crate): #[derive(Deserialize)] struct Cc0 { country_code: Option<String> }
#     (or &str borrowed from the reader).
#
# Well-known addresses in that version (longest matching network in brackets):
#   8.8.8.8 US (8.8.0.0/15) · 1.1.1.1 AU (/24) · 193.0.6.139 NL (RIPE NCC, /20) ·
#   202.12.29.175 AU (APNIC, /24) · 9.9.9.9 US · 194.0.0.53 DE · 203.119.0.1 SG ·
#   2001:4860:4860::8888 US · 2001:67c:2e8:22::c100:68b NL.
#   The same holds for their /24 network addresses (8.8.8.0, 193.0.6.0, 202.12.29.0), which is
#   what an ECS /24 carries. Note: 198.51.100.0/24 (a documentation range) is AU here.
set -euo pipefail

PACKAGE=@ip-location-db/geo-whois-asn-country-mmdb
PINNED=2.3.2026061719
VERSION=${MERIDIAN_CC0_MMDB_VERSION:-$PINNED}
FILE=geo-whois-asn-country.mmdb
DIR=${MERIDIAN_CACHE_DIR:-/var/cache/meridian-test}/geo
DEST=$DIR/$FILE

say() { echo "fetch_cc0_mmdb: $*" >&2; }

# A MaxMind DB ends with its metadata, marked by \xab\xcd\xefMaxMind.com.
looks_like_mmdb() {
  [ -s "$1" ] || return 1
  if python3 -c 'import maxminddb' 2>/dev/null; then
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, maxminddb
r = maxminddb.open_database(sys.argv[1])
assert r.metadata().ip_version == 6
assert r.get("8.8.8.8") is not None
EOF
  else
    tail -c 131072 "$1" | grep -aq 'MaxMind\.com'
  fi
}

if looks_like_mmdb "$DEST"; then
  echo "$DEST"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  say "npm is missing: installing nodejs and npm with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends nodejs npm >&2 \
    || apt-get install -y -qq --no-install-recommends nodejs >&2 \
    || { say "cannot install npm"; exit 1; }
  command -v npm >/dev/null 2>&1 || { say "npm still missing after apt-get"; exit 1; }
fi

mkdir -p "$DIR"
work=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

spec=$PACKAGE
[ "$VERSION" = latest ] || spec=$PACKAGE@$VERSION
say "npm pack $spec"
if ! (cd "$work" && npm pack --silent "$spec" >pack.out 2>pack.err); then
  cat "$work/pack.err" >&2 || true
  if [ "$VERSION" = "$PINNED" ] && [ -z "${MERIDIAN_CC0_MMDB_VERSION:-}" ]; then
    # The pinned version may have been unpublished: take the newest and say so.
    say "pinned version $PINNED not available; trying the latest"
    spec=$PACKAGE
    (cd "$work" && npm pack --silent "$spec" >pack.out 2>pack.err) \
      || { cat "$work/pack.err" >&2; say "npm pack $spec failed"; exit 1; }
  else
    say "npm pack $spec failed"
    exit 1
  fi
fi
tgz=$(ls "$work"/*.tgz 2>/dev/null | head -n 1)
[ -n "$tgz" ] || { say "npm pack produced no tarball"; exit 1; }
tar -xzf "$tgz" -C "$work"
[ -f "$work/package/$FILE" ] || { say "$FILE not in $(basename "$tgz"): $(tar -tzf "$tgz" | tr '\n' ' ')"; exit 1; }
looks_like_mmdb "$work/package/$FILE" || { say "$FILE from $(basename "$tgz") is not a MaxMind DB"; exit 1; }
got_version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$work/package/package.json" | head -n 1)

# Atomic: a concurrent run sees the old state or the whole file.
mv -f "$work/package/$FILE" "$DEST.tmp.$$"
mv -f "$DEST.tmp.$$" "$DEST"
echo "${got_version:-unknown}" >"$DIR/geo-whois-asn-country.version"
say "cached $PACKAGE ${got_version:-?} at $DEST"
echo "$DEST"
