//! MaxMind-format geo databases (GeoLite2 / GeoIP2 Country or City, DB-IP, IPinfo, and the CC0
//! `geo-whois-asn-country` database): where a client address is, for geolocation, geoproximity
//! and `explain`.
//!
//! A lookup borrows its strings from the database and decodes only the fields routing needs
//! (continent, country, first subdivision, coordinates), so it allocates nothing per query.
//! Decoding a record still costs microseconds (a GeoIP2 City record is a nested map), so each
//! worker thread keeps a small direct-mapped cache of recent addresses: resolvers send ECS
//! prefixes (e.g. a /24's network address) and come back with the same ones, so nearly every
//! lookup is a hit. The database is loaded once and kept for the life of the process (its bytes
//! are leaked on purpose), which lets cached locations borrow from it.
//! Databases that carry only a country code (the CC0 country database) get their continent from
//! a built-in ISO 3166 → continent table, so continent records work with them too.

use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use meridian_core::policy::{Coordinates, GeoLookup, Location};
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};

/// Largest database accepted (GeoLite2-City is ~60 MB; DB-IP city lite ~130 MB).
pub const GEO_DB_BYTES_MAX: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1} bytes; the limit is {GEO_DB_BYTES_MAX}")]
    TooLarge(String, u64),
    #[error("{0}: not a MaxMind DB: {1}")]
    Format(String, String),
}

/// Addresses each worker thread remembers (direct-mapped by a hash of the address): a few
/// thousand resolvers and client prefixes cover most traffic a POP sees; ~100 KB per thread.
pub const GEO_CACHE_ENTRIES: usize = 1024;

/// An opened database, read whole into memory and kept for the life of the process.
pub struct GeoDb {
    /// Leaked with its bytes: lookups then borrow strings for `'static`.
    reader: &'static maxminddb::Reader<&'static [u8]>,
    database_type: String,
    /// Tells this database's cache entries from another's (tests open several).
    id: usize,
}

/// One cached lookup: the database, the address, and what it gave.
#[derive(Clone, Copy)]
struct CacheEntry {
    db: usize,
    ip: IpAddr,
    location: Option<Location<&'static str>>,
}

thread_local! {
    static CACHE: RefCell<Vec<Option<CacheEntry>>> = const { RefCell::new(Vec::new()) };
}

fn slot(ip: IpAddr) -> usize {
    let bits: u128 = match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let h = (bits as u64 ^ (bits >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 54) as usize % GEO_CACHE_ENTRIES
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeoDb({})", self.database_type)
    }
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Coords {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// The first element of `subdivisions` (the largest), without collecting the array.
struct FirstSubdivision<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstSubdivision<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstSubdivision<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of subdivisions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first: Option<IsoCode<'de>> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstSubdivision(first.and_then(|s| s.iso_code)))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The fields routing reads, in both layouts: GeoIP2 (`continent.code`, `country.iso_code`,
/// `subdivisions[0].iso_code`, `location`) and flat (`country_code`, as the CC0 database and
/// several others write it).
#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow, default)]
    continent: Option<Code<'a>>,
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    subdivisions: Option<FirstSubdivision<'a>>,
    #[serde(default)]
    location: Option<Coords>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    continent_code: Option<&'a str>,
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let shown = path.display().to_string();
        let size = std::fs::metadata(path)
            .map_err(|e| GeoError::Io(shown.clone(), e))?
            .len();
        if size > GEO_DB_BYTES_MAX {
            return Err(GeoError::TooLarge(shown, size));
        }
        let bytes = std::fs::read(path).map_err(|e| GeoError::Io(shown.clone(), e))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| GeoError::Format(shown.clone(), e.to_string()))?;
        let database_type = reader.metadata.database_type.clone();
        let reader: &'static maxminddb::Reader<&'static [u8]> = Box::leak(Box::new(reader));
        Ok(GeoDb {
            reader,
            database_type,
            id: bytes.as_ptr() as usize,
        })
    }

    /// The uncached lookup.
    fn decode(&self, ip: IpAddr) -> Option<Location<&'static str>> {
        let reader: &'static maxminddb::Reader<&'static [u8]> = self.reader;
        let record: GeoRecord<'static> = reader.lookup(ip).ok().flatten()?;
        let country = record
            .country
            .and_then(|c| c.iso_code)
            .or(record.country_code);
        let continent = record
            .continent
            .and_then(|c| c.code)
            .or(record.continent_code)
            .or_else(|| country.and_then(continent_of));
        let coordinates = record.location.and_then(|l| {
            Some(Coordinates {
                latitude: l.latitude?,
                longitude: l.longitude?,
            })
        });
        Some(Location {
            continent,
            country,
            subdivision: record.subdivisions.and_then(|s| s.0),
            coordinates,
        })
    }

    pub fn database_type(&self) -> &str {
        &self.database_type
    }
}

