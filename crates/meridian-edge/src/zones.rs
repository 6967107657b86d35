//! Loading zone directories into a catalog, and reloading them without losing good zones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_core::{Catalog, Name, Zone, zonefile};

use crate::Error;

/// Zone file size: a 1M-name zone is ~40 MB of text; anything far larger is a mistake.
pub const ZONE_FILE_BYTES_MAX: u64 = 1 << 30;

/// One zone that failed to load, with the reason an operator needs to fix it.
#[derive(Debug)]
pub struct LoadFailure {
    pub path: PathBuf,
    pub reason: String,
}

/// Every `<origin>.zone` file in `dirs`, sorted by path so loading order is stable.
pub fn zone_files(dirs: &[PathBuf]) -> Result<Vec<(Name, PathBuf)>, Error> {
    let mut out = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.clone(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::Io(dir.clone(), e))?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(stem) = file.strip_suffix(".zone") else {
                continue;
            };
            let origin_text = if stem.ends_with('.') {
                stem.to_string()
            } else {
                format!("{stem}.")
            };
            match Name::parse(&origin_text, None) {
                Ok(origin) => out.push((origin, path)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "file name is not a zone origin; skipped")
                }
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Reads and compiles one zone file. `$INCLUDE` is refused: an edge reads only the files it is
/// given.
pub fn load_zone(origin: &Name, path: &Path) -> Result<Zone, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > ZONE_FILE_BYTES_MAX {
        return Err(format!("file larger than {ZONE_FILE_BYTES_MAX} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let records = zonefile::parse(&text, origin, None).map_err(|e| e.to_string())?;
    Zone::build(origin, records).map_err(|e| e.to_string())
}

/// Builds a catalog from the zone directories. A zone that fails keeps `previous`'s version of
/// it, if any; failures are returned so the caller can log them (file, line, reason).
pub fn load_catalog(
    dirs: &[PathBuf],
    previous: Option<&Catalog>,
) -> Result<(Catalog, Vec<LoadFailure>), Error> {
    let mut catalog = Catalog::new();
    let mut failures = Vec::new();
    for (origin, path) in zone_files(dirs)? {
        match load_zone(&origin, &path) {
            Ok(zone) => catalog.insert(Arc::new(zone)).map_err(Error::Core)?,
            Err(reason) => {
                if let Some(old) = previous.and_then(|p| p.get(&origin)) {
                    catalog.insert(old.clone()).map_err(Error::Core)?;
                }
                failures.push(LoadFailure { path, reason });
            }
        }
    }
    Ok((catalog, failures))
}
