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
use std::cell::RefCell;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

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

/// A NetCDF file as bytes (for the registry, and what [`write_nc`]
/// writes), built in memory: netcdf3 seeks back and forth in small
/// writes, which on a file are one system call each.
pub fn nc_bytes(dims: &[(&str, usize)], vars: &[Var<'_>], attrs: &[(&str, String)]) -> Result<Vec<u8>> {
    let err = |e: netcdf3::error::InvalidDataSet| anyhow::anyhow!("NetCDF definition: {e:?}");
    let mut ds = DataSet::new();
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
    let werr = |e: netcdf3::error::WriteError| anyhow::anyhow!("writing NetCDF: {e:?}");
    let buffer = SharedCursor::default();
    let mut writer = FileWriter::open_seek_write("memory.nc", Box::new(buffer.clone())).map_err(werr)?;
    writer.set_def(&ds, Version::Offset64Bit, 0).map_err(werr)?;
    for v in vars {
        writer.write_var_f64(v.name, v.data).map_err(werr)?;
    }
    writer.close().map_err(werr)?;
    let bytes = std::mem::take(buffer.0.borrow_mut().get_mut());
    Ok(bytes)
}

/// Write a NetCDF file at `path` (through `path.nc.tmp`, renamed into
/// place, so a reader never sees half a file).
pub fn write_nc(path: &Path, dims: &[(&str, usize)], vars: &[Var<'_>], attrs: &[(&str, String)]) -> Result<()> {
    let bytes = nc_bytes(dims, vars, attrs).with_context(|| format!("writing {}", path.display()))?;
    let tmp = path.with_extension("nc.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))?;
    Ok(())
}

/// An in-memory file netcdf3's writer can own (it takes a boxed writer)
/// while this side keeps a handle to read the bytes back after `close`.
#[derive(Clone, Default)]
struct SharedCursor(Rc<RefCell<Cursor<Vec<u8>>>>);

impl Write for SharedCursor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for SharedCursor {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(pos)
    }
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
