//! NetCDF-3 arrays as geohost writes and reads them: every array geohost
//! writes (trajectories, datasets, simulations) goes through [`nc_bytes`]
//! or [`write_nc`], so it opens in xarray with named dimensions and units.
//!
//! The files are NetCDF 64-bit offset (classic data model): f64 variables,
//! each with `units` and `long_name`, and global attributes that start with
//! [`common_attrs`]. Writing is temp file → rename, so a reader never sees
//! a half-written file. Reading ([`read::Reader`]) names the file and the
//! missing or malformed dimension, variable or attribute in every error.

pub mod read;

pub use read::{Array2, Reader};

use anyhow::{Context, Result};
use netcdf3::{DataSet, FileWriter, Version};
use std::path::Path;

/// One f64 variable of a NetCDF file, with its units and long name.
pub struct Var<'a> {
    pub name: &'a str,
    pub dims: &'a [&'a str],
    pub data: &'a [f64],
    pub units: &'a str,
    pub long_name: &'a str,
}

/// The global attributes every geohost NetCDF file starts with.
pub fn common_attrs() -> Vec<(&'static str, String)> {
    vec![("Conventions", "CF-1.8".to_string()), ("source", format!("geohost {}", env!("CARGO_PKG_VERSION")))]
}

/// A NetCDF file as bytes (for the registry). netcdf3 writes to a path, so
/// this goes through a private temporary file.
pub fn nc_bytes(dims: &[(&str, usize)], vars: &[Var<'_>], attrs: &[(&str, String)]) -> Result<Vec<u8>> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("geohost-nc-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("file.nc");
    let result = write_nc(&path, dims, vars, attrs).and_then(|()| std::fs::read(&path).with_context(|| format!("reading back {}", path.display())));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Write a NetCDF file at `path` (through `path.nc.tmp`, renamed into place).
pub fn write_nc(path: &Path, dims: &[(&str, usize)], vars: &[Var<'_>], attrs: &[(&str, String)]) -> Result<()> {
    let mut ds = DataSet::new();
    let err = |e: netcdf3::error::InvalidDataSet| anyhow::anyhow!("building {}: {e:?}", path.display());
    for (name, len) in dims {
        ds.add_fixed_dim(*name, *len).map_err(err)?;
    }
    for v in vars {
        ds.add_var_f64(v.name, v.dims).map_err(err)?;
        ds.add_var_attr_string(v.name, "units", v.units).map_err(err)?;
        ds.add_var_attr_string(v.name, "long_name", v.long_name).map_err(err)?;
    }
    for (name, value) in attrs {
        ds.add_global_attr_string(name, value).map_err(err)?;
    }
    let tmp = path.with_extension("nc.tmp");
    let _ = std::fs::remove_file(&tmp);
    let werr = |e: netcdf3::error::WriteError| anyhow::anyhow!("writing {}: {e:?}", path.display());
    let mut writer = FileWriter::create_new(&tmp).map_err(werr)?;
    writer.set_def(&ds, Version::Offset64Bit, 0).map_err(werr)?;
    for v in vars {
        writer.write_var_f64(v.name, v.data).map_err(werr)?;
    }
    writer.close().map_err(werr)?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_with_its_values_and_attributes() {
        let data = [1.0, 2.5, -3.0, f64::MAX, 0.0, 1e-300];
        let bytes = nc_bytes(
            &[("time", 2), ("state", 3)],
            &[Var { name: "x", dims: &["time", "state"], data: &data, units: "m", long_name: "a test array" }],
            &[("note", "hello".into())],
        )
        .unwrap();
        let mut r = Reader::open("t.nc", bytes, "a test file").unwrap();
        assert_eq!((r.dim("time").unwrap(), r.dim("state").unwrap()), (2, 3));
        assert_eq!(r.var("x", 6).unwrap(), data);
        assert_eq!(r.attr("note").unwrap(), "hello");
        let wrong = r.var("x", 5).unwrap_err().to_string();
        assert!(wrong.contains("t.nc") && wrong.contains("`x` has 6 values, expected 5"), "{wrong}");
        let missing = r.dim("member").unwrap_err().to_string();
        assert!(missing.contains("no dimension `member`") && missing.contains("a test file"), "{missing}");
    }

    #[test]
    fn bytes_that_are_not_netcdf_are_refused_with_the_file_named() {
        let err = Reader::open("garbage.nc", b"not a netcdf file".to_vec(), "a test file").err().unwrap().to_string();
        assert!(err.contains("garbage.nc is not a readable NetCDF-3 file"), "{err}");
    }
}
