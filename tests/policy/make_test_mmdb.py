#!/usr/bin/env python3
"""Builds a small MaxMind-format (GeoIP2-City-like) database for the routing-policy tests.

    python3 tests/policy/make_test_mmdb.py OUT.mmdb

Written with the PyPI package `mmdb-writer` (which needs `netaddr`), then read back with the
PyPI package `maxminddb` and every network below checked, so a broken writer fails loudly.
Missing packages are installed with `python3 -m pip install` first; exit status 3 means they
could not be installed (policy_e2e.py turns that into a SKIP), 1 any other failure.

The networks (policy_e2e.py relies on them; keep this table, NETWORKS and the test in step):

| network          | continent | country | subdivision | city     | latitude | longitude |
|------------------|-----------|---------|-------------|----------|----------|-----------|
| 198.51.100.0/24  | EU        | DE      | BE          | Berlin   |  52.52   |   13.40   |
| 203.0.113.0/24   | NA        | US      | WA          | Seattle  |  47.61   | -122.33   |
| 192.0.2.0/24     | OC        | AU      | NSW         | Sydney   | -33.87   |  151.21   |
| 2001:db8:1::/48  | EU        | FR      | (none)      | Paris    |  48.86   |    2.35   |
| 127.0.0.0/8      | NA        | US      | NY          | New York |  40.71   |  -74.01   |

Any other address has no record (a lookup returns nothing).

Database layout (what a reader sees):
  * metadata: database_type "GeoIP2-City", ip_version 6, record_size chosen by the writer
    (24 here), languages ["en"], binary format 2.0;
  * IPv4 lives in the IPv6 tree at ::/96 (::a.b.c.d), as in MaxMind's own databases; there is
    NO ::ffff:0:0/96 (IPv4-mapped) or 2002::/16 alias, like the CC0 database of
    fetch_cc0_mmdb.sh: a reader must turn ::ffff:a.b.c.d into a.b.c.d before looking it up;
  * each record is a map shaped like GeoIP2 City (every key optional to a reader):
        {"continent":    {"code": "EU", "names": {"en": "Europe"}},
         "country":      {"iso_code": "DE", "names": {"en": "Germany"}},
         "subdivisions": [{"iso_code": "BE", "names": {"en": "Berlin"}}],   # absent for Paris
         "city":         {"names": {"en": "Berlin"}},
         "location":     {"latitude": 52.52, "longitude": 13.40}}
    strings are UTF-8 strings, latitude/longitude are doubles (MMDB type 3), as in GeoIP2.
"""
import importlib
import ipaddress
import os
import subprocess
import sys

DATABASE_TYPE = "GeoIP2-City"

CONTINENT_NAMES = {"EU": "Europe", "NA": "North America", "OC": "Oceania"}
COUNTRY_NAMES = {"DE": "Germany", "US": "United States", "AU": "Australia", "FR": "France"}

# (network, continent, country, subdivision or None, subdivision name, city, latitude, longitude)
NETWORKS = [
    ("198.51.100.0/24", "EU", "DE", "BE", "Berlin", "Berlin", 52.52, 13.40),
    ("203.0.113.0/24", "NA", "US", "WA", "Washington", "Seattle", 47.61, -122.33),
    ("192.0.2.0/24", "OC", "AU", "NSW", "New South Wales", "Sydney", -33.87, 151.21),
    ("2001:db8:1::/48", "EU", "FR", None, None, "Paris", 48.86, 2.35),
    ("127.0.0.0/8", "NA", "US", "NY", "New York", "New York", 40.71, -74.01),
]

# Addresses that must have no record.
ABSENT = ["10.0.0.1", "198.51.101.1", "203.0.114.1", "8.8.8.8", "2001:db8:2::1", "::1",
          "::ffff:198.51.100.7"]


class MissingPackages(Exception):
    pass


