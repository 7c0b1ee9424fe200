//! Numbers in the formats people have: an observation vector or a table of
//! posterior samples as text (CSV with or without a header row, or
//! whitespace-separated), or as NetCDF written by geohost.

use anyhow::{bail, Context, Result};
use nalgebra::DMatrix;
use std::path::Path;

fn tokens(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).collect()
}

/// A text table: its header's names, if it has one, and its rows.
type TextTable = (Option<Vec<String>>, Vec<Vec<f64>>);

/// Rows of numbers after an optional header (a first line that is not all
/// numbers).
fn rows(text: &str) -> Result<TextTable> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).peekable();
    let mut header = None;
    if let Some((_, first)) = lines.peek() {
        if tokens(first).iter().any(|t| t.parse::<f64>().is_err()) {
            header = Some(tokens(first).iter().map(|t| t.trim_matches('"').to_string()).collect());
            lines.next();
        }
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let row = tokens(line)
            .iter()
            .map(|t| t.parse::<f64>().map_err(|_| anyhow::anyhow!("line {}: `{t}` is not a number (only the first line may be a header)", n + 1)))
            .collect::<Result<Vec<f64>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("no numbers in it");
    }
    Ok((header, rows))
}

/// All the numbers of a text, in order (an observation vector).
pub fn parse_numbers(text: &str) -> Result<Vec<f64>> {
    Ok(rows(text)?.1.into_iter().flatten().collect())
}

/// An observation vector: NetCDF from `geohost run` (its `y`), or numbers as text.
pub fn read_observation(path: &Path) -> Result<Vec<f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read observation file {}", path.display()))?;
    if bytes.starts_with(b"CDF") {
        return Ok(crate::outputs::read::ObservationFile::parse(&path.display().to_string(), bytes)?.y);
    }
    let text = String::from_utf8(bytes).with_context(|| format!("{} is neither NetCDF nor text", path.display()))?;
    parse_numbers(&text).with_context(|| format!("observation file {}", path.display()))
}

/// Posterior samples as `parameters × samples`, in the order of `names`:
/// a text table with one row per sample (a header naming the columns is
/// matched to `names`, in any order; without one the columns are taken in
/// `names`' order), or NetCDF-3 (see [`netcdf_samples`]).
pub fn read_samples(path: &Path, names: &[String]) -> Result<DMatrix<f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read samples file {}", path.display()))?;
    let m = if bytes.starts_with(b"CDF") {
        netcdf_samples(path, bytes, names)?
    } else if bytes.starts_with(b"\x89HDF") {
        bail!(
            "samples file {} is NetCDF-4 (HDF5), which geohost does not read: write NetCDF-3 instead (xarray: ds.to_netcdf(path, format=\"NETCDF3_64BIT\")) or CSV",
            path.display()
        );
    } else {
        let text = String::from_utf8(bytes).with_context(|| format!("samples file {} is neither NetCDF nor text", path.display()))?;
        text_samples(path, &text, names)?
    };
    if m.iter().any(|v| !v.is_finite()) {
        bail!("samples file {}: a value is not finite", path.display());
    }
    Ok(m)
}

/// Samples from NetCDF-3: either geohost's own layout (`samples(sample,
/// parameter)` with the names in the global attribute `parameters`, as
/// `geohost posterior sample -o F.nc` writes), or one variable per
/// parameter, all of the same length, whatever their dimensions (e.g.
/// xarray's or ArviZ's `chain × draw`, flattened).
fn netcdf_samples(path: &Path, bytes: Vec<u8>, names: &[String]) -> Result<DMatrix<f64>> {
    let label = format!("samples file {}", path.display());
    let mut r = geohost_netcdf::Reader::open(&label, bytes, "posterior samples: one variable per parameter, or geohost's samples(sample, parameter)")?;
    if names.iter().all(|n| r.has_var(n)) {
        let columns = names.iter().map(|n| r.var_all(n)).collect::<Result<Vec<_>>>()?;
        let len = columns[0].len();
        if let Some((n, c)) = names.iter().zip(&columns).find(|(_, c)| c.len() != len) {
            bail!("{label}: variable `{n}` has {} values, `{}` has {len}: every parameter needs one value per sample", c.len(), names[0]);
        }
        return Ok(DMatrix::from_fn(names.len(), len, |i, j| columns[i][j]));
    }
    if r.has_var("samples") {
        let file_names: Vec<String> = r.attr("parameters")?.split_whitespace().map(str::to_string).collect();
        let (n, d) = (r.dim("sample")?, r.dim("parameter")?);
        if file_names.len() != d {
            bail!("{label}: its `parameters` attribute names {} parameters, its `parameter` dimension has {d}", file_names.len());
        }
        let data = r.var("samples", n * d)?;
        let columns: Vec<usize> = names
            .iter()
            .map(|name| file_names.iter().position(|f| f == name).with_context(|| format!("{label}: no parameter `{name}` in it ({})", file_names.join(", "))))
            .collect::<Result<_>>()?;
        return Ok(DMatrix::from_fn(names.len(), n, |i, j| data[j * d + columns[i]]));
    }
    let missing: Vec<&str> = names.iter().filter(|n| !r.has_var(n)).map(String::as_str).collect();
    bail!("{label}: no variable for {} (and no `samples` variable): name one variable per parameter ({})", missing.join(", "), names.join(", "))
}