impl GeoLookup for GeoDb {
    fn locate(&self, ip: IpAddr) -> Option<Location<&str>> {
        let at = slot(ip);
        let hit = CACHE.with(|c| {
            let c = c.borrow();
            c.get(at)
                .copied()
                .flatten()
                .filter(|e| e.db == self.id && e.ip == ip)
        });
        if let Some(e) = hit {
            return e.location;
        }
        let location = self.decode(ip);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_empty() {
                // Once per thread: the cache is warm after this.
                c.resize(GEO_CACHE_ENTRIES, None);
            }
            c[at] = Some(CacheEntry {
                db: self.id,
                ip,
                location,
            });
        });
        location
    }
}

/// ISO 3166-1 alpha-2 → continent code (as GeoIP2 assigns them).
pub fn continent_of(country: &str) -> Option<&'static str> {
    const TABLE: &str = "\
AD EU AE AS AF AS AG NA AI NA AL EU AM AS AO AF AQ AN AR SA AS OC AT EU AU OC AW NA AX EU AZ AS \
BA EU BB NA BD AS BE EU BF AF BG EU BH AS BI AF BJ AF BL NA BM NA BN AS BO SA BQ NA BR SA BS NA \
BT AS BV AN BW AF BY EU BZ NA CA NA CC AS CD AF CF AF CG AF CH EU CI AF CK OC CL SA CM AF CN AS \
CO SA CR NA CU NA CV AF CW NA CX AS CY EU CZ EU DE EU DJ AF DK EU DM NA DO NA DZ AF EC SA EE EU \
EG AF EH AF ER AF ES EU ET AF FI EU FJ OC FK SA FM OC FO EU FR EU GA AF GB EU GD NA GE AS GF SA \
GG EU GH AF GI EU GL NA GM AF GN AF GP NA GQ AF GR EU GS AN GT NA GU OC GW AF GY SA HK AS HM AN \
HN NA HR EU HT NA HU EU ID AS IE EU IL AS IM EU IN AS IO AS IQ AS IR AS IS EU IT EU JE EU JM NA \
JO AS JP AS KE AF KG AS KH AS KI OC KM AF KN NA KP AS KR AS KW AS KY NA KZ AS LA AS LB AS LC NA \
LI EU LK AS LR AF LS AF LT EU LU EU LV EU LY AF MA AF MC EU MD EU ME EU MF NA MG AF MH OC MK EU \
ML AF MM AS MN AS MO AS MP OC MQ NA MR AF MS NA MT EU MU AF MV AS MW AF MX NA MY AS MZ AF NA AF \
NC OC NE AF NF OC NG AF NI NA NL EU NO EU NP AS NR OC NU OC NZ OC OM AS PA NA PE SA PF OC PG OC \
PH AS PK AS PL EU PM NA PN OC PR NA PS AS PT EU PW OC PY SA QA AS RE AF RO EU RS EU RU EU RW AF \
SA AS SB OC SC AF SD AF SE EU SG AS SH AF SI EU SJ EU SK EU SL AF SM EU SN AF SO AF SR SA SS AF \
ST AF SV NA SX NA SY AS SZ AF TC NA TD AF TF AN TG AF TH AS TJ AS TK OC TL AS TM AS TN AF TO OC \
TR AS TT NA TV OC TW AS TZ AF UA EU UG AF UM OC US NA UY SA UZ AS VA EU VC NA VE SA VG NA VI NA \
VN AS VU OC WF OC WS OC XK EU YE AS YT AF ZA AF ZM AF ZW AF";
    let mut words = TABLE.split_ascii_whitespace();
    while let (Some(c), Some(k)) = (words.next(), words.next()) {
        if c.eq_ignore_ascii_case(country) {
            return Some(k);
        }
    }
    None
}