def ensure_packages(quiet=True):
    """Imports mmdb_writer, netaddr and maxminddb, pip-installing what is missing.
    Raises MissingPackages if that fails."""
    wanted = [("mmdb_writer", "mmdb-writer"), ("netaddr", "netaddr"), ("maxminddb", "maxminddb")]
    missing = []
    for module, package in wanted:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        cmd = [sys.executable, "-m", "pip", "install"] + (["-q"] if quiet else []) + missing
        print("make_test_mmdb: installing %s" % " ".join(missing), file=sys.stderr)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MissingPackages("%s: %s" % (" ".join(cmd), e))
        if p.returncode != 0:
            raise MissingPackages("%s failed (exit %d): %s" % (
                " ".join(cmd), p.returncode, (p.stdout + p.stderr).strip()[-800:]))
        importlib.invalidate_caches()
        for module, package in wanted:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise MissingPackages("%s installed but not importable: %s" % (package, e))


def record(continent, country, subdivision, subdivision_name, city, lat, lon):
    rec = {
        "continent": {"code": continent, "names": {"en": CONTINENT_NAMES[continent]}},
        "country": {"iso_code": country, "names": {"en": COUNTRY_NAMES[country]}},
        "city": {"names": {"en": city}},
        "location": {"latitude": float(lat), "longitude": float(lon)},
    }
    if subdivision:
        rec["subdivisions"] = [{"iso_code": subdivision, "names": {"en": subdivision_name}}]
    return rec


def build(out):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=DATABASE_TYPE,
                        languages=["en"],
                        description={"en": "Meridian routing-policy test database (not real data)"},
                        float_type="f64")
    for net, *fields in NETWORKS:
        writer.insert_network(IPSet([net]), record(*fields))
    tmp = out + ".tmp%d" % os.getpid()
    writer.to_db_file(tmp)
    os.replace(tmp, out)


def sample_addresses(net):
    n = ipaddress.ip_network(net)
    return [n.network_address, n.network_address + 7, n.broadcast_address]


def verify(path):
    """Reads the file back with maxminddb, with its pure-Python reader and with the default one
    (the C extension where installed); returns a list of problems (empty: good)."""
    import maxminddb

    problems = []
    for mode in (maxminddb.MODE_MMAP, maxminddb.MODE_AUTO):
        problems += ["mode %d: %s" % (mode, p) for p in verify_with(maxminddb.open_database(path, mode))]
    return problems


def verify_with(reader):
    problems = []
    try:
        meta = reader.metadata()
        if meta.database_type != DATABASE_TYPE:
            problems.append("database_type %r, want %r" % (meta.database_type, DATABASE_TYPE))
        if meta.ip_version != 6:
            problems.append("ip_version %r, want 6" % meta.ip_version)
        for net, continent, country, subdivision, sub_name, city, lat, lon in NETWORKS:
            want = record(continent, country, subdivision, sub_name, city, lat, lon)
            prefix = ipaddress.ip_network(net).prefixlen
            for addr in sample_addresses(net):
                got, got_prefix = reader.get_with_prefix_len(str(addr))
                if got != want:
                    problems.append("%s (in %s): got %r, want %r" % (addr, net, got, want))
                    continue
                if got_prefix != prefix:
                    problems.append("%s: prefix length %s, want %s" % (addr, got_prefix, prefix))
                if not isinstance(got["location"]["latitude"], float):
                    problems.append("%s: latitude is %r, not a double" % (addr, got["location"]["latitude"]))
        for addr in ABSENT:
            got = reader.get(addr)
            if got is not None:
                problems.append("%s: should have no record, got %r" % (addr, got))
    finally:
        reader.close()
    return problems


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    try:
        ensure_packages()
    except MissingPackages as e:
        print("make_test_mmdb: cannot install the packages it needs: %s" % e, file=sys.stderr)
        return 3
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    build(out)
    problems = verify(out)
    if problems:
        print("make_test_mmdb: %s does not read back as written:" % out, file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print("make_test_mmdb: wrote %s (%d networks, %d bytes), read back and checked" % (
        out, len(NETWORKS), os.path.getsize(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