/// Samples from a text table (see [`read_samples`]).
fn text_samples(path: &Path, text: &str, names: &[String]) -> Result<DMatrix<f64>> {
    let (header, rows) = rows(text).with_context(|| format!("samples file {}", path.display()))?;
    let columns: Vec<usize> = match &header {
        Some(h) => names
            .iter()
            .map(|n| {
                h.iter().position(|c| c == n).with_context(|| format!("samples file {}: no column `{n}` in its header ({})", path.display(), h.join(", ")))
            })
            .collect::<Result<_>>()?,
        None => (0..names.len()).collect(),
    };
    let width = header.as_ref().map_or(names.len(), Vec::len);
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        bail!("samples file {}: sample {} has {} values, expected {width} ({})", path.display(), i + 1, row.len(), names.join(", "));
    }
    Ok(DMatrix::from_fn(names.len(), rows.len(), |i, j| rows[j][columns[i]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_samples_read_with_or_without_a_header() {
        assert_eq!(parse_numbers("1 2,3\n4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(parse_numbers("y0,y1,y2\n0.5,1e-3,-2\n").unwrap(), [0.5, 1e-3, -2.0]);
        assert!(parse_numbers("a,b\n1,x\n").unwrap_err().to_string().contains("line 2: `x` is not a number"));
        assert!(parse_numbers("only,a,header\n").unwrap_err().to_string().contains("no numbers"));

        let names = vec!["a".to_string(), "b".to_string()];
        let path = std::env::temp_dir().join(format!("geohost-tables-test-{}.csv", std::process::id()));
        std::fs::write(&path, "\"b\",\"a\"\n1,10\n2,20\n3,30\n").unwrap();
        let m = read_samples(&path, &names).unwrap();
        assert_eq!(m, DMatrix::from_row_slice(2, 3, &[10.0, 20.0, 30.0, 1.0, 2.0, 3.0]), "columns matched by name");
        std::fs::write(&path, "10 1\n20 2\n").unwrap();
        assert_eq!(read_samples(&path, &names).unwrap().column(1).as_slice(), [20.0, 2.0]);
        std::fs::write(&path, "a,c\n1,2\n").unwrap();
        assert!(read_samples(&path, &names).unwrap_err().to_string().contains("no column `b`"));
        std::fs::write(&path, "1,2\n3\n").unwrap();
        assert!(read_samples(&path, &names).unwrap_err().to_string().contains("sample 2 has 1 values"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn samples_read_from_netcdf_in_either_layout() {
        use geohost_netcdf::{nc_bytes, Var};
        let names = vec!["a".to_string(), "b".to_string()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.nc");
        let expected = DMatrix::from_row_slice(2, 3, &[10.0, 20.0, 30.0, 1.0, 2.0, 3.0]);
        // One variable per parameter, chain × draw as ArviZ writes them.
        let var = |name: &'static str, data: &'static [f64]| Var { name, dims: &["chain", "draw"], data, units: "1", long_name: "" };
        let bytes = nc_bytes(&[("chain", 1), ("draw", 3)], &[var("b", &[1.0, 2.0, 3.0]), var("a", &[10.0, 20.0, 30.0])], &[]).unwrap();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_samples(&path, &names).unwrap(), expected);
        // geohost's own layout, as `posterior sample -o F.nc` writes it.
        let samples = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        let bytes = geohost_learn::amortize::samples_bytes(&["b".into(), "a".into()], &samples, "test").unwrap();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_samples(&path, &names).unwrap(), expected);
        let err = read_samples(&path, &["a".to_string(), "c".to_string()]).unwrap_err().to_string();
        assert!(err.contains("no parameter `c`"), "{err}");
        // Parameters of different lengths, and NetCDF-4.
        let bytes = nc_bytes(
            &[("n", 3), ("m", 2)],
            &[
                Var { name: "a", dims: &["n"], data: &[1.0, 2.0, 3.0], units: "1", long_name: "" },
                Var { name: "b", dims: &["m"], data: &[1.0, 2.0], units: "1", long_name: "" },
            ],
            &[],
        )
        .unwrap();
        std::fs::write(&path, bytes).unwrap();
        let err = read_samples(&path, &names).unwrap_err().to_string();
        assert!(err.contains("variable `b` has 2 values, `a` has 3"), "{err}");
        std::fs::write(&path, b"\x89HDF\r\n\x1a\n....").unwrap();
        let err = read_samples(&path, &names).unwrap_err().to_string();
        assert!(err.contains("NetCDF-4 (HDF5)") && err.contains("NETCDF3_64BIT"), "{err}");
    }
}
