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
/// `names`' order).
pub fn read_samples(path: &Path, names: &[String]) -> Result<DMatrix<f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read samples file {}", path.display()))?;
    let (header, rows) = rows(&text).with_context(|| format!("samples file {}", path.display()))?;
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
    let m = DMatrix::from_fn(names.len(), rows.len(), |i, j| rows[j][columns[i]]);
    if m.iter().any(|v| !v.is_finite()) {
        bail!("samples file {}: a value is not finite", path.display());
    }
    Ok(m)
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
}
