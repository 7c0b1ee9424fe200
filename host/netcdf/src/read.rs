//! Reading geohost's NetCDF files back, from disk or from registry bytes.
//! Errors name the file and the dimension, variable or attribute that is
//! missing or malformed, and say what file was expected.

use anyhow::{bail, Context, Result};
use netcdf3::FileReader;
use std::io::Cursor;

/// A `rows × cols` row-major array (e.g. time × state).
#[derive(Clone, Debug, PartialEq)]
pub struct Array2 {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Array2 {
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// An open NetCDF-3 file with a label for errors and a phrase saying what
/// file was expected (e.g. "a file written by `geohost run`").
pub struct Reader {
    inner: FileReader,
    label: String,
    expected: String,
}

impl Reader {
    pub fn open(label: &str, bytes: Vec<u8>, expected: &str) -> Result<Reader> {
        let inner = FileReader::open_seek_read(label, Box::new(Cursor::new(bytes)))
            .map_err(|e| anyhow::anyhow!("{label} is not a readable NetCDF-3 file ({e:?}); expected {expected}"))?;
        Ok(Reader { inner, label: label.to_string(), expected: expected.to_string() })
    }

    pub fn dim(&self, name: &str) -> Result<usize> {
        self.inner.data_set().dim_size(name).with_context(|| format!("{}: no dimension `{name}`; expected {}", self.label, self.expected))
    }

    pub fn has_var(&self, name: &str) -> bool {
        self.inner.data_set().has_var(name)
    }

    /// Variable `name` as f64, which must hold exactly `len` values.
    pub fn var(&mut self, name: &str, len: usize) -> Result<Vec<f64>> {
        let data = self.inner.read_var_f64(name).map_err(|e| anyhow::anyhow!("{}: cannot read variable `{name}` as f64: {e:?}", self.label))?;
        if data.len() != len {
            bail!("{}: variable `{name}` has {} values, expected {len}", self.label, data.len());
        }
        Ok(data)
    }

    /// Variable `name` as f64, all its values (any dimensions, row-major).
    pub fn var_all(&mut self, name: &str) -> Result<Vec<f64>> {
        if !self.has_var(name) {
            bail!("{}: no variable `{name}`; expected {}", self.label, self.expected);
        }
        self.inner.read_var_f64(name).map_err(|e| anyhow::anyhow!("{}: cannot read variable `{name}` as f64: {e:?}", self.label))
    }

    pub fn attr(&self, name: &str) -> Result<String> {
        self.inner
            .data_set()
            .get_global_attr_as_string(name)
            .with_context(|| format!("{}: no global attribute `{name}`; expected {}", self.label, self.expected))
    }
}
