//! Loading zone directories into a catalog, and reloading them without losing good zones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_core::{Catalog, Name, Zone, zonefile};

use crate::Error;

/// Zone file size: a 1M-name zone is ~40 MB of text; anything far larger is a mistake.
pub const ZONE_FILE_BYTES_MAX: u64 = 1 << 30;

/// Where zones come from.
#[derive(Clone, Debug)]
pub struct ZoneSource {
    /// Directories of `<origin>.zone` files.
    pub dirs: Vec<PathBuf>,
    /// Follow `$INCLUDE` (paths relative to the including file's directory). Off by default: an
    /// include lets a zone file pull in any file the edge can read.
    pub allow_include: bool,
}

/// One zone that failed to load, with the reason an operator needs to fix it.
#[derive(Debug)]
pub struct LoadFailure {
    pub path: PathBuf,
    pub reason: String,
    /// The previous version of the zone is still being served.
    pub kept_previous: bool,
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

fn read_zone_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > ZONE_FILE_BYTES_MAX {
        return Err(format!(
            "{}: file larger than {ZONE_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and compiles one zone file.
pub fn load_zone(origin: &Name, path: &Path, allow_include: bool) -> Result<Zone, String> {
    let text = read_zone_text(path)?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let reader = move |file: &str| read_zone_text(&base.join(file));
    let include: Option<zonefile::IncludeReader> = if allow_include { Some(&reader) } else { None };
    let records = zonefile::parse(&text, origin, include).map_err(|e| e.to_string())?;
    Zone::build(origin, records).map_err(|e| e.to_string())
}

/// Builds a catalog from the zone directories. A zone that fails keeps `previous`'s version of
/// it, if any; failures are returned so the caller can log them (file, line, reason).
pub fn load_catalog(
    source: &ZoneSource,
    previous: Option<&Catalog>,
) -> Result<(Catalog, Vec<LoadFailure>), Error> {
    let mut catalog = Catalog::new();
    let mut failures = Vec::new();
    for (origin, path) in zone_files(&source.dirs)? {
        match load_zone(&origin, &path, source.allow_include) {
            Ok(zone) => catalog.insert(Arc::new(zone)).map_err(Error::Core)?,
            Err(reason) => {
                let old = previous.and_then(|p| p.get(&origin));
                if let Some(old) = old {
                    catalog.insert(old.clone()).map_err(Error::Core)?;
                }
                failures.push(LoadFailure {
                    path,
                    reason,
                    kept_previous: old.is_some(),
                });
            }
        }
    }
    Ok((catalog, failures))
}
